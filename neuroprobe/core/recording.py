"""The Recording: every chosen unit's activation for every recorded token, as a time series."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.storage import acts_offset, load_payload, read_columns
from neuroprobe.core.units import UnitIndex, check_columns
from neuroprobe.core.validation import check_int, check_writable_path

__all__ = ["Recording"]

_FORMAT = "neuroprobe.Recording/1"


@dataclass(frozen=True, eq=False)
class Recording:
    """Activations of units over time: one row per recorded token, prompts in order.

    Attributes
    ----------
    acts : Tensor ``[T, N]``
        Row ``t`` is time point ``t``; column ``j`` is unit ``units[j]``.
    units : UnitIndex
        Column index: ``units[j]`` is a ``(hook_name, index)`` pair.
    prompt_index, position : LongTensor ``[T]``
        Which prompt each row comes from, and its token position in that prompt.
    token_ids : LongTensor ``[T]`` or None
        The token at each row (None for models whose inputs are not tokens).
    tokens : list of str or None
        The token strings at each row (None without a tokenizer).
    prompt_labels : list or None
        One label per prompt (e.g. ``"task"``/``"control"``), carried to every row by
        :attr:`labels`.
    n_prompts : int
        Number of prompts recorded (some may contribute no rows, e.g. ``positions`` slices).
    source : str
        What was recorded (model name and mode), for provenance.
    storage : str or None
        Path of the memory-mapped file when the recording did not fit the memory budget.

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> rec = npb.Recording(
    ...     acts=torch.arange(6.0).reshape(3, 2),
    ...     units=npb.UnitIndex.from_hooks({"blocks.0.hook_resid_post": 2}),
    ...     prompt_index=torch.tensor([0, 0, 1]), position=torch.tensor([0, 1, 0]),
    ...     prompt_labels=["task", "control"], n_prompts=2)
    >>> rec
    Recording(T=3, N=2, prompts=2, hooks=1)
    >>> rec.labels.tolist()
    ['task', 'task', 'control']
    """

    acts: Float[Tensor, "time unit"]
    units: UnitIndex
    prompt_index: Int[Tensor, " time"]
    position: Int[Tensor, " time"]
    token_ids: Int[Tensor, " time"] | None = None
    tokens: list | None = None
    prompt_labels: list | None = None
    n_prompts: int = 0
    source: str = ""
    storage: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.units, UnitIndex):
            raise NeuroprobeError(
                f"Recording.units must be a UnitIndex; got {type(self.units).__name__}. Build "
                "one with npb.UnitIndex.from_hooks({hook: width}) or .from_units([...])."
            )
        if not isinstance(self.acts, Tensor):
            raise NeuroprobeError(
                f"Recording.acts must be a torch.Tensor [T, N]; got {type(self.acts).__name__}. "
                "Convert it with torch.as_tensor(...)."
            )
        if not self.acts.is_floating_point():
            raise NeuroprobeError(
                f"Recording.acts must be floating point; got dtype {self.acts.dtype}. Cast "
                "it with .float()."
            )
        T = self.acts.shape[0]
        if self.acts.ndim != 2 or self.acts.shape[1] != len(self.units):
            raise NeuroprobeError(
                f"Recording.acts must be [T, N] with N = len(units) = {len(self.units)}; "
                f"got shape {tuple(self.acts.shape)}."
            )
        for name in ("prompt_index", "position", "token_ids"):
            v = getattr(self, name)
            if v is None and name == "token_ids":
                continue
            if not isinstance(v, Tensor):
                raise NeuroprobeError(
                    f"Recording.{name} must be a LongTensor of shape ({T},); got "
                    f"{type(v).__name__}. Convert it with torch.as_tensor(..., dtype=torch.long)."
                )
            if v.is_floating_point() or v.is_complex() or v.dtype == torch.bool:
                raise NeuroprobeError(
                    f"Recording.{name} must hold integers (a LongTensor); got dtype {v.dtype}."
                )
            if v.shape != (T,):
                raise NeuroprobeError(
                    f"Recording.{name} must have shape ({T},); got {tuple(v.shape)}."
                )
            if T and int(v.min()) < 0:
                raise NeuroprobeError(
                    f"Recording.{name} has negative entries (min {int(v.min())}); they must be "
                    ">= 0."
                )
        for name in ("tokens", "prompt_labels"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, (str, bytes, dict)) or not hasattr(v, "__len__")):
                raise NeuroprobeError(
                    f"Recording.{name} must be a list (or None); got {type(v).__name__} {v!r}."
                )
        if self.tokens is not None and len(self.tokens) != T:
            raise NeuroprobeError(f"Recording.tokens must have {T} entries; got {len(self.tokens)}")
        check_int(self.n_prompts, "Recording.n_prompts", minimum=0)
        if not self.n_prompts and T:
            object.__setattr__(self, "n_prompts", int(self.prompt_index.max()) + 1)
        if T and int(self.prompt_index.max()) >= self.n_prompts:
            raise NeuroprobeError(
                f"Recording.prompt_index has {int(self.prompt_index.max())}, but n_prompts is "
                f"{self.n_prompts}; prompt indices must lie in [0, n_prompts)."
            )
        if self.prompt_labels is not None and len(self.prompt_labels) != self.n_prompts:
            raise NeuroprobeError(
                f"prompt_labels has {len(self.prompt_labels)} entries for {self.n_prompts} "
                "prompts; give one label per prompt."
            )

    # ---- shape and metadata ----------------------------------------------------------------
    @property
    def n_time(self) -> int:
        return int(self.acts.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.acts.shape[1])

    @property
    def labels(self) -> np.ndarray | None:
        """Per-row labels (the prompt's label at every token), or None."""
        if self.prompt_labels is None:
            return None
        return np.asarray(self.prompt_labels, dtype=object)[self.prompt_index.numpy()]

    def metadata(self) -> pd.DataFrame:
        """One row per time point: prompt_index, position, token_id, token, label."""
        df = pd.DataFrame(
            {"prompt_index": self.prompt_index.numpy(), "position": self.position.numpy()}
        )
        if self.token_ids is not None:
            df["token_id"] = self.token_ids.numpy()
        if self.tokens is not None:
            df["token"] = self.tokens
        if self.prompt_labels is not None:
            df["label"] = self.labels
        return df

    # ---- selection ---------------------------------------------------------------------------
    def select(
        self,
        hook: str | Sequence[str] | None = None,
        layer: int | Sequence[int] | None = None,
    ) -> Recording:
        """The recording restricted to units at ``hook`` (names or globs) and/or ``layer``."""
        cols = self.units.select(hook=hook, layer=layer)
        return self.select_units(cols)

    def select_units(self, columns) -> Recording:
        """The recording restricted to the given columns (ints or a boolean mask of length N),
        in that order; each column at most once."""
        cols = np.asarray(check_columns(columns, self.n_units, "select_units(columns=...)"),
                          dtype=np.int64)
        return replace(
            self, acts=self.acts[:, torch.as_tensor(cols, dtype=torch.long)],
            units=self.units.subset(cols), storage=None,
        )

    def select_time(self, rows) -> Recording:
        """The recording restricted to the given rows (ints, a slice, or a boolean mask of length
        T), in that order; each row at most once."""
        r = torch.as_tensor(check_columns(rows, self.n_time, "select_time(rows=...)",
                                          what="row"), dtype=torch.long)
        return replace(
            self,
            acts=self.acts[r],
            prompt_index=self.prompt_index[r],
            position=self.position[r],
            token_ids=None if self.token_ids is None else self.token_ids[r],
            tokens=None if self.tokens is None else [self.tokens[i] for i in r.tolist()],
            storage=None,
        )

    @staticmethod
    def concat(recordings: Sequence[Recording]) -> Recording:
        """Join recordings over time (same units); prompt indices are renumbered."""
        if isinstance(recordings, Recording) or not isinstance(recordings, Sequence) \
                or isinstance(recordings, str):
            raise NeuroprobeError(
                f"Recording.concat takes a list of recordings; got {type(recordings).__name__}."
            )
        if not recordings:
            raise NeuroprobeError("Recording.concat needs at least one recording.")
        bad = [i for i, r in enumerate(recordings) if not isinstance(r, Recording)]
        if bad:
            raise NeuroprobeError(
                f"Recording.concat: entry {bad[0]} is a {type(recordings[bad[0]]).__name__}, "
                "not a Recording."
            )
        first = recordings[0]
        for i, r in enumerate(recordings[1:], 1):
            if r.units != first.units:
                raise NeuroprobeError(
                    f"Recording.concat: recording {i} has different units ({r.units}) from "
                    f"recording 0 ({first.units}); record them with the same hooks."
                )
        offs = np.cumsum([0] + [r.n_prompts for r in recordings[:-1]])
        has_ids = all(r.token_ids is not None for r in recordings)
        has_tok = all(r.tokens is not None for r in recordings)
        has_lab = all(r.prompt_labels is not None for r in recordings)
        return Recording(
            acts=torch.cat([r.acts for r in recordings]),
            units=first.units,
            prompt_index=torch.cat([r.prompt_index + int(o) for r, o in zip(recordings, offs)]),
            position=torch.cat([r.position for r in recordings]),
            token_ids=torch.cat([r.token_ids for r in recordings]) if has_ids else None,
            tokens=sum((r.tokens for r in recordings), []) if has_tok else None,
            prompt_labels=sum((list(r.prompt_labels) for r in recordings), [])
            if has_lab else None,
            n_prompts=sum(r.n_prompts for r in recordings),
            source=first.source,
        )

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the recording to one file (``torch.save`` of plain tensors and JSON metadata).

        Everything round-trips through :meth:`load`: activations (dtype kept), units,
        metadata, tokens and labels.
        """
        path = check_writable_path(path, "Recording.save(path=...)")
        meta = {
            "format": _FORMAT,
            "units": self.units.to_state(),
            "tokens": self.tokens,
            "prompt_labels": self.prompt_labels,
            "n_prompts": self.n_prompts,
            "source": self.source,
        }
        try:
            meta_json = json.dumps(meta)
        except TypeError as e:
            raise NeuroprobeError(
                f"Recording.save: labels must be JSON-serialisable (str, int, float); {e}"
            ) from None
        payload = {
            "acts": self.acts.contiguous(),
            "prompt_index": self.prompt_index,
            "position": self.position,
            "token_ids": self.token_ids,
            "meta": meta_json,
        }
        try:
            torch.save(payload, path)
        except (OSError, RuntimeError) as e:
            raise NeuroprobeError(
                f"Recording.save(path={str(path)!r}) could not write the file ({e}); pass a "
                "writable file path."
            ) from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        """Open a recording written by :meth:`save`, memory-mapped (nothing is read yet).

        ``acts`` stays on disk: pages are read when used, so a recording larger than memory
        can be reopened and read in column blocks.  A missing, empty, truncated or foreign
        file raises :class:`NeuroprobeError` naming the file and the problem.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise NeuroprobeError(
                f"Recording.load(path=...) must be a path (str or Path); got "
                f"{type(path).__name__}."
            )
        path = Path(path)
        payload = load_payload(path, _FORMAT)
        meta = payload["meta"]
        try:
            rec = cls(
                acts=payload["acts"],
                units=UnitIndex.from_state(meta["units"]),
                prompt_index=payload["prompt_index"],
                position=payload["position"],
                token_ids=payload["token_ids"],
                tokens=meta["tokens"],
                prompt_labels=meta["prompt_labels"],
                n_prompts=meta["n_prompts"],
                source=meta["source"],
                storage=str(path),
            )
        except (KeyError, TypeError, ValueError, NeuroprobeError) as e:
            raise NeuroprobeError(
                f"Recording.load: {str(path)!r} is inconsistent: {type(e).__name__}: {e}"
            ) from None
        object.__setattr__(rec, "_file_acts", acts_offset(path, rec.acts))
        return rec

    def column_block(self, start: int, stop: int) -> Float[Tensor, "time block"]:
        """A copy of columns ``start:stop`` of ``acts`` (all time points).

        For a recording opened with :meth:`load`, the block is read from the file with
        positioned reads, so resident memory grows by the block only (a slice of the
        memory-mapped ``acts`` would map every page it touches: all rows).

        Examples
        --------
        >>> import torch, neuroprobe as npb
        >>> rec = npb.Recording(acts=torch.arange(6.0).reshape(2, 3),
        ...                     units=npb.UnitIndex.from_hooks({"h": 3}),
        ...                     prompt_index=torch.tensor([0, 0]), position=torch.arange(2))
        >>> rec.column_block(1, 3).tolist()
        [[1.0, 2.0], [4.0, 5.0]]
        """
        start = check_int(start, "column_block(start=...)")
        stop = check_int(stop, "column_block(stop=...)")
        if not (0 <= start <= stop <= self.n_units):
            raise NeuroprobeError(
                f"column_block(start={start}, stop={stop}) must satisfy 0 <= start <= stop <= "
                f"N={self.n_units}."
            )
        off = getattr(self, "_file_acts", None)
        if off is None:
            return self.acts[:, start:stop].clone()
        return read_columns(self.storage, off, tuple(self.acts.shape), self.acts.dtype,
                            start, stop)

    # ---- display -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"Recording(T={self.n_time}, N={self.n_units}, prompts={self.n_prompts}, "
            f"hooks={len(self.units.hooks)})"
        )

    def _repr_html_(self) -> str:
        hooks = self.units.hooks
        shown = ", ".join(html.escape(h) for h in hooks[:6]) + (" ..." if len(hooks) > 6 else "")
        mb = self.acts.element_size() * self.acts.nelement() / 2**20
        rows = [
            ("time points (tokens)", self.n_time),
            ("units", self.n_units),
            ("prompts", self.n_prompts),
            ("hooks", f"{len(hooks)}: {shown}"),
            ("dtype / size", f"{str(self.acts.dtype).replace('torch.', '')} / {mb:.1f} MiB"),
            ("source", html.escape(self.source)),
        ]
        if self.storage:
            rows.append(("memory-mapped at", html.escape(self.storage)))
        if self.tokens is not None and self.n_time:
            preview = "".join(self.tokens[: min(40, self.n_time)])
            rows.append(("first tokens", html.escape(preview)))
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>"
                       for k, v in rows)
        return f"<div><b>neuroprobe.Recording</b><table>{body}</table></div>"
