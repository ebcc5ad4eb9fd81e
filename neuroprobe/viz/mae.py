"""Self-contained HTML views of MAEs, max-activating examples, token importance and local
search tables: tokens coloured by activation, inline CSS only (no scripts, no network), so
they render offline in Jupyter and in a saved ``.html`` file.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

__all__ = ["tokens_html", "mae_html", "examples_html", "importance_html", "search_html",
           "search_page"]

_STYLE = (
    "font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; "
    "line-height: 1.9;"
)


def _colour(v: float, vmax: float) -> str:
    """Red for positive, blue for negative, white for 0 (alpha scaled by |v| / vmax)."""
    if vmax <= 0 or not math.isfinite(v):
        return "rgba(0,0,0,0)"
    a = max(-1.0, min(1.0, v / vmax))
    if a >= 0:
        return f"rgba(220,40,40,{a:.3f})"
    return f"rgba(40,90,220,{-a:.3f})"


def tokens_html(tokens: Sequence[str], values: Sequence[float], *, anchor: int | None = None,
                vmax: float | None = None) -> str:
    """An inline HTML line of tokens, each coloured by its value (hover shows the value).

    Examples
    --------
    >>> s = tokens_html(["a", " b"], [0.0, 1.0], anchor=1)
    >>> s.count("<span "), "1.000" in s
    (3, True)
    """
    vals = [float(v) for v in values]
    finite = [abs(v) for v in vals if math.isfinite(v)]
    vmax = float(vmax) if vmax is not None else (max(finite) if finite else 1.0)
    parts = []
    for i, (t, v) in enumerate(zip(tokens, vals, strict=False)):
        border = "border-bottom: 3px solid #111;" if i == anchor else ""
        shown = html.escape(t).replace(" ", "&nbsp;").replace("\n", "&#9166;") or "&#8203;"
        parts.append(
            f'<span title="{html.escape(repr(t))}: {v:.3f}" style="background:'
            f'{_colour(v, vmax)}; padding: 1px 0; {border}">{shown}</span>'
        )
    return f'<span style="{_STYLE}">' + "".join(parts) + "</span>"


def mae_html(mae) -> str:
    """HTML card of an :class:`~neuroprobe.mae.prune.MAE`: original text and MAE, coloured."""
    vmax = max([abs(mae.original_activation)] + [abs(v) for v in mae.activations
                                                  if math.isfinite(v)] + [1e-12])
    ok = "passed" if mae.passed else "FAILED"
    colour = "#1a7f37" if mae.passed else "#b42318"
    return (
        '<div style="border:1px solid #ddd; padding:8px; margin:4px 0;">'
        f"<div><b>{html.escape(mae.unit)}</b> &middot; MAE <span style='color:{colour}'>"
        f"{ok}</span> &middot; activation {mae.activation:.3f} / original "
        f"{mae.original_activation:.3f} &middot; {len(mae.token_ids)} of "
        f"{len(mae.original_token_ids)} tokens &middot; max_drop {mae.max_drop}, window "
        f"{mae.window}</div>"
        f"<div>MAE: {tokens_html(mae.tokens, mae.activations, anchor=mae.anchor, vmax=vmax)}"
        "</div>"
        f"<div style='color:#555'>original: {tokens_html(mae.original_tokens, mae.original_activations, anchor=mae.original_anchor, vmax=vmax)}</div>"  # noqa: E501
        f"<div style='color:#777; font-size:11px'>{html.escape(mae.reason)}</div></div>"
    )


def examples_html(ex) -> str:
    """HTML table of max-activating examples (context with the anchor in bold)."""
    rows = []
    for _, r in ex.examples.iterrows():
        ctx = html.escape(r["context"]).replace("[[", "<b style='background:#fbb'>")
        ctx = ctx.replace("]]", "</b>")
        rows.append(f"<tr><td>{html.escape(r['unit'])}</td><td>{r['rank']}</td>"
                    f"<td>{r['activation']:.3f}</td><td style='{_STYLE}'>{ctx}</td></tr>")
    return ("<table><tr><th>unit</th><th>rank</th><th>activation</th><th>context</th></tr>"
            + "".join(rows) + "</table>")


def importance_html(imp) -> str:
    """Tokens coloured by importance (drop of the anchor's activation when ablated)."""
    return (f"<div><b>{html.escape(imp.unit)}</b> token importance ({imp.method}), "
            f"activation {imp.activation:.3f}<br>"
            + tokens_html(imp.tokens, [0.0 if not math.isfinite(v) else v
                                       for v in imp.importance], anchor=imp.anchor)
            + "</div>")


_KIND_COLOUR = {"mae": "#eef", "positive": "#e6f4ea", "negative": "#fde8e8", "neutral": "#fff"}


def search_html(search, max_rows: int = 60) -> str:
    """The paper's table: MAE, then positives and negatives (and neutrals), with activations."""
    df = search.table
    mae_line = tokens_html(search.mae_tokens, search.mae_activations, anchor=search.mae_anchor)
    rows = [f"<tr style='background:{_KIND_COLOUR['mae']}'><td style='{_STYLE}'>{mae_line}"
            f"</td><td>MAE</td><td>{search.mae_activation:.3f}</td><td></td><td></td></tr>"]
    order = {"positive": 0, "negative": 1, "neutral": 2}
    d = df.sort_values(["kind", "activation"], key=lambda s: s.map(order) if s.name == "kind"
                       else -s).head(max_rows) if len(df) else df
    for _, r in d.iterrows():
        txt = html.escape(r["text"])
        rows.append(
            f"<tr style='background:{_KIND_COLOUR[r['kind']]}'><td style='{_STYLE}'>{txt}</td>"
            f"<td>{r['kind']}</td><td>{r['activation']:.3f}</td><td>{r['drop']:.0%}</td>"
            f"<td>{html.escape(repr(r['replaced']))} &rarr; "
            f"{html.escape(repr(r['replacement']))}</td></tr>"
        )
    more = f"<div>... {len(df) - max_rows} more rows</div>" if len(df) > max_rows else ""
    return (
        f"<div><b>{html.escape(search.unit)}</b> local search: {search.n_positive} positive, "
        f"{search.n_negative} negative, {search.n_neutral} neutral</div>"
        "<table><tr><th>prompt</th><th>type</th><th>activation</th><th>drop</th>"
        "<th>substitution</th></tr>" + "".join(rows) + "</table>" + more
    )


def search_page(items: Sequence, title: str = "neuroprobe: MAEs and local search") -> str:
    """A complete standalone HTML page from MAE and local-search objects (in order)."""
    body = "".join(it._repr_html_() for it in items)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>table{border-collapse:collapse;margin:6px 0 18px 0}"
            "td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}</style></head>"
            f"<body><h2>{html.escape(title)}</h2>{body}</body></html>")
