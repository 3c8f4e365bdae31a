"""Hyperparameters of :func:`~bsopt_trainer.domain.ppo.train_ppo`.

A module of its own so that both the training loop (:mod:`~bsopt_trainer.domain.ppo`) and
the checkpoint (:mod:`~bsopt_trainer.domain.policy`, which records the config it was trained
with) can import it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


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
    """Seed of one training run: the weight initialisation (torch's CPU RNG, forked for the
    run and restored afterwards), action sampling (a private ``torch.Generator``), minibatch
    shuffling (a private ``numpy.random.Generator``) and env ``i`` (``reset(seed=seed + i)``).
    The process-global ``random`` and ``numpy.random`` states are never touched."""
    torch_threads: int = 1
    """``torch.set_num_threads`` during training (restored afterwards). 1 by default: the
    networks are tiny, and on a 2-core machine shared with other processes two OpenMP
    threads spin-wait on each other (measured 4-5x slower than one thread under load,
    only ~1.4x faster on an idle machine)."""
    torch_deterministic: bool = True
    """``torch.backends.cudnn.deterministic`` during training (restored afterwards; CPU
    kernels are deterministic anyway)."""

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
