"""Reading a file-backed :class:`~neuroprobe.Recording` in blocks that fit a memory budget.

A recording opened with ``Recording.load`` keeps ``acts`` on disk, memory-mapped. Slicing the
map would make every touched page resident (a column block touches all rows), so analyses
that must bound their peak memory read the file with positioned reads instead: row blocks
are one contiguous ``pread`` each, column blocks one ``pread`` per row. The page cache keeps
what the kernel wants; the process's resident memory grows by one block only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from neuroprobe.core.storage import read_columns

__all__ = ["file_backing", "read_rows", "row_blocks", "column_blocks", "rows_per_block",
           "columns_per_block"]


def file_backing(source) -> tuple[str, int] | None:
    """``(path, byte offset of acts)`` when ``source`` is a Recording whose ``acts`` live in a
    file (opened with ``Recording.load``), else None."""
    off = getattr(source, "_file_acts", None)
    path = getattr(source, "storage", None)
    if off is None or not path:
        return None
    return str(path), int(off)


def read_rows(path: str, offset: int, shape: tuple[int, int], dtype: torch.dtype,
              start: int, stop: int) -> Float[Tensor, "rows unit"]:
    """Rows ``start:stop`` of a row-major ``[T, N]`` array at ``offset`` in ``path`` (one
    positioned read: the rows are contiguous in the file)."""
    T, N = shape
    es = torch.empty(0, dtype=dtype).element_size()
    n = stop - start
    out = torch.empty((n, N), dtype=dtype)
    raw = out.view(torch.uint8).numpy().reshape(-1)
    fd = os.open(path, os.O_RDONLY)
    try:
        got, want, pos = 0, n * N * es, offset + start * N * es
        while got < want:  # pread may return fewer bytes than asked for
            buf = os.pread(fd, want - got, pos + got)
            if not buf:
                raise OSError(f"{path}: unexpected end of file at byte {pos + got}")
            raw[got : got + len(buf)] = np.frombuffer(buf, dtype=np.uint8)
            got += len(buf)
    finally:
        os.close(fd)
    return out


def rows_per_block(n_units: int, bytes_per_value: int, budget: int) -> int:
    """Rows of ``n_units`` values that fit ``budget`` bytes (at least 1)."""
    return max(1, int(budget) // max(1, n_units * bytes_per_value))


def columns_per_block(n_time: int, bytes_per_value: int, budget: int) -> int:
    """Columns of ``n_time`` values that fit ``budget`` bytes (at least 1)."""
    return max(1, int(budget) // max(1, n_time * bytes_per_value))


def row_blocks(rec, rows: int) -> Iterator[tuple[int, int, Tensor]]:
    """``(start, stop, acts[start:stop])`` over the recording, ``rows`` rows at a time; read
    from the file for a file-backed recording, sliced (no copy) otherwise."""
    T, N = rec.acts.shape
    backing = file_backing(rec)
    for r0 in range(0, T, rows):
        r1 = min(T, r0 + rows)
        if backing is None:
            yield r0, r1, rec.acts[r0:r1]
        else:
            yield r0, r1, read_rows(backing[0], backing[1], (T, N), rec.acts.dtype, r0, r1)


def column_blocks(rec, columns: int) -> Iterator[tuple[int, int, Tensor]]:
    """``(start, stop, acts[:, start:stop])`` over the recording, ``columns`` at a time, each a
    contiguous copy (read from the file for a file-backed recording)."""
    T, N = rec.acts.shape
    backing = file_backing(rec)
    for c0 in range(0, N, columns):
        c1 = min(N, c0 + columns)
        if backing is None:
            yield c0, c1, rec.acts[:, c0:c1].contiguous()
        else:
            yield c0, c1, read_columns(backing[0], backing[1], (T, N), rec.acts.dtype, c0, c1)
