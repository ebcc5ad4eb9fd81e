"""fixed_effects and the second-level GLM against nilearn (compute_fixed_effects,
SecondLevelModel) on the same numbers."""

import numpy as np
import pandas as pd
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError

N = 50


def _img(v):
    import nibabel as nib

    return nib.Nifti1Image(np.asarray(v, np.float64).reshape(-1, 1, 1), np.eye(4))


def _mask():
    import nibabel as nib

    return nib.Nifti1Image(np.ones((N, 1, 1), np.int8), np.eye(4))


def _runs(n_runs=3, seed=0):
    d = npb.BlockDesign.from_blocks([("a", 6), ("b", 6)] * 4, baseline="b")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_runs):
        Y = rng.standard_normal((48, N)) + np.outer(d.matrix["a"], rng.standard_normal(N))
        out.append(npb.fit_glm(Y, d).contrast("a"))
    return out


@pytest.mark.parametrize("weighted", [False, True])
def test_fixed_effects_match_nilearn(weighted):
    from nilearn.glm.contrasts import compute_fixed_effects

    cons = _runs()
    ffx = npb.fixed_effects(cons, precision_weighted=weighted)
    ref = compute_fixed_effects([_img(c.effect) for c in cons],
                                [_img(c.variance) for c in cons], _mask(),
                                precision_weighted=weighted, dofs=[c.df for c in cons])
    eff, var, stat, z = (r.get_fdata().ravel() for r in ref)
    np.testing.assert_allclose(ffx.effect.numpy(), eff, rtol=1e-10)
    np.testing.assert_allclose(ffx.variance.numpy(), var, rtol=1e-10)
    np.testing.assert_allclose(ffx.t.numpy(), stat, rtol=1e-10)
    np.testing.assert_allclose(ffx.z.numpy(), z, rtol=1e-10, atol=1e-12)
    assert ffx.df == sum(c.df for c in cons)


def test_second_level_one_sample_and_paired_match_nilearn():
    from nilearn.glm.second_level import SecondLevelModel

    rng = np.random.default_rng(2)
    maps = rng.standard_normal((9, N)) + 0.5 * rng.standard_normal(N)
    res = npb.second_level(maps)
    for stat, ours in [("stat", res.contrast("intercept").t), ("z_score",
                                                               res.contrast("intercept").z)]:
        model = SecondLevelModel(mask_img=_mask()).fit(
            [_img(m) for m in maps], design_matrix=pd.DataFrame({"intercept": np.ones(9)}))
        ref = model.compute_contrast("intercept", output_type=stat).get_fdata().ravel()
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-12)
    # a list of maps / contrasts gives the same
    np.testing.assert_allclose(npb.second_level(list(torch.from_numpy(maps))).beta.numpy(),
                               res.beta.numpy(), rtol=1e-14)
    # paired: nilearn's paired design (condition +-1, one column per pair)
    a, b = maps, maps * 0.8 + rng.standard_normal((9, N)) * 0.3
    pr = npb.paired_second_level(a, b)
    design = pr.design
    model = SecondLevelModel(mask_img=_mask()).fit(
        [_img(m) for m in np.r_[a, b]], design_matrix=design)
    ref = model.compute_contrast("condition", output_type="stat").get_fdata().ravel()
    np.testing.assert_allclose(pr.contrast("condition").t.numpy(), ref, rtol=1e-10)
    one = npb.second_level(a - b).contrast("intercept").t.numpy()
    np.testing.assert_allclose(pr.contrast("condition").t.numpy(), one, rtol=1e-10)


def test_second_level_of_contrast_results_and_bad_input():
    cons = _runs(4)
    res = npb.second_level(cons)
    assert res.n_units == N and res.df_resid == 3
    with pytest.raises(NeuroprobeError, match="contrasts is empty"):
        npb.fixed_effects([])
    with pytest.raises(NeuroprobeError, match=r"contrasts\[1\] must be a t ContrastResult"):
        npb.fixed_effects([cons[0], cons[1].effect])
    with pytest.raises(NeuroprobeError, match="same shape"):
        npb.paired_second_level(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(NeuroprobeError, match="different numbers of units"):
        npb.second_level([np.zeros(3), np.zeros(4)])
