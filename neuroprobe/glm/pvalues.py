"""Private: p-values, z-scores (nilearn's conversion), unsaturated log10 p, corrections."""

from __future__ import annotations

import numpy as np
from scipy import special, stats


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


def adjust(p: np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values (statsmodels ``multipletests`` conventions)."""
    n = p.size
    if method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * n, 1.0)
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((n - np.arange(n)) * ps)
    elif method == "fdr_bh":
        adj = np.minimum.accumulate((ps * n / np.arange(1, n + 1))[::-1])[::-1]
    else:  # pragma: no cover - validated by the caller
        raise ValueError(method)
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


def reject(p: np.ndarray, alpha: float, method: str) -> np.ndarray:
    """Rejections exactly as statsmodels ``multipletests(p, alpha, method)[0]``."""
    n = p.size
    if method == "none":
        return p <= alpha
    if method == "bonferroni":
        return p <= alpha / n
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    if method == "holm":
        notrej = ps > alpha / np.arange(n, 0, -1)
        idx = np.flatnonzero(notrej)
        rej_sorted = np.ones(n, bool)
        if idx.size:
            rej_sorted[idx[0]:] = False
    else:  # fdr_bh
        below = ps <= np.arange(1, n + 1) / n * alpha
        rej_sorted = np.zeros(n, bool)
        if below.any():
            rej_sorted[: np.flatnonzero(below).max() + 1] = True
    out = np.empty(n, bool)
    out[order] = rej_sorted
    return out
