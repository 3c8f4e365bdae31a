"""The coach stream (issue 9 §3) with real components: resource-api replicas on real
uvicorn servers over one Postgres (LISTEN/NOTIFY), the Kafka-protocol broker, and the
``websockets`` client.

* every event type reaches a socket on the replica that did not consume it;
* resume with ``lastEventId`` (and its alias ``after``) while events keep coming: no
  gap, no duplicate;
* a slow socket's overflow: oldest dropped, ``synced: false`` marker, refetch;
* the sixth socket of a user is closed with 1008;
* client messages: ``chat.ask_reflection``, ``chat.feedback``, ``note.add``, and errors
  that leave the socket open;
* a broken LISTEN connection closes the replica's sockets with 1013, then comes back.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select, text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as broker_pb
from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as scorer_pb
from bsopt_api import encoding, projections, stream
from bsopt_api.bootstrap import bootstrap, serve
from bsopt_api.models import coach_feedback, coach_notes, coach_stream
from bsopt_common import codec
from bsopt_common.db import create_db_engine, session_scope
from bsopt_common.events import EventPublisher
from bsopt_common.money import Money
from bsopt_common.security.event_signing import EventSigner
from bsopt_common.testing.pytest_plugin import create_topics
from bsopt_common.testing.services import ServiceThread
from bsopt_common.topics import DIGESTS_READY, IMPORTS_PROGRESS, TRADES_SCORED

TOPICS = [t.name for t in (TRADES_SCORED, DIGESTS_READY, IMPORTS_PROGRESS)]


@pytest.fixture(scope="module")
def api_settings(settings_for, kafka_bootstrap):
    """Replica A: consumes the topics."""
    create_topics(kafka_bootstrap, TOPICS + [f"{t}.dlq" for t in TOPICS])
    return settings_for(consume_events=True, kafka_bootstrap_servers=kafka_bootstrap,
                        consumer_group=f"resource-api-test-{uuid.uuid4().hex[:8]}")


def _replica(settings, token_provider) -> Iterator:
    runtime = bootstrap(settings, token_provider=token_provider("resource-api"))
    with ServiceThread(lambda stop: serve(settings, stop, runtime=runtime), port=settings.port):
        yield settings, runtime


@pytest.fixture(scope="module")
def replica_b(running_api, settings_for, token_provider):
    """Replica B: same database, consumes nothing."""
    yield from _replica(settings_for(consume_events=False), token_provider)


@pytest.fixture(scope="module")
def small_queue_replica(running_api, settings_for, token_provider):
    """A replica whose sockets queue at most 3 events."""
    yield from _replica(settings_for(consume_events=False, ws_queue_size=3), token_provider)


def ws_url(settings) -> str:
    return f"ws://{settings.host}:{settings.port}/v1/ws/coach"


@pytest.fixture
async def publisher_for(kafka_bootstrap, test_issuer) -> AsyncIterator[Callable]:
    started: list[EventPublisher] = []

    async def make(client_id: str) -> EventPublisher:
        pub = EventPublisher(kafka_bootstrap, source=f"/bsopt/{client_id}",
                             signer=EventSigner(client_id, test_issuer.service_key(client_id)))
        await pub.start()
        started.append(pub)
        return pub

    yield make
    for pub in started:
        await pub.stop()


def scored(user_id: str, trade_id: str | None = None) -> scorer_pb.ScoredTrade:
    executed = Timestamp()
    executed.FromJsonString("2024-03-04T00:00:00Z")
    return scorer_pb.ScoredTrade(
        trade_id=trade_id or f"t-{uuid.uuid4().hex[:10]}", user_id=user_id, account_id="acct-1", symbol="MSFT",
        side=broker_pb.SIDE_SELL, quantity=5, price=codec.money_pb(Money.of("402.10", "USD")), executed_at=executed,
        label=scorer_pb.BIAS_LABEL_PANIC, explanation="sold after -6.2% in 1 day (RSI 24)",
        reflection="Was the plan to sell at this level?",
    )


def store_reflection(db, trade: scorer_pb.ScoredTrade) -> dict:
    """As the trades.scored.v1 consumer stores it."""
    with session_scope(db) as session:
        projections.record_coach_message(session, trade)
        return stream.append(session, trade.user_id, stream.COACH_REFLECT, encoding.coach_message(trade),
                             dedupe_key=f"coach.reflect:{trade.trade_id}")


def append_import(db, user_id: str, n: int = 1, error: str = "") -> list[dict]:
    """``n`` import.progress events of ``user_id``, in one transaction."""
    with session_scope(db) as session:
        return [stream.record_import_progress(session, str(uuid.uuid4()), broker_events.ImportProgress(
            import_id=f"imp-{i}", user_id=user_id, account_id="acct-1", status=broker_pb.IMPORT_STATUS_RUNNING,
            pages_fetched=i, broker="paper", error=error)) for i in range(n)]


def stored_ids(db, user_id: str) -> list[int]:
    with session_scope(db) as s:
        return list(s.execute(select(coach_stream.c.id).where(coach_stream.c.user_id == user_id)
                              .order_by(coach_stream.c.id)).scalars())


async def recv_json(ws, timeout: float = 10.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def assert_silent(ws, seconds: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), seconds)


async def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def open_socket(settings, runtime, tokens, user_id: str, query: str = ""):
    before = runtime.hub.connections(user_id)
    headers = tokens.bearer(tokens.user("trades:read", sub=user_id))
    ws = await connect(ws_url(settings) + query, additional_headers=headers)
    await eventually(lambda: runtime.hub.connections(user_id) > before, 15)  # a loaded CI machine
    return ws


# --- any replica delivers every event --------------------------------------------------------


async def test_a_client_on_replica_b_gets_every_event_replica_a_consumed(
        running_api, replica_b, tokens, db, publisher_for):
    user = tokens.new_user()
    b_settings, b_runtime = replica_b
    on_a = await open_socket(running_api.settings, running_api.runtime, tokens, user)
    on_b = await open_socket(b_settings, b_runtime, tokens, user)
    try:
        trade = scorer_events.TradeScored(trade=scored(user))
        await (await publisher_for("ml-scorer")).publish(TRADES_SCORED, trade)
        reflect = await recv_json(on_b)
        assert reflect["type"] == "coach.reflect" and reflect["trade_id"] == trade.trade.trade_id
        assert reflect["id"] == reflect["seq"] and reflect["reflection"] == "Was the plan to sell at this level?"

        await (await publisher_for("broker-gateway")).publish(IMPORTS_PROGRESS, broker_events.ImportProgress(
            import_id="imp-1", user_id=user, account_id="acct-1", status=broker_pb.IMPORT_STATUS_DONE,
            pages_fetched=2, fills_seen=7, trades_imported=6, duplicates_skipped=1, broker="paper"))
        progress = await recv_json(on_b)
        assert {k: progress[k] for k in ("type", "import_id", "status", "trades_imported", "duplicates_skipped")} == {
            "type": "import.progress", "import_id": "imp-1", "status": "done", "trades_imported": 6,
            "duplicates_skipped": 1}

        digest_pub = await publisher_for("digest-worker")
        digest = digest_events.DigestReady(
            digest_id=f"d-{uuid.uuid4().hex[:8]}", user_id=user, period_start="2024-03-04", period_end="2024-03-10",
            trades=3, label_counts={"PANIC": 1}, net_cash_flow=codec.money_pb(Money.of("-5", "USD")),
            summary="a week", version=2)
        await digest_pub.publish(DIGESTS_READY, digest)
        ready = await recv_json(on_b)
        assert {k: ready[k] for k in ("type", "digest_id", "version", "period_start")} == {
            "type": "digest.ready", "digest_id": digest.digest_id, "version": 2, "period_start": "2024-03-04"}
        # an older version arriving late is not announced
        older = digest_events.DigestReady()
        older.CopyFrom(digest)
        older.version = 1
        await digest_pub.publish(DIGESTS_READY, older)
        await assert_silent(on_b, 1.5)

        # replica A's own socket got the same events, with the same ids, in the same order
        got_a = [await recv_json(on_a) for _ in range(3)]
        assert got_a == [reflect, progress, ready]
        assert [m["id"] for m in got_a] == stored_ids(db, user)
        assert b_runtime.hub.listener is not None and b_runtime.hub.listener.delivered >= 3
    finally:
        await on_a.close()
        await on_b.close()


# --- resume ----------------------------------------------------------------------------------


async def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(running_api, replica_b, tokens, db):
    user = tokens.new_user()
    b_settings, b_runtime = replica_b
    first = await open_socket(b_settings, b_runtime, tokens, user, "?lastEventId=0")
    seen = []
    try:
        store_reflection(db, scored(user))
        append_import(db, user)
        seen = [await recv_json(first), await recv_json(first)]
    finally:
        await first.close()
    # missed while away, including the reserved simulation.ready
    append_import(db, user, 3)
    with session_scope(db) as s:
        stream.record_simulation_ready(s, user, f"sim-{uuid.uuid4().hex[:6]}", {"trade_id": "t-1", "horizon_days": 5})

    # reconnect (on the other replica) while events keep being committed
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            append_import(db, user, 2)
            time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        resumed = await open_socket(running_api.settings, running_api.runtime, tokens, user,
                                    f"?lastEventId={seen[-1]['id']}")
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    try:
        expected = [i for i in stored_ids(db, user) if i > seen[-1]["id"]]
        got = [await recv_json(resumed) for _ in range(len(expected))]
        await assert_silent(resumed)
    finally:
        await resumed.close()
    assert [m["id"] for m in got] == expected  # in order, every one, once
    assert {m["type"] for m in got} == {"import.progress", "simulation.ready"}
    assert len(expected) > 10

    # ?after= is the same cursor
    async with connect(ws_url(running_api.settings) + f"?after={seen[0]['id']}",
                       additional_headers=tokens.bearer(tokens.user("trades:read", sub=user))) as ws:
        assert await recv_json(ws) == seen[1]


async def test_conflicting_cursors_are_refused(running_api, tokens):
    for query in ("?lastEventId=3&after=4", "?lastEventId=x"):
        with pytest.raises(InvalidStatus):
            async with connect(ws_url(running_api.settings) + query,
                               additional_headers=tokens.bearer(tokens.user())):
                pass


# --- backpressure ----------------------------------------------------------------------------


async def test_overflow_drops_the_oldest_and_sends_the_synced_false_marker(small_queue_replica, tokens, db):
    """A client that stops reading: once the TCP buffers are full the server's sender
    blocks, the socket's queue (3 here) overflows, the oldest events are dropped and the
    client is told ``synced: false`` before the events it does get."""
    settings, runtime = small_queue_replica
    user = tokens.new_user()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
    sock.connect((settings.host, settings.port))
    sock.setblocking(False)
    ws = await connect(ws_url(settings), sock=sock, max_queue=1, max_size=2**20, compression=None,
                       additional_headers=tokens.bearer(tokens.user("trades:read", sub=user)))
    try:
        await eventually(lambda: runtime.hub.connections(user) == 1, 5)
        # 12 MB in 200 events of 60 kB (too large for a NOTIFY payload: read from the table)
        events = append_import(db, user, 200, error="x" * 60_000)
        (sub,) = runtime.hub._by_user[user]  # the replica's side of this socket
        await eventually(lambda: sub.dropped_total > 0, 30)
        got = []
        while not got or got[-1].get("id") != events[-1]["id"]:
            got.append(await recv_json(ws))
        await assert_silent(ws)
    finally:
        await ws.close()
    markers = [m for m in got if m["type"] == "synced"]
    delivered = [m for m in got if m["type"] != "synced"]
    assert markers and all(set(m) == {"type", "synced", "dropped", "last_event_id"} and m["synced"] is False
                           for m in markers)
    assert sum(m["dropped"] for m in markers) + len(delivered) == 200
    ids = [m["id"] for m in delivered]
    assert ids == sorted(set(ids)) and delivered == [e for e in events if e["id"] in set(ids)]
    # each marker names the last event the client got before its gap
    for i, m in enumerate(got):
        if m["type"] == "synced":
            before = [x["id"] for x in got[:i] if x["type"] != "synced"]
            assert m["last_event_id"] == (before[-1] if before else None)

    # the client refetches from the marker's last_event_id: everything it missed, in order
    first_gap = markers[0]["last_event_id"] or 0
    async with connect(ws_url(settings) + f"?lastEventId={first_gap}", max_size=2**20,
                       additional_headers=tokens.bearer(tokens.user("trades:read", sub=user))) as again:
        missed = [e for e in events if e["id"] > first_gap]
        assert [await recv_json(again) for _ in range(len(missed))] == missed


# --- limits ----------------------------------------------------------------------------------


async def test_the_sixth_socket_of_a_user_is_closed_1008_whichever_replica_it_reaches(
        running_api, replica_b, tokens):
    user = tokens.new_user()
    a = (running_api.settings, running_api.runtime)
    b = replica_b
    on_a = [await open_socket(*a, tokens, user) for _ in range(3)]
    on_b = [await open_socket(*b, tokens, user) for _ in range(2)]
    try:
        for settings, _ in (a, b):
            async with connect(ws_url(settings),
                               additional_headers=tokens.bearer(tokens.user("trades:read", sub=user))) as sixth:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(sixth.recv(), 5)
            assert closed.value.rcvd.code == 1008
            assert closed.value.rcvd.reason == "too many coach sockets for this user (at most 5)"
        assert (a[1].hub.connections(user), b[1].hub.connections(user)) == (3, 2)
        # another user is not affected; a socket closed on A frees a place on B
        other = await open_socket(*b, tokens, tokens.new_user())
        await other.close()
        await on_a.pop().close()
        await eventually(lambda: a[1].hub.connections(user) == 2, 5)
        for _ in range(50):  # the slot is freed just after the socket is forgotten
            try:
                on_b.append(await open_socket(*b, tokens, user))
                break
            except AssertionError:
                await asyncio.sleep(0.1)
        assert b[1].hub.connections(user) == 3
    finally:
        for ws in on_a + on_b:
            await ws.close()


# --- client messages ---------------------------------------------------------------------------


async def test_client_messages_are_answered_and_stored(running_api, tokens, db):
    user = tokens.new_user()
    trade = scored(user)
    store_reflection(db, trade)
    other_trade = scored(tokens.new_user())
    store_reflection(db, other_trade)
    ws = await open_socket(running_api.settings, running_api.runtime, tokens, user)
    try:
        async def ask(message) -> dict:
            await ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))
            return await recv_json(ws)

        answer = await ask({"type": "chat.ask_reflection", "trade_id": trade.trade_id, "request_id": "r1"})
        assert answer == {
            "type": "chat.reflection", "request_id": "r1", "trade_id": trade.trade_id, "label": "PANIC",
            "explanation": "sold after -6.2% in 1 day (RSI 24)", "reflection": "Was the plan to sell at this level?",
            "symbol": "MSFT", "side": "sell", "executed_at": "2024-03-04T00:00:00Z"}

        assert await ask({"type": "chat.feedback", "trade_id": trade.trade_id, "rating": "up"}) == {
            "type": "chat.feedback.stored", "trade_id": trade.trade_id, "rating": "up"}
        assert (await ask({"type": "chat.feedback", "trade_id": trade.trade_id, "rating": "down"}))["rating"] == "down"

        added = await ask({"type": "note.add", "trade_id": trade.trade_id, "text": "  sold the low; plan next time\n"})
        assert {k: added[k] for k in ("type", "trade_id", "text")} == {
            "type": "note.added", "trade_id": trade.trade_id, "text": "sold the low; plan next time"}
        assert isinstance(added["note_id"], int) and added["created_at"].endswith("Z")

        with session_scope(db) as s:
            ratings = s.execute(select(coach_feedback.c.trade_id, coach_feedback.c.rating)
                                .where(coach_feedback.c.user_id == user)).all()
            notes = s.execute(select(coach_notes.c.trade_id, coach_notes.c.text)
                              .where(coach_notes.c.user_id == user)).all()
        assert [tuple(r) for r in ratings] == [(trade.trade_id, "down")]
        assert [tuple(n) for n in notes] == [(trade.trade_id, "sold the low; plan next time")]

        # errors are answered, the socket stays open
        errors = [
            (await ask({"type": "chat.order_pizza", "request_id": "r2"}), "unknown_type"),
            (await ask("{not json"), "invalid_message"),
            (await ask(b"\x00\x01"), "invalid_message"),
            (await ask("[1, 2]"), "invalid_message"),
            (await ask({"type": "chat.feedback", "trade_id": trade.trade_id, "rating": "meh"}), "invalid_message"),
            (await ask({"type": "note.add", "trade_id": trade.trade_id, "text": ""}), "invalid_message"),
            (await ask({"type": "note.add", "trade_id": trade.trade_id, "text": "x" * 2001}), "invalid_message"),
            (await ask({"type": "note.add", "trade_id": "a\x00b", "text": "hi"}), "invalid_message"),
            (await ask("x" * 9000), "invalid_message"),
            # another user's trade is not ours
            (await ask({"type": "chat.ask_reflection", "trade_id": other_trade.trade_id}), "not_found"),
            (await ask({"type": "chat.feedback", "trade_id": "t-none", "rating": "up"}), "not_found"),
            (await ask({"type": "note.add", "trade_id": "t-none", "text": "hi"}), "not_found"),
        ]
        for reply, code in errors:
            assert reply["type"] == "error" and reply["error"] == code, reply
        assert errors[0][0]["request_id"] == "r2"

        # still live
        (pushed,) = append_import(db, user)
        assert await recv_json(ws) == pushed
    finally:
        await ws.close()


# --- the event feed breaks ---------------------------------------------------------------------


async def test_a_broken_listen_connection_closes_sockets_1013_and_the_feed_comes_back(
        running_api, replica_b, tokens, db, postgres_url):
    """What was committed while a replica was not listening it cannot push: its sockets
    are told to resume (1013), and once it listens again new sockets get live events."""
    b_settings, b_runtime = replica_b
    user = tokens.new_user()
    ws = await open_socket(b_settings, b_runtime, tokens, user)
    engine = create_db_engine(postgres_url, application_name="bsopt-api-tests-terminate")
    try:
        with engine.begin() as conn:
            killed = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'bsopt-api-listen' AND datname = current_database()")).scalar_one()
        assert killed >= 2  # both replicas' listeners
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1013
        assert "lastEventId" in closed.value.rcvd.reason
    finally:
        await ws.close()
        engine.dispose()

    def listening(runtime) -> bool:
        return runtime.hub.listener is not None and runtime.hub.listener._listening.is_set()

    await eventually(lambda: listening(b_runtime) and listening(running_api.runtime), 15)
    again = await open_socket(b_settings, b_runtime, tokens, user)
    try:
        (pushed,) = append_import(db, user)
        assert await recv_json(again) == pushed
    finally:
        await again.close()


async def test_a_broken_slots_connection_resets_the_limits_and_sockets_resume(replica_b, tokens, postgres_url):
    b_settings, b_runtime = replica_b
    user = tokens.new_user()
    ws = await open_socket(b_settings, b_runtime, tokens, user)
    engine = create_db_engine(postgres_url, application_name="bsopt-api-tests-terminate")
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'bsopt-api-socket-slots' AND datname = current_database()"))
        # the next socket finds the connection gone: every socket of the replica is told
        # to reconnect (its slots went with the connection), then slots work again
        async with connect(ws_url(b_settings),
                           additional_headers=tokens.bearer(tokens.user("trades:read", sub=user))) as next_ws:
            with pytest.raises(ConnectionClosed) as refused:
                await asyncio.wait_for(next_ws.recv(), 10)
        assert refused.value.rcvd.code == 1013
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1013
    finally:
        await ws.close()
        engine.dispose()
    # the replica has let go of both closed sockets (and their slots) before five new ones
    await eventually(lambda: b_runtime.hub.connections(user) == 0, 15)
    again = [await open_socket(b_settings, b_runtime, tokens, user) for _ in range(5)]
    try:
        async with connect(ws_url(b_settings),
                           additional_headers=tokens.bearer(tokens.user("trades:read", sub=user))) as sixth:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(sixth.recv(), 5)
        assert closed.value.rcvd.code == 1008
    finally:
        for s in again:
            await s.close()
