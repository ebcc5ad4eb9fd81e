"""A small self-contained HTML report of a functional-network experiment.

:func:`write_report` writes ``report.html`` (figures embedded as base64 PNGs, a table of
the headline numbers, the caveats) next to ``results.json``.

Examples
--------
>>> html_table({"within_task_dice": 0.65, "chance": 0.2})[:7]
'<table>'
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_report", "html_table"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.9em} td,th{border:1px solid #ccc;padding:4px 10px;
text-align:left} th{background:#f4f4f4} img{max-width:100%;border:1px solid #eee;margin:6px 0}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:8px 12px;font-size:0.9em}
.fig{margin-bottom:1.2em} .cap{font-size:0.85em;color:#555}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, Mapping):
        return "; ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


def html_table(rows: Mapping[str, Any]) -> str:
    """Two-column HTML table of name -> value."""
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{body}</table>"


_CAPTIONS = {
    "design_matrix": "Design matrix of one run (task boxcar and control boxcar; one row per "
    "token, BOS dropped).",
    "tmaps": "t-map (task - control) per task, mean over the first split's runs; rows are "
    "(hook kind, layer), columns the unit index within the hook.",
    "overlap": "Dice overlap of every (task, run) network of the first split.",
    "overlap_specific": "Dice overlap of the task-specific networks (task - other tasks).",
    "venn": "Template networks (consensus over runs) of three tasks.",
    "confusion": "Task prediction of held-out runs from templates of the other runs, summed "
    "over all random splits.",
    "confusion_prompts": "Task prediction of runs built from set-B prompts, with templates "
    "from set A.",
    "network_by_layer": "Fraction of each hook's units in each task's template, by layer.",
    "network_by_layer_specific": "The same for the task-specific templates (task - other "
    "tasks): where in depth the task-specific units live.",
}


def write_report(result, out_dir: str | Path, figures: Mapping[str, Path]) -> Path:
    """Write ``out_dir/report.html`` for a
    :class:`~neuroprobe.networks.experiment.FunctionalNetworksResult` and return its path."""
    out = Path(out_dir)
    s = result.summary()
    spec = s["specific_contrast"]
    head = {
        "model": s["model"],
        "units (N)": s["n_units"],
        "tasks": ", ".join(s["tasks"]),
        "runs per task x task blocks": f"{s['n_runs_per_task']} x {s['n_task_blocks']}",
        "time points": f"{s['time_mode']} tokens (BOS {'kept' if s['include_bos'] else 'dropped'})",
        "threshold": f"{s['correction']}, alpha {s['alpha']}",
        "network sizes (first split)": s["network_sizes"],
        "within-task Dice": s["within_task_dice"],
        "across-task Dice": s["across_task_dice"],
        "held-out run accuracy (mean ± std over splits)":
            f"{_fmt(s['heldout_accuracy'])} ± {_fmt(s['heldout_accuracy_std'])}",
        "set-B prompt accuracy": f"{_fmt(s['heldout_prompts_accuracy'])} ± "
                                 f"{_fmt(s['heldout_prompts_accuracy_std'])}",
        "shuffled-label null accuracy": s["null_accuracy"],
        "chance": s["chance"],
        "shared core (units in every task's template)":
            f"{s['shared_core_size']} ({_fmt(s['shared_core_fraction'])} of a mean template)",
        "peak layer of each template": s["peak_layer"],
        "splits": s["n_splits"],
        "seconds": s["seconds"],
    }
    spec_rows = {
        "contrast": spec["contrast"],
        "network sizes": spec["network_sizes"],
        "within-task Dice": spec["within_task_dice"],
        "across-task Dice": spec["across_task_dice"],
        "held-out run accuracy": f"{_fmt(spec['heldout_accuracy'])} ± "
                                 f"{_fmt(spec['heldout_accuracy_std'])}",
        "set-B prompt accuracy": spec["heldout_prompts_accuracy"],
        "null accuracy": spec["null_accuracy"],
        "shared core": spec["shared_core_size"],
    }
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>neuroprobe: functional networks of {html.escape(s['model'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Functional networks of {html.escape(s['model'])}</h1>",
        "<p>Block-design experiment after arXiv:2311.10898: task prompts from five domains "
        "alternate with random-word strings of the same token length (one prompt per block); "
        "every unit's activation over tokens is fit with a GLM (task and control boxcars); "
        "units passing the threshold form a task's network in that run.</p>",
        "<h2>Headline numbers</h2>",
        html_table(head),
        "<h2>Task-specific contrast (task - other tasks)</h2>",
        html_table(spec_rows),
    ]
    if s.get("noise_model_sizes"):
        parts += ["<h2>Network sizes under other noise models (first split, set A)</h2>",
                  html_table({k: v for k, v in s["noise_model_sizes"].items()})]
    parts.append(
        "<div class='note'><b>Caveat.</b> Tokens are not independent time points: activations "
        "of consecutive tokens are strongly autocorrelated, so OLS t values are inflated and "
        "Bonferroni over N units does not hold the family-wise error at alpha. Compare the "
        "AR(1) and block-permutation max-T sizes above (run with "
        "<code>--noise-models ols ar1 max_t</code>); read network sizes as relative, not "
        "absolute.</div>"
    )
    if s["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(
            f"<li>{html.escape(n)}</li>" for n in s["notes"]) + "</ul>")
    if getattr(result, "dissociation", None) is not None:
        from neuroprobe.viz.localizers import dissociation_html

        d = result.dissociation
        parts.append(dissociation_html(
            d, title="Causal test: task-specific networks ablated on held-out prompts"))
        parts.append(
            f"<p class='cap'>Each task-specific template (task - other tasks, first split) is "
            f"{html.escape(d.mode)}-ablated (BOS spared) and the change in next-token "
            "cross-entropy (nats) is measured on every task's set-B prompts, which did not "
            "select the units. A network that matters for its own domain hurts its own "
            "column most (the diagonal).</p>")
    parts.append("<h2>Figures</h2>")
    for name, path in figures.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(
            f"<div class='fig'><img alt='{html.escape(name)}' "
            f"src='data:image/png;base64,{data}'><div class='cap'>"
            f"{html.escape(_CAPTIONS.get(name, name))}</div></div>"
        )
    parts.append("<h2>results.json</h2><pre style='font-size:0.75em;max-height:30em;"
                 "overflow:auto'>" + html.escape(json.dumps(
                     {k: v for k, v in s.items() if k != "overlap_matrix"}, indent=1))
                 + "</pre></body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
