"""p-values, z-scores (nilearn's conversion), unsaturated log10 p, multiple comparisons.

The bottom of the glm folder (numpy and scipy only): :mod:`~neuroprobe.glm.contrast`,
:mod:`~neuroprobe.glm.permutation` and :mod:`~neuroprobe.glm.blocks` take their tails,
corrections and rejection rules from here, so that every route through the GLM decides
significance with the same arithmetic (statsmodels' ``multipletests`` conventions).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import special, stats

from neuroprobe.core.errors import NeuroprobeError

#: Multiple-comparison corrections of :func:`adjust` and :func:`reject`.
CORRECTIONS: tuple[str, ...] = ("bonferroni", "holm", "fdr_bh", "none", "fdr_by", "sidak",
                               "holm-sidak", "simes-hochberg")
#: Which t values count as evidence.
TAILS: tuple[str, ...] = ("upper", "lower", "two-sided")


def check_tail(tail: str) -> str:
    """``tail`` if it is one of :data:`TAILS`, else a :class:`NeuroprobeError`."""
    if tail not in TAILS:
        raise NeuroprobeError(f"tail must be one of {TAILS}; got {tail!r}.")
    return tail


def _betacf(a, b, x, iters: int = 400):
    """Continued fraction of the incomplete beta function (modified Lentz), vectorised."""
    fpmin = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = np.where(np.abs(d) < fpmin, fpmin, d)
    d = 1.0 / d
    h = d.copy()
    done = np.zeros(x.shape, bool)
    for m in range(1, iters + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < fpmin, fpmin, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < fpmin, fpmin, c)
        d = 1.0 / d
        h = np.where(done, h, h * d * c)
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < fpmin, fpmin, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < fpmin, fpmin, c)
        d = 1.0 / d
        delta = d * c
        h = np.where(done, h, h * delta)
        done |= np.abs(delta - 1.0) < 1e-15
        if done.all():
            break
    return h


def log_betainc_small(a, b, x):
    """``log I_x(a, b)`` for small ``I`` (``x < (a+1)/(a+b+2)``), without underflow."""
    a = np.broadcast_to(np.asarray(a, float), np.shape(x)).astype(float)
    b = np.broadcast_to(np.asarray(b, float), np.shape(x)).astype(float)
    front = a * np.log(x) + b * np.log1p(-x) - np.log(a) - special.betaln(a, b)
    return front + np.log(_betacf(a, b, x))


def t_logsf(t: np.ndarray, df: float) -> np.ndarray:
    """Natural log of the Student-t survival function, finite for any finite ``t``."""
    out = stats.t.logsf(t, df)
    bad = ~np.isfinite(out) | (out < -600)
    bad &= np.isfinite(t) & (t > 0)
    if bad.any():
        tb = t[bad]
        x = df / (df + tb * tb)
        out[bad] = np.log(0.5) + log_betainc_small(df / 2.0, 0.5, x)
    return out


def f_logsf(f: np.ndarray, d1: float, d2: float) -> np.ndarray:
    """Natural log of the F survival function, finite for any finite ``f``."""
    out = stats.f.logsf(f, d1, d2)
    bad = ~np.isfinite(out) | (out < -600)
    bad &= np.isfinite(f) & (f > 0)
    if bad.any():
        x = d2 / (d2 + d1 * f[bad])
        out[bad] = log_betainc_small(d2 / 2.0, d1 / 2.0, x)
    return out


def nilearn_z(p: np.ndarray, one_minus_p: np.ndarray) -> np.ndarray:
    """nilearn's ``z_score``: clip p to [1e-300, 1 - 1e-16], isf, cdf branch for z < 0."""
    p = np.clip(p, 1.0e-300, 1.0 - 1.0e-16)
    z = stats.norm.isf(p)
    omp = np.clip(one_minus_p, 1.0e-300, 1.0 - 1.0e-16)
    z_cdf = stats.norm.ppf(omp)
    return np.where(z < 0, z_cdf, z)


def _threaded_stdtr(df, x: np.ndarray, n_threads: int) -> np.ndarray:
    """``special.stdtr(df, x)``, split over ``n_threads`` threads for large ``x`` (the ufunc
    releases the GIL; each value is computed exactly as in one call)."""
    n_threads = max(1, min(n_threads, os.cpu_count() or 1, 8))
    if x.size < 50_000 or n_threads < 2 or np.ndim(df) != 0:
        return special.stdtr(df, x)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat, dtype=np.float64)
    cuts = np.linspace(0, flat.size, n_threads + 1).astype(int)
    parts = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    with ThreadPoolExecutor(n_threads) as ex:
        list(ex.map(lambda sl: special.stdtr(df, flat[sl], out=out[sl]), parts))
    return out.reshape(np.shape(x))


def t_tails(t: np.ndarray, df, n_threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sf, cdf, q)`` of Student's t from one evaluation of its smaller tail.

    ``q = stdtr(df, -|t|)`` is scipy's ``t.sf(t)`` where ``t >= 0`` and its ``t.cdf(t)``
    where ``t < 0``, the same call on the same argument, so those values are scipy's to the
    last bit; the other tail is ``1 - q`` (a number in ``[0.5, 1]``, within one ulp of
    scipy's).  Half the special-function work of calling ``t.sf`` and ``t.cdf``; with
    ``n_threads > 1`` a large ``t`` is split over that many threads.
    """
    q = _threaded_stdtr(df, -np.abs(t), n_threads)
    pos = t >= 0
    return np.where(pos, q, 1.0 - q), np.where(pos, 1.0 - q, q), q


def t_nilearn_z(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    """:func:`nilearn_z` of a t statistic from its smaller tail ``q`` (see :func:`t_tails`).

    nilearn takes ``norm.isf`` of the clipped upper p, and ``norm.ppf`` of the clipped lower
    p where that z is negative; the branch it keeps is always the one whose p is ``q``
    (``t >= 0``: upper; ``t < 0``: lower), so one ``ndtri`` of the clipped ``q`` gives its
    z, with the sign of ``t``.
    """
    r = special.ndtri(np.clip(q, 1.0e-300, 1.0 - 1.0e-16))
    return np.where(t < 0, r, -r)


#: corrections beyond ``none`` / ``bonferroni``, by statsmodels ``multipletests`` name
STEPWISE = ("holm", "fdr_bh", "fdr_by", "sidak", "holm-sidak", "simes-hochberg")


def adjust(p: np.ndarray, method: str) -> np.ndarray:
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf gives the right limit (p = 1)
        return _adjust(p, method)


def _adjust(p: np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values exactly as statsmodels ``multipletests(p, method=...)[1]``.

    ``bonferroni``, ``sidak`` (``1 - (1 - p)^n``), ``holm``, ``holm-sidak``,
    ``simes-hochberg`` (step-up), ``fdr_bh`` (Benjamini-Hochberg), ``fdr_by``
    (Benjamini-Yekutieli, valid under any dependence), ``none``.
    """
    n = p.size
    if n == 0:
        return p.astype(np.float64, copy=True)
    if method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * n, 1.0)
    if method == "sidak":
        return np.minimum(-np.expm1(n * np.log1p(-p)), 1.0)
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    down = np.arange(n, 0, -1)
    if method == "holm":
        adj = np.maximum.accumulate(down * ps)
    elif method == "holm-sidak":
        adj = np.maximum.accumulate(-np.expm1(down * np.log1p(-ps)))
    elif method == "simes-hochberg":
        adj = np.minimum.accumulate((down * ps)[::-1])[::-1]
    elif method in ("fdr_bh", "fdr_by"):
        ecdf = np.arange(1, n + 1) / n
        if method == "fdr_by":
            ecdf = ecdf / np.sum(1.0 / np.arange(1, n + 1))
        adj = np.minimum.accumulate((ps / ecdf)[::-1])[::-1]
    else:  # pragma: no cover - validated by the caller
        raise ValueError(method)
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


def _step_down(notrej: np.ndarray) -> np.ndarray:
    """Reject the sorted hypotheses before the first one that is not rejected."""
    rej = np.ones(notrej.size, bool)
    idx = np.flatnonzero(notrej)
    if idx.size:
        rej[idx[0]:] = False
    return rej


def _step_up(below: np.ndarray) -> np.ndarray:
    """Reject the sorted hypotheses up to the last one below its threshold."""
    rej = np.zeros(below.size, bool)
    if below.any():
        rej[: np.flatnonzero(below).max() + 1] = True
    return rej


def reject(p: np.ndarray, alpha: float, method: str) -> np.ndarray:
    """Rejections exactly as statsmodels ``multipletests(p, alpha, method)[0]``
    (an empty family rejects nothing)."""
    n = p.size
    if n == 0:
        return np.zeros(p.shape, bool)
    if method == "none":
        return p <= alpha
    if method == "bonferroni":
        return p <= alpha / n
    if method == "sidak":
        return p <= -np.expm1(np.log1p(-alpha) / n)
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    down = np.arange(n, 0, -1)
    if method == "holm":
        rej_sorted = _step_down(ps > alpha / down)
    elif method == "holm-sidak":
        rej_sorted = _step_down(ps > -np.expm1(np.log1p(-alpha) / down))
    elif method == "simes-hochberg":
        rej_sorted = _step_up(ps <= alpha / down)
    elif method in ("fdr_bh", "fdr_by"):
        ecdf = np.arange(1, n + 1) / n
        if method == "fdr_by":
            ecdf = ecdf / np.sum(1.0 / np.arange(1, n + 1))
        rej_sorted = _step_up(ps <= ecdf * alpha)
    else:  # pragma: no cover - validated by the caller
        raise ValueError(method)
    out = np.empty(n, bool)
    out[order] = rej_sorted
    return out


def reject_t(t: np.ndarray, df: np.ndarray, alpha: float, method: str) -> np.ndarray:
    """Rejections of one-sided (upper tail) t tests, row by row: exactly
    ``reject(stats.t.sf(t[r], df[r]), alpha, method)`` for every row ``r`` of ``t``.

    ``t`` is ``[R, N]`` (R families of N tests each, e.g. runs x units) with ``df`` ``[R]``.
    Bonferroni and uncorrected tests need no p-value per unit: ``p <= level`` is
    ``t >= isf(level, df)``; only the t values within a hair of that critical value (where
    ``isf`` and ``sf`` may round differently) get their p-value computed and compared.

    Examples
    --------
    >>> t, df = np.array([[0.5, 2.4, 9.0], [2.2, 3.0, 20.0]]), np.array([10, 30])
    >>> reject_t(t, df, 0.05, "bonferroni").tolist()
    [[False, False, True], [False, True, True]]
    >>> p = stats.t.sf(t, df[:, None])
    >>> [reject(row, 0.05, "bonferroni").tolist() for row in p]
    [[False, False, True], [False, True, True]]
    """
    t = np.asarray(t, dtype=np.float64)
    df = np.asarray(df)
    if t.ndim != 2 or df.shape != (t.shape[0],):
        raise NeuroprobeError(
            f"reject_t needs t [R, N] and df [R]; got t {t.shape} and df {df.shape}."
        )
    n = t.shape[1]
    if n == 0:
        return np.zeros(t.shape, bool)
    if method not in ("bonferroni", "none"):
        p = stats.t.sf(t, df[:, None])
        return np.stack([reject(row, alpha, method) for row in p]) if len(p) \
            else np.zeros(t.shape, bool)
    level = alpha / n if method == "bonferroni" else alpha
    crit = stats.t.isf(level, df.astype(np.float64))[:, None]  # p <= level <=> t >= crit
    d = t - crit
    out = d >= 0
    near = np.abs(d, out=d) <= 1e-7 * np.maximum(1.0, np.abs(crit))
    if near.any():
        rows = np.nonzero(near)[0]
        out[near] = stats.t.sf(t[near], df[rows]) <= level
    return out
