"""pytest plugin (entry point ``bsopt``): real infrastructure for tests, never mocks.

Postgres, first that works:
  1. ``TEST_DATABASE_URL`` if set;
  2. a server at 127.0.0.1:5432 (user ``postgres``, database ``postgres``) if one answers;
  3. testcontainers ``postgres:16`` when a Docker engine is reachable;
  4. the embedded ``pgserver`` wheel (a real Postgres in a temp directory).

Each test module gets its own freshly created database (``postgres_url``), dropped
afterwards, so services' schemas and migrations never collide between tests.

Kafka-protocol broker, first that works: ``TEST_KAFKA_BOOTSTRAP_SERVERS``, then
testcontainers Kafka when a Docker engine is reachable, then the embedded librdkafka
mock cluster (``kafka_bootstrap``).
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterable, Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

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


def _admin_conninfo(server_url: str) -> dict[str, object]:
    u = make_url(server_url)
    return {
        "host": u.host or u.query.get("host"), "port": u.port or 5432, "user": u.username,
        "password": u.password, "dbname": u.database or "postgres", "autocommit": True,
    }


@pytest.fixture(scope="module")
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test module; dropped afterwards."""
    name = f"bsopt_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(**_admin_conninfo(postgres_server_url)) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(**_admin_conninfo(postgres_server_url)) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def test_issuer():
    """A token issuer whose JWKS is served over HTTP on 127.0.0.1 (see testing.tokens)."""
    from bsopt_common.testing.tokens import TestIssuer

    with TestIssuer() as issuer:
        yield issuer


# --------------------------------------------------------------------------- Kafka


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> dict[str, int]:
    """Create ``names`` (``partitions`` each) if missing; return ``{topic: partition count}``.

    Works for a real Kafka (CreateTopics) and for the embedded mock cluster of this
    process; see :func:`bsopt_common.embedded.kafka.ensure_topics` for the details
    and errors raised.
    """
    from bsopt_common.embedded.kafka import ensure_topics

    return ensure_topics(bootstrap, names, partitions)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers (``"host:port[,host:port]"``) of a Kafka-protocol broker.

    ``TEST_KAFKA_BOOTSTRAP_SERVERS`` if set; else testcontainers Kafka (KRaft) when a
    Docker engine is reachable; else an :class:`~bsopt_common.embedded.kafka.EmbeddedKafka`
    (librdkafka mock cluster, one broker on 127.0.0.1) for the session. The broker is
    shared by the whole session: use unique topic and group names per test. On the
    embedded broker topics a client merely names are auto-created with 4 partitions,
    so create them up front with ``kafka_topics`` when the count matters.
    """
    if bootstrap := os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS"):
        yield bootstrap
        return
    if docker_available():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from bsopt_common.embedded.kafka import EmbeddedKafka

    with EmbeddedKafka() as kafka:
        yield kafka.bootstrap_servers


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Callable[..., dict[str, int]]:
    """Factory ``kafka_topics(names, partitions=1) -> {topic: partition count}`` creating
    topics on ``kafka_bootstrap`` up front (existing topics are left as they are)."""

    def _create(names: Iterable[str], partitions: int = 1) -> dict[str, int]:
        return create_topics(kafka_bootstrap, [names] if isinstance(names, str) else names, partitions)

    return _create


_KAFKA_GROUP_SKIP = (
    "kafka_group: consumer-group rebalancing needs a real Kafka; set TEST_KAFKA_BOOTSTRAP_SERVERS=host:port "
    "(or make a Docker engine reachable). The embedded librdkafka mock cluster fails SyncGroup "
    "(INVALID_REQUEST) when a second member joins a live group."
)


@functools.lru_cache(maxsize=1)
def _docker_available_once() -> bool:
    return docker_available()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka_group: needs a real Kafka (consumer-group rebalancing)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``@pytest.mark.kafka_group`` tests when ``kafka_bootstrap`` would be the
    embedded mock cluster (no TEST_KAFKA_BOOTSTRAP_SERVERS, no Docker)."""
    if (
        item.get_closest_marker("kafka_group") is not None
        and not os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
        and not _docker_available_once()
    ):
        pytest.skip(_KAFKA_GROUP_SKIP)
