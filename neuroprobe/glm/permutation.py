"""Permutation max-T family-wise test that permutes whole blocks.

The condition columns of a block design are constant inside each block (segment), so the
permuted design's cross products are ``A[pi]' Z`` with ``Z [S, N]`` the per-segment sums of
``Y`` that the fit already gathered: every permutation is a small batched matrix product,
there is no loop over units and no pass over ``Y``.  Blocks keep their inside (their
autocorrelation); only which condition each block belongs to is exchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import check_positive_int
from neuroprobe.glm.design import block_layout
from neuroprobe.glm.pvalues import check_tail
from neuroprobe.glm.stats import TINY, GLMStats, segment_edges, serial_torch


@dataclass(frozen=True, eq=False)
class PermutationState:
    """What max-T needs after the fit: ``O((P + S) N)`` numbers, not ``Y``.

    ``segments [T]`` and ``perm_cols`` are :func:`~neuroprobe.glm.design.block_segments`'
    block structure; ``seg_sums [S, N]``, ``xty [P, N]`` and ``yy [N]`` are sufficient
    statistics of the fit (of the same shifted ``y``); ``stats`` keeps the lag statistics
    and the rows at segment edges that the AR(1) version needs (``None`` for OLS).
    """

    segments: np.ndarray
    perm_cols: tuple[int, ...]
    seg_sums: Tensor
    xty: Tensor
    yy: Tensor
    stats: GLMStats | None = None


def permutation_state(st: GLMStats, segments: np.ndarray | None, perm_cols: tuple[int, ...],
                      noise: str) -> PermutationState | None:
    """The part of the sufficient statistics ``st`` that max-T needs later, or ``None`` when
    the design has no block structure to permute (or, for AR(1), the rows at segment edges
    were not gathered)."""
    if not perm_cols or st.seg is None or (noise == "ar1" and st.edges is None):
        return None
    return PermutationState(segments, tuple(perm_cols), st.seg, st.xty, st.yy,
                            st if noise == "ar1" else None)


def _null_max(glm, c: np.ndarray, tail: str, n_perm: int, seed: int,
              perm_batch: int = 250, unit_chunk: int = 8192) -> np.ndarray:
    """Maximum over units of the permuted statistic, for ``n_perm`` block permutations.

    Frisch-Waugh-Lovell: with ``Nu`` the nuisance (non-permuted) columns and ``Z~`` the
    segment sums of ``Y`` after removing the nuisance fit, a permuted design's condition
    columns ``A[pi]`` give ``q = A[pi]' Z~``, ``beta_J = G^-1 q``, ``SSE = SSE_nu - q' G^-1 q``
    with ``G`` the residualised ``|J| x |J|`` Gram matrix.  All permutations of a batch are
    one matrix product ``[B (|J| + 1), S] @ [S, units]``.
    """
    st = glm._perm
    lay = block_layout(glm)
    X, seg, J, K, lengths, A = lay.X, lay.segments, lay.J, lay.K, lay.lengths, lay.A
    T, P = X.shape
    S = lay.n_segments
    dev = glm.beta.device
    Z = st.seg_sums  # [S, N] (of the same shifted y as xty)
    xty = st.xty
    yy = st.yy
    N = yy.shape[0]
    Xk = X[:, K]
    # segment sums of the nuisance columns, and the nuisance-only fit
    Wk = np.zeros((S, len(K)))
    np.add.at(Wk, seg, Xk)
    if K:
        Gk_inv = np.linalg.pinv(Xk.T @ Xk, hermitian=True)
        xk = xty[K]  # [|K|, N]
        Bk = torch.as_tensor(Gk_inv, device=dev) @ xk
        sse_k = (yy - (Bk * xk).sum(0)).clamp_min(0)
        Zt = Z - torch.as_tensor(Wk, device=dev) @ Bk  # residualised segment sums
    else:
        Gk_inv = np.zeros((0, 0))
        sse_k, Zt = yy.clone(), Z.clone()
    cJ = c[J]
    df = glm.df_resid
    const = glm.constant
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(S) for _ in range(n_perm)])
    out = np.empty(n_perm)
    nJ = len(J)
    for b0 in range(0, n_perm, perm_batch):
        pb = perms[b0 : b0 + perm_batch]
        B = pb.shape[0]
        Ap = A[pb]  # [B, S, |J|]: segment s gets the condition of segment pb[s]
        # residualised Gram of the permuted condition columns
        XX = np.einsum("bsi,s,bsj->bij", Ap, lengths, Ap)
        XW = np.einsum("bsi,sk->bik", Ap, Wk)
        G = XX - XW @ Gk_inv @ XW.transpose(0, 2, 1)
        Ginv = np.linalg.pinv(G, hermitian=True)
        w = Ginv @ cJ  # [B, |J|]
        cvc = w @ cJ  # [B]
        lam, vec = np.linalg.eigh(Ginv)
        L = vec * np.sqrt(np.clip(lam, 0, None))[:, None, :]  # Ginv = L L'
        R = np.einsum("bji,bsj->bis", L, Ap)  # [B, |J|, S]: L' A'
        U = np.einsum("bj,bsj->bs", w, Ap)  # [B, S]: w' A'
        Mall = torch.as_tensor(np.concatenate([U[:, None], R], 1).reshape(B * (nJ + 1), S),
                               device=dev)
        cvc_t = torch.as_tensor(cvc, device=dev)[:, None]
        best = torch.full((B,), -float("inf"), dtype=torch.float64, device=dev)
        for j in range(0, N, unit_chunk):
            sl = slice(j, min(N, j + unit_chunk))
            prod = (Mall @ Zt[:, sl]).view(B, nJ + 1, -1)
            eff = prod[:, 0]
            quad = prod[:, 1:].square().sum(1)
            sse = (sse_k[sl][None] - quad).clamp_min(0)
            t = eff / torch.sqrt((cvc_t * sse / df).clamp_min(TINY))
            t.masked_fill_(const[sl][None], 0.0)
            s = t if tail == "upper" else t.neg_() if tail == "lower" else t.abs_()
            best = torch.maximum(best, s.amax(1))
        out[b0 : b0 + B] = best.cpu().numpy()
    return out


def _ar1_null_max(glm, c: np.ndarray, tail: str, n_perm: int, seed: int,
                  perm_batch: int = 250, unit_chunk: int = 8192) -> np.ndarray:
    """AR(1) version of :func:`_null_max`: every unit keeps the rho bin of the fit, and the
    permuted designs are whitened with it.  With ``v = W'W y`` the segment sums of ``v`` follow
    from the segment sums of ``y`` and the rows at segment edges; the rest is the OLS
    computation with the whitened Gram matrices of each rho bin."""
    pm = glm._perm
    st = pm.stats
    lay = block_layout(glm)
    X, seg, J, K, starts, A = lay.X, lay.segments, lay.J, lay.K, lay.starts, lay.A
    T, P = X.shape
    S = lay.n_segments
    ends = np.r_[starts[1:] - 1, T - 1]
    E = np.zeros((T, S))
    E[np.arange(T), seg] = 1.0
    dev = glm.beta.device
    erows = segment_edges(seg)
    ye = st.edges  # [n_edges, N]
    row = {int(t): i for i, t in enumerate(erows)}
    Z = st.seg
    r = glm.rho  # binned rho per unit [N]
    # segment sums of v = W'W y (W: y_t - r y_{t-1}, first row kept)
    ya = ye[[row[int(a)] for a in starts]]
    yb = ye[[row[int(b)] for b in ends]]
    nxt = torch.zeros_like(Z)  # y_{b+1}
    prv = torch.zeros_like(Z)  # y_{a-1}
    nxt[:-1] = ya[1:]
    prv[1:] = yb[:-1]
    lastmask = torch.zeros(S, 1, dtype=Z.dtype, device=dev)
    lastmask[-1] = 1.0
    Zv = (1 + r * r - 2 * r) * Z - r * r * lastmask * st.last[None] \
        + r * (ya - nxt) + r * (yb - prv)
    xlast = torch.as_tensor(X[-1], device=dev)
    xwy = st.xty - r * st.xlag + r * r * (st.xty - xlast[:, None] * st.last[None])
    yw = st.yy - 2 * r * st.lag + r * r * (st.yy - st.last * st.last)
    cJ = c[J]
    nJ = len(J)
    df = glm.df_resid
    const = glm.constant
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(S) for _ in range(n_perm)])
    best = torch.full((n_perm,), -float("inf"), dtype=torch.float64, device=dev)
    values = torch.unique(r).tolist()
    for rv in values:
        idx = torch.nonzero(r == rv).flatten()
        Xw = X.copy()
        Xw[1:] -= rv * X[:-1]
        Ew = E.copy()
        Ew[1:] -= rv * E[:-1]
        Xk = Xw[:, K]
        EE = Ew.T @ Ew
        Wk = Ew.T @ Xk  # [S, |K|]
        if K:
            Gk_inv = np.linalg.pinv(Xk.T @ Xk, hermitian=True)
            xk = xwy[K][:, idx]
            Bk = torch.as_tensor(Gk_inv, device=dev) @ xk
            sse_k = (yw[idx] - (Bk * xk).sum(0)).clamp_min(0)
            Zt = Zv[:, idx] - torch.as_tensor(Wk, device=dev) @ Bk
        else:
            Gk_inv = np.zeros((0, 0))
            sse_k, Zt = yw[idx].clamp_min(0), Zv[:, idx]
        cst = const[idx]
        for b0 in range(0, n_perm, perm_batch):
            pb = perms[b0 : b0 + perm_batch]
            B = pb.shape[0]
            Ap = A[pb]
            XX = np.einsum("bsi,st,btj->bij", Ap, EE, Ap)
            XW = np.einsum("bsi,sk->bik", Ap, Wk)
            G = XX - XW @ Gk_inv @ XW.transpose(0, 2, 1)
            Ginv = np.linalg.pinv(G, hermitian=True)
            w = Ginv @ cJ
            cvc = torch.as_tensor(w @ cJ, device=dev)[:, None]
            lam, vec = np.linalg.eigh(Ginv)
            L = vec * np.sqrt(np.clip(lam, 0, None))[:, None, :]
            R = np.einsum("bji,bsj->bis", L, Ap)
            U = np.einsum("bj,bsj->bs", w, Ap)
            Mall = torch.as_tensor(
                np.concatenate([U[:, None], R], 1).reshape(B * (nJ + 1), S), device=dev)
            for j in range(0, idx.numel(), unit_chunk):
                sl = slice(j, min(idx.numel(), j + unit_chunk))
                prod = (Mall @ Zt[:, sl]).view(B, nJ + 1, -1)
                quad = prod[:, 1:].square().sum(1)
                sse = (sse_k[sl][None] - quad).clamp_min(0)
                t = prod[:, 0] / torch.sqrt((cvc * sse / df).clamp_min(TINY))
                t.masked_fill_(cst[sl][None], 0.0)
                s = t if tail == "upper" else t.neg_() if tail == "lower" else t.abs_()
                best[b0 : b0 + B] = torch.maximum(best[b0 : b0 + B], s.amax(1))
    return best.cpu().numpy()


def max_t_p(glm, contrast: np.ndarray, stat: np.ndarray, *, stat_type: str, tail: str,
            n_permutations: int, seed: int) -> np.ndarray:
    """Family-wise corrected p-values ``(1 + #{null max >= stat}) / (n_permutations + 1)``.

    ``glm`` is the :class:`~neuroprobe.glm.fit.GLMResult` the contrast (weights
    ``contrast [P]``, statistic ``stat [N]`` of type ``stat_type``) was computed from.
    """
    n_perm = check_positive_int(n_permutations, "n_permutations")
    check_tail(tail)
    if stat_type != "t" and (tail != "upper" or (glm is not None and glm.noise != "ols")):
        raise NeuroprobeError(
            "correction='max_t' for an F contrast is implemented for OLS fits (upper tail); "
            "for an AR(1) F contrast use 'bonferroni', 'holm' or 'fdr_bh'."
        )
    if glm is None:  # pragma: no cover - contrasts always come from a GLMResult
        raise NeuroprobeError("correction='max_t' needs the contrast of a fitted GLM.")
    if glm._perm is None:
        raise NeuroprobeError(
            "correction='max_t' permutes whole blocks, but this design has no block "
            "structure to permute: no condition column is constant inside blocks (e.g. "
            "HRF-convolved or continuous regressors), or there are more than T/2 blocks. "
            "Use 'bonferroni', 'holm' or 'fdr_bh'."
        )
    J = set(glm._perm.perm_cols)
    used = set(np.flatnonzero(np.atleast_2d(contrast).any(0)).tolist())
    if not used <= J:
        bad = [glm.columns[j] for j in sorted(used - J)]
        raise NeuroprobeError(
            f"correction='max_t' permutes the condition columns "
            f"{[glm.columns[j] for j in sorted(J)]}, but the contrast also weighs {bad}; "
            "test a contrast of condition columns only."
        )
    fn = _ar1_null_max if glm.noise == "ar1" else _null_max
    with serial_torch(glm.beta.device):
        if stat_type == "F":
            from neuroprobe.glm.permutation_f import null_max_f

            null = np.sort(null_max_f(glm, contrast, n_perm, seed))
        else:
            null = np.sort(fn(glm, contrast, tail, n_perm, seed))
    s = stat
    obs = s if tail == "upper" else -s if tail == "lower" else np.abs(s)
    n_ge = n_perm - np.searchsorted(null, obs, side="left")
    return (1.0 + n_ge) / (n_perm + 1.0)
