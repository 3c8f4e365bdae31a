import pytest

from bsopt_broker.domain.balance_guard import OrderRejected, Side, check_order


def test_buy_needs_notional_plus_commission():
    cost = check_order(side=Side.BUY, quantity=10, price_usd=100.0, cash_usd=1001.0, position_quantity=0,
                       commission_bps=10.0)
    assert cost.notional_usd == 1000.0
    assert cost.fee_usd == pytest.approx(1.0)
    with pytest.raises(OrderRejected, match="insufficient buying power: order needs 1001.00 USD"):
        check_order(side=Side.BUY, quantity=10, price_usd=100.0, cash_usd=1000.99, position_quantity=0,
                    commission_bps=10.0)


def test_sell_needs_the_shares():
    check_order(side=Side.SELL, quantity=5, price_usd=10.0, cash_usd=0.0, position_quantity=5, commission_bps=0)
    with pytest.raises(OrderRejected, match="selling 6 shares, account holds 5"):
        check_order(side=Side.SELL, quantity=6, price_usd=10.0, cash_usd=1e9, position_quantity=5, commission_bps=0)


@pytest.mark.parametrize("qty, price", [(0, 10.0), (-1, 10.0), (1, 0.0)])
def test_malformed_orders_are_value_errors(qty, price):
    with pytest.raises(ValueError):
        check_order(side=Side.BUY, quantity=qty, price_usd=price, cash_usd=1e9, position_quantity=0,
                    commission_bps=0)
