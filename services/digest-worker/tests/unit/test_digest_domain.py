"""Weekly digests: ISO week boundaries, grouping, counts, cash flow, summaries, ids."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from bsopt_common.errors import InvalidArgument
from bsopt_common.money import CurrencyMismatch, Money
from bsopt_common.vocabulary import BiasLabel, Side
from bsopt_digest.domain import BIAS_LABELS
from bsopt_digest.domain.digest import (
    DIGEST_NAMESPACE,
    LABELS,
    ScoredTradeRecord,
    WeeklyDigest,
    build_weekly_digests,
    digest_id,
    format_money,
    iso_week,
)
from bsopt_digest.domain.weekly import WeeklyReport

REPO = Path(__file__).resolve().parents[4]
_counter = iter(range(1, 10_000))


def rec(
    user: str = "u1",
    at: datetime = datetime(2024, 3, 6, 15, 0),
    side: Side | str = Side.BUY,
    qty: int = 10,
    price: Money | str = "100.00",
    label: BiasLabel | str = BiasLabel.NONE,
    symbol: str = "GOOGL",
    trade_id: str | None = None,
) -> ScoredTradeRecord:
    """A record; ``price`` as a string is an amount in USD."""
    return ScoredTradeRecord(
        trade_id=f"t{next(_counter)}" if trade_id is None else trade_id,
        user_id=user,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=qty,
        price=usd(price) if isinstance(price, str) else price,
        executed_at=at,
        label=label,  # type: ignore[arg-type]
    )


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


# --------------------------------------------------------------------- iso_week


@pytest.mark.parametrize(
    ("day", "monday"),
    [
        (date(2024, 3, 4), date(2024, 3, 4)),  # Monday
        (date(2024, 3, 6), date(2024, 3, 4)),  # Wednesday
        (date(2024, 3, 10), date(2024, 3, 4)),  # Sunday
        (date(2024, 3, 11), date(2024, 3, 11)),  # next Monday
        (date(2021, 1, 3), date(2020, 12, 28)),  # Sunday of ISO week 2020-W53
        (date(2024, 12, 31), date(2024, 12, 30)),  # Tuesday of ISO week 2025-W01
        (date(2024, 2, 29), date(2024, 2, 26)),  # leap day
    ],
)
def test_iso_week(day: date, monday: date) -> None:
    start, end = iso_week(day)
    assert (start, end) == (monday, monday + timedelta(days=6))
    assert start.weekday() == 0 and end.weekday() == 6
    assert start.isocalendar()[:2] == day.isocalendar()[:2] == end.isocalendar()[:2]


def test_iso_week_datetimes() -> None:
    assert iso_week(datetime(2024, 3, 10, 23, 59, 59)) == (date(2024, 3, 4), date(2024, 3, 10))
    assert iso_week(datetime(2024, 3, 11, 0, 0)) == (date(2024, 3, 11), date(2024, 3, 17))
    # aware: Sunday 22:00 in New York (UTC-4) is Monday 02:00 UTC -> next week
    ny = timezone(timedelta(hours=-4))
    assert iso_week(datetime(2024, 3, 10, 22, 0, tzinfo=ny))[0] == date(2024, 3, 11)
    # aware: Monday 01:00 at UTC+2 is Sunday 23:00 UTC -> previous week
    assert iso_week(datetime(2024, 3, 11, 1, 0, tzinfo=timezone(timedelta(hours=2))))[0] == date(2024, 3, 4)
    with pytest.raises(TypeError):
        iso_week("2024-03-04")  # type: ignore[arg-type]


# --------------------------------------------------------------------- grouping


def test_empty_input() -> None:
    assert build_weekly_digests([]) == []
    assert build_weekly_digests(iter(())) == []


def test_sunday_and_monday_fall_in_different_weeks() -> None:
    sunday = rec(at=datetime(2024, 3, 10, 23, 59, 59), label="FOMO")
    monday = rec(at=datetime(2024, 3, 11, 0, 0, 0), label="PANIC", side="SELL")
    digests = build_weekly_digests([monday, sunday])
    assert [(d.period_start, d.period_end, d.trades) for d in digests] == [
        (date(2024, 3, 4), date(2024, 3, 10), 1),
        (date(2024, 3, 11), date(2024, 3, 17), 1),
    ]
    assert digests[0].label_counts == {"FOMO": 1, "PANIC": 0, "DISCIPLINE": 0, "NONE": 0}
    assert digests[1].label_counts == {"FOMO": 0, "PANIC": 1, "DISCIPLINE": 0, "NONE": 0}


def test_aware_executed_at_grouped_by_utc_date() -> None:
    ny = timezone(timedelta(hours=-5))
    late_sunday_ny = rec(at=datetime(2024, 1, 7, 21, 0, tzinfo=ny))  # Monday 02:00 UTC
    monday_utc = rec(at=datetime(2024, 1, 8, 9, 0, tzinfo=UTC))
    digests = build_weekly_digests([late_sunday_ny, monday_utc])
    assert len(digests) == 1 and digests[0].period_start == date(2024, 1, 8) and digests[0].trades == 2


def test_multiple_users_and_weeks_sorted() -> None:
    records = [
        rec(user="bob", at=datetime(2024, 3, 12, 10)),
        rec(user="alice", at=datetime(2024, 3, 20, 10)),
        rec(user="alice", at=datetime(2024, 3, 5, 10)),
        rec(user="bob", at=datetime(2024, 3, 4, 10)),
        rec(user="alice", at=datetime(2024, 3, 7, 10)),
    ]
    digests = build_weekly_digests(records)
    assert [(d.user_id, d.period_start.isoformat(), d.trades) for d in digests] == [
        ("alice", "2024-03-04", 2),
        ("alice", "2024-03-18", 1),
        ("bob", "2024-03-04", 1),
        ("bob", "2024-03-11", 1),
    ]
    assert sum(d.trades for d in digests) == len(records)
    assert all(isinstance(d, WeeklyDigest) for d in digests)


def test_label_counts_always_have_all_four_keys_in_order() -> None:
    (d,) = build_weekly_digests([rec(label="DISCIPLINE")])
    assert list(d.label_counts) == ["FOMO", "PANIC", "DISCIPLINE", "NONE"] == list(LABELS)
    assert d.label_counts == {"FOMO": 0, "PANIC": 0, "DISCIPLINE": 1, "NONE": 0}
    assert all(isinstance(v, int) for v in d.label_counts.values())


def test_net_cash_flow_is_sells_minus_buys() -> None:
    records = [
        rec(side="BUY", qty=10, price="101.25"),  # -1012.50
        rec(side="SELL", qty=4, price="110.10"),  # +440.40
        rec(side="SELL", qty=3, price="0.1"),  # +0.30
        rec(side="BUY", qty=1, price="0.2"),  # -0.20
    ]
    (d,) = build_weekly_digests(records)
    assert d.net_cash_flow == usd("-572.00")
    assert "-$572.00" in d.summary and "bought more than you sold" in d.summary
    (s,) = build_weekly_digests([rec(side="SELL", qty=2, price="1500")])
    assert s.net_cash_flow == usd("3000")
    assert "+$3,000.00" in s.summary and "sold more than you bought" in s.summary
    (z,) = build_weekly_digests([rec(side="SELL", qty=2, price="50"), rec(side="BUY", qty=1, price="100")])
    assert z.net_cash_flow == Money.zero("USD") and "balanced" in z.summary
    assert "Net cash flow $0.00 (buys and sells balanced out)." in z.summary


def test_net_cash_flow_is_an_exact_decimal_sum() -> None:
    # 0.1 + 0.2 != 0.3 in floats; the digest sums Decimals exactly
    records = [rec(side="SELL", qty=1, price="0.1"), rec(side="SELL", qty=1, price="0.2")]
    (d,) = build_weekly_digests(records)
    assert d.net_cash_flow == usd("0.3")
    assert d.net_cash_flow.amount == Decimal("0.3") and isinstance(d.net_cash_flow.amount, Decimal)
    # many small amounts, nano precision, cancel exactly
    tiny = [rec(side="SELL", qty=1, price="0.000000001") for _ in range(10)]
    (t,) = build_weekly_digests([*tiny, rec(side="BUY", qty=10, price="0.000000001")])
    assert t.net_cash_flow == Money.zero("USD") and "balanced" in t.summary
    # a week in another currency keeps that currency
    (e,) = build_weekly_digests([rec(side="SELL", qty=3, price=Money.of("0.1", "EUR"))])
    assert e.net_cash_flow == Money.of("0.3", "EUR")


def test_mixed_currencies_in_one_week_are_refused() -> None:
    records = [
        rec(user="u9", trade_id="T-usd", side="SELL", price="10"),
        rec(user="u9", trade_id="T-eur", side="BUY", price=Money.of("10", "EUR")),
    ]
    with pytest.raises(CurrencyMismatch) as info:
        build_weekly_digests(records)
    message = str(info.value)
    for part in ("u9", "2024-03-04", "EUR and USD", "T-usd", "T-eur", "one currency"):
        assert part in message
    assert isinstance(info.value, InvalidArgument) and isinstance(info.value, ValueError)
    # different users, or different weeks of one user, may use different currencies
    other_week = rec(user="u9", at=datetime(2024, 3, 12, 10), price=Money.of("10", "EUR"))
    other_user = rec(user="u8", price=Money.of("10", "EUR"))
    digests = build_weekly_digests([records[0], other_week, other_user])
    assert [d.net_cash_flow.currency for d in digests] == ["EUR", "USD", "EUR"]
    # a re-scored trade replaces its earlier record, currency included
    fixed = dataclasses.replace(records[1], price=usd("10"))
    (d,) = build_weekly_digests([*records, fixed])
    assert d.net_cash_flow == Money.zero("USD")


def test_duplicate_trade_ids_counted_once_last_wins() -> None:
    first = rec(trade_id="T-1", label="NONE")
    rescored = dataclasses.replace(first, label="FOMO")
    other = rec(trade_id="T-2", label="NONE")
    (d,) = build_weekly_digests([first, other, rescored, rescored])
    assert d.trades == 2
    assert d.label_counts == {"FOMO": 1, "PANIC": 0, "DISCIPLINE": 0, "NONE": 1}


def test_rejects_non_records() -> None:
    with pytest.raises(TypeError):
        build_weekly_digests([{"trade_id": "x"}])  # type: ignore[list-item]


# --------------------------------------------------------------------- summary


def test_summary_names_most_frequent_bias_symbols_and_suggestion() -> None:
    records = [
        rec(label="FOMO", symbol="NVDA"),
        rec(label="FOMO", symbol="NVDA"),
        rec(label="FOMO", symbol="TSLA"),
        rec(label="PANIC", side="SELL", symbol="AAPL"),
        rec(label="NONE"),
    ]
    (d,) = build_weekly_digests(records)
    head = "5 trades in the week 2024-03-04 to 2024-03-10: 3 FOMO, 1 PANIC, 0 DISCIPLINE, 1 NONE."
    assert d.summary.startswith(head)
    assert "Most frequent bias: FOMO (3 of 5 trades, on NVDA, TSLA)." in d.summary
    assert "Suggestion: before buying something that has already run up" in d.summary


def test_summary_panic() -> None:
    (d,) = build_weekly_digests([rec(label="PANIC", side="SELL", symbol="IBM"), rec(label="DISCIPLINE")])
    assert "Most frequent bias: PANIC (1 of 2 trades, on IBM)." in d.summary
    assert "stop-loss" in d.summary


def test_summary_tie_names_both_biases() -> None:
    records = [rec(label="FOMO", symbol="NVDA"), rec(label="PANIC", side="SELL", symbol="IBM")]
    (d,) = build_weekly_digests(records)
    assert "FOMO and PANIC, tied at 1 of 2 trades each (FOMO on NVDA; PANIC on IBM)" in d.summary
    assert "run up" in d.summary and "stop-loss" in d.summary


def test_summary_without_bias() -> None:
    (disc,) = build_weekly_digests([rec(label="DISCIPLINE"), rec(label="NONE")])
    assert "No FOMO or PANIC trades this week." in disc.summary
    assert "1 trade followed a plan-like pattern" in disc.summary and "Suggestion:" in disc.summary
    (none,) = build_weekly_digests([rec(label="NONE")])
    assert none.summary.startswith("1 trade in the week")
    assert "No FOMO or PANIC" in none.summary and "Suggestion:" in none.summary


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (usd("1234.5"), "+$1,234.50"),
        (usd("-1234.5"), "-$1,234.50"),
        (usd("0"), "$0.00"),
        (usd("-0"), "$0.00"),
        (usd("0.004"), "$0.00"),  # rounds to zero: no sign
        (usd("0.005"), "$0.00"),  # half-even
        (usd("0.015"), "+$0.02"),  # half-even
        (usd("1234567.891"), "+$1,234,567.89"),
        (Money.of("1234.5", "EUR"), "+1,234.50 EUR"),
        (Money.of("-0.1", "GBP"), "-0.10 GBP"),
        (Money.of("0", "JPY"), "0.00 JPY"),
    ],
)
def test_format_money(money: Money, text: str) -> None:
    assert format_money(money) == text


def test_summary_formats_money_with_its_currency() -> None:
    (d,) = build_weekly_digests([rec(side="SELL", qty=3, price="411.50")])
    assert "Net cash flow +$1,234.50 (you sold more than you bought)." in d.summary
    (e,) = build_weekly_digests([rec(side="BUY", qty=3, price=Money.of("411.50", "EUR"))])
    assert "Net cash flow -1,234.50 EUR (you bought more than you sold)." in e.summary
    assert "$" not in e.summary


def test_summary_is_deterministic_regardless_of_input_order() -> None:
    pairs = [("FOMO", "B"), ("FOMO", "A"), ("PANIC", "C"), ("NONE", "D")]
    records = [rec(label=lbl, symbol=s, at=datetime(2024, 3, 4 + i, 12)) for i, (lbl, s) in enumerate(pairs)]
    assert build_weekly_digests(records) == build_weekly_digests(list(reversed(records)))


# --------------------------------------------------------------------- digest_id


def test_digest_id_deterministic_and_distinct() -> None:
    a = digest_id("u1", date(2024, 3, 4))
    assert a == digest_id("u1", date(2024, 3, 4))
    assert a != digest_id("u2", date(2024, 3, 4))
    assert a != digest_id("u1", date(2024, 3, 11))
    u = uuid.UUID(a)
    assert u.version == 5 and str(u) == a
    assert a == str(uuid.uuid5(DIGEST_NAMESPACE, "u1/2024-03-04"))
    # pinned: changing the namespace or the name format would orphan every published digest
    assert a == "0b1b5525-20ef-5b72-bcab-f6383361a4ce"
    (d,) = build_weekly_digests([rec(user="u1", at=datetime(2024, 3, 10, 23))])
    assert d.digest_id == a


def test_digest_id_errors() -> None:
    with pytest.raises(ValueError, match="Monday"):
        digest_id("u1", date(2024, 3, 5))
    with pytest.raises(ValueError):
        digest_id("", date(2024, 3, 4))
    with pytest.raises(TypeError):
        digest_id("u1", "2024-03-04")  # type: ignore[arg-type]


# --------------------------------------------------------------------- record validation and contract


@pytest.mark.parametrize(
    ("kw", "exc"),
    [
        ({"side": "HOLD"}, InvalidArgument),
        ({"side": "buy"}, InvalidArgument),
        ({"side": 1}, TypeError),
        ({"label": "GREED"}, InvalidArgument),
        ({"label": None}, TypeError),
        ({"qty": 0}, InvalidArgument),
        ({"qty": -5}, InvalidArgument),
        ({"qty": 1.5}, TypeError),
        ({"qty": True}, TypeError),
        ({"price": 100.0}, TypeError),
        ({"price": Decimal("100")}, TypeError),
        ({"price": "-1"}, InvalidArgument),
        ({"price": "9" * 19, "qty": 10}, InvalidArgument),  # notional beyond a Money
        ({"at": date(2024, 3, 4)}, TypeError),
        ({"user": ""}, InvalidArgument),
        ({"trade_id": ""}, InvalidArgument),
    ],
)
def test_record_validation(kw: dict, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        rec(**kw)
    if exc is InvalidArgument:
        with pytest.raises(ValueError):  # what callers that predate InvalidArgument catch
            rec(**kw)


def test_record_side_and_label_are_enums() -> None:
    r = rec(side="SELL", label="PANIC")
    assert r.side is Side.SELL and r.label is BiasLabel.PANIC
    assert rec(side=Side.BUY, label=BiasLabel.FOMO).label is BiasLabel.FOMO
    assert dataclasses.replace(r, label="FOMO").label is BiasLabel.FOMO
    assert r == dataclasses.replace(r, side=Side.SELL, label=BiasLabel.PANIC)
    assert BIAS_LABELS == (BiasLabel.FOMO, BiasLabel.PANIC)
    assert LABELS == tuple(b.value for b in BiasLabel)


def test_record_cash_flow_properties() -> None:
    assert rec(side="BUY", qty=3, price="2.5").signed_cash_flow == usd("-7.5")
    assert rec(side="SELL", qty=3, price="2.5").signed_cash_flow == usd("7.5")
    assert rec(qty=3, price="2.5").notional == usd("7.5")
    assert rec(qty=3, price="0.1").notional.amount == Decimal("0.3")
    assert rec(qty=2, price=Money.of("1.25", "EUR")).signed_cash_flow == Money.of("-2.5", "EUR")
    assert rec(price="0").notional == Money.zero("USD")


def test_weekly_digest_requires_money() -> None:
    (d,) = build_weekly_digests([rec()])
    with pytest.raises(TypeError):
        dataclasses.replace(d, net_cash_flow=-1000.0)


def test_weekly_digest_maps_onto_digest_ready() -> None:
    proto = REPO / "proto" / "bsopt" / "digest_worker" / "v1" / "events.proto"
    if not proto.exists():
        pytest.skip(f"contract file not found at {proto}")
    body = re.search(r"message DigestReady \{(.*?)\n\}", proto.read_text(), re.S)
    assert body is not None
    proto_fields = re.findall(r"^\s*(?:optional )?(?:map<[^>]+>|[\w.]+) (\w+) = \d+;", body.group(1), re.M)
    # the weekly tick's digest (WeeklyReport) carries every field; WeeklyDigest (the
    # per-week grouping of build_weekly_digests) a subset
    ours = [f.name for f in dataclasses.fields(WeeklyReport)]
    # digest_id is a property; updated_at and version belong to the publisher
    assert set(proto_fields) - {"digest_id", "updated_at", "version"} == set(ours)
    assert {f.name for f in dataclasses.fields(WeeklyDigest)} <= set(ours)
    assert isinstance(WeeklyDigest.digest_id, property) and isinstance(WeeklyReport.digest_id, property)


def test_scored_trade_record_fields_exist_on_scored_trade() -> None:
    proto = REPO / "proto" / "bsopt" / "ml_scorer" / "v1" / "ml_scorer.proto"
    if not proto.exists():
        pytest.skip(f"contract file not found at {proto}")
    body = re.search(r"message ScoredTrade \{(.*?)\n\}", proto.read_text(), re.S)
    assert body is not None
    proto_fields = set(re.findall(r"^\s*[\w.]+ (\w+) = \d+;", body.group(1), re.M))
    assert {f.name for f in dataclasses.fields(ScoredTradeRecord)} <= proto_fields
