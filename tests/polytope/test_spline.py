import numpy as np
import pytest
import torch
from sklearn.metrics import pairwise_distances

import neuroprobe.polytope.spline as sp
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.probes import BatchMeta
from neuroprobe.testbeds import ReLUMLP


def _rand(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_packing_size_and_roundtrip():
    x = _rand(7, 3072)
    c = sp.spline_codes(x)
    assert c.n_bytes == 384 and c.packed.dtype == np.uint8
    assert torch.equal(c.unpack(), x > 0)
    c2 = sp.spline_codes(x, threshold=0.5)
    assert torch.equal(c2.unpack(), x > 0.5)
    assert c.n_active.tolist() == (x > 0).sum(1).tolist()


@pytest.mark.parametrize("n_bits", [5, 64, 301])
def test_packed_hamming_equals_unpacked(n_bits):
    a = sp.spline_codes(_rand(40, n_bits, 1))
    b = sp.spline_codes(_rand(33, n_bits, 2))
    A, B = a.unpack().numpy(), b.unpack().numpy()
    ref = pairwise_distances(A, B, metric="hamming") * n_bits
    np.testing.assert_allclose(sp.hamming_matrix(a, b, block_size=16), ref, atol=1e-4)
    sym = sp.hamming_matrix(a, block_size=16)
    np.testing.assert_allclose(sym, pairwise_distances(A, metric="hamming") * n_bits, atol=1e-4)
    # row-wise popcount path
    loop = np.array([(A[i] != B[i]).sum() for i in range(33)])
    np.testing.assert_array_equal(sp.hamming_distance(a[:33], b), loop)


def test_jaccard_matches_sklearn():
    a = sp.spline_codes(_rand(30, 77, 3) - 0.5)
    A = a.unpack().numpy()
    ref = pairwise_distances(A, metric="jaccard")
    np.testing.assert_allclose(sp.jaccard_matrix(a, block_size=8), ref, atol=1e-6)
    np.testing.assert_allclose(sp.jaccard_distance(a[:5], a[5:10]),
                               ref[np.arange(5), np.arange(5, 10)], atol=1e-6)


@pytest.mark.parametrize("activation", ["silu", "gelu"])
def test_probabilistic_limit_is_binary(activation):
    x, y = _rand(20, 200, 4), _rand(20, 200, 5)
    hb = sp.hamming_distance(sp.spline_codes(x), sp.spline_codes(y)).astype(float)
    errs = []
    for T in (1.0, 1e-1, 1e-2, 1e-3, 1e-6):
        p = sp.probabilistic_codes(x, activation=activation, temperature=T)
        q = sp.probabilistic_codes(y, activation=activation, temperature=T)
        errs.append(np.abs(sp.expected_hamming(p, q) - hb).max())
    assert errs[0] > 1.0  # soft codes really differ at T = 1
    assert errs == sorted(errs, reverse=True)  # monotone approach
    assert errs[-1] < 1e-6  # every |z| / T is huge: codes are binary
    # matrix form equals the row-wise form
    p = sp.probabilistic_codes(x, activation=activation)
    m = sp.expected_hamming_matrix(p)
    row = sp.expected_hamming(sp.ProbabilisticCodes(p.probs[:1], activation, 1.0),
                              sp.ProbabilisticCodes(p.probs, activation, 1.0))
    np.testing.assert_allclose(m[0], row, rtol=1e-5)


def test_codes_from_model_match_manual_threshold():
    m = ReLUMLP([6, 10, 12, 3], seed=0)
    x = _rand(9, 6, 6)
    c = sp.spline_codes(m, x)
    with torch.no_grad():
        z1 = m.blocks[0].mlp.W(x)
        z2 = m.blocks[1].mlp.W(torch.relu(z1))
    assert torch.equal(c.unpack(), torch.cat([z1, z2], 1) > 0)
    assert c.units.hooks == ["blocks.0.mlp.hook_pre", "blocks.1.mlp.hook_pre"]
    c1 = sp.spline_codes(m, x, hooks="blocks.1.*.hook_pre")
    assert c1.n_bits == 12


def test_bad_inputs():
    a = sp.spline_codes(_rand(3, 10))
    b = sp.spline_codes(_rand(3, 12))
    with pytest.raises(NeuroprobeError, match="different widths: a has 10 bits, b has 12"):
        sp.hamming_matrix(a, b)
    with pytest.raises(NeuroprobeError, match="different widths"):
        sp.hamming_distance(a, b)
    x = _rand(3, 10)
    x[1, 2] = float("nan")
    with pytest.raises(NeuroprobeError, match="NaN"):
        sp.spline_codes(x)
    m = ReLUMLP([6, 10, 3], seed=0)
    with pytest.raises(NeuroprobeError,
                       match=r"not pre-activation hooks.*blocks\.0\.mlp\.hook_pre"):
        sp.spline_codes(m, _rand(2, 6), hooks=["blocks.0.mlp.hook_post"])
    with pytest.raises(NeuroprobeError, match="temperature must be a positive"):
        sp.probabilistic_codes(_rand(2, 3), temperature=0)
    with pytest.raises(NeuroprobeError, match="activation must be one of"):
        sp.probabilistic_codes(_rand(2, 3), activation="tanh")


def test_probe_stream_equals_batch():
    x = _rand(10, 20, 7)
    p1, p2 = sp.SplineCodeProbe(["h.hook_pre"]), sp.SplineCodeProbe(["h.hook_pre"])
    t = torch.arange(10)
    p2.update({"h.hook_pre": x[5:]}, BatchMeta(t[5:], t[5:], t[5:]))  # out of order shard
    p1.update({"h.hook_pre": x[:5]}, BatchMeta(t[:5], t[:5], t[:5]))
    merged = p1.merge(p2).codes()
    np.testing.assert_array_equal(merged.packed, sp.spline_codes(x).packed)


@pytest.mark.smollm2
def test_smollm2_gate_codes(smollm2):
    import neuroprobe as npb

    texts = ["The cat sat on the mat.", "GATTACA"]
    hooks = ["blocks.3.mlp.hook_pre", "blocks.4.mlp.hook_pre"]
    c = sp.spline_codes(smollm2, texts, hooks=hooks)
    rec = npb.record(smollm2, texts, hooks=hooks)
    assert c.n_bits == 2 * 1536 and c.n_bytes == 384 and len(c) == rec.acts.shape[0]
    assert torch.equal(c.unpack(), rec.acts > 0)
    soft = sp.probabilistic_codes(rec, activation="silu")
    torch.testing.assert_close(soft.probs, torch.sigmoid(rec.acts.double()).float())
    with pytest.raises(NeuroprobeError, match="not pre-activation hooks"):
        sp.spline_codes(smollm2, texts, hooks="blocks.3.mlp.hook_post")


class _ConvLayer(torch.nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        from transformer_lens.hook_points import HookPoint

        self.conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
        self.hook_pre = HookPoint()

    def forward(self, x):
        return torch.relu(self.hook_pre(self.conv(x)))


def _tiny_cnn():
    from transformer_lens import HookedRootModule

    class CNN(HookedRootModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.c1 = _ConvLayer(1, 4)
            self.c2 = _ConvLayer(4, 6)
            self.setup()

        def forward(self, x):
            return self.c2(self.c1(x)).mean((2, 3))

    return CNN()


def test_cnn_channels_at_a_position():
    m = _tiny_cnn()
    x = _rand(5, 64, 8).reshape(5, 1, 8, 8)
    c = sp.spline_codes(m, x, spatial=(2, 3))
    with torch.no_grad():
        z1 = m.c1.conv(x)
        z2 = m.c2.conv(torch.relu(z1))
    ref = torch.cat([z1[:, :, 2, 3], z2[:, :, 2, 3]], 1) > 0
    assert c.n_bits == 10 and torch.equal(c.unpack(), ref)
    assert len(c.units) == 10 and c.units.hooks == ["c1.hook_pre", "c2.hook_pre"]
    full = sp.spline_codes(m, x)  # every position: 4*64 + 6*64 bits
    assert full.n_bits == 640 and len(full.units) == 640
    with pytest.raises(NeuroprobeError, match="outside hook 'c1.hook_pre'"):
        sp.spline_codes(m, x, spatial=(9, 0))
