"""Equity-curve metrics with transaction costs, policy evaluation and buy-and-hold.

Accounting (identical to :class:`~bsopt_trainer.domain.env.TradingEnv`'s reward, via the
shared :func:`~bsopt_trainer.domain.env.step_log_return`): for decision bars
``t = first .. last`` with positions ``p_t`` and ``p_{first-1} = 0``::

    r_t      = p_t * log(close_{t+1} / close_t) - cost * |p_t - p_{t-1}|   (log return)
    equity_k = exp(r_first + ... + r_k)         (equity_{first-1} = 1)

so a curve over ``n`` decisions has ``n`` daily strategy returns ``expm1(r_t)`` and ends
at bar ``last + 1``'s close. The fee is a continuously compounded rate: one entry costs a
factor ``exp(-cost) ≈ 1 - cost``; there is no exit fee at the end.

Every strategy compared by the job (agent, MLP baseline, buy-and-hold) goes through
:func:`metrics_from_positions` on the same bars and the same decision range.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .env import (
    DecisionRange,
    EnvConfig,
    TradingEnv,
    check_bars_frame,
    check_decision_range,
    close_log_returns,
    step_log_return,
)

TRADING_DAYS_PER_YEAR = 252


@dataclass(frozen=True)
class Metrics:
    """Performance of one position series over a decision range."""

    total_return: float
    """Compounded return over the range as a fraction (0.10 = +10 %), net of costs."""
    sharpe: float
    """Annualised Sharpe ratio of the daily strategy returns: ``sqrt(252) * mean / std``
    (sample std, zero risk-free rate); 0.0 when the std is 0 or there is one return."""
    max_drawdown: float
    """Largest peak-to-trough fall of the equity curve as a positive fraction (0.2 = -20 %)."""
    trades: int
    """Number of position changes, counting the initial entry from flat."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Policy(Protocol):
    def act(self, obs: np.ndarray) -> np.ndarray:
        """``(B, W, F)`` float32 -> ``(B,)`` int64 actions."""
        ...


def strategy_log_returns(
    bars: pd.DataFrame, decision_range: DecisionRange | tuple[int, int], positions: Any, cost_bps: float
) -> np.ndarray:
    """Per-decision log returns ``r_t`` (see the module docstring), shape ``(n,)`` float64.

    ``positions`` has one entry per decision bar (0 = flat, 1 = long; any value in
    ``[0, 1]`` is accepted)."""
    dr = DecisionRange.coerce(decision_range)
    check_bars_frame(bars)
    if dr.first < 1 or dr.last > len(bars) - 2:
        raise ValueError(f"decision range [{dr.first}, {dr.last}] does not fit {len(bars)} bars "
                         "(needs a previous bar and a next bar)")
    pos = np.asarray(positions, dtype=np.float64).reshape(-1)
    if pos.shape[0] != len(dr):
        raise ValueError(f"got {pos.shape[0]} positions for {len(dr)} decision bars")
    if not np.isfinite(pos).all() or (pos < 0).any() or (pos > 1).any():
        raise ValueError("positions must be finite and within [0, 1]")
    if not math.isfinite(cost_bps) or cost_bps < 0:
        raise ValueError(f"cost_bps must be finite and >= 0, got {cost_bps}")
    next_log_ret = close_log_returns(bars)[dr.first + 1 : dr.last + 2]  # log(close_{t+1}/close_t)
    previous = np.concatenate([[0.0], pos[:-1]])
    return step_log_return(pos, previous, next_log_ret, cost_bps / 1e4)


def metrics_from_log_returns(log_returns: np.ndarray, trades: int) -> Metrics:
    """:class:`Metrics` of a strategy log-return series ``(n,)``."""
    r = np.asarray(log_returns, dtype=np.float64)
    equity = np.exp(np.concatenate([[0.0], np.cumsum(r)]))  # (n + 1,), starts at 1
    daily = np.expm1(r)
    std = float(np.std(daily, ddof=1)) if daily.size > 1 else 0.0
    sharpe = 0.0 if not std > 1e-12 else float(math.sqrt(TRADING_DAYS_PER_YEAR) * np.mean(daily) / std)
    drawdown = 1.0 - equity / np.maximum.accumulate(equity)
    return Metrics(
        total_return=float(equity[-1] - 1.0),
        sharpe=sharpe,
        max_drawdown=float(drawdown.max()),
        trades=int(trades),
    )


def count_trades(positions: Any) -> int:
    """Position changes including the entry from the initial flat position."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1)
    return int(np.count_nonzero(np.diff(np.concatenate([[0.0], pos]))))


def metrics_from_positions(
    bars: pd.DataFrame, decision_range: DecisionRange | tuple[int, int], positions: Any, cost_bps: float
) -> Metrics:
    """Metrics of holding ``positions[k]`` from decision bar ``first + k``'s close to the
    next bar's close, with costs (see the module docstring)."""
    r = strategy_log_returns(bars, decision_range, positions, cost_bps)
    return metrics_from_log_returns(r, count_trades(positions))


def evaluate_policy(
    policy: Policy,
    bars: pd.DataFrame,
    decision_range: DecisionRange | tuple[int, int],
    window_size: int,
    cost_bps: float,
) -> tuple[Metrics, np.ndarray]:
    """Walk ``decision_range`` once with a :class:`TradingEnv` in ``"eval"`` mode, acting
    greedily with ``policy`` (its position feeds back into the next observation), and
    return ``(metrics, positions (n,) int64)``."""
    dr = DecisionRange.coerce(decision_range)
    check_decision_range(len(bars), window_size, dr)
    env = TradingEnv(bars, EnvConfig(window_size=window_size, transaction_cost_bps=cost_bps), dr, mode="eval")
    obs, _ = env.reset()
    positions = np.zeros(len(dr), dtype=np.int64)
    for k in range(len(dr)):
        action = int(policy.act(obs[None])[0])
        positions[k] = action
        obs, _, _, truncated, _ = env.step(action)
        if truncated and k != len(dr) - 1:
            raise RuntimeError("evaluation env ended before the last decision bar")
    return metrics_from_positions(bars, dr, positions, cost_bps), positions


def buy_and_hold(
    bars: pd.DataFrame, decision_range: DecisionRange | tuple[int, int], cost_bps: float
) -> Metrics:
    """Long from the first decision bar's close to the bar after the last decision (one
    entry fee, no exit fee): ``total_return = exp(-cost) * close_{last+1} / close_first - 1``."""
    dr = DecisionRange.coerce(decision_range)
    return metrics_from_positions(bars, dr, np.ones(len(dr)), cost_bps)
