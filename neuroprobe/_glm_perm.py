"""Private: permutation max-T family-wise test that permutes whole blocks.

The condition columns of a block design are constant inside each block (segment), so the
permuted design's cross products are ``A[pi]' Z`` with ``Z [S, N]`` the per-segment sums of
``Y`` that the fit already gathered: every permutation is a small batched matrix product,
there is no loop over units and no pass over ``Y``.  Blocks keep their inside (their
autocorrelation); only which condition each block belongs to is exchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from neuroprobe._errors import NeuroprobeError
from neuroprobe._glm_stats import TINY
from neuroprobe._validation import check_positive_int


def _null_max(glm, c: np.ndarray, tail: str, n_perm: int, seed: int,
              perm_batch: int = 32, unit_chunk: int = 16384) -> np.ndarray:
    st = glm._perm
    X = glm.design.to_numpy()
    seg = st["segments"]
    J = list(st["perm_cols"])
    S = int(seg.max()) + 1
    starts = np.r_[0, np.flatnonzero(np.diff(seg)) + 1]
    A = X[starts][:, J]  # [S, |J|] condition values of each segment
    dev = glm.beta.device
    Z = st["seg_sums"]
    xty = st["xty"]
    yy = st["yy"]
    N = yy.shape[0]
    df = glm.df_resid
    const = glm.constant
    ct = torch.as_tensor(c, device=dev)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(S) for _ in range(n_perm)])
    out = np.full(n_perm, -np.inf)
    Jt = torch.as_tensor(J, device=dev)
    for b0 in range(0, n_perm, perm_batch):
        pb = perms[b0 : b0 + perm_batch]
        B = pb.shape[0]
        Ap = A[pb]  # [B, S, |J|]
        Xp = np.repeat(X[None], B, axis=0)
        Xp[:, :, J] = Ap[:, seg, :]
        G = torch.as_tensor(np.einsum("btp,btq->bpq", Xp, Xp), device=dev)
        cov = torch.linalg.pinv(G, hermitian=True)
        w = cov @ ct  # [B, P]
        cvc = w @ ct  # [B]
        Apt = torch.as_tensor(Ap, device=dev).transpose(1, 2)  # [B, |J|, S]
        best = torch.full((B,), -float("inf"), dtype=torch.float64, device=dev)
        for j in range(0, N, unit_chunk):
            sl = slice(j, min(N, j + unit_chunk))
            XY = xty[:, sl].unsqueeze(0).repeat(B, 1, 1)
            XY[:, Jt, :] = Apt @ Z[:, sl]
            eff = torch.einsum("bp,bpn->bn", w, XY)
            quad = (XY * (cov @ XY)).sum(1)
            sse = (yy[sl][None] - quad).clamp_min(0)
            t = eff / torch.sqrt((cvc[:, None] * sse / df).clamp_min(TINY))
            t = torch.where(const[sl][None], torch.zeros_like(t), t)
            s = t if tail == "upper" else -t if tail == "lower" else t.abs()
            best = torch.maximum(best, s.max(1).values)
        out[b0 : b0 + B] = best.cpu().numpy()
    return out


def max_t_p(con, *, tail: str, n_permutations: int, seed: int) -> np.ndarray:
    """Family-wise corrected p-values ``(1 + #{null max >= stat}) / (n_permutations + 1)``."""
    from neuroprobe.glm import _TAILS

    n_perm = check_positive_int(n_permutations, "n_permutations")
    if tail not in _TAILS:
        raise NeuroprobeError(f"tail must be one of {_TAILS}; got {tail!r}.")
    glm = con._glm
    if con.stat_type != "t":
        raise NeuroprobeError(
            "correction='max_t' is implemented for t contrasts; for an F contrast use "
            "'bonferroni', 'holm' or 'fdr_bh'."
        )
    if glm is None or glm.noise != "ols":
        raise NeuroprobeError(
            "correction='max_t' needs a noise='ols' fit (block permutation keeps each "
            "block's autocorrelation, so OLS t values are a valid max-T statistic); refit "
            "with fit_glm(..., noise='ols')."
        )
    if glm._perm is None:
        raise NeuroprobeError(
            "correction='max_t' permutes whole blocks, but this design has no block "
            "structure to permute: no condition column is constant inside blocks (e.g. "
            "HRF-convolved or continuous regressors), or there are more than T/2 blocks. "
            "Use 'bonferroni', 'holm' or 'fdr_bh'."
        )
    J = set(glm._perm["perm_cols"])
    used = set(np.flatnonzero(con.contrast).tolist())
    if not used <= J:
        bad = [con.columns[j] for j in sorted(used - J)]
        raise NeuroprobeError(
            f"correction='max_t' permutes the condition columns "
            f"{[con.columns[j] for j in sorted(J)]}, but the contrast also weighs {bad}; "
            "test a contrast of condition columns only."
        )
    null = np.sort(_null_max(glm, con.contrast, tail, n_perm, seed))
    s = con.stat.detach().cpu().numpy()
    obs = s if tail == "upper" else -s if tail == "lower" else np.abs(s)
    n_ge = n_perm - np.searchsorted(null, obs, side="left")
    return (1.0 + n_ge) / (n_perm + 1.0)
