"""Event signatures over a real Kafka-protocol broker (embedded Tansu, or
TEST_KAFKA_BOOTSTRAP_SERVERS), a real Postgres and the test issuer's client JWKS served
over real HTTP: the attacks a plain Kafka client can make on a topic are replayed and
every one is dead-lettered without the handler running, while authentic events are
handled once, and still verify when the log is replayed by a new consumer group."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import Column, MetaData, String, Table, create_engine, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt_common.db import make_session_factory
from bsopt_common.events import Event, EventConsumer, EventPublisher, event_tables
from bsopt_common.security import event_signing
from bsopt_common.security.event_signing import (
    SIGNATURE_HEADER,
    EventSignatureError,
    EventSignatureVerifier,
    EventSigner,
    generate_signing_key,
)
from bsopt_common.topics import Topic

PRODUCER = "ml-scorer"
OTHER_SERVICE = "broker-gateway"  # a real service, not a producer of the test topics


def scored(user: str, trade_id: str | None = None) -> scorer_events.TradeScored:
    return scorer_events.TradeScored(trade=spb.ScoredTrade(
        trade_id=trade_id or str(uuid.uuid4()), user_id=user, account_id="a1", symbol="GOOGL", quantity=3,
        label=spb.BIAS_LABEL_FOMO, explanation="x"))


def new_topic(kafka_topics: Callable[..., dict[str, int]]) -> Topic[scorer_events.TradeScored]:
    """A fresh topic with trades.scored.v1's contract (payload, key, subject, producer)."""
    topic: Topic[scorer_events.TradeScored] = Topic(
        f"test.signing.{uuid.uuid4().hex[:10]}.v1", scorer_events.TradeScored,
        lambda m: m.trade.user_id, lambda m: f"trades/{m.trade.trade_id}", frozenset({PRODUCER}))
    kafka_topics([topic.name, topic.dlq], partitions=1)
    return topic


@dataclass
class Projection:
    """A consumer's own schema: processed_events plus the rows its handler writes."""

    schema: str
    applied: Table
    engine: Engine

    def handle(self, event: Event, session: Session) -> None:
        payload = event.payload
        assert isinstance(payload, scorer_events.TradeScored)
        session.execute(self.applied.insert().values(
            event_id=event.id, user_id=payload.trade.user_id, producer=event.producer_client_id))

    def rows(self) -> list[tuple[str, str, str]]:
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(
                select(self.applied.c.event_id, self.applied.c.user_id, self.applied.c.producer))]


@pytest.fixture(scope="module")
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def projection(engine: Engine) -> Projection:
    return make_projection(engine)


def make_projection(engine: Engine) -> Projection:
    schema = f"proj_{uuid.uuid4().hex[:10]}"
    with engine.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    processed, _outbox = event_tables(schema)
    processed.metadata.create_all(engine)
    applied = Table("applied", MetaData(schema=schema), Column("event_id", String(64), primary_key=True),
                    Column("user_id", String(64)), Column("producer", String(64)))
    applied.metadata.create_all(engine)
    return Projection(schema, applied, engine)


@pytest.fixture
async def verifier(test_issuer) -> EventSignatureVerifier:
    v = EventSignatureVerifier(test_issuer.client_jwks_url_template)
    yield v
    await v.aclose()


async def publish(bootstrap: str, signer: EventSigner, topic: Topic[scorer_events.TradeScored],
                  message: scorer_events.TradeScored, **kw: str) -> str:
    pub = EventPublisher(bootstrap, source=f"/bsopt/{signer.client_id}", signer=signer)
    await pub.start()
    try:
        return await pub.publish(topic, message, **kw)
    finally:
        await pub.stop()


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def header(self) -> dict[str, str]:
        return {k: v.decode() for k, v in self.headers}

    def with_header(self, name: str, value: str) -> list[tuple[str, bytes]]:
        return [(k, value.encode() if k == name else v) for k, v in self.headers]


async def read_all(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[Record]:
    """What an attacker with a plain aiokafka client reads: ``count`` records of ``topic``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[Record] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                found += [Record(m.key, m.value, list(m.headers)) for m in msgs]
    finally:
        await consumer.stop()
    assert len(found) >= count, f"only {len(found)} of {count} records on {topic}"
    return found


async def produce_raw(bootstrap: str, topic: str, records: list[Record]) -> None:
    """What an attacker with a plain aiokafka client writes."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(topic, r.value, key=r.key, headers=r.headers)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topics: list[Topic[scorer_events.TradeScored]], projection: Projection,
                  verifier: EventSignatureVerifier, group_settings: dict[str, int], expected: int,
                  timeout: float = 45.0) -> EventConsumer:
    """Run a new consumer group over ``topics`` from the start until ``expected`` messages
    were handled, skipped or dead-lettered; its DLQ publisher has no signer (a
    consumer-only service)."""
    dlq = EventPublisher(bootstrap, source="/bsopt/test-consumer", signer=None)
    await dlq.start()
    consumer = EventConsumer(
        bootstrap_servers=bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}",
        handlers=dict.fromkeys(topics, projection.handle),
        session_factory=make_session_factory(projection.engine), schema=projection.schema,
        verifier=verifier, dlq_publisher=dlq, **group_settings)
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while consumer.handled + consumer.skipped_duplicates + consumer.dead_lettered < expected:
            assert not task.done(), task.exception()
            assert asyncio.get_running_loop().time() < deadline, "consumer did not get through the topic"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # nothing more arrives
    finally:
        await consumer.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dlq.stop()
    return consumer


async def dead_letters(bootstrap: str, topic: Topic[scorer_events.TradeScored], count: int) -> list[Record]:
    return await read_all(bootstrap, topic.dlq, count)


# ------------------------------------------------------------------ the attacks, end to end


async def test_headers_copied_onto_another_payload_are_dead_lettered(
        kafka_bootstrap, kafka_topics, kafka_group_settings, projection, verifier, event_signer):
    topic = new_topic(kafka_topics)
    real_id = await publish(kafka_bootstrap, event_signer(PRODUCER), topic, scored("alice"))
    (real,) = await read_all(kafka_bootstrap, topic.name, 1)
    assert SIGNATURE_HEADER in real.header and "authorization" not in real.header
    assert real.header["ce_id"] == real_id
    victim = scored("mallory").SerializeToString()
    forged = [
        Record(real.key, victim, real.headers),  # every header copied, another user's payload
        Record(b"mallory", victim, real.headers),  # ... re-addressed to that user's partition key too
        Record(b"mallory", victim, Record(None, None, real.headers).with_header("ce_id", str(uuid.uuid4()))),
    ]
    await produce_raw(kafka_bootstrap, topic.name, forged)
    consumer = await consume(kafka_bootstrap, [topic], projection, verifier, kafka_group_settings, 4)
    assert (consumer.handled, consumer.dead_lettered) == (1, 3)
    assert projection.rows() == [(real_id, "alice", PRODUCER)]  # the handler never ran for mallory
    errors = [r.header["dlq_error"] for r in await dead_letters(kafka_bootstrap, topic, 3)]
    assert "data_sha256 does not match" in errors[0]
    assert "partition key does not match" in errors[1]
    assert "ce_id does not match" in errors[2]


async def test_same_payload_under_a_new_id_is_dead_lettered(
        kafka_bootstrap, kafka_topics, kafka_group_settings, projection, verifier, event_signer):
    topic = new_topic(kafka_topics)
    real_id = await publish(kafka_bootstrap, event_signer(PRODUCER), topic, scored("alice"))
    (real,) = await read_all(kafka_bootstrap, topic.name, 1)
    await produce_raw(kafka_bootstrap, topic.name, [Record(real.key, real.value,
                                                           real.with_header("ce_id", str(uuid.uuid4())))])
    consumer = await consume(kafka_bootstrap, [topic], projection, verifier, kafka_group_settings, 2)
    assert (consumer.handled, consumer.dead_lettered, consumer.skipped_duplicates) == (1, 1, 0)
    assert projection.rows() == [(real_id, "alice", PRODUCER)]  # applied once, not twice
    (dlq,) = await dead_letters(kafka_bootstrap, topic, 1)
    assert "signed ce_id does not match" in dlq.header["dlq_error"]


async def test_a_key_the_producer_does_not_publish_is_dead_lettered(
        kafka_bootstrap, kafka_topics, kafka_group_settings, projection, verifier):
    topic = new_topic(kafka_topics)
    rogue = EventSigner(PRODUCER, generate_signing_key())  # claims to be ml-scorer; its key is not registered
    await publish(kafka_bootstrap, rogue, topic, scored("alice"))
    consumer = await consume(kafka_bootstrap, [topic], projection, verifier, kafka_group_settings, 1)
    assert (consumer.handled, consumer.dead_lettered) == (0, 1)
    assert projection.rows() == []
    (dlq,) = await dead_letters(kafka_bootstrap, topic, 1)
    assert "a key that 'ml-scorer' does not publish" in dlq.header["dlq_error"]


async def test_a_valid_signature_of_another_producer_is_dead_lettered(
        kafka_bootstrap, kafka_topics, kafka_group_settings, projection, verifier, event_signer, test_issuer):
    topic = new_topic(kafka_topics)
    # broker-gateway's own, registered key: authentic, but broker-gateway may not publish here
    await publish(kafka_bootstrap, event_signer(OTHER_SERVICE), topic, scored("alice"))
    consumer = await consume(kafka_bootstrap, [topic], projection, verifier, kafka_group_settings, 1)
    assert (consumer.handled, consumer.dead_lettered) == (0, 1)
    assert projection.rows() == []
    (dlq,) = await dead_letters(kafka_bootstrap, topic, 1)
    assert "client 'broker-gateway' may not publish" in dlq.header["dlq_error"]
    assert OTHER_SERVICE not in verifier.caches  # its keys were never even fetched
    assert test_issuer.client_jwks_requests.get(OTHER_SERVICE, 0) == 0


async def test_redelivered_event_is_skipped_as_a_duplicate(
        kafka_bootstrap, kafka_topics, kafka_group_settings, projection, verifier, event_signer):
    topic = new_topic(kafka_topics)
    real_id = await publish(kafka_bootstrap, event_signer(PRODUCER), topic, scored("alice"))
    (real,) = await read_all(kafka_bootstrap, topic.name, 1)
    await produce_raw(kafka_bootstrap, topic.name, [real, real])  # the same signed event, twice more
    consumer = await consume(kafka_bootstrap, [topic], projection, verifier, kafka_group_settings, 3)
    assert (consumer.handled, consumer.skipped_duplicates, consumer.dead_lettered) == (1, 2, 0)
    assert projection.rows() == [(real_id, "alice", PRODUCER)]


async def test_a_new_consumer_group_replays_old_authentic_events(
        kafka_bootstrap, kafka_topics, kafka_group_settings, engine, projection, verifier, event_signer,
        test_issuer, monkeypatch):
    topic = new_topic(kafka_topics)
    signer = event_signer(PRODUCER)
    # signed two years ago, produced at a ce_time long past: nothing in a signature expires
    monkeypatch.setattr(event_signing, "_now", lambda: time.time() - 2 * 365 * 86400)
    old_id = await publish(kafka_bootstrap, signer, topic, scored("alice"), time="2024-01-02T03:04:05.678Z")
    monkeypatch.undo()
    new_id = await publish(kafka_bootstrap, signer, topic, scored("bob"))
    (old, _) = await read_all(kafka_bootstrap, topic.name, 2)
    iat = json.loads(base64.urlsafe_b64decode(old.header[SIGNATURE_HEADER].split(".")[1] + "=="))["iat"]
    assert iat < time.time() - 365 * 86400
    await produce_raw(kafka_bootstrap, topic.name, [Record(b"mallory", scored("mallory").SerializeToString(),
                                                           old.headers)])
    first = await consume(kafka_bootstrap, [topic], projection, verifier, kafka_group_settings, 3)
    assert (first.handled, first.dead_lettered) == (2, 1)

    # later: a new projection (own schema, new group, fresh verifier) reads the log from the start
    replay = make_projection(engine)
    fresh = EventSignatureVerifier(test_issuer.client_jwks_url_template)
    try:
        second = await consume(kafka_bootstrap, [topic], replay, fresh, kafka_group_settings, 3)
    finally:
        await fresh.aclose()
    assert (second.handled, second.dead_lettered, second.skipped_duplicates) == (2, 1, 0)
    assert sorted(replay.rows()) == sorted([(old_id, "alice", PRODUCER), (new_id, "bob", PRODUCER)])


async def test_tampered_time_subject_or_topic_is_dead_lettered(
        kafka_bootstrap, kafka_topics, kafka_group_settings, projection, verifier, event_signer):
    topic, other = new_topic(kafka_topics), new_topic(kafka_topics)
    real_id = await publish(kafka_bootstrap, event_signer(PRODUCER), topic, scored("alice"))
    (real,) = await read_all(kafka_bootstrap, topic.name, 1)
    await produce_raw(kafka_bootstrap, topic.name, [
        Record(real.key, real.value, real.with_header("ce_time", "2031-01-01T00:00:00.000Z")),
        Record(real.key, real.value, real.with_header("ce_subject", "trades/someone-elses")),
        Record(real.key, real.value, real.with_header("ce_type", "bsopt.other.v1.Thing")),
        Record(real.key, real.value, real.with_header("ce_source", "/bsopt/elsewhere")),
    ])
    await produce_raw(kafka_bootstrap, other.name, [real])  # moved, untouched, to another topic
    consumer = await consume(kafka_bootstrap, [topic, other], projection, verifier, kafka_group_settings, 6)
    assert (consumer.handled, consumer.dead_lettered) == (1, 5)
    assert projection.rows() == [(real_id, "alice", PRODUCER)]
    errors = [r.header["dlq_error"] for r in await dead_letters(kafka_bootstrap, topic, 4)]
    for attr, error in zip(("ce_time", "ce_subject", "ce_type", "ce_source"), errors, strict=True):
        assert f"signed {attr} does not match" in error
    (moved,) = await dead_letters(kafka_bootstrap, other, 1)
    assert "signed topic does not match" in moved.header["dlq_error"]


async def test_unsigned_or_bearer_token_only_events_are_dead_lettered(
        kafka_bootstrap, kafka_topics, kafka_group_settings, projection, verifier, event_signer, test_issuer):
    topic = new_topic(kafka_topics)
    await publish(kafka_bootstrap, event_signer(PRODUCER), topic, scored("alice"))
    (real,) = await read_all(kafka_bootstrap, topic.name, 1)
    unsigned = [(k, v) for k, v in real.headers if k != SIGNATURE_HEADER]
    token = test_issuer.token(aud="urn:bsopt:events", scope="events:publish", client_id=PRODUCER)
    stripped = Record(real.key, real.value, unsigned)
    old_scheme = Record(real.key, scored("mallory").SerializeToString(),
                        [*unsigned, ("authorization", f"Bearer {token}".encode())])
    empty = Record(real.key, real.value, [*unsigned, (SIGNATURE_HEADER, b"")])
    garbage = Record(real.key, real.value, [*unsigned, (SIGNATURE_HEADER, b"not.a.jws")])
    token_as_signature = Record(real.key, real.value, [*unsigned, (SIGNATURE_HEADER, token.encode())])
    doubled = Record(real.key, real.value, [*real.headers, ("ce_id", str(uuid.uuid4()).encode())])
    forged = [stripped, old_scheme, empty, garbage, token_as_signature, doubled]
    await produce_raw(kafka_bootstrap, topic.name, forged)
    consumer = await consume(kafka_bootstrap, [topic], projection, verifier, kafka_group_settings, 7)
    assert (consumer.handled, consumer.dead_lettered) == (1, 6)
    assert [row[1] for row in projection.rows()] == ["alice"]
    errors = [r.header["dlq_error"] for r in await dead_letters(kafka_bootstrap, topic, 6)]
    assert "no signature (ce_signature)" in errors[0]
    assert "no signature (ce_signature)" in errors[1]
    assert "no signature (ce_signature)" in errors[2]
    assert "malformed event signature" in errors[3]
    assert "type is not bsopt-event+jwt" in errors[4]
    assert "duplicate header ce_id" in errors[5]


# ------------------------------------------------------------------ the verifier itself


def _headers(**overrides: str) -> dict[str, str]:
    return {"ce_id": "e-1", "ce_type": "bsopt.ml_scorer.v1.TradeScored", "ce_source": "/bsopt/ml-scorer",
            "ce_subject": "trades/t-1", "ce_time": "2026-01-01T00:00:00.000Z", **overrides}


def _sign(signer: EventSigner, topic: Topic[scorer_events.TradeScored], payload: bytes = b"p",
          key: str | None = "alice") -> str:
    h = _headers()
    return signer.sign(topic=topic.name, key=key, event_id=h["ce_id"], event_type=h["ce_type"],
                       source=h["ce_source"], subject=h["ce_subject"], time=h["ce_time"], payload=payload)


def _unsigned_token(header: dict[str, object], claims: dict[str, object]) -> str:
    def seg(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{seg(header)}.{seg(claims)}.{base64.urlsafe_b64encode(b'sig').rstrip(b'=').decode()}"


async def test_a_forged_iss_of_an_unknown_client_creates_no_cache_and_no_fetch(test_issuer, kafka_topics):
    topic = new_topic(kafka_topics)
    verifier = EventSignatureVerifier(test_issuer.client_jwks_url_template)
    try:
        for n in range(50):
            iss = f"evil-{n}"
            forged = EventSigner(iss, generate_signing_key())
            with pytest.raises(EventSignatureError, match="may not publish"):
                await verifier.verify(_sign(forged, topic), topic=topic, headers=_headers(), key="alice",
                                      payload=b"p")
        for claims in ({"iss": None}, {"iss": ["ml-scorer"]}, {}):
            with pytest.raises(EventSignatureError, match="may not publish"):
                await verifier.verify(_unsigned_token({"alg": "ES256", "kid": "k", "typ": "bsopt-event+jwt"}, claims),
                                      topic=topic, headers=_headers(), key="alice", payload=b"p")
        assert verifier.caches == {}
        assert not any(c.startswith("evil-") for c in test_issuer.client_jwks_requests)
    finally:
        await verifier.aclose()


@pytest.mark.parametrize(("header", "reason"), [
    ({"alg": "HS256", "kid": "k", "typ": "bsopt-event+jwt"}, "unsupported event signature algorithm"),
    ({"alg": "none", "kid": "k", "typ": "bsopt-event+jwt"}, "unsupported event signature algorithm"),
    ({"alg": "ES256", "typ": "bsopt-event+jwt"}, "has no kid"),
    ({"alg": "ES256", "kid": "k", "typ": "at+jwt"}, "type is not bsopt-event+jwt"),
    ({"alg": "ES256", "kid": "k"}, "type is not bsopt-event+jwt"),
])
async def test_header_checks_come_before_any_key_lookup(test_issuer, header, reason):
    topic = Topic("test.x.v1", scorer_events.TradeScored, lambda m: "", lambda m: "", frozenset({PRODUCER}))
    verifier = EventSignatureVerifier(test_issuer.client_jwks_url_template)
    try:
        with pytest.raises(EventSignatureError, match=re.escape(reason)):
            await verifier.verify(_unsigned_token(header, {"iss": PRODUCER}), topic=topic, headers=_headers(),
                                  key="alice", payload=b"p")
        assert verifier.caches == {}
    finally:
        await verifier.aclose()


async def test_a_key_removed_from_the_producers_jwks_stops_verifying(test_issuer):
    topic = Topic("test.y.v1", scorer_events.TradeScored, lambda m: "", lambda m: "", frozenset({"revoked-svc"}))
    key = test_issuer.service_key("revoked-svc")
    token = _sign(EventSigner("revoked-svc", key), topic)
    verifier = EventSignatureVerifier(test_issuer.client_jwks_url, cache_options={"min_max_age_seconds": 0.2})
    saved = test_issuer.jwks_max_age
    test_issuer.jwks_max_age = 0
    try:
        assert await verifier.verify(token, topic=topic, headers=_headers(), key="alice", payload=b"p") == "revoked-svc"
        test_issuer.register_client_key("revoked-svc", generate_signing_key())  # rotated: a new key ...
        test_issuer.unregister_client_key("revoked-svc", key.kid)  # ... and the old one revoked
        await asyncio.sleep(1.1)  # past max-age and the cache's 1 s refetch interval
        with pytest.raises(EventSignatureError, match="does not publish"):
            await verifier.verify(token, topic=topic, headers=_headers(), key="alice", payload=b"p")
    finally:
        test_issuer.jwks_max_age = saved
        await verifier.aclose()


async def test_rsa_and_ed25519_producers_verify(test_issuer):
    from joserfc.jwk import OKPKey, RSAKey

    for client, key in (("rsa-svc", RSAKey.generate_key(2048, parameters={"alg": "PS256"})),
                        ("ed-svc", OKPKey.generate_key("Ed25519"))):
        topic = Topic("test.z.v1", scorer_events.TradeScored, lambda m: "", lambda m: "", frozenset({client}))
        loaded = event_signing.load_signing_key(key.as_pem(private=True).decode()) if client == "ed-svc" else key
        test_issuer.register_client_key(client, event_signing.public_jwks(loaded))
        signer = EventSigner(client, loaded)
        verifier = EventSignatureVerifier(test_issuer.client_jwks_url_template)
        try:
            assert await verifier.verify(_sign(signer, topic, key=None), topic=topic, headers=_headers(), key=None,
                                         payload=b"p") == client
            with pytest.raises(EventSignatureError, match="partition key"):
                await verifier.verify(_sign(signer, topic, key=None), topic=topic, headers=_headers(), key="",
                                      payload=b"p")
        finally:
            await verifier.aclose()
    assert signer.algorithm == "EdDSA"


async def test_publisher_without_a_signer_cannot_publish_and_consumer_needs_a_verifier(
        kafka_bootstrap, projection):
    pub = EventPublisher(kafka_bootstrap, source="/bsopt/test", signer=None)
    topic = Topic("test.never.v1", scorer_events.TradeScored, lambda m: "k", lambda m: "s", frozenset({PRODUCER}))
    with pytest.raises(RuntimeError, match="no EventSigner"):
        await pub.publish(topic, scored("alice"))
    with pytest.raises(TypeError, match="EventSignatureVerifier"):
        EventConsumer(bootstrap_servers=kafka_bootstrap, group_id="g", handlers={topic: projection.handle},
                      session_factory=make_session_factory(projection.engine), schema=projection.schema,
                      verifier=None, dlq_publisher=pub)  # type: ignore[arg-type]


async def test_revoking_a_producers_only_key_stops_verifying_within_max_age(test_issuer):
    """An empty key set is an answer (every key revoked), not a failed fetch: the cache
    must not keep serving the revoked key for its stale-if-error grace."""
    topic = Topic("test.w.v1", scorer_events.TradeScored, lambda m: "", lambda m: "", frozenset({"lone-svc"}))
    key = test_issuer.service_key("lone-svc")
    token = _sign(EventSigner("lone-svc", key), topic)
    verifier = EventSignatureVerifier(test_issuer.client_jwks_url, cache_options={"min_max_age_seconds": 0.2})
    saved = test_issuer.jwks_max_age
    test_issuer.jwks_max_age = 0
    try:
        assert await verifier.verify(token, topic=topic, headers=_headers(), key="alice", payload=b"p") == "lone-svc"
        test_issuer.unregister_client_key("lone-svc", key.kid)  # no successor: {"keys": []}
        assert test_issuer.client_jwks("lone-svc") == {"keys": []}
        await asyncio.sleep(1.1)
        with pytest.raises(EventSignatureError, match="does not publish"):
            await verifier.verify(token, topic=topic, headers=_headers(), key="alice", payload=b"p")
    finally:
        test_issuer.jwks_max_age = saved
        await verifier.aclose()
