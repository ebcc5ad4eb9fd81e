"""Figures and an HTML fragment for localizers and ablation.

Every function draws into a matplotlib ``Axes`` (or makes a figure) and returns the figure;
matplotlib is imported lazily.  :func:`dissociation_html` returns an HTML fragment (a
heatmap image and the tables) for the functional-networks report.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import numpy as np
>>> from neuroprobe.networks.ablation import Dissociation
>>> d = Dissociation(("lang", "md"), ("sentences", "arithmetic"), np.array([[1.0, .2], [.1, .5]]),
...                  np.zeros((2, 2)), np.ones(2), "mean")
>>> fig = plot_dissociation(d)
>>> len(fig.axes)
2
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

__all__ = ["plot_dissociation", "plot_causal_effect", "plot_localizer_layers",
           "dissociation_html"]


def _axes(ax, figsize=(5, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax.figure, ax


def plot_dissociation(d, ax=None, title: str | None = None):
    """Heatmap of ``d.delta_ce``: networks (rows) ablated, conditions (columns) measured."""
    fig, ax = _axes(ax, (1.2 + 1.1 * len(d.conditions), 1.0 + 0.7 * len(d.networks)))
    M = np.asarray(d.delta_ce, dtype=float)
    vmax = float(np.nanmax(np.abs(M))) or 1.0
    im = ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(d.conditions)))
    ax.set_xticklabels(d.conditions, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(d.networks)))
    ax.set_yticklabels(d.networks, fontsize=8)
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            ax.text(j, i, f"{M[i, j]:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(M[i, j]) > 0.6 * vmax else "black")
    ax.set_xlabel("held-out texts of condition")
    ax.set_ylabel("network ablated")
    ax.set_title(title or f"dissociation: dCE (nats), {d.mode}-ablation", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def plot_causal_effect(e, ax=None, title: str | None = None):
    """Histograms of the random-set nulls with the network's effect (and its CI) marked."""
    fig, ax = _axes(ax, (5, 3.2))
    allv = np.concatenate([e.null_delta_ce, e.variance_null_delta_ce, [e.delta_ce]])
    bins = np.linspace(float(allv.min()), float(allv.max()), 30)
    ax.hist(e.null_delta_ce, bins=bins, alpha=0.6, label="layer-matched random")
    if e.variance_null_delta_ce.size:
        ax.hist(e.variance_null_delta_ce, bins=bins, alpha=0.5, label="variance-matched random")
    ax.axvline(e.delta_ce, color="k", lw=2, label=f"{e.network} ({e.size} units)")
    ax.axvspan(e.ci_low, e.ci_high, color="k", alpha=0.15)
    ax.axvline(e.null_p95, color="C0", ls="--", lw=1, label="layer-matched p95")
    ax.set_xlabel(f"dCE (nats), {e.mode}-ablation")
    ax.set_ylabel("random sets")
    ax.legend(fontsize=7)
    ax.set_title(title or f"causal effect: percentile {e.percentile:.0f}", fontsize=9)
    return fig


def plot_localizer_layers(network, ax=None, title: str | None = None):
    """Units of a localized network per layer (bars), by hook kind."""
    fig, ax = _axes(ax, (5, 3))
    df = network.by_layer()
    ax.bar(df["layer"], df["n_units"], color="C3")
    ax.set_xlabel("layer")
    ax.set_ylabel("units in network")
    ax.set_title(title or f"{network.name}: {network.size} units", fontsize=9)
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def dissociation_html(d, causal=None, title: str = "Causal tests: ablation") -> str:
    """An HTML fragment (heading, heatmap, table; optional causal-effect summaries).

    Parameters
    ----------
    d : Dissociation
    causal : sequence of CausalEffect, optional
    title : str

    Returns
    -------
    str
    """
    import matplotlib.pyplot as plt

    fig = plot_dissociation(d)
    img = _png(fig)
    plt.close(fig)
    parts = [f"<section class='neuroprobe-ablation'><h2>{html.escape(title)}</h2>",
             f"<img alt='dissociation heatmap' src='data:image/png;base64,{img}'/>",
             d.to_dataframe().to_html(index=False, float_format=lambda x: f"{x:.4f}")]
    if d.networks and len(d.networks) == len(d.conditions):
        parts.append(f"<p>diagonal wins: {d.diagonal_wins} of {len(d.networks)} (row), "
                     f"{d.diagonal_wins_by_condition} (column); diagonal mean dCE "
                     f"{d.diagonal_mean:.4f} vs off-diagonal {d.off_diagonal_mean:.4f}.</p>")
    for e in causal or ():
        parts.append(f"<p>{html.escape(repr(e))}</p>")
    parts.append("</section>")
    return "\n".join(parts)
