"""Plots for eigenspectra, power-law fits and random projections (matplotlib, lazy import).

* :func:`plot_spectrum` -- log-log eigenspectrum with the power-law fit and its window shaded.
* :func:`plot_alpha_by_layer` -- alpha per layer with confidence intervals, ``alpha = -1`` dashed.
* :func:`plot_projection_curves` -- random-projection curves coloured by time (paper Fig. 4b).
* :func:`plot_action_vs_alpha` -- average action against alpha (paper Fig. 4d / 6c).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["plot_spectrum", "plot_alpha_by_layer", "plot_projection_curves",
           "plot_action_vs_alpha"]


def _ax(ax, figsize=(5, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_spectrum(spectrum, fit=None, *, ax=None, label=None, color=None, normalize=True,
                  shade=True):
    """Log-log plot of an eigenspectrum, with a :class:`~neuroprobe.PowerLawFit` overlaid.

    Parameters
    ----------
    spectrum : Eigenspectrum or 1-D tensor/array of eigenvalues
    fit : PowerLawFit, optional
        Drawn as a dashed line; its window is shaded (``shade=True``).
    normalize : bool
        Plot the explained-variance ratio (``Eigenspectrum`` only) instead of raw eigenvalues.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import torch, neuroprobe as npb
    >>> from neuroprobe.viz.spectrum import plot_spectrum
    >>> ev = torch.arange(1, 101.0) ** -1.0
    >>> ax = plot_spectrum(ev, npb.powerlaw_alpha(ev, n_boot=0))
    """
    ax = _ax(ax)
    scale = 1.0
    if hasattr(spectrum, "eigenvalues"):
        ev = spectrum.eigenvalues.numpy()
        if normalize and spectrum.total_variance > 0:
            scale = 1.0 / spectrum.total_variance
    else:
        ev = torch.as_tensor(spectrum).double().numpy()
    k = np.arange(1, ev.shape[0] + 1)
    keep = ev > 0
    (line,) = ax.loglog(k[keep], ev[keep] * scale, color=color, lw=1.5, label=label)
    if fit is not None:
        ax.loglog(k, fit.fit_line.numpy() * scale, ls="--", color=line.get_color(), lw=1.0)
        if shade:
            ax.axvspan(*fit.fit_range, color="0.85", alpha=0.4, lw=0)
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio" if scale != 1.0 else "eigenvalue")
    if label is not None:
        ax.legend(fontsize=7)
    return ax


def plot_alpha_by_layer(table, *, ax=None, label=None, color=None, x="layer"):
    """alpha per layer with its confidence interval; ``alpha = -1`` dashed.

    Parameters
    ----------
    table : DataFrame or list of dict
        Rows with ``layer``, ``alpha``, ``ci_low``, ``ci_high`` (e.g. from
        :func:`neuroprobe.alpha_by_layer`).
    """
    import pandas as pd

    ax = _ax(ax)
    df = pd.DataFrame(table)
    yerr = np.vstack([df["alpha"] - df["ci_low"], df["ci_high"] - df["alpha"]])
    yerr = np.where(np.isfinite(yerr), yerr, 0.0)
    ax.errorbar(df[x], df["alpha"], yerr=yerr, marker="o", ms=4, capsize=2, color=color,
                label=label)
    ax.axhline(-1.0, ls="--", color="k", lw=0.8)
    ax.set_xlabel(x)
    ax.set_ylabel(r"power-law exponent $\alpha$")
    if label is not None:
        ax.legend(fontsize=7)
    return ax


def plot_projection_curves(z, *, n_show: int = 3, ax=None, cmap="viridis", title=None):
    """Random-projection curves coloured by time (the paper's Fig. 4b).

    Parameters
    ----------
    z : Tensor ``[time, n, dim]`` or ``[time, dim]``
        Curves (``dim >= 2``); the first two (or three, in 3-D) dimensions are drawn.
    n_show : int
        How many projections to overlay.
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    t = torch.as_tensor(z).detach().double()
    if t.ndim == 2:
        t = t[:, None, :]
    T = t.shape[0]
    colors = plt.get_cmap(cmap)(np.linspace(0, 1, T - 1))
    three_d = t.shape[2] >= 3
    if ax is None:
        fig = plt.figure(figsize=(4, 4))
        ax = fig.add_subplot(111, projection="3d" if three_d else None)
    three_d = three_d and getattr(ax, "name", "") == "3d"
    for j in range(min(n_show, t.shape[1])):
        c = t[:, j, :].numpy()
        if three_d:
            from mpl_toolkits.mplot3d.art3d import Line3DCollection

            seg = np.stack([c[:-1, :3], c[1:, :3]], 1)
            ax.add_collection(Line3DCollection(seg, colors=colors, lw=1.0))
        else:
            seg = np.stack([c[:-1, :2], c[1:, :2]], 1)
            ax.add_collection(LineCollection(seg, colors=colors, lw=1.0))
    sub = t[:, :n_show, :].reshape(-1, t.shape[2]).numpy()
    ax.set_xlim(sub[:, 0].min(), sub[:, 0].max())
    ax.set_ylim(sub[:, 1].min(), sub[:, 1].max())
    if three_d:
        ax.set_zlim(sub[:, 2].min(), sub[:, 2].max())
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def plot_action_vs_alpha(alphas: Sequence[float], actions: Sequence[float], *, labels=None,
                         ax=None, color=None, logy=True, label=None):
    """Average action against the power-law exponent (dashed line at ``alpha = -1``)."""
    ax = _ax(ax)
    ax.scatter(alphas, actions, color=color, s=18, label=label)
    if labels is not None:
        for a, b, s in zip(alphas, actions, labels, strict=True):
            ax.annotate(str(s), (a, b), fontsize=6)
    ax.axvline(-1.0, ls="--", color="k", lw=0.8)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(r"power-law exponent $\alpha$")
    ax.set_ylabel("average action")
    if label is not None:
        ax.legend(fontsize=7)
    return ax
