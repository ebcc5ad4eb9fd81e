"""Shards: where a piece of a corpus sits in the whole, and what a probe has seen.

A probe's :meth:`merge` is only exact when every shard feeds it *global* row numbers: the
``prompt_index`` and ``time_index`` a single pass over the whole corpus would give.  A
:class:`Shard` carries the two offsets (first prompt, first time point) and
:func:`neuroprobe.stream` adds them to every :class:`~neuroprobe.BatchMeta`;
:func:`shards` splits a corpus into contiguous pieces and computes the offsets exactly as
``record`` numbers rows (same tokenization, same ``positions`` / ``include_bos``).

Every built-in probe also keeps ``seen``: the ``(first_prompt, end_prompt, first_time,
end_time)`` ranges (half open, coalesced) of the data it has absorbed.  Merging two probes
whose time ranges overlap -- the same shard twice, ``p.merge(p)``, or shards streamed without
offsets -- raises :class:`~neuroprobe.NeuroprobeError` naming both probes' ranges, instead
of silently double counting.  Custom probes follow the same rule with :func:`note_batch` in
``update`` and :func:`union_seen` in ``merge`` (docs/capture.md shows the recipe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from neuroprobe.core.errors import NeuroprobeError

__all__ = ["Shard", "note_batch", "union_seen"]

Seen = tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class Shard:
    """Where one shard of a corpus sits in the whole.

    Parameters
    ----------
    first_prompt : int
        Global index of the shard's first prompt.
    first_time : int
        Global time index (row of the whole recording) of the shard's first recorded token.
    index : int
        The shard's number in corpus order (used to fix the reduction tree).

    Examples
    --------
    >>> from neuroprobe.core.shards import Shard
    >>> Shard(first_prompt=10, first_time=640)
    Shard(first_prompt=10, first_time=640, index=0)
    """

    first_prompt: int = 0
    first_time: int = 0
    index: int = 0

    def __post_init__(self) -> None:
        for name in ("first_prompt", "first_time", "index"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise NeuroprobeError(
                    f"Shard({name}=...) must be an int >= 0; got {v!r}. Use npb.shards(model, "
                    "prompts, n) to compute the offsets."
                )


def _fmt(seen: Seen) -> str:
    if not seen:
        return "nothing"
    return ", ".join(f"prompts [{p0}, {p1}) / time [{t0}, {t1})" for p0, p1, t0, t1 in seen)


def _coalesce(ranges: Sequence[tuple[int, int, int, int]]) -> Seen:
    rs = sorted(ranges, key=lambda r: (r[2], r[3]))
    out: list[list[int]] = []
    for r in rs:
        if out and out[-1][3] == r[2]:
            last = out[-1]
            out[-1] = [min(last[0], r[0]), max(last[1], r[1]), last[2], r[3]]
        else:
            out.append(list(r))
    return tuple(tuple(r) for r in out)


def _overlap(a: Seen, b: Seen) -> tuple[int, int] | None:
    for _, _, s0, e0 in a:
        for _, _, s1, e1 in b:
            lo, hi = max(s0, s1), min(e0, e1)
            if lo < hi:
                return lo, hi
    return None


def union_seen(a: Seen, b: Seen, who_a: str = "self", who_b: str = "other") -> Seen:
    """The ranges two probes have seen together; raises if they overlap in time.

    Examples
    --------
    >>> from neuroprobe.core.shards import union_seen
    >>> union_seen(((0, 2, 0, 10),), ((2, 4, 10, 20),))
    ((0, 4, 0, 20),)
    """
    for arg, v in (("a", a), ("b", b)):
        ok = isinstance(v, (tuple, list)) and all(
            isinstance(r, (tuple, list)) and len(r) == 4 for r in v)
        if not ok:
            raise NeuroprobeError(
                f"union_seen({arg}=...) must be a probe's .seen: a tuple of (first_prompt, "
                f"end_prompt, first_time, end_time) ranges; got {v!r}."
            )
    hit = _overlap(a, b)
    if hit is not None:
        raise NeuroprobeError(
            f"cannot merge {who_a} (saw {_fmt(a)}) with {who_b} (saw {_fmt(b)}): both "
            f"contain time [{hit[0]}, {hit[1]}), so merging would count it twice. Merge each "
            "shard once (not a probe with itself), and give each shard its global offsets "
            "with npb.shards(model, prompts, n) / stream(..., shard=Shard(first_prompt, "
            "first_time))."
        )
    return _coalesce(tuple(a) + tuple(b))


def note_batch(seen: Seen, meta, who: str = "probe") -> Seen:
    """``seen`` extended by one batch's rows (``meta`` a :class:`~neuroprobe.BatchMeta`).

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.probes import BatchMeta
    >>> from neuroprobe.core.shards import note_batch
    >>> note_batch((), BatchMeta(torch.tensor([0, 0, 1]), torch.arange(3), torch.arange(3)))
    ((0, 2, 0, 3),)
    """
    if not all(hasattr(meta, a) for a in ("n", "prompt_index", "time_index")):
        raise NeuroprobeError(
            f"note_batch(meta=...) must be a neuroprobe.BatchMeta; got {type(meta).__name__}."
        )
    if meta.n == 0:
        return seen
    pi, ti = meta.prompt_index, meta.time_index
    rng = ((int(pi.min()), int(pi.max()) + 1, int(ti.min()), int(ti.max()) + 1),)
    return union_seen(seen, rng, who, "a new batch")
