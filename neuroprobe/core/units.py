"""Units: what is measured.

A *unit* is a neuron ``(hook_name, index)`` -- one coordinate of a hook's output -- or a
*direction* at a hook: a vector of the hook's width onto which the hook's output is
projected (a random projection, a PCA/NMF component, an SAE feature).  Every analysis in
neuroprobe takes units, so directions are first-class wherever neurons are.

:class:`UnitIndex` is the column index of a recording: column ``j`` of ``rec.acts`` is
``rec.units[j]``, a ``(hook_name, index)`` tuple.  It is stored compactly as *blocks*
(one per hook or direction set), so 10^6 units cost a few arrays, not 10^6 tuples.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError

__all__ = ["Directions", "UnitIndex", "UnitBlock", "Unit", "hook_layer"]

_LAYER_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def hook_layer(hook_name: str) -> int:
    """Layer number of a hook name, or -1 for hooks outside the blocks.

    Examples
    --------
    >>> hook_layer("blocks.12.mlp.hook_post"), hook_layer("hook_embed")
    (12, -1)
    """
    m = _LAYER_RE.search(hook_name)
    return int(m.group(1)) if m else -1


def project(x: Float[Tensor, "n d"], directions: Directions | Float[Tensor, "k d"] | None
            ) -> Float[Tensor, "n k"]:
    """The values of ``directions`` for activations ``x``: how every direction-like unit is
    measured, in ``x``'s dtype and device.

    ``directions`` is a :class:`Directions` (its :meth:`Directions.unit_activations`, which
    subclasses such as SAE features override with their encoder), a ``[k, d]`` tensor of
    vectors (``x @ directions.T``), or None (``x`` itself: every neuron).

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.units import project
    >>> project(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])).tolist()
    [[1.0, 3.0]]
    """
    if directions is None:
        return x
    if isinstance(directions, Directions):
        return directions.unit_activations(x)
    if x.shape[-1] != directions.shape[-1]:
        raise NeuroprobeError(
            f"Directions have width {directions.shape[-1]} but the hook's output has width "
            f"{x.shape[-1]}; build the directions for this hook."
        )
    return x @ directions.to(device=x.device, dtype=x.dtype).T


@dataclass(frozen=True, eq=False)
class Directions:
    """A set of directions at one hook, recorded as units.

    Parameters
    ----------
    hook : str
        Hook whose output is projected (exact name, e.g. ``"blocks.3.hook_resid_post"``).
    vectors : Tensor ``[n_directions, d]``
        One direction per row; ``d`` must equal the hook's width.  The recorded value of
        direction ``k`` at a token is ``acts @ vectors[k]`` (no normalisation is applied:
        normalise the rows yourself if you want unit-norm projections).
    name : str
        Label of the set, shown in the unit index (``"random"``, ``"pca"``, ``"sae"``).

    Examples
    --------
    >>> import torch
    >>> d = Directions("blocks.0.hook_resid_post", torch.eye(3, 8), name="axes")
    >>> d.n_directions, d.width
    (3, 8)
    """

    hook: str
    vectors: Float[Tensor, "n_directions d"]
    name: str = "direction"

    def __post_init__(self) -> None:
        if not isinstance(self.hook, str) or not self.hook:
            raise NeuroprobeError(
                f"Directions(hook=...) must be a hook name (str), e.g. "
                f"'blocks.0.hook_resid_post'; got {type(self.hook).__name__} {self.hook!r}."
            )
        if not isinstance(self.name, str):
            raise NeuroprobeError(
                f"Directions(name=...) must be a str label such as 'pca'; got "
                f"{type(self.name).__name__} {self.name!r}."
            )
        try:
            v = torch.as_tensor(self.vectors)
        except (TypeError, ValueError, RuntimeError):
            raise NeuroprobeError(
                f"Directions(vectors=...) must be a 2-D tensor [n_directions, d]; got "
                f"{type(self.vectors).__name__} that is not numeric."
            ) from None
        if v.dtype == torch.bool or not (v.is_floating_point() or v.dtype in (
                torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
            raise NeuroprobeError(
                f"Directions(vectors=...) must hold real numbers; got dtype {v.dtype}."
            )
        if v.ndim != 2 or v.shape[0] == 0:
            raise NeuroprobeError(
                f"Directions(vectors=...) must be a non-empty 2-D tensor [n_directions, d]; "
                f"got shape {tuple(v.shape)}. Stack your directions as rows."
            )
        if not torch.isfinite(v).all():
            raise NeuroprobeError(
                "Directions(vectors=...) contains NaN or inf; pass finite direction vectors."
            )
        # keep our own copy: the user's tensor is never aliased or mutated
        object.__setattr__(self, "vectors", v.detach().clone())

    @property
    def n_directions(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[1])

    def unit_activations(self, acts: Float[Tensor, "... d"]
                         ) -> Float[Tensor, "... n_directions"]:
        """The recorded values of these directions for a hook's output ``acts``.

        The one place a direction set turns activations into unit values (``acts @
        vectors.T`` here; subclasses such as SAE features override it).
        """
        if acts.shape[-1] != self.width:
            raise NeuroprobeError(
                f"Directions have width {self.width} but the hook's output has width "
                f"{acts.shape[-1]}; build the directions for this hook."
            )
        return acts @ self.vectors.to(device=acts.device, dtype=acts.dtype).T

    def subset(self, indices) -> Directions:
        """The directions ``indices`` (row numbers) as a new set of the same kind."""
        from neuroprobe.core.validation import check_index_list

        idx = check_index_list(indices, "Directions.subset(indices=...)",
                               size=self.n_directions, what="direction")
        return Directions(self.hook, self.vectors[torch.as_tensor(idx, dtype=torch.long)],
                          self.name)


@dataclass(frozen=True)
class UnitBlock:
    """A contiguous run of columns coming from one hook.

    ``kind`` is ``"neuron"`` (column ``offset + i`` is coordinate ``indices[i]`` of the hook)
    or ``"direction"`` (column ``offset + i`` is direction ``indices[i]`` of set ``name``).
    """

    hook: str
    kind: str
    indices: np.ndarray
    offset: int
    name: str = ""

    @property
    def size(self) -> int:
        return int(self.indices.shape[0])

    @property
    def label(self) -> str:
        """Hook name as it appears in unit tuples (``hook`` or ``hook@name`` for directions)."""
        return self.hook if self.kind == "neuron" else f"{self.hook}@{self.name}"


Unit = tuple[str, int]


@dataclass(frozen=True)
class UnitIndex(Sequence):
    """Column index of a recording: a sequence of ``(hook_name, index)`` tuples.

    Direction units show their hook as ``"hook@set_name"`` so that a direction and the
    neuron with the same number never collide.

    Examples
    --------
    >>> ui = UnitIndex.from_hooks({"blocks.0.mlp.hook_post": 4, "blocks.1.mlp.hook_post": 4})
    >>> len(ui), ui[5]
    (8, ('blocks.1.mlp.hook_post', 1))
    >>> ui.select(layer=1).tolist()
    [4, 5, 6, 7]
    >>> ui.to_dataframe().columns.tolist()
    ['unit', 'hook', 'layer', 'index', 'kind']
    """

    blocks: tuple[UnitBlock, ...] = field(default_factory=tuple)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_hooks(cls, widths: dict[str, int]) -> UnitIndex:
        """All coordinates of each hook, in the dict's order."""
        from neuroprobe.core.validation import check_int

        if not isinstance(widths, dict):
            raise NeuroprobeError(
                f"UnitIndex.from_hooks(widths=...) must be a dict {{hook name: width}}; got "
                f"{type(widths).__name__} {widths!r}."
            )
        blocks, off = [], 0
        for hook, width in widths.items():
            if not isinstance(hook, str):
                raise NeuroprobeError(
                    f"UnitIndex.from_hooks: hook names must be str; got {hook!r}."
                )
            width = check_int(width, f"UnitIndex.from_hooks: the width of {hook!r}", minimum=1)
            blocks.append(UnitBlock(hook, "neuron", np.arange(int(width)), off))
            off += int(width)
        return cls(tuple(blocks))

    @classmethod
    def from_units(cls, units: Sequence[Unit]) -> UnitIndex:
        """From explicit ``(hook, index)`` pairs; consecutive pairs of one hook share a block.

        Each unit may appear once (a repeat would be two columns with one identity)."""
        if isinstance(units, (str, bytes, dict)) or not hasattr(units, "__iter__"):
            raise NeuroprobeError(
                f"UnitIndex.from_units(units=...) must be a list of (hook_name, index) pairs; "
                f"got {type(units).__name__} {units!r:.80}."
            )
        blocks: list[UnitBlock] = []
        off = 0
        cur_hook, cur_idx = None, []
        seen: set[tuple[str, int]] = set()
        for u in units:
            hook, idx = _check_unit(u)
            if idx < 0 or (hook, idx) in seen:
                raise NeuroprobeError(
                    f"UnitIndex.from_units: unit {(hook, idx)!r} "
                    + ("has a negative index; indices are >= 0." if idx < 0 else
                       "appears twice; list each unit once.")
                )
            seen.add((hook, idx))
            if hook != cur_hook and cur_idx:
                blocks.append(UnitBlock(cur_hook, "neuron", np.asarray(cur_idx), off))
                off += len(cur_idx)
                cur_idx = []
            cur_hook = hook
            cur_idx.append(idx)
        if cur_idx:
            blocks.append(UnitBlock(cur_hook, "neuron", np.asarray(cur_idx), off))
        return cls(tuple(blocks))

    def extended(self, hook: str, kind: str, indices: np.ndarray, name: str = "") -> UnitIndex:
        """A new index with one more block appended."""
        blk = UnitBlock(hook, kind, np.asarray(indices), len(self), name)
        return UnitIndex(self.blocks + (blk,))

    # ---- sequence protocol ---------------------------------------------------------------
    def __len__(self) -> int:
        return sum(b.size for b in self.blocks)

    def __getitem__(self, j):  # type: ignore[override]
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(len(self)))]
        n = len(self)
        if isinstance(j, (bool, np.bool_)) or not isinstance(j, (int, np.integer)):
            raise NeuroprobeError(
                f"UnitIndex[...] takes a column number (int) or a slice; got "
                f"{type(j).__name__} {j!r}. Find a unit's column with .column((hook, index))."
            )
        j = int(j)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"unit column {j} out of range for {n} units")
        for b in self.blocks:
            if j < b.offset + b.size:
                return (b.label, int(b.indices[j - b.offset]))
        raise IndexError(j)  # pragma: no cover

    def __iter__(self) -> Iterator[Unit]:
        for b in self.blocks:
            lab = b.label
            for i in b.indices.tolist():
                yield (lab, i)

    def __repr__(self) -> str:
        hooks = ", ".join(f"{b.label}[{b.size}]" for b in self.blocks[:4])
        more = f", ... ({len(self.blocks)} blocks)" if len(self.blocks) > 4 else ""
        return f"UnitIndex(n={len(self)}: {hooks}{more})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UnitIndex):
            return NotImplemented
        return len(self.blocks) == len(other.blocks) and all(
            a.hook == b.hook
            and a.kind == b.kind
            and a.name == b.name
            and a.offset == b.offset
            and np.array_equal(a.indices, b.indices)
            for a, b in zip(self.blocks, other.blocks)
        )

    __hash__ = None  # type: ignore[assignment]

    # ---- views ---------------------------------------------------------------------------
    @property
    def hooks(self) -> list[str]:
        """Distinct hook labels, in column order."""
        return list(dict.fromkeys(b.label for b in self.blocks))

    @property
    def hook_ids(self) -> np.ndarray:
        """``[N]`` int array: position of each column's hook in :attr:`hooks`."""
        pos = {h: i for i, h in enumerate(self.hooks)}
        return np.concatenate(
            [np.full(b.size, pos[b.label]) for b in self.blocks] or [np.zeros(0, int)]
        )

    @property
    def layers(self) -> np.ndarray:
        """``[N]`` int array: layer of each column (-1 outside the blocks)."""
        return np.concatenate(
            [np.full(b.size, hook_layer(b.hook)) for b in self.blocks] or [np.zeros(0, int)]
        )

    @property
    def indices(self) -> np.ndarray:
        """``[N]`` int array: index of each column within its hook (or direction set)."""
        return np.concatenate([b.indices for b in self.blocks] or [np.zeros(0, int)])

    def select(
        self,
        hook: str | Sequence[str] | None = None,
        layer: int | Sequence[int] | None = None,
    ) -> np.ndarray:
        """Column numbers of the units at the given hook(s) and/or layer(s).

        ``hook`` may be glob patterns (``"blocks.*.mlp.hook_post"``).  A hook, a layer, or a
        hook-and-layer pair that matches no unit raises (an empty selection is never
        returned silently).
        """
        from fnmatch import fnmatchcase

        from neuroprobe.core.validation import check_int, check_name_list

        keep = np.ones(len(self), dtype=bool)
        if hook is not None:
            pats = check_name_list(hook, "select(hook=...)", what="hook name or pattern",
                                   allow_empty=True)
            hk = np.zeros(len(self), dtype=bool)
            for b in self.blocks:
                if any(fnmatchcase(b.label, p) or fnmatchcase(b.hook, p) for p in pats):
                    hk[b.offset : b.offset + b.size] = True
            if not hk.any():
                raise NeuroprobeError(
                    f"select(hook={hook!r}) matches no unit; hooks are: {self.hooks[:12]}"
                )
            keep &= hk
        if layer is not None:
            if isinstance(layer, (str, bytes)) or not isinstance(layer, (int, np.integer,
                                                                         Sequence, np.ndarray,
                                                                         range, Tensor)):
                raise NeuroprobeError(
                    f"select(layer=...) must be a layer number (int) or a list of them; got "
                    f"{type(layer).__name__} {layer!r}."
                )
            lays = [layer] if isinstance(layer, (int, np.integer)) else list(
                layer.tolist() if isinstance(layer, (Tensor, np.ndarray)) else layer)
            lays = [check_int(v, "select(layer=...)", minimum=-1) for v in lays]
            present = sorted(set(self.layers.tolist()))
            missing = [v for v in lays if v not in present]
            if not lays or missing:
                raise NeuroprobeError(
                    f"select(layer={layer!r}) names layer(s) {missing or '[]'} that no unit is "
                    f"in; the layers present are {present} (-1: hooks outside the blocks)."
                )
            keep &= np.isin(self.layers, lays)
        if not keep.any():
            raise NeuroprobeError(
                f"select(hook={hook!r}, layer={layer!r}) matches no unit: the hook(s) and "
                f"layer(s) do not overlap; hooks are: {self.hooks[:12]}"
            )
        return np.flatnonzero(keep)

    def column(self, unit: Unit) -> int:
        """Column number of a ``(hook, index)`` unit."""
        hook, idx = _check_unit(unit)
        for b in self.blocks:
            if b.label == hook:
                hits = np.flatnonzero(b.indices == idx)
                if hits.size:
                    return b.offset + int(hits[0])
        raise NeuroprobeError(
            f"unit {unit!r} is not in this index; hooks are: {self.hooks[:12]}"
        )

    def subset(self, columns: np.ndarray | Sequence[int] | Tensor) -> UnitIndex:
        """The index of the given columns (in the given order)."""
        cols = np.asarray(check_columns(columns, len(self), "UnitIndex.subset(columns=...)"),
                          dtype=np.int64)
        out: list[UnitBlock] = []
        off = 0
        lookup = [(b, b.offset, b.offset + b.size) for b in self.blocks]
        bi = 0
        cur: UnitBlock | None = None
        cur_idx: list[int] = []
        for c in cols.tolist():
            # find block for c (usually sequential)
            if not (lookup[bi][1] <= c < lookup[bi][2]):
                bi = next(i for i, (_, s, e) in enumerate(lookup) if s <= c < e)
            b = lookup[bi][0]
            if cur is not b and cur_idx:
                out.append(UnitBlock(cur.hook, cur.kind, np.asarray(cur_idx), off, cur.name))
                off += len(cur_idx)
                cur_idx = []
            cur = b
            cur_idx.append(int(b.indices[c - b.offset]))
        if cur_idx:
            out.append(UnitBlock(cur.hook, cur.kind, np.asarray(cur_idx), off, cur.name))
        return UnitIndex(tuple(out))

    def to_dataframe(self) -> pd.DataFrame:
        """One row per unit: ``unit`` (column), ``hook``, ``layer``, ``index``, ``kind``."""
        kinds = np.concatenate(
            [np.full(b.size, b.kind, dtype=object) for b in self.blocks]
            or [np.zeros(0, object)]
        )
        hooks = np.asarray(self.hooks, dtype=object)[self.hook_ids] if len(self) else []
        return pd.DataFrame(
            {
                "unit": np.arange(len(self)),
                "hook": hooks,
                "layer": self.layers,
                "index": self.indices,
                "kind": kinds,
            }
        )

    # ---- serialisation -------------------------------------------------------------------
    def to_state(self) -> list[dict]:
        return [
            {"hook": b.hook, "kind": b.kind, "name": b.name, "indices": b.indices.tolist()}
            for b in self.blocks
        ]

    @classmethod
    def from_state(cls, state: list[dict]) -> UnitIndex:
        ui = cls()
        for s in state:
            ui = ui.extended(s["hook"], s["kind"], np.asarray(s["indices"], dtype=np.int64),
                             s["name"])
        return ui


def check_columns(columns, size: int, name: str, *, unique: bool = True,
                  what: str = "column") -> np.ndarray:
    """Column (or row) numbers, as an int64 array, from a list of ints, an int array or
    tensor, a slice, or a boolean mask of exactly ``size`` entries.

    Refuses floats, an empty selection, repeats (unless ``unique=False``), out-of-range
    numbers and a mask of the wrong length (which would silently select the first rows).
    Arrays are checked with vectorised numpy operations (no Python loop over the rows).
    """
    from neuroprobe.core.validation import check_index_list

    whats = f"{what}s"
    if isinstance(columns, slice):
        out = np.arange(size)[columns]
        if not out.size:
            raise NeuroprobeError(f"{name}: the slice {columns!r} selects no {what} of {size}.")
        return out
    arr = None
    if isinstance(columns, Tensor):
        arr = columns.detach().cpu().numpy()
    elif isinstance(columns, np.ndarray):
        arr = columns
    elif isinstance(columns, (list, tuple)) and columns and all(
            isinstance(c, (bool, np.bool_)) for c in columns):
        arr = np.asarray(columns, dtype=bool)
    if arr is None:
        return np.asarray(check_index_list(columns, name, size=size, unique=unique, what=what),
                          dtype=np.int64)
    if arr.dtype == bool:
        if arr.ndim != 1 or arr.shape[0] != size:
            raise NeuroprobeError(
                f"{name}: a boolean mask must have one entry per {what} ({size}); got shape "
                f"{tuple(arr.shape)}."
            )
        out = np.flatnonzero(arr)
        if not out.size:
            raise NeuroprobeError(f"{name}: the boolean mask selects no {what}.")
        return out
    if arr.ndim != 1:
        raise NeuroprobeError(f"{name} must be 1-D; got shape {tuple(arr.shape)}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise NeuroprobeError(
            f"{name} must hold integer {whats}; got dtype {arr.dtype}. Cast with "
            ".long() / .astype(int) only if the values are whole numbers."
        )
    if not arr.size:
        raise NeuroprobeError(f"{name} is empty; pass at least one {what}.")
    out = arr.astype(np.int64, copy=False)
    bad = out[(out < 0) | (out >= size)]
    if bad.size:
        raise NeuroprobeError(
            f"{name} has {whats} out of range [0, {size}): {bad[:5].tolist()}"
            f"{' ...' if bad.size > 5 else ''}."
        )
    if unique:
        vals, counts = np.unique(out, return_counts=True)
        if (counts > 1).any():
            raise NeuroprobeError(
                f"{name} repeats {whats} {vals[counts > 1][:5].tolist()}; pass each once."
            )
    return out


def _check_unit(u) -> tuple[str, int]:
    if (
        not isinstance(u, (tuple, list))
        or len(u) != 2
        or not isinstance(u[0], str)
        or not isinstance(u[1], (int, np.integer))
    ):
        raise NeuroprobeError(
            f"a unit must be a (hook_name, index) pair like ('blocks.3.mlp.hook_post', 17); "
            f"got {u!r}"
        )
    return u[0], int(u[1])
