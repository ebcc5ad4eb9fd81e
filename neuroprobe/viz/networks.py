"""Figures for functional networks: design matrix, t-maps, overlap, Venn, confusion, depth.

Every function draws into a matplotlib ``Axes`` (or makes a figure) and returns the figure;
matplotlib is imported lazily.  :func:`save_figures` writes the standard set for a
:class:`~neuroprobe.networks.experiment.FunctionalNetworksResult`.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import torch
>>> from neuroprobe.networks.sets import FunctionalNetwork
>>> a = FunctionalNetwork(torch.tensor([1, 1, 0, 0]).bool(), task="a")
>>> b = FunctionalNetwork(torch.tensor([0, 1, 1, 0]).bool(), task="b")
>>> fig = plot_venn([a, b])
>>> len(fig.axes)
1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuroprobe.core.errors import NeuroprobeError

__all__ = [
    "plot_design",
    "plot_tmaps",
    "plot_overlap",
    "plot_venn",
    "plot_confusion",
    "plot_network_by_layer",
    "save_figures",
]


def _axes(ax, figsize=(6, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax.figure, ax


def plot_design(design: pd.DataFrame, ax=None, title: str = "design matrix"):
    """The design matrix as an image (time down, regressors across), nilearn style."""
    fig, ax = _axes(ax, (3.2, 5))
    X = np.asarray(design, dtype=float)
    rng = np.abs(X).max(0)
    rng[rng == 0] = 1
    ax.imshow(X / rng, aspect="auto", cmap="gray", interpolation="nearest")
    ax.set_xticks(range(X.shape[1]))
    ax.set_xticklabels(list(design.columns), rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("time point (token)")
    ax.set_title(title, fontsize=9)
    return fig


def _hook_grid(values: np.ndarray, units) -> tuple[np.ndarray, list[str]]:
    """Arrange one value per unit as rows (hook, layer) x columns (index)."""
    layers = units.layers
    idx = units.indices
    hooks = units.hooks
    hid = units.hook_ids
    kinds = [__import__("re").sub(r"blocks\.\d+\.", "", h) for h in hooks]
    order = sorted(range(len(hooks)), key=lambda i: (kinds[i], layers[hid == i][0]
                                                     if (hid == i).any() else 0))
    width = int(idx.max()) + 1 if idx.size else 1
    grid = np.full((len(hooks), width), np.nan)
    for row, h in enumerate(order):
        sel = hid == h
        grid[row, idx[sel]] = values[sel]
    labels = [f"{kinds[h]} L{int(layers[hid == h][0])}" for h in order]
    return grid, labels


def plot_tmaps(tmaps: np.ndarray, units, tasks: Sequence[str], clip: float | None = None):
    """t-map per task: rows = (hook kind, layer), columns = unit index within the hook."""
    import matplotlib.pyplot as plt

    tmaps = np.asarray(tmaps)
    if tmaps.ndim != 2 or tmaps.shape[0] != len(tasks) or tmaps.shape[1] != len(units):
        raise NeuroprobeError(
            f"tmaps must be [n_tasks={len(tasks)}, n_units={len(units)}]; got {tmaps.shape}"
        )
    c = clip if clip is not None else float(np.nanpercentile(np.abs(tmaps), 99)) or 1.0
    fig, axs = plt.subplots(1, len(tasks), figsize=(3.0 * len(tasks), 4.2),
                            constrained_layout=True, squeeze=False)
    im = None
    for k, (ax, t) in enumerate(zip(axs[0], tasks, strict=True)):
        grid, labels = _hook_grid(tmaps[k], units)
        im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-c, vmax=c,
                       interpolation="nearest")
        ax.set_title(t.replace("_", " "), fontsize=9)
        ax.set_xlabel("unit index", fontsize=8)
        step = max(1, len(labels) // 12)
        ax.set_yticks(range(0, len(labels), step))
        ax.set_yticklabels(labels[::step] if k == 0 else [], fontsize=6)
    fig.colorbar(im, ax=axs[0].tolist(), shrink=0.8, label="t (task - control)")
    return fig


def plot_overlap(om, ax=None, title: str | None = None):
    """Heatmap of an :class:`~neuroprobe.networks.sets.OverlapMatrix` (networks ordered by task)."""
    fig, ax = _axes(ax, (6, 5.2))
    im = ax.imshow(om.values, vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    k = len(om.labels)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(om.labels, rotation=90, fontsize=5)
    ax.set_yticklabels(om.labels, fontsize=5)
    fig.colorbar(im, ax=ax, label=om.metric)
    ax.set_title(title or f"{om.metric}: within task {om.within_task_mean:.2f}, across "
                 f"{om.across_task_mean:.2f}", fontsize=9)
    return fig


def plot_venn(networks: Sequence[Any], ax=None, labels: Sequence[str] | None = None):
    """2- or 3-set Venn diagram of network sizes and overlaps (``matplotlib_venn``)."""
    from matplotlib_venn import venn2, venn3

    nets = list(networks)
    if len(nets) not in (2, 3):
        raise NeuroprobeError(f"plot_venn draws 2 or 3 networks; got {len(nets)}")
    sets = [set(np.flatnonzero(np.asarray(getattr(n, "mask", n))).tolist()) for n in nets]
    names = list(labels) if labels is not None else [
        str(getattr(n, "task", None) or getattr(n, "name", f"set {i}")).replace("_", " ")
        for i, n in enumerate(nets)]
    fig, ax = _axes(ax, (5, 4.5))
    (venn2 if len(nets) == 2 else venn3)(sets, set_labels=names, ax=ax)
    ax.set_title("units in each network", fontsize=9)
    return fig


def plot_confusion(confusion: Mapping | pd.DataFrame, ax=None, title: str = "task prediction"):
    """Confusion matrix (rows true task, columns predicted), counts and row fractions."""
    if isinstance(confusion, pd.DataFrame):
        df = confusion
    else:
        df = pd.DataFrame(confusion["counts"], index=confusion["rows_true"],
                          columns=confusion["columns_predicted"])
    fig, ax = _axes(ax, (5.2, 4.4))
    M = df.to_numpy(dtype=float)
    frac = M / np.maximum(M.sum(1, keepdims=True), 1)
    ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            ax.text(j, i, f"{int(M[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(M.shape[1]))
    ax.set_yticks(range(M.shape[0]))
    ax.set_xticklabels([str(c).replace("_", " ") for c in df.columns], rotation=45,
                       ha="right", fontsize=8)
    ax.set_yticklabels([str(c).replace("_", " ") for c in df.index], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return fig


def plot_network_by_layer(networks: Mapping[str, Any]):  # noqa: D401
    """Fraction of each hook kind's units in each task's network, by layer (one panel per
    hook kind): where in depth the networks live."""
    import matplotlib.pyplot as plt

    frames = {t: n.by_layer() for t, n in networks.items()}
    kinds = list(dict.fromkeys(k for f in frames.values() for k in f["hook"]))
    fig, axs = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.4),
                            constrained_layout=True, squeeze=False, sharey=True)
    for ax, kind in zip(axs[0], kinds, strict=True):
        for t, f in frames.items():
            g = f[f["hook"] == kind]
            ax.plot(g["layer"], g["fraction"], marker="o", ms=2.5, label=t.replace("_", " "))
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("layer")
    axs[0][0].set_ylabel("fraction of units in template")
    axs[0][-1].legend(fontsize=7)
    return fig


def save_figures(result, out_dir: str | Path, dpi: int = 110) -> dict[str, Path]:
    """Write the standard figures of a functional-network result as PNGs; returns paths."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def save(name: str, fig) -> None:
        p = out / f"{name}.png"
        fig.savefig(p, dpi=dpi)
        plt.close(fig)
        paths[name] = p

    t0 = result.tasks[0]
    save("design_matrix", plot_design(result.design, title=f"design: {t0}, run 0"))
    save("tmaps", plot_tmaps(result.tmaps, result.units, result.tasks))
    save("overlap", plot_overlap(result.overlap))
    save("overlap_specific", plot_overlap(result.specific_overlap, title=(
        f"task-specific contrast: within {result.specific_overlap.within_task_mean:.2f}, "
        f"across {result.specific_overlap.across_task_mean:.2f}")))
    venn_tasks = list(result.tasks[:3])
    save("venn", plot_venn([result.templates[t] for t in venn_tasks]))
    save("confusion", plot_confusion(result.metrics.confusion,
                                     title="held-out runs (all splits)"))
    if result.metrics.prompts_confusion.to_numpy().sum():
        save("confusion_prompts", plot_confusion(result.metrics.prompts_confusion,
                                                 title="set-B prompts vs set-A templates"))
    save("network_by_layer", plot_network_by_layer(result.templates))
    if any(n.size for n in result.specific_templates.values()):
        fig = plot_network_by_layer(result.specific_templates)
        fig.suptitle("task-specific templates (task - other tasks)", fontsize=9)
        save("network_by_layer_specific", fig)
    return paths
