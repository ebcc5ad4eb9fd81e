"""Mass-univariate GLM over token time series: fit, contrasts, multiple comparisons.

:func:`fit_glm` fits ``Y [T, N] = X [T, P] beta + noise`` for every unit at once, with the
conventions of nilearn's first-level GLM (``nilearn.glm.first_level.run_glm`` and
``nilearn.glm.contrasts.compute_contrast``), which it reproduces to rounding:

* ``beta = pinv(X) Y``; residual degrees of freedom ``T - rank(X)``; residual variance
  ``SSE / df_resid``;
* ``noise="ar1"``: rho from the OLS residuals by Yule-Walker (nilearn subtracts the grand mean
  of *all* residuals first), truncated to ``bins`` (``trunc(rho * bins) / bins``), then an OLS
  fit of the whitened data ``y_0, y_t - rho y_{t-1}`` (the first row is not rescaled);
* t contrasts: ``p`` is the one-sided upper tail, ``z`` is nilearn's conversion (p clipped to
  ``[1e-300, 1 - 1e-16]``, so ``|z|`` saturates near 37); ``log10_p`` never saturates;
* F contrasts: nilearn's whitened effect ``sqrtm(inv(C cov C')) C beta``.

Everything is computed from per-unit cross products gathered in one pass over ``Y``
(chunked over units, on any torch device), never from a ``T x N`` residual; the same
statistics can be accumulated batch by batch by :class:`GLMProbe` during ``record``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from scipy import stats
from torch import Tensor

from neuroprobe.glm import pvalues as pv
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.glm.contrast import as_contrast
from neuroprobe.glm.stats import (
    TINY,
    GLMStats,
    dense_stats,
    fit_ar1,
    fit_ols,
    serial_torch,
    spans_constant,
)
from neuroprobe.core.validation import as_tensor, check_fraction, resolve_device

__all__ = ["fit_glm", "GLMResult", "ContrastResult", "GLMProbe"]

_CORRECTIONS = ("bonferroni", "holm", "fdr_bh", "none", "max_t", "fdr_by", "sidak",
                "holm-sidak", "simes-hochberg")
_TAILS = ("upper", "lower", "two-sided")
_NUISANCE = re.compile(r"^(constant|intercept|const|run_\d+)$")


# ---------------------------------------------------------------------------------------
# design handling
# ---------------------------------------------------------------------------------------
def _as_design(X, T: int | None) -> tuple[np.ndarray, tuple[str, ...]]:
    if hasattr(X, "matrix") and isinstance(X.matrix, pd.DataFrame):
        X = X.matrix  # a BlockDesign
    if isinstance(X, pd.DataFrame):
        cols = tuple(str(c) for c in X.columns)
        try:
            arr = X.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise NeuroprobeError(
                "X (design DataFrame) has non-numeric columns; every column must be numeric."
            ) from None
    else:
        arr = as_tensor(X, "X").detach().cpu().to(torch.float64).numpy()
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise NeuroprobeError(f"X must be 2-D [time, regressor]; got shape {arr.shape}.")
        cols = tuple(f"x{i}" for i in range(arr.shape[1]))
    if len(set(cols)) != len(cols):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise NeuroprobeError(f"X has duplicate column names {dup}; rename them.")
    if not np.isfinite(arr).all():
        bad = [cols[j] for j in np.flatnonzero(~np.isfinite(arr).all(0))]
        raise NeuroprobeError(
            f"X contains NaN or inf in column(s) {bad}; the design must be finite."
        )
    if T is not None and arr.shape[0] != T:
        raise NeuroprobeError(
            f"Y and X have different numbers of time points: Y has shape [T={T}, N] but X "
            f"has shape {arr.shape}; X needs one row per time point of Y."
        )
    return np.ascontiguousarray(arr), cols


def _rank_check(X: np.ndarray, cols, allow: bool) -> int:
    T, P = X.shape
    rank = int(np.linalg.matrix_rank(X))
    if T <= rank:
        raise NeuroprobeError(
            f"the GLM needs more time points than the rank of X: T={T}, rank(X)={rank}; "
            "record more tokens or use fewer regressors."
        )
    if rank < P and not allow:
        Xn = X / np.maximum(np.linalg.norm(X, axis=0), 1e-300)
        _, s, vt = np.linalg.svd(Xn, full_matrices=False)
        null = vt[s <= s.max() * max(X.shape) * np.finfo(float).eps * 10]
        involved = [cols[j] for j in np.flatnonzero((np.abs(null) > 1e-6).any(0))]
        raise NeuroprobeError(
            f"X is rank deficient (rank {rank} < {P} columns): columns {involved} are "
            "collinear. Drop one of them (e.g. the intercept when every condition has its own "
            "column), or pass allow_rank_deficient=True to fit through the pseudo-inverse "
            "(only estimable contrasts are then meaningful)."
        )
    return rank


def _segments(X: np.ndarray, cols) -> tuple[np.ndarray | None, tuple[int, ...]]:
    """Segments: maximal runs of identical rows over the piecewise-constant columns (at most
    T/4 changes); and which of those columns are exchangeable block labels (conditions)."""
    T = X.shape[0]
    changes = np.diff(X, axis=0) != 0
    pc = [j for j in range(X.shape[1]) if changes[:, j].sum() <= T // 4]
    if not pc:
        return None, ()
    brk = np.r_[True, changes[:, pc].any(1)]
    seg = np.cumsum(brk) - 1
    if int(seg[-1]) + 1 > min(4096, T // 2):
        return None, ()
    perm_cols = tuple(
        j for j in pc if changes[:, j].any() and not _NUISANCE.match(cols[j])
    )
    return seg, perm_cols


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class GLMResult:
    """A fitted mass-univariate GLM (one regression per unit).

    Attributes
    ----------
    beta : Tensor ``[P, N]``
        Parameter estimates, one column per unit.
    dispersion : Tensor ``[N]``
        Residual variance ``SSE / df_resid`` (of the whitened residuals for AR(1)).
    df_resid : int
        Residual degrees of freedom, ``T - rank(X)``.
    columns : tuple of str
        Design column names (row names of ``beta``).
    noise : str
        ``"ols"`` or ``"ar1"``.
    rho : Tensor ``[N]`` or None
        The binned AR(1) coefficient each unit was whitened with (AR(1) only).
    rho_estimate : Tensor ``[N]`` or None
        The unbinned Yule-Walker estimate (AR(1) only).
    constant : Tensor ``[N]`` bool
        Units whose time series is constant (they get ``t = 0``, ``p = 1``).
    units : UnitIndex or None
        Column index of the units (when ``Y`` was a Recording or ``units`` was given).
    design : DataFrame ``[T, P]``
        The design matrix that was fitted.

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> d = npb.BlockDesign.from_blocks([("task", 5), ("rest", 5)] * 4, baseline="rest")
    >>> g = torch.Generator().manual_seed(0)
    >>> Y = torch.randn(40, 3, generator=g, dtype=torch.float64)
    >>> Y[:, 0] += 3 * torch.tensor(d.matrix["task"].to_numpy())
    >>> res = npb.fit_glm(Y, d)
    >>> res
    GLMResult(noise='ols', T=40, N=3, columns=['task', 'constant'], df_resid=38)
    >>> con = res.contrast("task")
    >>> con.significant(alpha=0.05, correction="bonferroni").tolist()
    [True, False, False]
    """

    beta: Float[Tensor, "P N"]
    dispersion: Float[Tensor, " N"]
    df_resid: int
    columns: tuple
    noise: str
    n_time: int
    cov_unscaled: Float[Tensor, "B P P"] = field(repr=False)
    bin_index: Tensor = field(repr=False)
    constant: Bool[Tensor, " N"] = field(repr=False)
    rho: Tensor | None = field(default=None, repr=False)
    rho_estimate: Tensor | None = field(default=None, repr=False)
    units: object = field(default=None, repr=False)
    design: pd.DataFrame | None = field(default=None, repr=False)
    _perm: dict | None = field(default=None, repr=False)

    @property
    def n_units(self) -> int:
        return int(self.beta.shape[1])

    @property
    def n_constant(self) -> int:
        """How many units are constant (t = 0 and p = 1 for them)."""
        return int(self.constant.sum())

    def __repr__(self) -> str:
        return (
            f"GLMResult(noise={self.noise!r}, T={self.n_time}, N={self.n_units}, "
            f"columns={list(self.columns)}, df_resid={self.df_resid})"
            + (f" [{self.n_constant} constant units]" if self.n_constant else "")
        )

    def contrast(self, c, *, stat: str | None = None) -> ContrastResult:
        """A t (vector) or F (matrix) contrast of the parameters.

        Parameters
        ----------
        c : str, vector ``[P]``, matrix ``[q, P]`` or list of str
            ``"medical - random"``, ``"medical + pathology - 2*random"``; a list of strings
            stacks rows of an F contrast.
        stat : {None, "t", "F"}
            Force the statistic; by default t for one row and F for several.

        Returns
        -------
        ContrastResult
        """
        with serial_torch(self.beta.device):
            return self._contrast(c, stat)

    def _contrast(self, c, stat):
        con = as_contrast(c, self.columns)
        if not np.any(con):
            raise NeuroprobeError(f"contrast {c!r} is all zeros; it tests nothing.")
        if stat is None:
            stat = "t" if con.ndim == 1 else "F"
        if stat not in ("t", "F"):
            raise NeuroprobeError(f"stat must be None, 't' or 'F'; got {stat!r}.")
        dev = self.beta.device
        C = torch.as_tensor(np.atleast_2d(con), device=dev)
        q = C.shape[0]
        disp = self.dispersion
        const = self.constant
        if stat == "t":
            if q != 1:
                raise NeuroprobeError(
                    f"stat='t' needs a single contrast row; got {q} rows. Use stat='F'."
                )
            cv = C[0]
            effect = cv @ self.beta
            cvc = torch.einsum("p,bpq,q->b", cv, self.cov_unscaled, cv)
            var = cvc[self.bin_index] * disp
            t = effect / torch.sqrt(var.clamp_min(TINY))
            t = torch.where(const, torch.zeros_like(t), t)
            return ContrastResult(
                effect=effect, variance=var, stat=t, stat_type="t", df=self.df_resid,
                dim=1, contrast=C[0].cpu().numpy(), columns=self.columns,
                constant=const, units=self.units, _glm=self,
            )
        M = torch.einsum("ip,bpq,jq->bij", C, self.cov_unscaled, C)
        evals, evecs = torch.linalg.eigh(torch.linalg.inv(M))
        sq = evecs @ torch.diag_embed(evals.clamp_min(0).sqrt()) @ evecs.transpose(1, 2)
        cb = C @ self.beta  # [q, N]
        effect = torch.einsum("nij,jn->in", sq[self.bin_index], cb)
        F = (effect**2).sum(0) / q / disp.clamp_min(TINY)
        F = torch.where(const, torch.zeros_like(F), F)
        return ContrastResult(
            effect=effect, variance=disp, stat=F, stat_type="F", df=self.df_resid, dim=q,
            contrast=C.cpu().numpy(), columns=self.columns, constant=const,
            units=self.units, _glm=self,
        )

    def to_dataframe(self, units=None) -> pd.DataFrame:
        """One row per unit: ``unit`` (+ ``hook``, ``layer``, ``index``), ``beta_<col>``,
        ``dispersion`` (and ``rho`` for AR(1)), ``constant``."""
        df = _unit_frame(self.n_units, units if units is not None else self.units)
        b = self.beta.detach().cpu().numpy()
        for i, c in enumerate(self.columns):
            df[f"beta_{c}"] = b[i]
        df["dispersion"] = self.dispersion.detach().cpu().numpy()
        if self.rho is not None:
            df["rho"] = self.rho.detach().cpu().numpy()
        df["constant"] = self.constant.detach().cpu().numpy()
        return df


def _unit_frame(n: int, units) -> pd.DataFrame:
    if units is not None and hasattr(units, "units") and not hasattr(units, "to_dataframe"):
        units = units.units  # a Recording
    if units is None:
        return pd.DataFrame({"unit": np.arange(n)})
    if not hasattr(units, "to_dataframe"):
        from neuroprobe.core.units import UnitIndex

        units = UnitIndex.from_units(list(units))
    if len(units) != n:
        raise NeuroprobeError(
            f"units has {len(units)} entries but the result has {n} units; pass the unit "
            "index of the Y that was fitted."
        )
    return units.to_dataframe()[["unit", "hook", "layer", "index"]].copy()


@dataclass(frozen=True, eq=False)
class ContrastResult:
    """Statistics of one contrast for every unit.

    Attributes
    ----------
    effect : Tensor ``[N]`` (t) or ``[q, N]`` (F)
        ``c' beta`` for t; nilearn's whitened effect ``sqrtm(inv(C cov C')) C beta`` for F.
    variance : Tensor ``[N]``
        Variance of the effect (t) or the residual variance (F), as nilearn.
    stat : Tensor ``[N]``
        The t or F statistic (also as :attr:`t` / :attr:`F`).
    stat_type : str
        ``"t"`` or ``"F"``.
    df : int
        Residual degrees of freedom (the F test has ``(dim, df)``).

    ``p`` (one-sided upper tail for t, nilearn's convention), ``p_two_sided``, ``z``,
    ``log10_p`` (of ``p``, finite and ordered however large ``t`` is) and
    ``log10_p_two_sided`` are computed on first access.
    """

    effect: Tensor
    variance: Float[Tensor, " N"]
    stat: Float[Tensor, " N"]
    stat_type: str
    df: int
    dim: int
    contrast: np.ndarray = field(repr=False)
    columns: tuple = field(repr=False)
    constant: Tensor = field(repr=False)
    units: object = field(default=None, repr=False)
    _glm: GLMResult | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"ContrastResult({self.stat_type}, N={self.stat.shape[0]}, df={self.df}, "
            f"effect={tuple(self.effect.shape)}, max {self.stat_type}="
            f"{float(self.stat.max()) if self.stat.numel() else float('nan'):.3g})"
        )

    # ---- statistics ----------------------------------------------------------------------
    @property
    def t(self) -> Tensor:
        if self.stat_type != "t":
            raise NeuroprobeError("this is an F contrast; use .F (or .stat).")
        return self.stat

    @property
    def F(self) -> Tensor:  # noqa: N802
        if self.stat_type != "F":
            raise NeuroprobeError("this is a t contrast; use .t (or .stat).")
        return self.stat

    def _np(self) -> np.ndarray:
        return self.stat.detach().cpu().to(torch.float64).numpy()

    @cached_property
    def _const_np(self) -> np.ndarray:
        return self.constant.detach().cpu().numpy()

    def _sf(self, s: np.ndarray) -> np.ndarray:
        if self.stat_type == "t":
            return stats.t.sf(s, self.df)
        return stats.f.sf(s, self.dim, self.df)

    def _cdf(self, s: np.ndarray) -> np.ndarray:
        if self.stat_type == "t":
            return stats.t.cdf(s, self.df)
        return stats.f.cdf(s, self.dim, self.df)

    @cached_property
    def _sf_np(self) -> np.ndarray:
        return self._sf(self._np())

    @cached_property
    def _cdf_np(self) -> np.ndarray:
        return self._cdf(self._np())

    @cached_property
    def p(self) -> Float[Tensor, " N"]:
        """One-sided upper-tail p (t) or the F test's p; 1 for constant units."""
        p = self._sf_np.copy()
        p[self._const_np] = 1.0
        return torch.as_tensor(p, device=self.stat.device)

    @cached_property
    def p_lower(self) -> Float[Tensor, " N"]:
        """One-sided lower-tail p of a t contrast (``P(T <= t)``); 1 for constant units."""
        if self.stat_type != "t":
            raise NeuroprobeError("a lower tail exists only for t contrasts.")
        p = self._cdf_np.copy()
        p[self._const_np] = 1.0
        return torch.as_tensor(p, device=self.stat.device)

    @cached_property
    def p_two_sided(self) -> Float[Tensor, " N"]:
        """Two-sided p for t (``2 P(T >= |t|)``); the F test's p for F."""
        s = self._np()
        p = np.minimum(2 * stats.t.sf(np.abs(s), self.df), 1.0) if self.stat_type == "t" \
            else self._sf(s)
        p[self._const_np] = 1.0
        return torch.as_tensor(p, device=self.stat.device)

    @cached_property
    def z(self) -> Float[Tensor, " N"]:
        """nilearn's z (``norm.isf`` of the clipped p; ``norm.ppf`` of 1-p where z < 0)."""
        z = pv.nilearn_z(self._sf_np, self._cdf_np)
        z[self._const_np] = 0.0
        return torch.as_tensor(z, device=self.stat.device)

    def _log10(self, s: np.ndarray) -> np.ndarray:
        if self.stat_type == "t":
            out = pv.t_logsf(s, float(self.df)) / np.log(10)
        else:
            out = pv.f_logsf(s, float(self.dim), float(self.df)) / np.log(10)
        out[self._const_np] = 0.0
        return out

    @cached_property
    def log10_p(self) -> Float[Tensor, " N"]:
        """``log10(p)`` computed without underflow: finite and ordered for huge t."""
        return torch.as_tensor(self._log10(self._np()), device=self.stat.device)

    @cached_property
    def log10_p_two_sided(self) -> Float[Tensor, " N"]:
        """``log10(p_two_sided)`` without underflow."""
        s = self._np()
        if self.stat_type == "F":
            return self.log10_p
        out = np.minimum(self._log10(np.abs(s)) + np.log10(2.0), 0.0)
        out[self._const_np] = 0.0
        return torch.as_tensor(out, device=self.stat.device)

    # ---- multiple comparisons ------------------------------------------------------------
    def _tail_p(self, tail: str) -> np.ndarray:
        if tail not in _TAILS:
            raise NeuroprobeError(f"tail must be one of {_TAILS}; got {tail!r}.")
        if self.stat_type == "F" and tail != "upper":
            raise NeuroprobeError(
                f"an F test has only an upper tail; got tail={tail!r}. Use tail='upper'."
            )
        p = self.p if tail == "upper" else self.p_lower if tail == "lower" \
            else self.p_two_sided
        return p.detach().cpu().numpy()

    def corrected_p(
        self, correction: str = "bonferroni", *, tail: str = "upper",
        n_permutations: int = 1000, seed: int = 0,
    ) -> Float[Tensor, " N"]:
        """Multiple-comparison adjusted p-values (statsmodels conventions; permutation
        family-wise p for ``"max_t"``)."""
        if correction not in _CORRECTIONS:
            raise NeuroprobeError(
                f"correction must be one of {_CORRECTIONS}; got {correction!r}."
            )
        if correction == "max_t":
            from neuroprobe.glm.permutation import max_t_p

            p = max_t_p(self, tail=tail, n_permutations=n_permutations, seed=seed)
        else:
            p = pv.adjust(self._tail_p(tail), correction)
        p[self._const_np] = 1.0
        return torch.as_tensor(p, device=self.stat.device)

    def significant(
        self, alpha: float = 0.05, correction: str = "bonferroni", *, tail: str = "upper",
        n_permutations: int = 1000, seed: int = 0,
    ) -> Bool[Tensor, " N"]:
        """Which units are significant at level ``alpha`` after ``correction``.

        Parameters
        ----------
        alpha : float in (0, 1)
            Family-wise error rate (``bonferroni``, ``holm``, ``sidak``, ``holm-sidak``,
            ``simes-hochberg``, ``max_t``), false discovery rate (``fdr_bh``; ``fdr_by``,
            Benjamini-Yekutieli, under any dependence) or per-unit level (``none``).
        correction : {"bonferroni", "holm", "fdr_bh", "none", "max_t", "fdr_by", "sidak", \
"holm-sidak", "simes-hochberg"}
            statsmodels ``multipletests`` names and numbers.
            ``max_t``: permutation max-T family-wise test permuting whole blocks (the
            condition labels of the design's blocks), ``n_permutations`` times with
            ``seed`` (OLS and AR(1) fits; AR(1) units keep their rho bin).
        tail : {"upper", "lower", "two-sided"}
            Which t values count as evidence (F tests: upper only).

        Returns
        -------
        BoolTensor ``[N]`` (constant units are never significant).
        """
        alpha = check_fraction(alpha, "alpha")
        if correction not in _CORRECTIONS:
            raise NeuroprobeError(
                f"correction must be one of {_CORRECTIONS}; got {correction!r}."
            )
        if correction == "max_t":
            p = self.corrected_p("max_t", tail=tail, n_permutations=n_permutations,
                                 seed=seed).cpu().numpy()
            mask = p <= alpha
        else:
            mask = pv.reject(self._tail_p(tail), alpha, correction)
        mask &= ~self._const_np
        return torch.as_tensor(mask, device=self.stat.device)

    def to_dataframe(self, units=None) -> pd.DataFrame:
        """One row per unit: ``unit`` (+ ``hook``, ``layer``, ``index``), ``effect``,
        ``variance``, ``t`` or ``F``, ``p``, ``p_two_sided``, ``z``, ``log10_p``."""
        n = int(self.stat.shape[0])
        df = _unit_frame(n, units if units is not None else self.units)
        eff = self.effect.detach().cpu().numpy()
        if eff.ndim == 1:
            df["effect"] = eff
        else:
            for i in range(eff.shape[0]):
                df[f"effect_{i}"] = eff[i]
        df["variance"] = self.variance.detach().cpu().numpy()
        df[self.stat_type] = self._np()
        for name in ("p", "p_two_sided", "z", "log10_p"):
            df[name] = getattr(self, name).detach().cpu().numpy()
        df["constant"] = self._const_np
        return df

    def plot_map(self, units=None, **kwargs):
        """Layer-by-unit map of the statistic (see :func:`neuroprobe.viz.glm.plot_stat_map`)."""
        from neuroprobe.viz.glm import plot_stat_map

        return plot_stat_map(self, units=units, **kwargs)

    def plot_histogram(self, **kwargs):
        """Histogram of the statistic with the threshold marked
        (see :func:`neuroprobe.viz.glm.plot_stat_histogram`)."""
        from neuroprobe.viz.glm import plot_stat_histogram

        return plot_stat_histogram(self, **kwargs)


# ---------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------
def _check_noise(noise: str, bins) -> None:
    if noise not in ("ols", "ar1"):
        raise NeuroprobeError(
            f"noise must be 'ols' or 'ar1'; got {noise!r}. (Higher AR orders are not "
            "supported; nilearn clusters their coefficients with k-means.)"
        )
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise NeuroprobeError(f"bins must be a positive int; got {bins!r}.")


def _finish(st: GLMStats, X: np.ndarray, cols, *, noise: str, bins: int, rank: int,
            units, perm) -> GLMResult:
    T = X.shape[0]
    df_resid = T - rank
    with serial_torch(st.yy.device):
        bad = ~torch.isfinite(st.yy)
        any_bad = bool(bad.any())
    if any_bad:
        idx = torch.nonzero(bad).flatten()
        raise NeuroprobeError(
            f"Y contains NaN or inf in {idx.numel()} unit(s), first: {idx[:5].tolist()}; "
            "drop or impute them before fitting."
        )
    with serial_torch(st.xty.device):
        fit = fit_ols(st, X, df_resid) if noise == "ols" else fit_ar1(st, X, df_resid, bins)
    n_const = int(fit.constant.sum())
    if n_const:
        warnings.warn(
            f"{n_const} of {fit.beta.shape[1]} units are constant over time; they get "
            "t = 0 and p = 1 (never significant).", stacklevel=3,
        )
    return GLMResult(
        beta=fit.beta, dispersion=fit.dispersion, df_resid=df_resid, columns=tuple(cols),
        noise=noise, n_time=T, cov_unscaled=fit.cov, bin_index=fit.bin_index,
        constant=fit.constant, rho=fit.rho, rho_estimate=fit.rho_raw, units=units,
        design=pd.DataFrame(X, columns=list(cols)), _perm=perm,
    )


def fit_glm(
    Y, X, *, noise: str = "ols", bins: int = 100, allow_rank_deficient: bool = False,
    device=None, dtype: torch.dtype = torch.float64, memory_budget: int = 64 * 2**20,
    units=None,
) -> GLMResult:
    """Fit a GLM to every unit (column) of ``Y`` at once.

    Parameters
    ----------
    Y : Tensor, ndarray or Recording ``[T, N]``
        One time series per unit (a Recording's ``acts``; its ``units`` are kept).
    X : DataFrame, ndarray or BlockDesign ``[T, P]``
        The design matrix (column names are used by string contrasts; an array's columns
        are named ``x0, x1, ...``).
    noise : {"ols", "ar1"}
        ``"ar1"`` reproduces nilearn's ``run_glm(noise_model="ar1")``.
    bins : int
        AR(1) coefficients are truncated to multiples of ``1 / bins`` (nilearn's binning).
    allow_rank_deficient : bool
        Fit a rank-deficient ``X`` through the pseudo-inverse instead of raising.
    device : str or torch.device, optional
        Where to compute (default: ``Y``'s device).  Chunks of ``Y`` are moved there.
    dtype : torch.float64 or torch.float32
        Precision of the cross products (float64 by default; each unit is centred first
        when the design spans the constant, so float32 stays accurate).
    memory_budget : int
        Bytes of working memory per chunk of units (the peak memory above ``Y`` and the
        ``O(P N)`` results).
    units : UnitIndex, optional
        Unit index to attach to the result (taken from a Recording automatically).

    Returns
    -------
    GLMResult

    Examples
    --------
    >>> import numpy as np, pandas as pd, neuroprobe as npb
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"task": np.tile([1.0] * 5 + [0.0] * 5, 3), "constant": 1.0})
    >>> Y = rng.standard_normal((30, 4)) + np.outer(X["task"], [2.0, 0, 0, 0])
    >>> res = npb.fit_glm(Y, X)
    >>> res.beta.shape, res.df_resid
    (torch.Size([2, 4]), 28)
    >>> bool(res.contrast("task").t[0] > 4)
    True
    """
    _check_noise(noise, bins)
    if dtype not in (torch.float32, torch.float64):
        raise NeuroprobeError(f"dtype must be torch.float32 or torch.float64; got {dtype}.")
    if units is None and hasattr(Y, "acts") and hasattr(Y, "units"):
        units = Y.units
    Yt = as_tensor(Y, "Y")
    if Yt.ndim != 2:
        raise NeuroprobeError(
            f"Y must be 2-D [time, unit]; got shape {tuple(Yt.shape)}. "
            + ("Use Y[:, None] for a single unit." if Yt.ndim == 1 else "")
        )
    if not Yt.is_floating_point():
        Yt = Yt.to(torch.float64)
    T, N = Yt.shape
    Xn, cols = _as_design(X, T)
    if units is not None and len(units) != N:
        raise NeuroprobeError(f"units has {len(units)} entries but Y has N={N} columns.")
    rank = _rank_check(Xn, cols, allow_rank_deficient)
    dev = resolve_device(device) if device is not None else Yt.device
    center = spans_constant(Xn)
    seg, perm_cols = _segments(Xn, cols)
    st = dense_stats(Yt, Xn, ar=noise == "ar1", center=center, device=dev, dtype=dtype,
                     memory_budget=memory_budget, segments=seg)
    perm = _perm_state(st, seg, perm_cols, noise)
    return _finish(st, Xn, cols, noise=noise, bins=bins, rank=rank, units=units, perm=perm)


def _perm_state(st: GLMStats, seg, perm_cols, noise: str) -> dict | None:
    """What max-T needs later: segment sums (and, for AR(1), the lag statistics and the
    rows at segment edges) -- O((P + S) N) numbers, not Y."""
    if not perm_cols or st.seg is None or (noise == "ar1" and st.edges is None):
        return None
    return {"segments": seg, "perm_cols": perm_cols, "seg_sums": st.seg, "xty": st.xty,
            "yy": st.yy, "stats": st if noise == "ar1" else None}


from neuroprobe.glm.probe import GLMProbe  # noqa: E402  (needs the helpers above)
