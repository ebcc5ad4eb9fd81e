""":class:`GLMProbe`, the streaming accumulator of the GLM's sufficient statistics
(re-exported as ``neuroprobe.GLMProbe``).

It sits above :mod:`~neuroprobe.glm.fit`: it gathers the same :class:`GLMStats` that
:func:`~neuroprobe.glm.fit.fit_glm` gathers in one pass, and hands them to the same
:func:`~neuroprobe.glm.fit.result_from_stats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.shards import note_batch, union_seen
from neuroprobe.core.validation import check_bool
from neuroprobe.glm.design import as_design_matrix, block_segments, check_rank
from neuroprobe.glm.fit import GLMResult, check_noise, result_from_stats
from neuroprobe.glm.permutation import permutation_state
from neuroprobe.glm.stats import GLMStats, lag_sum, segment_edges

__all__ = ["GLMProbe"]


@dataclass
class GLMProbe:
    """Streaming GLM: accumulates the GLM's sufficient statistics batch by batch.

    Give it to ``record(..., probes=[...])`` or ``stream(...)``; rows are matched to the
    design by ``meta.time_index``.  It keeps ``X'Y``, ``sum y``, ``sum y^2``, the lag-1
    products needed by AR(1) and the block sums needed by max-T, in float64: memory
    ``O(P N)``, never ``T x N``.  :meth:`merge` combines shards exactly; :meth:`fit` gives
    the same :class:`GLMResult` as :func:`fit_glm` on the whole recording.

    Parameters
    ----------
    target : str or Directions
        Hook (exact name) or directions at a hook.
    X : DataFrame, ndarray or BlockDesign ``[T, P]``
        Design matrix of the whole recording (row ``t`` = time point ``t``).

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> from neuroprobe.core.probes import BatchMeta
    >>> d = npb.BlockDesign.from_blocks([("a", 4), ("b", 4)] * 3, baseline="b")
    >>> Y = torch.randn(24, 5, dtype=torch.float64)
    >>> p, q = npb.GLMProbe("h", d), npb.GLMProbe("h", d)
    >>> m = lambda a, b: BatchMeta(*(torch.arange(a, b),) * 3)
    >>> p.update({"h": Y[:10]}, m(0, 10)); q.update({"h": Y[10:]}, m(10, 24))
    >>> res = p.merge(q).fit(noise="ar1")
    >>> torch.allclose(res.beta, npb.fit_glm(Y, d, noise="ar1").beta)
    True
    """

    target: object
    X: object
    hooks: tuple = field(init=False)

    def __post_init__(self) -> None:
        from neuroprobe.core.probes import hook_and_directions

        hook, self._dirs = hook_and_directions(self.target)
        self.hooks = (hook,)
        self._X, self._cols = as_design_matrix(self.X, None)
        T = self._X.shape[0]
        self._Xall = torch.as_tensor(np.concatenate([self._X, lag_sum(self._X)], 1))
        self._seg, self._perm_cols = block_segments(self._X, self._cols)
        self._erows = None if self._seg is None else segment_edges(self._seg)
        self._T = T
        self._n = 0
        self._acc: dict | None = None
        self._edges: list = []  # [t_start, row_start, t_end, row_end] contiguous ranges
        self.seen: tuple = ()  # (prompt0, prompt1, time0, time1) ranges, see core.shards

    def update(self, acts: dict, meta) -> None:
        from neuroprobe.core.units import project

        if self.hooks[0] not in acts:
            raise NeuroprobeError(
                f"GLMProbe watches hook {self.hooks[0]!r} but the batch has only "
                f"{sorted(acts)[:5]}; record / stream with this probe so that its hook is "
                "captured."
            )
        a = acts[self.hooks[0]]
        if a.ndim != 2:
            raise NeuroprobeError(
                f"GLMProbe needs activations [rows, units] for {self.hooks[0]!r}; got shape "
                f"{tuple(a.shape)}."
            )
        x = project(a, self._dirs).detach().to(torch.float64).cpu()
        ti = torch.as_tensor(meta.time_index).detach().cpu()
        if ti.is_floating_point() or ti.dtype == torch.bool or ti.ndim != 1:
            raise NeuroprobeError(
                f"meta.time_index must be a 1-D integer tensor (one time point per row); got "
                f"dtype {ti.dtype} and shape {tuple(ti.shape)}."
            )
        ti = ti.long()
        if ti.shape[0] != x.shape[0]:
            raise NeuroprobeError(
                f"GLMProbe got {x.shape[0]} rows of activations but {ti.shape[0]} time "
                "indices; meta.time_index needs one entry per row."
            )
        if x.shape[0] == 0:
            return
        if int(ti.max()) >= self._T or int(ti.min()) < 0:
            raise NeuroprobeError(
                f"GLMProbe got time_index in [{int(ti.min())}, {int(ti.max())}] but its "
                f"design has T={self._T} rows (valid: 0 .. {self._T - 1}); give the design of "
                "the whole recording."
            )
        if x.shape[1] == 0:
            raise NeuroprobeError(
                f"GLMProbe got 0 units at {self.hooks[0]!r}; the GLM needs at least one unit."
            )
        self.seen = note_batch(self.seen, meta, repr(self))
        order = torch.argsort(ti)
        x, ti = x[order], ti[order]
        P = self._X.shape[1]
        G = self._Xall[ti].T @ x  # [2P, n]
        lagmask = (ti[1:] == ti[:-1] + 1).to(torch.float64)
        lag = (x[1:] * x[:-1] * lagmask[:, None]).sum(0)
        acc = {"xty": G[:P], "xlag": G[P:], "yy": (x * x).sum(0),
               "ysum": x.sum(0), "lag": lag}
        if self._seg is not None:
            S = int(self._seg.max()) + 1
            seg = torch.zeros(S, x.shape[1], dtype=torch.float64)
            seg.index_add_(0, torch.as_tensor(self._seg)[ti], x)
            acc["seg"] = seg
            er = torch.as_tensor(self._erows)
            pos = torch.searchsorted(er, ti).clamp(max=len(er) - 1)
            hit = er[pos] == ti
            edges = torch.zeros(len(self._erows), x.shape[1], dtype=torch.float64)
            edges.index_add_(0, pos[hit], x[hit])
            acc["edges"] = edges
        if self._acc is None:
            self._acc = acc
        else:
            if acc["yy"].shape != self._acc["yy"].shape:
                raise NeuroprobeError(
                    f"GLMProbe got {acc['yy'].shape[0]} units in a batch after "
                    f"{self._acc['yy'].shape[0]} before; a hook's width cannot change."
                )
            for k in acc:
                self._acc[k] = self._acc[k] + acc[k]
        self._n += x.shape[0]
        # contiguous ranges of this batch (rows in time order)
        brk = torch.nonzero(ti[1:] != ti[:-1] + 1).flatten().tolist()
        starts = [0] + [b + 1 for b in brk]
        ends = brk + [ti.shape[0] - 1]
        for s, e in zip(starts, ends, strict=False):
            self._add_edge([int(ti[s]), x[s].clone(), int(ti[e]), x[e].clone()])

    def _add_edge(self, edge) -> None:
        self._edges.append(edge)
        self._edges.sort(key=lambda r: r[0])
        merged = [self._edges[0]]
        for r in self._edges[1:]:
            last = merged[-1]
            if r[0] == last[2] + 1:
                self._acc["lag"] = self._acc["lag"] + last[3] * r[1]
                merged[-1] = [last[0], last[1], r[2], r[3]]
            else:
                merged.append(r)
        self._edges = merged

    def merge(self, other: GLMProbe) -> GLMProbe:
        if not isinstance(other, GLMProbe) or other.hooks != self.hooks or \
                other._X.shape != self._X.shape or not np.array_equal(other._X, self._X):
            raise NeuroprobeError(
                f"can only merge a GLMProbe of the same hook {self.hooks} and design."
            )
        out = GLMProbe(self.target, self.X)
        out.seen = union_seen(self.seen, other.seen, repr(self), repr(other))
        for p in (self, other):
            if p._acc is None:
                continue
            if out._acc is None:
                out._acc = {k: v.clone() for k, v in p._acc.items()}
            else:
                for k in out._acc:
                    out._acc[k] = out._acc[k] + p._acc[k]
            out._n += p._n
            for e in p._edges:
                out._add_edge(list(e))
        return out

    def stats(self) -> GLMStats:
        if self._acc is None or self._n != self._T or len(self._edges) != 1:
            raise NeuroprobeError(
                f"GLMProbe has seen {self._n} of the design's T={self._T} time points"
                + (f" in {len(self._edges)} separate stretches" if len(self._edges) > 1 else "")
                + "; run it over the whole recording (or merge all shards) before fit()."
            )
        a = self._acc
        e = self._edges[0]
        st = GLMStats(self._T, a["xty"], a["yy"], a["ysum"], torch.zeros_like(a["yy"]),
                      a["xlag"], a["lag"], e[1], e[3], a.get("seg"),
                      a.get("edges"))
        return st

    def fit(self, *, noise: str = "ols", bins: int = 100, allow_rank_deficient: bool = False,
            units=None) -> GLMResult:
        """The GLM of everything this probe has seen (same result as :func:`fit_glm`)."""
        check_noise(noise, bins)
        allow_rank_deficient = check_bool(allow_rank_deficient, "allow_rank_deficient")
        st = self.stats()
        rank = check_rank(self._X, self._cols, allow_rank_deficient)
        perm = permutation_state(st, self._seg, self._perm_cols, noise)
        return result_from_stats(st, self._X, self._cols, noise=noise, bins=bins, rank=rank,
                                 units=units, perm=perm)

    def __repr__(self) -> str:
        return (f"GLMProbe(hook={self.hooks[0]!r}, T={self._T}, columns={list(self._cols)}, "
                f"seen={self._n})")

