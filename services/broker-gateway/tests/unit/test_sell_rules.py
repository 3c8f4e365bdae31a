"""Sell rules: thresholds at their boundaries, validation, deterministic client_order_id."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bsopt_broker.domain.records import Position
from bsopt_broker.domain.sell_rules import SellRule, SellRules, check_pcts, evaluate, sell_client_order_id
from bsopt_common.errors import InvalidArgument
from bsopt_common.money import Money

RULES = SellRules(stop_loss_pct=Decimal(5), take_profit_pct=Decimal(10))
POS = Position("AAPL", 10, Money.of(100, "USD"))


@pytest.mark.parametrize("price, rule", [
    ("95", SellRule.STOP_LOSS), ("94.99", SellRule.STOP_LOSS), ("95.01", None), ("109.99", None),
    ("110", SellRule.TAKE_PROFIT), ("250", SellRule.TAKE_PROFIT), ("100", None),
])
def test_thresholds_are_percent_from_the_average_entry_price(price, rule):
    decision = evaluate(RULES, POS, Money.of(price, "USD"))
    assert (decision.rule if decision else None) == rule
    if decision:
        assert decision.position == POS and decision.threshold_pct == (5 if rule is SellRule.STOP_LOSS else 10)


def test_no_rule_no_position_no_decision():
    assert evaluate(SellRules(), POS, Money.of(1, "USD")) is None
    assert evaluate(RULES, Position("AAPL", 0, Money.of(100, "USD")), Money.of(1, "USD")) is None
    assert evaluate(SellRules(take_profit_pct=Decimal(1)), POS, Money.of(1, "USD")) is None


@pytest.mark.parametrize("sl, tp, field", [
    (Decimal(0), None, "stop_loss_pct"), (Decimal(100), None, "stop_loss_pct"), (Decimal("NaN"), None, "stop_loss_pct"),
    (None, Decimal(0), "take_profit_pct"), (None, Decimal("-1"), "take_profit_pct"),
    (None, Decimal("Infinity"), "take_profit_pct"),
])
def test_out_of_range_thresholds_are_invalid_argument(sl, tp, field):
    with pytest.raises(InvalidArgument, match=field):
        check_pcts(sl, tp)
    check_pcts(Decimal("0.5"), Decimal(300))


def test_client_order_id_is_deterministic_per_account_rule_and_snapshot():
    cid = sell_client_order_id("acct", SellRule.STOP_LOSS, POS)
    assert cid == sell_client_order_id("acct", SellRule.STOP_LOSS, Position("AAPL", 10, Money.of("100.000", "USD")))
    assert cid.startswith("sell-") and len(cid) <= 64
    others = {sell_client_order_id("acct2", SellRule.STOP_LOSS, POS),
              sell_client_order_id("acct", SellRule.TAKE_PROFIT, POS),
              sell_client_order_id("acct", SellRule.STOP_LOSS, Position("AAPL", 9, Money.of(100, "USD"))),
              sell_client_order_id("acct", SellRule.STOP_LOSS, Position("AAPL", 10, Money.of("100.01", "USD"))),
              sell_client_order_id("acct", SellRule.CLOSE_ALL, POS, "req-1"),
              sell_client_order_id("acct", SellRule.CLOSE_ALL, POS, "req-2")}
    assert cid not in others and len(others) == 6
