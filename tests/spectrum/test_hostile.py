"""Hostile inputs to neuroprobe.spectrum (issue 16)."""

import numpy as np
import pytest
import torch

from neuroprobe.core.errors import NeuroprobeError, NeuroprobeWarning
from neuroprobe.core.probes import BatchMeta
from neuroprobe.spectrum import (
    SpectrumProbe,
    alpha_by_layer,
    average_action,
    eigenspectrum,
    explained_input_variance,
    powerlaw_alpha,
    random_projections,
)

K = torch.arange(1, 201, dtype=torch.float64)
DESC = K**-1.5
X = torch.randn(300, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * \
    torch.arange(40, 0, -1)


def _with(ev, idx, value):
    out = ev.clone()
    out[idx] = value
    return out


def _probe(x, hook="h"):
    p = SpectrumProbe(hook)
    p.update({hook: x}, BatchMeta(*(torch.arange(x.shape[0]),) * 3))
    return p


RAISES = [
    # the order of the spectrum: largest first is the convention
    ("ascending", lambda: powerlaw_alpha(DESC.flip(0), n_boot=0), "ascending"),
    ("eigvalsh_order", lambda: powerlaw_alpha(torch.linalg.eigvalsh(torch.cov(X.T)),
                                              fit_range=(2, 20), n_boot=0), "eigvalsh"),
    ("increasing_shuffle", lambda: powerlaw_alpha(
        torch.sort(DESC[torch.randperm(200, generator=torch.Generator().manual_seed(1))])[0]
        + torch.linspace(0, 1e-3, 200, dtype=torch.float64), n_boot=0), "ascending|increasing"),
    # negative eigenvalues are named, not reported as a rank
    ("negative", lambda: powerlaw_alpha(_with(DESC, 19, -1e-3), n_boot=0),
     r"negative eigenvalue\(s\), at components \[20\]"),
    ("negative_tail", lambda: powerlaw_alpha(torch.cat([DESC, -DESC.flip(0)]), n_boot=0),
     "200 negative eigenvalue"),
    ("tiny_negative_in_window", lambda: powerlaw_alpha(_with(DESC, slice(30, None), -1e-18),
                                                       n_boot=0), "round-off value"),
    # epsilon and the other fit arguments
    ("epsilon_half", lambda: powerlaw_alpha(DESC, epsilon=0.5, n_boot=0), "epsilon"),
    ("epsilon_negative", lambda: powerlaw_alpha(DESC, epsilon=-1, n_boot=0), "epsilon"),
    ("epsilon_nan", lambda: powerlaw_alpha(DESC, epsilon=float("nan"), n_boot=0), "epsilon"),
    ("epsilon_str", lambda: powerlaw_alpha(DESC, epsilon="x", n_boot=0), "epsilon"),
    ("fit_range_bool", lambda: powerlaw_alpha(DESC, fit_range=(True, 5), n_boot=0), "fit_range"),
    ("seed_str", lambda: powerlaw_alpha(DESC, seed="x", n_boot=5), "seed"),
    ("complex_spectrum", lambda: powerlaw_alpha(DESC.to(torch.complex128)), "complex"),
    # eigenspectrum
    ("spec_hook_int", lambda: eigenspectrum(X, 5, hook=5), "hook must be"),
    ("spec_zero_cols", lambda: eigenspectrum(torch.randn(10, 0)), "0 unit columns"),
    ("spec_complex", lambda: eigenspectrum(torch.randn(10, 3, dtype=torch.complex64)),
     "complex"),
    ("spec_oversample_neg", lambda: eigenspectrum(X, 5, method="randomized", oversample=-1),
     "oversample"),
    ("spec_oversample_float", lambda: eigenspectrum(X, 5, method="randomized", oversample=1.5),
     "oversample"),
    ("spec_seed_str", lambda: eigenspectrum(X, 5, method="randomized", seed="x"), "seed"),
    ("spec_seed_neg", lambda: eigenspectrum(X, 5, method="randomized", seed=-1), "seed"),
    ("spec_n_iter_exact", lambda: eigenspectrum(X, 5, n_iter="many"), "n_iter"),
    ("spec_max_units_exact", lambda: eigenspectrum(X, 5, stride=2, max_units=0), "max_units"),
    ("probe_missing_hook", lambda: SpectrumProbe("h").update(
        {"g": torch.randn(3, 2)}, BatchMeta(*(torch.arange(3),) * 3)), "without its hook"),
    # alpha_by_layer
    ("abl_empty_dict", lambda: alpha_by_layer({}), "source has no hooks"),
    ("abl_empty_list", lambda: alpha_by_layer([]), "source must be"),
    ("abl_hooks_dict", lambda: alpha_by_layer({"blocks.0.h": X}, hooks="zzz"), "matches no hook"),
    ("abl_unknown_kwarg", lambda: alpha_by_layer({"blocks.0.h": X}, bogus=1), "bogus"),
    ("abl_method", lambda: alpha_by_layer({"blocks.0.h": X}, method="bogus"), "method"),
    ("abl_probe_hooks", lambda: alpha_by_layer([_probe(X[:, :5], "blocks.0.h")], hooks="zz"),
     "matches no hook"),
    # random projections
    ("rp_width_float", lambda: random_projections(2.5), "width \\(an int\\)"),
    ("rp_seed_str", lambda: random_projections(10, seed="x"), "seed"),
    ("rp_seed_neg", lambda: random_projections(10, seed=-1), "seed"),
    ("rp_seed_float", lambda: random_projections(10, 2, seed=1.5), "seed"),
    ("rp_hook_int", lambda: random_projections(10, hook=5), "hook must be a str"),
    ("rp_name_int", lambda: random_projections(10, name=5), "name must be a str"),
    # action and explained variance
    ("aa_duration_inf", lambda: average_action(torch.randn(10, 3), duration=float("inf")),
     "duration"),
    ("aa_duration_bool", lambda: average_action(torch.randn(10, 3), duration=True), "duration"),
    ("aa_normalize_str", lambda: average_action(torch.randn(10, 3), normalize="yes"),
     "normalize"),
    ("aa_no_dims", lambda: average_action(torch.randn(10, 0)), "no projections or no dim"),
    ("aa_no_projections", lambda: average_action(torch.randn(10, 0, 3)), "no projections"),
    ("eiv_no_projections", lambda: explained_input_variance(torch.randn(10, 4),
                                                            torch.randn(10, 0, 3)),
     "no projections"),
    ("eiv_no_dims", lambda: explained_input_variance(torch.randn(10, 4), torch.randn(10, 2, 0)),
     "no projections or no dim"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in RAISES], ids=[c[0] for c in RAISES])
def test_refused(call, match):
    with pytest.raises(NeuroprobeError, match=match):
        call()


def test_barely_ordered_spectrum_warns():
    g = np.random.default_rng(0)
    ev = torch.from_numpy(np.sort(g.random(200))[::-1].copy())
    ev = ev + torch.from_numpy(g.random(200)) * 3  # mostly noise: rank correlation ~ -0.3
    with pytest.warns(NeuroprobeWarning, match="barely ordered"):
        powerlaw_alpha(ev, fit_range=(2, 100), n_boot=0)


def test_two_point_window_warns():
    with pytest.warns(NeuroprobeWarning, match="two points"):
        fit = powerlaw_alpha(DESC, fit_range=(1, 2), n_boot=10)
    assert fit.alpha == pytest.approx(-1.5)


def test_constant_activations_warn():
    with pytest.warns(NeuroprobeWarning, match="constant"):
        spec = eigenspectrum(torch.ones(10, 3))
    assert float(spec.eigenvalues.abs().max()) == 0.0


def test_tiny_negative_round_off_outside_the_window_is_clipped():
    ev = _with(DESC, slice(150, None), -1e-18)
    assert powerlaw_alpha(ev, n_boot=0).alpha == pytest.approx(-1.5)
    assert ev[-1] < 0  # the input is not modified


def test_noisy_descending_spectrum_is_fitted_without_a_word(recwarn):
    g = np.random.default_rng(3)
    ev = torch.from_numpy((np.arange(1, 301.0) ** -1.2) * np.exp(0.15 * g.standard_normal(300)))
    fit = powerlaw_alpha(ev, n_boot=0)
    assert -1.5 < fit.alpha < -0.9
    assert not [w for w in recwarn if issubclass(w.category, NeuroprobeWarning)]


def test_valid_calls_still_work():
    assert powerlaw_alpha(DESC.numpy(), n_boot=0, seed=np.int64(1)).alpha == pytest.approx(-1.5)
    assert average_action(torch.randn(10, 3), duration=np.float32(2)).duration == 2.0
    assert random_projections(np.int64(8), 2, seed=np.int64(3)).width == 8
    assert eigenspectrum(X, 5, method="randomized", oversample=0).n_components == 5
    df = alpha_by_layer({"blocks.0.h": X, "blocks.1.h": X[:, ::2]}, hooks="blocks.1.*",
                        fit_range=(2, 10), n_boot=0, max_units=30)
    assert df["hook"].tolist() == ["blocks.1.h"]
