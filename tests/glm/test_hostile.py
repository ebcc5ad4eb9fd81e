"""Issue 16 (hostile inputs) for the GLM slice: every public entry point of neuroprobe.glm
refuses impossible input with a NeuroprobeError that names the argument, and warns
(NeuroprobeWarning) or refuses for degenerate science -- no raw numpy/torch/scipy error,
no silent wrong number.  The parametrized tables below are the sweep; ``CASES`` counts it."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import neuroprobe as npb
from neuroprobe.core.errors import NeuroprobeError, NeuroprobeWarning
from neuroprobe.core.probes import BatchMeta
from neuroprobe.glm.blocks import BlockStats, run_cells, task_vs_control

BD = npb.BlockDesign


def _Y(T=40, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, N, generator=g, dtype=torch.float64)


Y = _Y()
D = BD.from_blocks([("a", 5), ("b", 5)] * 4, baseline="b")
RES = npb.fit_glm(Y, D)
CON = RES.contrast("a")
# cell-means design plus an intercept: rank 2 < 3 columns (a + b = constant)
X_DEF = BD.from_blocks([("a", 5), ("b", 5)] * 4).matrix.assign(constant=1.0)


def _meta(ti):
    ti = torch.as_tensor(ti)
    return BatchMeta(ti, ti, ti)


def _probe_after(acts, ti):
    p = npb.GLMProbe("h", D)
    p.update({"h": acts}, _meta(ti))
    return p


# ---------------------------------------------------------------------------------------
# the sweep: (call, expected message) -> NeuroprobeError
# ---------------------------------------------------------------------------------------
RAISES = {
    # --- designs: science -------------------------------------------------------------
    "single condition": (lambda: BD.from_blocks([("task", 40)]), "single condition 'task'"),
    "single condition labels": (lambda: BD.from_labels(["x"] * 12), "single condition"),
    "baseline only condition": (lambda: BD.from_blocks([("task", 40)], baseline="task"),
                                "no condition column"),
    "baseline only + rest": (lambda: BD.from_blocks([("task", 5), (None, 5)] * 2,
                                                    baseline="task"), "no condition column"),
    "condition named constant": (lambda: BD.from_blocks([("constant", 5), ("b", 5)] * 2,
                                                        baseline="b"), "collide"),
    "condition named intercept": (lambda: BD.from_blocks([("intercept", 5), ("b", 5)] * 2),
                                  "collide"),
    "condition named run_1": (lambda: BD.from_blocks(
        [("run_1", 5, 0), ("b", 5, 0), ("run_1", 5, 1), ("b", 5, 1)], baseline="b"), "collide"),
    "condition named drift_1": (lambda: BD.from_blocks([("drift_1", 5), ("b", 5)] * 2,
                                                       drift="polynomial"), "collide"),
    "condition named run0_drift_2": (lambda: BD.from_labels(["run0_drift_2", "b"] * 5),
                                     "collide"),
    # --- designs: labels and blocks ---------------------------------------------------
    "tuple labels": (lambda: BD.from_labels([("a", "b")] * 20), r"labels\[0\] must be"),
    "2-D label array": (lambda: BD.from_labels(np.array([["a", "b"]] * 20)), "1-D"),
    "string labels": (lambda: BD.from_labels("aabb"), "split into characters"),
    "int labels": (lambda: BD.from_labels(5), "labels must be a sequence"),
    "dict labels": (lambda: BD.from_labels({"a": 1}), "labels must be a sequence"),
    "None labels": (lambda: BD.from_labels(None), "labels must be a sequence"),
    "list label": (lambda: BD.from_labels([["a"], ["b"]] * 3), r"labels\[0\]"),
    "labels 1 and '1'": (lambda: BD.from_labels([1, "1", "b"] * 3), "print the same"),
    "blocks 1 and '1'": (lambda: BD.from_blocks([(1, 3), ("1", 3), ("b", 3)]),
                         "print the same"),
    "blocks an int": (lambda: BD.from_blocks(5), "blocks must be a list"),
    "blocks a string": (lambda: BD.from_blocks("ab"), "blocks must be a list"),
    "block condition tuple": (lambda: BD.from_blocks([(("a", 1), 5), ("b", 5)]),
                              r"blocks\[0\] condition"),
    "block float length": (lambda: BD.from_blocks([("a", 2.5), ("b", 2)]), "length"),
    "block float run": (lambda: BD.from_blocks([("a", 2, 0.5), ("b", 2, 0)]), "run must be"),
    "runs a string": (lambda: BD.from_labels(["a", "b"] * 5, runs="0101010101"), "runs"),
    "runs floats": (lambda: BD.from_labels(["a", "b"] * 5, runs=[0.5] * 10), "integer run"),
    "runs wrong length": (lambda: BD.from_labels(["a", "b"] * 5, runs=[0, 1]), "runs"),
    "misspelt option": (lambda: BD.from_blocks([("a", 2), ("b", 2)], baselin="b"),
                        "did you mean 'baseline'"),
    "misspelt option labels": (lambda: BD.from_labels(["a", "b"], drfit="cosine"), "drift"),
    "high_pass inf": (lambda: BD.from_blocks([("a", 5), ("b", 5)], drift="cosine",
                                             high_pass=float("inf")), "high_pass"),
    "t_r inf": (lambda: BD.from_blocks([("a", 5), ("b", 5)], t_r=float("inf")), "t_r"),
    "t_r bool": (lambda: BD.from_blocks([("a", 5), ("b", 5)], t_r=True), "t_r"),
    "drift_order huge": (lambda: BD.from_blocks([("a", 5), ("b", 5)], drift="polynomial",
                                                drift_order=10**9), "drift_order"),
    "hrf t_r tiny": (lambda: BD.from_blocks([("a", 5), ("b", 5)], hrf="glover", t_r=1e-9),
                     "t_r"),
    "drift_order bool": (lambda: BD.from_blocks([("a", 5), ("b", 5)], drift="polynomial",
                                                drift_order=True), "drift_order"),
    # --- fit_glm --------------------------------------------------------------------------
    "acts/design length mismatch": (lambda: npb.fit_glm(Y[:30], D), "different numbers"),
    "NaN acts": (lambda: npb.fit_glm(torch.where(torch.arange(40)[:, None] == 3,
                                                 float("nan"), Y), D), "NaN or inf"),
    "inf acts": (lambda: npb.fit_glm(torch.where(torch.arange(40)[:, None] == 3,
                                                 float("inf"), Y), D), "NaN or inf"),
    "zero units": (lambda: npb.fit_glm(Y[:, :0], D), "no units"),
    "complex acts": (lambda: npb.fit_glm(torch.randn(40, 2, dtype=torch.complex64), D),
                     "must be real"),
    "wrong noise": (lambda: npb.fit_glm(Y, D, noise="AR1"), "noise must be"),
    "noise None": (lambda: npb.fit_glm(Y, D, noise=None), "noise must be"),
    "bins bool": (lambda: npb.fit_glm(Y, D, noise="ar1", bins=True), "bins"),
    "bins float": (lambda: npb.fit_glm(Y, D, noise="ar1", bins=10.0), "bins"),
    "allow_rank_deficient str": (lambda: npb.fit_glm(Y, D, allow_rank_deficient="no"),
                                 "allow_rank_deficient"),
    "memory_budget str": (lambda: npb.fit_glm(Y, D, memory_budget="lots"), "memory_budget"),
    "memory_budget 0": (lambda: npb.fit_glm(Y, D, memory_budget=0), "memory_budget"),
    "dtype str": (lambda: npb.fit_glm(Y, D, dtype="float32"), "dtype"),
    "units wrong length": (lambda: npb.fit_glm(Y, D, units=[1, 2]), "units"),
    "design with no columns": (lambda: npb.fit_glm(Y, np.zeros((40, 0))), "no columns"),
    "to_dataframe units an int": (lambda: RES.to_dataframe(units=5), "units must be"),
    "contrast to_dataframe units str": (lambda: CON.to_dataframe(units="h"), "units must be"),
    "n_permutations huge": (lambda: CON.corrected_p("max_t", n_permutations=10**12),
                            "n_permutations"),
    # --- contrasts ------------------------------------------------------------------------
    "non-estimable t": (lambda: npb.fit_glm(Y, X_DEF, allow_rank_deficient=True)
                        .contrast("a"), "not estimable"),
    "non-estimable F": (lambda: npb.fit_glm(Y, X_DEF, allow_rank_deficient=True)
                        .contrast(["a", "b"]), "not estimable"),
    "non-estimable vector": (lambda: npb.fit_glm(Y, X_DEF, allow_rank_deficient=True)
                             .contrast([0, 0, 1]), "not estimable"),
    "non-estimable ar1": (lambda: npb.fit_glm(Y, X_DEF, noise="ar1", allow_rank_deficient=True)
                          .contrast("constant"), "not estimable"),
    "overflow 1e400": (lambda: RES.contrast("a * 1e400"), "outside float64"),
    "overflow in parentheses": (lambda: RES.contrast("(a) * 1e400"), "outside float64"),
    "overflow by products": (lambda: RES.contrast("a * 1e308 * 10"), "overflow"),
    "underflow 1e-400": (lambda: RES.contrast("a * 1e-400"), "underflows"),
    "overflowing vector": (lambda: RES.contrast([1e308, 1e308]), "overflows"),
    "underflow by a quotient": (lambda: RES.contrast("1e-200 * a / 1e200 + constant"),
                                "underflows"),
    "underflow by products": (lambda: RES.contrast("a * 1e-200 * 1e-200 + constant"),
                              "underflows"),
    "trailing operator": (lambda: RES.contrast("a - "), "ends after an operator"),
    "deep parentheses": (lambda: RES.contrast("(" * 3000 + "a" + ")" * 3000), "nested"),
    "division by zero": (lambda: RES.contrast("a / 0"), "division by zero"),
    "division by 0.0": (lambda: RES.contrast("a / 0.0"), "division by zero"),
    "division by zero (parens)": (lambda: RES.contrast("(a) / 0"), "division by zero"),
    "division by underflow": (lambda: RES.contrast("a / 1e-400"), "underflows"),
    "singular F (repeat)": (lambda: RES.contrast(["a", "a"]), "linearly dependent"),
    "singular F (multiple)": (lambda: RES.contrast([[1, 0], [2, 0]]), "linearly dependent"),
    "singular F (3 rows)": (lambda: npb.fit_glm(Y[:36], BD.from_blocks(
        [("a", 4), ("b", 4), ("c", 4)] * 3, baseline="c")).contrast(["a", "b", "a - b"]),
        "linearly dependent"),
    "contrast None": (lambda: RES.contrast(None), "contrast must be"),
    "contrast dict": (lambda: RES.contrast({"a": 1}), "contrast must be"),
    "contrast scalar": (lambda: RES.contrast(1.0), "contrast must be"),
    "contrast unknown column": (lambda: RES.contrast("c"), "unknown column 'c'"),
    "contrast all zeros": (lambda: RES.contrast("a - a"), "all zeros"),
    "contrast wrong stat": (lambda: RES.contrast("a", stat="z"), "stat"),
    # --- significance / corrections / permutations -------------------------------------
    "alpha 0": (lambda: CON.significant(0), "alpha"),
    "alpha 1": (lambda: CON.significant(1.0), "alpha"),
    "alpha -0.1": (lambda: CON.significant(-0.1), "alpha"),
    "alpha nan": (lambda: CON.significant(float("nan")), "alpha"),
    "alpha str": (lambda: CON.significant("0.05"), "alpha"),
    "wrong correction": (lambda: CON.significant(0.05, "bonf"), "correction"),
    "correction None": (lambda: CON.significant(0.05, None), "correction"),
    "corrected_p wrong correction": (lambda: CON.corrected_p("bh"), "correction"),
    "wrong tail": (lambda: CON.significant(0.05, tail="both"), "tail"),
    "corrected_p wrong tail": (lambda: CON.corrected_p("holm", tail="x"), "tail"),
    "F lower tail": (lambda: RES.contrast(["a", "constant"]).significant(tail="lower"),
                     "upper tail"),
    "n_permutations 0": (lambda: CON.significant(correction="max_t", n_permutations=0),
                         "n_permutations"),
    "n_permutations -1": (lambda: CON.significant(correction="max_t", n_permutations=-1),
                          "n_permutations"),
    "n_permutations float": (lambda: CON.significant(correction="max_t", n_permutations=10.0),
                             "n_permutations"),
    "n_permutations str": (lambda: CON.corrected_p("max_t", n_permutations="10"),
                           "n_permutations"),
    "n_permutations bool": (lambda: CON.significant(correction="max_t", n_permutations=True),
                            "n_permutations"),
    "n_permutations ignored": (lambda: CON.significant(correction="holm", n_permutations=-3),
                               "n_permutations"),
    "seed float": (lambda: CON.significant(correction="max_t", n_permutations=5, seed=1.5),
                   "seed"),
    "seed str": (lambda: CON.significant(correction="max_t", n_permutations=5, seed="x"),
                 "seed"),
    "seed negative": (lambda: CON.corrected_p("max_t", n_permutations=5, seed=-1), "seed"),
    "seed None": (lambda: CON.significant(correction="max_t", n_permutations=5, seed=None),
                  "seed"),
    "seed Generator": (lambda: CON.significant(correction="max_t", n_permutations=5,
                                               seed=np.random.default_rng(0)), "seed"),
    "max_t weighs the intercept": (lambda: RES.contrast("constant").significant(
        correction="max_t", n_permutations=5), "condition columns"),
    # --- GLMProbe -------------------------------------------------------------------------
    "probe hook an int": (lambda: npb.GLMProbe(5, D), "probe target"),
    "probe hook a list": (lambda: npb.GLMProbe(["h"], D), "probe target"),
    "probe hook a glob": (lambda: npb.GLMProbe("blocks.*.hook_resid_post", D), "glob"),
    "probe design a string": (lambda: npb.GLMProbe("h", "abc"), "X must be"),
    "probe time index too large": (lambda: _probe_after(Y[:5], torch.arange(38, 43)),
                                   r"time_index in \[38, 42\]"),
    "probe negative time index": (lambda: _probe_after(Y[:5], torch.arange(-2, 3)),
                                  "time_index in"),
    "probe float time index": (lambda: _probe_after(Y[:5], torch.arange(5.0)),
                               "integer tensor"),
    "probe rows != time indices": (lambda: _probe_after(Y[:5], torch.arange(4)),
                                   "one entry per row"),
    "probe hook missing in batch": (lambda: npb.GLMProbe("h", D).update(
        {"g": Y[:5]}, _meta(torch.arange(5))), "watches hook 'h'"),
    "probe 1-D activations": (lambda: _probe_after(Y[:5, 0], torch.arange(5)),
                              r"\[rows, units\]"),
    "probe zero units": (lambda: _probe_after(Y[:5, :0], torch.arange(5)), "0 units"),
    "probe fit before data": (lambda: npb.GLMProbe("h", D).fit(), "seen 0"),
    "probe fit wrong noise": (lambda: _probe_after(Y, torch.arange(40)).fit(noise="x"),
                              "noise"),
    "probe fit allow str": (lambda: _probe_after(Y, torch.arange(40)).fit(
        allow_rank_deficient="yes"), "allow_rank_deficient"),
    "probe NaN acts": (lambda: _probe_after(torch.full((40, 2), float("nan"),
                                                       dtype=torch.float64),
                                            torch.arange(40)).fit(), "NaN or inf"),
    # --- residuals ------------------------------------------------------------------------
    "predicted units out of range": (lambda: npb.glm_predicted(RES, units=[99]),
                                     "outside"),
    "predicted units floats": (lambda: npb.glm_predicted(RES, units=[1.7]), "integer"),
    "predicted units float tensor": (lambda: npb.glm_predicted(RES, units=torch.tensor([1.0])),
                                     "integer"),
    "predicted units a string": (lambda: npb.glm_predicted(RES, units="a"), "units must be"),
    "predicted units a float": (lambda: npb.glm_predicted(RES, units=1.5), "units must be"),
    "predicted mask wrong size": (lambda: npb.glm_predicted(RES, units=[True, False]),
                                  "mask"),
    "predicted not a result": (lambda: npb.glm_predicted(5), "GLMResult"),
    "residuals not a result": (lambda: npb.glm_residuals("x", Y), "GLMResult"),
    "r_square not a result": (lambda: npb.glm_r_square(None, Y), "GLMResult"),
    "residuals wrong T": (lambda: npb.glm_residuals(RES, Y[:30]), "time points"),
    "residuals wrong N": (lambda: npb.glm_residuals(RES, Y[:, :3]), "N=5"),
    "residuals NaN Y": (lambda: npb.glm_residuals(RES, torch.full_like(Y, float("nan"))),
                        "NaN or inf"),
    "r_square NaN Y": (lambda: npb.glm_r_square(RES, torch.full_like(Y, float("inf"))),
                       "NaN or inf"),
    "residuals block 0": (lambda: npb.glm_residuals(RES, Y, block=0), "block"),
    "residuals units out of range": (lambda: npb.glm_residuals(RES, Y, units=[-6]),
                                     "outside"),
    # --- fixed effects / second level --------------------------------------------------
    "fixed_effects empty": (lambda: npb.fixed_effects([]), "empty"),
    "fixed_effects an int": (lambda: npb.fixed_effects(5), "list of t ContrastResults"),
    "fixed_effects a string": (lambda: npb.fixed_effects("abc"), "list of t ContrastResults"),
    "fixed_effects one contrast": (lambda: npb.fixed_effects(CON), "single ContrastResult"),
    "fixed_effects F contrast": (lambda: npb.fixed_effects(
        [CON, RES.contrast(["a", "constant"])]), r"contrasts\[1\] must be a t"),
    "fixed_effects other units": (lambda: npb.fixed_effects(
        [CON, npb.fit_glm(Y[:, :3], D).contrast("a")]), "units"),
    "fixed_effects other hook": (lambda: npb.fixed_effects(
        [npb.fit_glm(Y, D, units=npb.UnitIndex.from_hooks({"h": 5})).contrast("a"),
         npb.fit_glm(Y, D, units=npb.UnitIndex.from_hooks({"g": 5})).contrast("a")]),
        "other units"),
    "fixed_effects weighted str": (lambda: npb.fixed_effects([CON, CON],
                                                             precision_weighted="yes"),
                                   "precision_weighted"),
    "second_level one map": (lambda: npb.second_level([torch.randn(5)]), "more maps"),
    "second_level one row": (lambda: npb.second_level(torch.randn(1, 5)), "more maps"),
    "second_level maps <= columns": (lambda: npb.second_level(
        torch.randn(2, 5), pd.DataFrame({"x": [1.0, 1.0], "y": [0.0, 1.0]})), "more maps"),
    "second_level NaN maps": (lambda: npb.second_level(torch.full((4, 5), float("nan"))),
                              "NaN or inf"),
    "second_level F maps": (lambda: npb.second_level([RES.contrast(["a", "constant"])] * 3),
                            "one map"),
    "second_level 1-D": (lambda: npb.second_level(torch.randn(5)), "n_maps"),
    "second_level empty": (lambda: npb.second_level([]), "empty"),
    "paired one pair": (lambda: npb.paired_second_level(torch.randn(1, 5), torch.randn(1, 5)),
                        "at least 2 pairs"),
    "paired mismatch": (lambda: npb.paired_second_level(torch.randn(3, 5), torch.randn(4, 5)),
                        "same shape"),
    # --- the block-design fast path ---------------------------------------------------
    "BlockStats float lengths": (lambda: BlockStats.from_rows(Y, [4.5] * 12), "lengths"),
    "BlockStats negative lengths": (lambda: BlockStats.from_rows(Y, [-4, 44]), "at least one"),
    "BlockStats NaN rows": (lambda: BlockStats.from_rows(
        torch.full((8, 2), float("nan"), dtype=torch.float64), [2] * 4), "NaN or inf"),
    "BlockStats str rows": (lambda: BlockStats.from_rows("abc", [3]), "Y must be"),
    "run_cells float index": (lambda: run_cells(BlockStats.from_rows(Y, [4] * 10),
                                                [[0.5, 2]], [[1, 3]]), "integer"),
    "run_cells a string": (lambda: run_cells(BlockStats.from_rows(Y, [4] * 10), "ab", "cd"),
                           "task_blocks"),
    "run_cells an int": (lambda: run_cells(BlockStats.from_rows(Y, [4] * 10), 0, 1),
                         "task_blocks"),
    "run_cells out of range": (lambda: run_cells(BlockStats.from_rows(Y, [4] * 10),
                                                 [[0, 99]], [[1]]), r"\[0, 10\)"),
    "task_vs_control df 0": (lambda: task_vs_control(run_cells(
        BlockStats.from_rows(Y[:2], [1, 1]), [[0]], [[1]])), "degrees of freedom"),
}


@pytest.mark.parametrize("name", list(RAISES), ids=list(RAISES))
def test_refused(name):
    call, match = RAISES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeuroprobeWarning)
        with pytest.raises(NeuroprobeError, match=match):
            call()


# ---------------------------------------------------------------------------------------
# degenerate but computable: a NeuroprobeWarning and a defined result
# ---------------------------------------------------------------------------------------
def test_r_square_of_constant_units_is_nan_with_a_warning():
    Yc = Y.clone()
    Yc[:, 1] = 3.0
    with pytest.warns(NeuroprobeWarning, match="constant over time"):
        res = npb.fit_glm(Yc, D)
    with pytest.warns(NeuroprobeWarning, match="R\\^2"):
        r2 = npb.glm_r_square(res, Yc)
    assert torch.isnan(r2[1]) and torch.isfinite(r2[[0, 2, 3, 4]]).all()


def test_fixed_effects_of_different_contrasts_warns():
    with pytest.warns(NeuroprobeWarning, match="different contrasts"):
        npb.fixed_effects([CON, RES.contrast("constant")])


# ---------------------------------------------------------------------------------------
# right answers where there used to be wrong ones
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["1e-300 * a", "a * 1e-320", "1e150 * a", "a / 1e250",
                                   "2 * a * 3"])
def test_t_does_not_depend_on_the_scale_of_the_weights(scale):
    ref = CON
    c = RES.contrast(scale)
    torch.testing.assert_close(c.t, ref.t, rtol=1e-12, atol=0)
    torch.testing.assert_close(c.p, ref.p, rtol=1e-10, atol=0)


def test_f_does_not_depend_on_the_scale_of_the_rows():
    ref = RES.contrast(["a", "constant"])
    c = RES.contrast(np.array([[1e-200, 0.0], [0.0, 1e-200]]))
    torch.testing.assert_close(c.F, ref.F, rtol=1e-12, atol=0)


def test_estimable_contrast_of_a_rank_deficient_design_equals_the_full_rank_fit():
    full = npb.fit_glm(Y, BD.from_blocks([("a", 5), ("b", 5)] * 4)).contrast("a - b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an estimable contrast warns about nothing
        deficient = npb.fit_glm(Y, X_DEF, allow_rank_deficient=True).contrast("a - b")
    torch.testing.assert_close(deficient.t, full.t, rtol=1e-10, atol=1e-12)
    ar = npb.fit_glm(Y, X_DEF, noise="ar1", allow_rank_deficient=True).contrast("a - b")
    assert torch.isfinite(ar.t).all()


def test_zero_units_never_divide_by_zero_in_the_corrections():
    from neuroprobe.glm import pvalues as pv

    for method in pv.CORRECTIONS:
        assert pv.reject(np.zeros(0), 0.05, method).shape == (0,)
        assert pv.adjust(np.zeros(0), method).shape == (0,)
    assert pv.reject_t(np.zeros((2, 0)), np.array([5, 5]), 0.05, "bonferroni").shape == (2, 0)


def test_valid_inputs_keep_working():
    # numpy ints, whole-number float runs, int labels, tensors, pandas labels, rest blocks
    d1 = BD.from_blocks([("a", np.int64(5), 0), ("b", 5, np.int32(0))] * 2, baseline="b")
    assert d1.matrix.columns.tolist() == ["a", "constant"]
    d2 = BD.from_labels(pd.Series(["a", "b"] * 6), runs=np.repeat([0.0, 1.0], 6))
    assert d2.n_runs == 2
    d3 = BD.from_labels([1, 2] * 6)
    assert d3.conditions == ["1", "2"]
    d4 = BD.from_blocks([("task", 5), (None, 5)] * 3)  # one condition against rest
    assert d4.matrix.columns.tolist() == ["task", "constant"]
    rec_like = np.array(["a", "b"] * 6, dtype=object)
    assert BD.from_labels(rec_like).n_time == 12
    assert npb.glm_predicted(RES, units=torch.tensor([0, 2])).shape == (40, 2)
    assert npb.glm_predicted(RES, units=np.int64(3)).shape == (40, 1)
    assert npb.glm_predicted(RES, units=[-1]).shape == (40, 1)
    assert CON.significant(np.float64(0.05), seed=np.int64(3)).shape == (5,)
    assert RES.contrast("a", stat="F").F.shape == (5,)
    assert RES.contrast("(a) * 2 / 4").t.shape == (5,)
    for dt in (torch.float16, torch.bfloat16, torch.int64):  # converted to float64
        assert torch.isfinite(npb.fit_glm((Y * 4).to(dt), D).contrast("a").t).all()
    assert BD.from_labels([True, False] * 6).conditions == ["True", "False"]


def test_inputs_are_not_mutated():
    labels = ["a", "b"] * 6
    runs = np.zeros(12, int)
    BD.from_labels(labels, runs=runs)
    assert labels == ["a", "b"] * 6 and not runs.any()
    Yc = Y.clone()
    c = np.array([1.0, 0.0])
    npb.fit_glm(Yc, D).contrast(c)
    assert torch.equal(Yc, Y) and c.tolist() == [1.0, 0.0]


CASES = len(RAISES) + 2 + 5 + 5  # the sweep's case count (reported in the issue note)
