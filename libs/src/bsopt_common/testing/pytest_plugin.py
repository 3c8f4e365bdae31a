"""pytest plugin (entry point ``bsopt``): real infrastructure for tests, never mocks.

Postgres, first that works:
  1. ``TEST_DATABASE_URL`` if set;
  2. a server at 127.0.0.1:5432 (user ``postgres``, database ``postgres``) if one answers;
  3. testcontainers ``postgres:16`` when a Docker engine is reachable;
  4. the embedded ``pgserver`` wheel (a real Postgres in a temp directory).

Each test module gets its own freshly created database (``postgres_url``), dropped
afterwards, so services' schemas and migrations never collide between tests.

Kafka-protocol broker (``kafka_bootstrap``), first that works:
``TEST_KAFKA_BOOTSTRAP_SERVERS``, then testcontainers Kafka when a Docker engine is
reachable, then the embedded Tansu broker (:mod:`bsopt_common.embedded.kafka`), which
also handles consumer-group rebalancing. ``kafka_topics`` / :func:`create_topics` create
topics with a chosen partition count on any of them; ``kafka_group_settings`` gives the
consumer timeouts that make group joins fast on the embedded broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import psycopg
import pytest
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from bsopt_common.security.event_signing import EventSigner
    from bsopt_common.testing.tokens import TestIssuer

LOCAL_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _answers(url: str) -> bool:
    u = make_url(url)
    try:
        with psycopg.connect(
            host=u.host, port=u.port or 5432, user=u.username, password=u.password,
            dbname=u.database or "postgres", connect_timeout=2,
        ):
            return True
    except psycopg.Error:
        return False


def docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """SQLAlchemy URL of a Postgres server whose user may CREATE DATABASE."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    if _answers(LOCAL_SERVER):
        yield LOCAL_SERVER
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as pg:
            yield pg.get_connection_url()
        return
    from bsopt_common.embedded.postgres import EmbeddedPostgres

    with EmbeddedPostgres.temporary() as pg:
        yield pg.url


def _admin_connect(server_url: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the server's maintenance database (for CREATE/DROP DATABASE)."""
    u = make_url(server_url)
    socket_dir = u.query.get("host")
    host = u.host or (socket_dir if isinstance(socket_dir, str) else None)
    return psycopg.connect(host=host, port=u.port or 5432, user=u.username, password=u.password,
                           dbname=u.database or "postgres", autocommit=True)


@pytest.fixture(scope="module")
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test module; dropped afterwards."""
    name = f"bsopt_test_{uuid.uuid4().hex[:12]}"
    with _admin_connect(postgres_server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    with _admin_connect(postgres_server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def service_database_urls(postgres_url: str) -> dict[str, str]:
    """``{service: URL}`` of each service's own role in this module's database
    (:func:`bsopt_common.db_roles.bootstrap_service_roles`): connect a service under test
    as production does, owner of its schema and of nothing else. ``postgres_url`` stays
    the superuser's, for a test's own checks."""
    from bsopt_common.db_roles import bootstrap_service_roles

    return bootstrap_service_roles(postgres_url)


@pytest.fixture(scope="session")
def test_issuer() -> Iterator[TestIssuer]:
    """A token issuer whose JWKS is served over HTTP on 127.0.0.1 (see testing.tokens)."""
    from bsopt_common.testing.tokens import TestIssuer

    with TestIssuer() as issuer:
        yield issuer


@pytest.fixture
def event_signer(test_issuer: TestIssuer) -> Callable[[str], EventSigner]:
    """Factory ``event_signer(client_id) -> EventSigner`` signing with that client's key
    from ``test_issuer`` (:meth:`~bsopt_common.testing.tokens.TestIssuer.service_key`:
    generated once per client id, its public part served at
    ``test_issuer.client_jwks_url_template``)."""
    from bsopt_common.security.event_signing import EventSigner

    def _signer(client_id: str) -> EventSigner:
        return EventSigner(client_id, test_issuer.service_key(client_id))

    return _signer


# --------------------------------------------------------------------------- Kafka


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> dict[str, int]:
    """Create ``names`` (``partitions`` each) if missing; return ``{topic: partition count}``.

    Works for a real Kafka and for the embedded Tansu broker (CreateTopics); existing
    topics keep their partition count. See :func:`bsopt_common.embedded.kafka.ensure_topics`
    for the errors raised.
    """
    from bsopt_common.embedded.kafka import ensure_topics

    return ensure_topics(bootstrap, names, partitions)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers (``"host:port[,host:port]"``) of a Kafka-protocol broker.

    ``TEST_KAFKA_BOOTSTRAP_SERVERS`` if set; else testcontainers Kafka (KRaft) when a
    Docker engine is reachable; else an :class:`~bsopt_common.embedded.kafka.EmbeddedKafka`
    (Tansu, in-memory, one broker on 127.0.0.1) for the session. The broker is shared by
    the whole session: use unique topic and group names per test. On the embedded broker
    topics a client merely names are auto-created with 4 partitions, so create them up
    front with ``kafka_topics`` when the count matters.
    """
    if bootstrap := os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS"):
        yield bootstrap
        return
    if docker_available():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from bsopt_common.embedded.kafka import FAST_FETCH_MAX_WAIT_MS, FAST_GROUP_SETTINGS, EmbeddedKafka

    # Services built from settings in this session join groups and fetch on Tansu fast too.
    fast = {"KAFKA_SESSION_TIMEOUT_MS": str(FAST_GROUP_SETTINGS["session_timeout_ms"]),
            "KAFKA_HEARTBEAT_INTERVAL_MS": str(FAST_GROUP_SETTINGS["heartbeat_interval_ms"]),
            "KAFKA_FETCH_MAX_WAIT_MS": str(FAST_FETCH_MAX_WAIT_MS)}
    with pytest.MonkeyPatch.context() as env, EmbeddedKafka() as kafka:
        for name, value in fast.items():
            env.setenv(name, value)
        yield kafka.bootstrap_servers


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Callable[..., dict[str, int]]:
    """Factory ``kafka_topics(names, partitions=1) -> {topic: partition count}`` creating
    topics on ``kafka_bootstrap`` up front (existing topics are left as they are)."""

    def _create(names: Iterable[str], partitions: int = 1) -> dict[str, int]:
        return create_topics(kafka_bootstrap, [names] if isinstance(names, str) else names, partitions)

    return _create


@pytest.fixture
def kafka_group_settings(kafka_bootstrap: str) -> dict[str, int]:
    """Extra ``AIOKafkaConsumer`` keyword arguments for consumer groups on ``kafka_bootstrap``.

    On the embedded Tansu broker: a 2 s session and 200 ms heartbeats, so a group join
    takes about 1 s and a rebalance 2 s instead of 5 s and 8 s with aiokafka's defaults.
    On any other broker ``{}`` (a real Kafka refuses sessions under 6 s by default).
    """
    from bsopt_common.embedded.kafka import group_settings

    return group_settings(kafka_bootstrap)
