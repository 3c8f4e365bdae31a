"""A long/flat trading environment over a frame of OHLCV bars.

Bars and indices
----------------
``bars`` is the canonical frame of :mod:`bsopt_common.marketdata` (``DatetimeIndex``
named ``time``, float64 ``open``/``high``/``low``/``close``/``volume``). Every index in
this module is a *positional* row index ``0 .. N-1`` into that frame.

Features
--------
:func:`market_features` turns bar ``i`` into ``N_MARKET_FEATURES`` scale-free numbers
computed from bars ``i`` and ``i - 1`` only (nothing is fitted on any data; the constant
``PRICE_FEATURE_SCALE`` only puts price ratios in percent units):

====================  ==========================================================
``log_return``        ``100 * log(close_i / close_{i-1})``
``range``             ``100 * (high_i - low_i) / close_i``
``body``              ``100 * (close_i - open_i) / close_i``
``log_volume_change`` ``log((volume_i + 1) / (volume_{i-1} + 1))``
``position``          position held over ``(i-1, i]`` (the target chosen at bar
                      ``i - 1``; 0 before the episode starts), added by the env
====================  ==========================================================

Row 0 has no previous bar; its features are NaN and no observation ever contains it.

Decisions
---------
The agent decides at bar ``t``'s close. The observation for decision ``t`` is the
feature rows ``t - W + 1 .. t`` (``W`` = ``window_size``), shape ``(W, N_FEATURES)``
float32, so it depends on bars ``t - W .. t`` only. The action is the target position
for the next interval (0 = flat, 1 = long) and the reward is realised at bar ``t + 1``'s
close::

    reward_t = position_t * log(close_{t+1} / close_t) - cost * |position_t - position_{t-1}|

with ``cost = transaction_cost_bps / 1e4`` and ``position_{-1} = 0`` (every episode and
every evaluation starts flat, so the first entry pays the cost; there is no exit cost at
the end). ``sum(reward)`` is the log growth of the equity curve computed by
:mod:`bsopt_trainer.domain.evaluation`; the fee is charged as a continuously compounded
rate, ``exp(-cost) ≈ 1 - cost``.

Hence a decision range ``[first, last]`` (inclusive) is valid iff
``first >= W`` (bars ``0 .. W - 1`` are warm-up history only: they feed the first
observation but are never decided on) and ``last <= N - 2`` (the last bar is only read
for the last reward). See :class:`DecisionRange` and :func:`full_decision_range`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, SupportsInt, overload

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

MARKET_FEATURE_NAMES: tuple[str, ...] = ("log_return", "range", "body", "log_volume_change")
"""Per-bar market features, in column order (see the module docstring)."""

FEATURE_NAMES: tuple[str, ...] = (*MARKET_FEATURE_NAMES, "position")
"""All observation channels, in column order."""

N_MARKET_FEATURES = len(MARKET_FEATURE_NAMES)
N_FEATURES = len(FEATURE_NAMES)
PRICE_FEATURE_SCALE = 100.0
"""Fixed multiplier putting price ratios in percent (a unit choice, not a fitted statistic)."""

FLAT, LONG = 0, 1
_REQUIRED = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class DecisionRange:
    """Inclusive positional range ``[first, last]`` of decision bars in a bars frame."""

    first: int
    """Positional index of the first decision bar (needs ``first >= window_size``)."""
    last: int
    """Positional index of the last decision bar (needs ``last <= len(bars) - 2``)."""

    def __post_init__(self) -> None:
        if int(self.first) != self.first or int(self.last) != self.last:
            raise ValueError(f"decision range bounds must be integers, got {self.first!r}, {self.last!r}")
        if self.last < self.first:
            raise ValueError(f"empty decision range: first={self.first} > last={self.last}")

    def __len__(self) -> int:
        return self.last - self.first + 1

    def indices(self) -> np.ndarray:
        """Decision bar indices, shape ``(len(self),)`` int64."""
        return np.arange(self.first, self.last + 1, dtype=np.int64)

    @classmethod
    def coerce(cls, value: DecisionRange | tuple[int, int]) -> DecisionRange:
        """Accept a :class:`DecisionRange` or an inclusive ``(first, last)`` tuple."""
        if isinstance(value, DecisionRange):
            return value
        try:
            first, last = value
        except (TypeError, ValueError):
            raise ValueError(
                f"decision range must be DecisionRange or (first, last), got {value!r}"
            ) from None
        return cls(int(first), int(last))


def check_decision_range(n_bars: int, window_size: int, decision_range: DecisionRange) -> None:
    """Raise ValueError unless ``decision_range`` is valid for ``n_bars`` bars and
    ``window_size`` (``window_size <= first`` and ``last <= n_bars - 2``)."""
    if decision_range.first < window_size:
        raise ValueError(
            f"first decision bar {decision_range.first} < window_size {window_size}: bars "
            f"0..{window_size - 1} are warm-up history for the first observation"
        )
    if decision_range.last > n_bars - 2:
        raise ValueError(
            f"last decision bar {decision_range.last} > {n_bars - 2} (= len(bars) - 2): the bar "
            "after each decision is needed to realise its reward"
        )


def full_decision_range(n_bars: int, window_size: int) -> DecisionRange:
    """The widest valid range ``[window_size, n_bars - 2]``; ValueError if empty."""
    if n_bars - 2 < window_size:
        raise ValueError(
            f"{n_bars} bars are too few for window_size={window_size}: need at least "
            f"{window_size + 2} (window warm-up + one decision + its next bar)"
        )
    return DecisionRange(window_size, n_bars - 2)


def check_bars_frame(bars: pd.DataFrame) -> None:
    """Raise ValueError unless ``bars`` has the OHLCV columns, no NaN and positive prices."""
    if not isinstance(bars, pd.DataFrame):
        raise ValueError(f"bars must be a pandas DataFrame, got {type(bars).__name__}")
    missing = [c for c in _REQUIRED if c not in bars.columns]
    if missing:
        raise ValueError(f"bars are missing columns {missing}")
    values = bars.loc[:, list(_REQUIRED)].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("bars contain NaN or infinite values")
    if (values[:, :4] <= 0).any():
        raise ValueError("bars contain non-positive prices")
    if (values[:, 4] < 0).any():
        raise ValueError("bars contain negative volume")


def close_log_returns(bars: pd.DataFrame) -> np.ndarray:
    """``log(close_i / close_{i-1})``, shape ``(N,)`` float64; element 0 is NaN."""
    close = bars["close"].to_numpy(dtype=np.float64)
    out = np.full(close.shape, np.nan)
    out[1:] = np.log(close[1:] / close[:-1])
    return out


def market_features(bars: pd.DataFrame) -> np.ndarray:
    """Market feature rows, shape ``(N, N_MARKET_FEATURES)`` float32, columns
    :data:`MARKET_FEATURE_NAMES`. Row ``i`` depends on bars ``i - 1`` and ``i`` only;
    row 0 is NaN."""
    check_bars_frame(bars)
    o, h, low, c, v = (bars[k].to_numpy(dtype=np.float64) for k in _REQUIRED)
    feats = np.full((len(bars), N_MARKET_FEATURES), np.nan, dtype=np.float64)
    feats[1:, 0] = PRICE_FEATURE_SCALE * np.log(c[1:] / c[:-1])
    feats[1:, 1] = PRICE_FEATURE_SCALE * (h[1:] - low[1:]) / c[1:]
    feats[1:, 2] = PRICE_FEATURE_SCALE * (c[1:] - o[1:]) / c[1:]
    feats[1:, 3] = np.log((v[1:] + 1.0) / (v[:-1] + 1.0))
    return feats.astype(np.float32)


@overload
def step_log_return(position: float, previous_position: float, log_return: float, cost: float) -> float: ...
@overload
def step_log_return(
    position: np.ndarray, previous_position: np.ndarray, log_return: np.ndarray, cost: float
) -> np.ndarray: ...
def step_log_return(position: Any, previous_position: Any, log_return: Any, cost: float) -> Any:
    """The accounting shared by the env reward and the evaluation metrics:
    ``position * log_return - cost * |position - previous_position|`` (scalars or arrays)."""
    return position * log_return - cost * np.abs(position - previous_position)


@dataclass(frozen=True)
class EnvConfig:
    """Settings of :class:`TradingEnv`."""

    window_size: int = 16
    """Number of bars in one observation (``W``); also the warm-up length."""
    episode_length: int = 256
    """Decisions per training episode; clipped to the number of decisions available."""
    transaction_cost_bps: float = 10.0
    """Cost per unit of position change, in basis points of equity (10 bps = 0.1 %)."""

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}")
        if self.episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {self.episode_length}")
        if not np.isfinite(self.transaction_cost_bps) or self.transaction_cost_bps < 0:
            raise ValueError(f"transaction_cost_bps must be finite and >= 0, got {self.transaction_cost_bps}")

    @property
    def cost(self) -> float:
        """Transaction cost as a fraction (``transaction_cost_bps / 1e4``)."""
        return self.transaction_cost_bps / 1e4


class TradingEnv(gym.Env):
    """Long/flat trading on one symbol's bars (see the module docstring for features,
    indices and the reward).

    Modes:

    * ``"train"``: each ``reset`` picks a uniformly random start so that an episode of
      ``min(episode_length, len(decision_range))`` decisions fits inside
      ``decision_range``; the episode is *truncated* after that many steps.
    * ``"eval"``: ``reset`` starts at ``decision_range.first`` and the episode walks every
      decision bar once, truncating after ``decision_range.last``.

    ``terminated`` is always False (running out of data or episode time is a time limit).
    Observation: ``(window_size, N_FEATURES)`` float32. Action: ``Discrete(2)``, the
    target position. ``info`` carries ``bar`` (the decision bar just acted on),
    ``position`` and ``log_return`` after a step, and ``bar`` (the next decision bar)
    after ``reset``.
    """

    # Not a ClassVar: gymnasium declares ``Env.metadata`` as a plain (instance) attribute.
    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        bars: pd.DataFrame,
        config: EnvConfig | None = None,
        decision_range: DecisionRange | tuple[int, int] | None = None,
        mode: Literal["train", "eval"] = "train",
    ) -> None:
        super().__init__()
        self.config = config if config is not None else EnvConfig()
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.mode = mode
        self._market = market_features(bars)
        self._log_ret = close_log_returns(bars)
        self.dates: pd.DatetimeIndex = pd.DatetimeIndex(bars.index)
        """Bar timestamps, positional like every index here."""
        n = len(bars)
        w = self.config.window_size
        if decision_range is None:
            self.decision_range = full_decision_range(n, w)
        else:
            self.decision_range = DecisionRange.coerce(decision_range)
            check_decision_range(n, w, self.decision_range)
        n_decisions = len(self.decision_range)
        self.episode_steps = n_decisions if mode == "eval" else min(self.config.episode_length, n_decisions)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(w, N_FEATURES), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        # held[i] = position held over (i-1, i], i.e. chosen at bar i-1 (0 before the start).
        self._held = np.zeros(n, dtype=np.float32)
        self._t = self.decision_range.first
        self._start = self.decision_range.first
        self._steps = 0
        self._needs_reset = True

    @property
    def decision_bar(self) -> int:
        """Positional index of the bar the next action decides at."""
        return self._t

    def _observation(self) -> np.ndarray:
        w = self.config.window_size
        lo, hi = self._t - w + 1, self._t + 1
        obs = np.empty((w, N_FEATURES), dtype=np.float32)
        obs[:, :N_MARKET_FEATURES] = self._market[lo:hi]
        obs[:, N_MARKET_FEATURES] = self._held[lo:hi]
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if self.mode == "train":
            span = len(self.decision_range) - self.episode_steps
            self._start = self.decision_range.first + int(self.np_random.integers(0, span + 1))
        else:
            self._start = self.decision_range.first
        self._t = self._start
        self._steps = 0
        w = self.config.window_size
        self._held[max(0, self._start - w) : self._start + self.episode_steps + 1] = 0.0
        self._needs_reset = False
        return self._observation(), {"bar": self._t}

    def step(self, action: SupportsInt) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("step() called before reset() or after the episode ended")
        a = int(action)
        if a not in (FLAT, LONG):
            raise ValueError(f"action must be 0 (flat) or 1 (long), got {action!r}")
        t = self._t
        lr = float(self._log_ret[t + 1])
        reward = float(step_log_return(float(a), float(self._held[t]), lr, self.config.cost))
        self._held[t + 1] = a
        self._t = t + 1
        self._steps += 1
        truncated = self._steps >= self.episode_steps
        self._needs_reset = truncated
        # After the last step the observation is the one at bar last + 1: it only uses bars
        # up to the one that realised the last reward (used for bootstrapping, never acted on).
        return self._observation(), reward, False, truncated, {"bar": t, "position": a, "log_return": lr}
