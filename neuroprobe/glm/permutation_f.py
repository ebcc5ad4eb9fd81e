"""Private: permutation max-T (max-F) for F contrasts of OLS fits, permuting whole blocks.

The same Frisch-Waugh-Lovell algebra as :func:`neuroprobe.glm.permutation._null_max`: for a
permuted design with condition columns ``A[pi]`` and residualised Gram ``G``,
``beta_J = G^-1 A[pi]' Z~`` and ``SSE = SSE_nu - q' G^-1 q``; the F statistic of
``C_J [q, |J|]`` is ``||L' C_J G^-1 A[pi]' Z~||^2 / q / (SSE / df)`` with
``L L' = (C_J G^-1 C_J')^-1``.  Every permutation of a batch is one matrix product over the
segment sums ``Z~ [S, N]``; ``Y`` is never read again.
"""

from __future__ import annotations

import numpy as np
import torch

from neuroprobe.glm.design import block_layout
from neuroprobe.glm.stats import TINY


def _sqrt_factor(M: np.ndarray) -> np.ndarray:
    """``L`` with ``L L' = M`` for a batch of symmetric PSD matrices (eigen square root)."""
    lam, vec = np.linalg.eigh(M)
    return vec * np.sqrt(np.clip(lam, 0, None))[:, None, :]


def null_max_f(glm, C: np.ndarray, n_perm: int, seed: int, perm_batch: int = 250,
               unit_chunk: int = 8192) -> np.ndarray:
    """Maximum over units of the permuted F statistic for ``n_perm`` block permutations
    (the permutations are those of the t version for the same ``seed``)."""
    st = glm._perm
    lay = block_layout(glm)
    X, seg, J, K, lengths, A = lay.X, lay.segments, lay.J, lay.K, lay.lengths, lay.A
    T, P = X.shape
    S = lay.n_segments
    dev = glm.beta.device
    Z, xty, yy = st.seg_sums, st.xty, st.yy
    N = yy.shape[0]
    Xk = X[:, K]
    Wk = np.zeros((S, len(K)))
    np.add.at(Wk, seg, Xk)
    if K:
        Gk_inv = np.linalg.pinv(Xk.T @ Xk, hermitian=True)
        xk = xty[K]
        Bk = torch.as_tensor(Gk_inv, device=dev) @ xk
        sse_k = (yy - (Bk * xk).sum(0)).clamp_min(0)
        Zt = Z - torch.as_tensor(Wk, device=dev) @ Bk
    else:
        Gk_inv = np.zeros((0, 0))
        sse_k, Zt = yy.clone(), Z.clone()
    CJ = np.atleast_2d(C)[:, J]  # [q, |J|]
    q = CJ.shape[0]
    df = glm.df_resid
    const = glm.constant
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(S) for _ in range(n_perm)])
    out = np.empty(n_perm)
    nJ = len(J)
    for b0 in range(0, n_perm, perm_batch):
        pb = perms[b0 : b0 + perm_batch]
        B = pb.shape[0]
        Ap = A[pb]
        XX = np.einsum("bsi,s,bsj->bij", Ap, lengths, Ap)
        XW = np.einsum("bsi,sk->bik", Ap, Wk)
        G = XX - XW @ Gk_inv @ XW.transpose(0, 2, 1)
        Ginv = np.linalg.pinv(G, hermitian=True)
        CG = CJ[None] @ Ginv  # [B, q, |J|]
        Minv = np.linalg.pinv(CG @ CJ.T[None], hermitian=True)  # (C G^-1 C')^-1
        L = _sqrt_factor(Minv)  # [B, q, q]
        num_rows = np.einsum("bji,bjk,bsk->bis", L, CG, Ap)  # [B, q, S]
        R = np.einsum("bji,bsj->bis", _sqrt_factor(Ginv), Ap)  # [B, |J|, S]
        Mall = torch.as_tensor(np.concatenate([num_rows, R], 1).reshape(B * (q + nJ), S),
                               device=dev)
        best = torch.full((B,), -float("inf"), dtype=torch.float64, device=dev)
        for j in range(0, N, unit_chunk):
            sl = slice(j, min(N, j + unit_chunk))
            prod = (Mall @ Zt[:, sl]).view(B, q + nJ, -1)
            num = prod[:, :q].square().sum(1)
            sse = (sse_k[sl][None] - prod[:, q:].square().sum(1)).clamp_min(0)
            F = num / q / (sse / df).clamp_min(TINY)
            F.masked_fill_(const[sl][None], 0.0)
            best = torch.maximum(best, F.amax(1))
        out[b0 : b0 + B] = best.cpu().numpy()
    return out
