from __future__ import annotations

import numpy as np
import pytest
import torch

from bsopt_trainer.domain.env import EnvConfig, TradingEnv, full_decision_range
from bsopt_trainer.domain.evaluation import buy_and_hold, evaluate_policy
from bsopt_trainer.domain.ppo import PPOConfig, TrainedPolicy, train_ppo

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


def test_training_is_reproducible_and_reports_progress(random_bars):
    calls = []
    cfg = PPOConfig(total_timesteps=512, seed=3, **SMALL)
    a = train_ppo(cfg, _make_env(random_bars), "mlp", {"hidden": 16}, lambda d, t: calls.append((d, t)))
    b = train_ppo(cfg, _make_env(random_bars), "mlp", {"hidden": 16})
    assert calls == [(128, 512), (256, 512), (384, 512), (512, 512)]
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    keys = ("charts/SPS", "losses/approx_kl", "losses/value_loss", "losses/policy_loss", "losses/entropy")
    for key in keys:
        assert key in a.metrics and np.isfinite(a.metrics[key])


def test_progress_exception_aborts_training(random_bars):
    def cancel(done, total):
        raise KeyboardInterrupt("cancelled")

    cfg = PPOConfig(total_timesteps=512, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        train_ppo(cfg, _make_env(random_bars), "mlp", {}, progress=cancel)


@pytest.mark.parametrize("extractor", ["transformer", "mlp"])
def test_checkpoint_round_trip(tmp_path, random_bars, extractor):
    cfg = PPOConfig(total_timesteps=256, seed=1, **SMALL)
    kwargs = {"d_model": 16, "n_heads": 2} if extractor == "transformer" else {"hidden": 32}
    policy = train_ppo(cfg, _make_env(random_bars), extractor, kwargs)
    policy.metadata["symbol"] = "TEST"
    path = policy.save(tmp_path / "sub" / "policy.pt")
    loaded = TrainedPolicy.load(path)

    obs = np.random.default_rng(0).normal(size=(64, 16, 5)).astype(np.float32)
    obs[..., -1] = np.random.default_rng(1).integers(0, 2, size=(64, 16))
    actions = policy.act(obs)
    assert actions.shape == (64,) and actions.dtype == np.int64
    np.testing.assert_array_equal(loaded.act(obs), actions)
    assert loaded.extractor == extractor and loaded.extractor_kwargs == kwargs
    assert loaded.config == cfg and loaded.observation_shape == (16, 5)
    assert loaded.metadata == {"symbol": "TEST"}
    assert loaded.metrics.keys() == policy.metrics.keys()


def test_act_and_load_validate_input(tmp_path, random_bars):
    cfg = PPOConfig(total_timesteps=128, **SMALL)
    policy = train_ppo(cfg, _make_env(random_bars), "mlp", {})
    with pytest.raises(ValueError, match="shape"):
        policy.act(np.zeros((16, 5), dtype=np.float32))
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint"):
        TrainedPolicy.load(bogus)
    with pytest.raises(ValueError, match="JSON"):
        train_ppo(cfg, _make_env(random_bars), "mlp", {"hidden": object()})
