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

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError, NeuroprobeWarning
from neuroprobe.core.outofcore import column_blocks, columns_per_block, file_backing
from neuroprobe.core.validation import (
    as_tensor,
    check_bool,
    check_choice,
    check_finite,
    check_int,
    resolve_device,
)
from neuroprobe.glm.contrast import ContrastResult, as_contrast, unit_frame
from neuroprobe.glm.design import as_design_matrix, block_segments, check_rank
from neuroprobe.glm.permutation import PermutationState, permutation_state
from neuroprobe.glm.stats import (
    TINY,
    GLMStats,
    concat_units,
    dense_stats,
    fit_ar1,
    fit_ols,
    serial_torch,
    spans_constant,
)

__all__ = ["fit_glm", "GLMResult"]

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
    _perm: PermutationState | None = field(default=None, repr=False)

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

        Raises
        ------
        NeuroprobeError
            For an unknown column, a number outside float64's range, a division by zero, an
            F contrast with linearly dependent rows, and -- for a rank-deficient design
            fitted with ``allow_rank_deficient=True`` -- a contrast that is not estimable
            (not in the row space of ``X``: its value would depend on the pseudo-inverse).
            t and F are computed from the weights scaled to ``max |w| = 1`` (they do not
            depend on the scale).
        """
        with serial_torch(self.beta.device):
            return self._contrast(c, stat)

    @property
    def rank(self) -> int:
        """``rank(X)`` of the fitted design (``T - df_resid``)."""
        return self.n_time - self.df_resid

    def _check_estimable(self, C: np.ndarray, c) -> None:
        """Refuse a contrast outside the row space of a rank-deficient design: its value
        depends on the arbitrary pseudo-inverse solution, so no t or F makes sense."""
        P = len(self.columns)
        if self.rank >= P or self.design is None:
            return
        X = np.asarray(self.design.to_numpy(), dtype=np.float64)
        proj = np.linalg.pinv(X) @ X  # projector onto the row space of X
        resid = np.abs(C @ proj - C).max(1)
        bad = np.flatnonzero(resid > 1e-8 * np.maximum(np.abs(C).max(1), 1e-300))
        if bad.size:
            _, s, vt = np.linalg.svd(X, full_matrices=False)
            null = vt[s <= s.max() * max(X.shape) * np.finfo(float).eps * 10]
            involved = [self.columns[j] for j in np.flatnonzero((np.abs(null) > 1e-6).any(0))]
            rows = "" if C.shape[0] == 1 else f" (row(s) {bad.tolist()})"
            raise NeuroprobeError(
                f"contrast {c!r}{rows} is not estimable: the design is rank deficient "
                f"(rank {self.rank} < {P} columns; {involved} are collinear), and this "
                "contrast is not a combination of rows of X, so its value depends on the "
                "arbitrary pseudo-inverse solution. Test an estimable contrast (e.g. a "
                "difference of collinear condition columns) or drop a collinear column."
            )

    def _contrast(self, c, stat):
        if stat is not None:
            stat = check_choice(stat, "stat", ("t", "F"))
        con = as_contrast(c, self.columns)
        if not np.any(con):
            raise NeuroprobeError(f"contrast {c!r} is all zeros; it tests nothing.")
        if stat is None:
            stat = "t" if con.ndim == 1 else "F"
        C2 = np.atleast_2d(con)
        q = C2.shape[0]
        if stat == "t" and q != 1:
            raise NeuroprobeError(
                f"stat='t' needs a single contrast row; got {q} rows. Use stat='F'."
            )
        # t and F do not depend on the scale of the weights: compute them from weights
        # scaled to max |w| = 1, so that 1e-300 * a or 1e300 * a neither under- nor overflow
        scale = float(np.abs(C2).max())
        Cn = C2 / scale
        self._check_estimable(Cn, c)
        if q > 1 and np.linalg.matrix_rank(Cn) < q:
            raise NeuroprobeError(
                f"the F contrast {c!r} has linearly dependent rows (rank "
                f"{np.linalg.matrix_rank(Cn)} < {q} rows), so C cov C' is singular; drop the "
                "redundant row(s) (e.g. ['a', 'a'] -> 'a', ['a', 'b', 'a - b'] -> ['a', 'b'])."
            )
        dev = self.beta.device
        C = torch.as_tensor(Cn, device=dev)
        disp = self.dispersion
        const = self.constant
        if stat == "t":
            cv = C[0]
            effect_n = cv @ self.beta
            cvc = torch.einsum("p,bpq,q->b", cv, self.cov_unscaled, cv)
            var_n = cvc[self.bin_index] * disp
            t = effect_n / torch.sqrt(var_n.clamp_min(TINY))
            t = torch.where(const, torch.zeros_like(t), t)
            with np.errstate(over="ignore"):
                effect, var = effect_n * scale, var_n * (scale * scale)
            if not (bool(torch.isfinite(effect).all()) and bool(torch.isfinite(var).all())):
                raise NeuroprobeError(
                    f"contrast {c!r}: its effect c'beta or its variance overflows float64 "
                    f"(largest weight {scale:g}); scale the weights to moderate numbers -- "
                    "t, p and z do not depend on the scale."
                )
            return ContrastResult(
                effect=effect, variance=var, stat=t, stat_type="t", df=self.df_resid,
                dim=1, contrast=C2[0].copy(), columns=self.columns,
                constant=const, units=self.units, _glm=self,
            )
        M = torch.einsum("ip,bpq,jq->bij", C, self.cov_unscaled, C)
        try:
            Minv = torch.linalg.inv(M)
        except RuntimeError:  # torch.linalg.LinAlgError is a RuntimeError
            raise NeuroprobeError(
                f"the F contrast {c!r} gives a singular C cov C' (its rows are dependent "
                "within the design's row space); drop redundant rows."
            ) from None
        evals, evecs = torch.linalg.eigh(Minv)
        sq = evecs @ torch.diag_embed(evals.clamp_min(0).sqrt()) @ evecs.transpose(1, 2)
        cb = C @ self.beta  # [q, N]
        effect = torch.einsum("nij,jn->in", sq[self.bin_index], cb)
        F = (effect**2).sum(0) / q / disp.clamp_min(TINY)
        F = torch.where(const, torch.zeros_like(F), F)
        return ContrastResult(
            effect=effect, variance=disp, stat=F, stat_type="F", df=self.df_resid, dim=q,
            contrast=C2.copy(), columns=self.columns, constant=const,
            units=self.units, _glm=self,
        )

    def to_dataframe(self, units=None) -> pd.DataFrame:
        """One row per unit: ``unit`` (+ ``hook``, ``layer``, ``index``), ``beta_<col>``,
        ``dispersion`` (and ``rho`` for AR(1)), ``constant``."""
        df = unit_frame(self.n_units, units if units is not None else self.units)
        b = self.beta.detach().cpu().numpy()
        for i, c in enumerate(self.columns):
            df[f"beta_{c}"] = b[i]
        df["dispersion"] = self.dispersion.detach().cpu().numpy()
        if self.rho is not None:
            df["rho"] = self.rho.detach().cpu().numpy()
        df["constant"] = self.constant.detach().cpu().numpy()
        return df


# ---------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------
def check_noise(noise: str, bins: int) -> None:
    """Raise unless ``noise`` is ``"ols"`` or ``"ar1"`` and ``bins`` a positive int."""
    if noise not in ("ols", "ar1"):
        raise NeuroprobeError(
            f"noise must be 'ols' or 'ar1'; got {noise!r}. (Higher AR orders are not "
            "supported; nilearn clusters their coefficients with k-means.)"
        )
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, np.integer)) \
            or bins < 1:
        raise NeuroprobeError(f"bins must be a positive int; got {bins!r}.")


def result_from_stats(st: GLMStats, X: np.ndarray, cols, *, noise: str, bins: int,
                      rank: int, units, perm: PermutationState | None) -> GLMResult:
    """The :class:`GLMResult` of sufficient statistics ``st`` gathered over the design ``X``
    (by :func:`fit_glm` in one pass, or batch by batch by a :class:`GLMProbe`)."""
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
        n_const = int(torch.count_nonzero(fit.constant))
    if n_const:
        warnings.warn(
            f"{n_const} of {fit.beta.shape[1]} units are constant over time; they get "
            "t = 0 and p = 1 (never significant).", NeuroprobeWarning, stacklevel=3,
        )
    return GLMResult(
        beta=fit.beta, dispersion=fit.dispersion, df_resid=df_resid, columns=tuple(cols),
        noise=noise, n_time=T, cov_unscaled=fit.cov, bin_index=fit.bin_index,
        constant=fit.constant, rho=fit.rho, rho_estimate=fit.rho_raw, units=units,
        design=pd.DataFrame(X, columns=list(cols)), _perm=perm,
    )


def _stats(Y, Yt: Tensor, Xn: np.ndarray, *, ar: bool, center: bool, device, dtype,
           memory_budget: int, segments) -> GLMStats:
    """One pass over ``Y``; a file-backed Recording larger than ``memory_budget`` is read in
    column blocks of at most that size (positioned reads: resident memory stays bounded)."""
    kw = dict(ar=ar, center=center, device=device, dtype=dtype, memory_budget=memory_budget,
              segments=segments)
    wide = (torch.float32, torch.float64)
    if file_backing(Y) is None or Yt.element_size() * Yt.nelement() <= memory_budget:
        return dense_stats(Yt if Yt.dtype in wide else Yt.to(torch.float64), Xn, **kw)
    T = Yt.shape[0]
    # a block and its float64 tiles fit the budget
    width = columns_per_block(T, Yt.element_size() + 8, memory_budget)
    parts = []
    for _, _, block in column_blocks(Y, width):
        block = block if block.dtype in wide else block.to(torch.float64)
        check_finite(block, "Y")
        parts.append(dense_stats(block, Xn, **kw))
    return concat_units(parts)


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
    check_noise(noise, bins)
    allow_rank_deficient = check_bool(allow_rank_deficient, "allow_rank_deficient")
    memory_budget = check_int(memory_budget, "memory_budget", minimum=1)
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
    if Yt.is_complex():
        raise NeuroprobeError(
            f"Y must be real; got dtype {Yt.dtype}. Fit the real and imaginary parts (or the "
            "magnitude) separately."
        )
    if Yt.dtype not in (torch.float32, torch.float64) and file_backing(Y) is None:
        Yt = Yt.to(torch.float64)  # ints, bools, float16, bfloat16 (a file: block by block)
    T, N = Yt.shape
    if N == 0:
        raise NeuroprobeError(
            f"Y has no units (shape {tuple(Yt.shape)}); fit_glm needs at least one column. "
            "Check the hook / unit selection that produced Y."
        )
    Xn, cols = as_design_matrix(X, T)
    if units is not None and len(units) != N:
        raise NeuroprobeError(f"units has {len(units)} entries but Y has N={N} columns.")
    rank = check_rank(Xn, cols, allow_rank_deficient)
    dev = resolve_device(device) if device is not None else Yt.device
    center = spans_constant(Xn)
    seg, perm_cols = block_segments(Xn, cols)
    st = _stats(Y, Yt, Xn, ar=noise == "ar1", center=center, device=dev, dtype=dtype,
                memory_budget=memory_budget, segments=seg)
    perm = permutation_state(st, seg, perm_cols, noise)
    return result_from_stats(st, Xn, cols, noise=noise, bins=bins, rank=rank, units=units,
                             perm=perm)
