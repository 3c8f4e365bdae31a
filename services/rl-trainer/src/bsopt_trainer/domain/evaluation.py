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

SHARPE_FEWER_THAN_TWO_RETURNS = "fewer_than_two_returns"
"""Reason for an undefined Sharpe ratio: a sample standard deviation needs two returns."""
SHARPE_ZERO_VARIANCE = "zero_variance"
"""Reason for an undefined Sharpe ratio: the daily returns are constant (standard deviation
below :data:`SHARPE_MIN_STD`), e.g. a policy that stays flat throughout."""
SHARPE_MIN_STD = 1e-12
"""Daily-return standard deviations at or below this count as zero (float noise of a
constant series)."""


def annualised_sharpe(daily_returns: Any) -> tuple[float | None, str | None]:
    """Annualised Sharpe ratio of simple daily returns ``(n,)`` (fractions, 0.01 = +1 %),
    zero risk-free rate: ``sqrt(252) * mean / std`` with the sample standard deviation
    (``ddof = 1``); Sharpe (1994), "The Sharpe Ratio", J. Portfolio Management 21(1). The
    ``sqrt(252)`` annualisation assumes i.i.d. daily returns (Lo 2002, "The Statistics of
    Sharpe Ratios", Financial Analysts Journal 58(4)).

    Returns ``(sharpe, None)``, or ``(None, reason)`` when the ratio is undefined:
    :data:`SHARPE_FEWER_THAN_TWO_RETURNS` (``n < 2``) or :data:`SHARPE_ZERO_VARIANCE`
    (``std <= SHARPE_MIN_STD``). Raises ValueError for non-finite returns.
    """
    daily = np.asarray(daily_returns, dtype=np.float64).reshape(-1)
    if not np.isfinite(daily).all():
        raise ValueError("daily returns must be finite")
    if daily.size < 2:
        return None, SHARPE_FEWER_THAN_TWO_RETURNS
    std = float(np.std(daily, ddof=1))
    if not std > SHARPE_MIN_STD:
        return None, SHARPE_ZERO_VARIANCE
    return float(math.sqrt(TRADING_DAYS_PER_YEAR) * np.mean(daily) / std), None


@dataclass(frozen=True)
class Metrics:
    """Performance of one position series over a decision range. Every field is finite or
    None, so :meth:`to_dict` is valid JSON (``json.dumps(..., allow_nan=False)``)."""

    total_return: float
    """Compounded return over the range as a fraction (0.10 = +10 %), net of costs."""
    sharpe: float | None
    """Annualised Sharpe ratio of the daily strategy returns (:func:`annualised_sharpe`);
    None when it is undefined, with the reason in :attr:`sharpe_undefined_reason`."""
    max_drawdown: float
    """Largest peak-to-trough fall of the equity curve as a positive fraction (0.2 = -20 %)."""
    trades: int
    """Number of position changes, counting the initial entry from flat."""
    sharpe_undefined_reason: str | None = None
    """Why :attr:`sharpe` is None (:data:`SHARPE_FEWER_THAN_TWO_RETURNS` or
    :data:`SHARPE_ZERO_VARIANCE`); None when it is defined."""

    def __post_init__(self) -> None:
        for name in ("total_return", "max_drawdown"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if self.sharpe is None:
            if not self.sharpe_undefined_reason:
                raise ValueError("an undefined sharpe (None) needs a sharpe_undefined_reason")
        else:
            if not math.isfinite(self.sharpe):
                raise ValueError(f"sharpe must be finite or None, got {self.sharpe!r}")
            if self.sharpe_undefined_reason is not None:
                raise ValueError("sharpe_undefined_reason must be None when sharpe is defined")

    def to_dict(self) -> dict[str, Any]:
        """``{"total_return", "sharpe", "max_drawdown", "trades", "sharpe_undefined_reason"}``;
        ``sharpe`` and ``sharpe_undefined_reason`` may be None (JSON null), nothing is NaN."""
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
    """:class:`Metrics` of a strategy log-return series ``(n,)`` float64 (``n = 0`` gives a
    flat curve). Raises ValueError for non-finite log returns or an equity curve that
    overflows float64."""
    r = np.asarray(log_returns, dtype=np.float64).reshape(-1)
    if not np.isfinite(r).all():
        raise ValueError("log returns must be finite")
    equity = np.exp(np.concatenate([[0.0], np.cumsum(r)]))  # (n + 1,), starts at 1
    sharpe, reason = annualised_sharpe(np.expm1(r))
    drawdown = 1.0 - equity / np.maximum.accumulate(equity)
    return Metrics(
        total_return=float(equity[-1] - 1.0),
        sharpe=sharpe,
        max_drawdown=float(drawdown.max()),
        trades=int(trades),
        sharpe_undefined_reason=reason,
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
