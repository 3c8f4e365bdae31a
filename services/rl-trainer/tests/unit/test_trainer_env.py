from __future__ import annotations

import math

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from bsopt_trainer.domain.env import (
    FEATURE_NAMES,
    N_FEATURES,
    DecisionRange,
    EnvConfig,
    TradingEnv,
    full_decision_range,
    market_features,
)


def test_observation_shape_and_dtype(random_bars):
    env = TradingEnv(random_bars, EnvConfig(window_size=16))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (16, N_FEATURES) == (16, len(FEATURE_NAMES))
    assert obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    for _ in range(50):
        obs, *_ = env.step(1)
        assert obs.shape == (16, N_FEATURES) and obs.dtype == np.float32
        assert np.isfinite(obs).all()


@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value:UserWarning")
def test_passes_gymnasium_env_checker(random_bars):
    check_env(TradingEnv(random_bars, EnvConfig(episode_length=32)), skip_render_check=True)


def test_features_by_hand(make_bars):
    bars = make_bars([100.0, 110.0, 99.0], volume=[9.0, 19.0, 4.0])
    f = market_features(bars)
    assert f.shape == (3, 4) and f.dtype == np.float32
    assert np.isnan(f[0]).all()  # no previous bar
    o, h, lo, c = (bars[k].iloc[2] for k in ("open", "high", "low", "close"))
    expected = [100 * math.log(99 / 110), 100 * (h - lo) / c, 100 * (c - o) / c, math.log(5 / 20)]
    np.testing.assert_allclose(f[2], expected, rtol=1e-6)


def test_no_look_ahead(random_bars):
    t = 150
    changed = random_bars.copy()
    changed.iloc[t + 1 :] = changed.iloc[t + 1 :] * 3.0  # prices and volume after t
    changed.iloc[t + 5, changed.columns.get_loc("volume")] = 1.0
    f_orig, f_changed = market_features(random_bars), market_features(changed)
    np.testing.assert_array_equal(f_orig[: t + 1], f_changed[: t + 1])
    assert not np.allclose(f_orig[t + 1], f_changed[t + 1])

    # Same through the env, also after acting: observations at decision bars <= t agree.
    cfg = EnvConfig(window_size=16)
    a = TradingEnv(random_bars, cfg, (t - 10, 250), mode="eval")
    b = TradingEnv(changed, cfg, (t - 10, 250), mode="eval")
    oa, _ = a.reset()
    ob, _ = b.reset()
    np.testing.assert_array_equal(oa, ob)
    for k, action in enumerate([1, 0, 1, 1, 0, 0, 1, 1, 1, 0]):
        oa, *_ = a.step(action)
        ob, *_ = b.step(action)
        assert a.decision_bar == t - 10 + k + 1 <= t
        np.testing.assert_array_equal(oa, ob)


def test_position_channel_tracks_held_position(random_bars):
    env = TradingEnv(random_bars, EnvConfig(window_size=4), (10, 20), mode="eval")
    obs, _ = env.reset()
    assert (obs[:, -1] == 0).all()  # starts flat
    obs, *_ = env.step(1)
    np.testing.assert_array_equal(obs[:, -1], [0, 0, 0, 1])
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs[:, -1], [0, 0, 1, 0])


def test_reward_charges_cost_on_every_change(make_bars):
    closes = [100.0, 100.0, 100.0, 110.0, 99.0, 99.0, 108.9]
    bars = make_bars(closes)
    cost = 25.0 / 1e4
    env = TradingEnv(bars, EnvConfig(window_size=2, transaction_cost_bps=25.0), (2, 5), mode="eval")
    env.reset()
    rewards = [env.step(a)[1] for a in (1, 1, 0, 1)]
    expected = [
        math.log(110 / 100) - cost,  # enter long
        math.log(99 / 110),  # hold
        0.0 - cost,  # exit
        math.log(108.9 / 99) - cost,  # re-enter
    ]
    np.testing.assert_allclose(rewards, expected, rtol=0, atol=1e-12)


def test_decision_range_is_explicit_and_checked(random_bars):
    n = len(random_bars)
    assert full_decision_range(n, 16) == DecisionRange(16, n - 2)
    with pytest.raises(ValueError, match="warm-up"):
        TradingEnv(random_bars, EnvConfig(window_size=16), (15, 100))
    with pytest.raises(ValueError, match="realise its reward"):
        TradingEnv(random_bars, EnvConfig(window_size=16), (16, n - 1))
    with pytest.raises(ValueError, match="empty"):
        DecisionRange(50, 40)
    with pytest.raises(ValueError, match="too few"):
        full_decision_range(17, 16)
    with pytest.raises(ValueError, match="mode"):
        TradingEnv(random_bars, mode="test")  # type: ignore[arg-type]


def test_eval_mode_walks_range_once(random_bars):
    env = TradingEnv(random_bars, EnvConfig(window_size=16), (40, 59), mode="eval")
    _, info = env.reset(seed=123)
    assert info["bar"] == 40
    bars_seen, truncated = [], False
    while not truncated:
        _, _, terminated, truncated, info = env.step(1)
        assert not terminated
        bars_seen.append(info["bar"])
    assert bars_seen == list(range(40, 60))
    with pytest.raises(RuntimeError):
        env.step(0)


def test_train_episodes_random_start_fixed_length_seeded(random_bars):
    cfg = EnvConfig(window_size=16, episode_length=50)
    env = TradingEnv(random_bars, cfg, (20, 200), mode="train")

    def episode(seed):
        _, info = env.reset(seed=seed)
        start, steps, truncated = info["bar"], 0, False
        while not truncated:
            _, _, _, truncated, info = env.step(0)
            steps += 1
        return start, steps, info["bar"]

    starts = set()
    for seed in range(20):
        start, steps, last = episode(seed)
        assert steps == 50 and 20 <= start and last == start + 49 <= 200
        starts.add(start)
        assert episode(seed)[0] == start  # reproducible
    assert len(starts) > 5

    short = TradingEnv(random_bars, cfg, (20, 29), mode="train")  # clipped to the data
    short.reset(seed=0)
    assert short.episode_steps == 10


def test_rejects_bad_input(random_bars, make_bars):
    env = TradingEnv(random_bars)
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(2)
    bad = random_bars.copy()
    bad.iloc[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TradingEnv(bad)
    with pytest.raises(ValueError, match="missing"):
        TradingEnv(random_bars.drop(columns=["volume"]))
    with pytest.raises(ValueError):
        EnvConfig(transaction_cost_bps=-1)
