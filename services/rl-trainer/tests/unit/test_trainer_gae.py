"""Generalized Advantage Estimation (arXiv:1506.02438) against hand-computed numbers, in the
manner of Stable-Baselines3's ``tests/test_gae.py``.

Conventions of :func:`compute_gae`: ``dones[t] = 1`` where ``obs[t]`` starts a new episode;
``next_value`` / ``next_done`` describe the observation after the last step. The numbers are
chosen to be exact in binary, so most checks compare exactly in float64.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from bsopt_trainer.domain import ppo
from bsopt_trainer.domain.ppo import PPOConfig, compute_gae, train_ppo


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _gae(rewards, values, dones, next_value, next_done, gamma, lam):
    return compute_gae(_t(rewards), _t(values), _t(dones), _t(next_value), _t(next_done), gamma, lam)


# One env, three steps, no episode end; the rollout is cut after step 2 and bootstrapped
# with next_value = 2.
REWARDS_1 = [[1.0], [2.0], [3.0]]
VALUES_1 = [[0.5], [1.0], [1.5]]
NO_DONES_1 = [[0.0], [0.0], [0.0]]


def test_single_env_without_episode_end():
    adv, ret = _gae(REWARDS_1, VALUES_1, NO_DONES_1, [2.0], [0.0], gamma=0.5, lam=0.5)
    # gamma * lambda = 0.25
    # delta_2 = 3 + 0.5 * 2.0 - 1.5 = 2.5     A_2 = 2.5
    # delta_1 = 2 + 0.5 * 1.5 - 1.0 = 1.75    A_1 = 1.75 + 0.25 * 2.5   = 2.375
    # delta_0 = 1 + 0.5 * 1.0 - 0.5 = 1.0     A_0 = 1.0  + 0.25 * 2.375 = 1.59375
    # R_t = A_t + V_t
    assert adv.tolist() == [[1.59375], [2.375], [2.5]]
    assert ret.tolist() == [[2.09375], [3.375], [4.0]]
    assert adv.dtype == ret.dtype == torch.float64


def test_terminal_episode_end_mid_rollout():
    # The step taken from obs[1] ends an episode (terminated): obs[2] starts a new one, so
    # dones[2] = 1 and step 1 sees neither V(obs[2]) nor A_2.
    adv, ret = _gae(
        rewards=[[1.0], [1.0], [1.0], [1.0]],
        values=[[1.0], [2.0], [4.0], [2.0]],
        dones=[[0.0], [0.0], [1.0], [0.0]],
        next_value=[8.0],
        next_done=[0.0],
        gamma=0.5,
        lam=0.5,
    )
    # t=3: delta = 1 + 0.5 * 8 - 2 = 3                          A_3 = 3
    # t=2: delta = 1 + 0.5 * 2 - 4 = -2                         A_2 = -2 + 0.25 * 3 = -1.25
    # t=1: (1 - dones[2]) = 0: delta = 1 - 2 = -1               A_1 = -1
    # t=0: delta = 1 + 0.5 * 2 - 1 = 1                          A_0 = 1 + 0.25 * -1 = 0.75
    assert adv.tolist() == [[0.75], [-1.0], [-1.25], [3.0]]
    assert ret.tolist() == [[1.75], [1.0], [2.75], [5.0]]


def test_truncated_episode_is_bootstrapped_through_the_reward():
    # Same rollout, but the episode was *truncated* after step 1 with V(final_obs) = 6. The
    # training loop adds gamma * V(final_obs) to that step's reward: r_1 = 1 + 0.5 * 6 = 4.
    adv, ret = _gae(
        rewards=[[1.0], [4.0], [1.0], [1.0]],
        values=[[1.0], [2.0], [4.0], [2.0]],
        dones=[[0.0], [0.0], [1.0], [0.0]],
        next_value=[8.0],
        next_done=[0.0],
        gamma=0.5,
        lam=0.5,
    )
    # t=1: delta = 4 - 2 = 2 (= 1 + 0.5 * V(final_obs) - V_1)    A_1 = 2
    # t=0: delta = 1 + 0.5 * 2 - 1 = 1                           A_0 = 1 + 0.25 * 2 = 1.5
    # Steps 2 and 3 (the next episode) are as in the terminal case.
    assert adv.tolist() == [[1.5], [2.0], [-1.25], [3.0]]
    assert ret.tolist() == [[2.5], [4.0], [2.75], [5.0]]


# Two envs. env 0: no episode end. env 1: its first step ends an episode (dones[1] = 1),
# and so does its last one (next_done = 1), so its next_value = 4 must be ignored.
REWARDS_2 = [[1.0, 3.0], [2.0, -1.0]]
VALUES_2 = [[1.0, 2.0], [1.0, 0.5]]
DONES_2 = [[0.0, 0.0], [0.0, 1.0]]
NEXT_VALUE_2 = [2.0, 4.0]
NEXT_DONE_2 = [0.0, 1.0]


def test_two_envs_are_independent_columns():
    adv, ret = _gae(REWARDS_2, VALUES_2, DONES_2, NEXT_VALUE_2, NEXT_DONE_2, gamma=0.5, lam=0.5)
    # env 0: t=1: delta = 2 + 0.5 * 2 - 1 = 2            A = 2                    R = 3
    #        t=0: delta = 1 + 0.5 * 1 - 1 = 0.5          A = 0.5 + 0.25 * 2 = 1   R = 2
    # env 1: t=1: delta = -1 + 0 - 0.5 = -1.5            A = -1.5                 R = -1
    #        t=0: delta = 3 + 0 - 2 = 1                  A = 1                    R = 3
    assert adv.tolist() == [[1.0, 1.0], [2.0, -1.5]]
    assert ret.tolist() == [[2.0, 3.0], [3.0, -1.0]]
    for e in range(2):  # each env alone gives its column
        a1, r1 = _gae(
            [[row[e]] for row in REWARDS_2], [[row[e]] for row in VALUES_2], [[row[e]] for row in DONES_2],
            NEXT_VALUE_2[e : e + 1], NEXT_DONE_2[e : e + 1], 0.5, 0.5,
        )
        assert a1[:, 0].tolist() == adv[:, e].tolist() and r1[:, 0].tolist() == ret[:, e].tolist()


def test_edge_cases_by_hand():
    # gamma = 0: only the immediate reward counts: R_t = r_t, A_t = r_t - V_t.
    adv, ret = _gae(REWARDS_1, VALUES_1, NO_DONES_1, [2.0], [0.0], gamma=0.0, lam=0.95)
    assert ret.tolist() == [[1.0], [2.0], [3.0]] and adv.tolist() == [[0.5], [1.0], [1.5]]
    # lambda = 0: A_t = delta_t, the one-step TD error (eq. 17): [1.0, 1.75, 2.5] from above.
    adv, _ = _gae(REWARDS_1, VALUES_1, NO_DONES_1, [2.0], [0.0], gamma=0.5, lam=0.0)
    assert adv.tolist() == [[1.0], [1.75], [2.5]]
    # lambda = 1: R_t = discounted return bootstrapped with V_T (eq. 18):
    # R_2 = 3 + 0.5 * 2 = 4, R_1 = 2 + 0.5 * 4 = 4, R_0 = 1 + 0.5 * 4 = 3; A_t = R_t - V_t.
    adv, ret = _gae(REWARDS_1, VALUES_1, NO_DONES_1, [2.0], [0.0], gamma=0.5, lam=1.0)
    assert ret.tolist() == [[3.0], [4.0], [4.0]] and adv.tolist() == [[2.5], [3.0], [2.5]]


def _closed_forms(rewards, values, dones, next_value, next_done, gamma):
    """Forward-sum references, one env at a time: one-step TD errors, and Monte-Carlo returns
    cut at episode ends and bootstrapped with ``next_value`` at the rollout's end."""
    T, E = rewards.shape
    ends = np.vstack([dones[1:], next_done[None]])  # ends[t] = 1: step t ends an episode
    v_next = np.vstack([values[1:], next_value[None]])
    td = rewards + gamma * v_next * (1 - ends) - values
    mc = np.zeros((T, E))
    for e in range(E):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                total += discount * rewards[k, e]
                discount *= gamma
                if ends[k, e]:
                    break
            else:
                total += discount * next_value[e]
            mc[t, e] = total
    return td, mc


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 1.0])
def test_lambda_limits_match_closed_forms(gamma):
    rng = np.random.default_rng(0)
    T, E = 12, 3
    rewards, values = rng.normal(size=(T, E)), rng.normal(size=(T, E))
    dones = (rng.random((T, E)) < 0.25).astype(np.float64)
    dones[0] = 0.0
    next_value, next_done = rng.normal(size=E), np.array([0.0, 1.0, 0.0])
    td, mc = _closed_forms(rewards, values, dones, next_value, next_done, gamma)
    args = (_t(rewards), _t(values), _t(dones), _t(next_value), _t(next_done), gamma)

    adv0, ret0 = compute_gae(*args, 0.0)
    np.testing.assert_allclose(adv0.numpy(), td, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ret0.numpy(), td + values, rtol=0, atol=1e-12)
    adv1, ret1 = compute_gae(*args, 1.0)
    np.testing.assert_allclose(ret1.numpy(), mc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(adv1.numpy(), mc - values, rtol=0, atol=1e-12)
    if gamma == 0.0:  # no discounting at all: the return is the immediate reward
        np.testing.assert_allclose(ret0.numpy(), rewards, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ret1.numpy(), rewards, rtol=0, atol=1e-12)


def test_float32_matches_float64():
    rng = np.random.default_rng(1)
    rewards, values = rng.normal(size=(16, 4)), rng.normal(size=(16, 4))
    dones = (rng.random((16, 4)) < 0.2).astype(np.float64)
    nv, nd = rng.normal(size=4), np.zeros(4)
    a64, r64 = compute_gae(_t(rewards), _t(values), _t(dones), _t(nv), _t(nd), 0.9, 0.95)
    f32 = [torch.tensor(x, dtype=torch.float32) for x in (rewards, values, dones, nv, nd)]
    a32, r32 = compute_gae(*f32, 0.9, 0.95)
    assert a32.dtype == r32.dtype == torch.float32
    np.testing.assert_allclose(a32.numpy(), a64.numpy(), atol=1e-5)
    np.testing.assert_allclose(r32.numpy(), r64.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"rewards": torch.zeros(3)}, "rewards must be"),
        ({"values": torch.zeros(3, 2, dtype=torch.float64)}, "values must have shape"),
        ({"next_value": torch.zeros(2, dtype=torch.float64)}, "next_value must have shape"),
        ({"dones": torch.zeros(3, 1, dtype=torch.float32)}, "dtype"),
        ({"next_done": torch.zeros(1, dtype=torch.int64)}, "dtype"),
        ({"gamma": 1.5}, "gamma"),
        ({"gae_lambda": -0.1}, "gae_lambda"),
    ],
)
def test_rejects_bad_input(change, match):
    kwargs = {
        "rewards": _t(REWARDS_1), "values": _t(VALUES_1), "dones": _t(NO_DONES_1),
        "next_value": _t([2.0]), "next_done": _t([0.0]), "gamma": 0.5, "gae_lambda": 0.5,
    }
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        compute_gae(**kwargs)


class _ConstantEnv(gym.Env):
    """Observation always zeros (so V is one number for a fixed network), reward 1 per step,
    and every episode ends after 3 steps, by termination or by truncation."""

    observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2, 1), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, truncate: bool) -> None:
        self.truncate = truncate
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros((2, 1), dtype=np.float32), {}

    def step(self, action):
        self.steps += 1
        end = self.steps == 3
        obs = np.zeros((2, 1), dtype=np.float32)
        return obs, 1.0, end and not self.truncate, end and self.truncate, {}


@pytest.mark.parametrize("truncate", [False, True])
def test_training_loop_feeds_gae_per_convention(monkeypatch, truncate):
    """One rollout of 9 steps x 2 envs over 3-step episodes, seen from inside the loop."""
    calls = []

    def spy(*args):
        calls.append([a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        return compute_gae(*args)

    monkeypatch.setattr(ppo, "compute_gae", spy)
    cfg = PPOConfig(total_timesteps=18, num_envs=2, num_steps=9, num_minibatches=2, update_epochs=1,
                    reward_scale=1.0, gamma=0.5)
    train_ppo(cfg, lambda i: _ConstantEnv(truncate), "mlp", {"hidden": 4})
    (rewards, values, dones, next_value, next_done, gamma, lam), = calls
    assert (gamma, lam) == (0.5, cfg.gae_lambda)
    # Episodes span steps 0-2, 3-5, 6-8: obs[3] and obs[6] start new ones, and so does the
    # observation after step 8.
    expected_dones = torch.zeros(9, 2)
    expected_dones[[3, 6]] = 1.0
    assert torch.equal(dones, expected_dones) and torch.equal(next_done, torch.ones(2))
    v = values[0, 0]  # every observation is zeros: one value for the whole rollout
    assert torch.equal(values, torch.full((9, 2), v.item()))
    assert torch.equal(next_value, torch.full((2,), v.item()))
    # Terminated: the reward is the env's. Truncated: gamma * V(final_obs) is added to the
    # last reward of each episode (steps 2, 5, 8).
    expected_rewards = torch.ones(9, 2)
    if truncate:
        expected_rewards[[2, 5, 8]] += 0.5 * v
    assert torch.equal(rewards, expected_rewards)
