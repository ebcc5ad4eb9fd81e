"""Benchmark: batched MAE pruning vs a plain sequential reference, and prune + local search
per unit, on SmolLM2-135M (CPU by default).

    nice -n 10 python benchmarks/mae.py [--n-units 20] [--top-n 10] [--device cpu]
        [--out benchmarks/mae_results.json]

Same units (the seeded sample of MLP neurons used by examples/mae_local_search.py) and the
same texts (each unit's most activating text in the default corpus) for both methods, in one
process.  The *sequential reference* is the method written as a loop, the way N2G runs it:
every candidate (each end-truncation of the anchor's sentence, then each start-truncation)
is its own forward pass, unpadded, stopped after the unit's layer like the batched one.
The batched version evaluates each phase in one padded forward pass (and, in a causal model,
reads every end-truncation off one pass, since the anchor cannot see later tokens).

Printed: identical outputs (token ids and anchor), median wall seconds and CPU seconds
(process time, all threads) per unit, forward passes per unit, speedup, and the
prune + local search (top_n=10, single-token spans) time per unit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def sequential_prune(model, unit, text, max_drop=0.6, window=0, early_stop=True):
    """The reference: one candidate per forward pass; returns (token_ids, anchor, n_forward).

    ``early_stop=False`` is the method as a plain loop (every end-truncation and every
    start-truncation of the sentence evaluated, like N2G's loop); ``early_stop=True`` stops
    the end phase at the first (shortest) end that passes -- a cheaper sequential baseline.
    """
    from neuroprobe.mae.reader import resolve_unit
    from neuroprobe.mae.tokens import as_doc, sentence_of_tokens, sentence_ranges

    spec = resolve_unit(model, unit)
    doc = as_doc(model, text, None)
    pre, ids = doc.prefix, doc.ids
    n_fwd = 0

    def acts(seq):
        nonlocal n_fwd
        got = {}

        def fn(a, hook):
            got["a"] = a[0, :, spec.index]

        kw = {} if spec.stop is None else {"stop_at_layer": spec.stop}
        with torch.no_grad(), model.hooks(fwd_hooks=[(spec.canonical, fn)]):
            model(torch.tensor([seq]), **kw)
        n_fwd += 1
        return got["a"].float()

    full = acts(pre + ids)[len(pre):]
    a = int(torch.argmax(full))
    orig = float(full[a])
    thr = (1 - max_drop) * orig
    ranges = sentence_ranges(sentence_of_tokens(doc))
    s0, e0 = next((s, e) for s, e in ranges if s <= a < e)
    e_best = None
    for e in range(max(min(a + 1 + window, e0), a + 1), e0 + 1):
        if float(acts(pre + ids[s0:e])[len(pre) + a - s0]) >= thr:
            e_best = e if e_best is None else e_best
            if early_stop:
                break
    if e_best is None:
        return None, None, n_fwd
    s_best = s0
    for s in range(s0, min(max(a - window, s0), a) + 1):
        if float(acts(pre + ids[s:e_best])[len(pre) + a - s]) >= thr:
            s_best = s
    return ids[s_best:e_best], a - s_best, n_fwd


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-units", type=int, default=20)
    ap.add_argument("--top-n", type=int, default=10)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1 avoids spin-waiting on a busy shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mae_local_search import sample_units

    import neuroprobe as npb

    model = npb.load_model("smollm2-135m", device=args.device)
    units = sample_units(model, args.n_units, 0)
    t0 = time.time()
    ex = npb.max_activating_examples(model, units, "default", k=1)
    scan_s = time.time() - t0
    rows = []
    for u in units:
        text = ex.texts(u)[0]
        w, c = time.time(), time.process_time()
        ref_ids, ref_anchor, ref_fwd = sequential_prune(model, u, text)
        seq_w, seq_c = time.time() - w, time.process_time() - c
        w, c = time.time(), time.process_time()
        lit_ids, lit_anchor, lit_fwd = sequential_prune(model, u, text, early_stop=False)
        lit_w, lit_c = time.time() - w, time.process_time() - c
        w, c = time.time(), time.process_time()
        mae = npb.prune_to_mae(model, u, text)
        b_w, b_c = time.time() - w, time.process_time() - c
        same = (mae.passed and mae.token_ids == ref_ids == lit_ids
                and mae.anchor == ref_anchor == lit_anchor) or (
            not mae.passed and ref_ids is None and lit_ids is None)
        s_w = s_c = 0.0
        s_fwd = 0
        npos = nneg = 0
        if mae.passed:
            w, c = time.time(), time.process_time()
            found = npb.local_search(model, u, mae, top_n=args.top_n, spans=(1,))
            s_w, s_c = time.time() - w, time.process_time() - c
            s_fwd, npos, nneg = found.n_forward, found.n_positive, found.n_negative
        rows.append(dict(unit=f"{u[0]}[{u[1]}]", identical=bool(same),
                         n_tokens=len(mae.original_token_ids), mae_tokens=len(mae.token_ids),
                         seq_wall=seq_w, seq_cpu=seq_c, seq_forward=ref_fwd,
                         loop_wall=lit_w, loop_cpu=lit_c, loop_forward=lit_fwd,
                         batched_wall=b_w, batched_cpu=b_c, batched_forward=mae.n_forward,
                         search_wall=s_w, search_cpu=s_c, search_forward=s_fwd,
                         total_wall=b_w + s_w, total_cpu=b_c + s_c, n_positive=npos,
                         n_negative=nneg))
        r = rows[-1]
        print(f"{r['unit']:28s} same={same} loop {lit_w:6.2f}s/{lit_fwd:3d}fwd "
              f"seq {seq_w:6.2f}s/{ref_fwd:3d}fwd  batched "
              f"{b_w:5.2f}s/{mae.n_forward}fwd  search {s_w:5.2f}s/{s_fwd}fwd", flush=True)

    def med(k):
        return float(np.median([r[k] for r in rows]))

    summary = {
        "device": str(next(model.parameters()).device), "torch_threads": torch.get_num_threads(),
        "load_average": list(__import__("os").getloadavg()),
        "n_units": len(rows), "identical": sum(r["identical"] for r in rows),
        "scan_seconds": scan_s,
        "median_seq_wall": med("seq_wall"), "median_batched_wall": med("batched_wall"),
        "median_seq_cpu": med("seq_cpu"), "median_batched_cpu": med("batched_cpu"),
        "speedup_wall_total": sum(r["seq_wall"] for r in rows)
        / max(1e-9, sum(r["batched_wall"] for r in rows)),
        "speedup_cpu_total": sum(r["seq_cpu"] for r in rows)
        / max(1e-9, sum(r["batched_cpu"] for r in rows)),
        "median_loop_wall": med("loop_wall"), "median_loop_cpu": med("loop_cpu"),
        "median_loop_forward": med("loop_forward"),
        "speedup_vs_loop_wall_total": sum(r["loop_wall"] for r in rows)
        / max(1e-9, sum(r["batched_wall"] for r in rows)),
        "speedup_vs_loop_cpu_total": sum(r["loop_cpu"] for r in rows)
        / max(1e-9, sum(r["batched_cpu"] for r in rows)),
        "median_seq_forward": med("seq_forward"), "median_batched_forward": med("batched_forward"),
        "median_search_wall": med("search_wall"), "median_search_forward": med("search_forward"),
        "median_prune_plus_search_wall": med("total_wall"),
        "median_prune_plus_search_cpu": med("total_cpu"),
        "median_forward_per_unit": float(np.median([r["batched_forward"] + r["search_forward"]
                                                    for r in rows])),
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    print(f"\nbatched vs sequential prune: {summary['identical']}/{len(rows)} identical; "
          f"vs the plain loop {summary['speedup_vs_loop_wall_total']:.1f}x faster (wall, "
          f"total), {summary['speedup_vs_loop_cpu_total']:.1f}x (CPU); vs the early-stopping "
          f"loop {summary['speedup_wall_total']:.1f}x (wall), "
          f"{summary['speedup_cpu_total']:.1f}x (CPU); prune + search median "
          f"{summary['median_prune_plus_search_wall']:.2f}s wall / "
          f"{summary['median_prune_plus_search_cpu']:.2f}s CPU per unit (target < 5 s)")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
