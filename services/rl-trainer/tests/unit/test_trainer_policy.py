"""Checkpoints: :class:`TrainedPolicy` save/load/act and the checkpoint format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bsopt_trainer.domain.env import EnvConfig, TradingEnv
from bsopt_trainer.domain.policy import CHECKPOINT_FORMAT, TrainedPolicy
from bsopt_trainer.domain.ppo import PPOConfig, train_ppo

SMALL = {"num_envs": 4, "num_steps": 32, "num_minibatches": 2, "update_epochs": 2}


def _make_env(bars, window=16):
    cfg = EnvConfig(window_size=window, episode_length=128, transaction_cost_bps=10.0)
    return lambda i: TradingEnv(bars, cfg, mode="train")


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


def test_checkpoint_format_is_stable(tmp_path, random_bars):
    """Checkpoints written before ``TrainedPolicy`` moved to ``policy.py`` carry the same tag
    and layout; changing either would orphan every saved policy."""
    assert CHECKPOINT_FORMAT == "bsopt-ppo-policy/1"
    policy = train_ppo(PPOConfig(total_timesteps=128, **SMALL), _make_env(random_bars), "mlp", {"hidden": 8})
    payload = torch.load(policy.save(tmp_path / "p.pt"), weights_only=True)
    assert set(payload) == {"spec", "state_dict"}
    spec = json.loads(payload["spec"])
    assert spec["format"] == CHECKPOINT_FORMAT
    assert set(spec) == {
        "format", "extractor", "extractor_kwargs", "observation_shape", "n_actions", "config", "metrics",
        "metadata",
    }
    assert {k.split(".")[0] for k in payload["state_dict"]} == {"extractor", "policy_head", "value_head"}
