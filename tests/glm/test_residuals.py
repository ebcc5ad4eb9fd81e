"""glm_predicted / glm_residuals / glm_r_square against nilearn's RegressionResults."""

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError

BLOCKS = [("a", 8), ("b", 8), ("c", 8)] * 5  # T = 120


def _case(seed=0, N=60):
    d = npb.BlockDesign.from_blocks(BLOCKS, baseline="c", drift="cosine", high_pass=0.02)
    X = d.matrix
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((len(X), N))
    for t in range(1, len(X)):
        e[t] += 0.5 * e[t - 1]
    return X, 2.0 + e + np.outer(X["a"].to_numpy(), rng.standard_normal(N))


@pytest.mark.parametrize("noise", ["ols", "ar1"])
def test_match_nilearn_regression_results(noise):
    from nilearn.glm.first_level.first_level import run_glm

    X, Y = _case()
    labels, results = run_glm(Y, X.to_numpy(), noise_model=noise)
    res = npb.fit_glm(Y, X, noise=noise)
    pred = npb.glm_predicted(res).numpy()
    resid = npb.glm_residuals(res, Y, block=7).numpy()
    r2 = npb.glm_r_square(res, torch.from_numpy(Y), block=11).numpy()
    for val, rr in results.items():
        cols = np.flatnonzero(labels == val)
        np.testing.assert_allclose(pred[:, cols], rr.predicted, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(resid[:, cols], rr.residuals, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(r2[cols], rr.r_square, rtol=1e-10)
    sub = npb.glm_residuals(res, Y, units=[3, 1])
    np.testing.assert_allclose(sub.numpy(), resid[:, [3, 1]], rtol=1e-14)
    mask = np.zeros(Y.shape[1], bool)
    mask[5:9] = True
    np.testing.assert_allclose(npb.glm_r_square(res, Y, units=mask).numpy(), r2[5:9])


def test_bad_input():
    X, Y = _case()
    res = npb.fit_glm(Y, X)
    with pytest.raises(NeuroprobeError, match=r"Y must be \[T, N=60\]"):
        npb.glm_residuals(res, Y[:, :5])
    with pytest.raises(NeuroprobeError, match="outside"):
        npb.glm_predicted(res, units=[60])
    with pytest.raises(NeuroprobeError, match="fitted on T=120"):
        npb.glm_r_square(res, Y[:50])
