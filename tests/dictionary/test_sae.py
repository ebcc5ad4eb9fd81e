"""SAE models: shapes, TopK sparsity, folding, and planted dictionaries recovered."""

import pytest
import torch

from neuroprobe import NeuroprobeError
from neuroprobe.dictionary import SAE, ActivationStore, train_sae_on_store


def _planted(m=32, d=16, n=20000, p=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(m, d, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    on = (torch.rand(n, m, generator=g) < p / m).float()
    return D, (on * (0.5 + torch.rand(n, m, generator=g))) @ D


def _recovered(D, sae):
    W = sae.W_dec.detach()
    W = W / W.norm(dim=1, keepdim=True)
    return (D @ W.T).max(1).values


@pytest.mark.parametrize("arch,kw", [("topk", dict(k=3)),
                                     ("l1", dict(l1_coefficient=2.0, lr=1e-3))])
def test_planted_dictionary_is_recovered(tmp_path, arch, kw):
    D, X = _planted()
    st = ActivationStore.from_arrays(tmp_path, {"h": X})
    sae = train_sae_on_store(st, hook="h", d_sae=64, architecture=arch, batch_size=256,
                             n_steps=800, **kw)
    cos = _recovered(D, sae)
    assert (cos > 0.9).float().mean() >= 0.9, cos
    with torch.no_grad():
        f = sae.encode(X[:2000])
        fvu = ((sae(X[:2000]) - X[:2000]) ** 2).sum() / ((X[:2000] - X[:2000].mean(0)) ** 2).sum()
    assert float(fvu) < 0.2
    assert float((f > 0).float().sum(1).mean()) <= (3 if arch == "topk" else 16)


def test_topk_keeps_k_and_encode_decode_shapes():
    sae = SAE(8, 40, "topk", k=5, seed=3)
    x = torch.randn(2, 7, 8)
    f = sae.encode(x)
    assert f.shape == (2, 7, 40) and int((f != 0).sum(-1).max()) <= 5 and (f >= 0).all()
    assert sae(x).shape == x.shape
    assert sae.to_dtype(torch.bfloat16)(x.bfloat16()).dtype == torch.bfloat16


def test_fold_decoder_norm_and_input_scale_keep_the_function():
    sae = SAE(6, 24, "l1", seed=2)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(24, 1) + 0.5)
        sae.b_enc.add_(0.01)
    x = torch.randn(50, 6)
    fo = sae.fold_decoder_norm()
    torch.testing.assert_close(fo(x), sae(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fo.W_dec.norm(dim=1), torch.ones(24))
    sc = sae.fold_input_scale(3.0)
    torch.testing.assert_close(sc(x), sae(x * 3.0) / 3.0, atol=1e-5, rtol=1e-5)
    assert not torch.equal(fo.W_dec, sae.W_dec)  # sae itself untouched


def test_bad_sae_arguments():
    with pytest.raises(NeuroprobeError, match=r"k=50\) is larger than d_sae=40"):
        SAE(8, 40, "topk", k=50)
    with pytest.raises(NeuroprobeError, match="architecture='gated'"):
        SAE(8, 40, "gated")
    with pytest.raises(NeuroprobeError, match="d_in=8; got input of shape"):
        SAE(8, 40, "l1").encode(torch.randn(3, 9))


def test_sparse_topk_backward_equals_dense_autograd():
    from neuroprobe.dictionary.train import _TopKEncode

    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 6, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(6, 13, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(13, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, W, b: _TopKEncode.apply(x, W, b, 4)[0], (x, W, b))
    val, _ = _TopKEncode.apply(x, W, b, 4)
    (val ** 2).sum().backward()
    sparse = [t.grad.clone() for t in (x, W, b)]
    for t in (x, W, b):
        t.grad = None
    dense = torch.relu(torch.addmm(b, x, W)).topk(4, dim=-1).values
    (dense ** 2).sum().backward()
    for s, t in zip(sparse, (x, W, b)):
        torch.testing.assert_close(s, t.grad)


@pytest.mark.parametrize("method", ["encode", "decode", "forward", "to_dtype", "features",
                                    "pre_activations", "fold_decoder_norm",
                                    "fold_input_scale", "copy", "save"])
def test_sae_methods_have_numpydoc_sections(method):
    doc = getattr(SAE, method).__doc__
    for section in ("Examples\n", "--------\n", ">>> "):
        assert section in doc, f"SAE.{method} lacks {section!r}"
    if method not in ("fold_decoder_norm", "copy"):  # these take no argument
        assert "Parameters\n    ----------\n" in doc.replace("        ", "    "), method
    if method != "save":
        assert "Returns\n" in doc, method


def test_fold_decoder_norm_refuses_a_topk_sae_it_would_change():
    sae = SAE(6, 24, "topk", k=3, seed=2)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.2, 5.0, 24)[:, None])
    x = torch.randn(50, 6)
    # the naive fold keeps other features: no equivalent SAE exists
    naive = sae.copy()
    with torch.no_grad():
        n = naive.W_dec.norm(dim=1)
        naive.W_enc.mul_(n)
        naive.b_enc.mul_(n)
        naive.W_dec.div_(n[:, None])
    assert not torch.allclose(naive(x), sae(x), atol=1e-4)
    with pytest.raises(NeuroprobeError, match=r"no equivalent for this TopK SAE: its "
                                              r"decoder-row norms range 0\.02\.\.0\.5"):
        sae.fold_decoder_norm()
    # unit-norm rows (what neuroprobe's TopK training keeps): the fold is allowed and exact
    with torch.no_grad():
        sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
    torch.testing.assert_close(sae.fold_decoder_norm()(x), sae(x))
    # ... and rows of one common norm other than 1 (a fresh SAE's), and a unit-norm SAE in
    # bfloat16 (norms off 1 by its rounding): the same k winners, an exact fold
    fresh = SAE(6, 24, "topk", k=3, seed=3)
    n = fresh.W_dec.norm(dim=1)
    assert float(n.max() - n.min()) < 1e-6 and abs(float(n[0]) - 1) > 0.5
    folded = fresh.fold_decoder_norm()
    torch.testing.assert_close(folded(x), fresh(x))
    assert torch.equal(folded.encode(x) > 0, fresh.encode(x) > 0)
    bf = sae.to_dtype(torch.bfloat16)
    assert float(bf.W_dec.double().norm(dim=1).sub(1).abs().max()) > 1e-5
    assert torch.equal(bf.fold_decoder_norm().encode(x.bfloat16()) > 0, bf.encode(x.bfloat16()) > 0)
