"""``Outbox.copy_many`` (COPY FROM STDIN) stages exactly what ``add_many`` (INSERT) does,
in the caller's transaction, on a real Postgres; and ``database_key`` names a database
without its password."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, text

from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt_common import topics
from bsopt_common.db import create_db_engine, database_key, make_session_factory, session_scope
from bsopt_common.events import Outbox, event_tables

SCHEMA = "outbox_copy_test"


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    eng = create_db_engine(postgres_url)
    with eng.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    event_tables(SCHEMA)[1].metadata.create_all(eng)
    yield eng
    with eng.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {SCHEMA} CASCADE"))
    eng.dispose()


def _events(prefix: str) -> list[tuple[broker_events.TradeImported, str | None]]:
    return [(broker_events.TradeImported(trade_id=f"{prefix}{i}", user_id=f"u{i % 3}", symbol="AAPL"),
             f"{prefix}-id-{i}" if i % 2 else None) for i in range(50)]


def test_copy_many_stages_the_same_rows_as_add_many(engine: Engine) -> None:
    outbox = Outbox(SCHEMA)
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        inserted = outbox.add_many(s, topics.TRADES_IMPORTED, _events("a"))
        copied = outbox.copy_many(s, topics.TRADES_IMPORTED, _events("b"))
    t = outbox.table
    with factory() as s:
        rows = {r.event_id: r for r in s.execute(select(t))}
    assert len(rows) == 100 and set(inserted) | set(copied) == set(rows)
    for a_id, b_id in zip(inserted, copied, strict=True):
        a, b = rows[a_id], rows[b_id]
        assert (a.topic, a.key, a.subject, a.event_type) == (b.topic, b.key, b.subject.replace("/b", "/a"),
                                                             b.event_type)
        assert broker_events.TradeImported.FromString(b.payload).trade_id.startswith("b")
        assert b.published_at is None and b.created_at is not None


def test_copy_many_rolls_back_with_its_transaction_and_refuses_a_wrong_payload(engine: Engine) -> None:
    outbox = Outbox(SCHEMA)
    factory = make_session_factory(engine)
    with pytest.raises(RuntimeError), session_scope(factory) as s:
        outbox.copy_many(s, topics.TRADES_IMPORTED, _events("c"))
        raise RuntimeError("the business change failed")
    with pytest.raises(TypeError), session_scope(factory) as s:
        outbox.copy_many(s, topics.TRADES_IMPORTED, [(broker_events.ImportProgress(), None)])  # type: ignore[list-item]
    with factory() as s:
        assert s.execute(select(outbox.table)).all() == []


def test_database_key_hides_the_password_and_follows_the_url() -> None:
    a = create_db_engine("postgresql://u:s3cret@127.0.0.1:5432/one")
    b = create_db_engine("postgresql://u:other@127.0.0.1:5432/one")
    c = create_db_engine("postgresql://u:s3cret@127.0.0.1:5432/two")
    assert "s3cret" not in database_key(a)
    assert database_key(a) == database_key(b) != database_key(c)
    assert database_key(None) == ""
