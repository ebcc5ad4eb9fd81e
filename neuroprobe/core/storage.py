"""Out-of-core storage: disk-backed activation buffers and memory-mapped recording files.

Why a module of its own: the recording's bytes can outgrow memory twice -- while ``record``
writes them (the memmap path of :func:`neuroprobe.record`) and when a saved file is opened
again (:meth:`Recording.load`).  Both go through here:

* :func:`memmap_buffer` allocates a ``[T, N]`` buffer in a ``.npy`` file.  numpy has no
  bfloat16, so 16-bit float dtypes are stored as ``uint16`` and viewed back as the torch
  dtype (same bytes).  A temporary file (no ``storage_dir``) is deleted when the buffer is
  garbage collected or the process exits (:func:`weakref.finalize`); a file in a directory
  the user chose is kept.
* :func:`load_payload` opens a file written by ``Recording.save`` with ``torch.load(...,
  mmap=True)``: tensors stay on disk and pages are read on demand, and every way a file can
  be wrong (missing, empty, truncated, foreign) raises one :class:`NeuroprobeError` naming
  the file and the problem.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError

__all__: list[str] = []

_VIEW_AS_UINT16 = (torch.bfloat16,)


def check_memory_budget(budget) -> int | None:
    """``memory_budget`` as an int >= 0 (or None), else a NeuroprobeError."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise NeuroprobeError(
            f"memory_budget must be an int >= 0 (bytes) or None for half the free memory; got "
            f"{budget!r}. Use e.g. memory_budget=2 << 30 for 2 GiB, 0 to always use a memmap."
        )
    return int(budget)


def _unlink(path: str) -> None:
    try:
        os.remove(path)
    except OSError:  # already gone
        pass


def memmap_buffer(T: int, N: int, dtype: torch.dtype,
                  storage_dir: str | None) -> tuple[Tensor, str]:
    """A disk-backed ``[T, N]`` tensor of ``dtype`` and the path of its file."""
    if storage_dir is not None:
        Path(storage_dir).mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(suffix=".npy", prefix="neuroprobe-rec-", dir=storage_dir)
    os.close(fd)
    as_u16 = dtype in _VIEW_AS_UINT16
    np_dtype = np.uint16 if as_u16 else torch.empty(0, dtype=dtype).numpy().dtype
    try:
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np_dtype, shape=(T, N))
    except Exception:
        _unlink(path)
        raise
    t = torch.from_numpy(mm)
    if as_u16:
        t = t.view(dtype)
    if storage_dir is None:  # a temporary file: gone with the buffer, or at exit
        weakref.finalize(t, _unlink, path)
    return t, path


_KEYS = ("acts", "prompt_index", "position", "token_ids", "meta")


def load_payload(path: Path, fmt: str) -> dict:
    """The dict ``Recording.save`` wrote, tensors memory-mapped from ``path``."""
    where = f"Recording.load: {str(path)!r}"
    if not path.exists():
        raise NeuroprobeError(f"Recording.load: no file at {str(path)!r} (no such file).")
    if path.is_dir():
        raise NeuroprobeError(f"{where} is a directory; give the file Recording.save wrote.")
    size = path.stat().st_size
    if size == 0:
        raise NeuroprobeError(f"{where} is empty (0 bytes); the save did not complete.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # zip/pickle errors of truncated or foreign files
        kind = "truncated or corrupt" if _looks_like_zip(path) else "not a neuroprobe recording"
        raise NeuroprobeError(
            f"{where} ({size} bytes) is {kind}: torch.load failed with "
            f"{type(e).__name__}: {str(e)[:200]}. Save it again with Recording.save."
        ) from None
    if not isinstance(payload, dict) or not all(k in payload for k in _KEYS):
        got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise NeuroprobeError(
            f"{where} is not a neuroprobe recording: expected a dict with keys {list(_KEYS)}, "
            f"got {got}."
        )
    import json

    try:
        meta = json.loads(payload["meta"])
    except (TypeError, ValueError) as e:
        raise NeuroprobeError(f"{where}: its metadata is not valid JSON ({e}).") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        f = meta.get("format") if isinstance(meta, dict) else None
        raise NeuroprobeError(
            f"{where} is not a neuroprobe recording (format {f!r}, expected {fmt!r})."
        )
    if not isinstance(payload["acts"], Tensor) or payload["acts"].ndim != 2:
        raise NeuroprobeError(f"{where}: 'acts' is not a [T, N] tensor.")
    payload["meta"] = meta
    return payload


def _looks_like_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def acts_offset(path: Path, acts: Tensor) -> int | None:
    """Byte offset of ``acts``' data inside a ``torch.save`` zip file (None if not found).

    torch stores tensor data uncompressed, one zip entry per storage; the entry whose size
    and first bytes match ``acts`` is its data.
    """
    import zipfile

    if not acts.is_contiguous() or acts.storage_offset() != 0:
        return None
    nbytes = acts.untyped_storage().nbytes()
    head = bytes(acts.reshape(-1)[:64].view(torch.uint8).numpy().tobytes())
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if "/data/" not in info.filename or info.file_size != nbytes or info.compress_type:
                continue
            f.seek(info.header_offset)
            local = f.read(30)
            n_name = int.from_bytes(local[26:28], "little")
            n_extra = int.from_bytes(local[28:30], "little")
            off = info.header_offset + 30 + n_name + n_extra
            f.seek(off)
            if f.read(len(head)) == head[: len(head)]:
                return off
    return None


def read_columns(path: str, offset: int, shape: tuple[int, int], dtype: torch.dtype,
                 start: int, stop: int) -> Tensor:
    """Columns ``start:stop`` of a row-major ``[T, N]`` array at ``offset`` in ``path``,
    read with ``pread`` (page cache only: the process's resident memory grows by the block,
    not by the pages a memory-mapped column read would map)."""
    T, N = shape
    es = torch.empty(0, dtype=dtype).element_size()
    w = stop - start
    out = torch.empty((T, w), dtype=dtype)
    raw = out.view(torch.uint8).numpy().reshape(T, w * es)
    fd = os.open(path, os.O_RDONLY)
    try:
        for r in range(T):
            buf = os.pread(fd, w * es, offset + (r * N + start) * es)
            raw[r] = np.frombuffer(buf, dtype=np.uint8)
    finally:
        os.close(fd)
    return out
