from __future__ import annotations

import pytest
import torch

from bsopt_trainer.domain.extractors import (
    EXTRACTORS,
    FeaturesExtractor,
    MlpExtractor,
    TransformerExtractor,
    make_extractor,
)


@pytest.mark.parametrize(
    ("name", "kwargs", "dim"),
    [
        ("transformer", {}, 64),
        ("transformer", {"d_model": 16, "n_heads": 2, "n_layers": 1}, 32),
        ("mlp", {}, 64),
        ("mlp", {"hidden": 24}, 24),
    ],
)
def test_forward_shapes_and_features_dim(name, kwargs, dim):
    ext = make_extractor(name, (16, 5), **kwargs)
    assert isinstance(ext, FeaturesExtractor) and isinstance(ext, EXTRACTORS[name])
    assert ext.features_dim == dim
    out = ext(torch.randn(7, 16, 5))
    assert out.shape == (7, dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_registry():
    assert EXTRACTORS == {"transformer": TransformerExtractor, "mlp": MlpExtractor}
    with pytest.raises(ValueError, match="unknown extractor"):
        make_extractor("lstm", (16, 5))
    with pytest.raises(ValueError, match="bad arguments"):
        make_extractor("mlp", (16, 5), width=3)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="divisible"):
        TransformerExtractor((16, 5), d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="observation_shape"):
        MlpExtractor((16,))
    ext = MlpExtractor((16, 5))
    with pytest.raises(ValueError, match="expected observations"):
        ext(torch.zeros(2, 8, 5))


def test_transformer_uses_order_of_the_window():
    torch.manual_seed(0)
    ext = TransformerExtractor((16, 5)).eval()
    x = torch.randn(1, 16, 5)
    with torch.no_grad():
        a, b = ext(x), ext(x.flip(1))
    assert not torch.allclose(a, b)  # positional embedding + last-token pooling
