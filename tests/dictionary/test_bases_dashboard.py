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
    assert set(a.to_dict()) == {"neurons", "pca", "ica", "nmf", "kmeans", "random", "sae"}
    for row in a.to_dict().values():
        assert row["ci_low"] <= row["score"] <= row["ci_high"]
    a.plot()
    with pytest.raises(NeuroprobeError, match="unknown"):
        compare_bases(native_model, corpus, hook=HOOK, bases=("svd",))


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
