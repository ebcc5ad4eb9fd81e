"""Reproduce Foote (2022): max-activating examples -> minimal activating examples -> local
search, on SmolLM2-135M (offline) or any model neuroprobe can load.

    python examples/mae_local_search.py --model smollm2-135m --out out/mae [--n-units 20]
        [--units units.json] [--top-n 10] [--spans 1,2,3] [--window 1] [--max-drop 0.6]

Units: by default a seeded sample of MLP neurons (``blocks.L.mlp.hook_post``) spread evenly
over the layers; or a JSON file with a list of ``[hook, index]`` pairs (or a text file with
one ``hook index`` per line).  For every unit the script finds its most activating text in
the default corpus (one batched pass for all units), prunes it to an MAE, runs local search
with the model's own LM head, and writes

* ``DIR/results.json``: a list over units with ``hook``, ``index``, ``original_text``,
  ``original_tokens``, ``mae_text``, ``mae_tokens``, ``anchor``, ``original_activation``,
  ``mae_activation``, ``passed``, ``n_positive``, ``n_negative``, ``n_neutral``, ``seconds``
  (prune + search) and the forward-pass counts;
* ``DIR/summary.json``: medians and counts over units;
* ``DIR/mae_local_search.html``: the tables, like the paper's (self-contained HTML).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def sample_units(model, n: int, seed: int = 0) -> list:
    """``n`` MLP neurons spread evenly over the layers, the index drawn at random (seeded)."""
    n_layers, d_mlp = int(model.cfg.n_layers), int(model.cfg.d_mlp)
    rng = np.random.default_rng(seed)
    layers = np.linspace(0, n_layers - 1, n).round().astype(int)
    return [(f"blocks.{int(layer)}.mlp.hook_post", int(rng.integers(d_mlp))) for layer in layers]


def read_units(path: str) -> list:
    p = Path(path)
    text = p.read_text()
    if p.suffix == ".json":
        return [(str(h), int(i)) for h, i in json.loads(text)]
    out = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            h, i = line.split()[:2]
            out.append((h, int(i)))
    return out


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", required=True)
    ap.add_argument("--units", default=None, help="JSON [[hook, index], ...] or 'hook index' lines")
    ap.add_argument("--n-units", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-n", type=int, default=10)
    ap.add_argument("--spans", default="1,2,3", help="span lengths, e.g. 1 or 1,2,3")
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--max-drop", type=float, default=0.6)
    ap.add_argument("--fallback", default="sentences", choices=["none", "text", "sentences"])
    ap.add_argument("--max-texts", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1 avoids spin-waiting on a busy shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import neuroprobe as npb
    from neuroprobe.viz.mae import search_page

    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = npb.load_model(args.model)
    print(f"model loaded in {time.time() - t0:.1f}s", flush=True)
    units = read_units(args.units) if args.units else sample_units(model, args.n_units,
                                                                      args.seed)
    spans = tuple(int(s) for s in args.spans.split(","))
    t0 = time.time()
    ex = npb.max_activating_examples(model, units, "default", k=5, max_texts=args.max_texts)
    scan_s = time.time() - t0
    print(f"scanned {ex.n_texts} texts ({ex.n_tokens} tokens) for {len(units)} units in "
          f"{scan_s:.1f}s", flush=True)
    results, items = [], []
    for unit in units:
        text = ex.texts(unit)[0]
        t0 = time.time()
        mae = npb.prune_to_mae(model, unit, text, max_drop=args.max_drop, window=args.window,
                               fallback=args.fallback)
        t_prune = time.time() - t0
        search = None
        if mae.passed and mae.activation > 0:
            search = npb.local_search(model, unit, mae, top_n=args.top_n, spans=spans)
        secs = time.time() - t0
        items.append(mae)
        if search is not None:
            items.append(search)
        row = {
            "hook": unit[0], "index": unit[1], "original_text": mae.original_text,
            "original_tokens": mae.original_tokens, "mae_text": mae.text,
            "mae_tokens": mae.tokens, "anchor": mae.anchor,
            "anchor_token": mae.anchor_token,
            "original_activation": mae.original_activation, "mae_activation": mae.activation,
            "passed": mae.passed, "context": mae.context, "reason": mae.reason,
            "n_positive": search.n_positive if search else 0,
            "n_negative": search.n_negative if search else 0,
            "n_neutral": search.n_neutral if search else 0,
            "seconds": secs, "seconds_prune": t_prune,
            "forward_passes_prune": mae.n_forward,
            "forward_passes_search": search.n_forward if search else 0,
            "examples": [
                {"kind": r.kind, "text": r.text, "activation": r.activation, "drop": r["drop"]}
                for _, r in (search.table.iterrows() if search else iter(()))
            ],
        }
        results.append(row)
        print(f"{unit[0]}[{unit[1]}]: {len(mae.original_token_ids)} -> {len(mae.token_ids)} "
              f"tokens {mae.text!r} act {mae.original_activation:.2f} -> {mae.activation:.2f} "
              f"passed={mae.passed} +{row['n_positive']}/-{row['n_negative']} "
              f"({secs:.1f}s)", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    passed = [r for r in results if r["passed"]]
    summary = {
        "model": args.model, "n_units": len(results), "n_passed": len(passed),
        "median_original_tokens": float(np.median([len(r["original_tokens"]) for r in results])),
        "median_mae_tokens": float(np.median([len(r["mae_tokens"]) for r in results])),
        "n_shorter": sum(len(r["mae_tokens"]) < len(r["original_tokens"]) for r in passed),
        "n_with_positive_and_negative": sum(r["n_positive"] > 0 and r["n_negative"] > 0
                                            for r in passed),
        "median_seconds_per_unit": float(np.median([r["seconds"] for r in results])),
        "median_forward_passes_per_unit": float(np.median(
            [r["forward_passes_prune"] + r["forward_passes_search"] for r in results])),
        "scan_seconds": scan_s, "top_n": args.top_n, "spans": list(spans),
        "max_drop": args.max_drop, "window": args.window, "fallback": args.fallback,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "mae_local_search.html").write_text(
        search_page(items, title=f"neuroprobe MAEs and local search ({args.model})"))
    print(json.dumps(summary, indent=1))
    return results


if __name__ == "__main__":
    main()
