"""Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347) with Generalized
Advantage Estimation (Schulman et al. 2015, arXiv:1506.02438) for discrete actions.

The training loop follows CleanRL's single-file ``ppo.py`` (rollout storage, GAE, clipped
surrogate and value losses, entropy bonus, global gradient clipping, optional KL early
stop, linear learning-rate annealing, the ``b_`` / ``mb_`` naming and the namespaced
metrics), packaged as a function that returns a checkpointable :class:`TrainedPolicy`.
One deliberate difference: an episode that ends by *truncation* (time limit or end of
data) is bootstrapped with ``gamma * V(final_obs)`` added to its last reward, as in
Stable-Baselines3, instead of being treated as terminal.

Shapes: ``E = num_envs``, ``T = num_steps``, ``O = observation shape`` (``(W, F)``),
``N = batch_size = T * E``, ``M = minibatch_size``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from .extractors import FeaturesExtractor, make_extractor

CHECKPOINT_FORMAT = "bsopt-ppo-policy/1"


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters. Derived sizes (:attr:`batch_size`, :attr:`minibatch_size`,
    :attr:`num_iterations`) are computed here and nowhere else."""

    total_timesteps: int = 100_000
    """Environment steps budget (summed over envs); rounded down to whole iterations."""
    num_envs: int = 8
    """Parallel environments stepped in lockstep (``E``)."""
    num_steps: int = 128
    """Steps per environment per rollout (``T``)."""
    learning_rate: float = 3e-4
    """Adam learning rate at the start of training."""
    anneal_lr: bool = True
    """Linearly anneal the learning rate to 0 over the iterations."""
    gamma: float = 0.9
    """Discount factor. Low on purpose: a daily position mostly affects the next reward
    (and the cost of the next change), and noisy long horizons only add variance."""
    gae_lambda: float = 0.95
    """GAE lambda (bias/variance trade-off of the advantage estimate)."""
    num_minibatches: int = 4
    """Minibatches per epoch; must divide :attr:`batch_size`."""
    update_epochs: int = 4
    """Optimisation epochs over each rollout batch."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    clip_coef: float = 0.2
    """Surrogate clipping coefficient epsilon."""
    clip_vloss: bool = True
    """Clip the value-function update around the rollout values (CleanRL style)."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clipping threshold."""
    target_kl: float | None = None
    """Stop the update epochs of an iteration once approx. KL exceeds this (None: never)."""
    reward_scale: float = 100.0
    """Rewards are multiplied by this before GAE (daily log returns are ~1e-2; scaling
    gives the value head targets of order 1). Reported episodic returns are unscaled."""
    seed: int = 0
    """Seeds ``random``, ``numpy``, ``torch`` and env ``i`` (with ``seed + i``)."""
    torch_threads: int = 1
    """``torch.set_num_threads`` during training (restored afterwards). 1 by default: the
    networks are tiny, and on a 2-core machine shared with other processes two OpenMP
    threads spin-wait on each other (measured 4-5x slower than one thread under load,
    only ~1.4x faster on an idle machine)."""
    torch_deterministic: bool = True
    """Set ``torch.backends.cudnn.deterministic`` (CPU kernels are deterministic anyway)."""

    def __post_init__(self) -> None:
        positive = (
            "total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "torch_threads"
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0):
            raise ValueError(f"gamma and gae_lambda must be in [0, 1], got {self.gamma}, {self.gae_lambda}")
        for name in ("clip_coef", "ent_coef", "vf_coef", "max_grad_norm", "reward_scale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f"target_kl must be > 0 or None, got {self.target_kl}")
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"batch_size = num_envs * num_steps = {self.batch_size} is not divisible by "
                f"num_minibatches = {self.num_minibatches}"
            )
        if self.num_iterations < 1:
            raise ValueError(
                f"total_timesteps={self.total_timesteps} is smaller than one rollout batch "
                f"(num_envs * num_steps = {self.batch_size})"
            )

    @property
    def batch_size(self) -> int:
        """``N = num_envs * num_steps``: transitions per rollout."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """``M = batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        """Rollout/update iterations: ``total_timesteps // batch_size``."""
        return self.total_timesteps // self.batch_size

    @property
    def trained_timesteps(self) -> int:
        """Environment steps actually taken: ``num_iterations * batch_size``."""
        return self.num_iterations * self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PPOConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PPOConfig fields {unknown}")
        return cls(**dict(data))


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weight init with gain ``std`` and constant bias (CleanRL's ``layer_init``)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class ActorCritic(nn.Module):
    """Shared extractor, then a linear policy head (logits) and a linear value head."""

    def __init__(self, extractor: FeaturesExtractor, n_actions: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.policy_head = layer_init(nn.Linear(extractor.features_dim, n_actions), std=0.01)
        self.value_head = layer_init(nn.Linear(extractor.features_dim, 1), std=1.0)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` ``(B, W, F)`` -> action logits ``(B, n_actions)``."""
        return self.policy_head(self.extractor(obs))

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` ``(B, W, F)`` -> state values ``(B,)``."""
        return self.value_head(self.extractor(obs)).squeeze(-1)

    def get_action_and_value(
        self,
        obs: torch.Tensor,
        action: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``obs`` ``(B, W, F)``, optional ``action`` ``(B,)`` int64 -> ``(action (B,),
        log_prob (B,), entropy (B,), value (B,))``; samples the action (from
        ``generator`` when given) when ``action`` is None."""
        hidden = self.extractor(obs)  # (B, D)
        dist = Categorical(logits=self.policy_head(hidden))
        if action is None:
            action = torch.multinomial(dist.probs, 1, generator=generator).squeeze(-1)  # (B,)
        return action, dist.log_prob(action), dist.entropy(), self.value_head(hidden).squeeze(-1)


class TrainedPolicy:
    """A trained actor-critic plus everything needed to rebuild it from a checkpoint.

    :meth:`act` is deterministic (argmax of the logits). A checkpoint is one
    ``torch.save`` file holding the ``state_dict`` and a JSON string with the format,
    extractor name and kwargs, observation shape, PPO config, final metrics and free-form
    ``metadata``; it is loaded with ``weights_only=True``.
    """

    def __init__(
        self,
        model: ActorCritic,
        extractor: str,
        extractor_kwargs: Mapping[str, Any],
        observation_shape: tuple[int, ...],
        n_actions: int,
        config: PPOConfig,
        metrics: Mapping[str, float] | None = None,
        metadata: Mapping[str, Any] | None = None,
        history: list[dict[str, float]] | None = None,
    ) -> None:
        self.model = model.eval()
        self.extractor = extractor
        self.extractor_kwargs = dict(extractor_kwargs)
        self.observation_shape = tuple(int(x) for x in observation_shape)
        self.n_actions = int(n_actions)
        self.config = config
        self.metrics: dict[str, float] = dict(metrics or {})
        """Metrics of the last training iteration (``charts/...``, ``losses/...``)."""
        self.metadata: dict[str, Any] = dict(metadata or {})
        """JSON-serialisable facts about the training (set by the caller, e.g. the job)."""
        self.history: list[dict[str, float]] = list(history or [])
        """Per-iteration metrics (not saved in checkpoints)."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """``obs`` ``(B, W, F)`` float32 -> greedy actions ``(B,)`` int64."""
        arr = np.asarray(obs, dtype=np.float32)
        if arr.ndim != 3 or arr.shape[1:] != self.observation_shape:
            shape = ", ".join(map(str, self.observation_shape))
            raise ValueError(f"expected observations of shape (B, {shape}), got {arr.shape}")
        with torch.no_grad():
            logits = self.model.logits(torch.from_numpy(np.ascontiguousarray(arr)))
        return logits.argmax(dim=-1).numpy().astype(np.int64)

    def spec(self) -> dict[str, Any]:
        """The JSON part of a checkpoint."""
        return {
            "format": CHECKPOINT_FORMAT,
            "extractor": self.extractor,
            "extractor_kwargs": self.extractor_kwargs,
            "observation_shape": list(self.observation_shape),
            "n_actions": self.n_actions,
            "config": self.config.to_dict(),
            "metrics": self.metrics,
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the checkpoint to ``path`` atomically (parent directories are created)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = {"spec": json.dumps(self.spec(), sort_keys=True), "state_dict": self.model.state_dict()}
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        torch.save(payload, tmp)
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainedPolicy:
        """Rebuild a policy saved by :meth:`save`; ValueError if it is not such a checkpoint."""
        p = Path(path)
        try:
            payload = torch.load(p, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # unpickling errors come in many types
            raise ValueError(f"{p}: not a readable policy checkpoint: {exc}") from exc
        if not isinstance(payload, dict) or "spec" not in payload or "state_dict" not in payload:
            raise ValueError(f"{p}: not a policy checkpoint (missing spec/state_dict)")
        spec = json.loads(payload["spec"])
        if spec.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{p}: checkpoint format {spec.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        shape = tuple(spec["observation_shape"])
        extractor = make_extractor(spec["extractor"], shape, **spec["extractor_kwargs"])
        model = ActorCritic(extractor, int(spec["n_actions"]))
        try:
            model.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise ValueError(f"{p}: weights do not fit the recorded architecture: {exc}") from None
        return cls(
            model,
            spec["extractor"],
            spec["extractor_kwargs"],
            shape,
            int(spec["n_actions"]),
            PPOConfig.from_dict(spec["config"]),
            metrics=spec.get("metrics"),
            metadata=spec.get("metadata"),
        )


@dataclass
class _EnvPool:
    """``E`` environments stepped in a plain loop; a finished env is reset at once and its
    final observation is handed back for bootstrapping."""

    envs: list[gym.Env]
    episode_returns: np.ndarray = field(init=False)
    episode_lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.episode_returns = np.zeros(len(self.envs))
        self.episode_lengths = np.zeros(len(self.envs), dtype=np.int64)

    def reset(self, seed: int) -> np.ndarray:
        """-> observations ``(E, *O)``; env ``i`` is seeded with ``seed + i``."""
        return np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict, list]:
        """``actions`` ``(E,)`` -> ``(next_obs (E, *O), rewards (E,), terminated (E,),
        truncated (E,), final_obs {env index: obs O} for truncated envs,
        finished episodes [(return, length)])``."""
        n = len(self.envs)
        obs, rewards = [None] * n, np.zeros(n, dtype=np.float32)
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
            obs[i] = o
        return np.stack(obs), rewards, terminated, truncated, final_obs, finished


def seed_everything(seed: int, torch_deterministic: bool = True) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (process-global)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic


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
        # ---- seeding (once), before anything random is built ----------------------
        seed_everything(config.seed, config.torch_deterministic)
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
    obs = torch.zeros((T, E) + obs_shape)  # (T, E, *O)
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
            advantages = torch.zeros_like(rewards)  # (T, E)
            lastgaelam = torch.zeros(E)
            for t in reversed(range(T)):
                if t == T - 1:
                    nextnonterminal, nextvalues = 1.0 - next_done, next_value
                else:
                    nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
                delta = rewards[t] + config.gamma * nextvalues * nextnonterminal - values[t]
                lastgaelam = delta + config.gamma * config.gae_lambda * nextnonterminal * lastgaelam
                advantages[t] = lastgaelam
            returns = advantages + values  # (T, E)

        # ---- flatten the batch -------------------------------------------------------
        b_obs = obs.reshape((-1,) + obs_shape)  # (N, *O)
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
