"""Tests of neuroprobe.testbeds: the moving dot, the two hooked ReLU networks, the one training
loop (deterministic, leaves the caller's RNG alone), TrainedDigits and the one null-network
path (a test bed's untrained copy is its initial weights)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.testbeds import (
    MLPAutoencoder,
    ReLUMLP,
    TrainedDigits,
    moving_dot,
    train_digits,
    train_digits_autoencoder,
    untrained_copy,
)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_moving_dot_and_autoencoder():
    dot = moving_dot(50, size=16, radius=5.0, sigma=1.0)
    pos = dot.position.double()
    c = 7.5
    torch.testing.assert_close(((pos - c) ** 2).sum(1).sqrt(), torch.full((50,), 5.0,
                               dtype=torch.float64), rtol=1e-5, atol=1e-5)
    # the brightest pixel is the one nearest the dot centre
    flat = dot.frames.reshape(50, -1).argmax(1)
    near = (pos.round().clamp(0, 15)[:, 0] * 16 + pos.round().clamp(0, 15)[:, 1]).long()
    assert (flat == near).float().mean() > 0.9
    ae = MLPAutoencoder(64, hidden=(32, 16), dropout=0.5, seed=0)
    x = torch.rand(8, 64)
    ae.eval()
    assert torch.equal(ae(x), ae(x))
    ae.train()
    assert not torch.equal(ae(x), ae(x))
    assert ae.hook_names == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    with pytest.raises(NeuroprobeError, match=r"dropout must be in \[0, 1\)"):
        MLPAutoencoder(dropout=1.0)



def test_train_digits_is_deterministic_and_leaves_the_rng_alone():
    state = torch.get_rng_state()
    a = train_digits(sizes=(64, 16, 16, 10), epochs=2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_digits(sizes=(64, 16, 16, 10), epochs=2, seed=3)
    assert _same_weights(a.model, b.model) and a.accuracy == b.accuracy
    c = train_digits(sizes=(64, 16, 16, 10), epochs=2, seed=4)
    assert not _same_weights(a.model, c.model)
    assert not torch.equal(a.y_test, c.y_test)  # the split follows the seed too


def test_trained_digits_result():
    run = train_digits(sizes=(64, 16, 10), epochs=3, seed=0)
    assert isinstance(run, TrainedDigits)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.accuracy = 1.0
    assert run.x_train.shape == (1347, 64) and run.x_test.shape == (450, 64)
    assert run.x_train.dtype == torch.float32 and run.y_test.dtype == torch.int64
    assert sorted(torch.unique(run.y_test).tolist()) == list(range(10))
    with torch.no_grad():
        acc = float((run.model(run.x_test).argmax(1) == run.y_test).float().mean())
    assert run.accuracy == acc > 0.5
    assert not run.model.training
    assert not any(p.requires_grad for m in (run.model, run.untrained) for p in m.parameters())
    assert "accuracy=" in repr(run) and "n_test=450" in repr(run)
    # the null network is the model's own initial weights
    assert _same_weights(run.untrained, ReLUMLP([64, 16, 10], seed=0))
    assert not _same_weights(run.untrained, run.model)


def test_autoencoder_training_is_deterministic_and_leaves_the_rng_alone():
    state = torch.get_rng_state()
    a = train_digits_autoencoder(0.3, hidden=(16, 8, 16), epochs=2, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_digits_autoencoder(0.3, hidden=(16, 8, 16), epochs=2, seed=1)
    assert _same_weights(a, b) and not a.training
    assert not _same_weights(a, MLPAutoencoder(64, (16, 8, 16), 0.3, seed=1))


def test_one_null_network_path():
    assert npb.untrained_copy is untrained_copy is npb.polytope.untrained_copy
    assert npb.reinitialize_ is npb.polytope.density.reinitialize_
    for make in (lambda s: ReLUMLP([8, 6, 6, 3], seed=s),
                 lambda s: MLPAutoencoder(8, hidden=(6, 4), dropout=0.2, seed=s)):
        trained = make(5)
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(1.0)  # "training"
        assert _same_weights(untrained_copy(trained, seed=5), make(5))
        assert not _same_weights(untrained_copy(trained, seed=6), make(5))
        assert not _same_weights(trained, make(5))  # the copy left the original alone


def test_relu_mlp_hooks_and_errors():
    m = ReLUMLP([4, 8, 8, 3], seed=0)
    assert [h for h in m.hook_dict if h.startswith("blocks.1")] == [
        "blocks.1.mlp.hook_pre", "blocks.1.mlp.hook_post"]
    assert {"hook_input", "hook_logits"} <= set(m.hook_dict)
    with pytest.raises(NeuroprobeError, match=r"sizes must be \[d_in, hidden..., n_out\]"):
        ReLUMLP([4])
