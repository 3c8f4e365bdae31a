"""One training job: split one symbol's bars into train and test windows, train PPO with the
Transformer extractor and, with the same budget and seed, an MLP baseline, then measure
both and buy-and-hold on the same test decision bars.

No-look-ahead rule
------------------
With ``W = window_size`` and the bars indexed positionally:

* **Training** sees only bars dated ``train_start .. train_end``: the training env is
  built on that slice alone. Its first ``W`` bars are warm-up history; its decisions are
  the slice's bars ``W .. n_train - 2`` (the last training bar only realises the last
  reward).
* **Gap**: at least ``W`` bars must lie strictly between ``train_end`` and ``test_start``.
  The last ``W`` of them are warm-up history for the first test observations (which read
  bars ``t0 - W .. t0``), so no test observation contains a training bar, and no bar of
  the test period is ever seen in training. Gap bars are never decided on or scored.
* **Test** decisions are every bar dated ``test_start .. test_end`` except the last one,
  whose close only realises the last decision's return. The agent, the MLP baseline and
  buy-and-hold are all scored on exactly these decision bars.

Default split (GOOGL daily bars 2009-05-22 .. 2018-08-29, :func:`default_spec`): train
2009-05-22 .. 2016-11-30 (1896 bars, 1879 decisions), gap 2016-12-01 .. 2016-12-30
(21 bars >= 16), test 2017-01-01 .. 2018-08-29 (418 bars, 417 decisions from 2017-01-03 to
2018-08-28).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bsopt_common.errors import InvalidArgument

from .env import FEATURE_NAMES, DecisionRange, EnvConfig, TradingEnv, check_bars_frame
from .evaluation import Metrics, buy_and_hold, evaluate_policy
from .policy import TrainedPolicy
from .ppo import PPOConfig, train_ppo

MODEL_NAME = "ppo-transformer"
BASELINE_NAME = "ppo-mlp"
TRANSFORMER_CHECKPOINT = "ppo-transformer.pt"
MLP_CHECKPOINT = "ppo-mlp.pt"

DEFAULT_SYMBOL = "GOOGL"
DEFAULT_TRAIN_START = date(2009, 5, 22)
DEFAULT_TRAIN_END = date(2016, 11, 30)
DEFAULT_TEST_START = date(2017, 1, 1)
DEFAULT_TEST_END = date(2018, 8, 29)

DEMO_TOTAL_TIMESTEPS = 131_072
"""Demo budget per model (128 PPO iterations of 8 x 128 steps). Measured on a shared 2-core
CPU with one torch thread: the Transformer trains at ~1,300-1,500 steps/s and the MLP at
~6,000-11,000 steps/s; a whole default GOOGL job took 120 s (Transformer 101 s, MLP 10 s,
evaluation and checkpoints the rest), leaving a 2x margin under 4 minutes."""
TEST_TOTAL_TIMESTEPS = 1_024
"""Tiny budget for end-to-end tests (one PPO iteration per model, a couple of seconds)."""
MIN_TOTAL_TIMESTEPS = 64
"""Smallest budget a spec accepts (8 envs x 8 steps)."""

NUM_ENVS = 8
NUM_STEPS = 128
EPISODE_LENGTH = 256


class InvalidSpec(InvalidArgument):
    """A training spec that cannot run on its symbol's bars; the message names the field
    and the bound it breaks (gRPC ``INVALID_ARGUMENT``)."""


@dataclass(frozen=True)
class TrainingSpec:
    """What to train on and how much. Dates are inclusive calendar dates."""

    symbol: str
    """Symbol whose bars are passed to :func:`run_training_job` (recorded in checkpoints)."""
    train_start: date
    """First calendar date of the training window."""
    train_end: date
    """Last calendar date of the training window."""
    test_start: date
    """First calendar date of the test window; at least ``window_size`` bars after ``train_end``."""
    test_end: date
    """Last calendar date of the test window (its last bar only realises the last return)."""
    window_size: int = 16
    """Bars per observation, and the warm-up length."""
    total_timesteps: int = DEMO_TOTAL_TIMESTEPS
    """PPO environment steps per model (the Transformer and the MLP get the same budget)."""
    transaction_cost_bps: float = 10.0
    """Cost per unit of position change, in basis points."""
    seed: int = 0
    """Seed of both trainings (same seed for the Transformer and the MLP)."""

    def __post_init__(self) -> None:
        for name in ("train_start", "train_end", "test_start", "test_end"):
            value = getattr(self, name)
            if isinstance(value, datetime):  # a datetime is a date; keep only its date
                object.__setattr__(self, name, value.date())
            elif not isinstance(value, date):
                raise InvalidSpec(f"{name} must be a datetime.date, got {type(value).__name__}")

    def validate(self, bars: pd.DataFrame) -> DataSplit:
        """Check the spec against ``bars`` (the symbol's bars, any span covering both
        windows) and return the split. Raises InvalidSpec (an InvalidArgument) with a readable message when a
        parameter is out of bounds, a window is reversed, the windows overlap, a date is
        outside the data, a window has too few bars, or fewer than ``window_size`` bars
        separate ``train_end`` from ``test_start``."""
        w = self.window_size
        if not isinstance(self.symbol, str) or not self.symbol.strip():
            raise InvalidSpec("symbol must be a non-empty string")
        if int(w) != w or w < 1:
            raise InvalidSpec(f"window_size must be a positive integer, got {w!r}")
        if int(self.total_timesteps) != self.total_timesteps or self.total_timesteps < MIN_TOTAL_TIMESTEPS:
            raise InvalidSpec(
                f"total_timesteps must be an integer >= {MIN_TOTAL_TIMESTEPS}, got {self.total_timesteps!r}"
            )
        if not math.isfinite(self.transaction_cost_bps) or self.transaction_cost_bps < 0:
            raise InvalidSpec(
                f"transaction_cost_bps must be finite and >= 0, got {self.transaction_cost_bps!r}"
            )
        if self.train_start > self.train_end:
            raise InvalidSpec(
                f"training window is reversed: train_start {self.train_start} > train_end {self.train_end}"
            )
        if self.test_start > self.test_end:
            raise InvalidSpec(
                f"test window is reversed: test_start {self.test_start} > test_end {self.test_end}"
            )
        if self.test_start <= self.train_end:
            raise InvalidSpec(f"test_start {self.test_start} must be after train_end {self.train_end}")

        if not isinstance(bars, pd.DataFrame) or len(bars) == 0:
            raise InvalidSpec(f"no bars for {self.symbol}")
        check_bars_frame(bars)
        if not isinstance(bars.index, pd.DatetimeIndex):
            raise ValueError("bars must be indexed by a DatetimeIndex")
        if not bars.index.is_monotonic_increasing or bars.index.has_duplicates:
            raise ValueError("bar timestamps must be sorted ascending and unique")
        days = bars.index.normalize()
        first_day, last_day = days[0].date(), days[-1].date()
        if self.train_start < first_day or self.test_end > last_day:
            raise InvalidSpec(
                f"dates {self.train_start} .. {self.test_end} are out of the data range "
                f"{first_day} .. {last_day} of {self.symbol}"
            )

        s = int(np.searchsorted(days, pd.Timestamp(self.train_start), side="left"))
        e = int(np.searchsorted(days, pd.Timestamp(self.train_end), side="right")) - 1
        n_train = e - s + 1
        if n_train < w + 2:
            raise InvalidSpec(
                f"training window {self.train_start} .. {self.train_end} has {max(n_train, 0)} bars; "
                f"needs at least window_size + 2 = {w + 2}"
            )
        t0 = int(np.searchsorted(days, pd.Timestamp(self.test_start), side="left"))
        t_last = int(np.searchsorted(days, pd.Timestamp(self.test_end), side="right")) - 1
        gap = t0 - e - 1
        if gap < w:
            raise InvalidSpec(
                f"only {gap} bars lie between train_end {self.train_end} and test_start "
                f"{self.test_start}; need at least window_size = {w} (warm-up history for the "
                "first test observations, so that no test observation overlaps training data)"
            )
        n_test = t_last - t0 + 1
        if n_test < 2:
            raise InvalidSpec(
                f"test window {self.test_start} .. {self.test_end} has {max(n_test, 0)} bars; "
                "needs at least 2"
            )
        train_bars = bars.iloc[s : e + 1]
        test_bars = bars.iloc[t0 - w : t_last + 1]
        test_range = DecisionRange(w, len(test_bars) - 2)
        return DataSplit(
            train_bars=train_bars,
            train_range=DecisionRange(w, len(train_bars) - 2),
            test_bars=test_bars,
            test_range=test_range,
            gap_bars=gap,
            test_dates=[t.date() for t in test_bars.index[test_range.first : test_range.last + 1]],
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("train_start", "train_end", "test_start", "test_end"):
            d[k] = d[k].isoformat()
        return d


@dataclass(frozen=True)
class DataSplit:
    """The result of :meth:`TrainingSpec.validate`; ranges are positional in their own frame."""

    train_bars: pd.DataFrame
    """Bars dated ``train_start .. train_end``; the only bars the training env holds."""
    train_range: DecisionRange
    """Training decision bars within ``train_bars``: ``[W, len(train_bars) - 2]``."""
    test_bars: pd.DataFrame
    """``W`` warm-up gap bars followed by the bars dated ``test_start .. test_end``."""
    test_range: DecisionRange
    """Test decision bars within ``test_bars``: ``[W, len(test_bars) - 2]``."""
    gap_bars: int
    """Bars strictly between ``train_end`` and ``test_start``."""
    test_dates: list[date]
    """Dates of the test decision bars, one per position."""


@dataclass(frozen=True)
class JobResult:
    """Outcome of :func:`run_training_job`. Metrics are on the test decision bars."""

    model: str
    """Name of the main model, ``"ppo-transformer"``."""
    window: int
    """Observation window (bars)."""
    timesteps: int
    """Environment steps each model was trained for (the spec's budget rounded down to
    whole PPO iterations)."""
    seconds: float
    """Wall-clock seconds of the Transformer training."""
    agent: Metrics
    """PPO + Transformer on the test decisions."""
    mlp_baseline: Metrics
    """PPO + MLP (same budget and seed) on the same decisions."""
    buy_and_hold: Metrics
    """Long from the first test decision to the end, one entry fee."""
    checkpoint_path: Path
    """The Transformer policy checkpoint (:meth:`TrainedPolicy.load`)."""
    test_dates: list[date]
    """Test decision dates."""
    mlp_checkpoint_path: Path | None = None
    """The MLP baseline checkpoint."""
    mlp_seconds: float = 0.0
    """Wall-clock seconds of the MLP training."""
    agent_positions: list[int] = field(default_factory=list)
    """The agent's target position (0/1) at each test decision date."""
    mlp_positions: list[int] = field(default_factory=list)
    """The MLP baseline's positions at the same dates."""

    def __post_init__(self) -> None:
        for name in ("seconds", "mlp_seconds"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (dates as ISO strings, paths as strings): valid for
        ``json.dumps(..., allow_nan=False)``. The three metrics are :meth:`Metrics.to_dict`;
        their ``sharpe`` is None (JSON null) with a ``sharpe_undefined_reason`` when the
        ratio is undefined (e.g. an always-flat policy)."""
        return {
            "model": self.model,
            "window": self.window,
            "timesteps": self.timesteps,
            "seconds": self.seconds,
            "mlp_seconds": self.mlp_seconds,
            "agent": self.agent.to_dict(),
            "mlp_baseline": self.mlp_baseline.to_dict(),
            "buy_and_hold": self.buy_and_hold.to_dict(),
            "checkpoint_path": str(self.checkpoint_path),
            "mlp_checkpoint_path": (
                None if self.mlp_checkpoint_path is None else str(self.mlp_checkpoint_path)
            ),
            "test_dates": [d.isoformat() for d in self.test_dates],
            "agent_positions": list(self.agent_positions),
            "mlp_positions": list(self.mlp_positions),
        }


def default_spec(**overrides: Any) -> TrainingSpec:
    """The GOOGL split of the module docstring with the demo budget; keyword overrides
    replace fields (e.g. ``total_timesteps=TEST_TOTAL_TIMESTEPS``)."""
    values: dict[str, Any] = {
        "symbol": DEFAULT_SYMBOL,
        "train_start": DEFAULT_TRAIN_START,
        "train_end": DEFAULT_TRAIN_END,
        "test_start": DEFAULT_TEST_START,
        "test_end": DEFAULT_TEST_END,
        "total_timesteps": DEMO_TOTAL_TIMESTEPS,
    }
    values.update(overrides)
    return TrainingSpec(**values)


def ppo_config_for(spec: TrainingSpec) -> PPOConfig:
    """PPO settings of a job: 8 envs x up to 128 steps per rollout (fewer steps when the
    budget is smaller than one full rollout), everything else :class:`PPOConfig`'s defaults."""
    num_steps = min(NUM_STEPS, spec.total_timesteps // NUM_ENVS)
    num_steps -= num_steps % 4  # num_minibatches = 4 must divide the batch
    return PPOConfig(
        total_timesteps=int(spec.total_timesteps),
        num_envs=NUM_ENVS,
        num_steps=max(num_steps, 4),
        num_minibatches=4,
        seed=int(spec.seed),
    )


def env_config_for(spec: TrainingSpec) -> EnvConfig:
    return EnvConfig(
        window_size=int(spec.window_size),
        episode_length=EPISODE_LENGTH,
        transaction_cost_bps=float(spec.transaction_cost_bps),
    )


def _metadata(spec: TrainingSpec, split: DataSplit, extractor: str) -> dict[str, Any]:
    return {
        "model": MODEL_NAME if extractor == "transformer" else BASELINE_NAME,
        "spec": spec.to_dict(),
        "window_size": int(spec.window_size),
        "features": list(FEATURE_NAMES),
        "train_decisions": [
            split.train_bars.index[split.train_range.first].date().isoformat(),
            split.train_bars.index[split.train_range.last].date().isoformat(),
        ],
        "test_decisions": [split.test_dates[0].isoformat(), split.test_dates[-1].isoformat()],
    }


def run_training_job(
    spec: TrainingSpec,
    bars: pd.DataFrame,
    checkpoint_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> JobResult:
    """Validate ``spec`` against ``bars``, train PPO + Transformer, then PPO + MLP with the
    same budget and seed, on the training bars only; evaluate both and buy-and-hold on the
    test decision bars; save ``ppo-transformer.pt`` and ``ppo-mlp.pt`` under
    ``checkpoint_dir`` (created if missing).

    ``progress(done, total)`` counts environment steps over both trainings
    (``total = 2 * timesteps``; the Transformer first). An exception raised from it aborts
    the job. Raises ValueError for an invalid spec (see :meth:`TrainingSpec.validate`).
    """
    split = spec.validate(bars)
    config = ppo_config_for(spec)
    env_config = env_config_for(spec)
    per_model = config.trained_timesteps
    total = 2 * per_model

    def make_env(_: int) -> TradingEnv:
        return TradingEnv(split.train_bars, env_config, split.train_range, mode="train")

    def progress_from(offset: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, _total: progress(offset + done, total)

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    agent = train_ppo(config, make_env, "transformer", {}, progress=progress_from(0))
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    mlp = train_ppo(config, make_env, "mlp", {}, progress=progress_from(per_model))
    mlp_seconds = time.perf_counter() - started

    agent.metadata.update(_metadata(spec, split, "transformer"))
    mlp.metadata.update(_metadata(spec, split, "mlp"))
    checkpoint_path = agent.save(checkpoint_dir / TRANSFORMER_CHECKPOINT)
    mlp_path = mlp.save(checkpoint_dir / MLP_CHECKPOINT)

    w, cost = spec.window_size, spec.transaction_cost_bps
    agent_metrics, agent_pos = evaluate_policy(agent, split.test_bars, split.test_range, w, cost)
    mlp_metrics, mlp_pos = evaluate_policy(mlp, split.test_bars, split.test_range, w, cost)
    bh_metrics = buy_and_hold(split.test_bars, split.test_range, cost)

    return JobResult(
        model=MODEL_NAME,
        window=w,
        timesteps=per_model,
        seconds=seconds,
        agent=agent_metrics,
        mlp_baseline=mlp_metrics,
        buy_and_hold=bh_metrics,
        checkpoint_path=checkpoint_path,
        test_dates=list(split.test_dates),
        mlp_checkpoint_path=mlp_path,
        mlp_seconds=mlp_seconds,
        agent_positions=[int(p) for p in agent_pos],
        mlp_positions=[int(p) for p in mlp_pos],
    )


def paper_trading_positions(
    policy_path: str | Path, bars: pd.DataFrame, spec: TrainingSpec
) -> list[tuple[date, int]]:
    """``(decision date, target position 0/1)`` for every test decision bar of ``spec``,
    from the checkpoint at ``policy_path``: the position to hold from that bar's close to
    the next. Computed by the same greedy walk as the evaluation, so it equals the
    positions behind ``JobResult.agent``. ValueError if the checkpoint's window or
    features do not match ``spec``."""
    split = spec.validate(bars)
    policy = TrainedPolicy.load(policy_path)
    expected = (spec.window_size, len(FEATURE_NAMES))
    if policy.observation_shape != expected:
        raise ValueError(f"checkpoint expects observations {policy.observation_shape}, spec gives {expected}")
    features = policy.metadata.get("features")
    if features is not None and list(features) != list(FEATURE_NAMES):
        raise ValueError(
            f"checkpoint was trained on features {features}, this code computes {list(FEATURE_NAMES)}"
        )
    _, positions = evaluate_policy(policy, split.test_bars, split.test_range, spec.window_size,
                                   spec.transaction_cost_bps)
    return [(d, int(p)) for d, p in zip(split.test_dates, positions, strict=True)]
