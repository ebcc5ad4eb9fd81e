"""Tests of neuroprobe.glm.design (BlockDesign)."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

import neuroprobe as npb
from neuroprobe import NeuroprobeError

matplotlib.use("Agg")


def test_boxcars_and_intercept_rules():
    d = npb.BlockDesign.from_blocks([("med", 3), ("rand", 2)] * 2, baseline="rand")
    X = d.matrix
    assert X.columns.tolist() == ["med", "constant"]
    np.testing.assert_array_equal(X["med"], [1, 1, 1, 0, 0, 1, 1, 1, 0, 0])
    # every condition its own column: boxcars sum to one, no intercept (cell means)
    d2 = npb.BlockDesign.from_blocks([("med", 3), ("rand", 2)] * 2)
    assert d2.matrix.columns.tolist() == ["med", "rand"]
    np.testing.assert_array_equal(d2.matrix.sum(1), 1.0)
    # unlabelled rest blocks -> the intercept stays
    d3 = npb.BlockDesign.from_blocks([("med", 3), (None, 2)] * 2)
    assert d3.matrix.columns.tolist() == ["med", "constant"]
    assert np.linalg.matrix_rank(d2.matrix.to_numpy()) == 2


def test_implicit_baseline_and_own_column_give_same_t():
    blocks = [("med", 6), ("rand", 6)] * 5
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((60, 7))
    a = npb.fit_glm(Y, npb.BlockDesign.from_blocks(blocks, baseline="rand")).contrast("med")
    b = npb.fit_glm(Y, npb.BlockDesign.from_blocks(blocks)).contrast("med - rand")
    np.testing.assert_allclose(a.t.numpy(), b.t.numpy(), rtol=1e-10)


def test_runs_drifts_match_nilearn():
    from nilearn.glm.first_level import make_first_level_design_matrix

    d = npb.BlockDesign.from_blocks(
        [("a", 10, 0), ("b", 10, 0), ("a", 10, 1), ("b", 10, 1)], baseline="b",
        drift="cosine", high_pass=0.05,
    )
    X = d.matrix
    assert X.columns.tolist()[:1] == ["a"] and "run_1" in X and X.columns[-1] == "constant"
    assert "run0_drift_1" in X and "run1_drift_1" in X
    np.testing.assert_array_equal(X["run0_drift_1"].to_numpy()[20:], 0)
    # the per-run cosine basis equals nilearn's for a run of 20 frames
    ref = make_first_level_design_matrix(np.arange(20.0), drift_model="cosine", high_pass=0.05)
    ref_cols = [c for c in ref.columns if c.startswith("drift")]
    ours = X[[c for c in X.columns if c.startswith("run0_drift")]].to_numpy()[:20]
    np.testing.assert_allclose(ours, ref[ref_cols].to_numpy(), atol=1e-12)
    refp = make_first_level_design_matrix(np.arange(40.0), drift_model="polynomial",
                                          drift_order=3)
    dp = npb.BlockDesign.from_labels(["a"] * 20 + ["b"] * 20, baseline="b",
                                     drift="polynomial", drift_order=3)
    np.testing.assert_allclose(
        dp.matrix[["drift_1", "drift_2", "drift_3"]].to_numpy(),
        refp[["drift_1", "drift_2", "drift_3"]].to_numpy(), atol=1e-12,
    )


def test_hrf_convolution_matches_nilearn_kernel():
    from nilearn.glm.first_level import glover_hrf, spm_hrf

    for name, ref in [("glover", glover_hrf), ("spm", spm_hrf)]:
        d = npb.BlockDesign.from_blocks([("a", 1), ("b", 39)], baseline="b", hrf=name, t_r=2.0,
                                        hrf_oversampling=1)
        k = ref(t_r=2.0, oversampling=1, time_length=32.0)
        np.testing.assert_allclose(d.matrix["a"].to_numpy()[: k.size], k, atol=1e-12)
        assert "constant" in d.matrix


@pytest.mark.parametrize("hrf", ["glover", "spm"])
@pytest.mark.parametrize("t_r", [1.0, 2.0, 0.7])
def test_hrf_oversampling_matches_nilearn_design_matrix(hrf, t_r):
    """With nilearn's default oversampling (50) the HRF regressors equal those of
    make_first_level_design_matrix for the same blocks as events (two runs: per run)."""
    from nilearn.glm.first_level import make_first_level_design_matrix

    blocks = [("a", 6), ("b", 9), ("c", 5), ("a", 3), ("b", 7), ("c", 10)]
    runs = [(c, n, r) for r in (0, 1) for c, n in (blocks if r == 0 else blocks[::-1])]
    d = npb.BlockDesign.from_blocks(runs, baseline="c", hrf=hrf, t_r=t_r)
    assert d.hrf_oversampling == 50
    for r in (0, 1):
        rows = np.flatnonzero(d.runs == r)
        ev, t0 = [], 0
        for c, n, rr in runs:
            if rr != r:
                continue
            ev.append({"onset": t0 * t_r, "duration": n * t_r, "trial_type": c})
            t0 += n
        ref = make_first_level_design_matrix(np.arange(rows.size) * t_r, pd.DataFrame(ev),
                                             hrf_model=hrf, drift_model=None)
        for c in ("a", "b"):
            np.testing.assert_allclose(d.matrix[c].to_numpy()[rows], ref[c].to_numpy(),
                                       rtol=1e-10, atol=1e-13)
    with pytest.raises(NeuroprobeError, match="hrf_oversampling must be an int >= 1"):
        npb.BlockDesign.from_blocks(blocks, hrf=hrf, hrf_oversampling=0)


def test_from_labels_and_blocks_table():
    labels = ["x"] * 4 + ["y"] * 3 + ["x"] * 2
    d = npb.BlockDesign.from_labels(labels, baseline="y")
    assert d.blocks["length"].tolist() == [4, 3, 2]
    assert d.blocks["condition"].tolist() == ["x", "y", "x"]

    class Rec:  # a Recording stand-in: acts + labels
        acts = np.zeros((9, 2))

    Rec.labels = np.asarray(labels, dtype=object)
    assert npb.BlockDesign.from_labels(Rec(), baseline="y").matrix.equals(d.matrix)
    Rec.labels = None
    with pytest.raises(NeuroprobeError, match="no labels"):
        npb.BlockDesign.from_labels(Rec())


def test_bad_input():
    with pytest.raises(NeuroprobeError, match="baseline='z' is not a condition.*a, b"):
        npb.BlockDesign.from_blocks([("a", 2), ("b", 2)], baseline="z")
    with pytest.raises(NeuroprobeError, match="length must be a positive int"):
        npb.BlockDesign.from_blocks([("a", 0)])
    with pytest.raises(NeuroprobeError, match=r"blocks\[1\] must be"):
        npb.BlockDesign.from_blocks([("a", 2), "b"])
    with pytest.raises(NeuroprobeError, match="drift must be one of"):
        npb.BlockDesign.from_blocks([("a", 2)], drift="spline")
    with pytest.raises(NeuroprobeError, match="hrf must be one of"):
        npb.BlockDesign.from_blocks([("a", 2)], hrf="fir")
    with pytest.raises(NeuroprobeError, match="consecutive stretches"):
        npb.BlockDesign.from_blocks([("a", 2, 0), ("b", 2, 1), ("a", 2, 0)])
    with pytest.raises(NeuroprobeError, match="no labelled time point"):
        npb.BlockDesign.from_labels([None, ""])


def test_plot_design():
    d = npb.BlockDesign.from_blocks([("a", 4), ("b", 4)] * 2, drift="polynomial")
    ax = d.plot()
    assert [t.get_text() for t in ax.get_xticklabels()] == list(d.matrix.columns)
    assert "BlockDesign(T=16" in repr(d)
