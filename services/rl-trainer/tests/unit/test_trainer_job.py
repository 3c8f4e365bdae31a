from __future__ import annotations

import dataclasses
import json
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from bsopt_trainer.domain.evaluation import Metrics
from bsopt_trainer.domain.job import (
    DEFAULT_TEST_START,
    DEFAULT_TRAIN_END,
    TEST_TOTAL_TIMESTEPS,
    JobResult,
    default_spec,
    paper_trading_positions,
    run_training_job,
)
from bsopt_trainer.domain.policy import TrainedPolicy


def test_default_split_respects_no_look_ahead(googl_bars):
    spec = default_spec()
    split = spec.validate(googl_bars)
    assert split.gap_bars == 21 >= spec.window_size
    assert split.train_bars.index[0] == pd.Timestamp("2009-05-22")
    assert split.train_bars.index[-1] <= pd.Timestamp(DEFAULT_TRAIN_END)
    # The warm-up bars of the test slice lie strictly after training, before the test period.
    warm_up = split.test_bars.index[: split.test_range.first]
    assert len(warm_up) == spec.window_size
    assert (warm_up > pd.Timestamp(DEFAULT_TRAIN_END)).all()
    assert (warm_up < pd.Timestamp(DEFAULT_TEST_START)).all()
    assert split.test_dates[0] == date(2017, 1, 3) and split.test_dates[-1] == date(2018, 8, 28)
    assert len(split.test_dates) == len(split.test_range) == 417


def _spec(**changes):
    return dataclasses.replace(default_spec(total_timesteps=TEST_TOTAL_TIMESTEPS), **changes)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"train_start": date(2008, 1, 1)}, "out of the data range"),
        ({"test_end": date(2019, 1, 1)}, "out of the data range"),
        ({"train_start": date(2016, 12, 1), "train_end": date(2016, 1, 1)}, "training window is reversed"),
        ({"test_start": date(2018, 1, 1), "test_end": date(2017, 6, 1)}, "test window is reversed"),
        ({"test_start": date(2016, 6, 1)}, "must be after train_end"),
        ({"train_end": date(2016, 12, 15)}, r"only \d+ bars lie between"),
        ({"train_start": date(2016, 11, 20)}, "training window"),
        ({"test_start": date(2018, 8, 29)}, "test window"),
        ({"window_size": 0}, "window_size"),
        ({"total_timesteps": 10}, "total_timesteps"),
        ({"transaction_cost_bps": -5.0}, "transaction_cost_bps"),
    ],
)
def test_spec_validation_errors(googl_bars, changes, match):
    with pytest.raises(ValueError, match=match):
        _spec(**changes).validate(googl_bars)


def test_spec_rejects_non_dates_and_missing_bars(googl_bars):
    with pytest.raises(ValueError, match=r"datetime\.date"):
        _spec(train_start="2010-01-01")
    with pytest.raises(ValueError, match="no bars"):
        _spec().validate(googl_bars.iloc[:0])


def test_gap_rule_is_exactly_window_size(googl_bars):
    days = googl_bars.index
    e = days.get_loc(pd.Timestamp("2016-11-30"))
    ok = _spec(test_start=days[e + 17].date())  # 16 bars strictly between
    assert ok.validate(googl_bars).gap_bars == 16
    with pytest.raises(ValueError, match="only 15 bars"):
        _spec(test_start=days[e + 16].date()).validate(googl_bars)


@pytest.fixture(scope="module")
def googl_job(tmp_path_factory, googl_bars):
    """One tiny-budget job on real GOOGL bars: (spec, result, progress calls, checkpoint dir)."""
    spec = _spec(train_start=date(2014, 1, 2))  # a subset keeps the test quick
    calls = []
    ckpt = tmp_path_factory.mktemp("job") / "ckpt"
    result = run_training_job(spec, googl_bars, ckpt, progress=lambda d, t: calls.append((d, t)))
    return spec, result, calls, ckpt


def test_run_training_job_on_googl(googl_job, googl_bars):
    spec, result, calls, ckpt = googl_job

    assert isinstance(result, JobResult) and result.model == "ppo-transformer"
    assert result.window == 16 and result.timesteps == TEST_TOTAL_TIMESTEPS
    assert calls[-1] == (2 * TEST_TOTAL_TIMESTEPS, 2 * TEST_TOTAL_TIMESTEPS)
    assert result.seconds > 0 and math.isfinite(result.seconds)
    for m in (result.agent, result.mlp_baseline, result.buy_and_hold):
        assert isinstance(m, Metrics)
        assert all(math.isfinite(v) for v in (m.total_return, m.max_drawdown))
        assert (m.sharpe is None) == (m.sharpe_undefined_reason is not None)
        assert m.sharpe is None or math.isfinite(m.sharpe)
        assert 0.0 <= m.max_drawdown < 1.0 and m.trades >= 0

    split = spec.validate(googl_bars)
    assert result.test_dates == split.test_dates
    assert len(result.agent_positions) == len(result.mlp_positions) == len(result.test_dates)
    close = googl_bars["close"]
    expected_bh = math.exp(-1e-3) * close[pd.Timestamp("2018-08-29")] / close[pd.Timestamp("2017-01-03")] - 1
    assert result.buy_and_hold.total_return == pytest.approx(expected_bh, abs=1e-12)

    assert result.checkpoint_path.is_file() and result.checkpoint_path.parent == ckpt
    assert result.mlp_checkpoint_path is not None and result.mlp_checkpoint_path.is_file()
    loaded = TrainedPolicy.load(result.checkpoint_path)
    assert loaded.extractor == "transformer" and loaded.metadata["window_size"] == 16

    paper = paper_trading_positions(result.checkpoint_path, googl_bars, spec)
    assert [d for d, _ in paper] == result.test_dates
    assert [p for _, p in paper] == result.agent_positions
    assert set(result.agent_positions) <= {0, 1}
    stored = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert stored["agent"] == result.agent.to_dict()


def test_job_result_with_undefined_sharpe_is_json(googl_job):
    """An always-flat policy has no Sharpe ratio: null with a reason, never NaN."""
    _, result, _, _ = googl_job
    flat = Metrics(total_return=0.0, sharpe=None, max_drawdown=0.0, trades=0,
                   sharpe_undefined_reason="zero_variance")
    d = dataclasses.replace(result, agent=flat, mlp_baseline=flat).to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["agent"] == {
        "total_return": 0.0, "sharpe": None, "max_drawdown": 0.0, "trades": 0,
        "sharpe_undefined_reason": "zero_variance",
    }
    with pytest.raises(ValueError, match="seconds"):
        dataclasses.replace(result, seconds=float("nan"))


def test_test_period_bars_never_reach_training(tmp_path, googl_bars):
    """Training on bars whose test period is scrambled gives bit-identical weights."""
    spec = _spec(train_start=date(2015, 1, 2), total_timesteps=256)
    scrambled = googl_bars.copy()
    after = scrambled.index >= pd.Timestamp(spec.test_start)
    scrambled.loc[after, ["open", "high", "low", "close"]] *= np.linspace(0.5, 2.0, after.sum())[:, None]
    a = run_training_job(spec, googl_bars, tmp_path / "a")
    b = run_training_job(spec, scrambled, tmp_path / "b")
    pa, pb = TrainedPolicy.load(a.checkpoint_path), TrainedPolicy.load(b.checkpoint_path)
    for (ka, va), (kb, vb) in zip(pa.model.state_dict().items(), pb.model.state_dict().items(), strict=True):
        assert ka == kb and bool((va == vb).all())
    assert a.buy_and_hold != b.buy_and_hold


def test_paper_trading_rejects_mismatched_window(googl_job, googl_bars):
    spec, result, _, _ = googl_job
    with pytest.raises(ValueError, match="observations"):
        paper_trading_positions(result.checkpoint_path, googl_bars, dataclasses.replace(spec, window_size=8))
