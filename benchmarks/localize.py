"""Benchmark: the language localizer and batched random-mask ablation on SmolLM2.

    PYTHONPATH=. python benchmarks/localize.py [--n-random 100] [--n-heldout 200]

Prints, from one run:

* the language localizer on 480 stimuli (MLP neurons, last token): seconds (target < 60);
* ``causal_effect`` with ``n_random`` layer-matched random masks over ``n_heldout`` held-out
  sentences: seconds (target < 300 for 100 masks over 200 sentences), and the same number
  of ablations run one mask per forward pass (on a subset, extrapolated), for the ratio that
  batching the masks buys;
* the reference implementation's time (scipy ``ttest_ind(equal_var=False)`` + top-k over
  the same values) vs neuroprobe's selection.

Absolute times depend on the machine's load; the ratios are the comparable numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import stats

import neuroprobe as npb
from neuroprobe.core.capture import tokenize_prompts

MLP = "blocks.*.mlp.hook_post"


def plain_ablated_ce(model, network, texts, reference) -> float:
    """The unbatched anchor on the public API: the whole model run once per mask, with
    ``npb.ablate`` (mean-ablation, BOS spared) around plain forwards of the texts grouped by
    token length (no padding); mean next-token cross-entropy over texts."""
    toks = tokenize_prompts(model, list(texts))
    by_len: dict[int, list[torch.Tensor]] = {}
    for t in toks:
        by_len.setdefault(int(t.numel()), []).append(t)
    ces = []
    with torch.no_grad(), npb.ablate(model, network, mode="mean", reference=reference):
        for group in by_len.values():
            ids = torch.stack(group)
            logits = model(ids)[:, :-1].float()
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                reduction="none").view(ids.shape[0], -1).mean(1)
            ces.append(ce)
    return float(torch.cat(ces).mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-random", type=int, default=100)
    ap.add_argument("--n-heldout", type=int, default=200)
    ap.add_argument("--n-slow", type=int, default=5, help="masks run one per forward")
    args = ap.parse_args(argv)
    print(f"torch threads: {torch.get_num_threads()}")
    model = npb.load_model(args.model)
    npb.localizer_values(model, {"a": ["warm up", "the model"], "b": ["x y", "z w"]}, MLP)

    t0 = time.perf_counter()
    vals = npb.localizer_values(model, "language", MLP)
    net = npb.localize(None, vals)
    t_loc = time.perf_counter() - t0
    print(f"language localizer, 480 stimuli, {vals.values.shape[1]} MLP neurons: "
          f"{t_loc:.1f} s (target < 60 s); {net.size} units")

    x = vals.values.numpy()
    lab = np.asarray(vals.labels)
    t0 = time.perf_counter()
    t_ref, _ = stats.ttest_ind(x[lab == "sentences"], x[lab == "nonwords"], axis=0,
                               equal_var=False)
    np.argsort(-t_ref)[: net.size]
    t_scipy = time.perf_counter() - t0
    t0 = time.perf_counter()
    npb.localize(None, vals)
    t_np = time.perf_counter() - t0
    print(f"selection: scipy {t_scipy:.3f} s, neuroprobe {t_np:.3f} s "
          f"(ratio {t_scipy / max(t_np, 1e-9):.2f})")

    import sys

    sys.path.insert(0, "examples")
    from localize_ablate import corpus_sentences

    held, rest = corpus_sentences(args.n_heldout)
    ref = npb.ablation_reference(model, net, rest, max_rows=0)
    t0 = time.perf_counter()
    eff = npb.causal_effect(model, net, held, mode="mean", reference=ref,
                            n_random=args.n_random, variance_null=False)
    t_batch = time.perf_counter() - t0
    n_abl = args.n_random + 1
    print(f"causal_effect: {n_abl} ablations (network + {args.n_random} random) + intact, "
          f"{len(held)} sentences: {t_batch:.1f} s (target < 300 s for 100 over 200); "
          f"dCE {eff.delta_ce:.4f} vs random p95 {eff.null_p95:.4f}")

    # the unbatched route: one mask per forward pass over the whole model
    rnd = npb.random_networks(net, args.n_slow, seed=9)
    t0 = time.perf_counter()
    for r in rnd:
        plain_ablated_ce(model, r, held, ref)
    t_slow = (time.perf_counter() - t0) / args.n_slow
    # the first block with a network unit (the batched route resumes there when it can)
    start = int(net.units.layers[np.asarray(net.mask)].min())
    print(f"one mask per whole forward: {t_slow:.2f} s per ablation -> {t_slow * n_abl:.1f} s "
          f"for {n_abl}; batched and resumed at block {start}: "
          f"{t_batch / (n_abl + 1):.2f} s per ablation "
          f"(speed-up {t_slow * (n_abl + 1) / t_batch:.2f}x)")


if __name__ == "__main__":
    main()
