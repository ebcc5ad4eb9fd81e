"""Contrasts: parsing them (strings over column names, vectors, matrices) and their results.

:class:`ContrastResult` holds one contrast's statistic for every unit and derives p-values,
z, unsaturated ``log10 p`` and multiple-comparison decisions from it on first access; the
arithmetic of those lives in :mod:`~neuroprobe.glm.pvalues` (and block-permutation max-T
in :mod:`~neuroprobe.glm.permutation`), so a contrast computed by any route is judged alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from scipy import stats
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import check_fraction, check_int
from neuroprobe.glm import pvalues as pv
from neuroprobe.glm.contrast_grammar import parse_linear, parse_number
from neuroprobe.glm.permutation import max_t_p

__all__ = ["ContrastResult"]

#: Corrections of :meth:`ContrastResult.significant`: those of :mod:`pvalues` and max-T.
CORRECTIONS: tuple[str, ...] = (*pv.CORRECTIONS, "max_t")

_NUM = re.compile(r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[^\s+\-*/]+")


def parse_expression(expr: str, columns: Sequence[str]) -> np.ndarray:
    """``"a + b - 2*c"`` -> a weight vector over ``columns``.

    Terms are ``[sign] [number [*]] column`` or ``[sign] column [* number]``; column names
    are matched longest-first, so names that are not Python identifiers work.
    """
    cols = list(columns)
    by_len = sorted(cols, key=len, reverse=True)
    w = np.zeros(len(cols))
    s = expr
    i, n = 0, len(s)
    n_terms = 0

    def skip(i):
        while i < n and s[i].isspace():
            i += 1
        return i

    def unknown(i):
        m = _WORD.match(s, i)
        bad = m.group(0) if m else s[i:]
        if not bad.strip():
            return NeuroprobeError(
                f"contrast {expr!r} ends after an operator at position {i}; expected a column "
                f"name (columns are: {', '.join(cols)})."
            )
        return NeuroprobeError(
            f"contrast {expr!r} names unknown column {bad!r}; columns are: {', '.join(cols)}."
        )

    i = skip(i)
    if i == n:
        raise NeuroprobeError(
            f"contrast {expr!r} is empty; write e.g. '{cols[0]}' or a difference of columns "
            f"(columns are: {', '.join(cols)})."
        )
    while i < n:
        sign = 1.0
        had_sign = False
        while i < n and s[i] in "+-":
            sign = -sign if s[i] == "-" else sign
            had_sign = True
            i = skip(i + 1)
        if n_terms and not had_sign:
            raise NeuroprobeError(
                f"contrast {expr!r}: expected '+' or '-' between terms at position {i}; "
                f"columns are: {', '.join(cols)}."
            )
        coef = 1.0
        name = next((c for c in by_len if s.startswith(c, i)), None)
        if name is None:
            m = _NUM.match(s, i)
            if m is None:
                raise unknown(i)
            coef = parse_number(m.group(0), expr)
            i = skip(m.end())
            if i < n and s[i] == "*":
                i = skip(i + 1)
            name = next((c for c in by_len if s.startswith(c, i)), None)
            if name is None:
                raise unknown(i)
        i = skip(i + len(name))
        if i < n and s[i] in "*/":
            op = s[i]
            i = skip(i + 1)
            m = _NUM.match(s, i)
            if m is None:
                raise NeuroprobeError(
                    f"contrast {expr!r}: expected a number after {op!r} at position {i}."
                )
            v = parse_number(m.group(0), expr)
            if op == "/" and v == 0:
                raise NeuroprobeError(
                    f"contrast {expr!r}: division by zero at position {m.start()}; divide by "
                    "a non-zero number."
                )
            new = coef * v if op == "*" else coef / v
            if new == 0 and coef != 0 and v != 0:
                raise NeuroprobeError(
                    f"contrast {expr!r}: the weight {coef:g} {op} {v:g} underflows to 0 in "
                    "float64; scale the weights to moderate numbers -- t, p and z do not "
                    "depend on the scale."
                )
            coef = new
            i = skip(m.end())
        w[cols.index(name)] += sign * coef
        n_terms += 1
    return w


def _parse(expr: str, columns: Sequence[str]) -> np.ndarray:
    """The term parser; what it cannot read (parentheses, chained products such as
    ``"2 * a * 3"``) goes to the full grammar.  Without parentheses the term parser's error
    is kept (it names the unknown column)."""
    if not isinstance(expr, str):
        raise NeuroprobeError(
            f"contrast must be a string over the columns; got {type(expr).__name__} {expr!r}."
        )
    try:
        w = parse_expression(expr, columns)
    except NeuroprobeError as first:
        try:
            w = parse_linear(expr, columns)
        except NeuroprobeError as second:
            # without parentheses a syntax error of the full grammar says less than the term
            # parser's (which names the unknown column); range errors are kept as they are
            syntax = "expected" in str(second)
            if "(" not in expr and ")" not in expr and syntax:
                raise first from None
            raise
    if not np.isfinite(w).all():
        raise NeuroprobeError(
            f"contrast {expr!r} has weights that overflow float64 ({w.tolist()}); scale the "
            "weights to moderate numbers -- t, p and z do not depend on the scale."
        )
    return w


def as_contrast(c, columns: Sequence[str]) -> np.ndarray:
    """A contrast as a float array ``[P]`` (t) or ``[q, P]`` (F)."""
    P = len(columns)
    if isinstance(c, str):
        return _parse(c, columns)
    if c is None or isinstance(c, (dict, set, bytes)) or np.isscalar(c):
        raise NeuroprobeError(
            f"contrast must be a string over the columns ({', '.join(columns)}), a vector of "
            f"length {P} or a matrix [q, {P}]; got {type(c).__name__} {c!r}."
        )
    if isinstance(c, (list, tuple)) and c and all(isinstance(x, str) for x in c):
        return np.stack([_parse(x, columns) for x in c])
    try:
        arr = np.asarray(c.detach().cpu() if hasattr(c, "detach") else c, dtype=np.float64)
    except (TypeError, ValueError):
        raise NeuroprobeError(
            f"contrast must be a string over the columns, a vector of length {P} or a "
            f"matrix [q, {P}]; got {type(c).__name__}."
        ) from None
    if arr.ndim not in (1, 2) or arr.shape[-1] != P:
        raise NeuroprobeError(
            f"contrast has shape {arr.shape} but the design has {P} columns "
            f"({', '.join(columns)}); pass a vector of length {P} (t test) or a matrix "
            f"[q, {P}] (F test)."
        )
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if not np.isfinite(arr).all():
        raise NeuroprobeError("contrast contains NaN or inf; pass finite weights.")
    if not np.any(arr):
        raise NeuroprobeError("contrast is all zeros; it tests nothing. Give non-zero weights.")
    return arr


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------
def _check_correction(correction: str) -> None:
    if correction not in CORRECTIONS:
        raise NeuroprobeError(
            f"correction must be one of {CORRECTIONS}; got {correction!r}."
        )


#: more permutations than this cannot move a max-T p-value by more than 1e-6 (and would
#: take hours): refused rather than run
MAX_PERMUTATIONS = 1_000_000


def _check_permutation_args(n_permutations, seed) -> None:
    """``n_permutations`` an int >= 1 and ``seed`` an int >= 0 (checked for every
    correction, so that a bad value is never silently ignored)."""
    check_int(n_permutations, "n_permutations", minimum=1, maximum=MAX_PERMUTATIONS)
    check_int(seed, "seed", minimum=0)


def unit_frame(n: int, units) -> pd.DataFrame:
    if units is not None and hasattr(units, "units") and not hasattr(units, "to_dataframe"):
        units = units.units  # a Recording
    if units is None:
        return pd.DataFrame({"unit": np.arange(n)})
    if isinstance(units, (str, bytes, dict)) or not (hasattr(units, "to_dataframe")
                                                    or hasattr(units, "__iter__")):
        raise NeuroprobeError(
            f"units must be a UnitIndex (rec.units), a Recording or a list of (hook, index) "
            f"pairs, one per unit ({n}); got {type(units).__name__} {units!r}."
        )
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
    _glm: object = field(default=None, repr=False)  # the GLMResult (for max-T)

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
    def _tails_np(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(sf, cdf, q)`` of the statistic; ``q`` (the smaller tail) only for t."""
        s = self._np()
        if self.stat_type == "t":
            return pv.t_tails(s, self.df, n_threads=torch.get_num_threads())
        return self._sf(s), self._cdf(s), None

    @property
    def _sf_np(self) -> np.ndarray:
        return self._tails_np[0]

    @property
    def _cdf_np(self) -> np.ndarray:
        return self._tails_np[1]

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
        sf, cdf, q = self._tails_np
        z = pv.nilearn_z(sf, cdf) if q is None else pv.t_nilearn_z(self._np(), q)
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
        pv.check_tail(tail)
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
        _check_correction(correction)
        pv.check_tail(tail)
        _check_permutation_args(n_permutations, seed)
        if correction == "max_t":
            p = max_t_p(self._glm, self.contrast, self._np(), stat_type=self.stat_type,
                        tail=tail, n_permutations=n_permutations, seed=seed)
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
        _check_correction(correction)
        pv.check_tail(tail)
        _check_permutation_args(n_permutations, seed)
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
        df = unit_frame(n, units if units is not None else self.units)
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
