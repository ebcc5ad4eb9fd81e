"""Tests of neuroprobe.spectrum.spectrum (eigenspectrum, power-law alpha, random projections)
(the moving dot and the digits autoencoder are tested in tests/test_testbeds.py).

Reference values are computed inside the tests with numpy / scikit-learn / an inline copy of
the Stringer et al. (MouseLand) weighted fit that reptrix also ships; when the ``reptrix``
package itself is installed (``pip install --no-deps reptrix``) it is checked directly too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.core.probes import BatchMeta, RunningCovariance
from neuroprobe.core.units import Directions
from neuroprobe.spectrum.spectrum import (
    Eigenspectrum,
    SpectrumProbe,
    alpha_by_layer,
    average_action,
    eigenspectrum,
    explained_input_variance,
    powerlaw_alpha,
    random_projections,
)
from neuroprobe.testbeds import MLPAutoencoder, moving_dot


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _planted(T, N, scales, seed=0, dtype=torch.float32):
    """Gaussian data whose covariance eigenvalues are ``scales**2`` (in a random basis)."""
    g = _gen(seed)
    q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    x = torch.randn(T, N, generator=g, dtype=torch.float64) * scales
    return (x @ q.T + 3.0).to(dtype)  # non-zero mean on purpose


def _exact_spectrum_data(alpha, N=600, T=1200, seed=0):
    """Data whose *sample* covariance has eigenvalues exactly k**alpha, k = 1..N."""
    g = _gen(seed)
    u = torch.randn(T, N, generator=g, dtype=torch.float64)
    u = u - u.mean(0)
    u, _ = torch.linalg.qr(u)  # orthonormal, centred columns
    v, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    lam = torch.arange(1, N + 1, dtype=torch.float64) ** alpha
    return (u * torch.sqrt(lam * (T - 1))) @ v.T, lam


def _meta(a, b):
    r = torch.arange(a, b)
    return BatchMeta(prompt_index=r, position=r, time_index=r)


# ----------------------------------------------------------------------------------------
# eigenspectrum: exact route, chunking, streaming probe, recordings
# ----------------------------------------------------------------------------------------
def test_exact_route_equals_numpy_eigh():
    scales = torch.linspace(5.0, 0.05, 60, dtype=torch.float64)
    x = _planted(800, 60, scales)
    spec = eigenspectrum(x, max_components=60)
    ref = np.linalg.eigh(np.cov(x.double().numpy().T))[0][::-1]
    assert spec.method == "exact" and spec.n_components == 60
    np.testing.assert_allclose(spec.eigenvalues.numpy(), ref, rtol=1e-6)
    assert math.isclose(spec.total_variance, float(np.trace(np.cov(x.double().numpy().T))),
                        rel_tol=1e-9)
    # sklearn's PCA (full solver) is the same quantity
    from sklearn.decomposition import PCA

    pca = PCA(svd_solver="full").fit(x.double().numpy())
    np.testing.assert_allclose(spec.eigenvalues.numpy(), pca.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(spec.explained_variance_ratio.numpy(),
                               pca.explained_variance_ratio_, rtol=1e-6)


def test_chunked_equals_one_shot_and_input_untouched():
    x = _planted(500, 30, torch.linspace(3, 0.1, 30, dtype=torch.float64))
    before = x.clone()
    a = eigenspectrum(x, chunk_size=7)
    b = eigenspectrum(x, chunk_size=None)
    np.testing.assert_allclose(a.eigenvalues.numpy(), b.eigenvalues.numpy(), rtol=1e-10)
    assert torch.equal(x, before)


def test_streaming_probe_equals_batch():
    x = _planted(900, 40, torch.linspace(4, 0.2, 40, dtype=torch.float64))
    p, q = RunningCovariance("blocks.0.hook_post"), RunningCovariance("blocks.0.hook_post")
    p.update({"blocks.0.hook_post": x[:300]}, _meta(0, 300))
    p.update({"blocks.0.hook_post": x[300:500]}, _meta(300, 500))
    q.update({"blocks.0.hook_post": x[500:]}, _meta(500, 900))
    batch = eigenspectrum(x)
    fast, fast2 = SpectrumProbe("blocks.0.hook_post"), SpectrumProbe("blocks.0.hook_post")
    fast.update({"blocks.0.hook_post": x[:450]}, _meta(0, 450))
    fast2.update({"blocks.0.hook_post": x[450:]}, _meta(450, 900))
    merged = fast.merge(fast2)
    assert isinstance(merged, SpectrumProbe) and merged.count == 900
    torch.testing.assert_close(merged.covariance, p.merge(q).covariance, rtol=1e-10, atol=1e-12)
    for probe in (p.merge(q), merged):
        s = eigenspectrum(probe)
        assert s.hook == "blocks.0.hook_post" and s.n_samples == 900
        np.testing.assert_allclose(s.eigenvalues.numpy(), batch.eigenvalues.numpy(), rtol=1e-6)
        assert math.isclose(s.total_variance, batch.total_variance, rel_tol=1e-9)


def test_recording_input_and_hook_selection():
    x = _planted(300, 24, torch.linspace(2, 0.1, 24, dtype=torch.float64))
    units = npb.UnitIndex.from_hooks({"blocks.0.hook_post": 12, "blocks.1.hook_post": 12})
    rec = npb.Recording(acts=x, units=units, prompt_index=torch.zeros(300, dtype=torch.long),
                        position=torch.arange(300))
    with pytest.raises(NeuroprobeError, match=r"Recording of 2 hooks.*hook='blocks.0.hook_post'"):
        eigenspectrum(rec)
    with pytest.raises(NeuroprobeError, match=r"hook='blocks.\*.hook_post' matches 2 hooks"):
        eigenspectrum(rec, hook="blocks.*.hook_post")
    s = eigenspectrum(rec, hook="blocks.1.hook_post")
    np.testing.assert_allclose(s.eigenvalues.numpy(), eigenspectrum(x[:, 12:]).eigenvalues,
                               rtol=1e-10)
    assert s.hook == "blocks.1.hook_post"
    df = alpha_by_layer(rec, fit_range=(2, 8), n_boot=10)
    assert df["hook"].tolist() == ["blocks.0.hook_post", "blocks.1.hook_post"]
    assert df["layer"].tolist() == [0, 1]


def test_subsampling_every_s_th_unit():
    x = _planted(400, 50, torch.linspace(2, 0.1, 50, dtype=torch.float64))
    s = eigenspectrum(x, max_units=20)  # ceil(50 / 20) = 3 -> 17 units
    assert s.stride == 3 and s.n_units == 17
    np.testing.assert_allclose(s.eigenvalues.numpy(), eigenspectrum(x[:, ::3]).eigenvalues,
                               rtol=1e-10)
    p = RunningCovariance("h")
    p.update({"h": x}, _meta(0, 400))
    np.testing.assert_allclose(eigenspectrum(p, max_units=20).eigenvalues.numpy(),
                               s.eigenvalues.numpy(), rtol=1e-6)


def test_randomized_route_close_to_exact_at_the_top():
    scales = torch.arange(1, 201, dtype=torch.float64) ** -0.75
    x = _planted(3000, 200, scales)
    ex = eigenspectrum(x, max_components=50)
    rnd = eigenspectrum(x, max_components=50, method="randomized", oversample=30, n_iter=6)
    assert rnd.method == "randomized"
    np.testing.assert_allclose(rnd.eigenvalues[:10].numpy(), ex.eigenvalues[:10].numpy(),
                               rtol=1e-3)
    assert math.isclose(rnd.total_variance, ex.total_variance, rel_tol=1e-5)
    # randomized eigenvalues never exceed the exact ones (Ritz values of a subspace)
    assert bool((rnd.eigenvalues <= ex.eigenvalues * (1 + 1e-5)).all())


# ----------------------------------------------------------------------------------------
# power-law fits
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [-0.5, -1.0, -2.0])
def test_planted_power_law_recovered_by_every_preset(alpha):
    x, _ = _exact_spectrum_data(alpha)
    spec = eigenspectrum(x, max_components=600)
    for method in ("huber", "stringer", "reptrix"):
        fit = powerlaw_alpha(spec, method=method, n_boot=50)
        assert abs(fit.alpha - alpha) < 0.02, (method, fit.alpha)
        assert fit.ci_low <= fit.alpha <= fit.ci_high
        assert fit.r2 > 0.999


@pytest.mark.parametrize("alpha", [-0.5, -1.0, -2.0])
def test_planted_power_law_from_gaussian_samples(alpha):
    # sampling noise and Marchenko-Pastur bias included: 20,000 samples of 200 units
    k = torch.arange(1, 201, dtype=torch.float64)
    x = torch.randn(20000, 200, generator=_gen(1), dtype=torch.float64) * k ** (alpha / 2)
    spec = eigenspectrum(x)
    for method, fr in (("huber", None), ("stringer", (11, 60)), ("reptrix", (11, 60))):
        fit = powerlaw_alpha(spec, fr, method, n_boot=0)
        assert abs(fit.alpha - alpha) < 0.02, (method, fit.alpha)


def test_huber_equals_sklearn_huber_regressor():
    from sklearn.linear_model import HuberRegressor

    rng = np.random.default_rng(3)
    k = np.arange(1, 301.0)
    ev = k**-1.2 * np.exp(0.15 * rng.standard_normal(300))
    ev[[15, 22, 40]] *= [8.0, 0.1, 5.0]  # outliers inside the window
    fit = powerlaw_alpha(torch.from_numpy(ev), n_boot=0)
    x = np.log(np.arange(10, 51.0))[:, None]
    ref = HuberRegressor(alpha=0.0, epsilon=1.35, max_iter=10000, tol=1e-12).fit(
        x, np.log(ev[9:50])
    )
    assert abs(fit.alpha - ref.coef_[0]) < 1e-5
    assert abs(fit.intercept - ref.intercept_) < 1e-5
    ols = np.polyfit(x[:, 0], np.log(ev[9:50]), 1)[0]
    assert abs(fit.alpha - ols) > 1e-3  # the outliers matter: Huber is not plain OLS


def _stringer_reference(ev, trange0):
    """Inline copy of MouseLand's utils.get_powerlaw (also reptrix.alpha.get_powerlaw)."""
    logss = np.log(np.abs(ev))
    y = logss[trange0][:, None]
    tr = trange0 + 1
    xx = np.concatenate((-np.log(tr)[:, None], np.ones((tr.size, 1))), axis=1)
    w = 1.0 / tr.astype(np.float32)[:, None]
    b = np.linalg.solve(xx.T @ (xx * w), (w * xx).T @ y).flatten()
    return -b[0]  # they report the decay as a positive number


def test_stringer_and_reptrix_presets_match_reference_formula():
    rng = np.random.default_rng(4)
    ev = np.arange(1, 801.0) ** -0.9 * np.exp(0.2 * rng.standard_normal(800))
    spec = torch.from_numpy(ev.copy())
    st = powerlaw_alpha(spec, method="stringer", n_boot=0)
    rp = powerlaw_alpha(spec, method="reptrix", n_boot=0)
    assert st.fit_range == (11, 500) and rp.fit_range == (11, 100)
    assert abs(st.alpha - _stringer_reference(ev, np.arange(10, 500))) < 1e-6
    assert abs(rp.alpha - _stringer_reference(ev, np.arange(10, 100))) < 1e-6
    assert torch.equal(spec, torch.from_numpy(ev))  # input untouched


def test_reptrix_package_if_installed():
    ra = pytest.importorskip("reptrix.alpha")
    rng = np.random.default_rng(5)
    ev = np.arange(1, 400.0) ** -1.3 * np.exp(0.1 * rng.standard_normal(399))
    ref = ra.get_powerlaw(ev.copy(), np.arange(10, 100))[0]
    assert abs(powerlaw_alpha(ev, method="reptrix", n_boot=0).alpha + ref) < 1e-6


def test_fit_line_bootstrap_and_no_mutation():
    rng = np.random.default_rng(6)
    ev = np.arange(1, 101.0) ** -1.0 * np.exp(0.1 * rng.standard_normal(100))
    arr = ev.copy()
    fit = powerlaw_alpha(arr, n_boot=400, seed=1)
    assert np.array_equal(arr, ev)
    assert fit.ci_low < fit.alpha < fit.ci_high and fit.ci_high - fit.ci_low < 0.3
    k = np.arange(1, 101.0)
    np.testing.assert_allclose(fit.fit_line.numpy(), np.exp(fit.intercept) * k**fit.alpha)
    assert powerlaw_alpha(arr, n_boot=400, seed=1).ci_low == fit.ci_low  # seeded
    nb = powerlaw_alpha(arr, n_boot=0)
    assert math.isnan(nb.ci_low) and abs(nb.alpha - fit.alpha) < 1e-9
    assert list(fit.to_dataframe().columns[:6]) == ["hook", "layer", "alpha", "ci_low",
                                                     "ci_high", "r2"]


# ----------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------
def test_too_few_samples_for_fit_range():
    x = torch.randn(31, 600, generator=_gen(0))
    spec = eigenspectrum(x)
    assert spec.n_components == 30
    with pytest.raises(NeuroprobeError, match=r"fit_range=\(10, 50\) needs at least 50 "
                       r"components but the spectrum has 30 components \(from 31 samples of "
                       r"600 units\); record at least 51 samples"):
        powerlaw_alpha(spec)


def test_nan_inf_rejected():
    x = torch.randn(50, 8)
    x[3, 2] = float("nan")
    with pytest.raises(NeuroprobeError, match=r"acts contains NaN or inf in 1 unit column"):
        eigenspectrum(x)
    # the exact route checks finiteness through its float64 column sums (one read less):
    # every route, +inf and -inf in one column (sum NaN), and inf on its own, are still named
    y = torch.randn(50, 8, dtype=torch.float64)
    y[1, 5], y[2, 5], y[7, 0] = float("inf"), -float("inf"), float("inf")
    for method in ("exact", "randomized", "auto"):
        with pytest.raises(NeuroprobeError, match=r"acts contains NaN or inf in 2 unit column"
                           r"\(s\), first: \[0, 5\]"):
            eigenspectrum(y, 4, method=method)
    # finite float64 values whose column sum overflows: said so, never an inf spectrum
    big = torch.randn(50, 8, dtype=torch.float64)
    big[:, 3] = 1e307
    with pytest.raises(NeuroprobeError, match="float64 column sums overflow"):
        eigenspectrum(big, 4, method="exact")
    with pytest.raises(NeuroprobeError, match="spectrum contains NaN or inf"):
        powerlaw_alpha(torch.tensor([1.0, float("inf")] + [0.5] * 60))
    with pytest.raises(NeuroprobeError, match="z contains"):
        average_action(torch.tensor([[0.0, 1.0], [float("nan"), 1.0]]))


def test_constant_layer_says_so():
    spec = eigenspectrum(torch.full((100, 64), 2.5))
    assert float(spec.eigenvalues.abs().max()) < 1e-20 and spec.total_variance < 1e-20
    with pytest.raises(NeuroprobeError, match="spectrum is all zero: the activations are "
                       "constant"):
        powerlaw_alpha(spec)


def test_rank_deficient_window_and_bad_ranges():
    x = torch.randn(500, 20, generator=_gen(0)) @ torch.randn(20, 80, generator=_gen(1))
    spec = eigenspectrum(x)
    with pytest.raises(NeuroprobeError, match=r"eigenvalues 21..50 of fit_range=\(10, 50\) "
                       r"are zero: the activations have rank 20"):
        powerlaw_alpha(spec)
    with pytest.raises(NeuroprobeError, match=r"fit_range=\(10, 900\) needs at least 900"):
        powerlaw_alpha(spec, fit_range=(10, 900))
    with pytest.raises(NeuroprobeError, match="fit_range must be"):
        powerlaw_alpha(spec, fit_range=(0, 10))
    with pytest.raises(NeuroprobeError, match="method must be one of"):
        powerlaw_alpha(spec, method="ols")
    with pytest.raises(NeuroprobeError, match="at least 2 samples"):
        eigenspectrum(torch.randn(1, 5))
    with pytest.raises(NeuroprobeError, match="method='randomized' needs the activations"):
        p = RunningCovariance("h")
        p.update({"h": torch.randn(10, 3)}, _meta(0, 10))
        eigenspectrum(p, method="randomized")


# ----------------------------------------------------------------------------------------
# random projections, action, explained variance
# ----------------------------------------------------------------------------------------
def test_random_projections_are_directions():
    acts = torch.randn(40, 256, generator=_gen(2))
    before = torch.random.get_rng_state()
    proj = random_projections(acts, n=500, dim=3, seed=7, hook="blocks.2.x")
    assert torch.equal(torch.random.get_rng_state(), before)
    assert isinstance(proj, Directions) and proj.vectors.shape == (1500, 256)
    assert proj.n_projections == 500 and proj.hook == "blocks.2.x"
    assert abs(float(proj.vectors.var()) * 256 - 1.0) < 0.02  # entries ~ N(0, 1/m)
    again = random_projections(256, n=500, dim=3, seed=7)
    assert torch.equal(again.vectors, proj.vectors)
    z = proj.project(acts)
    ref = torch.einsum("tm,jdm->tjd", acts, proj.vectors.reshape(500, 3, 256))
    torch.testing.assert_close(z, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(proj.curves(acts @ proj.vectors.T), z, rtol=1e-4, atol=1e-4)
    with pytest.raises(NeuroprobeError, match="drawn for width 256"):
        proj.project(torch.randn(5, 100))


def test_random_projections_recorded_through_capture():
    ae = MLPAutoencoder(64, hidden=(48, 32), seed=0).eval()
    x = torch.rand(30, 64, generator=_gen(3))
    proj = random_projections(48, n=4, dim=3, seed=0, hook="blocks.0.mlp.hook_post")
    rec = npb.record(ae, x, hooks=[proj, "blocks.0.mlp.hook_post"])
    kinds = rec.units.to_dataframe()["kind"].to_numpy()
    acts, dirs = rec.acts[:, kinds == "neuron"], rec.acts[:, kinds == "direction"]
    assert acts.shape[1] == 48 and dirs.shape[1] == 12
    torch.testing.assert_close(proj.curves(dirs), proj.project(acts), rtol=1e-4, atol=1e-5)


def test_action_closed_form_circle():
    T, cycles = 101, 3.0
    t = torch.linspace(0, 1, T, dtype=torch.float64)
    circ = torch.stack([torch.cos(2 * math.pi * cycles * t), torch.sin(2 * math.pi * cycles * t)],
                       1)
    dt = 1.0 / (T - 1)
    exact = 0.5 * (T - 1) * (2 * math.sin(math.pi * cycles * dt)) ** 2 / dt
    a = average_action(circ)
    assert abs(a.mean - exact) < 1e-9 * exact
    assert abs(average_action(circ, duration=2.0).mean - exact / 2) < 1e-9 * exact
    # continuum limit 1/2 (2 pi c)^2
    fine = torch.linspace(0, 1, 20001, dtype=torch.float64)
    circ2 = torch.stack([torch.cos(2 * math.pi * cycles * fine),
                         torch.sin(2 * math.pi * cycles * fine)], 1)
    assert abs(average_action(circ2).mean / (0.5 * (2 * math.pi * cycles) ** 2) - 1) < 1e-4
    # normalized: divided by the total variance (1/2 + 1/2 for a unit circle)
    var = float(circ.var(0, unbiased=False).sum())
    assert abs(average_action(circ, normalize=True).mean - exact / var) < 1e-9 * exact


def test_action_linear_toy_model():
    # r(t) = W s(t): exact action per projection is 1/2 tr(A_j' D A_j) / dt with D = sum dr dr'
    T, m = 80, 30
    dot = moving_dot(T, size=6)
    s = dot.flat().double()
    w = torch.randn(36, m, generator=_gen(4), dtype=torch.float64)
    r = s @ w
    proj = random_projections(m, n=2000, dim=3, seed=1)
    z = proj.project(r).double()
    act = average_action(z)
    dr = r[1:] - r[:-1]
    dmat = dr.T @ dr
    a = proj.vectors.double().reshape(2000, 3, m)
    per = 0.5 * torch.einsum("jdm,mn,jdn->j", a, dmat, a) * (T - 1)
    torch.testing.assert_close(act.action, per, rtol=1e-4, atol=0)
    # expectation over r ~ N(0, I/m): dim/m * 1/2 * sum ||dr||^2 / dt
    expected = 3 / m * 0.5 * float((dr * dr).sum()) * (T - 1)
    assert abs(act.mean / expected - 1) < 0.05


def test_paper_prediction_action_finite_iff_alpha_below_minus_one():
    # activations with covariance spectrum k**alpha, each component an independent rough
    # (white) time course; m * average action / dim ~ sum_k lambda_k = zeta_m(-alpha)
    T = 200
    ratios = {}
    for alpha in (-0.5, -1.0, -2.0):
        vals = []
        for m in (100, 3000):
            k = torch.arange(1, m + 1, dtype=torch.float64)
            r = torch.randn(T, m, generator=_gen(5), dtype=torch.float64) * k ** (alpha / 2)
            proj = random_projections(m, n=600, dim=3, seed=2)
            vals.append(m * average_action(proj.project(r)).mean / 3)
        ratios[alpha] = vals[1] / vals[0]
    zeta = {a: float((torch.arange(1, 3001.0) ** a).sum() / (torch.arange(1, 101.0) ** a).sum())
            for a in ratios}
    assert ratios[-0.5] > 4.0  # grows without bound (partial-zeta ratio 5.8)
    assert 1.3 < ratios[-1.0] < 2.3  # logarithmic growth (harmonic ratio 1.65)
    assert 0.85 < ratios[-2.0] < 1.15  # converges (ratio 1.006)
    assert abs(ratios[-0.5] / zeta[-0.5] - 1) < 0.25


def test_explained_variance_against_sklearn_and_planted():
    from sklearn.linear_model import LinearRegression

    T = 120
    z = torch.randn(T, 5, 3, generator=_gen(6), dtype=torch.float64)
    y = torch.randn(T, 10, generator=_gen(7), dtype=torch.float64)
    y[:, :4] += z[:, 0, :] @ torch.randn(3, 4, generator=_gen(8), dtype=torch.float64)
    ev = explained_input_variance(y, z)
    for j in range(5):
        ref = LinearRegression().fit(z[:, j].numpy(), y.numpy())
        resid = y.numpy() - ref.predict(z[:, j].numpy())
        r2 = 1 - (resid**2).sum() / ((y.numpy() - y.numpy().mean(0)) ** 2).sum()
        assert abs(float(ev.explained[j]) - r2) < 1e-9
    # planted: inputs = [z B (in span), u (orthogonal to [1, z])] -> explained = |zB|^2 / total
    zc = z[:, 1] - z[:, 1].mean(0)
    inside = zc @ torch.randn(3, 6, generator=_gen(9), dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.cat([torch.ones(T, 1, dtype=torch.float64), zc], 1))
    u = torch.randn(T, 5, generator=_gen(10), dtype=torch.float64)
    u = u - basis @ (basis.T @ u)
    planted = torch.cat([inside, u], 1)
    frac = float((inside**2).sum() / ((inside**2).sum() + (u**2).sum()))
    assert abs(float(explained_input_variance(planted, z[:, 1]).explained[0]) - frac) < 1e-10
    with pytest.raises(NeuroprobeError, match="inputs has 7 time points but z has 120"):
        explained_input_variance(torch.randn(7, 3), z)


def test_results_repr_and_frames():
    spec = eigenspectrum(torch.randn(100, 10, generator=_gen(0)))
    assert isinstance(spec, Eigenspectrum)
    assert "eigenvalues[10]" in repr(spec)
    assert spec.to_dataframe().shape == (10, 3)


def test_plots_draw(tmp_path):
    import matplotlib.pyplot as plt

    from neuroprobe.viz.spectrum import (
        plot_action_vs_alpha,
        plot_alpha_by_layer,
        plot_projection_curves,
        plot_spectrum,
    )

    x, _ = _exact_spectrum_data(-1.0, N=80, T=200)
    spec = eigenspectrum(x)
    fit = powerlaw_alpha(spec, n_boot=20)
    ax = plot_spectrum(spec, fit, label="layer 0")
    assert len(ax.lines) == 2
    df = alpha_by_layer({"blocks.0.a": x, "blocks.1.a": x[:, ::2]}, fit_range=(5, 30), n_boot=20)
    plot_alpha_by_layer(df)
    z = random_projections(80, n=3, seed=0).project(x)
    plot_projection_curves(z, n_show=2)
    plot_action_vs_alpha([-1.2, -0.8], [1.0, 3.0], labels=["a", "b"])
    plt.savefig(tmp_path / "f.png")
    plt.close("all")
    assert (tmp_path / "f.png").stat().st_size > 1000


@pytest.mark.smollm2
def test_smollm2_stream_probe_equals_recording(smollm2):
    texts = ["The river carried the boats slowly to the sea.",
             "Every prime larger than two is odd, and some are twins."]
    hook = "blocks.3.mlp.hook_post"
    with torch.no_grad():
        rec = npb.record(smollm2, texts, hooks=[hook], include_bos=False)
        (probe,) = npb.stream(smollm2, texts, [SpectrumProbe(hook)], include_bos=False)
    assert probe.count == rec.acts.shape[0]
    a = eigenspectrum(probe, max_components=10)
    b = eigenspectrum(rec, max_components=10)
    np.testing.assert_allclose(a.eigenvalues.numpy(), b.eigenvalues.numpy(), rtol=1e-4)


def test_alpha_by_layer_from_probes_equals_tensors():
    xs = {f"blocks.{i}.hook_post": _exact_spectrum_data(a, N=120, T=400, seed=i)[0]
          for i, a in enumerate((-0.8, -1.5))}
    probes = []
    for h, x in xs.items():
        p = SpectrumProbe(h)
        p.update({h: x}, _meta(0, x.shape[0]))
        probes.append(p)
    a = alpha_by_layer(probes, n_boot=30)
    b = alpha_by_layer(xs, n_boot=30)
    np.testing.assert_allclose(a["alpha"], b["alpha"], atol=1e-8)
    np.testing.assert_allclose(a["alpha"], [-0.8, -1.5], atol=0.02)
    with pytest.raises(NeuroprobeError, match="source must be a Recording"):
        alpha_by_layer(42)


def test_exact_route_equals_numpy_eigvalsh_of_cov():
    """The dsyrk Gram + eigenvalues-only route gives numpy's eigvalsh(np.cov) to 1e-10
    (float32 and float64 input, any chunking, an offset that a naive Gram would lose)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(700, 90, generator=g) * torch.arange(1, 91) ** -0.7 + 40.0
    for xin in (x, x.double()):
        ref = np.linalg.eigvalsh(np.cov(xin.numpy().astype(np.float64).T))[::-1][:60]
        for chunk in (None, 1, 97, 4096):
            ev = eigenspectrum(xin, 60, method="exact", chunk_size=chunk).eigenvalues.numpy()
            np.testing.assert_allclose(ev, ref, rtol=1e-10)


def test_randomized_route_as_accurate_as_sklearn_on_its_test_matrices():
    """scikit-learn's make_low_rank_matrix (its randomized-SVD tests' data), small and tall:
    over 10 seeds the median relative error of the top eigenvalues is no worse than
    PCA(svd_solver="randomized")'s (n_iter="auto" follows sklearn's rule)."""
    from sklearn.datasets import make_low_rank_matrix
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: threads only add spin-waiting on a busy host
    try:
        with threadpool_limits(1):
            _compare_with_sklearn(make_low_rank_matrix, PCA)
    finally:
        torch.set_num_threads(n_threads)


def _compare_with_sklearn(make_low_rank_matrix, PCA):  # noqa: N803
    for n, d, r, k in [(1000, 100, 10, 10), (1000, 200, 5, 10), (2000, 300, 20, 20)]:
        X = make_low_rank_matrix(n_samples=n, n_features=d, effective_rank=r,
                                 tail_strength=0.5, random_state=0)
        ref = np.linalg.eigvalsh(np.cov(X.T))[::-1][:k]

        def err(v, ref=ref):
            return float(np.max(np.abs(v - ref) / ref))

        sk = [err(PCA(n_components=k, svd_solver="randomized", random_state=s).fit(X)
                  .explained_variance_) for s in range(10)]
        ours = [err(eigenspectrum(torch.from_numpy(X), k, method="randomized", seed=s)
                    .eigenvalues.numpy()) for s in range(10)]
        assert np.median(ours) <= 1.5 * np.median(sk), (n, d, r, k, ours, sk)
        assert max(ours) <= 1e-3


def test_randomized_n_iter_argument():
    x = torch.randn(50, 10)
    with pytest.raises(NeuroprobeError, match="n_iter must be a non-negative int or 'auto'"):
        eigenspectrum(x, 3, method="randomized", n_iter="many")
    with pytest.raises(NeuroprobeError, match="n_iter"):
        eigenspectrum(x, 3, method="randomized", n_iter=-1)
