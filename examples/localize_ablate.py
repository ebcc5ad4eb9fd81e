"""Localize the language network of a model and test it causally by ablation.

    PYTHONPATH=. python examples/localize_ablate.py --model smollm2-135m --out /tmp/loc

1. The Fedorenko et al. 2010 language localizer (240 sentences vs 240 nonword lists), top
   1% of MLP neurons by Welch t (last token), with split-half reliability; the same on the
   block outputs (``blocks.*.hook_resid_post``, llm-localization's setting) under the key
   ``residual_stream``.
2. Mean-ablation of the network on held-out sentences of the packaged corpus (never
   localizer stimuli) against layer-matched and variance-matched random unit sets.
3. Dissociation: language vs multiple-demand (hard vs easy arithmetic) networks on held-out
   sentences vs held-out arithmetic problems; and the five task networks of the
   functional-networks prompts (set A localizes, one task vs the other four through
   ``fit_glm``) ablated on the five domains' held-out prompts (set B).

Writes ``OUT/results.json``, figures (``OUT/*.png``) and ``OUT/report.html``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import neuroprobe as npb
from neuroprobe.viz.localizers import dissociation_html, plot_causal_effect, plot_localizer_layers

MLP = "blocks.*.mlp.hook_post"
RESID = "blocks.*.hook_resid_post"


def corpus_sentences(n_heldout: int) -> tuple[list[str], list[str]]:
    """Held-out sentences (6-18 words) and the rest of the corpus (the ablation reference)."""
    paras = npb.load_default_corpus()
    sents = [s for p in paras for s in re.split(r"(?<=[.!?])\s+", p) if s.strip()]
    ok = [s for s in sents if 6 <= len(s.split()) <= 18]
    held = ok[:n_heldout]
    rest = [s for s in sents if s not in set(held)]
    return held, rest


def task_networks(model, hooks, top_percent: float) -> dict[str, npb.FunctionalNetwork]:
    """One network per task of the packaged prompts (set A): task vs the other four, GLM t."""
    ps = npb.load_prompts(split="A")
    stim = npb.LocalizerStimuli(dict(ps.prompts), name="tasks")
    vals = npb.localizer_values(model, stim, hooks, pooling="mean")
    X = pd.DataFrame({t: [float(lab == t) for lab in vals.labels] for t in ps.tasks})
    res = npb.fit_glm(vals.values, X, units=vals.units)
    nets = {}
    k = max(1, int(top_percent / 100 * vals.values.shape[1]))
    for t in ps.tasks:
        c = np.array([1.0 if u == t else -1.0 / (len(ps.tasks) - 1) for u in ps.tasks])
        tt = torch.nan_to_num(res.contrast(c).t, nan=-np.inf)
        m = torch.zeros(tt.shape[0], dtype=torch.bool)
        m[torch.argsort(-tt, stable=True)[:k]] = True
        nets[t] = npb.FunctionalNetwork(m, vals.units, task=t,
                                        threshold=f"top {top_percent:g}% GLM t (one vs rest)")
    return nets


def setting(model, hooks, args, held, rest, out: Path, tag: str) -> tuple[dict, dict]:
    """Localize, split-half, causal effect for one unit basis."""
    t0 = time.perf_counter()
    vals = npb.localizer_values(model, "language", hooks)
    t_loc = time.perf_counter() - t0
    lang = npb.localize(None, vals, top_percent=args.top_percent)
    sh = npb.split_half_reliability(vals, n_splits=100, top_percent=args.top_percent)
    ref = npb.ablation_reference(model, hooks, rest, max_rows=0)
    t0 = time.perf_counter()
    eff = npb.causal_effect(model, lang, held, mode="mean", reference=ref,
                            n_random=args.n_random, localizer=npb.load_localizer("language"))
    t_ce = time.perf_counter() - t0
    s = eff.summary()
    res = {
        "hooks": hooks, "language_mask_size": lang.size, "n_units": lang.n_units,
        "language_layers": lang.by_layer().query("n_units > 0")["layer"].astype(int).tolist(),
        "language_split_half_dice": sh.mean, "language_split_half_dice_std": sh.std,
        "language_delta_ce": s["delta_ce"], "language_delta_ce_ci": s["ci"],
        "language_delta_acc": s["delta_acc"], "baseline_ce": s["baseline_ce"],
        "random_delta_ce_mean": s["random_delta_ce_mean"],
        "random_delta_ce_p95": s["random_delta_ce_p95"],
        "language_effect_percentile": s["effect_percentile"],
        "ratio_to_random_p95": s["ratio_to_p95"],
        "variance_matched_delta_ce_mean": s["variance_matched_delta_ce_mean"],
        "variance_matched_delta_ce_p95": s["variance_matched_delta_ce_p95"],
        "variance_matched_percentile": s["variance_matched_percentile"],
        "n_random": s["n_random"], "ablation": "mean (reference: the rest of the corpus), BOS "
                                               "spared",
        "seconds_localize": round(t_loc, 1), "seconds_causal_effect": round(t_ce, 1),
    }
    import matplotlib.pyplot as plt

    for name, fig in ((f"{tag}_causal_effect.png", plot_causal_effect(eff)),
                      (f"{tag}_language_layers.png", plot_localizer_layers(lang))):
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
    return res, {"network": lang, "reference": ref, "effect": eff}


HEADLINE = ("language_mask_size", "language_layers", "language_split_half_dice",
            "baseline_ce", "language_delta_ce", "language_delta_ce_ci", "random_delta_ce_mean",
            "random_delta_ce_p95", "language_effect_percentile", "ratio_to_random_p95",
            "variance_matched_delta_ce_mean", "variance_matched_delta_ce_p95",
            "variance_matched_percentile", "n_random", "seconds_localize",
            "seconds_causal_effect")


def report_html(model_name: str, results: dict, d, td, keep: dict, out: Path) -> str:
    """One page: the two unit bases side by side, the two dissociations, the figures."""
    from neuroprobe.report import _CSS, html_table

    res = results.get("residual_stream", {})
    rows = {k: (results.get(k), res.get(k, "not run")) for k in HEADLINE}
    table = ("<table><tr><th></th><th>MLP neurons (blocks.*.mlp.hook_post)</th>"
             "<th>block outputs (blocks.*.hook_resid_post)</th></tr>"
             + "".join(f"<tr><th>{k}</th><td>{_cell(a)}</td><td>{_cell(b)}</td></tr>"
                       for k, (a, b) in rows.items()) + "</table>")
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>neuroprobe: localizers and causal tests, {model_name}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Localizers and causal tests: {model_name}</h1>",
             "<p>The Fedorenko et al. 2010 language localizer (240 sentences vs 240 nonword "
             "lists), top 1% of units by Welch t (last token); mean-ablation (BOS spared) on "
             f"{results['n_heldout_sentences']} held-out corpus sentences against "
             f"{results.get('n_random')} layer-matched and as many variance-matched random "
             "unit sets of the same size.</p>",
             "<h2>Language network: correlational selection, causal test</h2>", table,
             dissociation_html(d, [keep["effect"]], "Language vs multiple demand"),
             dissociation_html(td, title="Task networks on held-out (set-B) prompts"),
             "<h2>Other numbers</h2>",
             html_table({k: v for k, v in results.items()
                         if k not in HEADLINE and not isinstance(v, dict)}),
             "<h2>Figures</h2>"]
    parts += [f"<div class='fig'><img alt='{p.stem}' src='{p.name}'/><div class='cap'>"
              f"{p.stem}</div></div>" for p in sorted(out.glob("*.png"))]
    return "\n".join(parts + ["</body></html>"])


def _cell(v) -> str:
    import html as _h

    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and len(v) > 8:
        return _h.escape(f"{v[0]}..{v[-1]} ({len(v)} layers)")
    if isinstance(v, list):
        return _h.escape(", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v))
    return _h.escape(str(v))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default="out_localize")
    ap.add_argument("--n-random", type=int, default=100)
    ap.add_argument("--n-heldout", type=int, default=200)
    ap.add_argument("--top-percent", type=float, default=1.0)
    ap.add_argument("--skip-residual", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    t_all = time.perf_counter()
    model = npb.load_model(args.model)
    held, rest = corpus_sentences(args.n_heldout)
    results: dict = {"model": args.model, "n_heldout_sentences": len(held)}

    def save() -> None:
        results["seconds_total"] = round(time.perf_counter() - t_all, 1)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=float))

    mlp, keep = setting(model, MLP, args, held, rest, out, "mlp")
    results.update(mlp)
    save()
    print("MLP neurons:", json.dumps({k: mlp[k] for k in ("language_mask_size",
          "language_delta_ce", "random_delta_ce_p95", "language_effect_percentile")}))

    # language vs multiple demand, on held-out sentences vs held-out arithmetic
    md = npb.localize(model, npb.multiple_demand_stimuli(100, seed=0), MLP,
                      top_percent=args.top_percent)
    tom = npb.localize(model, "theory_of_mind", MLP, top_percent=args.top_percent)
    lang = keep["network"]
    arith = list(npb.multiple_demand_stimuli(50, seed=1).texts)
    ref_all = keep["reference"]
    d = npb.dissociation(model, {"language": lang, "multiple_demand": md},
                         {"sentences": held[:100], "arithmetic": arith}, mode="mean",
                         reference=ref_all)
    results["multiple_demand_mask_size"] = md.size
    results["theory_of_mind_mask_size"] = tom.size
    results["overlap_dice"] = {"language_multiple_demand": lang.dice(md),
                               "language_theory_of_mind": lang.dice(tom),
                               "multiple_demand_theory_of_mind": md.dice(tom)}
    results["dissociation"] = d.summary()
    save()
    print("dissociation:", json.dumps(results["dissociation"]["delta_ce"]))

    # the five task networks on the five domains' held-out prompts
    nets = task_networks(model, MLP, args.top_percent)
    heldB = npb.load_prompts(split="B")
    td = npb.dissociation(model, nets, {t: list(heldB.prompts[t]) for t in nets},
                          mode="mean", reference=ref_all)
    tds = td.summary()
    results["task_dissociation"] = {"tasks": tds["networks"], "delta_ce": tds["delta_ce"],
                                    "delta_acc": tds["delta_acc"],
                                    "baseline_ce": tds["baseline_ce"],
                                    "diagonal_mean": tds["diagonal_mean"],
                                    "off_diagonal_mean": tds["off_diagonal_mean"],
                                    "diagonal_wins_by_condition":
                                        tds["diagonal_wins_by_condition"],
                                    "network_sizes": [n.size for n in nets.values()]}
    results["diagonal_wins"] = tds["diagonal_wins"]
    save()
    print("task dissociation:", json.dumps(tds["delta_ce"]))

    import matplotlib.pyplot as plt

    for name, dd in (("dissociation.png", d), ("task_dissociation.png", td)):
        fig = dd.plot()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)

    if not args.skip_residual:
        resid, keep_r = setting(model, RESID, args, held, rest, out, "residual")
        results["residual_stream"] = resid
        print("residual:", json.dumps({k: resid[k] for k in ("language_mask_size",
              "language_delta_ce", "random_delta_ce_p95", "language_effect_percentile")}))
    save()
    with open(out / "objects.pkl", "wb") as f:  # to redraw the report without rerunning
        pickle.dump({"results": results, "d": d, "td": td,
                     "effect": keep["effect"]}, f)
    (out / "report.html").write_text(report_html(args.model, results, d, td, keep, out))
    print(f"wrote {out / 'results.json'} ({results['seconds_total']} s)")
    return results


if __name__ == "__main__":
    main()
