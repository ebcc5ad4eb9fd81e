"""Shared fixtures: a tiny random native model and the offline SmolLM2-135M (loaded once)."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

NATIVE_CFG = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=100, n_ctx=64,
    act_fn="relu", normalization_type="LN", seed=0,
)


@pytest.fixture(scope="session")
def native_model():
    """A 2-layer random native TransformerBridge (absolute positions, ReLU MLP)."""
    import neuroprobe as npb

    return npb.load_model(dict(NATIVE_CFG))


@pytest.fixture(scope="session")
def smollm2():
    """The offline default model, loaded once per test session (cached weights)."""
    import neuroprobe as npb

    torch.manual_seed(0)
    return npb.load_model("smollm2-135m")
