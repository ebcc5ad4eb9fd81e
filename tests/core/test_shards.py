"""Shard-exact streaming: shards merged in any order or tree equal one pass."""

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe.polytope.spline import SplineCodeProbe
from neuroprobe.spectrum.spectrum import SpectrumProbe

HOOK = "blocks.1.mlp.hook_post"
PRE = "blocks.0.mlp.hook_pre"


def _corpus(n=11, seed=0):
    g = np.random.default_rng(seed)
    return [g.integers(1, 50, size=int(g.integers(2, 9))).tolist() for _ in range(n)]


def _probes(T):
    from neuroprobe.glm.probe import GLMProbe

    X = np.stack([np.sin(np.arange(T) / 3.0), np.ones(T)], 1)
    return [npb.TopK(HOOK, k=3), npb.RunningCovariance(HOOK), SpectrumProbe(HOOK),
            GLMProbe(HOOK, X), SplineCodeProbe([PRE])]


def _check_equal(a, b):
    top, cov, spec, glm, spl = a
    top2, cov2, spec2, glm2, spl2 = b
    for f in ("values", "prompt_index", "position", "time_index", "token_ids"):
        assert torch.equal(getattr(top, f), getattr(top2, f)), f
    for c, c2 in ((cov, cov2), (spec, spec2)):
        assert c.count == c2.count
        assert torch.allclose(c.covariance, c2.covariance, atol=1e-12, rtol=0)
        assert torch.allclose(c.mean, c2.mean, atol=1e-12, rtol=0)
    r, r2 = glm.fit(noise="ols"), glm2.fit(noise="ols")
    t, t2 = r.contrast("x0").t, r2.contrast("x0").t
    assert torch.allclose(torch.as_tensor(r.beta), torch.as_tensor(r2.beta), atol=1e-12, rtol=0)
    assert torch.allclose(t, t2, atol=1e-12, rtol=0)
    assert np.array_equal(spl.codes().packed, spl2.codes().packed)


@pytest.mark.parametrize("positions,include_bos", [("all", True), ("last", True),
                                                    ("all", False)])
def test_shards_merged_in_any_order_equal_one_pass(native_model, positions, include_bos):
    prompts = _corpus()
    kw = dict(positions=positions, include_bos=include_bos, batch_size=3)
    T = npb.record(native_model, prompts, HOOK, **kw).acts.shape[0]
    whole = npb.stream(native_model, prompts, _probes(T), **kw)
    parts = npb.shards(native_model, prompts, 4, positions=positions, include_bos=include_bos)
    assert sum(p.n_rows for p in parts) == T
    per = [npb.stream(native_model, p.prompts, _probes(T), shard=p.shard, **kw) for p in parts]
    orders = [[0, 1, 2, 3], [3, 1, 0, 2]]
    for order in orders:  # left folds in two orders
        acc = per[order[0]]
        for i in order[1:]:
            acc = [a.merge(b) for a, b in zip(acc, per[i])]
        _check_equal(whole, acc)
    # a balanced tree, mixing sides
    left = [b.merge(a) for a, b in zip(per[0], per[1])]
    right = [a.merge(b) for a, b in zip(per[3], per[2])]
    _check_equal(whole, [b.merge(a) for a, b in zip(left, right)])
    assert whole[0].seen == ((0, len(prompts), 0, T),)


def test_overlapping_and_repeated_shards_are_refused(native_model):
    prompts = _corpus()
    parts = npb.shards(native_model, prompts, 3)
    a = npb.stream(native_model, parts[0].prompts, [npb.TopK(HOOK, k=2)], shard=parts[0].shard)[0]
    with pytest.raises(npb.NeuroprobeError, match=r"time \[0, \d+\).*time \[0, \d+\)"):
        a.merge(a)
    # shards streamed without offsets overlap
    b = npb.stream(native_model, parts[1].prompts, [npb.TopK(HOOK, k=2)])[0]
    with pytest.raises(npb.NeuroprobeError, match="count it twice"):
        a.merge(b)
    from neuroprobe.glm.probe import GLMProbe

    T = sum(p.n_rows for p in parts)
    g = npb.stream(native_model, parts[0].prompts, [GLMProbe(HOOK, np.ones((T, 1)))])[0]
    with pytest.raises(npb.NeuroprobeError, match="prompts"):
        g.merge(g)
    s = npb.stream(native_model, parts[0].prompts, [SplineCodeProbe([PRE])])[0]
    with pytest.raises(npb.NeuroprobeError, match="twice"):
        s.merge(s)
    c = npb.stream(native_model, parts[0].prompts, [npb.RunningCovariance(HOOK)])[0]
    with pytest.raises(npb.NeuroprobeError, match="twice"):
        c.merge(c)


def test_glm_probe_fittable_after_merging_contiguous_shards(native_model):
    from neuroprobe.glm.probe import GLMProbe

    prompts = _corpus(9, seed=1)
    rec = npb.record(native_model, prompts, HOOK)
    T = rec.acts.shape[0]
    X = np.stack([np.cos(np.arange(T) / 2.0), np.ones(T)], 1)
    parts = npb.shards(native_model, prompts, 3)
    ps = [npb.stream(native_model, p.prompts, [GLMProbe(HOOK, X)], shard=p.shard)[0]
          for p in parts]
    res = ps[2].merge(ps[0]).merge(ps[1]).fit(noise="ar1")
    ref = npb.fit_glm(rec.acts.double(), X, noise="ar1")
    assert torch.allclose(torch.as_tensor(res.beta), torch.as_tensor(ref.beta), atol=1e-10)


def test_glob_targets_fail_at_construction():
    from neuroprobe.glm.probe import GLMProbe

    for make in (lambda: npb.TopK("blocks.*.hook_resid_post"),
                 lambda: npb.RunningCovariance("blocks.?.hook_resid_post"),
                 lambda: SpectrumProbe("blocks.*.hook_resid_post"),
                 lambda: GLMProbe("blocks.*.hook_resid_post", np.ones((4, 1)))):
        with pytest.raises(npb.NeuroprobeError, match="glob pattern"):
            make()


def test_shard_validation(native_model):
    with pytest.raises(npb.NeuroprobeError, match="first_time"):
        npb.Shard(0, -1)
    with pytest.raises(npb.NeuroprobeError, match="shard"):
        npb.stream(native_model, [[1, 2]], [npb.TopK(HOOK)], shard=(0, 0))
    assert len(npb.shards(native_model, [[1, 2], [3]], 5)) == 2


def test_positions_callable_gets_global_prompt_index(native_model):
    prompts = _corpus(6)
    pos = lambda i, n: [i % n]  # noqa: E731
    whole = npb.stream(native_model, prompts, [npb.TopK(HOOK, k=2)], positions=pos)[0]
    parts = npb.shards(native_model, prompts, 2, positions=pos)
    ps = [npb.stream(native_model, p.prompts, [npb.TopK(HOOK, k=2)], positions=pos,
                     shard=p.shard)[0] for p in parts]
    m = ps[1].merge(ps[0])
    assert torch.equal(m.position, whole.position) and torch.equal(m.values, whole.values)


def test_shards_cut_only_at_multiples_of_align(native_model):
    """align=batch_size: every shard starts at a multiple of it, the shards cover the corpus
    in order, and their offsets are the one-process numbering."""
    prompts = [[1, 2, 3]] * 5 + [[4, 5]] * 6  # 11 prompts, 28 rows
    for n, align in [(3, 4), (2, 16), (5, 1), (4, 3)]:
        parts = npb.shards(native_model, prompts, n, align=align)
        firsts = [p.shard.first_prompt for p in parts]
        assert all(f % align == 0 for f in firsts)
        assert sum(len(p.prompts) for p in parts) == len(prompts)
        assert [q for p in parts for q in p.prompts] == prompts
        rows = np.cumsum([0] + [p.n_rows for p in parts])[:-1].tolist()
        assert [p.shard.first_time for p in parts] == rows
        assert len(parts) == min(n, -(-len(prompts) // align))
    with pytest.raises(npb.NeuroprobeError, match="align"):
        npb.shards(native_model, prompts, 2, align=0)
