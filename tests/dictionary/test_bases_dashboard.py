"""compare_bases (deterministic, planted n-gram unit wins) and the HTML dashboard."""

import numpy as np
import pytest
import torch

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
    mu = X.mean(0)
    w = X[is_motif].mean(0) - mu
    w = w / w.norm()
    proj = (X - mu) @ w
    lo, hi = float(proj[~is_motif].max()), float(proj[is_motif].min())
    assert hi > lo  # the planted direction separates the motif's last token
    sae = SAE(32, 1, "l1", hook_name=HOOK, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(w[:, None])
        sae.b_dec.copy_(mu)
        sae.b_enc.fill_(-(lo + hi) / 2)
        sae.W_dec.copy_(w[None, :])
    return corpus, sae


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
