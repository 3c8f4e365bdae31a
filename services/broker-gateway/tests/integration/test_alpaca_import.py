"""Importing Alpaca fills: AlpacaBroker (alpaca-py over real HTTP to the local stand-in's
account activities) -> TradeImporter -> real Postgres (dedupe rows, import record, outbox)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import requests
from sqlalchemy import select, text

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import events_pb2
from bsopt_broker import models
from bsopt_broker.adapters.alpaca.accounts import parse_accounts
from bsopt_broker.adapters.alpaca.activities import (
    UnsupportedFill,
    alpaca_fills,
    default_window,
    fill_from_activity,
)
from bsopt_broker.adapters.alpaca.broker import AlpacaBroker
from bsopt_broker.domain.records import MarketOrder
from bsopt_broker.domain.venue import AccountNotFound
from bsopt_broker.trade_import import TradeImporter, event_id_of, import_id_of
from bsopt_common import codec, migrations
from bsopt_common.db import create_db_engine, make_session_factory
from bsopt_common.errors import InvalidArgument, Unavailable
from bsopt_common.events import Outbox
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side

END = datetime(2026, 11, 30, tzinfo=UTC)
START = END - timedelta(days=30)
FILL_PATH = "/v2/account/activities/FILL"


@pytest.fixture(scope="module")
def session_factory(service_database_urls):
    engine = create_db_engine(service_database_urls["broker-gateway"])
    migrations.upgrade("bsopt_broker", engine, models.SCHEMA)
    yield make_session_factory(engine)
    engine.dispose()


def alpaca(standin, name, *, read_only=True, cash=10_000, **kw):
    key = f"PK{name.upper()}"
    standin.add_account(key, f"secret-{name}", cash=cash)
    accounts = parse_accounts([{"broker": "alpaca", "base_url": standin.base_url, "name": name, "owner": f"u-{name}",
                                "api_key_id": key, "api_secret_key": f"secret-{name}", "read_only": read_only}])
    return key, AlpacaBroker(accounts, lambda symbol: Money(standin.prices[symbol], "USD"), **kw)


def seed_month(standin, key):
    """250 fills in [START, END) (one exactly at START, one order of 5 partial fills) and
    7 outside it (one exactly at END). Returns the in-window activities."""
    inside = standin.seed_fills(key, 1, START, START + timedelta(milliseconds=1), symbol="MSFT", side="sell")
    inside += standin.seed_fills(key, 244, START + timedelta(hours=1), END - timedelta(hours=1), price="101.25")
    inside += standin.seed_fills(key, 5, START + timedelta(days=2), START + timedelta(days=2, minutes=5),
                                 fills_per_order=5, qty=7, price="99.5")
    standin.seed_fills(key, 4, START - timedelta(days=4), START)
    standin.seed_fills(key, 1, END, END + timedelta(milliseconds=1))
    standin.seed_fills(key, 2, END + timedelta(hours=1), END + timedelta(hours=2))
    return inside


def outbox_events(session_factory, import_id):
    t = Outbox(models.SCHEMA).table
    with session_factory() as s:
        rows = s.execute(select(t).where(t.c.topic == "trades.imported.v1")).all()
    events = [(r, events_pb2.TradeImported.FromString(r.payload)) for r in rows]
    return [(r, e) for r, e in events if e.import_id == import_id]


def test_month_of_fills_imported_once_across_pages(alpaca_standin, session_factory):
    key, broker = alpaca(alpaca_standin, "reader")
    seeded = seed_month(alpaca_standin, key)
    importer = TradeImporter(session_factory, broker, Outbox(models.SCHEMA))

    first = importer.import_trades("reader", "u-reader", START, END)
    pages = [r for r in alpaca_standin.requests if r[2] == FILL_PATH]
    assert len(pages) == 3  # 251 activities within the widened window: 100 + 100 + 51
    assert (first.trades_imported, first.duplicates_skipped) == (250, 0)
    assert first.import_id == import_id_of("u-reader", "alpaca", "reader", START, END)

    # the retried job: same import id, nothing imported twice, nothing published twice
    again = importer.import_trades("reader", "u-reader", START, END)
    assert (again.import_id, again.trades_imported, again.duplicates_skipped) == (first.import_id, 0, 250)
    # the same instants written in another zone are the same window
    east = timezone(timedelta(hours=2))
    third = importer.import_trades("reader", "u-reader", START.astimezone(east), END.astimezone(east))
    assert (third.import_id, third.trades_imported) == (first.import_id, 0)

    events = outbox_events(session_factory, first.import_id)
    assert len(events) == 250
    by_id = {e.trade_id: (row, e) for row, e in events}
    assert set(by_id) == {a["id"] for a in seeded}  # nothing outside [START, END)
    for activity in seeded:
        row, ev = by_id[activity["id"]]
        assert row.key == "u-reader" and row.event_id == event_id_of("u-reader", "alpaca", activity["id"])
        assert (ev.user_id, ev.account_id, ev.broker, ev.import_id) == ("u-reader", "reader", "alpaca",
                                                                         first.import_id)
        assert ev.symbol == activity["symbol"] and ev.quantity == int(activity["qty"])
        assert ev.side == (pb.SIDE_BUY if activity["side"] == "buy" else pb.SIDE_SELL)
        assert codec.money_from_pb(ev, "price") == Money.of(activity["price"], "USD")
        assert codec.money_from_pb(ev, "fee") == Money.of(0, "USD")
        executed = ev.executed_at.ToDatetime(tzinfo=UTC)
        assert executed == datetime.fromisoformat(activity["transaction_time"]) and START <= executed < END

    with session_factory() as s:
        imports = s.execute(text("SELECT trades_imported, duplicates_skipped FROM broker.imports "
                                 "WHERE import_id = :i"), {"i": first.import_id}).all()
        dedupe = s.execute(text("SELECT count(*) FROM broker.imported_trades WHERE import_id = :i"),
                           {"i": first.import_id}).scalar_one()
    assert imports == [(250, 0)] and dedupe == 250  # the record of the run that imported


def test_concurrent_retries_of_one_window_import_each_trade_once(alpaca_standin, session_factory):
    key, broker = alpaca(alpaca_standin, "twice")
    seed_month(alpaca_standin, key)
    importer = TradeImporter(session_factory, broker, Outbox(models.SCHEMA))
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: importer.import_trades("twice", "u-twice", START, END), range(3)))
    assert len({r.import_id for r in results}) == 1
    assert sorted(r.trades_imported for r in results)[-1] == 250 and sum(r.trades_imported for r in results) == 250
    assert all(r.trades_imported + r.duplicates_skipped == 250 for r in results)
    assert len(outbox_events(session_factory, results[0].import_id)) == 250


def test_a_failed_page_is_retried_alone_and_a_lasting_outage_imports_nothing(alpaca_standin, session_factory):
    key, broker = alpaca(alpaca_standin, "flaky", retry_attempts=3, retry_initial_wait_s=0.01,
                         retry_max_wait_s=0.05, breaker_failures=100)
    seed_month(alpaca_standin, key)
    broker.get_account("flaky", "u-flaky")
    alpaca_standin.fail_next(key, 503, times=1, path=FILL_PATH)
    assert len(broker.fills_between("flaky", "u-flaky", START, END)) == 250
    assert sum(1 for r in alpaca_standin.requests if r[2] == FILL_PATH) == 4  # 3 pages, the first one twice

    alpaca_standin.fail_next(key, 500, times=3, path=FILL_PATH)
    window = (START - timedelta(days=1), END)
    with pytest.raises(Unavailable):
        TradeImporter(session_factory, broker, Outbox(models.SCHEMA)).import_trades("flaky", "u-flaky", *window)
    lost = import_id_of("u-flaky", "alpaca", "flaky", *window)
    with session_factory() as s:
        rows = s.execute(text("SELECT count(*) FROM broker.imports WHERE import_id = :i"), {"i": lost}).scalar_one()
    assert rows == 0
    assert outbox_events(session_factory, lost) == []


def test_partial_fills_are_separate_fills_of_one_order_oldest_first(alpaca_standin):
    key, broker = alpaca(alpaca_standin, "partial")
    seeded = seed_month(alpaca_standin, key)
    fills = broker.fills_between("partial", "u-partial", START, END)
    assert len(fills) == 250 and len({f.trade_id for f in fills}) == 250
    assert [f.executed_at for f in fills] == sorted(f.executed_at for f in fills)
    assert fills[0].executed_at == START and fills[0].side is Side.SELL and fills[0].symbol == "MSFT"
    partial_order = next(a["order_id"] for a in seeded if a["type"] == "partial_fill")
    parts = [f for f in fills if f.order_id == partial_order]
    assert [(f.quantity, f.price) for f in parts] == [(7, Money.of("99.5", "USD"))] * 5
    assert Counter(a["type"] for a in seeded if a["order_id"] == partial_order) == {"partial_fill": 4, "fill": 1}
    assert all(f.fee == Money.of(0, "USD") and f.account_id == "partial" for f in fills)
    with pytest.raises(AccountNotFound):
        broker.fills_between("partial", "u-someone-else", START, END)


def test_orders_placed_through_the_standin_are_imported(alpaca_standin, session_factory):
    _, broker = alpaca(alpaca_standin, "trader", read_only=False, cash=50_000)
    placed = [broker.submit_market_order(MarketOrder(
        account_id="trader", user_id="u-trader", client_order_id=f"c-{i}", symbol="AAPL", side=Side.BUY,
        quantity=i + 1, as_of=datetime.now(UTC))) for i in range(3)]
    now = datetime.now(UTC)
    result = TradeImporter(session_factory, broker, Outbox(models.SCHEMA)).import_trades(
        "trader", "u-trader", now - timedelta(days=30), now + timedelta(seconds=1))
    assert result.trades_imported == 3
    fills = alpaca_fills(broker._client(broker._slot("trader", "u-trader"))[0], "trader", now=now)  # default window
    assert [f.order_id for f in fills] == [p.order.order_id for p in placed]
    assert [f.quantity for f in fills] == [1, 2, 3]
    assert all(f.trade_id.split("::")[1] and f.price == Money.of("100", "USD") for f in fills)


def test_standin_activities_endpoint_follows_alpaca(alpaca_standin):
    key, _ = alpaca(alpaca_standin, "raw")
    seeded = alpaca_standin.seed_fills(key, 30, START, END)
    headers = {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": "secret-raw"}

    def get(path, **params):
        r = requests.get(alpaca_standin.base_url + path, params=params, headers=headers, timeout=10)
        return r.status_code, r.json()

    _, newest_first = get(FILL_PATH)
    assert [a["id"] for a in newest_first] == [a["id"] for a in reversed(seeded)]  # default direction desc
    _, asc = get("/v2/account/activities", activity_types="FILL", direction="asc", page_size=10)
    _, asc2 = get("/v2/account/activities", activity_types="FILL", direction="asc", page_size=10,
                  page_token=asc[-1]["id"])
    assert [a["id"] for a in asc + asc2] == [a["id"] for a in seeded[:20]]
    _, windowed = get(FILL_PATH, after=seeded[9]["transaction_time"], until=seeded[12]["transaction_time"])
    assert [a["id"] for a in windowed] == [seeded[11]["id"], seeded[10]["id"]]
    assert get("/v2/account/activities/DIV")[1] == []
    assert get(FILL_PATH, page_size=101)[0] == 422
    assert set(seeded[0]) >= {"activity_type", "id", "transaction_time", "type", "price", "qty", "side", "symbol",
                              "leaves_qty", "order_id", "cum_qty", "order_status"}


def test_window_and_normalisation_errors():
    base = {"id": "20261101000000000::x", "activity_type": "FILL", "transaction_time": "2026-11-01T00:00:00Z",
            "type": "fill", "price": "10", "qty": "0.5", "side": "buy", "symbol": "AAPL", "leaves_qty": "0",
            "order_id": "o", "cum_qty": "0.5", "order_status": "filled"}
    with pytest.raises(UnsupportedFill, match="fractional"):
        fill_from_activity(base, "a")
    assert fill_from_activity({**base, "qty": "3", "side": "sell_short"}, "a").side is Side.SELL
    assert fill_from_activity({**base, "qty": "3.000"}, "a").quantity == 3
    start, end = default_window(datetime(2026, 12, 1, 20, 5, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC))
    with pytest.raises(InvalidArgument):
        import_id_of("u", "alpaca", "a", datetime(2026, 1, 1), END)
    assert Decimal(fill_from_activity({**base, "qty": "1"}, "a").price.amount) == Decimal("10")
