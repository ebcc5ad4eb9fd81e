import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

import neuroprobe.polytope.density as pt
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.testbeds import ReLUMLP


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def hand_net():
    """Layer 1: units x, -x, y (boundaries x = 0, y = 0); layer 2: |x| - 1 (x = -1, x = 1)."""
    m = ReLUMLP([2, 3, 1, 2], seed=0)
    with torch.no_grad():
        m.blocks[0].mlp.W.weight.copy_(torch.tensor([[1.0, 0], [-1.0, 0], [0, 1.0]]))
        m.blocks[0].mlp.W.bias.zero_()
        m.blocks[1].mlp.W.weight.copy_(torch.tensor([[1.0, 1.0, 0.0]]))
        m.blocks[1].mlp.W.bias.fill_(-1.0)
    return m


def test_hand_built_boundaries(hand_net):
    start = torch.tensor([[-2.0, 0.5], [-2.0, -1.0], [0.5, 0.5], [-3.0, -3.0]])
    end = torch.tensor([[2.0, 0.5], [2.0, 1.0], [0.7, 0.6], [3.0, 3.0]])
    r = pt.path_density(hand_net, "hook_input", start, end)
    # pair 0: x=-1 (l2), x=0 (x and -x units), x=1 (l2) -> 4 crossings, endpoints differ by 2
    # pair 1: x=-1, x=0 (2 units, y=0 at the same point too), x=1 -> 5, endpoints differ by 3
    # pair 2: inside one region                               -> 0
    # pair 3: x=-1, x=0 & y=0 (3 units), x=1                  -> 5, endpoints differ by 3
    assert r.crossings.tolist() == [4, 5, 0, 5]
    assert r.endpoint_hamming.tolist() == [2, 3, 0, 3]
    np.testing.assert_allclose(r.distance, (end - start).norm(dim=1).numpy())
    np.testing.assert_allclose(r.density, r.crossings / r.distance)
    # code of layer 2 only: the |x| = 1 boundaries
    r2 = pt.path_density(hand_net, "hook_input", start, end, code_hooks="blocks.1.mlp.hook_pre")
    assert r2.crossings.tolist() == [2, 2, 0, 2]
    # from layer 1's output space (x, -x, y after ReLU), only layer 2's code is downstream:
    # (0, .5, .5) -> (2, 0, .5): z2 = 1.5 t - 0.5 crosses once; (0, 2, .5) -> (2, 0, .5): z2 = 1
    xs, xe = torch.tensor([[-0.5, 0.5], [-2.0, 0.5]]), torch.tensor([[2.0, 0.5], [2.0, 0.5]])
    a = pt.activations(hand_net, xs, "blocks.0.mlp.hook_post")
    b = pt.activations(hand_net, xe, "blocks.0.mlp.hook_post")
    r3 = pt.path_density(hand_net, "blocks.0.mlp.hook_post", a, b, inputs=xs)
    assert r3.crossings.tolist() == [1, 0]
    # a path in layer 1's pre-activation space also crosses layer 1's own boundaries
    zs = pt.activations(hand_net, start[:1], "blocks.0.mlp.hook_pre")
    ze = pt.activations(hand_net, end[:1], "blocks.0.mlp.hook_pre")
    r4 = pt.path_density(hand_net, "blocks.0.mlp.hook_pre", zs, ze, inputs=start[:1])
    assert r4.crossings.tolist() == [4] and r4.endpoint_hamming.tolist() == [2]
    assert r4.code_hooks == ("blocks.0.mlp.hook_pre", "blocks.1.mlp.hook_pre")


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_equals_dense_grid(seed):
    m = ReLUMLP([3, 12, 12, 12, 2], seed=seed)
    g = _gen(seed + 10)
    a, b = torch.randn(2, 3, generator=g) * 2, torch.randn(2, 3, generator=g) * 2
    r = pt.path_density(m, "hook_input", a, b)
    assert (r.crossings >= 5).all()  # non-trivial paths
    f = pt._Downstream(pt._prepare_model(m, True), "hook_input", a, None, torch.float64, 8192)
    start, end = a.double(), b.double()
    rows = torch.arange(2)
    grid = pt._sampled_counts(f, start, end, rows, 100_000, 8192)
    np.testing.assert_array_equal(r.crossings, grid)
    for n in (10, 100, 1000):
        coarse = pt._sampled_counts(f, start, end, rows, n, 8192)
        assert (r.crossings >= coarse).all()
    assert (r.crossings >= r.endpoint_hamming).all()
    # deeper paths (one downstream layer: the walk jumps straight to the end)
    for hook in ("blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"):
        ha, hb = pt.activations(m, a, hook), pt.activations(m, b, hook)
        rr = pt.path_density(m, hook, ha, hb, inputs=a)
        fh = pt._Downstream(pt._prepare_model(m, True), hook, a, None, torch.float64, 8192)
        gh = pt._sampled_counts(fh, ha.double(), hb.double(), rows, 20_000, 8192)
        np.testing.assert_array_equal(rr.crossings, gh)


def test_sampled_method_and_convergence_flag():
    m = ReLUMLP([3, 8, 8, 2], seed=3)
    g = _gen(3)
    a, b = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    s = pt.path_density(m, "hook_input", a, b, method="sampled", n_steps=2)
    e = pt.path_density(m, "hook_input", a, b)
    assert (s.crossings <= s.crossings_fine).all()
    assert (s.crossings_fine <= e.crossings).all()
    np.testing.assert_array_equal(s.converged, s.crossings == s.crossings_fine)
    assert "converged" in s.to_dataframe().columns


class _SiLULayer(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.W = nn.Linear(d_in, d_out)
        self.hook_pre = HookPoint()

    def forward(self, x):
        return nn.functional.silu(self.hook_pre(self.W(x)))


class _SiLUNet(HookedRootModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.hook_input = HookPoint()
        self.a = _SiLULayer(3, 8)
        self.b = _SiLULayer(8, 8)
        self.out = nn.Linear(8, 2)
        self.setup()

    def forward(self, x):
        return self.out(self.b(self.a(self.hook_input(x))))


def test_exact_refuses_smooth_network():
    m = _SiLUNet()
    g = _gen(0)
    a, b = torch.randn(4, 3, generator=g) * 3, torch.randn(4, 3, generator=g) * 3
    with pytest.raises(NeuroprobeError, match="not affine inside a region.*method='sampled'"):
        pt.path_density(m, "hook_input", a, b)
    s = pt.path_density(m, "hook_input", a, b, method="sampled", n_steps=50)
    assert s.method == "sampled"


def test_bad_paths(hand_net):
    a = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(NeuroprobeError, match="zero length.*first pairs: \\[0\\]"):
        pt.path_density(hand_net, "hook_input", a, torch.tensor([[1.0, 2.0], [1.0, 1.0]]))
    bad = a.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(NeuroprobeError, match="NaN"):
        pt.path_density(hand_net, "hook_input", bad, a + 1)
    with pytest.raises(NeuroprobeError, match="needs inputs="):
        pt.path_density(hand_net, "blocks.0.mlp.hook_post", torch.ones(1, 3), torch.zeros(1, 3))
    with pytest.raises(NeuroprobeError, match="no pre-activation hook fires after"):
        pt.path_density(hand_net, "blocks.1.mlp.hook_post", torch.ones(1, 1),
                        torch.zeros(1, 1), inputs=a[:1])
    with pytest.raises(NeuroprobeError, match="method must be"):
        pt.path_density(hand_net, "hook_input", a, a + 1, method="grid")


def test_scaling_rays_match_path_density():
    m = ReLUMLP([4, 16, 16, 3], seed=2)
    x = torch.rand(4, 4, generator=_gen(1)) + 0.1
    r = pt.scaling_rays(m, "hook_input", x, k=3.0, n_bins=12, n_grid=50)
    ref = pt.path_density(m, "hook_input", torch.zeros_like(x), 3.0 * x)
    assert [len(c) for c in r.crossing_scales] == ref.crossings.tolist()
    # density integrates back to the counts
    width = r.bin_edges[1] - r.bin_edges[0]
    np.testing.assert_allclose((r.density * width * r.norms[:, None]).sum(1), ref.crossings)
    # predictions on the grid are the model's own outputs at s * x
    with torch.no_grad():
        p = m(r.grid[-1] * x).argmax(1).numpy()
    np.testing.assert_array_equal(r.predictions[:, -1], p)
    assert r.peak_scale in r.scales
    assert len(r.to_dataframe()) == 12


def test_class_density_statistics():
    m = ReLUMLP([4, 10, 10, 3], seed=0)
    g = _gen(5)
    y = np.repeat(np.arange(3), 10)
    x = torch.randn(30, 4, generator=g) + torch.as_tensor(y)[:, None].float()
    res = pt.class_density(m, x, y, ["hook_input", "blocks.0.mlp.hook_post"], n_pairs=20,
                           n_boot=200)
    t = res.to_dataframe()
    assert set(t["network"]) == {"trained", "null"}
    assert len(t) == 4
    for _, row in t.iterrows():
        p = res.pairs[(res.pairs.network == row.network) & (res.pairs.layer == row.layer)]
        di = p[p.kind == "intra"].density.to_numpy()
        de = p[p.kind == "inter"].density.to_numpy()
        assert row.ratio == pytest.approx(de.mean() / di.mean())
        assert row.p_value == pytest.approx(mannwhitneyu(de, di).pvalue)
        assert row.ci_low <= row.ratio <= row.ci_high
        c = p.groupby("kind")[["crossings", "distance"]].mean()
        assert row.count_ratio == pytest.approx(c.crossings["inter"] / c.crossings["intra"])
        assert row.distance_ratio == pytest.approx(c.distance["inter"] / c.distance["intra"])
    # same pairs in both networks
    a = res.pairs[res.pairs.network == "trained"][["i", "j"]].to_numpy()
    b = res.pairs[res.pairs.network == "null"][["i", "j"]].to_numpy()
    np.testing.assert_array_equal(a, b)
    assert (y[res.pairs[res.pairs.kind == "intra"].i] ==
            y[res.pairs[res.pairs.kind == "intra"].j]).all()
    assert len(res.records("null")) == 2
    with pytest.raises(NeuroprobeError, match="one entry per input"):
        pt.class_density(m, x, y[:5], ["hook_input"])


def test_language_model_position(native_model):
    """Sampled rays/paths at one token position of a TransformerBridge (LN: not piecewise
    linear, so exact refuses)."""
    toks = torch.randint(0, 100, (3, 6), generator=_gen(0))
    hook = "blocks.0.hook_resid_post"
    r = pt.scaling_rays(native_model, hook, toks, k=3.0, n_bins=6, n_grid=20, method="sampled",
                        position=-1)
    a = pt.activations(native_model, toks, hook, position=-1)
    assert a.shape == (3, 32)

    def scale_last(t, hook):
        t = t.clone()
        t[:, -1] = 3.0 * a.to(t.dtype)
        return t

    with torch.no_grad():
        out = native_model.run_with_hooks(toks, fwd_hooks=[(hook, scale_last)])
    np.testing.assert_array_equal(r.predictions[:, -1], out[:, -1].argmax(-1).numpy())
    p = pt.path_density(native_model, hook, a[:2], a[1:], inputs=toks[:2], position=-1,
                        method="sampled", n_steps=20)
    assert (p.crossings <= p.crossings_fine).all()
    with pytest.raises(NeuroprobeError, match="not affine"):
        pt.path_density(native_model, hook, a[:2], a[1:], inputs=toks[:2], position=-1)


def test_downstream_codes_equal_the_codes_of_a_plain_pass():
    """Replacing a hook's output by a point gives the code the point has in a plain pass."""
    from neuroprobe.core.engine import run_hooks
    from neuroprobe.polytope.spline import preactivation_hooks

    m = ReLUMLP([3, 10, 12, 2], seed=4)
    x = torch.randn(50, 3, generator=_gen(4))
    pre = preactivation_hooks(m)
    ref = run_hooks(m, x, pre)
    want = torch.cat([ref[h] for h in pre], 1) > 0
    assert torch.equal(pt.downstream_codes(m, "hook_input", x, batch_size=7), want)
    # at a deeper hook, carried by one input per point, then by a single shared input
    post = pt.activations(m, x, "blocks.0.mlp.hook_post")
    got = pt.downstream_codes(m, "blocks.0.mlp.hook_post", post, inputs=x)
    assert torch.equal(got, ref[pre[1]] > 0)
    shared = pt.downstream_codes(m, "blocks.0.mlp.hook_post", post, inputs=x[:1])
    assert torch.equal(shared, got)
    with pytest.raises(NeuroprobeError, match="needs inputs="):
        pt.downstream_codes(m, "blocks.0.mlp.hook_post", post)


def test_partition_slice_plot_runs_on_downstream_codes():
    import matplotlib.pyplot as plt

    from neuroprobe.viz.polytope import plot_partition_slice

    m = ReLUMLP([2, 8, 8, 3], seed=0)
    fig = plot_partition_slice(m, torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]),
                               resolution=40)
    assert fig is not None
    plt.close("all")
