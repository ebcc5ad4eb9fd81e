"""Streaming probes: analyses that see every batch once and keep a running state.

A probe is any object with

``hooks``
    a sequence of hook names or glob patterns it needs (resolved by :func:`neuroprobe.record`
    or :func:`neuroprobe.stream` against the model, exactly like ``record(hooks=...)``);
``update(acts, meta)``
    called once per batch, in time order, with ``acts`` a dict ``{hook_name: Tensor[n, d]}``
    (one row per recorded token of the batch, rows aligned with ``meta``) and ``meta`` a
    :class:`BatchMeta`;
``merge(other)``
    returning a new probe whose state is exactly what one probe would hold after seeing
    both probes' data (so shards recorded in different processes or machines combine).

Probes never receive padding tokens.  Rows of consecutive batches are consecutive time
points (``meta.time_index`` tells the global row), so a probe that needs lag-1 products
can keep the previous batch's last row.

Two built-in probes prove the protocol: :class:`RunningCovariance` (mean and covariance in
float64) and :class:`TopK` (the top-k activating tokens of every unit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.shards import note_batch, union_seen
from neuroprobe.core.units import Directions, project
from neuroprobe.core.validation import check_index_list, check_int

__all__ = ["BatchMeta", "Probe", "RunningCovariance", "TopK"]


@dataclass(frozen=True)
class BatchMeta:
    """Metadata of the rows a probe receives for one batch.

    Attributes
    ----------
    prompt_index : LongTensor ``[n]``
        Which prompt (0-based, in the order given to ``record``) each row comes from.
    position : LongTensor ``[n]``
        Token position of the row inside its prompt (0 = first token, BOS if prepended).
    time_index : LongTensor ``[n]``
        Global row number in the whole recording (time point of the time series).
    token_ids : LongTensor ``[n]`` or None
        Token id of each row (None for models whose inputs are not tokens).
    """

    prompt_index: Int[Tensor, " n"]
    position: Int[Tensor, " n"]
    time_index: Int[Tensor, " n"]
    token_ids: Int[Tensor, " n"] | None = None

    def __post_init__(self) -> None:
        n = None
        for name in ("time_index", "prompt_index", "position", "token_ids"):
            v = getattr(self, name)
            if v is None and name == "token_ids":
                continue
            if not isinstance(v, Tensor) or v.ndim != 1 or v.is_floating_point() \
                    or v.dtype == torch.bool:
                raise NeuroprobeError(
                    f"BatchMeta.{name} must be a 1-D integer tensor; got "
                    f"{type(v).__name__}{tuple(v.shape) if isinstance(v, Tensor) else ''}"
                    f"{' ' + str(v.dtype) if isinstance(v, Tensor) else ''}."
                )
            if n is None:
                n = v.shape[0]
            elif v.shape[0] != n:
                raise NeuroprobeError(
                    f"BatchMeta.{name} has {v.shape[0]} rows but time_index has {n}; every "
                    "field has one entry per row of the batch."
                )

    @property
    def n(self) -> int:
        return int(self.time_index.shape[0])


@runtime_checkable
class Probe(Protocol):
    """The protocol every streaming probe follows (see the module docstring)."""

    hooks: Sequence[str]

    def update(self, acts: dict[str, Tensor], meta: BatchMeta) -> None: ...

    def merge(self, other: Probe) -> Probe: ...


def _hook_acts(acts, hook: str, probe) -> Tensor:
    """``acts[hook]`` as a 2-D tensor, or a NeuroprobeError naming what the probe got."""
    if not isinstance(acts, dict) or hook not in acts:
        got = sorted(acts)[:6] if isinstance(acts, dict) else type(acts).__name__
        raise NeuroprobeError(
            f"{type(probe).__name__}.update(acts=...) needs a dict with the key {hook!r} "
            f"(its hook); got {got}. record/stream build it for you."
        )
    x = acts[hook]
    if not isinstance(x, Tensor) or x.ndim != 2:
        raise NeuroprobeError(
            f"{type(probe).__name__}.update: acts[{hook!r}] must be a [n, d] tensor; got "
            f"{type(x).__name__}{'' if not isinstance(x, Tensor) else tuple(x.shape)}."
        )
    return x


def hook_and_directions(target) -> tuple[str, Directions | None]:
    """A probe target as ``(hook name, Directions or None)``.

    ``target`` is a hook name (every neuron of the hook) or a :class:`Directions` (its
    hook and the set itself).  Probes project each batch with
    :func:`neuroprobe.core.units.project`, which applies the set's own
    :meth:`~neuroprobe.core.units.Directions.unit_activations` (an SAE encoder for SAE
    features).

    Examples
    --------
    >>> from neuroprobe.core.probes import hook_and_directions
    >>> hook_and_directions("blocks.0.hook_resid_post")
    ('blocks.0.hook_resid_post', None)
    """
    if isinstance(target, Directions):
        return target.hook, target
    if isinstance(target, str):
        if any(c in target for c in "*?["):
            raise NeuroprobeError(
                f"probe target={target!r} is a glob pattern; a built-in probe watches one "
                "exact hook. Make one probe per hook, e.g. [npb.TopK(h) for h in "
                "npb.hook_names(model) if fnmatch.fnmatch(h, pattern)]."
            )
        return target, None
    raise NeuroprobeError(
        f"probe target must be a hook name (str) or a Directions object; got {type(target)}"
    )


@dataclass
class RunningCovariance:
    """Running mean and covariance of one hook's output (or of directions at it).

    Accumulates in float64 with the Chan et al. pairwise update, so float32 activations over
    millions of tokens stay accurate, and :meth:`merge` is exact.

    Parameters
    ----------
    target : str or Directions
        The hook (exact name) or a set of directions at a hook.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.probes import RunningCovariance, BatchMeta
    >>> x = torch.randn(100, 3, dtype=torch.float64)
    >>> meta = lambda a, b: BatchMeta(*(torch.arange(a, b),) * 3)
    >>> p, q = RunningCovariance("h"), RunningCovariance("h")
    >>> p.update({"h": x[:60]}, meta(0, 60)); q.update({"h": x[60:]}, meta(60, 100))
    >>> torch.allclose(p.merge(q).covariance, torch.cov(x.T))
    True
    """

    target: object
    count: int = 0
    mean: Tensor | None = None
    m2: Tensor | None = None
    seen: tuple = ()
    hooks: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        hook, self._dirs = hook_and_directions(self.target)
        self.hooks = (hook,)

    def activations(self, acts: dict[str, Tensor]) -> Float[Tensor, "n d"]:
        """This probe's view of one batch: the hook's output ``[n, d]``, projected on the
        directions when the target is a :class:`Directions` (detached, dtype kept)."""
        return project(_hook_acts(acts, self.hooks[0], self), self._dirs).detach()

    def update(self, acts: dict[str, Tensor], meta: BatchMeta) -> None:
        x = self.activations(acts).to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        self.seen = note_batch(self.seen, meta, repr(self))
        bmean = x.mean(0)
        xc = x - bmean
        bm2 = xc.T @ xc
        self._combine(n, bmean, bm2)

    def _combine(self, n: int, bmean: Tensor, bm2: Tensor) -> None:
        if self.count == 0:
            self.count, self.mean, self.m2 = n, bmean.clone(), bm2.clone()
            return
        tot = self.count + n
        delta = (bmean - self.mean).to(self.mean.device)
        self.m2 = self.m2 + bm2.to(self.m2.device) + torch.outer(delta, delta) * (
            self.count * n / tot
        )
        self.mean = self.mean + delta * (n / tot)
        self.count = tot

    def merge(self, other: RunningCovariance) -> RunningCovariance:
        if not isinstance(other, RunningCovariance) or other.hooks != self.hooks:
            raise NeuroprobeError(
                f"can only merge a RunningCovariance of the same hook {self.hooks}; got {other!r}"
            )
        out = RunningCovariance(self.target)
        out.seen = union_seen(self.seen, other.seen, repr(self), repr(other))
        if self.count:
            out._combine(self.count, self.mean, self.m2)
        if other.count:
            out._combine(other.count, other.mean, other.m2)
        return out

    @property
    def covariance(self) -> Float[Tensor, "d d"]:
        """Unbiased covariance (divides by ``count - 1``), float64."""
        if self.count < 2:
            raise NeuroprobeError(
                f"RunningCovariance has seen {self.count} rows; a covariance needs at least 2."
            )
        return self.m2 / (self.count - 1)

    def __repr__(self) -> str:
        d = None if self.mean is None else int(self.mean.shape[0])
        return f"RunningCovariance(hook={self.hooks[0]!r}, count={self.count}, d={d})"


@dataclass
class TopK:
    """The ``k`` highest-activating tokens of every unit at a hook (or of directions).

    Keeps, per unit, the top-``k`` values with their ``(prompt_index, position, time_index,
    token_id)``.  Ties are broken by earlier time.  :meth:`merge` is exact.

    Parameters
    ----------
    target : str or Directions
        The hook (exact name) or directions at a hook.
    k : int
        How many examples to keep per unit.
    indices : sequence of int, optional
        Track only these coordinates of the hook (all by default).

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.probes import TopK, BatchMeta
    >>> x = torch.tensor([[0.0, 5.0], [3.0, 1.0], [2.0, 4.0]])
    >>> p = TopK("h", k=2)
    >>> p.update({"h": x}, BatchMeta(*(torch.arange(3),) * 3))
    >>> p.values.T.tolist()
    [[3.0, 2.0], [5.0, 4.0]]
    """

    target: object
    k: int = 20
    indices: Sequence[int] | None = None
    values: Tensor | None = None
    prompt_index: Tensor | None = None
    position: Tensor | None = None
    time_index: Tensor | None = None
    token_ids: Tensor | None = None
    seen: tuple = ()
    hooks: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.k, (bool, np.bool_)) or not isinstance(self.k, (int, np.integer)) \
                or self.k < 1:
            raise NeuroprobeError(f"TopK(k=...) must be a positive int; got {self.k!r}")
        self.k = int(self.k)
        if self.indices is not None:  # our own list: the user's sequence is never aliased
            self.indices = check_index_list(self.indices, "TopK(indices=...)")
        hook, self._dirs = hook_and_directions(self.target)
        self.hooks = (hook,)

    def activations(self, acts: dict[str, Tensor]) -> Float[Tensor, "n unit"]:
        """The values this probe ranks, for one batch: the hook's output (projected on the
        directions when the target is one), its ``indices`` columns, float32 on the CPU."""
        x = project(_hook_acts(acts, self.hooks[0], self), self._dirs).detach().float().cpu()
        if self.indices is not None:
            x = x[:, torch.as_tensor(list(self.indices), dtype=torch.long)]
        return x

    def update(self, acts: dict[str, Tensor], meta: BatchMeta) -> None:
        x = self.activations(acts)
        n, d = x.shape
        if n == 0:
            return
        self.seen = note_batch(self.seen, meta, repr(self))
        tok = meta.token_ids if meta.token_ids is not None else torch.full((n,), -1)
        cols = [meta.prompt_index, meta.position, meta.time_index, tok]
        cols = [c.cpu().long()[:, None].expand(n, d) for c in cols]
        self.absorb(x, *cols)

    def absorb(self, vals: Float[Tensor, "n unit"], pi: Int[Tensor, "n unit"],
               pos: Int[Tensor, "n unit"], ti: Int[Tensor, "n unit"],
               tok: Int[Tensor, "n unit"]) -> None:
        """Merge candidate rows into the top-k: per unit (column), values with their prompt
        index, position, time index and token id; ties go to the earlier time.

        :meth:`update` calls it with every row of a batch; a probe that pre-selects its
        candidates (one per text, say) calls it directly.
        """
        if self.values is not None:
            vals = torch.cat([self.values, vals])
            pi = torch.cat([self.prompt_index, pi])
            pos = torch.cat([self.position, pos])
            ti = torch.cat([self.time_index, ti])
            tok = torch.cat([self.token_ids, tok])
        # stable ordering: sort by time first, then a stable sort by value (descending);
        # NaN ranks last (torch would rank it above every number): a NaN is no top example
        order_t = torch.argsort(ti, dim=0, stable=True)
        vals_t = torch.gather(vals, 0, order_t)
        if vals_t.is_floating_point():
            vals_t = torch.nan_to_num(vals_t, nan=float("-inf"))
        order_v = torch.argsort(vals_t, dim=0, descending=True, stable=True)[: self.k]
        order = torch.gather(order_t, 0, order_v)
        self.values = torch.gather(vals, 0, order)
        self.prompt_index = torch.gather(pi, 0, order)
        self.position = torch.gather(pos, 0, order)
        self.time_index = torch.gather(ti, 0, order)
        self.token_ids = torch.gather(tok, 0, order)

    def merge(self, other: TopK) -> TopK:
        if not isinstance(other, TopK) or other.hooks != self.hooks or other.k != self.k:
            raise NeuroprobeError(
                f"can only merge a TopK of the same hook {self.hooks} and k={self.k}; "
                f"got {other!r}"
            )
        if other.indices != self.indices:
            raise NeuroprobeError(
                f"can only merge TopK probes that track the same units: indices={self.indices} "
                f"vs indices={other.indices}; column j of one would be merged with a different "
                "unit of the other."
            )
        out = TopK(self.target, self.k, self.indices)
        out.seen = union_seen(self.seen, other.seen, repr(self), repr(other))
        for p in (self, other):
            if p.values is not None:
                out.absorb(p.values, p.prompt_index, p.position, p.time_index, p.token_ids)
        return out

    def to_dataframe(self, unit: int) -> pd.DataFrame:
        """The top-k rows of one unit (column ``unit`` of this probe), best first."""
        if self.values is None:
            raise NeuroprobeError("TopK has seen no data yet; run it through record/stream.")
        d = int(self.values.shape[1])
        unit = check_int(unit, "TopK.to_dataframe(unit=...)", minimum=-d, maximum=d - 1)
        return pd.DataFrame(
            {
                "rank": np.arange(self.values.shape[0]),
                "activation": self.values[:, unit].numpy(),
                "prompt_index": self.prompt_index[:, unit].numpy(),
                "position": self.position[:, unit].numpy(),
                "time_index": self.time_index[:, unit].numpy(),
                "token_id": self.token_ids[:, unit].numpy(),
            }
        )

    def __repr__(self) -> str:
        shape = None if self.values is None else tuple(self.values.shape)
        return f"TopK(hook={self.hooks[0]!r}, k={self.k}, values={shape})"
