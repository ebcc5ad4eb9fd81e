"""The p-values and corrections of neuroprobe.glm.pvalues against scipy, nilearn and statsmodels."""

import numpy as np
import pytest
import torch
from scipy import stats

import neuroprobe as npb
from neuroprobe.glm import pvalues as pv

METHODS = ("bonferroni", "sidak", "holm", "holm-sidak", "simes-hochberg", "fdr_bh", "fdr_by")


def _pvalue_sets():
    rng = np.random.default_rng(0)
    mixed = np.r_[rng.uniform(0, 1, 300), rng.uniform(0, 1e-4, 40), [0.0, 1.0, 0.05, 0.05]]
    ties = np.repeat([0.001, 0.01, 0.02, 0.5], 25)
    tiny = np.r_[1e-300, 1e-200, 1e-30, rng.uniform(0, 1, 50)]
    return [mixed, ties, tiny, np.array([0.03]), rng.uniform(0, 0.05, 1000)]


@pytest.mark.parametrize("method", METHODS)
def test_corrections_match_statsmodels_numbers(method):
    from statsmodels.stats.multitest import multipletests

    for p in _pvalue_sets():
        for alpha in (0.01, 0.05, 0.2):
            rej, padj, _, _ = multipletests(p, alpha=alpha, method=method)
            np.testing.assert_array_equal(pv.reject(p, alpha, method), rej)
            np.testing.assert_allclose(pv.adjust(p, method), padj, rtol=1e-10, atol=0)


def test_new_corrections_through_contrast():
    """significant / corrected_p accept the statsmodels names and give their numbers."""
    from statsmodels.stats.multitest import multipletests

    d = npb.BlockDesign.from_blocks([("a", 6), ("b", 6)] * 5, baseline="b")
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((60, 300))
    Y[:, :30] += 1.5 * d.matrix["a"].to_numpy()[:, None]
    con = npb.fit_glm(torch.from_numpy(Y), d).contrast("a")
    for method in ("fdr_by", "sidak", "holm-sidak", "simes-hochberg"):
        for tail, p in [("upper", con.p), ("two-sided", con.p_two_sided)]:
            rej, padj, _, _ = multipletests(p.numpy(), alpha=0.05, method=method)
            np.testing.assert_array_equal(con.significant(0.05, method, tail=tail).numpy(), rej)
            np.testing.assert_allclose(con.corrected_p(method, tail=tail).numpy(), padj,
                                       rtol=1e-10)
        assert 0 < int(con.significant(0.05, method).sum()) <= 30 + 5


@pytest.mark.parametrize("df", [1.0, 3.5, 30.0, 1994.0, np.inf])
def test_t_tails_and_z_from_one_tail_equal_scipy_and_nilearn(df):
    """One stdtr of -|t| gives scipy's sf/cdf (the small tail bit for bit, the large one
    within an ulp) and nilearn's z (isf of the clipped p; ppf of the clipped cdf below 0)."""
    from neuroprobe.glm import pvalues as pv

    rng = np.random.default_rng(0)
    t = np.r_[rng.standard_normal(2000) * 4, 0.0, -0.0, 1e-300, -1e-300, 1e-17, -1e-17,
              40.0, -40.0, 1e4, -1e4, np.inf, -np.inf, np.nan]
    sf, cdf, q = pv.t_tails(t, df)
    ref_sf, ref_cdf = stats.t.sf(t, df), stats.t.cdf(t, df)
    small = np.where(t >= 0, ref_sf, ref_cdf)
    np.testing.assert_array_equal(q, small)
    np.testing.assert_allclose(sf, ref_sf, rtol=3e-16, atol=0)
    np.testing.assert_allclose(cdf, ref_cdf, rtol=3e-16, atol=0)
    np.testing.assert_array_equal(pv.t_nilearn_z(t, q), pv.nilearn_z(ref_sf, ref_cdf))


def test_t_tails_split_over_threads_equal_one_call():
    from neuroprobe.glm import pvalues as pv

    t = np.random.default_rng(1).standard_normal(120_001) * 3
    one = pv.t_tails(t, 57.0, n_threads=1)
    two = pv.t_tails(t, 57.0, n_threads=2)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(two[2], stats.t.sf(np.abs(t), 57.0))
