"""Built-in probes: reference values, and merged shards equal one pass."""

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.core.probes import BatchMeta


def _meta(a, b):
    r = torch.arange(a, b)
    return BatchMeta(prompt_index=r, position=r * 0, time_index=r, token_ids=r + 100)


def test_running_covariance_matches_numpy_float32_input():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3000, 6, generator=g) * 10 + 1e4).float()  # large mean: stress precision
    p = npb.RunningCovariance("h")
    for a in range(0, 3000, 700):
        p.update({"h": x[a:a + 700]}, _meta(a, min(3000, a + 700)))
    ref = np.cov(x.double().numpy().T)
    np.testing.assert_allclose(p.covariance.numpy(), ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(p.mean.numpy(), x.double().numpy().mean(0), rtol=1e-12)


def test_topk_matches_sort_and_merge_is_exact():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 7, generator=g)
    one = npb.TopK("h", k=5)
    one.update({"h": x}, _meta(0, 500))
    a, b = npb.TopK("h", k=5), npb.TopK("h", k=5)
    a.update({"h": x[:230]}, _meta(0, 230))
    b.update({"h": x[230:]}, _meta(230, 500))
    m = a.merge(b)
    ref_vals, ref_idx = torch.sort(x, dim=0, descending=True)
    assert torch.equal(one.values, ref_vals[:5])
    assert torch.equal(one.time_index, ref_idx[:5])
    for f in ("values", "time_index", "prompt_index", "token_ids"):
        assert torch.equal(getattr(m, f), getattr(one, f))
    df = one.to_dataframe(3)
    assert df["activation"].tolist() == ref_vals[:5, 3].tolist()


def _prompts():
    return [[int(i) for i in torch.randint(1, 99, (n,), generator=torch.Generator()
                                           .manual_seed(n))] for n in (5, 9, 3, 7, 11, 4)]


def test_merge_of_the_same_rows_equals_one_pass():
    """The merge itself: the same float64 rows, split into shards, merged as any tree."""
    x = torch.randn(301, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    one = npb.RunningCovariance("h")
    one.update({"h": x}, _meta(0, 301))
    for cuts in ([0, 100, 301], [0, 1, 2, 150, 299, 301], [0, 37, 74, 111, 200, 301]):
        parts = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            p = npb.RunningCovariance("h")
            p.update({"h": x[a:b]}, _meta(a, b))
            parts.append(p)
        left = parts[0]
        for p in parts[1:]:  # a left fold
            left = left.merge(p)
        right = parts[-1]
        for p in parts[-2::-1]:  # the opposite fold
            right = p.merge(right)
        for m in (left, right):
            assert m.count == 301
            torch.testing.assert_close(m.covariance, one.covariance, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(m.mean, one.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(m.covariance, torch.cov(x.T), rtol=1e-12, atol=1e-12)


def test_probe_merge_shards_of_the_same_batches_on_model(native_model):
    """Shards made of exactly the batches of the one-pass run: identical float64 states."""
    prompts = _prompts()
    hook = "blocks.1.hook_resid_post"
    full = npb.stream(native_model, prompts, [npb.RunningCovariance(hook), npb.TopK(hook, k=3)],
                      batch_size=3)
    s1 = npb.stream(native_model, prompts[:3], [npb.RunningCovariance(hook), npb.TopK(hook, k=3)],
                    batch_size=3)
    # the second shard says where it sits (issue 12): without it the merge is refused
    s2 = npb.stream(native_model, prompts[3:], [npb.RunningCovariance(hook), npb.TopK(hook, k=3)],
                    batch_size=3, shard=npb.Shard(first_prompt=3, first_time=s1[0].count))
    cov = s1[0].merge(s2[0])
    assert cov.count == full[0].count == sum(map(len, prompts))
    torch.testing.assert_close(cov.covariance, full[0].covariance, rtol=1e-12, atol=1e-12)
    top = s1[1].merge(s2[1])
    assert torch.equal(top.values, full[1].values)
    assert torch.equal(top.prompt_index, full[1].prompt_index)
    assert torch.equal(top.time_index, full[1].time_index)


def test_probe_states_under_other_batch_shapes_agree_to_float32(native_model):
    """Re-running the model with other batch shapes changes float32 activations by ~1e-7
    (padding changes the matmul shapes), so this comparison is float32-sized."""
    prompts = _prompts()
    hook = "blocks.1.hook_resid_post"
    full = npb.stream(native_model, prompts, [npb.RunningCovariance(hook)], batch_size=2)[0]
    one_by_one = npb.stream(native_model, prompts, [npb.RunningCovariance(hook)],
                            batch_size=1)[0]
    torch.testing.assert_close(full.covariance, one_by_one.covariance, rtol=1e-5, atol=1e-5)
    rec = npb.record(native_model, prompts, hooks=hook)
    torch.testing.assert_close(full.covariance, torch.cov(rec.acts.T.double()),
                               rtol=1e-5, atol=1e-5)


def test_probe_errors():
    with pytest.raises(NeuroprobeError, match="k=...\\) must be a positive int"):
        npb.TopK("h", k=0)
    p = npb.RunningCovariance("h")
    with pytest.raises(NeuroprobeError, match="a covariance needs at least 2"):
        _ = p.covariance
    with pytest.raises(NeuroprobeError, match="same hook"):
        p.merge(npb.RunningCovariance("g"))


def test_custom_probe_protocol(native_model):
    class MeanNorm:
        """A user's probe in a few lines: running mean of the residual norm."""

        hooks = ["blocks.*.hook_resid_post"]

        def __init__(self):
            self.total, self.count = {}, 0

        def update(self, acts, meta):
            for h, a in acts.items():
                self.total[h] = self.total.get(h, 0.0) + float(a.norm(dim=-1).sum())
            self.count += meta.n

        def merge(self, other):
            out = MeanNorm()
            out.count = self.count + other.count
            out.total = {h: self.total[h] + other.total[h] for h in self.total}
            return out

    (p,) = npb.stream(native_model, [[1, 2, 3], [4, 5]], [MeanNorm()])
    assert isinstance(p, npb.Probe) and p.count == 5
    assert sorted(p.total) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    rec = npb.record(native_model, [[1, 2, 3], [4, 5]], hooks="blocks.1.hook_resid_post")
    assert p.total["blocks.1.hook_resid_post"] == pytest.approx(
        float(rec.acts.norm(dim=-1).sum()), rel=1e-5)
