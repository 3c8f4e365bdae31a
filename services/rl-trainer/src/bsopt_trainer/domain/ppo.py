"""Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347) with Generalized
Advantage Estimation (Schulman et al. 2015, arXiv:1506.02438) for discrete actions.

The training loop follows CleanRL's single-file ``ppo.py`` (rollout storage, GAE, clipped
surrogate and value losses, entropy bonus, global gradient clipping, optional KL early
stop, linear learning-rate annealing, the ``b_`` / ``mb_`` naming and the namespaced
metrics), packaged as a function that returns a checkpointable
:class:`~bsopt_trainer.domain.policy.TrainedPolicy`. GAE is :func:`compute_gae`.
One deliberate difference: an episode that ends by *truncation* (time limit or end of
data) is bootstrapped with ``gamma * V(final_obs)`` added to its last reward, as in
Stable-Baselines3, instead of being treated as terminal.

Shapes: ``E = num_envs``, ``T = num_steps``, ``O = observation shape`` (``(W, F)``),
``N = batch_size = T * E``, ``M = minibatch_size``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .extractors import make_extractor
from .policy import ActorCritic, TrainedPolicy
from .ppo_config import PPOConfig

__all__ = ["PPOConfig", "compute_gae", "train_ppo"]


@dataclass
class _EnvPool:
    """``E`` environments stepped in a plain loop; a finished env is reset at once and its
    final observation is handed back for bootstrapping.

    Kept instead of ``gym.vector.SyncVectorEnv(..., autoreset_mode=AutoresetMode.SAME_STEP)``,
    which yields exactly the same transitions (compared step by step on the GOOGL training
    bars; a training through an adapter gave bit-identical weights), because:

    * it steps faster: 8 TradingEnvs x 4096 random actions on the default GOOGL training
      window (gymnasium 1.4.0, shared 2-core CPU, median of 5 runs, 3 sessions): pool
      58-69k env steps/s, SyncVectorEnv 33-37k, i.e. 1.8-2.0x (SyncVectorEnv assembles
      per-key info arrays every step). In a whole training the network dominates and the
      difference is within noise (8192 steps: MLP 0.96-1.09x, Transformer 0.98x);
    * it saves no code: the loop would still need the final observation of *truncated*
      (not terminated) envs (``info["final_obs"]`` masked by ``info["_final_obs"] &
      truncated & ~terminated``) and the return and length of each finished episode;
    * it has no mode to get wrong: gymnasium 1.x defaults to NEXT_STEP autoreset (one
      dummy step with reward 0 after every episode end), which would silently feed fake
      transitions into training if the mode were forgotten or changed by an upgrade.

    Switch to a vector env when environments get costly enough for ``AsyncVectorEnv``.
    """

    envs: list[gym.Env]
    episode_returns: np.ndarray = field(init=False)
    episode_lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.episode_returns = np.zeros(len(self.envs))
        self.episode_lengths = np.zeros(len(self.envs), dtype=np.int64)

    def reset(self, seed: int) -> np.ndarray:
        """-> observations ``(E, *O)``; env ``i`` is seeded with ``seed + i``."""
        return np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)])

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray], list[tuple[float, int]]]:
        """``actions`` ``(E,)`` -> ``(next_obs (E, *O), rewards (E,), terminated (E,),
        truncated (E,), final_obs {env index: obs O} for truncated envs,
        finished episodes [(return, length)])``."""
        n = len(self.envs)
        obs: list[np.ndarray] = []
        rewards = np.zeros(n, dtype=np.float32)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        final_obs: dict[int, np.ndarray] = {}
        finished: list[tuple[float, int]] = []
        for i, env in enumerate(self.envs):
            o, r, term, trunc, _ = env.step(int(actions[i]))
            rewards[i], terminated[i], truncated[i] = r, term, trunc
            self.episode_returns[i] += r
            self.episode_lengths[i] += 1
            if term or trunc:
                if trunc and not term:
                    final_obs[i] = o
                finished.append((float(self.episode_returns[i]), int(self.episode_lengths[i])))
                self.episode_returns[i], self.episode_lengths[i] = 0.0, 0
                o, _ = env.reset()
            obs.append(o)  # obs[i]
        return np.stack(obs), rewards, terminated, truncated, final_obs, finished


@contextmanager
def _seeded_torch_rng(seed: int, cudnn_deterministic: bool) -> Iterator[None]:
    """Run the body with torch's CPU RNG seeded with ``seed``, then restore the caller's RNG
    state (and ``cudnn.deterministic``).

    Only torch's CPU generator is forked and seeded: the weight initialisation (and dropout,
    when an extractor uses it) draw from it, so they are a function of ``seed`` alone. The
    process-global ``random`` and ``numpy.random`` streams are not touched: OpenTelemetry
    draws trace and span ids from ``random``, and re-seeding it made two jobs with one seed
    publish the same ``traceparent``. While the body runs, another thread drawing from
    torch's CPU RNG would shift the dropout masks and be rewound at the end; nothing in this
    service does.
    """
    previous_deterministic = torch.backends.cudnn.deterministic
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        torch.backends.cudnn.deterministic = cudnn_deterministic
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic = previous_deterministic


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    next_done: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation over one rollout (Schulman et al. 2015,
    arXiv:1506.02438, Section 3, eq. 16) and the value targets.

    Arguments, ``T`` steps of ``E`` envs, all floating tensors of one dtype (float32 in
    training):

    * ``rewards`` ``(T, E)``: reward of the step taken from ``obs[t]``.
    * ``values`` ``(T, E)``: ``V(obs[t])``.
    * ``dones`` ``(T, E)``: 1.0 where ``obs[t]`` *starts a new episode* (the step before it
      ended one; always 0 at ``t = 0`` of the first rollout), else 0.0.
    * ``next_value`` ``(E,)``: ``V`` of the observation after the last step.
    * ``next_done`` ``(E,)``: 1.0 where that observation starts a new episode.

    With ``V_T = next_value`` and ``d_T = next_done``, backwards from ``t = T - 1``::

        delta_t = r_t + gamma * V_{t+1} * (1 - d_{t+1}) - V_t
        A_t     = delta_t + gamma * gae_lambda * (1 - d_{t+1}) * A_{t+1}      (A_T = 0)
        R_t     = A_t + V_t

    so neither the TD error nor the sum crosses an episode boundary. ``gae_lambda = 0``
    gives the one-step TD error (eq. 17) and ``gae_lambda = 1`` the discounted return minus
    ``V_t`` (eq. 18), bootstrapped with ``V_T`` at the rollout's end.

    Every episode end is cut here, terminal or truncated. A *truncated* episode (time limit,
    end of data) is not terminal: :func:`train_ppo` adds ``gamma * V(final_obs)`` to its
    last reward before calling this function (as Stable-Baselines3 does), so its last
    ``delta`` is ``r + gamma * V(final_obs) - V_t``.

    Returns ``(advantages (T, E), returns (T, E))`` in the input dtype. Raises ValueError
    for mismatched shapes or dtypes, or ``gamma`` / ``gae_lambda`` outside ``[0, 1]``.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (T, E), got shape {tuple(rewards.shape)}")
    T, E = rewards.shape
    expected = {"values": (T, E), "dones": (T, E), "next_value": (E,), "next_done": (E,)}
    given = {"values": values, "dones": dones, "next_value": next_value, "next_done": next_done}
    for name, tensor in given.items():
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]}, got {tuple(tensor.shape)}")
        if tensor.dtype != rewards.dtype or not tensor.is_floating_point():
            raise ValueError(f"{name} has dtype {tensor.dtype}; all inputs must share one floating dtype")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= gae_lambda <= 1.0):
        raise ValueError(f"gamma and gae_lambda must be in [0, 1], got {gamma}, {gae_lambda}")

    advantages = torch.zeros_like(rewards)  # (T, E)
    lastgaelam = torch.zeros_like(next_value)  # (E,)  A_{t+1}
    for t in reversed(range(T)):
        if t == T - 1:
            nextnonterminal, nextvalues = 1.0 - next_done, next_value
        else:
            nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
        advantages[t] = lastgaelam
    return advantages, advantages + values


def train_ppo(
    config: PPOConfig,
    make_env: Callable[[int], gym.Env],
    extractor: str,
    extractor_kwargs: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainedPolicy:
    """Train an actor-critic with PPO on ``config.num_envs`` envs built by ``make_env(i)``.

    Envs must have a ``Box`` observation space of shape ``(W, F)`` and a ``Discrete``
    action space. ``progress(global_step, config.trained_timesteps)`` is called after
    every iteration; an exception raised from it aborts training (use it to cancel).
    Runs on CPU with ``torch.set_num_threads(config.torch_threads)`` (restored after).
    One ``config.seed`` gives the same weights and metrics run after run, whatever the
    process-global RNGs hold; none of them is left changed (see :attr:`PPOConfig.seed`).
    Raises ValueError for non-JSON ``extractor_kwargs`` or unsuitable env spaces.
    """
    kwargs = dict(extractor_kwargs or {})
    try:
        json.dumps(kwargs)
    except TypeError as exc:
        raise ValueError(f"extractor_kwargs must be JSON-serialisable: {exc}") from None

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    envs: list[gym.Env] = []
    try:
        # ---- seeding (once), before anything random is built (see _seeded_torch_rng) --
        with _seeded_torch_rng(config.seed, config.torch_deterministic):
            envs.extend(make_env(i) for i in range(config.num_envs))
            return _train(config, envs, extractor, kwargs, progress)
    finally:
        torch.set_num_threads(previous_threads)
        for env in envs:
            env.close()


def _train(
    config: PPOConfig,
    envs: list[gym.Env],
    extractor_name: str,
    extractor_kwargs: dict[str, Any],
    progress: Callable[[int, int], None] | None,
) -> TrainedPolicy:
    # Private streams for action sampling and minibatch shuffling, so that other users of
    # the global RNGs in the process cannot change a training run.
    sample_gen = torch.Generator().manual_seed(config.seed)
    shuffle_rng = np.random.default_rng(config.seed)

    obs_space, act_space = envs[0].observation_space, envs[0].action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 2:
        raise ValueError(f"envs need a Box observation space of shape (W, F), got {obs_space}")
    if not isinstance(act_space, gym.spaces.Discrete):
        raise ValueError(f"envs need a Discrete action space, got {act_space}")
    for env in envs[1:]:
        if env.observation_space.shape != obs_space.shape or env.action_space != act_space:
            raise ValueError("all envs must share observation and action spaces")
    obs_shape = tuple(obs_space.shape)
    n_actions = int(act_space.n)
    pool = _EnvPool(envs)

    model = ActorCritic(make_extractor(extractor_name, obs_shape, **extractor_kwargs), n_actions)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, eps=1e-5)

    E, T = config.num_envs, config.num_steps
    # ---- rollout storage, preallocated -------------------------------------------
    obs = torch.zeros((T, E, *obs_shape))  # (T, E, *O)
    actions = torch.zeros((T, E), dtype=torch.long)  # (T, E)
    logprobs = torch.zeros((T, E))  # (T, E)
    rewards = torch.zeros((T, E))  # (T, E)   scaled, truncation-bootstrapped
    dones = torch.zeros((T, E))  # (T, E)   1 where obs[t] starts a new episode
    values = torch.zeros((T, E))  # (T, E)

    global_step = 0
    total = config.trained_timesteps
    start_time = time.perf_counter()
    next_obs = torch.from_numpy(pool.reset(config.seed))  # (E, *O)
    next_done = torch.zeros(E)  # (E,)
    history: list[dict[str, float]] = []
    metrics: dict[str, float] = {}

    for iteration in range(1, config.num_iterations + 1):
        if config.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / config.num_iterations
            optimizer.param_groups[0]["lr"] = frac * config.learning_rate
        finished: list[tuple[float, int]] = []

        # ---- rollout -----------------------------------------------------------------
        model.train()
        for step in range(T):
            global_step += E
            obs[step] = next_obs
            dones[step] = next_done
            with torch.no_grad():
                action, logprob, _, value = model.get_action_and_value(next_obs, generator=sample_gen)
            actions[step], logprobs[step], values[step] = action, logprob, value

            o, r, term, trunc, final_obs, done_eps = pool.step(action.numpy())
            finished.extend(done_eps)
            r_scaled = torch.from_numpy(r) * config.reward_scale  # (E,)
            if final_obs:
                idx = sorted(final_obs)
                with torch.no_grad():
                    v_final = model.get_value(torch.from_numpy(np.stack([final_obs[i] for i in idx])))
                r_scaled[idx] += config.gamma * v_final
            rewards[step] = r_scaled
            next_obs = torch.from_numpy(o)
            next_done = torch.from_numpy((term | trunc).astype(np.float32))

        # ---- GAE ---------------------------------------------------------------------
        with torch.no_grad():
            next_value = model.get_value(next_obs)  # (E,)
            advantages, returns = compute_gae(
                rewards, values, dones, next_value, next_done, config.gamma, config.gae_lambda
            )  # (T, E), (T, E)

        # ---- flatten the batch -------------------------------------------------------
        b_obs = obs.reshape((-1, *obs_shape))  # (N, *O)
        b_logprobs = logprobs.reshape(-1)  # (N,)
        b_actions = actions.reshape(-1)  # (N,)
        b_advantages = advantages.reshape(-1)  # (N,)
        b_returns = returns.reshape(-1)  # (N,)
        b_values = values.reshape(-1)  # (N,)

        # ---- optimise ----------------------------------------------------------------
        b_inds = np.arange(config.batch_size)
        clipfracs: list[float] = []
        approx_kl = old_approx_kl = torch.tensor(0.0)
        pg_loss = v_loss = entropy_loss = torch.tensor(0.0)
        for _epoch in range(config.update_epochs):
            shuffle_rng.shuffle(b_inds)
            for start in range(0, config.batch_size, config.minibatch_size):
                mb_inds = torch.from_numpy(b_inds[start : start + config.minibatch_size])  # (M,)
                _, newlogprob, entropy, newvalue = model.get_action_and_value(
                    b_obs[mb_inds], b_actions[mb_inds]
                )
                logratio = newlogprob - b_logprobs[mb_inds]  # (M,)
                ratio = logratio.exp()
                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > config.clip_coef).float().mean().item())

                mb_advantages = b_advantages[mb_inds]  # (M,)
                if config.norm_adv and mb_advantages.numel() > 1:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - config.clip_coef, 1 + config.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                if config.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds], -config.clip_coef, config.clip_coef
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - config.ent_coef * entropy_loss + v_loss * config.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()

            if config.target_kl is not None and approx_kl.item() > config.target_kl:
                break

        y_pred, y_true = b_values.numpy(), b_returns.numpy()
        var_y = np.var(y_true)
        explained_var = float("nan") if var_y == 0 else float(1 - np.var(y_true - y_pred) / var_y)
        elapsed = time.perf_counter() - start_time
        metrics = {
            "global_step": float(global_step),
            "charts/learning_rate": float(optimizer.param_groups[0]["lr"]),
            "charts/SPS": global_step / elapsed if elapsed > 0 else float("nan"),
            "charts/episodic_return": float(np.mean([f[0] for f in finished])) if finished else float("nan"),
            "charts/episodic_length": float(np.mean([f[1] for f in finished])) if finished else float("nan"),
            "charts/long_fraction": float(actions.float().mean()),
            "losses/value_loss": float(v_loss.item()),
            "losses/policy_loss": float(pg_loss.item()),
            "losses/entropy": float(entropy_loss.item()),
            "losses/old_approx_kl": float(old_approx_kl.item()),
            "losses/approx_kl": float(approx_kl.item()),
            "losses/clipfrac": float(np.mean(clipfracs)) if clipfracs else 0.0,
            "losses/explained_variance": explained_var,
        }
        history.append(metrics)
        if progress is not None:
            progress(global_step, total)

    return TrainedPolicy(
        model, extractor_name, extractor_kwargs, obs_shape, n_actions, config,
        metrics=metrics, history=history,
    )
