"""Private: sufficient statistics of a GLM and the fit computed from them.

One pass over ``Y`` (chunked over units, or batch by batch in a streaming probe) collects
per-unit cross products; every estimate of :func:`neuroprobe.fit_glm` -- OLS, nilearn's
AR(1) estimate of rho, its binning and the prewhitened refit -- is then computed from these
``O(P N)`` numbers, never from a ``T x N`` residual.

With ``yc = y - shift`` (``shift`` per unit, zero unless the design spans the constant):

``xty``   ``X' yc``                             ``[P, N]``
``yy``    ``sum_t yc_t^2``                     ``[N]``
``ysum``  ``sum_t yc_t``                       ``[N]``
``xupy``  ``sum_{t>=1} x_t yc_{t-1}``          ``[P, N]`` (AR only)
``xdny``  ``sum_{t>=1} x_{t-1} yc_t``          ``[P, N]`` (AR only)
``lag``   ``sum_{t>=1} yc_t yc_{t-1}``         ``[N]``    (AR only)
``first``, ``last``  ``yc_0``, ``yc_{T-1}``    ``[N]``    (AR only)
``seg``   sums of ``yc`` over the design's permutation segments ``[S, N]`` (max-T only)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as spl
import torch
from torch import Tensor

TINY = 1e-50  # nilearn's DEF_TINY


@dataclass
class GLMStats:
    n_time: int
    xty: Tensor
    yy: Tensor
    ysum: Tensor
    shift: Tensor
    xupy: Tensor | None = None
    xdny: Tensor | None = None
    lag: Tensor | None = None
    first: Tensor | None = None
    last: Tensor | None = None
    seg: Tensor | None = None

    @property
    def has_ar(self) -> bool:
        return self.lag is not None


def spans_constant(X: np.ndarray) -> bool:
    """Whether the all-ones vector lies in the column space of ``X``."""
    one = np.ones(X.shape[0])
    g = np.linalg.lstsq(X, one, rcond=None)[0]
    return bool(np.linalg.norm(X @ g - one) <= 1e-8 * np.sqrt(X.shape[0]))


def lag_matrices(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Xup[t] = x_{t+1}`` (0 at the end) and ``Xdn[t] = x_{t-1}`` (0 at the start)."""
    up = np.zeros_like(X)
    up[:-1] = X[1:]
    dn = np.zeros_like(X)
    dn[1:] = X[:-1]
    return up, dn


def dense_stats(
    Y: Tensor, X: np.ndarray, *, ar: bool, center: bool, device: torch.device,
    dtype: torch.dtype, chunk: int, segments: np.ndarray | None = None,
) -> GLMStats:
    """Sufficient statistics of a dense ``Y [T, N]``, chunked over units."""
    T, N = Y.shape
    P = X.shape[1]
    mats = [X]
    if ar:
        mats += list(lag_matrices(X))
    M = torch.as_tensor(np.concatenate(mats, axis=1).T.copy(), dtype=dtype, device=device)
    S = None
    if segments is not None:
        S = int(segments.max()) + 1
        seg_mat = np.zeros((S, T))
        seg_mat[segments, np.arange(T)] = 1.0
        M = torch.cat([M, torch.as_tensor(seg_mat, dtype=dtype, device=device)])
    kP = M.shape[0]
    f64 = dict(dtype=torch.float64, device=device)
    G = torch.empty(kP, N, **f64)
    yy = torch.empty(N, **f64)
    ysum = torch.empty(N, **f64)
    shift = torch.zeros(N, **f64)
    if ar:
        lag = torch.empty(N, **f64)
        first = torch.empty(N, **f64)
        last = torch.empty(N, **f64)
    for j in range(0, N, chunk):
        sl = slice(j, min(j + chunk, N))
        yc = Y[:, sl].to(device=device, dtype=dtype)
        if center:
            mu = yc.mean(0)
            yc = yc - mu
            shift[sl] = mu
        G[:, sl] = M @ yc
        yy[sl] = torch.linalg.vecdot(yc, yc, dim=0)
        ysum[sl] = yc.sum(0)
        if ar:
            lag[sl] = torch.linalg.vecdot(yc[1:], yc[:-1], dim=0)
            first[sl] = yc[0]
            last[sl] = yc[-1]
    out = GLMStats(T, G[:P], yy, ysum, shift)
    if ar:
        out.xupy, out.xdny = G[P : 2 * P], G[2 * P : 3 * P]
        out.lag, out.first, out.last = lag, first, last
    if S is not None:
        out.seg = G[kP - S :]
    return out


@dataclass
class Fit:
    beta: Tensor  # [P, N]
    dispersion: Tensor  # [N]
    cov: Tensor  # [B, P, P] unscaled covariance of beta per rho bin
    bin_index: Tensor  # [N] long
    rho: Tensor | None  # [N] binned rho (AR) or None
    rho_raw: Tensor | None
    constant: Tensor  # [N] bool


def _constant_units(st: GLMStats) -> Tensor:
    T = st.n_time
    ymean_c = st.ysum / T
    css = (st.yy - st.ysum * ymean_c).clamp_min(0)
    raw = css + T * (st.shift + ymean_c) ** 2
    eps = float(np.finfo(np.float64).eps)
    return css <= 64 * eps * raw


def fit_ols(st: GLMStats, X: np.ndarray, df_resid: int) -> Fit:
    dev = st.xty.device
    pinv = spl.pinv(X)
    cov = torch.as_tensor(pinv @ pinv.T, device=dev)
    beta_c = cov @ st.xty
    sse = (st.yy - (beta_c * st.xty).sum(0)).clamp_min(0)
    h = torch.as_tensor(pinv @ np.ones(X.shape[0]), device=dev)
    beta = beta_c + h[:, None] * st.shift[None, :]
    const = _constant_units(st)
    return Fit(beta, sse / df_resid, cov[None], torch.zeros(beta.shape[1], dtype=torch.long,
               device=dev), None, None, const)


def ar1_rho(st: GLMStats, X: np.ndarray, constant: Tensor) -> Tensor:
    """nilearn's Yule-Walker AR(1) estimate from the OLS residuals (not binned)."""
    dev = st.xty.device
    T = st.n_time
    N = st.xty.shape[1]
    Xt = torch.as_tensor(X, device=dev)
    pinv = spl.pinv(X)
    cov = torch.as_tensor(pinv @ pinv.T, device=dev)
    b = cov @ st.xty
    sse = (st.yy - (b * st.xty).sum(0)).clamp_min(0)
    Q = torch.as_tensor(X[1:].T @ X[:-1], device=dev)
    le = st.lag - (b * (st.xupy + st.xdny)).sum(0) + ((Q @ b) * b).sum(0)
    esum = st.ysum - Xt.sum(0) @ b
    e0 = st.first - Xt[0] @ b
    e1 = st.last - Xt[-1] @ b
    # nilearn subtracts the grand mean of all residuals (over units and time)
    m = esum.sum() / (N * T)
    r0 = sse - 2 * m * esum + T * m * m
    r1 = le - m * (2 * esum - e0 - e1) + (T - 1) * m * m
    r0 = r0 / (T * T)
    r1 = r1 / ((T - 1) * T)
    rho = torch.where(constant | (r0 <= 0), torch.zeros_like(r0), r1 / r0.clamp_min(TINY))
    return rho


def fit_ar1(st: GLMStats, X: np.ndarray, df_resid: int, bins: int) -> Fit:
    dev = st.xty.device
    const = _constant_units(st)
    rho_raw = ar1_rho(st, X, const)
    rho = torch.trunc(rho_raw * bins) / bins
    values, bin_index = torch.unique(rho, return_inverse=True)
    T, P = X.shape
    covs, hs = [], []
    for r in values.tolist():
        Xw = X.copy()
        Xw[1:] = X[1:] - r * X[:-1]
        pinv = spl.pinv(Xw)
        covs.append(pinv @ pinv.T)
        w1 = np.full(T, 1.0 - r)
        w1[0] = 1.0
        hs.append(pinv @ w1)
    cov = torch.as_tensor(np.stack(covs), device=dev)
    h = torch.as_tensor(np.stack(hs), device=dev)  # [B, P]
    xlast = torch.as_tensor(X[-1], device=dev)
    r = rho[None, :]
    xwy = st.xty - r * (st.xupy + st.xdny) + r * r * (st.xty - xlast[:, None] * st.last[None])
    yw = st.yy - 2 * rho * st.lag + rho * rho * (st.yy - st.last * st.last)
    N = st.xty.shape[1]
    beta_c = torch.empty_like(xwy)
    step = 1 << 16
    for j in range(0, N, step):
        sl = slice(j, min(N, j + step))
        beta_c[:, sl] = torch.einsum("npq,qn->pn", cov[bin_index[sl]], xwy[:, sl])
    sse = (yw - (beta_c * xwy).sum(0)).clamp_min(0)
    beta = beta_c + h[bin_index].T * st.shift[None, :]
    return Fit(beta, sse / df_resid, cov, bin_index, rho, rho_raw, const)
