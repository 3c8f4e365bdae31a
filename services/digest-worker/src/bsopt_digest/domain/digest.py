"""Weekly digests of a user's scored trades.

Pure logic: no Kafka, no protobuf. :class:`WeeklyDigest` maps 1:1 onto the fields of
``bsopt.digest_worker.v1.DigestReady`` that describe the week (``digest_id`` is the
:attr:`WeeklyDigest.digest_id` property, dates become ISO strings with
``date.isoformat()``, :attr:`WeeklyDigest.net_cash_flow` is a
:class:`~bsopt_common.money.Money` and becomes the ``bsopt.type.v1.Money`` field
``DigestReady.net_cash_flow``); ``updated_at`` and ``version`` belong to the publishing
layer. :class:`ScoredTradeRecord` is a projection of ``bsopt.ml_scorer.v1.ScoredTrade``:
``price`` is its ``bsopt.type.v1.Money`` field, ``side`` and ``label`` its enums as
:class:`~bsopt_common.vocabulary.Side` and :class:`~bsopt_common.vocabulary.BiasLabel`.

Money: every amount is an exact :class:`~bsopt_common.money.Money` (Decimal, rounded to
nanos, with its ISO 4217 currency); no float is ever an amount. A week's net cash flow is
the exact Decimal sum of its trades' signed notionals, so all trades of one user's week
must share a currency (a mix raises :class:`~bsopt_common.money.CurrencyMismatch`).

Weeks are ISO 8601 weeks, Monday .. Sunday. A trade belongs to the week of its
``executed_at`` date; a timezone-aware ``executed_at`` is converted to UTC first, a naive
one is taken as UTC (the convention of the rest of bsopt).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from bsopt_common.errors import InvalidArgument
from bsopt_common.money import CurrencyMismatch, Money
from bsopt_common.vocabulary import BiasLabel, Side

#: Every bias label, in display order (:class:`bsopt_common.vocabulary.BiasLabel`).
LABELS: tuple[str, ...] = tuple(label.value for label in BiasLabel)
#: The labels that count as biases when naming "the week's most frequent bias".
BIAS_LABELS: tuple[BiasLabel, ...] = (BiasLabel.FOMO, BiasLabel.PANIC)

#: uuid5 namespace of weekly digest ids. Changing it changes every digest id: never do.
DIGEST_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:bsopt:digest-worker:weekly-digest:v1")

#: Currency symbols the summary text writes before an amount ("+$1,234.50"); any other
#: currency is written after it by its code ("+1,234.50 EUR").
CURRENCY_SYMBOLS: dict[str, str] = {"USD": "$"}

_SUGGESTIONS = {
    BiasLabel.FOMO: (
        "before buying something that has already run up, write down your entry, stop and target, "
        "and wait one full session (or for a pullback toward the middle Bollinger band) before you enter"
    ),
    BiasLabel.PANIC: (
        "set your stop-loss when you enter, and after a sharp drop wait until the next session before "
        "selling unless that stop was hit; first ask whether the reason you bought still holds"
    ),
}


def _enum(enum: type[Side] | type[BiasLabel], value: object, field: str) -> Side | BiasLabel:
    if isinstance(value, enum):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a {enum.__name__} or its string value, got {type(value).__name__}")
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise InvalidArgument(f"{field} must be one of {allowed}, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class ScoredTradeRecord:
    """One scored trade, as the digest worker consumes it (a projection of
    ``bsopt.ml_scorer.v1.ScoredTrade``).

    Attributes:
        trade_id: unique id of the trade; a later record with the same id replaces an
            earlier one (re-scoring).
        user_id: owner of the trade.
        symbol: ticker, e.g. ``"GOOGL"``.
        side: :class:`Side` (a plain ``"BUY"`` / ``"SELL"`` string is converted).
        quantity: shares, integer > 0.
        price: execution price per share, :class:`Money` >= 0 in the trade's currency.
        executed_at: execution time (aware, or naive meaning UTC).
        label: :class:`BiasLabel` (a plain ``"FOMO"``, ``"PANIC"``, ``"DISCIPLINE"`` or
            ``"NONE"`` string is converted).

    Raises:
        InvalidArgument: (a ValueError) a field is outside the values listed above, or
            ``quantity * price`` is beyond what a Money holds.
        TypeError: ``quantity`` is not an int, ``price`` not a Money, ``executed_at``
            not a datetime, or ``side`` / ``label`` neither its enum nor a string.
    """

    trade_id: str
    user_id: str
    symbol: str
    side: Side
    quantity: int
    price: Money
    executed_at: datetime
    label: BiasLabel

    def __post_init__(self) -> None:
        if not self.trade_id or not self.user_id:
            raise InvalidArgument("trade_id and user_id must be non-empty")
        object.__setattr__(self, "side", _enum(Side, self.side, "side"))
        object.__setattr__(self, "label", _enum(BiasLabel, self.label, "label"))
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int):
            raise TypeError(f"quantity must be an int, got {type(self.quantity).__name__}")
        if self.quantity <= 0:
            raise InvalidArgument(f"quantity must be > 0, got {self.quantity}")
        if not isinstance(self.price, Money):
            raise TypeError(f"price must be a Money, got {type(self.price).__name__}")
        if self.price.amount < 0:
            raise InvalidArgument(f"price must be >= 0, got {self.price}")
        if not isinstance(self.executed_at, datetime):
            raise TypeError(f"executed_at must be a datetime, got {type(self.executed_at).__name__}")
        try:
            self.notional  # noqa: B018 - out-of-range check
        except InvalidArgument:
            raise InvalidArgument(
                f"trade {self.trade_id}: notional {self.quantity} x {self.price} is out of range"
            ) from None

    @property
    def notional(self) -> Money:
        """``quantity * price``, unsigned, in the price's currency (exact)."""
        return self.price * self.quantity

    @property
    def signed_cash_flow(self) -> Money:
        """Cash into the account, in the price's currency: ``+notional`` for a SELL,
        ``-notional`` for a BUY."""
        return self.notional if self.side is Side.SELL else -self.notional


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
        InvalidArgument: (a ValueError) empty ``user_id`` or ``period_start`` not a Monday.
        TypeError: ``period_start`` not a date.
    """
    if not user_id:
        raise InvalidArgument("user_id must be non-empty")
    start = _utc_date(period_start)
    if start.weekday() != 0:
        raise InvalidArgument(
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
        label_counts: trades per label value (plain ``str`` keys, as the proto map);
            always exactly the keys FOMO, PANIC, DISCIPLINE, NONE (zero when absent), in
            that order.
        net_cash_flow: exact sum of signed notional, sells minus buys, in the currency
            of the week's trades (positive: the user took cash out of the market);
            ``DigestReady.net_cash_flow`` (``bsopt.type.v1.Money``).
            :func:`build_weekly_digests` never yields a digest without trades, so this
            currency is always that of the trades; whoever builds a digest by hand with
            ``trades == 0`` must pick one (``Money.zero`` of the user's account
            currency): the domain has no default.
        summary: plain-language summary with the week's most frequent bias and a
            concrete suggestion.

    Raises:
        TypeError: ``net_cash_flow`` is not a Money.
    """

    user_id: str
    period_start: date
    period_end: date
    trades: int
    label_counts: dict[str, int]
    net_cash_flow: Money
    summary: str

    def __post_init__(self) -> None:
        if not isinstance(self.net_cash_flow, Money):
            raise TypeError(f"net_cash_flow must be a Money, got {type(self.net_cash_flow).__name__}")

    @property
    def digest_id(self) -> str:
        """:func:`digest_id` of this user and week."""
        return digest_id(self.user_id, self.period_start)


def format_money(money: Money) -> str:
    """``money`` for the summary text: signed (``+`` / ``-``, none for zero), rounded
    half-even to two decimals with thousands separators, with its currency: a symbol
    in front for the currencies of :data:`CURRENCY_SYMBOLS` (``"+$1,234.50"``), else
    the code after the number (``"-1,234.50 EUR"``). The sign is that of the rounded
    amount, so a sub-cent amount reads ``"$0.00"``."""
    rounded = money.rounded().amount
    sign = "+" if rounded > 0 else "-" if rounded < 0 else ""
    number = f"{abs(rounded):,.2f}"
    symbol = CURRENCY_SYMBOLS.get(money.currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {money.currency}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _symbols(records: list[ScoredTradeRecord], label: BiasLabel) -> str:
    c = Counter(r.symbol for r in records if r.label is label)
    return ", ".join(s for s, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def _summary(
    monday: date, sunday: date, records: list[ScoredTradeRecord], counts: dict[str, int], net: Money
) -> str:
    n = len(records)
    parts = [
        f"{_plural(n, 'trade')} in the week {monday.isoformat()} to {sunday.isoformat()}: "
        + ", ".join(f"{counts[k]} {k}" for k in LABELS)
        + "."
    ]
    if net.amount > 0:
        flow = "you sold more than you bought"
    elif net.amount < 0:
        flow = "you bought more than you sold"
    else:
        flow = "buys and sells balanced out"
    parts.append(f"Net cash flow {format_money(net)} ({flow}).")
    top = max(counts[b.value] for b in BIAS_LABELS)
    if top == 0:
        parts.append("No FOMO or PANIC trades this week.")
        disc = counts[BiasLabel.DISCIPLINE.value]
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
    leaders = [b for b in BIAS_LABELS if counts[b.value] == top]
    if len(leaders) == 1:
        b = leaders[0]
        parts.append(
            f"Most frequent bias: {b.value} ({top} of {_plural(n, 'trade')}, on {_symbols(records, b)})."
        )
        parts.append(f"Suggestion: {_SUGGESTIONS[b]}.")
    else:
        on = "; ".join(f"{b.value} on {_symbols(records, b)}" for b in leaders)
        names = " and ".join(b.value for b in leaders)
        parts.append(f"Most frequent bias: {names}, tied at {top} of {_plural(n, 'trade')} each ({on}).")
        parts.append("Suggestions: " + "; and ".join(_SUGGESTIONS[b] for b in leaders) + ".")
    return " ".join(parts)


def _net_cash_flow(user_id: str, monday: date, records: list[ScoredTradeRecord]) -> Money:
    currencies = sorted({r.price.currency for r in records})
    if len(currencies) != 1:
        first = {c: next(r.trade_id for r in records if r.price.currency == c) for c in currencies}
        raise CurrencyMismatch(
            f"the trades of user {user_id} in the week of {monday.isoformat()} are in "
            f"{' and '.join(currencies)} (e.g. "
            + ", ".join(f"trade {t} in {c}" for c, t in first.items())
            + "); a weekly digest sums one currency only"
        )
    net = Money.zero(currencies[0])
    for r in records:
        net = net + r.signed_cash_flow
    return net


def _digest(user_id: str, monday: date, records: list[ScoredTradeRecord]) -> WeeklyDigest:
    sunday = monday + timedelta(days=6)
    tally = Counter(r.label for r in records)
    counts = {label.value: int(tally.get(label, 0)) for label in BiasLabel}
    net = _net_cash_flow(user_id, monday, records)
    return WeeklyDigest(
        user_id=user_id,
        period_start=monday,
        period_end=sunday,
        trades=len(records),
        label_counts=counts,
        net_cash_flow=net,
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
        digests sorted by ``(user_id, period_start)``; weeks without trades are absent
        (so every digest has at least one trade and its ``net_cash_flow`` is in its
        trades' currency); an empty input gives ``[]``.

    Raises:
        TypeError: an element is not a :class:`ScoredTradeRecord`.
        CurrencyMismatch: (an InvalidArgument) the trades of one user's week (after
            de-duplication) are priced in more than one currency; the message names the
            user, the week, the currencies and one trade of each. No digest is returned.
        InvalidArgument: a week's net cash flow is beyond what a Money holds.
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
