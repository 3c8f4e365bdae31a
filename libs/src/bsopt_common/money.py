"""Money: an exact decimal amount that always says its currency.

Amounts are ``decimal.Decimal`` in code, ``NUMERIC(28, 9)`` in Postgres
(:func:`bsopt_common.db.amount_type`) and ``bsopt.type.v1.Money`` (units + nanos, as
``google.type.Money``) on the wire; precision is one billionth of a unit everywhere
(an amount with more digits is rounded half-even to nanos when built). Arithmetic
between two currencies raises :class:`CurrencyMismatch`; a float is never an amount.

Pure Python: ``domain/`` packages import this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from bsopt_common.errors import InvalidArgument

NANO = Decimal("1e-9")
CENT = Decimal("0.01")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
#: Largest absolute amount: what NUMERIC(28, 9) and int64 units (< 9.22e18) both hold.
MAX_AMOUNT = Decimal("9" * 18)


class CurrencyMismatch(InvalidArgument):
    """Two amounts of different currencies were combined."""


def to_decimal(value: Decimal | int | str, what: str = "amount") -> Decimal:
    """``value`` as a finite Decimal rounded to nanos. InvalidArgument for a float (use
    its ``str``), NaN, infinity, or a magnitude beyond :data:`MAX_AMOUNT`."""
    if isinstance(value, float) or isinstance(value, bool):
        raise InvalidArgument(f"{what} must be a decimal, not {type(value).__name__}")
    try:
        d = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidArgument(f"{what} is not a decimal number: {value!r}") from None
    if not d.is_finite():
        raise InvalidArgument(f"{what} must be finite, got {value!r}")
    if abs(d) > MAX_AMOUNT:
        raise InvalidArgument(f"{what} {value!r} is out of range (at most {MAX_AMOUNT})")
    return d.quantize(NANO, rounding=ROUND_HALF_EVEN)


def price_decimal(value: float) -> Decimal:
    """A market-data price (bars arrive as float64) as the shortest decimal that
    round-trips it (``813.1099853515625`` stays that, ``0.1`` becomes ``Decimal("0.1")``,
    never ``0.1000000000000000055...``). The one place a float becomes an amount."""
    return Decimal(repr(float(value)))


def decimal_str(d: Decimal) -> str:
    """Plain decimal notation without trailing zeros: ``Decimal('100.100000000')`` ->
    ``'100.1'``, never an exponent (the JSON form of an amount)."""
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "0") else text


@dataclass(frozen=True, slots=True)
class Money:
    """``amount`` of ``currency`` (ISO 4217 code). Raises InvalidArgument for a bad
    currency code or amount (see :func:`to_decimal`)."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.currency, str) or not _CURRENCY.match(self.currency):
            raise InvalidArgument(f"currency must be an ISO 4217 code like 'USD', got {self.currency!r}")
        object.__setattr__(self, "amount", to_decimal(self.amount))

    @classmethod
    def of(cls, amount: Decimal | int | str, currency: str) -> Money:
        return cls(amount, currency)  # type: ignore[arg-type]

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __mul__(self, factor: Decimal | int) -> Money:
        if isinstance(factor, float | bool) or not isinstance(factor, Decimal | int):
            raise TypeError(f"multiply Money by an int or Decimal, not {type(factor).__name__}")
        return Money(self.amount * factor, self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.amount >= other.amount

    def is_positive(self) -> bool:
        return self.amount > 0

    def rounded(self, quantum: Decimal = CENT) -> Money:
        """Rounded half-even to ``quantum`` (cents by default)."""
        return Money(self.amount.quantize(quantum, rounding=ROUND_HALF_EVEN), self.currency)

    def __str__(self) -> str:
        return f"{decimal_str(self.amount)} {self.currency}"
