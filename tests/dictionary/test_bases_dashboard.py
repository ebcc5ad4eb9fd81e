"""compare_bases (deterministic, planted n-gram unit wins) and the HTML dashboard."""

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.dictionary import SAE, compare_bases, feature_dashboard
from neuroprobe.dictionary.bases import _ngram_keys, _predictability

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 100, size=300).tolist() for _ in range(10)]


def test_predictability_of_a_planted_token_detector():
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 30, size=(60, 20))
    a = (toks == 7).astype(float) * 2.0  # fires exactly on token 7
    keys = _ngram_keys(toks, 30)
    half_a, half_b = np.arange(30), np.arange(30, 60)
    s = _predictability(a, keys, half_a, half_b, half_b[:5], 10)
    assert s == pytest.approx(1.0)
    noise = rng.standard_normal(a.shape)
    assert _predictability(noise, keys, half_a, half_b, half_b[:5], 10) < 0.5


def test_compare_bases_is_deterministic(native_model, corpus):
    sae = SAE(32, 64, "topk", k=4, hook_name=HOOK, seed=0)
    kw = dict(hook=HOOK, sae=sae, n_units=8, n_tokens=2000, context_size=32, n_top=5,
              n_random=5, n_boot=100, seed=3)
    a = compare_bases(native_model, corpus, **kw)
    b = compare_bases(native_model, corpus, **kw)
    assert a.summary.equals(b.summary)
    assert a.scores.equals(b.scores)
    assert {"coherence"} <= set(a.scores.columns)
    assert {"coherence", "coherence_ci_low", "coherence_ci_high", "n_coherence"} <= set(
        a.summary.columns)
    assert set(a.to_dict()) == {"neurons", "pca", "ica", "nmf", "kmeans", "random", "sae"}
    for row in a.to_dict().values():
        assert row["ci_low"] <= row["score"] <= row["ci_high"]
    a.plot()
    a.plot(metric="coherence")
    with pytest.raises(NeuroprobeError, match="unknown"):
        compare_bases(native_model, corpus, hook=HOOK, bases=("svd",))


def _detector_sae(X: torch.Tensor, mask: torch.Tensor, w: torch.Tensor) -> SAE:
    """A one-feature SAE along ``w`` (normalised) from the mean of ``X``, whose bias puts
    its threshold halfway between the rows of ``mask`` and the others (it fires exactly on
    ``mask``)."""
    mu = X.mean(0)
    w = w / w.norm()
    proj = (X - mu) @ w
    lo, hi = float(proj[~mask].max()), float(proj[mask].min())
    assert hi > lo  # the planted direction separates the rows of mask
    sae = SAE(32, 1, "l1", hook_name=HOOK, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(w[:, None])
        sae.b_dec.copy_(mu)
        sae.b_enc.fill_(-(lo + hi) / 2)
        sae.W_dec.copy_(w[None, :])
    return sae


def _planted_corpus_and_sae(model):
    """84 contexts of 32 tokens: 60 random ones (tokens 0-89) and 24 copies of one motif
    context ending in token 99; an SAE with one feature that fires only at that token."""
    rng = np.random.default_rng(5)
    motif = rng.integers(90, 99, size=32).tolist()
    motif[-1] = 99
    randoms = [rng.integers(0, 90, size=32).tolist() for _ in range(60)]
    corpus = []
    for i in range(84):
        corpus.append(list(motif) if i % 7 in (0, 3) else randoms.pop())
    from neuroprobe.core.capture import record

    rec = record(model, corpus, hooks=[HOOK], positions=slice(1, None))
    X = rec.acts.float()
    is_motif = torch.as_tensor(corpus)[:, 1:].reshape(-1) == 99
    return corpus, _detector_sae(X, is_motif, X[is_motif].mean(0) - X.mean(0))


@pytest.mark.parametrize("embedding", ["tokens", "resid"])
def test_coherence_of_a_planted_unit_beats_random_directions(native_model, embedding):
    corpus, sae = _planted_corpus_and_sae(native_model)
    kw = dict(hook=HOOK, sae=sae, n_units=1, n_tokens=84 * 31, context_size=32, n_top=5,
              n_random=5, n_boot=200, seed=0, coherence_embedding=embedding)
    planted = compare_bases(native_model, corpus, bases=("sae",), **kw)
    kw["n_units"] = 8
    rand = compare_bases(native_model, corpus, bases=("random",), **kw)
    coh = planted.summary.loc["sae", "coherence"]
    # identical top contexts: cosine 1, minus the random baseline
    assert coh == pytest.approx(1.0 - planted.coherence_baseline, abs=1e-9)
    assert coh > rand.summary.loc["random", "coherence_ci_high"]
    assert abs(planted.coherence_baseline) < 0.2
    again = compare_bases(native_model, corpus, bases=("random",), **kw)
    assert again.scores.equals(rand.scores) and again.summary.equals(rand.summary)
    with pytest.raises(NeuroprobeError, match="coherence_embedding"):
        compare_bases(native_model, corpus, bases=("random",),
                      **{**kw, "coherence_embedding": "glove"})


def test_mean_pairwise_cosine():
    from neuroprobe.dictionary.bases import _mean_pairwise_cosine

    E = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert _mean_pairwise_cosine(E) == pytest.approx(1.0 / 3.0)
    assert np.isnan(_mean_pairwise_cosine(E[:1]))


def test_dashboard_html(native_model, corpus, tmp_path):
    sae = SAE(32, 64, "topk", k=4, hook_name=HOOK, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(0.1)
    dash = feature_dashboard(native_model, sae, corpus, n_features=3, n_tokens=600,
                             context_size=32, mae=True)
    page = dash.html()
    assert page.startswith("<!doctype html>") and "http" not in page.replace(
        "http://www.w3.org/2000/svg", "")
    assert len(dash.cards) == 3 and "<svg" in page and "background:rgba" in page
    out = dash.save(tmp_path)
    assert (out / "index.html").exists()
    assert (out / f"feature_{dash.cards[0].feature}.html").exists()
    assert "Feature" in dash._repr_html_()


# ---- the n-gram lookup: up to 3 tokens of context before the activating token ---------------
def test_ngram_keys_equal_iff_ngrams_equal():
    """Fast-vs-slow: the dense keys against the n-grams spelled out by a plain loop."""
    from neuroprobe.dictionary.bases import NGRAM_CONTEXT

    toks = np.random.default_rng(2).integers(0, 4, size=(6, 9))
    keys = _ngram_keys(toks)
    assert NGRAM_CONTEXT == 3 and keys.shape == (4, 6, 9)
    gram = {}
    for n in range(4):
        for c in range(6):
            for p in range(9):
                if p < n:
                    assert keys[n, c, p] == -1
                else:
                    g = tuple(toks[c, p - n: p + 1])
                    assert gram.setdefault(int(keys[n, c, p]), g) == g  # one key, one n-gram
    valid = keys[keys >= 0]
    assert len(np.unique(valid)) == len(gram)  # and one n-gram, one key (orders never share)
    big = np.array([[10 ** 12, 5, 10 ** 12, 5, 7]])  # a vocabulary id no product could hold
    assert _ngram_keys(big)[3, 0, 4] >= 0


def test_predictability_uses_three_tokens_of_context():
    """A unit that fires 2.0 on 'a b c X' and 1.0 on 'd b c X': only a 4-gram (3 tokens of
    context) tells the two apart, so the lookup predicts it exactly; 3-grams cannot."""
    rng = np.random.default_rng(4)
    a_, b_, c_, d_, x_ = 20, 21, 22, 23, 24
    toks = rng.integers(0, 20, size=(60, 16))
    act = np.zeros(toks.shape)
    for i in range(40):  # contexts 0..39 hold the pattern once, 40..59 are plain
        p = int(rng.integers(3, 16))
        toks[i, p - 3: p + 1] = [a_ if i % 2 == 0 else d_, b_, c_, x_]
        act[i, p] = 2.0 if i % 2 == 0 else 1.0
    order = np.random.default_rng(0).permutation(60)
    half_a, half_b = np.sort(order[:30]), np.sort(order[30:])
    rand_b = half_b[-5:]
    s4 = _predictability(act, _ngram_keys(toks), half_a, half_b, rand_b, 20)
    assert s4 == pytest.approx(1.0)
    s3 = _predictability(act, _ngram_keys(toks, max_context=2), half_a, half_b, rand_b, 20)
    assert s3 < 0.99


# ---- position 0 opted back in ----------------------------------------------------------------
def _position0_corpus_and_sae(model):
    """60 contexts of 32 tokens, each starting with token 99 (found nowhere else); an SAE with
    one feature that fires only at position 0."""
    from neuroprobe.core.capture import record

    rng = np.random.default_rng(1)
    corpus = [[99] + rng.integers(0, 99, size=31).tolist() for _ in range(60)]
    rec = record(model, corpus, hooks=[HOOK], positions="all")
    X, first = rec.acts.float(), rec.position == 0
    return corpus, _detector_sae(X, first, X[first].mean(0) - X[~first].mean(0))


def test_compare_bases_exclude_first(native_model):
    corpus, sae = _position0_corpus_and_sae(native_model)
    kw = dict(hook=HOOK, sae=sae, bases=("sae",), n_units=1, n_tokens=60 * 32,
              context_size=32, n_top=5, n_random=5, n_boot=20)
    with pytest.raises(NeuroprobeError, match="none of the SAE's 1 features fires"):
        compare_bases(native_model, corpus, **kw)  # position 0 left out: the feature is dead
    kept = compare_bases(native_model, corpus, exclude_first=False, **kw)
    assert kept.n_tokens == 60 * 32 and kept.exclude_first is False
    assert kept.summary.loc["sae", "score"] == pytest.approx(1.0)  # the unigram '99' at 0
    dropped = compare_bases(native_model, corpus, **{**kw, "bases": ("pca",), "n_units": 4})
    assert dropped.n_tokens == 60 * 31 and dropped.exclude_first is True
    with pytest.raises(NeuroprobeError, match="exclude_first must be True or False"):
        compare_bases(native_model, corpus, exclude_first="no", **kw)


# ---- SAEs in another dtype / on another device -----------------------------------------------
def test_compare_bases_takes_an_sae_in_another_dtype(native_model):
    corpus, sae = _position0_corpus_and_sae(native_model)
    kw = dict(hook=HOOK, bases=("sae",), n_units=1, n_tokens=60 * 32, context_size=32,
              n_top=5, n_random=5, n_boot=20, exclude_first=False)
    ref = compare_bases(native_model, corpus, sae=sae, **kw)
    # bfloat16 output cannot go to numpy as it is: the path a CUDA output takes (.float().cpu())
    bf = compare_bases(native_model, corpus, sae=sae.to_dtype(torch.bfloat16), **kw)
    f64 = compare_bases(native_model, corpus, sae=sae.to_dtype(torch.float64), **kw)
    for other in (bf, f64):
        assert other.summary.loc["sae", "score"] == pytest.approx(
            ref.summary.loc["sae", "score"], abs=1e-6)


def _cuda_sae(sae):
    out = sae.copy()
    return out.to("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sae_with_a_cpu_model(native_model, corpus):
    sae = SAE(32, 64, "topk", k=4, hook_name=HOOK, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(0.1)
    gpu = _cuda_sae(sae)
    assert gpu.W_enc.is_cuda and not native_model.W_U.is_cuda
    kw = dict(hook=HOOK, bases=("sae",), n_units=8, n_tokens=2000, context_size=32, n_top=5,
              n_random=5, n_boot=50)
    a = compare_bases(native_model, corpus, sae=sae, **kw)
    b = compare_bases(native_model, corpus, sae=gpu, **kw)
    np.testing.assert_allclose(a.scores.score, b.scores.score, atol=1e-4)
    dkw = dict(features=[0, 1, 2], n_tokens=600, context_size=32, mae=True)
    da = feature_dashboard(native_model, sae, corpus, **dkw)
    db = feature_dashboard(native_model, gpu, corpus, **dkw)
    for ca, cb in zip(da.cards, db.cards, strict=True):
        assert [t for t, _ in ca.boosted] == [t for t, _ in cb.boosted]
        assert ca.max_activation == pytest.approx(cb.max_activation, abs=1e-4)
        assert ca.mae_text == cb.mae_text and cb.mae_error is None
    rec = npb.record(native_model, [list(range(20))], hooks=[HOOK, gpu.features()])
    torch.testing.assert_close(rec.acts[:, 32:], sae.encode(rec.acts[:, :32]), atol=1e-4,
                               rtol=1e-4)


# ---- the dashboard's sections ----------------------------------------------------------------
def _top_context(model, sae, corpus, f, context_size=32, n_tokens=600, exclude_first=True):
    """The contexts the dashboard reads, feature f's activations ``[ctx, pos]`` (f a slice:
    ``[ctx, pos, feature]``) and the index of its top context, all by hand."""
    from neuroprobe.core.capture import record
    from neuroprobe.dictionary import corpus_contexts

    per = context_size - (1 if exclude_first else 0)
    ctxs = corpus_contexts(model, corpus, n_tokens=-(-n_tokens // per) * (context_size - 1),
                           context_size=context_size)
    rec = record(model, ctxs, hooks=[HOOK], positions=slice(1, None) if exclude_first else "all")
    with torch.no_grad():
        a = sae.encode(rec.acts)[:, f].reshape(len(ctxs), per, -1).squeeze(-1).numpy()
    return ctxs, a, int(np.argsort(-a.reshape(len(ctxs), -1).max(1), kind="stable")[0])


def test_dashboard_mae_and_logit_tables(native_model, corpus):
    sae = SAE(32, 64, "topk", k=4, hook_name=HOOK, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sae.b_enc.fill_(0.1)
        # untie the encoder from the decoder, so only W_dec can give the logit tables
        sae.W_enc.add_(0.5 * torch.randn(sae.W_enc.shape, generator=g))
    _, a_all, _ = _top_context(native_model, sae, corpus, slice(None))
    alive = np.flatnonzero(a_all.max((0, 1)) > 0).tolist()
    feats = [alive[0], alive[len(alive) // 2], alive[-1]]
    dash = feature_dashboard(native_model, sae, corpus, features=feats, n_tokens=600,
                             context_size=32, n_logits=5, mae=True)
    W_U = native_model.W_U.detach().float()
    for card, f in zip(dash.cards, feats, strict=True):
        assert card.feature == f
        # boosted / suppressed: the top / bottom of W_dec[f] @ W_U
        eff = (sae.W_dec.detach()[f].double() @ W_U.double()).numpy()
        up, down = np.argsort(-eff)[:5], np.argsort(eff)[:5]
        assert [t for t, _ in card.boosted] == [f"<{i}>" for i in up]
        assert [t for t, _ in card.suppressed] == [f"<{i}>" for i in down]
        np.testing.assert_allclose([v for _, v in card.boosted], eff[up], atol=1e-5)
        np.testing.assert_allclose([v for _, v in card.suppressed], eff[down], atol=1e-5)
        page = card.html()
        assert "Boosted tokens" in page and "Suppressed tokens" in page
        assert f"<td>{eff[up[0]]:+.3f}</td>" in page and f"<td>{eff[down[0]]:+.3f}</td>" in page
        # the MAE of the top example, pruned by hand
        ctxs, a, c = _top_context(native_model, sae, corpus, f)
        assert card.max_activation == pytest.approx(float(a.max()), abs=1e-5)
        mae = npb.prune_to_mae(native_model, (sae.features(), f), list(ctxs[c]))
        assert card.mae_error is None
        assert card.mae_text == str(mae.token_ids)
        assert card.mae_activation == pytest.approx(float(mae.activation), abs=1e-6)
        assert f"Minimal activating example (activation {mae.activation:.3f})" in page
        assert str(mae.token_ids) in page


def test_dashboard_says_when_the_mae_fails(native_model, corpus, monkeypatch):
    import neuroprobe.mae.prune as prune_mod

    sae = SAE(32, 64, "topk", k=4, hook_name=HOOK, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(0.1)

    def failing(*a, **k):
        raise NeuroprobeError("the text has no sentence to prune (planted failure)")

    monkeypatch.setattr(prune_mod, "prune_to_mae", failing)
    with pytest.warns(npb.NeuroprobeWarning,
                      match=r"minimal activating example of feature 5 could not be computed "
                            r"\(the text has no sentence to prune \(planted failure\)\)"):
        dash = feature_dashboard(native_model, sae, corpus, features=[5], n_tokens=300,
                                 context_size=32, mae=True)
    (card,) = dash.cards
    assert card.mae_text is None and "planted failure" in card.mae_error
    page = card.html()
    assert ("The minimal activating example could not be computed: the text has no sentence "
            "to prune (planted failure)") in page
    assert "planted failure" in dash.html()


def test_dashboard_exclude_first(native_model):
    corpus, sae = _position0_corpus_and_sae(native_model)
    kw = dict(features=[0], n_tokens=60 * 32, context_size=32, mae=False, n_logits=3)
    (off,) = feature_dashboard(native_model, sae, corpus, **kw).cards
    assert off.density == 0.0 and off.contexts == []  # position 0 left out: never fires
    (on,) = feature_dashboard(native_model, sae, corpus, exclude_first=False, **kw).cards
    ctxs, a, _ = _top_context(native_model, sae, corpus, 0, n_tokens=60 * 32,
                              exclude_first=False)
    assert on.density == pytest.approx(1 / 32)
    assert on.max_activation == pytest.approx(float(a.max()), abs=1e-5) and a.max() > 0
    toks, acts = on.contexts[0]
    assert toks[0] == "<99>" and acts[0] == pytest.approx(float(a.max()), abs=1e-5)
    with pytest.raises(NeuroprobeError, match="exclude_first must be True or False"):
        feature_dashboard(native_model, sae, corpus, exclude_first=1, **kw)


def test_dashboard_takes_an_sae_in_another_dtype(native_model, corpus):
    sae = SAE(32, 64, "topk", k=4, hook_name=HOOK, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(0.1)
    kw = dict(n_features=2, n_tokens=600, context_size=32, n_logits=4, mae=True)
    ref = feature_dashboard(native_model, sae, corpus, **kw)
    got = feature_dashboard(native_model, sae.to_dtype(torch.float64), corpus, **kw)
    for r, g in zip(ref.cards, got.cards, strict=True):
        assert [t for t, _ in r.boosted] == [t for t, _ in g.boosted]
        np.testing.assert_allclose([v for _, v in g.boosted], [v for _, v in r.boosted],
                                   atol=1e-5)
        assert g.max_activation == pytest.approx(r.max_activation, abs=1e-5)
        assert g.mae_text == r.mae_text
