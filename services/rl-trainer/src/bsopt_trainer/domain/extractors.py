"""Feature extractors: a window of market states ``(B, W, F)`` -> a feature vector
``(B, features_dim)``, in the manner of Stable-Baselines3's ``torch_layers``.

``features_dim`` is measured with a dummy forward pass when the module is built, never
hard-coded. Extractors are looked up by name in :data:`EXTRACTORS`
(see :func:`make_extractor`), which is how checkpoints name them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class FeaturesExtractor(nn.Module):
    """Base class. Subclasses build their layers, then call :meth:`_init_features_dim`
    at the end of ``__init__``.

    ``forward(obs)``: ``obs`` ``(B, W, F)`` float32 -> ``(B, features_dim)`` float32.
    """

    def __init__(self, observation_shape: Sequence[int]) -> None:
        super().__init__()
        shape = tuple(int(x) for x in observation_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(
                f"observation_shape must be (window, n_features) with both >= 1, got {observation_shape!r}"
            )
        self.observation_shape: tuple[int, int] = shape  # (W, F)
        self._features_dim: int | None = None

    @property
    def features_dim(self) -> int:
        """Size of the feature vector returned by :meth:`forward`."""
        if self._features_dim is None:
            raise RuntimeError(f"{type(self).__name__} did not call _init_features_dim() in __init__")
        return self._features_dim

    def _init_features_dim(self) -> None:
        with torch.no_grad():
            out = self.extract(torch.zeros((2, *self.observation_shape), dtype=torch.float32))
        if out.dim() != 2 or out.shape[0] != 2:
            raise RuntimeError(f"{type(self).__name__}.extract must return (B, D), got {tuple(out.shape)}")
        self._features_dim = int(out.shape[1])

    def _check(self, obs: torch.Tensor) -> None:
        if obs.dim() != 3 or tuple(obs.shape[1:]) != self.observation_shape:
            raise ValueError(f"expected observations of shape (B, {self.observation_shape[0]}, "
                             f"{self.observation_shape[1]}), got {tuple(obs.shape)}")

    def extract(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, W, F)`` -> ``(B, D)`` without shape checks; implemented by subclasses."""
        raise NotImplementedError

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` ``(B, W, F)`` float32 -> ``(B, features_dim)`` float32."""
        self._check(obs)
        return self.extract(obs)


class TransformerExtractor(FeaturesExtractor):
    """Each of the ``W`` market states is linearly embedded to ``d_model`` and a learned
    positional embedding ``(1, W, d_model)`` is added; a pre-norm
    :class:`torch.nn.TransformerEncoder` (``batch_first=True``, no mask: every row of the
    window is already in the past) mixes them, a final LayerNorm follows, and the output
    is the concatenation of the last token (the decision bar) and the mean over tokens:
    ``features_dim = 2 * d_model``.
    """

    def __init__(
        self,
        observation_shape: Sequence[int],
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 2,
        dropout: float = 0.0,
        ff_mult: int = 4,
    ) -> None:
        super().__init__(observation_shape)
        if d_model < 1 or n_heads < 1 or n_layers < 1 or ff_mult < 1:
            raise ValueError("d_model, n_heads, n_layers and ff_mult must all be >= 1")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        window, n_features = self.observation_shape
        self.embed = nn.Linear(n_features, d_model)
        self.pos_embed = nn.Parameter(torch.zeros(1, window, d_model))
        nn.init.normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=ff_mult * d_model,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self._init_features_dim()

    def extract(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.embed(obs) + self.pos_embed  # (B, W, d_model)
        h = self.encoder(x)  # (B, W, d_model)
        return torch.cat([h[:, -1], h.mean(dim=1)], dim=-1)  # (B, 2 * d_model)


class MlpExtractor(FeaturesExtractor):
    """The window is flattened to ``W * F`` inputs followed by two ``hidden``-wide tanh
    layers: ``features_dim = hidden``."""

    def __init__(self, observation_shape: Sequence[int], hidden: int = 64) -> None:
        super().__init__(observation_shape)
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        window, n_features = self.observation_shape
        self.net = nn.Sequential(
            nn.Flatten(),  # (B, W * F)
            nn.Linear(window * n_features, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
        )
        self._init_features_dim()

    def extract(self, obs: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.net(obs)  # (B, hidden); nn.Module.__call__ is typed Any
        return features


EXTRACTORS: dict[str, type[FeaturesExtractor]] = {
    "transformer": TransformerExtractor,
    "mlp": MlpExtractor,
}
"""Name -> extractor class; the names are what checkpoints and job specs store."""


def make_extractor(name: str, observation_shape: Sequence[int], **kwargs: Any) -> FeaturesExtractor:
    """Build the extractor registered as ``name``; ValueError for an unknown name or
    unknown keyword arguments."""
    try:
        cls = EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; known: {sorted(EXTRACTORS)}") from None
    try:
        return cls(observation_shape, **kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for extractor {name!r}: {exc}") from None
