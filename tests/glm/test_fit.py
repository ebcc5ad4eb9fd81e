"""Tests of neuroprobe.glm.fit: exact against nilearn/statsmodels, planted structure, bad input."""

import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.core.probes import BatchMeta

matplotlib.use("Agg")

BLOCKS = [("a", 12), ("b", 12), ("c", 12)] * 6  # T = 216


def _design(**kw):
    kw.setdefault("baseline", "c")
    return npb.BlockDesign.from_blocks(BLOCKS, **kw)


def _data(X, N=400, rho=0.4, seed=0, offset=5.0):
    rng = np.random.default_rng(seed)
    T = len(X)
    e = rng.standard_normal((T, N))
    for t in range(1, T):
        e[t] += rho * e[t - 1]
    amp = rng.standard_normal(N)
    return offset + e + np.outer(np.asarray(X["a"]), amp)


def _nilearn(Y, X, noise, con):
    from nilearn.glm.contrasts import compute_contrast
    from nilearn.glm.first_level.first_level import run_glm

    labels, results = run_glm(Y, X, noise_model=noise)
    return labels, results, compute_contrast(labels, results, con)


def _rel(a, b):
    a = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=float)
    b = np.asarray(b, dtype=float).reshape(a.shape)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


@pytest.fixture(scope="module")
def ols_case():
    d = _design(drift="cosine", high_pass=0.02)
    X = d.matrix
    Y = _data(X)
    c = np.zeros(X.shape[1])
    c[0], c[1] = 1.0, -1.0
    return X, Y, c, _nilearn(Y, X.to_numpy(), "ols", c)


def test_ols_matches_nilearn(ols_case):
    X, Y, c, (labels, results, ref) = ols_case
    res = npb.fit_glm(Y, X)
    assert res.df_resid == len(X) - np.linalg.matrix_rank(X.to_numpy())
    assert res.df_resid == results[0.0].df_residuals
    assert _rel(res.beta, results[0.0].theta) < 1e-10
    con = res.contrast("a - b")
    np.testing.assert_array_equal(con.contrast, c)
    assert _rel(con.effect, ref.effect) < 1e-10
    assert _rel(con.variance, ref.variance) < 1e-10
    assert _rel(con.t, ref.stat()) < 1e-10
    assert _rel(con.p, ref.p_value()) < 1e-9
    assert _rel(con.z, ref.z_score()) < 1e-9
    assert con.df == ref.dof


def test_f_contrast_matches_nilearn(ols_case):
    from nilearn.glm.contrasts import compute_contrast

    X, Y, _, (labels, results, _) = ols_case
    C = np.eye(X.shape[1])[:2]
    ref = compute_contrast(labels, results, C)
    con = npb.fit_glm(Y, X).contrast(["a", "b"])
    assert con.stat_type == "F" and con.dim == 2
    assert _rel(con.F, ref.stat()) < 1e-10
    assert _rel(con.effect, ref.effect) < 1e-9
    assert _rel(con.variance, ref.variance) < 1e-10
    assert _rel(con.p, ref.p_value()) < 1e-8
    assert _rel(con.z, ref.z_score()) < 1e-8


def test_ar1_matches_nilearn():
    X = _design().matrix
    Y = _data(X, N=300, rho=0.5, seed=3)
    c = np.eye(X.shape[1])[0]
    labels, results, ref = _nilearn(Y, X.to_numpy(), "ar1", c)
    res = npb.fit_glm(Y, X, noise="ar1")
    same_bin = np.isclose(res.rho.numpy(), labels.astype(float), rtol=0, atol=1e-12)
    assert same_bin.mean() >= 0.9999
    con = res.contrast("a")
    assert _rel(con.t, ref.stat()) < 1e-8
    assert _rel(con.effect, ref.effect) < 1e-8
    assert _rel(con.p, ref.p_value()) < 1e-7
    assert _rel(con.z, ref.z_score()) < 1e-7
    # the unbinned rho equals nilearn's Yule-Walker estimate
    from nilearn.glm.first_level.first_level import _yule_walker
    from nilearn.glm.regression import OLSModel

    resid = OLSModel(X.to_numpy()).fit(Y).residuals
    np.testing.assert_allclose(res.rho_estimate.numpy(), _yule_walker(resid.T, 1)[:, 0],
                               rtol=1e-9)


def test_ar1_without_intercept_uses_nilearns_grand_mean():
    # no constant in the design: residual means are not zero and nilearn subtracts the
    # grand mean of all residuals before Yule-Walker
    X = pd.DataFrame({"a": np.tile([1.0] * 10 + [0.0] * 10, 8)})
    X["b"] = 1.0 - X["a"] + 0.01 * np.arange(160) / 160
    Y = _data(X, N=200, rho=0.3, seed=5, offset=2.0)
    labels, _, ref = _nilearn(Y, X.to_numpy(), "ar1", np.array([1.0, -1.0]))
    res = npb.fit_glm(Y, X, noise="ar1")
    assert np.isclose(res.rho.numpy(), labels.astype(float), atol=1e-12).mean() >= 0.9999
    assert _rel(res.contrast("a - b").t, ref.stat()) < 1e-8


def test_float32_input_close_to_float64(ols_case):
    X, Y, _, _ = ols_case
    Y32 = torch.as_tensor(Y, dtype=torch.float32)
    t64 = npb.fit_glm(Y32.double(), X).contrast("a - b").t
    for dtype in (torch.float64, torch.float32):
        for noise in ("ols", "ar1"):
            t = npb.fit_glm(Y32, X, dtype=dtype, noise=noise).contrast("a - b").t
            ref = npb.fit_glm(Y32.double(), X, noise=noise).contrast("a - b").t
            assert float((t - ref).abs().max()) <= 1e-4, (dtype, noise)
    assert float((npb.fit_glm(Y32, X).contrast("a - b").t - t64).abs().max()) <= 1e-4


def test_code_paths_agree(ols_case):
    """numpy float64, numpy float32 row tiles (any tile size) and the torch chunked path
    (used on GPUs) give the same statistics."""
    from neuroprobe.glm.design import block_segments
    from neuroprobe.glm.stats import _dense_stats_numpy, _dense_stats_torch, design_operator

    X, Y, _, _ = ols_case
    Xn = X.to_numpy()
    M = design_operator(Xn, ar=True, segments=None)
    P = Xn.shape[1]
    Y32 = torch.as_tensor(Y, dtype=torch.float32)
    ref = _dense_stats_numpy(Y32.double(), Xn, None, ar=True, center=False,
                             dtype=torch.float64, memory_budget=1 << 26)
    seg, _ = block_segments(Xn, list(X.columns))
    fast = _dense_stats_numpy(Y32.double(), Xn, seg, ar=True, center=False,
                              dtype=torch.float64, memory_budget=1 << 26)
    for name in ("xty", "xlag", "yy", "lag", "ysum"):
        torch.testing.assert_close(getattr(fast, name), getattr(ref, name), rtol=1e-12,
                                   atol=1e-9)
    for budget in (1, 1 << 26):
        for f in ("numpy", "torch"):
            if f == "numpy":
                st = _dense_stats_numpy(Y32, Xn, None, ar=True, center=True,
                                        dtype=torch.float64, memory_budget=budget)
            else:
                st = _dense_stats_torch(Y32, M, P, ar=True, center=True, dtype=torch.float64,
                                        device=torch.device("cpu"), memory_budget=budget,
                                        S=None)
            # undo the centring: X'y = X'yc + X'1 shift
            xty = st.xty + torch.as_tensor(Xn.sum(0))[:, None] * st.shift[None]
            torch.testing.assert_close(xty, ref.xty, rtol=1e-10, atol=1e-8)
            n = len(X)
            yy = st.yy + 2 * st.shift * st.ysum + n * st.shift**2
            torch.testing.assert_close(yy, ref.yy, rtol=1e-10, atol=1e-8)
            torch.testing.assert_close(st.last + st.shift, ref.last)
    a = npb.fit_glm(Y32, X, noise="ar1", memory_budget=1)
    b = npb.fit_glm(Y32, X, noise="ar1")
    torch.testing.assert_close(a.beta, b.beta, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a.rho, b.rho)


def test_contrast_strings():
    X = pd.DataFrame({"medical": [1.0, 0, 0, 1, 0, 0], "pathology": [0, 1.0, 0, 0, 1, 0],
                      "random": [0, 0, 1.0, 0, 0, 1], "x.1 b": np.arange(6.0)})
    res = npb.fit_glm(np.random.default_rng(0).standard_normal((6, 2)), X)
    assert res.contrast("medical + pathology - 2*random").contrast.tolist() == [1, 1, -2, 0]
    assert res.contrast("-0.5 * medical + x.1 b").contrast.tolist() == [-0.5, 0, 0, 1]
    assert res.contrast("medical/2 - random * 3").contrast.tolist() == [0.5, 0, -3, 0]
    with pytest.raises(NeuroprobeError, match="names unknown column 'medcal'; columns are: "
                                              "medical, pathology, random, x.1 b"):
        res.contrast("medcal - random")
    with pytest.raises(NeuroprobeError, match=r"contrast has shape \(3,\) but the design has 4"):
        res.contrast([1, -1, 0])
    with pytest.raises(NeuroprobeError, match="all zeros"):
        res.contrast("medical - medical")


def test_corrections_match_statsmodels(ols_case):
    from statsmodels.stats.multitest import multipletests

    X, Y, _, _ = ols_case
    con = npb.fit_glm(Y, X).contrast("a - b")
    for tail, p in [("upper", con.p), ("lower", con.p_lower), ("two-sided", con.p_two_sided)]:
        for method in ("fdr_bh", "holm", "bonferroni"):
            rej, padj, _, _ = multipletests(p.numpy(), alpha=0.05, method=method)
            mask = con.significant(0.05, method, tail=tail)
            np.testing.assert_array_equal(mask.numpy(), rej)
            np.testing.assert_allclose(con.corrected_p(method, tail=tail).numpy(), padj,
                                       rtol=1e-12)
        np.testing.assert_array_equal(con.significant(0.05, "none", tail=tail).numpy(),
                                      p.numpy() <= 0.05)


def test_bonferroni_equals_nilearn_threshold(ols_case):
    import nibabel as nib
    from nilearn.glm import threshold_stats_img

    X, Y, _, (_, _, ref) = ols_case
    con = npb.fit_glm(Y, X).contrast("a - b")
    z = con.z.numpy()
    img = nib.Nifti1Image(z.reshape(-1, 1, 1).astype(np.float64), np.eye(4))
    mask_img = nib.Nifti1Image(np.ones((z.size, 1, 1), np.int8), np.eye(4))
    for two_sided, tail in [(False, "upper"), (True, "two-sided")]:
        _, thr = threshold_stats_img(img, mask_img=mask_img, alpha=0.05,
                                     height_control="bonferroni", two_sided=two_sided)
        zz = np.abs(z) if two_sided else z
        mask = con.significant(0.05, "bonferroni", tail=tail).numpy()
        np.testing.assert_array_equal(mask, zz > thr)
    assert 0 < mask.sum() < z.size


def test_log10_p_finite_and_ordered():
    from scipy import stats

    X = _design().matrix
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((len(X), 6))
    Y[:, 1:] += np.outer(X["a"], [1, 30, 300, 3000, 3e4])
    con = npb.fit_glm(Y, X).contrast("a")
    lp = con.log10_p.numpy()
    assert np.isfinite(lp).all()
    assert (np.diff(lp[1:]) < 0).all()
    assert (con.p.numpy()[3:] == 0).all()  # the ordinary p underflows ...
    ok = con.p.numpy() > 1e-290  # ... and where it does not, log10_p agrees with scipy
    np.testing.assert_allclose(lp[ok], np.log10(con.p.numpy()[ok]), rtol=1e-8)
    # the asymptotic branch is continuous with scipy where both work
    t = np.array([30.0, 35.0])
    from neuroprobe.glm.pvalues import log_betainc_small

    x = 150 / (150 + t**2)
    np.testing.assert_allclose(np.log(0.5) + log_betainc_small(75.0, 0.5, x),
                               stats.t.logsf(t, 150), rtol=1e-10)
    assert (con.z.numpy()[3:] == con.z.numpy()[-1]).all()  # nilearn's clipping saturates z
    assert np.isfinite(con.log10_p_two_sided.numpy()).all()


def test_planted_units_found_by_every_correction():
    X = _design().matrix
    rng = np.random.default_rng(7)
    Y = rng.standard_normal((len(X), 2000))
    Y[:, :20] += 1.5 * np.asarray(X["a"])[:, None]
    con = npb.fit_glm(Y, X).contrast("a")
    for corr in ("bonferroni", "holm", "fdr_bh", "none", "max_t"):
        mask = con.significant(0.05, corr, n_permutations=200).numpy()
        assert mask[:20].all(), corr
        assert mask[20:].mean() < (0.1 if corr == "none" else 0.01), corr


def test_false_positive_rates_on_noise():
    X = _design().matrix
    n_seeds, N = 20, 500
    fw = {"none": [], "bonferroni": [], "max_t": []}
    rate_none = []
    for seed in range(n_seeds):
        Y = np.random.default_rng(100 + seed).standard_normal((len(X), N))
        con = npb.fit_glm(Y, X).contrast("a")
        for corr in fw:
            m = con.significant(0.05, corr, n_permutations=100, seed=seed).numpy()
            fw[corr].append(m.any())
            if corr == "none":
                rate_none.append(m.mean())
    assert abs(np.mean(rate_none) - 0.05) < 0.01
    # family-wise error at most alpha (binomial slack for 20 repetitions)
    assert np.mean(fw["bonferroni"]) <= 0.15
    assert np.mean(fw["max_t"]) <= 0.15
    assert np.mean(fw["none"]) == 1.0


def test_max_t_against_a_plain_loop():
    X = _design().matrix
    rng = np.random.default_rng(2)
    Y = rng.standard_normal((len(X), 50))
    Y[:, 0] += 0.8 * np.asarray(X["a"])
    res = npb.fit_glm(Y, X)
    con = res.contrast("a")
    p = con.corrected_p("max_t", n_permutations=30, seed=4, tail="two-sided").numpy()
    # slow reference: rebuild each permuted design and refit with nilearn's OLS
    from nilearn.glm.regression import OLSModel

    d = _design()
    blocks = d.blocks
    perm_rng = np.random.default_rng(4)
    null = []
    for _ in range(30):
        order = perm_rng.permutation(len(blocks))
        Xp = X.copy()
        for s, src in enumerate(order):
            rows = slice(blocks.onset[s], blocks.onset[s] + blocks.length[s])
            Xp.iloc[rows, [0, 1]] = X.iloc[blocks.onset[src], [0, 1]].to_numpy()
        fit = OLSModel(Xp.to_numpy()).fit(Y)
        null.append(np.abs(fit.Tcontrast(np.eye(X.shape[1])[0]).t).max())
    null = np.asarray(null)
    obs = np.abs(con.t.numpy())
    ref = (1 + (null[None, :] >= obs[:, None]).sum(1)) / 31
    np.testing.assert_allclose(p, ref)


def test_ar1_max_t_against_a_plain_loop():
    """AR(1) max-T: each unit keeps its rho bin; the permuted designs are whitened with it
    (reference: nilearn's ARModel refitted for every permutation and bin)."""
    from nilearn.glm.regression import ARModel

    X = _design().matrix
    Y = _data(X, N=40, rho=0.5, seed=11, offset=1.0)
    Y[:, 0] += 3.0 * np.asarray(X["a"])
    res = npb.fit_glm(Y, X, noise="ar1")
    con = res.contrast("a - b")
    p = con.corrected_p("max_t", n_permutations=15, seed=3, tail="two-sided").numpy()
    blocks = _design().blocks
    c = np.zeros(X.shape[1])
    c[0], c[1] = 1.0, -1.0
    rng = np.random.default_rng(3)
    rho = res.rho.numpy()
    null = []
    for _ in range(15):
        order = rng.permutation(len(blocks))
        Xp = X.copy()
        for s_, src in enumerate(order):
            rows = slice(blocks.onset[s_], blocks.onset[s_] + blocks.length[s_])
            Xp.iloc[rows, [0, 1]] = X.iloc[blocks.onset[src], [0, 1]].to_numpy()
        tmax = 0.0
        for r in np.unique(rho):
            cols = rho == r
            fit = ARModel(Xp.to_numpy(), float(r)).fit(Y[:, cols])
            tmax = max(tmax, float(np.abs(np.atleast_1d(fit.Tcontrast(c).t)).max()))
        null.append(tmax)
    null = np.asarray(null)
    obs = np.abs(con.t.numpy())
    ref = (1 + (null[None, :] >= obs[:, None]).sum(1)) / 16
    np.testing.assert_allclose(p, ref)
    assert p[0] == 1 / 16


def test_streaming_probe_equals_dense(ols_case):
    X, Y, _, _ = ols_case
    Yt = torch.as_tensor(Y, dtype=torch.float32)

    def meta(a, b):
        return BatchMeta(*(torch.arange(a, b),) * 3)

    cuts = [0, 50, 51, 130, len(X)]
    shards = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=False):
        p = npb.GLMProbe("h", X)
        p.update({"h": Yt[a:b]}, meta(a, b))
        shards.append(p)
    merged = shards[2].merge(shards[0]).merge(shards[3]).merge(shards[1])  # any order
    with pytest.raises(NeuroprobeError, match="has seen 51 of the design's T=216"):
        shards[0].merge(shards[1]).fit()
    for noise in ("ols", "ar1"):
        a = merged.fit(noise=noise).contrast("a - b")
        b = npb.fit_glm(Yt.double(), X, noise=noise).contrast("a - b")
        assert float((a.t - b.t).abs().max()) < 1e-8
    for noise in ("ols", "ar1"):
        mt_a = merged.fit(noise=noise).contrast("a").corrected_p("max_t", n_permutations=20)
        mt_b = npb.fit_glm(Yt.double(), X, noise=noise).contrast("a").corrected_p(
            "max_t", n_permutations=20)
        torch.testing.assert_close(mt_a, mt_b)


def test_constant_units():
    X = _design().matrix
    Y = np.random.default_rng(0).standard_normal((len(X), 5))
    Y[:, 1] = 0.0
    Y[:, 3] = 0.7
    with pytest.warns(UserWarning, match="2 of 5 units are constant"):
        res = npb.fit_glm(Y, X, noise="ar1")
    assert res.n_constant == 2
    con = res.contrast("a - b")
    for name in ("t", "p", "z", "log10_p", "p_two_sided"):
        v = getattr(con, name).numpy()
        assert np.isfinite(v).all(), name
    assert (con.t.numpy()[[1, 3]] == 0).all() and (con.p.numpy()[[1, 3]] == 1).all()
    m = con.significant(0.5, "none", tail="two-sided").numpy()
    assert not m[[1, 3]].any()


def test_bad_input():
    X = _design().matrix
    Y = np.random.default_rng(0).standard_normal((len(X), 8))
    with pytest.raises(NeuroprobeError, match=r"Y has shape \[T=215, N\] but X has shape "
                                              r"\(216, 3\)"):
        npb.fit_glm(Y[:-1], X)
    Yb = Y.copy()
    Yb[3, 2] = np.nan
    Yb[0, 5] = np.inf
    with pytest.raises(NeuroprobeError, match=r"NaN or inf in 2 unit\(s\), first: \[2, 5\]"):
        npb.fit_glm(Yb, X)
    Xb = X.copy()
    Xb.iloc[4, 0] = np.nan
    with pytest.raises(NeuroprobeError, match=r"X contains NaN or inf in column\(s\) \['a'\]"):
        npb.fit_glm(Y, Xb)
    with pytest.raises(NeuroprobeError, match=r"more time points than the rank of X: T=3, "
                                              r"rank\(X\)=3"):
        npb.fit_glm(Y[:3], np.eye(3))
    Xr = X.copy()
    Xr["c"] = 1.0 - X["a"] - X["b"]
    with pytest.raises(NeuroprobeError, match=r"rank deficient.*\['a', 'b', 'constant', 'c'\]"):
        npb.fit_glm(Y, Xr)
    res = npb.fit_glm(Y, Xr, allow_rank_deficient=True)
    ok = npb.fit_glm(Y, X).contrast("a - b").t
    torch.testing.assert_close(res.contrast("a - b").t, ok)  # estimable contrast unchanged
    con = npb.fit_glm(Y, X).contrast("a")
    for alpha in (0, 1, -0.1, 1.5, "0.05"):
        with pytest.raises(NeuroprobeError, match="alpha must be a number in"):
            con.significant(alpha)
    with pytest.raises(NeuroprobeError, match="correction must be one of"):
        con.significant(0.05, "bh")
    with pytest.raises(NeuroprobeError, match="noise must be 'ols' or 'ar1'"):
        npb.fit_glm(Y, X, noise="ar2")
    with pytest.raises(NeuroprobeError, match="no block structure to permute"):
        npb.fit_glm(Y, npb.BlockDesign.from_blocks(BLOCKS, baseline="c", hrf="glover")
                    ).contrast("a").significant(correction="max_t")
    with pytest.raises(NeuroprobeError, match="also weighs \\['constant'\\]"):
        npb.fit_glm(Y, X).contrast("a + constant").significant(correction="max_t")


def test_dataframes_and_plots():
    from neuroprobe.core.units import UnitIndex

    X = _design().matrix
    Y = np.random.default_rng(0).standard_normal((len(X), 12))
    Y[:, 4] += np.asarray(X["a"])
    units = UnitIndex.from_hooks({"blocks.0.mlp.hook_post": 6, "blocks.1.mlp.hook_post": 6})
    res = npb.fit_glm(Y, X, units=units)
    con = res.contrast("a")
    df = con.to_dataframe()
    assert df.columns.tolist()[:4] == ["unit", "hook", "layer", "index"]
    assert {"effect", "variance", "t", "p", "p_two_sided", "z", "log10_p"} <= set(df.columns)
    assert df.loc[4, "t"] == pytest.approx(float(con.t[4]))
    assert res.to_dataframe().columns.tolist()[4:7] == ["beta_a", "beta_b", "beta_constant"]
    ax = con.plot_map(mask=con.significant(0.05, "none"))
    assert ax.images[0].get_array().shape == (2, 6)
    for bad in ([1, 2], np.ones(5, bool), np.arange(12)):
        with pytest.raises(NeuroprobeError, match=r"mask must be a boolean array of one entry"):
            con.plot_map(mask=bad)
    ax = con.plot_histogram(alpha=0.05, correction="none")
    assert "significant" in ax.get_title()
    assert "GLMResult(noise='ols', T=216, N=12" in repr(res)
    assert repr(con).startswith("ContrastResult(t, N=12")
    with pytest.raises(NeuroprobeError, match="units has 3 entries"):
        con.to_dataframe(units=units.subset([0, 1, 2]))


def test_recording_input_keeps_units():
    X = _design().matrix

    class Rec:
        pass

    from neuroprobe.core.units import UnitIndex

    r = Rec()
    r.acts = torch.randn(len(X), 4)
    r.units = UnitIndex.from_hooks({"blocks.2.hook_resid_post": 4})
    res = npb.fit_glm(r, X)
    assert res.units is r.units
    assert res.contrast("a").to_dataframe()["layer"].tolist() == [2, 2, 2, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        npb.fit_glm(r.acts, X)


def test_glm_probe_during_record_matches_fit_glm(native_model):
    """The probe fed by record/stream (real hooks, batches of prompts) equals fit_glm."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 100, (int(n),), generator=g).tolist()
               for n in torch.randint(6, 12, (12,), generator=g)]
    labels = ["task", "control"] * 6
    hook = "blocks.1.mlp.hook_post"
    rec = npb.record(native_model, prompts, hooks=hook, labels=labels, batch_size=4)
    d = npb.BlockDesign.from_labels(rec, baseline="control")
    probe = npb.GLMProbe(hook, d)
    rec2 = npb.record(native_model, prompts, hooks=hook, batch_size=3,
                      probes=[probe])
    torch.testing.assert_close(rec2.acts, rec.acts)  # (batching changes float32 rounding)
    for noise in ("ols", "ar1"):
        a = probe.fit(noise=noise, units=rec.units).contrast("task")
        b = npb.fit_glm(rec2, d, noise=noise).contrast("task")
        torch.testing.assert_close(a.t, b.t, rtol=1e-9, atol=1e-9)
        assert a.units == rec.units


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("noise", ["ols", "ar1"])
def test_fit_glm_on_cuda_equals_cpu(noise):
    """device="cuda": float64 gives the CPU numbers (1e-10), float32 compute within 1e-4
    of them in t; results live on the GPU."""
    rng = np.random.default_rng(0)
    d = npb.BlockDesign.from_labels(list("ab" * 40 + "c" * 40), baseline="c",
                                    drift="polynomial", drift_order=2)
    Y = rng.standard_normal((len(d.matrix), 300)) + 2.0
    Y[:, :30] += np.outer(d.matrix["a"].to_numpy(), np.ones(30))
    cpu = npb.fit_glm(Y, d, noise=noise).contrast("a - b")
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        gpu = npb.fit_glm(Y, d, noise=noise, device="cuda", dtype=dtype).contrast("a - b")
        assert gpu.t.device.type == "cuda"
        np.testing.assert_allclose(gpu.t.double().cpu().numpy(), cpu.t.numpy(), rtol=rtol,
                                   atol=rtol)
        np.testing.assert_allclose(gpu.p.double().cpu().numpy(), cpu.p.numpy(),
                                   rtol=1e3 * rtol, atol=rtol)
