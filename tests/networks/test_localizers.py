"""Localizers: the llm-localization selection reproduced, GLM = Welch with equal groups,
split-half reliability, packaged stimuli, bad input."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import neuroprobe as npb
import neuroprobe.networks.localizers as loc


def _reference_top_mask(sent: np.ndarray, nonw: np.ndarray, n_layers: int, percentage: float,
                        absolute: bool) -> np.ndarray:
    """llm-localization's selection (BKHMSI/llm-localization, localize.py), re-written:
    per layer ``ttest_ind(equal_var=False)`` on [n_stim, hidden] (optionally on |x|), then
    ``num_units = int(percentage / 100 * hidden * n_layers)`` and ``is_topk`` over the
    [layers, hidden] t matrix (rank of unique values)."""
    hidden = sent.shape[1] // n_layers
    t = np.zeros((n_layers, hidden))
    for i in range(n_layers):
        a = sent[:, i * hidden:(i + 1) * hidden]
        b = nonw[:, i * hidden:(i + 1) * hidden]
        if absolute:
            a, b = np.abs(a), np.abs(b)
        t[i], _ = stats.ttest_ind(a, b, axis=0, equal_var=False)
    num_units = int((percentage / 100) * hidden * n_layers)

    def is_topk(a, k=1):
        _, rix = np.unique(-a, return_inverse=True)
        return np.where(rix < k, 1, 0).reshape(a.shape)

    return is_topk(t, k=num_units).astype(bool).reshape(-1)


def test_smollm2_language_mask_equals_llm_localization_reference(smollm2):
    hooks = "blocks.*.hook_resid_post"
    net = npb.localize(smollm2, "language", hooks)  # top 1%, last token, Welch
    stim = npb.load_localizer("language")
    rec = npb.record(smollm2, stim.texts, hooks, positions="last", batch_size=32)
    assert rec.acts.shape == (480, 30 * 576) and net.units == rec.units
    x = rec.acts.numpy().astype(np.float64)
    lab = np.asarray(stim.labels)
    vals = npb.LocalizerValues(torch.from_numpy(x), stim.labels, rec.units, "sentences",
                               "nonwords", "language")
    for absolute in (False, True):
        ref = _reference_top_mask(x[lab == "sentences"], x[lab == "nonwords"], 30, 1.0, absolute)
        assert ref.sum() == int(0.01 * 17280) == 172
        mine = net if not absolute else npb.localize(None, vals, absolute=True)
        assert npb.jaccard(mine, torch.from_numpy(ref)) == 1.0
    # with equal groups (240 vs 240) the GLM contrast t is Welch's t: the identical mask
    glm = npb.localize(None, vals, method="glm")
    assert glm.jaccard(net) == 1.0
    assert torch.allclose(vals.t("glm"), vals.t("welch"), rtol=1e-9, atol=1e-9)
    sh = npb.split_half_reliability(vals, n_splits=10)
    assert 0.3 < sh.mean <= 1.0 and sh.dice.shape == (10,)


def test_values_mean_pooling_match_record(native_model):
    stim = {"a": [[1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11, 12]],
            "b": [[13, 14], [15, 16, 17], [18, 19, 20, 21]]}
    v = npb.localizer_values(native_model, stim, "blocks.*.mlp.hook_post", pooling="mean",
                             include_bos=True)
    texts = [t for c in stim.values() for t in c]
    rec = npb.record(native_model, texts, "blocks.*.mlp.hook_post")
    ref = pd.DataFrame(rec.acts.numpy().astype(np.float64)).groupby(
        rec.prompt_index.numpy()).mean().to_numpy()
    np.testing.assert_allclose(v.values.numpy(), ref, rtol=1e-12, atol=1e-12)
    last = npb.localizer_values(native_model, stim, "blocks.*.mlp.hook_post")
    rl = npb.record(native_model, texts, "blocks.*.mlp.hook_post", positions="last")
    np.testing.assert_array_equal(last.values.numpy(), rl.acts.numpy().astype(np.float64))


def test_welch_matches_scipy_with_unequal_groups_and_glm_differs():
    g = np.random.default_rng(0)
    x = np.r_[g.normal(1, 1, (10, 50)), g.normal(0, 3, (25, 50))]
    v = npb.LocalizerValues(torch.from_numpy(x), ["a"] * 10 + ["b"] * 25,
                            npb.UnitIndex.from_hooks({"h": 50}), "a", "b")
    t_ref, _ = stats.ttest_ind(x[:10], x[10:], axis=0, equal_var=False)
    np.testing.assert_allclose(v.t().numpy(), t_ref, rtol=1e-12)
    t_pooled, _ = stats.ttest_ind(x[:10], x[10:], axis=0, equal_var=True)
    np.testing.assert_allclose(v.t("glm").numpy(), t_pooled, rtol=1e-9)
    assert not np.allclose(t_ref, t_pooled)


def test_planted_units_found_by_top_k_and_by_fdr():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 400, generator=g, dtype=torch.float64)
    x[:30, [3, 77, 250]] += 2.0
    v = npb.LocalizerValues(x, ["t"] * 30 + ["c"] * 30, npb.UnitIndex.from_hooks({"h": 400}),
                            "t", "c", "planted")
    top = npb.localize(None, v, top_percent=0.75)
    assert top.columns.tolist() == [3, 77, 250] and top.task == "planted"
    fdr = npb.localize(None, v, alpha=0.05, correction="fdr")
    assert {3, 77, 250} <= set(fdr.columns.tolist()) and fdr.size < 10
    sh = npb.split_half_reliability(v, n_splits=20, top_percent=0.75)
    assert sh.mean > 0.9


def test_packaged_stimuli():
    lang = npb.load_localizer("language")
    assert [len(v) for v in lang.conditions.values()] == [240, 240]
    assert all(len(s.split()) == 12 for v in lang.conditions.values() for s in v)
    assert "Fedorenko" in lang.source and lang.target == "sentences"
    tom = npb.load_localizer("theory_of_mind")
    assert len(tom.conditions["belief"]) >= 24 and len(tom.conditions["photograph"]) >= 24
    md = npb.multiple_demand_stimuli(50, seed=3)
    for s in md.conditions["hard"]:
        lhs, rhs = s.split(" = ")
        a, op, b = lhs.split()
        assert int(a) >= 11 and int(b) >= 11 and eval(lhs) == int(rhs)
    for s in md.conditions["easy"]:
        lhs, rhs = s.split(" = ")
        assert all(len(w) == 1 for w in lhs.split()) and eval(lhs) == int(rhs)
    assert md.conditions != npb.multiple_demand_stimuli(50, seed=4).conditions
    assert npb.load_localizer("multiple_demand").n_stimuli == 200


def test_bad_input(native_model, monkeypatch):
    with pytest.raises(npb.NeuroprobeError, match="has 0 stimulus"):
        npb.LocalizerStimuli({"a": [], "b": ["x y", "z w"]})
    with pytest.raises(npb.NeuroprobeError, match="has 1 stimulus"):
        npb.LocalizerStimuli({"a": ["one"], "b": ["x y", "z w"]})
    with pytest.raises(npb.NeuroprobeError, match="at least two conditions"):
        npb.LocalizerStimuli({"a": ["x", "y"]})
    with pytest.raises(npb.NeuroprobeError, match="unknown"):
        npb.load_localizer("vision")
    with pytest.raises(npb.NeuroprobeError, match="baseline='c' is not a condition"):
        npb.LocalizerStimuli({"a": ["x", "y"], "b": ["z", "w"]}, baseline="c")
    v = npb.LocalizerValues(torch.randn(6, 10), ["a"] * 3 + ["b"] * 3,
                            npb.UnitIndex.from_hooks({"h": 10}), "a", "b")
    for bad in (0, -1, 100.5, True):
        with pytest.raises(npb.NeuroprobeError, match=r"top_percent must be in \(0, 100\]"):
            npb.localize(None, v, top_percent=bad)
    assert npb.localize(None, v, top_percent=100).size == 10
    with pytest.raises(npb.NeuroprobeError, match="needs at least 2 per condition"):
        npb.LocalizerValues(torch.randn(4, 10), ["a"] * 3 + ["b"],
                            npb.UnitIndex.from_hooks({"h": 10}), "a", "b")
    with pytest.raises(npb.NeuroprobeError, match="at least 4 stimuli per condition"):
        npb.split_half_reliability(v)
    with pytest.raises(npb.NeuroprobeError, match="pooling"):
        npb.localizer_values(native_model, {"a": [[1, 2], [3, 4]], "b": [[5, 6], [7, 8]]},
                             pooling="max")
    with pytest.raises(npb.NeuroprobeError, match="unknown hook"):
        npb.localize(native_model, {"a": [[1, 2], [3, 4]], "b": [[5, 6], [7, 8]]},
                     "blocks.0.hook_nope")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(npb.NeuroprobeError, match="pip install --no-deps brainscore-language"):
        loc.load_localizer("language")
