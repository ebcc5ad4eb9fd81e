"""The exact eigenspectrum of a file-backed Recording, read in row blocks (issue 12).

A recording opened with ``Recording.load`` may be larger than memory. Its rows are contiguous
in the file, so the covariance is accumulated from row blocks read with positioned reads: two
reads of the file (the float64 column mean, then the centred Gram's triangle by BLAS
``dsyrk``), resident memory of one block plus the ``d x d`` covariance. The numbers are those
of the in-memory route (same float64 accumulation, blocks instead of chunks).
"""

from __future__ import annotations

import numpy as np
import torch

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.outofcore import row_blocks
from neuroprobe.core.validation import check_finite, check_positive_int

__all__ = ["file_columns", "covariance_from_row_blocks"]


def file_columns(rec, hook: str | None, name: str = "acts") -> tuple[np.ndarray | None, str | None]:
    """The columns of ``rec`` a spectrum reads (None: all) and the hook they belong to."""
    units = rec.units
    hooks = list(units.hooks)
    if hook is not None:
        cols = np.asarray(units.select(hook=hook))
        matched = units.subset(cols).hooks
        if len(matched) > 1:
            raise NeuroprobeError(
                f"hook={hook!r} matches {len(matched)} hooks of the recording "
                f"({matched[:4]}); a spectrum is per layer: name one exact hook."
            )
        return cols, matched[0]
    if len(hooks) > 1:
        raise NeuroprobeError(
            f"{name} is a Recording of {len(hooks)} hooks ({hooks[:4]}...); a spectrum "
            f"is per layer: pass hook='{hooks[0]}' (or use alpha_by_layer for all)."
        )
    return None, (hooks[0] if hooks else None)


def covariance_from_row_blocks(rec, cols: np.ndarray | None, rows: int | None
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased float64 covariance of ``rec.acts[:, cols]`` (lower triangle filled), read from
    the file in blocks of ``rows`` rows (None: 4096)."""
    from scipy.linalg.blas import dsyrk

    T, N = rec.acts.shape
    step = 4096 if rows is None else check_positive_int(rows, "chunk_size")
    sel = None if cols is None else torch.as_tensor(cols, dtype=torch.long)
    d = N if cols is None else len(cols)

    def blocks():
        for _, _, b in row_blocks(rec, step):
            b = b if sel is None else b[:, sel]
            yield (b if b.dtype in (torch.float32, torch.float64) else b.float()).numpy()

    mu = np.zeros(d)
    for b in blocks():
        check_finite(torch.from_numpy(b), "acts", axis_name="unit column")
        mu += b.sum(0, dtype=np.float64)
    mu /= T
    acc = np.zeros((d, d), order="F")
    buf = np.empty((step, d))
    for b in blocks():
        c = buf[: b.shape[0]]
        np.subtract(b, mu, out=c, dtype=np.float64)
        acc = dsyrk(1.0, c.T, beta=1.0, c=acc, trans=0, lower=0, overwrite_c=1)
    cov = acc.T
    cov /= T - 1
    return cov, mu
