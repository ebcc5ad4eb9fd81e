"""Plots for spline codes and polytope densities (matplotlib, imported lazily).

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import torch
>>> from neuroprobe.testbeds import ReLUMLP
>>> m = ReLUMLP([2, 8, 8, 3], seed=0)
>>> fig = plot_partition_slice(m, torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]),
...                            resolution=20)
>>> fig.axes[0].get_title()
'polytope partition (codes of 16 units)'
"""

from __future__ import annotations

import numpy as np
import torch

from neuroprobe.core.errors import NeuroprobeError

__all__ = [
    "plot_density_by_layer",
    "plot_scaling_profile",
    "plot_partition_slice",
    "plot_direction_histograms",
]


def _ax(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_density_by_layer(result, ax=None):
    """Intra- and inter-class density per layer (with the inter/intra ratio and its CI),
    for the trained network and its null. ``result`` is a :class:`~neuroprobe.ClassDensity`."""
    import matplotlib.pyplot as plt

    t = result.table
    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    else:
        fig, axes = ax[0].figure, ax
    layers = list(dict.fromkeys(t["layer"]))
    xs = np.arange(len(layers))
    styles = {"trained": "-", "null": ":"}
    for net, g in t.groupby("network", sort=False):
        g = g.set_index("layer").loc[layers]
        ls = styles.get(net, "--")
        axes[0].plot(xs, g["intra"], "o" + ls, color="tab:blue", label=f"intra ({net})")
        axes[0].plot(xs, g["inter"], "s" + ls, color="tab:red", label=f"inter ({net})")
        axes[1].errorbar(xs, g["ratio"], yerr=[g["ratio"] - g["ci_low"],
                                                 g["ci_high"] - g["ratio"]],
                         fmt="o" + ls, capsize=3, label=net)
    axes[1].axhline(1.0, color="k", lw=0.8)
    short = [lab.replace(".mlp.hook_post", "").replace("hook_input", "input") for lab in layers]
    for a in axes:
        a.set_xticks(xs, short, rotation=20)
    axes[0].set_ylabel("crossings / distance")
    axes[0].set_title("polytope density")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("inter / intra (95% bootstrap CI)")
    axes[1].set_title("prediction 2: inter > intra?")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_scaling_profile(rays, ax=None, max_rays: int = 0, log: bool = False):
    """Mean crossing density along the scaling rays, with the class changes marked
    (``rays`` is a :class:`~neuroprobe.ScalingRays`)."""
    fig, ax = _ax(ax, (7, 3.8))
    for d in rays.density[:max_rays]:
        ax.plot(rays.scales, d, color="0.8", lw=0.6)
    ax.plot(rays.scales, rays.mean_density, color="k", lw=2, label="mean density")
    changes = np.concatenate(rays.class_change_scales) if rays.class_change_scales else []
    if len(changes):
        ax2 = ax.twinx()
        ax2.hist(changes, bins=rays.bin_edges, color="tab:red", alpha=0.35)
        ax2.set_ylabel("class changes", color="tab:red")
    ax.axvline(1.0, color="tab:blue", ls="--", lw=1, label="s = 1 (the activation)")
    if log:  # zero-density bins are left out of a log axis
        ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel("scale s")
    ax.set_ylabel("crossings per unit length")
    ax.set_title(f"{rays.hook}: inner/outer density {rays.inner_outer_ratio:.3g}, "
                 f"peak at s = {rays.peak_scale:.3g}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def plot_partition_slice(model, points, *, hook: str = "hook_input", inputs=None,
                         resolution: int = 300, margin: float = 0.3, ax=None):
    """The polytope partition of a 2-D plane through three activations at ``hook``.

    Each pixel is coloured by its region (spline code of every downstream pre-activation);
    boundaries (code changes between neighbouring pixels) are drawn in black and the three
    points marked.
    """
    from neuroprobe.polytope.density import downstream_codes

    p = torch.as_tensor(points, dtype=torch.float64).reshape(3, -1)
    o, u, v = p[0], p[1] - p[0], p[2] - p[0]
    if float(u.norm()) == 0 or float(v.norm()) == 0:
        raise NeuroprobeError("points must be three distinct activations spanning a plane.")
    carrier = torch.as_tensor(p[:1] if inputs is None else inputs)
    a = np.linspace(-margin, 1 + margin, resolution)
    A, B = np.meshgrid(a, a)
    h = o[None] + torch.as_tensor(A.ravel())[:, None] * u[None] + \
        torch.as_tensor(B.ravel())[:, None] * v[None]
    c = downstream_codes(model, hook, h, inputs=carrier[:1], batch_size=4096).numpy()
    _, region = np.unique(np.packbits(c, axis=1), axis=0, return_inverse=True)
    region = region.reshape(resolution, resolution)
    edge = np.zeros_like(region, dtype=bool)
    edge[1:, :] |= region[1:, :] != region[:-1, :]
    edge[:, 1:] |= region[:, 1:] != region[:, :-1]
    rng = np.random.default_rng(0)
    colours = rng.random((region.max() + 1, 3)) * 0.5 + 0.5
    img = colours[region]
    img[edge] = 0.0
    fig, ax = _ax(ax, (5, 5))
    ax.imshow(img, origin="lower", extent=(a[0], a[-1], a[0], a[-1]))
    ax.plot([0, 1, 0], [0, 0, 1], "o", color="tab:red", ms=6)
    ax.set_title(f"polytope partition (codes of {c.shape[1]} units)")
    ax.set_xlabel("towards point 2")
    ax.set_ylabel("towards point 3")
    fig.tight_layout()
    return fig


def plot_direction_histograms(overlap, directions=None, *, lower_quantile: float = 0.9,
                              bins: int = 30, max_clusters: int = 8, ncols: int = 3):
    """Per direction, the histogram of cosine similarities of the most aligned samples,
    stacked by cluster (the paper's prediction-1 figure). ``overlap`` is a
    :class:`~neuroprobe.DirectionOverlap`."""
    import matplotlib.pyplot as plt

    k = overlap.cosine.shape[1]
    dirs = list(range(min(k, 6))) if directions is None else list(directions)
    nrows = int(np.ceil(len(dirs) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 2.8 * nrows), squeeze=False)
    lab = overlap.labels
    for ax, d in zip(axes.ravel(), dirs, strict=False):
        cos = overlap.cosine[:, d]
        keep = cos >= np.quantile(cos, lower_quantile)
        cl = lab[keep]
        u, cnt = np.unique(cl[cl >= 0], return_counts=True)
        top = u[np.argsort(-cnt)][:max_clusters]
        data = [cos[keep][cl == c] for c in top] + [cos[keep][~np.isin(cl, top)]]
        names = [f"cluster {c}" for c in top] + ["other / noise"]
        ax.hist(data, bins=bins, stacked=True, label=names)
        ax.set_title(f"direction {d}")
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=6)
    for ax in axes.ravel()[len(dirs):]:
        ax.axis("off")
    fig.tight_layout()
    return fig
