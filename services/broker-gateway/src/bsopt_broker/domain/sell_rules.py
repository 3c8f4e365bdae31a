"""Sell rules: pure logic (no gRPC, Kafka, SQL or threads).

A rule compares a position's price with its average entry price, in percent:
stop-loss sells when ``price <= average * (1 - stop_loss_pct / 100)``, take-profit when
``price >= average * (1 + take_profit_pct / 100)``; close-all sells every position.

A sell's ``client_order_id`` is derived from (account, rule, position snapshot: symbol,
quantity, average entry price) and, for close-all, the request id: the same decision
made twice (a second evaluation pass, a restart, a retry) is the same order, which the
venue places once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from bsopt_broker.domain.records import Position
from bsopt_common.errors import InvalidArgument
from bsopt_common.money import Money

DEFAULT_CHECK_INTERVAL_S = 5.0


class SellRule(StrEnum):
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    CLOSE_ALL = "close_all"


@dataclass(frozen=True, slots=True)
class SellRules:
    """The rules of one account: percent from the average entry price (None: no such
    rule) and the seconds between two evaluations."""

    stop_loss_pct: Decimal | None = None
    take_profit_pct: Decimal | None = None
    check_interval_s: float = DEFAULT_CHECK_INTERVAL_S

    @property
    def empty(self) -> bool:
        return self.stop_loss_pct is None and self.take_profit_pct is None


def check_pcts(stop_loss_pct: Decimal | None, take_profit_pct: Decimal | None) -> None:
    """Raises InvalidArgument naming the field: ``stop_loss_pct`` must be in (0, 100)
    percent, ``take_profit_pct`` > 0 percent (None: no such rule; finite numbers only)."""
    if stop_loss_pct is not None and (not stop_loss_pct.is_finite() or not 0 < stop_loss_pct < 100):
        raise InvalidArgument(f"stop_loss_pct must be > 0 and < 100 (percent), got {stop_loss_pct}")
    if take_profit_pct is not None and (not take_profit_pct.is_finite() or not take_profit_pct > 0):
        raise InvalidArgument(f"take_profit_pct must be > 0 (percent), got {take_profit_pct}")


@dataclass(frozen=True, slots=True)
class SellDecision:
    """Sell ``position`` (all of it) by ``rule``, evaluated at ``price``."""

    rule: SellRule
    position: Position
    price: Money
    threshold_pct: Decimal
    """The rule's threshold in percent (0 for close-all)."""


def evaluate(rules: SellRules, position: Position, price: Money) -> SellDecision | None:
    """The decision for one position at ``price`` (per share), or None (inside the band,
    or nothing held). Stop-loss is checked first."""
    if position.quantity <= 0:
        return None
    average = position.average_price.amount
    if rules.stop_loss_pct is not None and price.amount <= average * (1 - rules.stop_loss_pct / 100):
        return SellDecision(SellRule.STOP_LOSS, position, price, rules.stop_loss_pct)
    if rules.take_profit_pct is not None and price.amount >= average * (1 + rules.take_profit_pct / 100):
        return SellDecision(SellRule.TAKE_PROFIT, position, price, rules.take_profit_pct)
    return None


def sell_client_order_id(account_id: str, rule: SellRule, position: Position, request_id: str = "") -> str:
    """The sell's deterministic ``client_order_id`` (``sell-`` + 40 hex digits, 45 chars)."""
    snapshot = "|".join((account_id, str(rule), request_id, position.symbol, str(position.quantity),
                         str(position.average_price.amount.normalize())))
    return "sell-" + hashlib.sha256(snapshot.encode()).hexdigest()[:40]
