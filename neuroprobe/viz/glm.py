"""Plots for the GLM: design matrix, layer-by-unit statistical map, histogram of t.

matplotlib is imported inside each function.  Each function returns the matplotlib Axes.

Examples
--------
>>> import matplotlib; matplotlib.use("Agg")
>>> import neuroprobe as npb
>>> from neuroprobe.viz.glm import plot_design_matrix
>>> d = npb.BlockDesign.from_blocks([("a", 4), ("b", 4)] * 2, baseline="b")
>>> ax = plot_design_matrix(d.matrix)
>>> [t.get_text() for t in ax.get_xticklabels()]
['a', 'constant']
"""

from __future__ import annotations

import numpy as np

from neuroprobe.core.errors import NeuroprobeError

__all__ = ["plot_design_matrix", "plot_stat_map", "plot_stat_histogram"]


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_design_matrix(matrix, ax=None, *, rescale: bool = True, cmap: str = "gray"):
    """Show a design matrix like nilearn's ``plot_design_matrix``.

    Columns are rescaled to a maximum absolute value of 1 (``rescale=True``); time runs down.
    """
    import pandas as pd

    if not isinstance(matrix, pd.DataFrame):
        matrix = pd.DataFrame(np.asarray(matrix))
    X = matrix.to_numpy(dtype=float)
    if rescale:
        X = X / np.maximum(np.abs(X).max(0), 1e-12)
    ax = _axes(ax, (max(3, 0.5 * X.shape[1] + 1.5), 6))
    ax.imshow(X, aspect="auto", interpolation="nearest", cmap=cmap)
    ax.set_xticks(range(X.shape[1]))
    ax.set_xticklabels([str(c) for c in matrix.columns], rotation=60, ha="right")
    ax.set_ylabel("time point")
    ax.set_title("design matrix")
    return ax


def _grid(values: np.ndarray, units) -> tuple[np.ndarray, list[str]]:
    """Rows = hooks (in column order), columns = index within hook; NaN where absent."""
    hooks = units.hooks
    hook_ids = units.hook_ids
    idx = units.indices
    width = int(idx.max()) + 1 if idx.size else 0
    grid = np.full((len(hooks), width), np.nan)
    grid[hook_ids, idx] = values
    return grid, hooks


def plot_stat_map(con, units=None, ax=None, *, vmax: float | None = None, cmap: str = "RdBu_r",
                  mask=None):
    """Layer-by-unit map of a contrast's statistic: the "glass brain" of a network.

    Rows are hooks (layers), columns are unit indices within the hook, colour is the t (or
    F) value.  ``mask`` (BoolTensor ``[N]``, e.g. ``con.significant()``) greys out the
    non-significant units.  ``units`` defaults to the units the GLM was fitted with; without
    any, the units are shown as one row.
    """
    stat = con.stat.detach().cpu().numpy().astype(float)
    units = units if units is not None else con.units
    if units is not None and hasattr(units, "units") and not hasattr(units, "hooks"):
        units = units.units
    if units is not None and len(units) != stat.size:
        raise NeuroprobeError(
            f"units has {len(units)} entries but the contrast has {stat.size} units."
        )
    if mask is not None:
        m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
        if m.shape != stat.shape or m.dtype != bool:
            raise NeuroprobeError(
                f"mask must be a boolean array of one entry per unit, shape {stat.shape} (e.g. "
                f"con.significant()); got {m.dtype} of shape {m.shape}. Unit indices? Build "
                "the mask with torch.zeros(N, dtype=torch.bool) and set them to True."
            )
        stat = np.where(m, stat, np.nan)
    if units is None:
        grid, rows = stat[None], ["units"]
    else:
        grid, rows = _grid(stat, units)
    if vmax is None:
        finite = np.abs(grid[np.isfinite(grid)])
        vmax = float(finite.max()) if finite.size else 1.0
    vmin = -vmax if con.stat_type == "t" else 0.0
    ax = _axes(ax, (10, max(2.0, 0.25 * len(rows) + 1.5)))
    im = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin,
                   vmax=vmax)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=7)
    ax.set_xlabel("unit index")
    ax.figure.colorbar(im, ax=ax, label=con.stat_type)
    ax.set_title(f"{con.stat_type} map")
    return ax


def plot_stat_histogram(con, ax=None, *, alpha: float = 0.05, correction: str = "bonferroni",
                        tail: str = "upper", bins: int = 100, **kwargs):
    """Histogram of a contrast's statistic with the significance threshold marked.

    The threshold is the smallest |statistic| among the units declared significant by
    ``con.significant(alpha, correction, tail=tail, **kwargs)``.
    """
    stat = con.stat.detach().cpu().numpy().astype(float)
    mask = con.significant(alpha, correction, tail=tail, **kwargs).cpu().numpy()
    ax = _axes(ax, (6, 4))
    ax.hist(stat, bins=bins, color="0.6")
    if mask.any():
        s = stat[mask]
        if tail in ("upper", "two-sided") and (s > 0).any():
            thr = s[s > 0].min()
            ax.axvline(thr, color="C3", label=f"{correction} threshold {thr:.2f}")
        if tail in ("lower", "two-sided") and (s < 0).any():
            thr = s[s < 0].max()
            ax.axvline(thr, color="C3", ls="--", label=f"threshold {thr:.2f}")
        ax.legend(fontsize=8)
    ax.set_xlabel(con.stat_type)
    ax.set_ylabel("units")
    ax.set_title(f"{int(mask.sum())} of {stat.size} significant ({correction}, alpha={alpha})")
    return ax
