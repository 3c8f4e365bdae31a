"""The trained policy and its checkpoint: the actor-critic network, greedy action selection,
and the checkpoint file that rebuilds it.

Checkpoint format (:data:`CHECKPOINT_FORMAT`, ``"bsopt-ppo-policy/1"``)
--------------------------------------------------------------------------
One :func:`torch.save` file holding a dict with two keys, loaded with ``weights_only=True``:

``"spec"``        a JSON string (keys sorted): ``format``, ``extractor`` (a name in
                  :data:`~bsopt_trainer.domain.extractors.EXTRACTORS`), ``extractor_kwargs``,
                  ``observation_shape`` ``[W, F]``, ``n_actions``, ``config`` (the
                  :class:`~bsopt_trainer.domain.ppo_config.PPOConfig` as a dict), ``metrics``
                  (last training iteration) and free-form ``metadata``.
``"state_dict"``  the :class:`ActorCritic` ``state_dict`` (keys ``extractor.*``,
                  ``policy_head.*``, ``value_head.*``).

The network lives here rather than beside the training loop because loading a checkpoint
needs it and training needs the checkpoint class: :mod:`~bsopt_trainer.domain.ppo` imports
this module, never the other way round.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from .extractors import FeaturesExtractor, make_extractor
from .ppo_config import PPOConfig

CHECKPOINT_FORMAT = "bsopt-ppo-policy/1"
"""Format tag written into every checkpoint's spec; :meth:`TrainedPolicy.load` refuses others."""


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weight init with gain ``std`` and constant bias (CleanRL's ``layer_init``)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class ActorCritic(nn.Module):
    """Shared extractor, then a linear policy head (logits) and a linear value head.

    Building one draws the initial weights from torch's process-global CPU RNG;
    :func:`~bsopt_trainer.domain.ppo.train_ppo` seeds a fork of it, so callers' RNG state is
    left alone."""

    def __init__(self, extractor: FeaturesExtractor, n_actions: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.policy_head = layer_init(nn.Linear(extractor.features_dim, n_actions), std=0.01)
        self.value_head = layer_init(nn.Linear(extractor.features_dim, 1), std=1.0)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` ``(B, W, F)`` -> action logits ``(B, n_actions)``."""
        logits: torch.Tensor = self.policy_head(self.extractor(obs))  # nn.Module.__call__ is typed Any
        return logits

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` ``(B, W, F)`` -> state values ``(B,)``."""
        values: torch.Tensor = self.value_head(self.extractor(obs))  # nn.Module.__call__ is typed Any
        return values.squeeze(-1)

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

    :meth:`act` is deterministic (argmax of the logits). :meth:`save` and :meth:`load`
    write and read the checkpoint format of the module docstring.
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
