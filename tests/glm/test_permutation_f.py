"""max-T for F contrasts (OLS): the block-permutation null against refitting each permuted
design with nilearn's OLSModel."""

import numpy as np
import pytest

import neuroprobe as npb
from neuroprobe import NeuroprobeError

BLOCKS = [("a", 8), ("b", 8), ("c", 8)] * 5


def test_max_f_against_a_plain_loop():
    from nilearn.glm.regression import OLSModel

    from neuroprobe.glm.permutation_f import null_max_f

    d = npb.BlockDesign.from_blocks(BLOCKS, baseline="c", drift="polynomial", drift_order=2)
    X = d.matrix
    rng = np.random.default_rng(5)
    Y = rng.standard_normal((len(X), 40))
    Y[:, 0] += 1.2 * np.asarray(X["a"]) - 0.8 * np.asarray(X["b"])
    res = npb.fit_glm(Y, X)
    con = res.contrast(["a", "b"])
    assert con.stat_type == "F"
    null = null_max_f(res, con.contrast, 25, 7)
    blocks = d.blocks
    perm_rng = np.random.default_rng(7)
    ref = []
    for _ in range(25):
        order = perm_rng.permutation(len(blocks))
        Xp = X.copy()
        for s, src in enumerate(order):
            rows = slice(blocks.onset[s], blocks.onset[s] + blocks.length[s])
            Xp.iloc[rows, [0, 1]] = X.iloc[blocks.onset[src], [0, 1]].to_numpy()
        fit = OLSModel(Xp.to_numpy()).fit(Y)
        ref.append(np.asarray(fit.Fcontrast(con.contrast).F).max())
    np.testing.assert_allclose(null, ref, rtol=1e-10)
    p = con.corrected_p("max_t", n_permutations=25, seed=7).numpy()
    obs = con.F.numpy()
    expect = (1 + (np.asarray(ref)[None, :] >= obs[:, None]).sum(1)) / 26
    np.testing.assert_allclose(p, expect)
    assert bool(con.significant(0.05, "max_t", n_permutations=25, seed=7)[0])


def test_max_f_refuses_ar1_and_lower_tail():
    d = npb.BlockDesign.from_blocks(BLOCKS, baseline="c")
    Y = np.random.default_rng(0).standard_normal((len(d.matrix), 5))
    con = npb.fit_glm(Y, d, noise="ar1").contrast(["a", "b"])
    with pytest.raises(NeuroprobeError, match="implemented for OLS fits"):
        con.corrected_p("max_t", n_permutations=5)
