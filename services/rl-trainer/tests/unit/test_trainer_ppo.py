from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from opentelemetry.sdk.trace import TracerProvider

from bsopt_trainer.domain.env import EnvConfig, TradingEnv, full_decision_range
from bsopt_trainer.domain.evaluation import buy_and_hold, evaluate_policy
from bsopt_trainer.domain.ppo import PPOConfig, train_ppo

SMALL = {"num_envs": 4, "num_steps": 32, "num_minibatches": 2, "update_epochs": 2}


def test_config_derived_sizes():
    cfg = PPOConfig(total_timesteps=10_000, num_envs=8, num_steps=128, num_minibatches=4)
    assert cfg.batch_size == 1024
    assert cfg.minibatch_size == 256
    assert cfg.num_iterations == 9
    assert cfg.trained_timesteps == 9216
    assert PPOConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_envs": 3, "num_steps": 5, "num_minibatches": 4}, "divisible"),
        ({"total_timesteps": 100, "num_envs": 8, "num_steps": 128}, "smaller than one rollout"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"gamma": 1.5}, "gamma"),
        ({"num_envs": 0}, "num_envs"),
        ({"target_kl": -0.1}, "target_kl"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PPOConfig(**kwargs)
    with pytest.raises(ValueError, match="unknown"):
        PPOConfig.from_dict({"batch": 3})


def _make_env(bars, window=16):
    cfg = EnvConfig(window_size=window, episode_length=128, transaction_cost_bps=10.0)
    return lambda i: TradingEnv(bars, cfg, mode="train")


@pytest.mark.parametrize("extractor", ["transformer", "mlp"])
def test_learns_a_steady_uptrend(make_trending_bars, extractor):
    """Drift +0.3 %/bar with 0.5 % noise: being long is right almost always."""
    train = make_trending_bars(400, drift=0.003, noise=0.005, seed=1)
    test = make_trending_bars(200, drift=0.003, noise=0.005, seed=2)
    cfg = PPOConfig(total_timesteps=2048, num_envs=8, num_steps=64, learning_rate=1e-3, seed=0)
    policy = train_ppo(cfg, _make_env(train), extractor, {})
    metrics, positions = evaluate_policy(policy, test, full_decision_range(len(test), 16), 16, 10.0)
    assert positions.mean() > 0.9
    assert metrics.total_return > 0.0  # flat earns exactly 0
    # The sampling policy moved towards long during training.
    assert policy.history[-1]["charts/long_fraction"] > policy.history[0]["charts/long_fraction"] + 0.15


def test_learns_to_stay_out_of_a_downtrend(make_trending_bars):
    train = make_trending_bars(400, drift=-0.003, noise=0.005, seed=3)
    test = make_trending_bars(200, drift=-0.003, noise=0.005, seed=4)
    cfg = PPOConfig(total_timesteps=2048, num_envs=8, num_steps=64, learning_rate=1e-3, seed=0)
    policy = train_ppo(cfg, _make_env(train), "mlp", {})
    dr = full_decision_range(len(test), 16)
    metrics, positions = evaluate_policy(policy, test, dr, 16, 10.0)
    assert positions.mean() < 0.1
    assert metrics.total_return > buy_and_hold(test, dr, 10.0).total_return


def _without_timing(history):
    return [{k: v for k, v in m.items() if k != "charts/SPS"} for m in history]


def _same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_is_reproducible_and_reports_progress(random_bars):
    calls = []
    cfg = PPOConfig(total_timesteps=512, seed=3, **SMALL)
    a = train_ppo(cfg, _make_env(random_bars), "mlp", {"hidden": 16}, lambda d, t: calls.append((d, t)))
    # Whatever the process-global RNGs hold, one seed gives one run.
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    torch.rand(10)
    b = train_ppo(cfg, _make_env(random_bars), "mlp", {"hidden": 16})
    assert calls == [(128, 512), (256, 512), (384, 512), (512, 512)]
    assert _same_weights(a, b)
    np.testing.assert_equal(_without_timing(a.history), _without_timing(b.history))  # NaN == NaN here
    keys = ("charts/SPS", "losses/approx_kl", "losses/value_loss", "losses/policy_loss", "losses/entropy")
    for key in keys:
        assert key in a.metrics and np.isfinite(a.metrics[key])

    other_seed = PPOConfig(total_timesteps=512, seed=4, **SMALL)
    c = train_ppo(other_seed, _make_env(random_bars), "mlp", {"hidden": 16})
    assert not _same_weights(a, c)
    assert a.history[-1]["losses/value_loss"] != c.history[-1]["losses/value_loss"]


def test_training_leaves_process_global_rngs_alone(random_bars):
    """OpenTelemetry draws trace ids from ``random``; two jobs with one seed must not
    publish the same trace (``random.seed(seed)`` in training used to rewind it)."""
    tracer = TracerProvider().get_tracer(__name__)
    cfg = PPOConfig(total_timesteps=128, seed=0, **SMALL)
    trace_ids = []
    for run in range(3):
        span = tracer.start_span(f"before-run-{run}")  # a root span: a fresh trace id
        trace_ids.append(span.get_span_context().trace_id)
        span.end()
        if run < 2:
            train_ppo(cfg, _make_env(random_bars), "mlp", {"hidden": 8})
    assert len(set(trace_ids)) == 3

    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    deterministic = torch.backends.cudnn.deterministic
    dropout = {"d_model": 8, "n_heads": 2, "n_layers": 1, "dropout": 0.1}  # dropout draws from torch's RNG
    cfg = PPOConfig(total_timesteps=128, seed=5, torch_deterministic=not deterministic, **SMALL)
    train_ppo(cfg, _make_env(random_bars), "transformer", dropout)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert torch.backends.cudnn.deterministic == deterministic


def test_progress_exception_aborts_training(random_bars):
    def cancel(done, total):
        raise KeyboardInterrupt("cancelled")

    cfg = PPOConfig(total_timesteps=512, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        train_ppo(cfg, _make_env(random_bars), "mlp", {}, progress=cancel)


