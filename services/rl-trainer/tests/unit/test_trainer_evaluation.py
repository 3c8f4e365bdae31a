from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bsopt_trainer.domain.env import EnvConfig, TradingEnv
from bsopt_trainer.domain.evaluation import (
    SHARPE_FEWER_THAN_TWO_RETURNS,
    SHARPE_ZERO_VARIANCE,
    Metrics,
    annualised_sharpe,
    buy_and_hold,
    evaluate_policy,
    metrics_from_log_returns,
    metrics_from_positions,
    strategy_log_returns,
)


def test_cost_charged_on_every_position_change(make_bars):
    # decisions at bars 1..5 (window 1); closes move 100 -> 110 -> 99 -> 99 -> 108.9 -> 108.9
    bars = make_bars([100.0, 100.0, 110.0, 99.0, 99.0, 108.9, 108.9])
    positions = [1, 1, 0, 1, 0]
    c = 0.001
    r = strategy_log_returns(bars, (1, 5), positions, cost_bps=10.0)
    expected = [
        math.log(1.1) - c,  # entry
        math.log(0.9),
        -c,  # exit
        math.log(1.1) - c,  # entry
        -c,  # exit
    ]
    np.testing.assert_allclose(r, expected, rtol=0, atol=1e-12)
    m = metrics_from_positions(bars, (1, 5), positions, cost_bps=10.0)
    assert m.trades == 4
    assert m.total_return == pytest.approx(1.1 * 0.9 * 1.1 * math.exp(-4 * c) - 1, abs=1e-12)
    # No cost when the position never changes from flat.
    flat = metrics_from_positions(bars, (1, 5), [0] * 5, cost_bps=10.0)
    assert flat == Metrics(
        total_return=0.0, sharpe=None, max_drawdown=0.0, trades=0,
        sharpe_undefined_reason=SHARPE_ZERO_VARIANCE,
    )


def test_buy_and_hold_is_price_ratio_minus_entry_cost(random_bars):
    first, last = 16, len(random_bars) - 2
    m = buy_and_hold(random_bars, (first, last), cost_bps=10.0)
    ratio = random_bars["close"].iloc[last + 1] / random_bars["close"].iloc[first]
    # The fee is a continuously compounded rate: exp(-c) ~ 1 - c, charged on the equity at
    # entry, so the cost is c * ratio in return terms (exactly c when the price ends flat).
    assert m.total_return == pytest.approx(math.exp(-0.001) * ratio - 1, rel=0, abs=1e-12)
    assert m.total_return == pytest.approx((ratio - 1) - 0.001 * ratio, abs=1e-6 * ratio)
    assert m.trades == 1
    no_cost = buy_and_hold(random_bars, (first, last), cost_bps=0.0)
    assert no_cost.total_return == pytest.approx(ratio - 1, abs=1e-12)


def test_metrics_on_hand_made_equity_curve():
    # equity 1 -> 1.1 -> 0.55 -> 0.66 -> 0.99
    r = np.log([1.1, 0.5, 1.2, 1.5])
    m = metrics_from_log_returns(r, trades=2)
    assert m.total_return == pytest.approx(-0.01)
    assert m.max_drawdown == pytest.approx(0.5)  # 1.1 -> 0.55
    daily = np.array([0.1, -0.5, 0.2, 0.5])
    assert m.sharpe == pytest.approx(math.sqrt(252) * daily.mean() / daily.std(ddof=1))
    assert m.trades == 2

    up = metrics_from_log_returns(np.log([1.01, 1.02, 1.005, 1.03]), trades=1)
    down = metrics_from_log_returns(np.log([0.99, 0.98, 0.995, 0.97]), trades=1)
    assert up.sharpe > 0 and up.max_drawdown == 0.0
    assert down.sharpe < 0 and down.max_drawdown == pytest.approx(1 - 0.99 * 0.98 * 0.995 * 0.97)
    constant = metrics_from_log_returns(np.full(5, math.log(1.01)), trades=1)  # std == 0
    assert constant.sharpe is None and constant.sharpe_undefined_reason == SHARPE_ZERO_VARIANCE
    assert constant.total_return == pytest.approx(1.01**5 - 1)
    single = metrics_from_log_returns(np.array([0.01]), trades=1)
    assert single.sharpe is None and single.sharpe_undefined_reason == SHARPE_FEWER_THAN_TWO_RETURNS
    assert m.sharpe_undefined_reason is None


def test_sharpe_by_hand():
    # mean 0.01; deviations 0, -0.02, 0.02, 0; sample variance 0.0008 / 3;
    # sharpe = sqrt(252) * 0.01 / sqrt(0.0008 / 3) = sqrt(252 * 3 * 1e-4 / 0.0008) = sqrt(94.5)
    assert annualised_sharpe([0.01, -0.01, 0.03, 0.01]) == (pytest.approx(math.sqrt(94.5), rel=1e-12), None)
    # two returns: mean 0.01, sample std sqrt(2 * 0.01**2 / 1); sharpe = sqrt(252 / 2)
    assert annualised_sharpe([0.02, 0.0]) == (pytest.approx(math.sqrt(126.0), rel=1e-12), None)
    assert annualised_sharpe([-0.02, 0.0])[0] == pytest.approx(-math.sqrt(126.0), rel=1e-12)
    assert annualised_sharpe([]) == (None, SHARPE_FEWER_THAN_TWO_RETURNS)
    assert annualised_sharpe([0.05]) == (None, SHARPE_FEWER_THAN_TWO_RETURNS)
    assert annualised_sharpe([0.0] * 10) == (None, SHARPE_ZERO_VARIANCE)
    with pytest.raises(ValueError, match="finite"):
        annualised_sharpe([0.01, float("nan")])


def test_metrics_are_json_safe():
    for m in (
        metrics_from_log_returns(np.log([1.1, 0.5, 1.2]), trades=2),
        metrics_from_log_returns(np.zeros(10), trades=0),  # always flat
        metrics_from_log_returns(np.zeros(0), trades=0),  # no decisions at all
    ):
        d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
        assert set(d) == {"total_return", "sharpe", "max_drawdown", "trades", "sharpe_undefined_reason"}
        assert (d["sharpe"] is None) == (d["sharpe_undefined_reason"] is not None)
    with pytest.raises(ValueError, match="finite"):
        Metrics(total_return=0.0, sharpe=float("nan"), max_drawdown=0.0, trades=0)
    with pytest.raises(ValueError, match="reason"):
        Metrics(total_return=0.0, sharpe=None, max_drawdown=0.0, trades=0)
    with pytest.raises(ValueError, match="finite"):
        Metrics(total_return=float("inf"), sharpe=1.0, max_drawdown=0.0, trades=1)
    with pytest.raises(ValueError, match="finite"):
        metrics_from_log_returns(np.array([0.01, float("-inf")]), trades=1)


def test_metrics_use_the_env_accounting(random_bars):
    rng = np.random.default_rng(3)
    positions = rng.integers(0, 2, size=100)
    env = TradingEnv(random_bars, EnvConfig(window_size=16, transaction_cost_bps=7.0), (50, 149), mode="eval")
    env.reset()
    total_reward = sum(env.step(int(p))[1] for p in positions)
    m = metrics_from_positions(random_bars, (50, 149), positions, cost_bps=7.0)
    assert math.log1p(m.total_return) == pytest.approx(total_reward, abs=1e-9)


class _ConstantPolicy:
    def __init__(self, action):
        self.action = action

    def act(self, obs):
        assert obs.shape[1:] == (16, 5)
        return np.full(obs.shape[0], self.action, dtype=np.int64)


def test_evaluate_policy_and_buy_and_hold_share_decision_bars(random_bars):
    dr = (16, len(random_bars) - 2)
    m, positions = evaluate_policy(_ConstantPolicy(1), random_bars, dr, 16, 10.0)
    assert positions.dtype == np.int64 and len(positions) == len(random_bars) - 17
    assert m == buy_and_hold(random_bars, dr, 10.0)
    flat, _ = evaluate_policy(_ConstantPolicy(0), random_bars, dr, 16, 10.0)
    assert flat.total_return == 0.0 and flat.trades == 0
    assert flat.sharpe is None and flat.sharpe_undefined_reason == SHARPE_ZERO_VARIANCE


def test_bad_inputs_raise(random_bars):
    with pytest.raises(ValueError, match="positions for"):
        metrics_from_positions(random_bars, (16, 20), [1, 1], 10.0)
    with pytest.raises(ValueError, match="within"):
        metrics_from_positions(random_bars, (16, 17), [1, 2], 10.0)
    with pytest.raises(ValueError, match="fit"):
        metrics_from_positions(random_bars, (16, len(random_bars) - 1), np.ones(len(random_bars) - 16), 10.0)
    with pytest.raises(ValueError, match="cost_bps"):
        buy_and_hold(random_bars, (16, 20), -1.0)
    with pytest.raises(ValueError, match="warm-up"):
        evaluate_policy(_ConstantPolicy(1), random_bars, (10, 20), 16, 10.0)
