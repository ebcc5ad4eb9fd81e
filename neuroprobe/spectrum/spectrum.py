"""Eigenspectra, power-law exponents and random projections of a layer's activations.

The method of "Polysemanticity and coding theory" (see ``docs/spectrum.md``): the eigenvalues
of a layer's activation covariance decay like a power law ``lambda_k ~ k**alpha``; ``alpha``
(negative, the paper's sign) is fitted on log-log axes over a window of components (Huber
regression over components 10..50 in the paper).  Random projections ``z = A r`` of the
activations ``r(t)`` over a time-ordered stimulus (``r_i ~ N(0, I/m)``) are smooth when
``alpha <= -1`` and rough when ``alpha > -1``; their *average action*
``1/2 * integral ||dz/dt||^2 dt`` and the fraction of the stimulus variance they explain
measure that.

Main entry points
-----------------
:func:`eigenspectrum`
    Eigenvalues of the covariance of ``[time, unit]`` activations (tensor, Recording, or the
    streaming :class:`~neuroprobe.core.probes.RunningCovariance` probe).  Exact route (``X'X``
    accumulated in float64 in chunks, then a symmetric eigensolver) or randomized route
    (pre-centred ``torch.svd_lowrank``) for very wide layers.
:func:`powerlaw_alpha`
    Power-law exponent with presets ``"huber"`` (the paper), ``"stringer"`` (Stringer et
    al. 2019 weighted least squares) and ``"reptrix"`` (alpha-ReQ), a bootstrap confidence
    interval and the fit line.
:func:`alpha_by_layer`
    One row per hook: ``layer, hook, alpha, ci_low, ci_high, r2``.
:func:`random_projections`, :func:`average_action`, :func:`explained_input_variance`
    The random-projection analysis; projections are :class:`~neuroprobe.core.units.Directions`
    so they can be recorded like any other unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.hooks import match_hook_names
from neuroprobe.core.outofcore import file_backing
from neuroprobe.core.probes import BatchMeta, RunningCovariance
from neuroprobe.core.shards import note_batch, union_seen
from neuroprobe.core.units import Directions, hook_layer
from neuroprobe.core.validation import (
    as_tensor,
    check_bool,
    check_finite,
    check_fraction,
    check_int,
    check_known_keys,
    check_positive_int,
    check_real,
    warn_degenerate,
)
from neuroprobe.spectrum.blocked import covariance_from_row_blocks, file_columns

__all__ = [
    "Eigenspectrum",
    "PowerLawFit",
    "SpectrumProbe",
    "RandomProjections",
    "AverageAction",
    "ExplainedVariance",
    "eigenspectrum",
    "powerlaw_alpha",
    "alpha_by_layer",
    "random_projections",
    "average_action",
    "explained_input_variance",
    "FIT_PRESETS",
]

#: Default fit window (1-based, inclusive component numbers) and weighting of each preset.
FIT_PRESETS: dict[str, dict] = {
    # the paper: Huber regression of log variance on log index, components 10..50
    "huber": {"fit_range": (10, 50), "weights": None, "robust": True},
    # Stringer et al. 2019 (MouseLand code): least squares weighted by 1/k, components 11..500
    "stringer": {"fit_range": (11, 500), "weights": "1/k", "robust": False},
    # reptrix.alpha.get_powerlaw with its default np.arange(10, 100): components 11..100
    "reptrix": {"fit_range": (11, 100), "weights": "1/k", "robust": False},
}

#: Eigenvalues below this fraction of the largest are numerically zero (rank deficiency).
_ZERO_RTOL = 1e-11

#: Width up to which ``method="auto"`` takes the exact route.
EXACT_MAX_WIDTH = 4096


# =========================================================================================
# eigenspectrum
# =========================================================================================
@dataclass(frozen=True, eq=False)
class Eigenspectrum:
    """Eigenvalues of an activation covariance, largest first.

    Attributes
    ----------
    eigenvalues : Tensor ``[n_components]`` float64
        Covariance eigenvalues (unbiased covariance, divides by ``n_samples - 1``),
        descending, clipped at 0.
    total_variance : float
        Trace of the covariance over all (kept) units, so ``eigenvalues / total_variance``
        is the explained-variance ratio even when only the top components were computed.
    n_samples : int
        Rows (time points / tokens) the covariance was estimated from.
    n_units : int
        Width after subsampling.
    method : str
        ``"exact"`` or ``"randomized"``.
    stride : int
        Every ``stride``-th unit was kept (1 = all).
    hook : str or None
        Hook the activations came from, when known.
    """

    eigenvalues: Float[Tensor, " component"]
    total_variance: float
    n_samples: int
    n_units: int
    method: str
    stride: int = 1
    hook: str | None = None

    @property
    def n_components(self) -> int:
        return int(self.eigenvalues.shape[0])

    @cached_property
    def explained_variance_ratio(self) -> Float[Tensor, " component"]:
        """``eigenvalues / total_variance`` (zeros for a constant layer)."""
        if self.total_variance <= 0:
            return torch.zeros_like(self.eigenvalues)
        return self.eigenvalues / self.total_variance

    def to_dataframe(self) -> pd.DataFrame:
        """One row per component: ``component`` (1-based), ``eigenvalue``,
        ``explained_variance_ratio``."""
        return pd.DataFrame(
            {
                "component": np.arange(1, self.n_components + 1),
                "eigenvalue": self.eigenvalues.numpy(),
                "explained_variance_ratio": self.explained_variance_ratio.numpy(),
            }
        )

    def __repr__(self) -> str:
        h = f", hook={self.hook!r}" if self.hook else ""
        return (
            f"Eigenspectrum(eigenvalues[{self.n_components}], n_samples={self.n_samples}, "
            f"n_units={self.n_units}, method={self.method!r}, stride={self.stride}{h})"
        )


class SpectrumProbe(RunningCovariance):
    """:class:`~neuroprobe.core.probes.RunningCovariance` with a faster CPU update, for spectra.

    Same state (``count``, ``mean``, ``m2`` in float64, exact :meth:`merge`), but each
    batch's centred ``X'X`` is a float64 BLAS ``syrk`` (numpy's ``A.T @ A``), half the work
    of the general product; on CUDA it falls back to the parent's torch update.  Use one per
    hook with :func:`neuroprobe.stream`, then :func:`eigenspectrum` / :func:`alpha_by_layer`.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.probes import BatchMeta
    >>> x = torch.randn(50, 4, dtype=torch.float64)
    >>> p = SpectrumProbe("h")
    >>> p.update({"h": x}, BatchMeta(*(torch.arange(50),) * 3))
    >>> torch.allclose(p.covariance, torch.cov(x.T))
    True
    """

    def update(self, acts: dict[str, Tensor], meta: BatchMeta) -> None:
        if self.hooks[0] not in acts:
            raise NeuroprobeError(
                f"SpectrumProbe({self.hooks[0]!r}) got a batch without its hook (hooks in the "
                f"batch: {list(acts)[:5]}); run it with a stream/record over that hook."
            )
        x = self.activations(acts)
        if x.is_cuda:
            return super().update(acts, meta)
        n = int(x.shape[0])
        if n == 0:
            return
        self.seen = note_batch(self.seen, meta, repr(self))
        xn = x.to(torch.float64).numpy().copy()
        bmean = xn.mean(0)
        xn -= bmean
        self._combine(n, torch.from_numpy(bmean), torch.from_numpy(xn.T @ xn))

    def merge(self, other: RunningCovariance) -> SpectrumProbe:
        if not isinstance(other, RunningCovariance) or other.hooks != self.hooks:
            raise NeuroprobeError(
                f"can only merge a covariance probe of the same hook {self.hooks}; got {other!r}"
            )
        out = SpectrumProbe(self.target)
        out.seen = union_seen(self.seen, other.seen, repr(self), repr(other))
        for p in (self, other):
            if p.count:
                out._combine(p.count, p.mean, p.m2)
        return out

    def __repr__(self) -> str:
        d = None if self.mean is None else int(self.mean.shape[0])
        return f"SpectrumProbe(hook={self.hooks[0]!r}, count={self.count}, d={d})"


def _is_cov_probe(x) -> bool:
    return all(hasattr(x, a) for a in ("count", "mean", "m2", "hooks")) and hasattr(
        type(x), "covariance"
    )


def _source_to_matrix(source, hook: str | None, name: str) -> tuple[Tensor, str | None]:
    """``[T, N]`` tensor (no copy when possible) and the hook it came from."""
    if hasattr(source, "acts") and hasattr(source, "units") and not isinstance(source, Tensor):
        cols, found_hook = file_columns(source, hook, name)
        x = as_tensor(source.acts, name, ndim=2)
        if cols is not None:
            x = x[:, torch.as_tensor(cols, dtype=torch.long)]
        return x, found_hook
    return as_tensor(source, name, ndim=2), hook


def _check_matrix(x: Tensor, name: str, *, check_values: bool = True) -> Tensor:
    """A real ``[T, N>=1]`` matrix (float; bool/int are cast), finite unless
    ``check_values=False`` (the exact route checks its float64 column sums instead: one read
    of ``x`` less)."""
    if x.is_complex():
        raise NeuroprobeError(
            f"{name} is complex ({x.dtype}); a covariance spectrum needs real activations. "
            "Pass x.real or x.abs()."
        )
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()  # bool, int, float16, bfloat16 (numpy has no bfloat16)
    if x.shape[1] == 0:
        raise NeuroprobeError(f"{name} has 0 unit columns (shape {tuple(x.shape)}); pass "
                              "activations of at least one unit.")
    if check_values:
        check_finite(x, name, axis_name="unit column")
    return x


def _auto_stride(n_units: int, max_units: int | None) -> int:
    if max_units is None:
        return 1
    max_units = check_positive_int(max_units, "max_units")
    return max(1, math.ceil(n_units / max_units))


def eigenspectrum(
    acts,
    max_components: int = 1000,
    *,
    method: str = "auto",
    hook: str | None = None,
    max_units: int | None = None,
    stride: int | None = None,
    chunk_size: int | None = 4096,
    oversample: int = 10,
    n_iter: int | str = "auto",
    seed: int = 0,
) -> Eigenspectrum:
    """Eigenvalues of the covariance of a layer's activations, largest first.

    Parameters
    ----------
    acts : Tensor ``[time, unit]``, ndarray, Recording, or RunningCovariance probe
        Activations (one row per token / frame).  A Recording of several hooks needs
        ``hook``.  A :class:`~neuroprobe.core.probes.RunningCovariance` probe gives its covariance
        directly, so a spectrum over millions of tokens never holds them.
    max_components : int
        How many eigenvalues to return (at most ``min(width, n_samples - 1)``).  The paper
        used 1000.
    method : {"auto", "exact", "randomized"}
        ``"exact"``: the covariance's triangle accumulated in float64 over row chunks by
        BLAS ``dsyrk``, then eigenvalues only (``torch.linalg.eigvalsh``, LAPACK syevd);
        exact in the tail, about 2x faster than ``numpy.linalg.eigvalsh(np.cov(x))``.
        ``"randomized"``: pre-centred ``torch.svd_lowrank`` with ``max_components +
        oversample`` columns and ``n_iter`` power iterations (float64 for float64 input;
        tail eigenvalues are underestimated by several percent).
        ``"auto"``: exact when the (subsampled) width is at most ``EXACT_MAX_WIDTH`` (4096)
        or the input is a covariance probe, randomized otherwise.
    hook : str, optional
        Which hook of a multi-hook Recording (exact name or glob matching one hook).
    max_units : int, optional
        The paper's subsampling: keep every ``s``-th unit with ``s = ceil(width / max_units)``
        so that at most ``max_units`` remain (the paper: fewer than 8000, ``max_units=7999``).
    stride : int, optional
        Keep every ``stride``-th unit (overrides ``max_units``).
    chunk_size : int or None
        Rows per chunk of the exact accumulation (None: one shot).
    oversample, n_iter, seed
        Randomized route only.  ``n_iter="auto"`` is scikit-learn's rule: 7 power
        iterations when ``max_components < 0.1 * min(acts.shape)``, 4 otherwise (as
        accurate as ``PCA(svd_solver="randomized")`` on scikit-learn's test matrices).

    Returns
    -------
    Eigenspectrum

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(500, 20) * torch.arange(20, 0, -1)
    >>> spec = eigenspectrum(x, max_components=5)
    >>> spec.n_components, spec.method, bool((spec.eigenvalues.diff() <= 0).all())
    (5, 'exact', True)
    """
    max_components = check_positive_int(max_components, "max_components")
    if method not in ("auto", "exact", "randomized"):
        raise NeuroprobeError(
            f"method must be 'auto', 'exact' or 'randomized'; got {method!r}."
        )
    if stride is not None:
        stride = check_positive_int(stride, "stride")
    if max_units is not None:
        check_positive_int(max_units, "max_units")
    if hook is not None and not isinstance(hook, str):
        raise NeuroprobeError(f"hook must be a hook name (str) or None; got {hook!r}.")
    oversample = check_int(oversample, "oversample", minimum=0)
    seed = check_int(seed, "seed", minimum=0)
    _auto_n_iter(n_iter, 1, (2, 2))  # the same check on every route

    if _is_cov_probe(acts):
        return _spectrum_from_probe(acts, max_components, method, max_units, stride)

    if file_backing(acts) is not None and method != "randomized":
        cols, found_hook = file_columns(acts, hook)
        width = acts.n_units if cols is None else len(cols)
        s = stride or _auto_stride(width, max_units)
        if method == "exact" or -(-width // s) <= EXACT_MAX_WIDTH:
            return _spectrum_of_file(acts, cols, found_hook, s, max_components, chunk_size)
    x, found_hook = _source_to_matrix(acts, hook, "acts")
    n, width = x.shape
    s = stride or _auto_stride(width, max_units)
    n_units = -(-width // s)  # the width after taking every s-th column
    route = method
    if route == "auto":
        route = "exact" if n_units <= EXACT_MAX_WIDTH else "randomized"
    # the exact route checks finiteness through its column sums (one read of x less)
    x = _check_matrix(x, "acts", check_values=route != "exact")
    if s > 1:
        x = x[:, ::s]
    if n < 2:
        raise NeuroprobeError(
            f"acts has {n} row(s); a covariance needs at least 2 samples (time points)."
        )
    k = min(max_components, n_units, n - 1)
    if route == "exact":
        cov, _ = _covariance_exact(x, chunk_size, "acts")
        total = float(np.trace(cov))
        ev = _top_eigvalsh(cov, k)
    else:
        ev, total = _randomized_eigs(x, k, oversample, n_iter, seed)
    return _spectrum_result(ev, total, n, n_units, route, s, found_hook)


def _spectrum_result(ev: np.ndarray, total: float, n: int, n_units: int, route: str, s: int,
                     found_hook: str | None) -> Eigenspectrum:
    """The Eigenspectrum of the top eigenvalues ``ev`` (a constant layer warns)."""
    if total <= 0:
        warn_degenerate(
            f"eigenspectrum: acts{f' at {found_hook!r}' if found_hook else ''} are constant "
            "over its rows (total variance 0): every eigenvalue is 0 and there is no spectrum "
            "to fit (a dead or constant layer)."
        )
    return Eigenspectrum(
        eigenvalues=torch.from_numpy(np.clip(ev, 0.0, None)),
        total_variance=max(total, 0.0),
        n_samples=int(n),
        n_units=n_units,
        method=route,
        stride=s,
        hook=found_hook,
    )


def _spectrum_of_file(rec, cols: np.ndarray | None, found_hook: str | None, s: int,
                      max_components: int, chunk_size: int | None) -> Eigenspectrum:
    """The exact route on a file-backed Recording: row blocks read from the file (resident
    memory: one block and the covariance). ``cols``: the hook's columns (None: all)."""
    if s > 1:
        cols = (np.arange(rec.n_units) if cols is None else cols)[::s]
    n_units = rec.n_units if cols is None else len(cols)
    n = rec.n_time
    if n < 2:
        raise NeuroprobeError(
            f"acts has {n} row(s); a covariance needs at least 2 samples (time points)."
        )
    cov, _ = covariance_from_row_blocks(rec, cols, chunk_size)
    ev = _top_eigvalsh(cov, min(max_components, n_units, n - 1))
    return _spectrum_result(ev, float(np.trace(cov)), n, n_units, "exact", s, found_hook)


def _spectrum_from_probe(probe, max_components, method, max_units, stride) -> Eigenspectrum:
    if method == "randomized":
        raise NeuroprobeError(
            "method='randomized' needs the activations; a RunningCovariance probe holds only "
            "the covariance: use method='auto' or 'exact'."
        )
    if probe.count < 2:
        raise NeuroprobeError(
            f"the RunningCovariance probe has seen {probe.count} rows; a covariance needs at "
            "least 2. Run it over more tokens with npb.stream / npb.record(probes=...)."
        )
    cov = probe.covariance.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(cov).all():
        raise NeuroprobeError(
            "the RunningCovariance probe's covariance contains NaN or inf (the activations "
            "were not finite); check the model's activations."
        )
    width = cov.shape[0]
    s = stride or _auto_stride(width, max_units)
    if s > 1:
        cov = cov[::s, ::s]
    k = min(max_components, cov.shape[0], probe.count - 1)
    ev = _top_eigvalsh(np.ascontiguousarray(cov), k)
    return Eigenspectrum(
        eigenvalues=torch.from_numpy(np.clip(ev, 0.0, None)),
        total_variance=max(float(np.trace(cov)), 0.0),
        n_samples=int(probe.count),
        n_units=int(cov.shape[0]),
        method="exact",
        stride=s,
        hook=probe.hooks[0] if probe.hooks else None,
    )


def _covariance_exact(x: Tensor, chunk_size: int | None,
                      name: str = "acts") -> tuple[np.ndarray, np.ndarray]:
    """Unbiased covariance in float64, accumulated over row chunks; only its lower triangle
    is filled (all that :func:`_top_eigvalsh` and the trace read).

    Two passes over ``x``: the float64 column mean (``sum`` with a float64 accumulator, no
    copy), then for each chunk one fused convert-and-centre into a reused float64 buffer and
    a BLAS ``dsyrk`` update of the Gram's triangle in place (half the work of the general
    matrix product ``np.cov`` does; no ``d x d`` temporary per chunk).  On CUDA the same
    runs in torch float64 on the device.

    ``x`` is not checked beforehand: a NaN or inf anywhere makes its column's float64 sum
    non-finite (float32 sums cannot overflow in float64), so the mean pass doubles as the
    finiteness check, and :func:`check_finite` only runs to name the bad columns.
    """
    n, d = x.shape
    step = n if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
    if x.is_cuda:
        mu = torch.zeros(d, dtype=torch.float64, device=x.device)
        for i in range(0, n, step):
            mu += x[i : i + step].to(torch.float64).sum(0)
        mu /= n
        _check_column_sums(x, bool(torch.isfinite(mu).all()), name)
        acc = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        for i in range(0, n, step):
            c = x[i : i + step].to(torch.float64) - mu
            acc.addmm_(c.T, c)
        return (acc / (n - 1)).cpu().numpy(), mu.cpu().numpy()
    from scipy.linalg.blas import dsyrk

    xs = x.detach().numpy()
    mu = xs.sum(0, dtype=np.float64) / n
    _check_column_sums(x, bool(np.isfinite(mu).all()), name)
    # rows per chunk: at most ``step`` and about 32 MiB of float64 (cache-friendly, small)
    step = max(1, min(step, n, max(256, (32 << 20) // (8 * max(d, 1)))))
    buf = np.empty((step, d))
    acc = np.zeros((d, d), order="F")  # upper triangle of X'X, column-major (in place)
    for i in range(0, n, step):
        m = min(step, n - i)
        c = buf[:m]
        np.subtract(xs[i : i + m], mu, out=c, dtype=np.float64)  # a copy: never the input
        # c.T is column-major [d, m]: dsyrk(trans=0) gives c.T @ c without a copy
        acc = dsyrk(1.0, c.T, beta=1.0, c=acc, trans=0, lower=0, overwrite_c=1)
    cov = acc.T  # row-major view: the lower triangle holds the covariance
    cov /= n - 1
    return cov, mu


def _check_column_sums(x: Tensor, sums_finite: bool, name: str) -> None:
    """Raise when the float64 column sums of ``x`` are not finite: NaN/inf in ``x`` (named by
    column), or finite float64 values so large that their sum overflows."""
    if sums_finite:
        return
    check_finite(x, name, axis_name="unit column")
    raise NeuroprobeError(
        f"{name} has values so large (max |value| {float(x.abs().max()):.3g}) that their "
        "float64 column sums overflow; rescale the activations (e.g. divide by their maximum)."
    )


def _top_eigvalsh(cov: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest eigenvalues of a symmetric matrix (its lower triangle is read).

    torch's LAPACK (MKL ``syevd`` without eigenvectors: tridiagonal reduction + the
    eigenvalue-only solver) is ~2x faster than numpy's OpenBLAS ``syevd`` here (measured
    against ``scipy.linalg.eigh(driver="evr"|"evd"|"ev", eigvals_only=True)`` and
    LAPACK's two-stage ``dsyevd_2stage``: all slower); same float64 result.
    """
    ev = torch.linalg.eigvalsh(torch.from_numpy(np.ascontiguousarray(cov)), UPLO="L").numpy()
    return ev[::-1][:k].copy()


def _auto_n_iter(n_iter, k: int, shape) -> int:
    """scikit-learn's rule for ``n_iter="auto"``: 7 power iterations when fewer than 10% of
    the components are wanted (the spectrum's gap is then harder to resolve), 4 otherwise."""
    if isinstance(n_iter, str):
        if n_iter != "auto":
            raise NeuroprobeError(f"n_iter must be a non-negative int or 'auto'; got {n_iter!r}.")
        return 7 if k < 0.1 * min(shape) else 4
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
        raise NeuroprobeError(f"n_iter must be a non-negative int or 'auto'; got {n_iter!r}.")
    return int(n_iter)


def _randomized_eigs(
    x: Tensor, k: int, oversample: int, n_iter, seed: int
) -> tuple[np.ndarray, float]:
    """Randomized SVD of the centred data (float64 for float64 input, float32 otherwise):
    ``k + oversample`` Gaussian probes, ``n_iter`` power iterations re-orthonormalised by
    QR (``torch.svd_lowrank``), scikit-learn's ``n_iter="auto"`` rule."""
    n = x.shape[0]
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.detach().to(dt)
    mu = xf.to(torch.float64).mean(0).to(dt)
    xc = xf - mu  # pre-centred copy (never M=mean: it doubles the cost)
    total = float((xc.to(torch.float64) ** 2).sum() / (n - 1))
    q = min(k + int(oversample), min(xc.shape))
    n_iter = _auto_n_iter(n_iter, k, xc.shape)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        _, s, _ = torch.svd_lowrank(xc, q=q, niter=n_iter)
    finally:
        torch.random.set_rng_state(gen_state)
    ev = (s.to(torch.float64) ** 2 / (n - 1)).cpu().numpy()[:k]
    return ev, total


# =========================================================================================
# power-law fit
# =========================================================================================
@dataclass(frozen=True, eq=False)
class PowerLawFit:
    """A power law ``lambda_k = exp(intercept) * k**alpha`` fitted to an eigenspectrum.

    Attributes
    ----------
    alpha : float
        Exponent (the paper's sign: negative for a decaying spectrum; Stringer et al. and
        reptrix report ``-alpha``).
    intercept : float
        Natural-log intercept.
    r2 : float
        Coefficient of determination of the (unweighted) log-log fit inside the window.
    ci_low, ci_high : float
        Bootstrap percentile confidence interval of ``alpha`` (NaN if ``n_boot=0``).
    fit_range : tuple of int
        First and last component (1-based, inclusive) of the window.
    method : str
        Preset used.
    fit_line : Tensor ``[n_components]``
        The fitted power law at every component 1..n (for plotting).
    n_boot : int
        Bootstrap resamples.
    hook : str or None
        Hook of the spectrum, when known.
    """

    alpha: float
    intercept: float
    r2: float
    ci_low: float
    ci_high: float
    fit_range: tuple[int, int]
    method: str
    fit_line: Float[Tensor, " component"]
    n_boot: int
    confidence: float = 0.95
    hook: str | None = None

    def to_dataframe(self) -> pd.DataFrame:
        """One row: ``hook, layer, alpha, ci_low, ci_high, r2, intercept, method, fit_start,
        fit_stop``."""
        return pd.DataFrame([self._row()])

    def _row(self) -> dict:
        return {
            "hook": self.hook,
            "layer": hook_layer(self.hook) if self.hook else -1,
            "alpha": self.alpha,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "r2": self.r2,
            "intercept": self.intercept,
            "method": self.method,
            "fit_start": self.fit_range[0],
            "fit_stop": self.fit_range[1],
        }

    def __repr__(self) -> str:
        return (
            f"PowerLawFit(alpha={self.alpha:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}], "
            f"r2={self.r2:.4f}, method={self.method!r}, fit_range={self.fit_range}, "
            f"fit_line[{self.fit_line.shape[0]}])"
        )


def _wls_batch(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of ``y ~ b0 + b1 x`` for each row of ``w`` ``[B, n]``."""
    sw = w.sum(1)
    mx = (w * x).sum(1) / sw
    my = (w * y).sum(1) / sw
    dx = x[None, :] - mx[:, None]
    sxx = (w * dx * dx).sum(1)
    sxy = (w * dx * (y[None, :] - my[:, None])).sum(1)
    slope = sxy / np.where(sxx > 0, sxx, np.nan)
    return slope, my - slope * mx


def _huber_batch(
    x: np.ndarray, y: np.ndarray, counts: np.ndarray, epsilon: float = 1.35,
    max_iter: int = 500, tol: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray]:
    """Huber regression with concomitant scale (the objective of sklearn's HuberRegressor
    with ``alpha=0``), for each row of sample multiplicities ``counts`` ``[B, n]``.

    Minimises ``sum_i c_i * (sigma + H_eps(r_i / sigma) * sigma)`` over slope, intercept and
    sigma by alternating an IRLS step for the coefficients with the closed-form scale update.
    """
    slope, icpt = _wls_batch(x, y, counts)
    r = y[None, :] - (icpt[:, None] + slope[:, None] * x[None, :])
    ntot = counts.sum(1)
    sigma = np.sqrt((counts * r * r).sum(1) / ntot) + 1e-12
    eps2 = epsilon * epsilon
    for _ in range(max_iter):
        a = np.abs(r)
        inl = a <= epsilon * sigma[:, None]
        s_in = (counts * r * r * inl).sum(1)
        n_out = (counts * ~inl).sum(1)
        denom = ntot - eps2 * n_out
        new_sigma = np.where(denom > 0, np.sqrt(s_in / np.maximum(denom, 1e-300)), sigma * 2)
        new_sigma = np.maximum(new_sigma, 1e-12)
        cut = epsilon * new_sigma[:, None]
        wts = counts * np.where(a <= cut, 1.0, cut / np.maximum(a, 1e-300))
        new_slope, new_icpt = _wls_batch(x, y, wts)
        done = (np.abs(new_slope - slope) < tol) & (np.abs(new_icpt - icpt) < tol) & (
            np.abs(new_sigma - sigma) < tol
        )
        slope, icpt, sigma = new_slope, new_icpt, new_sigma
        r = y[None, :] - (icpt[:, None] + slope[:, None] * x[None, :])
        if done.all():
            break
    return slope, icpt


def _eigenvalues_of(spectrum) -> tuple[np.ndarray, str | None, str]:
    if isinstance(spectrum, Eigenspectrum):
        desc = (f"{spectrum.n_components} components (from {spectrum.n_samples} samples of "
                f"{spectrum.n_units} units)")
        return spectrum.eigenvalues.numpy().astype(np.float64, copy=True), spectrum.hook, desc
    t = as_tensor(spectrum, "spectrum", ndim=1).detach()
    if t.is_complex():
        raise NeuroprobeError(f"spectrum is complex ({t.dtype}); eigenvalues of a covariance "
                              "are real: pass torch.linalg.eigvalsh's output, largest first.")
    ev = t.to("cpu", torch.float64).numpy()
    return ev.copy(), None, f"{ev.shape[0]} components"


def _check_spectrum_values(ev: np.ndarray) -> tuple[np.ndarray, int]:
    """Eigenvalues as a covariance spectrum: non-negative (round-off negatives of a
    numerically singular covariance, above ``-_ZERO_RTOL * max``, are clipped to 0 and
    counted), sorted largest first.  Returns the clipped copy and how many were clipped."""
    if not np.isfinite(ev).all():
        raise NeuroprobeError("spectrum contains NaN or inf; compute it from finite activations.")
    if ev.size == 0:
        return ev, 0
    scale = float(np.abs(ev).max())
    neg = ev < 0
    tiny = neg & (ev >= -_ZERO_RTOL * scale)
    real = np.flatnonzero(neg & ~tiny)
    if real.size:
        raise NeuroprobeError(
            f"spectrum has {real.size} negative eigenvalue(s), at components "
            f"{(real[:5] + 1).tolist()}{' ...' if real.size > 5 else ''} (1-based; most negative "
            f"{float(ev.min()):.3g}); a covariance has none. Pass the eigenvalues of a "
            "covariance (e.g. npb.eigenspectrum(acts)), not of another matrix."
        )
    ev = np.where(tiny, 0.0, ev)
    d = np.diff(ev)
    tol = 1e-9 * scale
    if ev.size >= 3 and (d > tol).any():
        from scipy.stats import rankdata

        # rank correlation of value with component number: -1 for a sorted spectrum, near -1
        # for a noisy power law, +1 for eigvalsh's ascending order, near 0 for a shuffle
        r = rankdata(ev)
        k = np.arange(ev.size, dtype=np.float64)
        rho = float(np.corrcoef(k, r)[0, 1]) if r.std() > 0 else -1.0
        if rho > 0:
            order = ("ascending (smallest eigenvalue first, the order torch.linalg.eigvalsh / "
                     "numpy.linalg.eigvalsh return)" if not (d < -tol).any() else
                     f"increasing with component number (rank correlation {rho:+.2f})")
            raise NeuroprobeError(
                f"spectrum is {order}; powerlaw_alpha needs the largest eigenvalue first "
                "(component 1 = element 0). Pass ev.flip(0) / ev[::-1], np.sort(ev)[::-1], "
                "or npb.eigenspectrum(acts)."
            )
        if rho > -0.5:
            warn_degenerate(
                f"spectrum is barely ordered largest first (rank correlation of eigenvalue "
                f"with component number {rho:+.2f}; a sorted spectrum has -1): the power law "
                "is fitted to the order given. Sort it descending if it is a covariance "
                "spectrum.", stacklevel=4,
            )
    return ev, int(tiny.sum())


def powerlaw_alpha(
    spectrum,
    fit_range: tuple[int, int] | None = None,
    method: str = "huber",
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    epsilon: float = 1.35,
) -> PowerLawFit:
    """Power-law exponent of an eigenspectrum: ``log lambda_k ~ intercept + alpha log k``.

    Parameters
    ----------
    spectrum : Eigenspectrum or 1-D tensor/array
        Eigenvalues, largest first (component 1 is element 0).  Never modified.
    fit_range : (int, int), optional
        First and last component of the fit window, 1-based and inclusive.  Default: the
        preset's (huber 10..50, stringer 11..500, reptrix 11..100).
    method : {"huber", "stringer", "reptrix"}
        ``"huber"``: the paper -- Huber regression (epsilon 1.35, concomitant scale, the
        objective of ``sklearn.linear_model.HuberRegressor(alpha=0)``), unweighted.
        ``"stringer"``: least squares weighted by ``1/k`` (Stringer et al. 2019).
        ``"reptrix"``: the same weighted fit over reptrix's default window.
    n_boot : int
        Bootstrap resamples of the window's (log k, log lambda) points for the confidence
        interval (0: no interval, NaN bounds).  This measures the fit's uncertainty given
        the spectrum, not the sampling noise of the spectrum itself.
    confidence : float
        Coverage of the percentile interval.
    seed : int
        Bootstrap seed.
    epsilon : float
        Huber threshold (huber preset only).

    Returns
    -------
    PowerLawFit

    Examples
    --------
    >>> import torch
    >>> k = torch.arange(1, 201, dtype=torch.float64)
    >>> fit = powerlaw_alpha(k ** -1.5, method="huber", n_boot=50)
    >>> round(fit.alpha, 6), fit.fit_range
    (-1.5, (10, 50))
    """
    if method not in FIT_PRESETS:
        raise NeuroprobeError(
            f"method must be one of {sorted(FIT_PRESETS)}; got {method!r}."
        )
    preset = FIT_PRESETS[method]
    ev, hook, desc = _eigenvalues_of(spectrum)
    fr = preset["fit_range"] if fit_range is None else fit_range
    if (
        not isinstance(fr, (tuple, list))
        or len(fr) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                   for v in fr)
        or not 1 <= fr[0] < fr[1]
    ):
        raise NeuroprobeError(
            f"fit_range must be (first, last) 1-based component numbers with 1 <= first < last; "
            f"got {fit_range!r}."
        )
    lo, hi = int(fr[0]), int(fr[1])
    n_boot = check_positive_int(n_boot, "n_boot", minimum=0)
    confidence = check_fraction(confidence, "confidence")
    seed = check_int(seed, "seed", minimum=0)
    # HuberRegressor's own bound: below 1 the loss treats most residuals as outliers
    epsilon = check_real(epsilon, "epsilon", minimum=1.0)
    ev, n_clipped = _check_spectrum_values(ev)
    if hi > ev.shape[0]:
        capped = isinstance(spectrum, Eigenspectrum) and spectrum.n_components < min(
            spectrum.n_units, spectrum.n_samples - 1)
        fix = (f"compute the spectrum with max_components >= {hi}" if capped else
               f"record at least {hi + 1} samples of at least {hi} units")
        raise NeuroprobeError(
            f"fit_range=({lo}, {hi}) needs at least {hi} components but the spectrum has {desc}; "
            f"{fix}, or lower fit_range (e.g. fit_range=({lo}, {max(ev.shape[0], lo + 1)}))."
        )
    if ev.max(initial=0.0) <= 0:
        raise NeuroprobeError(
            "spectrum is all zero: the activations are constant (a dead or constant layer has "
            "no eigenspectrum to fit)."
        )
    win = ev[lo - 1 : hi]
    zero = win <= ev.max() * _ZERO_RTOL  # below float rounding of the covariance: zero
    if zero.any():
        first_zero = lo + int(np.flatnonzero(zero)[0])
        note = (f" ({n_clipped} tiny negative round-off value(s) of the spectrum were clipped "
                "to 0)" if n_clipped else "")
        raise NeuroprobeError(
            f"eigenvalues {first_zero}..{hi} of fit_range=({lo}, {hi}) are zero{note}: the "
            f"activations have rank {first_zero - 1}; lower fit_range below component "
            f"{first_zero} or record more varied inputs."
        )
    if hi - lo + 1 < 3:
        warn_degenerate(
            f"fit_range=({lo}, {hi}) has {hi - lo + 1} components: a line through two points "
            "fits exactly (r2 = 1, no residual for the bootstrap); widen the window.",
        )
    k = np.arange(lo, hi + 1, dtype=np.float64)
    x = np.log(k)
    y = np.log(win)
    n = x.shape[0]
    base_w = np.ones(n) if preset["weights"] is None else 1.0 / k
    rng = np.random.default_rng(seed)
    counts = np.ones((1, n))
    if n_boot:
        boot = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
        counts = np.concatenate([counts, boot])
    if preset["robust"]:
        slope, icpt = _huber_batch(x, y, counts * base_w[None, :], epsilon=epsilon)
    else:
        slope, icpt = _wls_batch(x, y, counts * base_w[None, :])
    alpha, intercept = float(slope[0]), float(icpt[0])
    yhat = intercept + alpha * x
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - yhat) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    if n_boot:
        bs = slope[1:]
        bs = bs[np.isfinite(bs)]
        q = (1 - confidence) / 2
        ci_low, ci_high = (float(v) for v in np.quantile(bs, [q, 1 - q]))
    else:
        ci_low = ci_high = float("nan")
    comps = np.arange(1, ev.shape[0] + 1, dtype=np.float64)
    line = torch.from_numpy(np.exp(intercept + alpha * np.log(comps)))
    return PowerLawFit(
        alpha=alpha, intercept=intercept, r2=r2, ci_low=ci_low, ci_high=ci_high,
        fit_range=(lo, hi), method=method, fit_line=line, n_boot=n_boot,
        confidence=confidence, hook=hook,
    )


def alpha_by_layer(
    source,
    hooks: str | Sequence[str] | None = None,
    *,
    max_components: int = 1000,
    fit_range: tuple[int, int] | None = None,
    method: str = "huber",
    n_boot: int = 1000,
    seed: int = 0,
    prompts=None,
    client=None,
    **spectrum_kwargs,
) -> pd.DataFrame:
    """Power-law exponent of every hook: one row per hook, sorted by layer.

    Parameters
    ----------
    source : Recording, sequence of RunningCovariance probes, dict hook -> tensor/probe, or a model
        Where the activations (or their covariances) come from. With ``prompts``: the model
        to stream them from (a loaded model, or with ``client`` a name / config dict /
        factory that each worker loads).
    hooks : str or sequence of str, optional
        Hooks (names or globs) to use; all of the source's hooks by default (required with
        ``prompts``).
    max_components, fit_range, method, n_boot, seed
        As in :func:`eigenspectrum` and :func:`powerlaw_alpha`.
    prompts : list of str or token-id lists, optional
        Stream these through ``source`` (a model) into one ``SpectrumProbe`` per hook, in one
        pass; nothing but the ``d x d`` covariances is kept.
    client : dask.distributed.Client, DaskBackend or SerialBackend, optional
        With ``prompts``: run the pass as shards on workers
        (:func:`neuroprobe.distributed.stream`); the merged covariances equal the serial
        ones within float64 rounding.
    **spectrum_kwargs
        More :func:`eigenspectrum` options (``max_units``, ``method`` is the fit's).

    Returns
    -------
    pandas.DataFrame
        Columns ``layer, hook, alpha, ci_low, ci_high, r2, intercept, method, fit_start,
        fit_stop, n_samples, n_units``.

    Examples
    --------
    >>> import torch
    >>> k = torch.arange(1, 101, dtype=torch.float64)
    >>> x = torch.randn(2000, 100, dtype=torch.float64) * k ** -0.5
    >>> df = alpha_by_layer({"blocks.0.hook_post": x, "blocks.1.hook_post": x[:, ::2]},
    ...                     fit_range=(5, 40), n_boot=20)
    >>> df["layer"].tolist()
    [0, 1]
    """
    allowed = ("max_units", "stride", "chunk_size", "oversample", "n_iter")
    check_known_keys(spectrum_kwargs, "spectrum_kwargs (extra keyword arguments)", allowed)
    if method not in FIT_PRESETS:
        raise NeuroprobeError(f"method must be one of {sorted(FIT_PRESETS)}; got {method!r}.")
    items: list[tuple[str, object]] = []
    if prompts is not None:
        source = _stream_spectra(source, prompts, hooks, client)
        hooks = None
    elif client is not None:
        raise NeuroprobeError(
            "alpha_by_layer(client=...) streams a model over prompts: pass prompts=... (and "
            "the model as source), or leave client out for a Recording / probes / dict."
        )
    if isinstance(source, Mapping):
        items = [(str(h), v) for h, v in source.items()]
        if hooks is not None:
            picked = set(match_hook_names([h for h, _ in items], hooks))
            items = [(h, v) for h, v in items if h in picked]
    elif hasattr(source, "acts") and hasattr(source, "units"):
        all_hooks = list(source.units.hooks)
        if hooks is None:
            chosen = all_hooks
        else:  # the recording's own hook order
            picked = set(match_hook_names(all_hooks, hooks))
            chosen = [h for h in all_hooks if h in picked]
        items = [(h, (source, h)) for h in chosen]
    elif isinstance(source, Sequence) and not isinstance(source, str) and source and all(
            _is_cov_probe(p) for p in source):
        items = [(p.hooks[0], p) for p in source]
        if hooks is not None:
            picked = set(match_hook_names([h for h, _ in items], hooks))
            items = [(h, v) for h, v in items if h in picked]
    else:
        raise NeuroprobeError(
            f"source must be a Recording, a list of RunningCovariance probes or a dict "
            f"hook -> activations; got {type(source).__name__}."
        )
    if not items:
        raise NeuroprobeError(
            f"source has no hooks ({type(source).__name__} of length 0); pass a Recording, "
            "RunningCovariance probes or a dict hook -> activations with at least one hook."
        )
    rows = []
    for h, v in items:
        if isinstance(v, tuple):
            spec = eigenspectrum(v[0], max_components, hook=v[1], **spectrum_kwargs)
        else:
            spec = eigenspectrum(v, max_components, **spectrum_kwargs)
        fit = powerlaw_alpha(spec, fit_range, method, n_boot=n_boot, seed=seed)
        row = fit._row()
        row.update(hook=h, layer=hook_layer(h), n_samples=spec.n_samples, n_units=spec.n_units)
        rows.append(row)
    df = pd.DataFrame(rows)
    cols = ["layer", "hook", "alpha", "ci_low", "ci_high", "r2", "intercept", "method",
            "fit_start", "fit_stop", "n_samples", "n_units"]
    df = df[cols].sort_values("layer", kind="stable").reset_index(drop=True)
    return df


def _stream_spectra(model, prompts, hooks, client) -> list:
    """One SpectrumProbe per hook of ``model`` matching ``hooks``, streamed over ``prompts``
    (on ``client``'s workers when given)."""
    from neuroprobe.core.hooks import hook_names
    from neuroprobe.distributed import local_model
    from neuroprobe.distributed import stream as stream_on

    if hooks is None:
        raise NeuroprobeError(
            "alpha_by_layer(prompts=...) needs hooks=... (names or globs, e.g. "
            "'blocks.*.hook_resid_post'): which layers' spectra to stream."
        )
    names = match_hook_names(hook_names(local_model(model)), hooks)
    return stream_on(model, prompts, [SpectrumProbe(h) for h in names], client=client)


# =========================================================================================
# random projections
# =========================================================================================
@dataclass(frozen=True, eq=False)
class RandomProjections(Directions):
    """``n`` random projections of a hook's output to ``dim`` dimensions, as direction units.

    A :class:`~neuroprobe.core.units.Directions` whose ``n * dim`` rows are grouped by projection:
    rows ``j*dim .. (j+1)*dim - 1`` are projection ``j`` (the paper's ``r in R^{m x 3}``,
    transposed).  Entries are ``N(0, 1/m)``.  Record them with ``npb.record(model, prompts,
    hooks=[proj])`` or apply them with :meth:`project`.
    """

    dim: int = 3
    seed: int = 0

    @property
    def n_projections(self) -> int:
        return self.n_directions // self.dim

    def project(self, acts) -> Float[Tensor, "time projection dim"]:
        """``z = acts @ r`` for every projection: ``[time, n, dim]`` (float32).

        ``acts`` is ``[time, m]`` activations of the hook (tensor or single-hook Recording).
        """
        x, _ = _source_to_matrix(acts, None, "acts")
        if x.shape[1] != self.width:
            raise NeuroprobeError(
                f"acts has width {x.shape[1]} but these projections were drawn for width "
                f"{self.width}; project the hook they were made for ({self.hook!r})."
            )
        check_finite(x.float(), "acts", axis_name="unit column")
        z = x.float() @ self.vectors.to(x.device, torch.float32).T
        return z.reshape(x.shape[0], self.n_projections, self.dim)

    def curves(self, projected) -> Float[Tensor, "time projection dim"]:
        """Reshape recorded projections (``[time, n*dim]``, e.g. ``rec.acts`` of a recording
        of these directions) to ``[time, n, dim]``."""
        z, _ = _source_to_matrix(projected, None, "projected")
        if z.shape[1] != self.n_directions:
            raise NeuroprobeError(
                f"projected has {z.shape[1]} columns; expected n*dim = {self.n_directions}. "
                "Pass the recording of these directions (or use .project on raw activations)."
            )
        return z.float().reshape(z.shape[0], self.n_projections, self.dim)

    def __repr__(self) -> str:
        return (
            f"RandomProjections(hook={self.hook!r}, n={self.n_projections}, dim={self.dim}, "
            f"width={self.width}, seed={self.seed})"
        )


def random_projections(
    acts,
    n: int = 1000,
    dim: int = 3,
    *,
    seed: int = 0,
    hook: str | None = None,
    name: str = "random",
) -> RandomProjections:
    """``n`` random projections ``r in R^{m x dim}``, ``r_ij ~ N(0, 1/m)``, as direction units.

    Parameters
    ----------
    acts : int, Tensor ``[time, m]``, Recording, or RunningCovariance probe
        The width ``m`` (an int) or something of that width; the hook name is taken from a
        single-hook Recording or a probe.
    n : int
        Number of projections (the paper averaged over 1000).
    dim : int
        Dimensions of each projection (the paper: 3).
    seed : int
        Seed of the Gaussian draws (a private generator; global RNG state is untouched).
    hook : str, optional
        Hook name for the direction units (default: from ``acts``, else ``"acts"``).
    name : str
        Name of the direction set.

    Returns
    -------
    RandomProjections
        A :class:`~neuroprobe.core.units.Directions` with ``n * dim`` rows of width ``m``.

    Examples
    --------
    >>> import torch
    >>> proj = random_projections(64, n=10, dim=3, seed=0, hook="blocks.0.hook_post")
    >>> proj.vectors.shape, proj.project(torch.randn(50, 64)).shape
    (torch.Size([30, 64]), torch.Size([50, 10, 3]))
    """
    n = check_positive_int(n, "n")
    dim = check_positive_int(dim, "dim")
    seed = check_int(seed, "seed", minimum=0)
    for nm, v in (("hook", hook), ("name", name)):
        if v is not None and not isinstance(v, str):
            raise NeuroprobeError(f"{nm} must be a str; got {type(v).__name__} {v!r}.")
    found = None
    if isinstance(acts, (float, bool, np.floating, np.bool_)):
        raise NeuroprobeError(
            f"acts must be the width (an int) or activations [time, m]; got "
            f"{type(acts).__name__} {acts!r}."
        )
    if isinstance(acts, (int, np.integer)):
        m = int(acts)
    elif _is_cov_probe(acts):
        if acts.mean is None:
            raise NeuroprobeError("the RunningCovariance probe has seen no data; its width is "
                                  "unknown. Pass the width as an int.")
        m, found = int(acts.mean.shape[0]), acts.hooks[0]
    else:
        x, found = _source_to_matrix(acts, None, "acts")
        m = int(x.shape[1])
    m = check_positive_int(m, "width of acts")
    gen = torch.Generator().manual_seed(int(seed))
    vec = torch.randn(n * dim, m, generator=gen, dtype=torch.float32) / math.sqrt(m)
    return RandomProjections(
        hook=hook or found or "acts", vectors=vec, name=name, dim=dim, seed=int(seed)
    )


def _as_curves(z, name: str = "z") -> Tensor:
    t = as_tensor(z, name)
    if t.ndim == 2:
        t = t[:, None, :]
    if t.ndim != 3:
        raise NeuroprobeError(
            f"{name} must be [time, dim] (one curve) or [time, n_projections, dim]; got shape "
            f"{tuple(t.shape)}. Use RandomProjections.project / .curves to get this shape."
        )
    if t.is_complex():
        raise NeuroprobeError(f"{name} is complex ({t.dtype}); pass real curves.")
    if 0 in t.shape[1:]:
        raise NeuroprobeError(
            f"{name} has shape {tuple(t.shape)}: no projections or no dimensions; pass curves "
            "[time, n_projections >= 1, dim >= 1]."
        )
    t = t.detach().to(torch.float64)
    check_finite(t, name)
    return t


@dataclass(frozen=True, eq=False)
class AverageAction:
    """Action ``1/2 * integral ||dz/dt||^2 dt`` of each projection curve.

    Attributes
    ----------
    action : Tensor ``[n_projections]`` float64
    duration : float
        Length of the time axis (time runs over ``[0, duration]``, ``dt = duration/(T-1)``).
    n_time : int
        Time points per curve.
    normalized : bool
        Whether each curve was divided by its total variance first.
    """

    action: Float[Tensor, " projection"]
    duration: float
    n_time: int
    normalized: bool

    @property
    def mean(self) -> float:
        """The paper's *average action*: mean over projections."""
        return float(self.action.mean())

    @property
    def sem(self) -> float:
        """Standard error of :attr:`mean` over projections."""
        n = self.action.shape[0]
        return float(self.action.std() / math.sqrt(n)) if n > 1 else float("nan")

    def to_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"projection": np.arange(self.action.shape[0]), "action": self.action.numpy()}
        )

    def __repr__(self) -> str:
        return (
            f"AverageAction(mean={self.mean:.6g}, action[{self.action.shape[0]}], "
            f"n_time={self.n_time}, duration={self.duration}, normalized={self.normalized})"
        )


def average_action(z, *, duration: float = 1.0, normalize: bool = False) -> AverageAction:
    """Average action ``E[z] = 1/2 * integral ||dz/dt||^2 dt`` of time-ordered projection curves.

    Discretisation: the ``T`` rows are equally spaced time points on ``[0, duration]``
    (``dt = duration / (T - 1)``) and ``dz/dt`` is the forward difference, so

    ``E[z] = 1/2 * sum_t ||z[t+1] - z[t]||^2 / dt``.

    For a smooth curve this converges as ``T`` grows (a unit circle traversed once:
    ``2 pi^2``); for a rough curve it grows with ``T``.

    Parameters
    ----------
    z : Tensor ``[time, dim]`` or ``[time, n_projections, dim]``
        Curves, rows in time order (e.g. ``RandomProjections.project(acts)``).
    duration : float
        Length of the time axis (1.0: the stimulus spans unit time).
    normalize : bool
        Divide each curve by its total variance (sum over ``dim`` of the variance over time)
        first, so layers of different activation scale are comparable.  The paper's
        quantity is ``normalize=False``.

    Returns
    -------
    AverageAction
        ``.action`` per projection and ``.mean`` (the average action).

    Examples
    --------
    >>> import math, torch
    >>> t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    >>> circle = torch.stack([torch.cos(2 * math.pi * t), torch.sin(2 * math.pi * t)], 1)
    >>> round(average_action(circle).mean / (2 * math.pi ** 2), 4)
    1.0
    """
    c = _as_curves(z)
    duration = check_real(duration, "duration", minimum=0.0, low_open=True)
    normalize = check_bool(normalize, "normalize")
    T = c.shape[0]
    if T < 2:
        raise NeuroprobeError(f"z has {T} time point(s); the action needs at least 2.")
    dt = float(duration) / (T - 1)
    d = c[1:] - c[:-1]
    act = 0.5 * (d * d).sum(dim=(0, 2)) / dt
    if normalize:
        var = c.var(dim=0, unbiased=False).sum(-1)
        if bool((var <= 0).any()):
            raise NeuroprobeError(
                "normalize=True but some curves are constant over time (zero variance); "
                "use normalize=False or drop those projections."
            )
        act = act / var
    return AverageAction(
        action=act, duration=float(duration), n_time=int(T), normalized=normalize
    )


@dataclass(frozen=True, eq=False)
class ExplainedVariance:
    """Fraction of the input's variance explained by each projection (linear regression).

    Attributes
    ----------
    explained : Tensor ``[n_projections]`` float64
        ``1 - SS_res / SS_tot`` over all input features together (R^2 of the multi-output
        regression of the inputs on ``[1, z]``).
    n_time, n_features : int
    """

    explained: Float[Tensor, " projection"]
    n_time: int
    n_features: int

    @property
    def mean(self) -> float:
        """Average over projections (the paper's "% of input variance explained" / 100)."""
        return float(self.explained.mean())

    def to_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"projection": np.arange(self.explained.shape[0]), "explained": self.explained.numpy()}
        )

    def __repr__(self) -> str:
        return (
            f"ExplainedVariance(mean={self.mean:.4f}, explained[{self.explained.shape[0]}], "
            f"n_time={self.n_time}, n_features={self.n_features})"
        )


def explained_input_variance(inputs, z) -> ExplainedVariance:
    """Fraction of the stimulus variance a linear read-out of each projection explains.

    For each projection ``j`` the inputs (all features at once) are regressed on
    ``[1, z[:, j, :]]`` by ordinary least squares;
    ``explained_j = 1 - sum ||inputs - fit||^2 / sum ||inputs - mean||^2``.

    Parameters
    ----------
    inputs : Tensor ``[time, ...]``
        The stimulus (e.g. moving-dot frames ``[T, H, W]``; flattened per time point).
    z : Tensor ``[time, dim]`` or ``[time, n_projections, dim]``
        Projection curves aligned with ``inputs``.

    Returns
    -------
    ExplainedVariance

    Examples
    --------
    >>> import torch
    >>> z = torch.randn(100, 2, dtype=torch.float64)
    >>> y = torch.cat([z @ torch.randn(2, 5, dtype=torch.float64), torch.zeros(100, 1)], 1)
    >>> round(explained_input_variance(y, z).mean, 6)
    1.0
    """
    c = _as_curves(z)
    y = as_tensor(inputs, "inputs").detach().to(torch.float64)
    if y.ndim < 1 or y.shape[0] != c.shape[0]:
        raise NeuroprobeError(
            f"inputs has {y.shape[0] if y.ndim else 0} time points but z has {c.shape[0]}; "
            "pass the stimulus frames aligned with the projection curves."
        )
    y = y.reshape(y.shape[0], -1)
    check_finite(y, "inputs")
    T, n, dim = c.shape
    if T <= dim + 1:
        raise NeuroprobeError(
            f"z has {T} time points; regressing on {dim} projection dimensions + intercept "
            f"needs more than {dim + 1}."
        )
    yc = y - y.mean(0)
    ss_tot = float((yc * yc).sum())
    if ss_tot <= 0:
        raise NeuroprobeError("inputs are constant over time: there is no variance to explain.")
    zc = c - c.mean(0)  # centring the regressors = fitting the intercept
    zz = torch.einsum("tnd,tne->nde", zc, zc)  # [n, dim, dim]
    zy = torch.einsum("tnd,tf->ndf", zc, yc)  # [n, dim, F]
    beta = torch.linalg.lstsq(zz, zy).solution  # robust to rank-deficient curves
    ss_fit = (beta * zy).sum(dim=(1, 2))  # = ||Zc beta||^2 at the LS solution
    explained = (ss_fit / ss_tot).clamp(0.0, 1.0)
    return ExplainedVariance(explained=explained, n_time=int(T), n_features=int(y.shape[1]))

