"""Event bus on aiokafka: facts between services.

Producing (:class:`EventPublisher`): the payload is a protobuf message; attributes follow
the CloudEvents Kafka protocol binding, binary mode (CloudEvents 1.0, "Kafka Protocol
Binding" §3.2): ``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``, ``ce_time``
(RFC 3339), ``ce_subject`` headers, ``content-type: application/protobuf``; plus a W3C
Trace Context ``traceparent`` header and ``ce_signature`` (a CloudEvents extension
attribute): the producer's signature of this very event
(:class:`~bsopt_common.security.event_signing.EventSigner`), a compact JWS made with the
producing service's own private key over ``ce_id``, ``ce_type``, ``ce_source``,
``ce_subject``, ``ce_time``, the topic, the partition key and the SHA-256 of the exact
payload bytes. No bearer token travels with an event: a header copied onto another
payload, topic, key or id proves nothing.

Topics, their payload types, keys and allowed producers come from the registry in
:mod:`bsopt_common.topics`; nothing here takes a bare topic name from a service.

Consuming (:class:`EventConsumer`), per message:

1. the signature is verified
   (:class:`~bsopt_common.security.event_signing.EventSignatureVerifier`): its ``iss``
   must be one of the topic's registered producers, it must verify with a key that
   producer publishes (its JWKS), and every signed attribute must equal the received
   one (payload hash included). There is no expiry, so replaying the log later (a group
   reset, a new projection) verifies authentic old events as long as their producer
   still publishes the key; :attr:`Event.producer_client_id` is the verified producer;
2. the payload is decoded into the topic's registered protobuf type;
3. the handler runs in one database transaction that first records the event id in the
   consumer's own ``processed_events`` table (``INSERT .. ON CONFLICT DO NOTHING``): a
   redelivered event (the same signed event again) is skipped, so redelivery never
   doubles an effect, and a new id needs a new signature;
4. the offset is committed only after that transaction commits.

A message that fails 1 or 2, or whose handler still fails after ``max_attempts``, goes
to ``<topic>.dlq`` with the error in a ``dlq_error`` header, then its offset is
committed: poison messages never block the partition and are never silently dropped.

Outgoing events from a handler (or any state change) go through the transactional
outbox (:class:`Outbox`): written in the same transaction as the state, published (and
signed) by :class:`OutboxRelay`, and deduplicated downstream by their stable event id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol, TypeVar

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import TopicPartition
from google.protobuf.message import DecodeError, Message
from opentelemetry import propagate, trace
from psycopg import sql
from sqlalchemy import (
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt_common.codec import parse_rfc3339, rfc3339
from bsopt_common.db import session_scope
from bsopt_common.security.event_signing import (
    SIGNATURE_HEADER,
    EventSignatureError,
    EventSignatureVerifier,
    EventSigner,
)
from bsopt_common.topics import Topic, dlq_topic

log = logging.getLogger(__name__)
tracer = trace.get_tracer("bsopt.events")

CONTENT_TYPE = "application/protobuf"
M = TypeVar("M", bound=Message)

#: Kafka record headers: ``(name, value)`` pairs.
Headers = Sequence[tuple[str, bytes]]


class KafkaRecord(Protocol):
    """The fields of an aiokafka ``ConsumerRecord`` read here (aiokafka ships no types)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers | None: ...


@dataclass(frozen=True)
class Event:
    """A consumed event: CloudEvents attributes plus the decoded protobuf payload."""

    id: str
    type: str
    source: str
    subject: str
    time: datetime
    topic: str
    partition: int
    offset: int
    key: str | None
    payload: Message
    producer_client_id: str


def _traceparent() -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" in carrier:
        return carrier["traceparent"]
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


class EventPublisher:
    """Publish signed protobuf events with CloudEvents headers. ``start()`` before use.

    ``signer``: the service's :class:`EventSigner` (its client id and private key); None
    for a consumer-only service, whose publisher can only dead-letter (:meth:`send_dlq`):
    :meth:`publish` and :meth:`publish_raw` then raise RuntimeError.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        source: str,
        signer: EventSigner | None,
        *,
        client_id: str | None = None,
        client_options: Mapping[str, Any] | None = None,
    ):
        """``client_id``: the Kafka client id (``source`` by default);
        ``client_options``: security settings for aiokafka
        (:func:`bsopt_common.kafka_auth.kafka_client_options`)."""
        self.bootstrap_servers = bootstrap_servers
        self.source = source
        self.signer = signer
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, client_id=client_id or source, acks="all",
            **dict(client_options or {}),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, topic: Topic[M], message: M, *, event_id: str | None = None,
                      time: str | None = None) -> str:
        """Send one event of ``topic`` (key and subject from the registry) and wait for the
        broker's acknowledgement; return its id. TypeError for a payload of another type."""
        topic.check(message)
        return await self.publish_raw(
            topic.name, message.SerializeToString(), key=topic.key(message), subject=topic.subject(message),
            event_type=message.DESCRIPTOR.full_name, event_id=event_id, time=time,
        )

    async def publish_raw(
        self, topic: str, payload: bytes, *, key: str, subject: str, event_type: str,
        event_id: str | None = None, time: str | None = None,
    ) -> str:
        """Send one signed event and wait for the broker's acknowledgement; return its id.
        RuntimeError without a signer."""
        if self.signer is None:
            raise RuntimeError("this EventPublisher has no EventSigner: it can only dead-letter")
        event_id = event_id or str(uuid.uuid4())
        time = time or rfc3339(datetime.now(UTC), "milliseconds")
        signature = self.signer.sign(
            topic=topic, key=key, event_id=event_id, event_type=event_type, source=self.source, subject=subject,
            time=time, payload=payload,
        )
        with tracer.start_as_current_span(f"{topic} publish", kind=trace.SpanKind.PRODUCER):
            headers = [
                ("ce_specversion", b"1.0"),
                ("ce_id", event_id.encode()),
                ("ce_source", self.source.encode()),
                ("ce_type", event_type.encode()),
                ("ce_time", time.encode()),
                ("ce_subject", subject.encode()),
                ("content-type", CONTENT_TYPE.encode()),
                ("traceparent", _traceparent().encode()),
                (SIGNATURE_HEADER, signature.encode()),
            ]
            await self._producer.send_and_wait(topic, payload, key=key.encode(), headers=headers)
        return event_id

    async def send_dlq(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers,
                       error: str) -> None:
        extra = [("dlq_error", error.encode()[:1000]), ("dlq_original_topic", topic.encode())]
        await self._producer.send_and_wait(dlq_topic(topic), value, key=key, headers=list(headers) + extra)


# --- consumer side -----------------------------------------------------------------


@cache
def event_tables(schema: str) -> tuple[Table, Table]:
    """``(processed_events, outbox)`` tables in ``schema``: the runtime definition.
    Migrations create them with the frozen
    :func:`bsopt_common.migrations.create_event_tables_op`; the drift test holds the two
    equal."""
    md = MetaData(schema=schema)
    processed = Table(
        "processed_events", md,
        Column("event_id", String(64), primary_key=True),
        Column("topic", String(200), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    outbox = Table(
        "outbox", md,
        Column("event_id", String(64), primary_key=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("subject", String(200), nullable=False),
        Column("event_type", String(200), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now(), index=True),
        Column("published_at", DateTime(timezone=True), nullable=True, index=True),
    )
    return processed, outbox


class Outbox:
    """Transactional outbox of one service's schema."""

    def __init__(self, schema: str):
        self.schema = schema
        self.table = event_tables(schema)[1]
        #: Set after a commit that added rows, to wake the relay early.
        self.wakeup: asyncio.Event | None = None

    def notify(self) -> None:
        """Wake the relay now (call on the event loop after a commit that added rows)."""
        if self.wakeup is not None:
            self.wakeup.set()

    def add(self, session: Session, topic: Topic[M], message: M, *, event_id: str | None = None) -> str:
        """Stage ``message`` for ``topic`` inside ``session``'s transaction; return its id.
        Key and subject come from the topic's registry entry. TypeError for a payload that
        is not the topic's type (nothing is staged)."""
        return self.add_many(session, topic, [(message, event_id)])[0]

    def add_many(self, session: Session, topic: Topic[M], messages: Sequence[tuple[M, str | None]]) -> list[str]:
        """:meth:`add` for several ``(message, event_id or None)`` in one multi-row INSERT;
        return their ids in order. TypeError (nothing staged) if any payload is not the
        topic's type."""
        rows = self._rows(topic, messages)
        if rows:
            session.execute(self.table.insert(), rows)
        return [str(r["event_id"]) for r in rows]

    def copy_many(self, session: Session, topic: Topic[M], messages: Sequence[tuple[M, str | None]]) -> list[str]:
        """:meth:`add_many` through Postgres ``COPY ... FROM STDIN`` on ``session``'s
        connection (psycopg 3): for large batches, several times cheaper per row in
        Python than an INSERT's parameters. Same rows, same transaction, same errors."""
        rows = self._rows(topic, messages)
        if rows:
            columns = list(rows[0])
            raw = session.connection().connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
                sql.Identifier(self.schema), sql.Identifier(self.table.name),
                sql.SQL(", ").join(sql.Identifier(c) for c in columns))
            with raw.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row([row[c] for c in columns])
        return [str(r["event_id"]) for r in rows]

    @staticmethod
    def _rows(topic: Topic[M], messages: Sequence[tuple[M, str | None]]) -> list[dict[str, Any]]:
        rows = []
        for message, event_id in messages:
            topic.check(message)
            rows.append(dict(
                event_id=event_id or str(uuid.uuid4()), topic=topic.name, key=topic.key(message),
                subject=topic.subject(message), event_type=message.DESCRIPTOR.full_name,
                payload=message.SerializeToString()))
        return rows


class OutboxRelay:
    """Publish outbox rows in creation order and mark them published.

    At-least-once: a crash after publishing but before marking re-sends the row with
    the same event id, which idempotent consumers skip.
    """

    def __init__(self, outbox: Outbox, session_factory: sessionmaker[Session], publisher: EventPublisher,
                 *, poll_interval_seconds: float = 0.2, batch_size: int = 100):
        self.outbox = outbox
        self.session_factory = session_factory
        self.publisher = publisher
        self.poll_interval_seconds = poll_interval_seconds
        self.batch_size = batch_size
        self._stopping = asyncio.Event()

    def _fetch(self) -> Sequence[Row[Any]]:
        t = self.outbox.table
        with session_scope(self.session_factory) as s:
            rows = s.execute(
                select(t).where(t.c.published_at.is_(None)).order_by(t.c.created_at, t.c.event_id)
                .limit(self.batch_size)
            ).all()
        return rows

    def _mark(self, event_ids: list[str]) -> None:
        t = self.outbox.table
        with session_scope(self.session_factory) as s:
            s.execute(update(t).where(t.c.event_id.in_(event_ids)).values(published_at=func.now()))

    async def relay_once(self) -> int:
        rows = await asyncio.to_thread(self._fetch)
        for row in rows:
            await self.publisher.publish_raw(
                row.topic, row.payload, key=row.key, subject=row.subject, event_type=row.event_type,
                event_id=row.event_id,
                time=rfc3339(row.created_at, "milliseconds"),
            )
        if rows:
            await asyncio.to_thread(self._mark, [r.event_id for r in rows])
        return len(rows)

    async def run(self) -> None:
        if self.outbox.wakeup is None:
            self.outbox.wakeup = asyncio.Event()
        while not self._stopping.is_set():
            try:
                n = await self.relay_once()
            except Exception:
                log.exception("outbox relay failed; retrying")
                n = 0
            if n == 0:
                wake = self.outbox.wakeup
                try:
                    if wake is not None:
                        await asyncio.wait_for(wake.wait(), self.poll_interval_seconds)
                        wake.clear()
                    else:
                        await asyncio.sleep(self.poll_interval_seconds)
                except TimeoutError:
                    pass

    def stop(self) -> None:
        self._stopping.set()


Handler = Callable[[Event, Session], None]

#: ``session.info`` key: a handler appends callables here to run after its transaction
#: commits (in the worker thread, before the offset is committed).
AFTER_COMMIT = "after_commit"


class EventConsumer:
    """Idempotent consumer of some topics for one consumer group.

    ``handlers`` maps each registered topic to ``handler(event, session)``, which runs in
    a worker thread inside the transaction that records the event id. Payload types and
    allowed producers come from the topics. ``verifier`` checks every event's
    ``ce_signature`` before anything else (required: there is no unverified mode).
    A handler's failure is retried ``max_attempts`` times with backoff, then the record is
    dead-lettered; an exception of ``permanent_errors`` is dead-lettered at once.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        handlers: Mapping[Topic[Any], Handler],
        session_factory: sessionmaker[Session],
        schema: str,
        verifier: EventSignatureVerifier,
        dlq_publisher: EventPublisher,
        max_attempts: int = 3,
        outbox: Outbox | None = None,
        permanent_errors: tuple[type[BaseException], ...] = (),
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        fetch_max_wait_ms: int = 500,
        client_options: Mapping[str, Any] | None = None,
    ):
        if not handlers:
            raise ValueError(f"consumer group {group_id!r} has no topics")
        if not isinstance(verifier, EventSignatureVerifier):
            raise TypeError("EventConsumer needs an EventSignatureVerifier: events are never consumed unverified")
        self.topics: dict[str, Topic[Any]] = {t.name: t for t in handlers}
        self.handlers: dict[str, Handler] = {t.name: h for t, h in handlers.items()}
        self.session_factory = session_factory
        self.processed = event_tables(schema)[0]
        self.verifier = verifier
        self.dlq = dlq_publisher
        self.max_attempts = max_attempts
        self.permanent_errors = permanent_errors
        self.outbox = outbox
        self._consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=bootstrap_servers, group_id=group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms, heartbeat_interval_ms=heartbeat_interval_ms,
            fetch_max_wait_ms=fetch_max_wait_ms, **dict(client_options or {}),
        )
        self._stopping = asyncio.Event()
        #: Counters, observable by tests and metrics.
        self.handled = 0
        self.skipped_duplicates = 0
        self.dead_lettered = 0

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        await self._consumer.stop()

    async def run(self) -> None:
        """Consume until :meth:`stop`: each record is processed in its own transaction; the
        offsets are committed once per partition and batch (up to 50 records), after them.

        A rebalance can take a partition away while its batch is being processed. The
        rest of that batch is then left to the partition's new owner, which starts from
        the last committed offset; a record processed here whose commit was refused
        (:class:`~aiokafka.errors.CommitFailedError`, ``IllegalStateError``) comes again
        and is skipped as a duplicate by the processed-events table. The loop itself
        never dies of a rebalance.
        """
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=200, max_records=50)
            for tp, messages in batches.items():
                done: int | None = None  # offset of the last record of tp processed
                for msg in messages:
                    if tp not in self._consumer.assignment():
                        log.info("%s[%d] was reassigned mid-batch; its new owner resumes at its "
                                 "last committed offset", tp.topic, tp.partition)
                        break
                    await self._process(msg)
                    done = msg.offset
                if done is not None:
                    # one commit per partition and batch (each record's transaction is
                    # already committed; a redelivery after a crash is skipped as a duplicate)
                    await self._commit(tp, done)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({TopicPartition(tp.topic, tp.partition): offset + 1})
        except (CommitFailedError, IllegalStateError) as exc:
            log.info("offset %d of %s[%d] not committed (%s: the group rebalanced); "
                     "its redelivery will be skipped as a duplicate",
                     offset, tp.topic, tp.partition, type(exc).__name__)

    async def _process(self, msg: KafkaRecord) -> None:
        headers = {k: v.decode(errors="replace") for k, v in (msg.headers or ())}
        ctx = propagate.extract(headers)
        with tracer.start_as_current_span(f"{msg.topic} process", context=ctx, kind=trace.SpanKind.CONSUMER):
            try:
                event = await self._decode(msg, headers)
            except _Rejected as exc:
                await self._dead_letter(msg, str(exc))
                return
            last_error = ""
            for attempt in range(self.max_attempts):
                try:
                    await asyncio.to_thread(self._handle_in_transaction, event)
                    if self.outbox is not None:
                        self.outbox.notify()
                    return
                except Exception as exc:  # the handler's own failures
                    last_error = f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, self.permanent_errors):  # retrying cannot cure it
                        break
                    log.warning("handler failed for %s (attempt %d/%d): %s",
                                event.id, attempt + 1, self.max_attempts, last_error)
                    await asyncio.sleep(0.1 * (2**attempt))
            await self._dead_letter(msg, last_error)

    async def _decode(self, msg: KafkaRecord, headers: dict[str, str]) -> Event:
        names = [k for k, _ in (msg.headers or ())]
        for attr in (*_SINGLE_HEADERS, SIGNATURE_HEADER):
            if names.count(attr) > 1:
                raise _Rejected(f"duplicate header {attr}")
        for attr in ("ce_id", "ce_type", "ce_source", "ce_time"):
            if not headers.get(attr):
                raise _Rejected(f"missing CloudEvents attribute {attr}")
        try:
            produced_at = parse_rfc3339(headers["ce_time"])
        except ValueError:
            raise _Rejected("ce_time is not RFC 3339") from None
        try:
            key = msg.key.decode() if msg.key is not None else None
        except UnicodeDecodeError:
            raise _Rejected("the partition key is not UTF-8") from None
        topic = self.topics[msg.topic]
        signature = headers.get(SIGNATURE_HEADER)
        if not signature:
            raise _Rejected(f"event carries no signature ({SIGNATURE_HEADER})")
        try:
            client_id = await self.verifier.verify(
                signature, topic=topic, headers=headers, key=key, payload=msg.value or b"")
        except EventSignatureError as exc:
            raise _Rejected(f"event signature refused: {exc}") from None
        payload_type = topic.payload
        payload = payload_type()
        try:
            payload.ParseFromString(msg.value or b"")
        except DecodeError as exc:
            raise _Rejected(f"payload is not a {payload_type.DESCRIPTOR.full_name}: {exc}") from None
        return Event(
            id=headers["ce_id"], type=headers["ce_type"], source=headers["ce_source"],
            subject=headers.get("ce_subject", ""), time=produced_at, topic=msg.topic,
            partition=msg.partition, offset=msg.offset,
            key=key or None, payload=payload, producer_client_id=client_id,
        )

    def _handle_in_transaction(self, event: Event) -> None:
        with session_scope(self.session_factory) as session:
            inserted = session.execute(
                pg_insert(self.processed).values(event_id=event.id, topic=event.topic)
                .on_conflict_do_nothing().returning(self.processed.c.event_id)
            ).first()
            if inserted is None:
                self.skipped_duplicates += 1
                return
            self.handlers[event.topic](event, session)
            after_commit = list(session.info.pop(AFTER_COMMIT, ()))
        self.handled += 1
        for callback in after_commit:
            callback()

    async def _dead_letter(self, msg: KafkaRecord, error: str) -> None:
        log.error("dead-lettering %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, error)
        await self.dlq.send_dlq(msg.topic, msg.value, msg.key, list(msg.headers or ()), error)
        self.dead_lettered += 1


#: CloudEvents headers a message must not carry twice (which copy counts would be ambiguous).
_SINGLE_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "content-type")


class _Rejected(Exception):
    pass
