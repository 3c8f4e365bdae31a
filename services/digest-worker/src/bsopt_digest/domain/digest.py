"""Weekly digests of a user's scored trades.

Pure logic: no Kafka, no protobuf. :class:`WeeklyDigest` maps 1:1 onto the fields of
``bsopt.digest_worker.v1.DigestReady`` that describe the week (``digest_id`` is the
:attr:`WeeklyDigest.digest_id` property, dates become ISO strings with
``date.isoformat()``); ``updated_at`` and ``version`` belong to the publishing layer.

Weeks are ISO 8601 weeks, Monday .. Sunday. A trade belongs to the week of its
``executed_at`` date; a timezone-aware ``executed_at`` is converted to UTC first, a naive
one is taken as UTC (the convention of the rest of bsopt).
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

#: Every bias label, in display order (``BiasLabel`` of ``ml_scorer.proto`` without the prefix).
LABELS: tuple[str, ...] = ("FOMO", "PANIC", "DISCIPLINE", "NONE")
#: The labels that count as biases when naming "the week's most frequent bias".
BIAS_LABELS: tuple[str, ...] = ("FOMO", "PANIC")

#: uuid5 namespace of weekly digest ids. Changing it changes every digest id: never do.
DIGEST_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:bsopt:digest-worker:weekly-digest:v1")

_SUGGESTIONS = {
    "FOMO": (
        "before buying something that has already run up, write down your entry, stop and target, "
        "and wait one full session (or for a pullback toward the middle Bollinger band) before you enter"
    ),
    "PANIC": (
        "set your stop-loss when you enter, and after a sharp drop wait until the next session before "
        "selling unless that stop was hit; first ask whether the reason you bought still holds"
    ),
}


@dataclass(frozen=True, slots=True)
class ScoredTradeRecord:
    """One scored trade, as the digest worker consumes it (a projection of
    ``bsopt.ml_scorer.v1.ScoredTrade``).

    Attributes:
        trade_id: unique id of the trade; a later record with the same id replaces an
            earlier one (re-scoring).
        user_id: owner of the trade.
        symbol: ticker, e.g. ``"GOOGL"``.
        side: ``"BUY"`` or ``"SELL"``.
        quantity: shares, integer > 0.
        price_usd: execution price per share, USD, finite and >= 0.
        executed_at: execution time (aware, or naive meaning UTC).
        label: ``"FOMO"``, ``"PANIC"``, ``"DISCIPLINE"`` or ``"NONE"``.

    Raises:
        ValueError: a field is outside the values listed above.
        TypeError: ``quantity`` is not an int or ``executed_at`` not a datetime.
    """

    trade_id: str
    user_id: str
    symbol: str
    side: Literal["BUY", "SELL"]
    quantity: int
    price_usd: float
    executed_at: datetime
    label: str

    def __post_init__(self) -> None:
        if not self.trade_id or not self.user_id:
            raise ValueError("trade_id and user_id must be non-empty")
        if self.side not in ("BUY", "SELL"):
            raise ValueError(f"side must be 'BUY' or 'SELL', got {self.side!r}")
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {self.label!r}")
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int):
            raise TypeError(f"quantity must be an int, got {type(self.quantity).__name__}")
        if self.quantity <= 0:
            raise ValueError(f"quantity must be > 0, got {self.quantity}")
        if not math.isfinite(self.price_usd) or self.price_usd < 0:
            raise ValueError(f"price_usd must be finite and >= 0, got {self.price_usd!r}")
        if not isinstance(self.executed_at, datetime):
            raise TypeError(f"executed_at must be a datetime, got {type(self.executed_at).__name__}")

    @property
    def notional_usd(self) -> float:
        """``quantity * price_usd``, USD, unsigned."""
        return self.quantity * self.price_usd

    @property
    def signed_cash_flow_usd(self) -> float:
        """Cash into the account, USD: ``+notional`` for a SELL, ``-notional`` for a BUY."""
        return self.notional_usd if self.side == "SELL" else -self.notional_usd


def _utc_date(d: date | datetime) -> date:
    if isinstance(d, datetime):
        if d.tzinfo is not None and d.utcoffset() is not None:
            d = d.astimezone(UTC)
        return d.date()
    if isinstance(d, date):
        return d
    raise TypeError(f"expected a date or datetime, got {type(d).__name__}")


def iso_week(d: date | datetime) -> tuple[date, date]:
    """The ISO 8601 week containing ``d``.

    Args:
        d: a ``date``, or a ``datetime`` (aware: converted to UTC first; naive: as is).

    Returns:
        ``(monday, sunday)``: the first and last calendar day of that week, inclusive.

    Raises:
        TypeError: ``d`` is not a date/datetime.
    """
    day = _utc_date(d)
    monday = day - timedelta(days=day.weekday())
    return monday, monday + timedelta(days=6)


def digest_id(user_id: str, period_start: date) -> str:
    """Deterministic id of a user's weekly digest: ``uuid5(DIGEST_NAMESPACE,
    f"{user_id}/{period_start.isoformat()}")`` as a 36-character lowercase string.

    The same user and week always give the same id (so republished digests replace each
    other downstream); different users or weeks give different ids.

    Args:
        user_id: non-empty user id.
        period_start: the Monday starting the ISO week (a ``datetime`` is reduced to its
            date as :func:`iso_week` does).

    Raises:
        ValueError: empty ``user_id`` or ``period_start`` not a Monday.
        TypeError: ``period_start`` not a date.
    """
    if not user_id:
        raise ValueError("user_id must be non-empty")
    start = _utc_date(period_start)
    if start.weekday() != 0:
        raise ValueError(
            f"period_start must be a Monday (ISO week start), got {start.isoformat()} ({start:%A})"
        )
    return str(uuid.uuid5(DIGEST_NAMESPACE, f"{user_id}/{start.isoformat()}"))


@dataclass(frozen=True, slots=True)
class WeeklyDigest:
    """One user's ISO week of scored trades (fields of ``DigestReady``).

    Attributes:
        user_id: the user.
        period_start: Monday of the ISO week (``DigestReady.period_start`` as ISO date).
        period_end: Sunday of the ISO week, inclusive.
        trades: number of trades in the week (after de-duplication by trade_id).
        label_counts: trades per label; always exactly the keys FOMO, PANIC, DISCIPLINE,
            NONE (zero when absent), in that order.
        net_cash_flow_usd: sum of signed notional, sells minus buys, USD (positive: the
            user took cash out of the market).
        summary: plain-language summary with the week's most frequent bias and a
            concrete suggestion.
    """

    user_id: str
    period_start: date
    period_end: date
    trades: int
    label_counts: dict[str, int]
    net_cash_flow_usd: float
    summary: str

    @property
    def digest_id(self) -> str:
        """:func:`digest_id` of this user and week."""
        return digest_id(self.user_id, self.period_start)


def _money(x: float) -> str:
    sign = "+" if x > 0 else "-" if x < 0 else ""
    return f"{sign}${abs(x):,.2f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _symbols(records: list[ScoredTradeRecord], label: str) -> str:
    c = Counter(r.symbol for r in records if r.label == label)
    return ", ".join(s for s, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def _summary(
    monday: date, sunday: date, records: list[ScoredTradeRecord], counts: dict[str, int], net: float
) -> str:
    n = len(records)
    parts = [
        f"{_plural(n, 'trade')} in the week {monday.isoformat()} to {sunday.isoformat()}: "
        + ", ".join(f"{counts[k]} {k}" for k in LABELS)
        + "."
    ]
    if net > 0:
        flow = "you sold more than you bought"
    elif net < 0:
        flow = "you bought more than you sold"
    else:
        flow = "buys and sells balanced out"
    parts.append(f"Net cash flow {_money(net)} ({flow}).")
    top = max(counts[b] for b in BIAS_LABELS)
    if top == 0:
        parts.append("No FOMO or PANIC trades this week.")
        disc = counts["DISCIPLINE"]
        if disc:
            parts.append(
                f"{_plural(disc, 'trade')} followed a plan-like pattern (buying pullbacks or selling "
                "into strength). Suggestion: keep writing down entry, stop and target before each "
                "trade so the habit holds when the market gets loud."
            )
        else:
            parts.append(
                "Suggestion: before each trade, write one sentence on why you are making it and where "
                "you would exit; next week's review will show whether the plan or the market made the "
                "decision."
            )
        return " ".join(parts)
    leaders = [b for b in BIAS_LABELS if counts[b] == top]
    if len(leaders) == 1:
        b = leaders[0]
        parts.append(f"Most frequent bias: {b} ({top} of {_plural(n, 'trade')}, on {_symbols(records, b)}).")
        parts.append(f"Suggestion: {_SUGGESTIONS[b]}.")
    else:
        on = "; ".join(f"{b} on {_symbols(records, b)}" for b in leaders)
        names = " and ".join(leaders)
        parts.append(f"Most frequent bias: {names}, tied at {top} of {_plural(n, 'trade')} each ({on}).")
        parts.append("Suggestions: " + "; and ".join(_SUGGESTIONS[b] for b in leaders) + ".")
    return " ".join(parts)


def _digest(user_id: str, monday: date, records: list[ScoredTradeRecord]) -> WeeklyDigest:
    sunday = monday + timedelta(days=6)
    tally = Counter(r.label for r in records)
    counts = {k: int(tally.get(k, 0)) for k in LABELS}
    net = math.fsum(r.signed_cash_flow_usd for r in records)
    return WeeklyDigest(
        user_id=user_id,
        period_start=monday,
        period_end=sunday,
        trades=len(records),
        label_counts=counts,
        net_cash_flow_usd=net,
        summary=_summary(monday, sunday, records, counts, net),
    )


def build_weekly_digests(records: Iterable[ScoredTradeRecord]) -> list[WeeklyDigest]:
    """Group scored trades into one digest per (user, ISO week of ``executed_at``).

    Records with the same ``trade_id`` are counted once: the last occurrence in
    ``records`` wins (a re-scored trade replaces its earlier score; at-least-once
    delivery cannot double count).

    Args:
        records: scored trades, any order, any users.

    Returns:
        digests sorted by ``(user_id, period_start)``; weeks without trades are absent;
        an empty input gives ``[]``.

    Raises:
        TypeError: an element is not a :class:`ScoredTradeRecord`.
    """
    latest: dict[str, ScoredTradeRecord] = {}
    for r in records:
        if not isinstance(r, ScoredTradeRecord):
            raise TypeError(f"expected ScoredTradeRecord, got {type(r).__name__}")
        latest.pop(r.trade_id, None)  # keep the order of the last occurrence
        latest[r.trade_id] = r
    groups: dict[tuple[str, date], list[ScoredTradeRecord]] = {}
    for r in latest.values():
        groups.setdefault((r.user_id, iso_week(r.executed_at)[0]), []).append(r)
    ordered = sorted(groups.items())
    return [_digest(user, monday, sorted(recs, key=_record_order)) for (user, monday), recs in ordered]


def _record_order(r: ScoredTradeRecord) -> tuple[datetime, str]:
    at = r.executed_at
    if at.tzinfo is None or at.utcoffset() is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC), r.trade_id
