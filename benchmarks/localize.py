"""Benchmark: the language localizer and batched random-mask ablation on SmolLM2.

    PYTHONPATH=. python benchmarks/localize.py [--n-random 100] [--n-heldout 200]

Prints, from one run:

* the language localizer on 480 stimuli (MLP neurons, last token): seconds (target < 60);
* ``causal_effect`` with ``n_random`` layer-matched random masks over ``n_heldout`` held-out
  sentences: seconds (target < 300 for 100 masks over 200 sentences), and the same number
  of ablations run one mask per forward pass (on a subset, extrapolated), for the ratio that
  batching the masks buys;
* the matmul floor of those passes: the weight products of one float32 forward over the
  held-out tokens timed as plain ``torch.mm`` on this machine, times the number of passes
  (no float32 pass through this machine's ``torch.mm`` can be faster);
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


def matmul_floor_seconds(model, n_tokens: int, rows: int, repeat: int = 5) -> tuple[float, float]:
    """Seconds the weight matrix products of one forward pass over ``n_tokens`` tokens take
    on this machine, measured: each projection of a block (q, k, v, o, gate, up, down) and
    the unembedding as a plain float32 ``torch.mm`` of ``[rows, d_in] @ [d_in, d_out]``
    (``rows`` as in the batched passes), best of ``repeat``, scaled to ``n_tokens`` rows and
    ``n_layers`` blocks.  Attention scores, norms, the softmax and the loss are left out, so
    no float32 pass through this machine's ``torch.mm`` can be faster.  Returns (seconds,
    GFLOP per pass)."""
    cfg = model.cfg
    d, dm, dh, V = cfg.d_model, cfg.d_mlp, cfg.d_head, cfg.d_vocab
    nkv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    block = [(d, cfg.n_heads * dh), (d, nkv * dh), (d, nkv * dh), (cfg.n_heads * dh, d),
             (d, dm), (d, dm), (dm, d)]
    if not getattr(cfg, "gated_mlp", False):
        block.pop(4)  # no gate projection

    def best(d_in, d_out):
        a, w = torch.randn(rows, d_in), torch.randn(d_in, d_out)
        a @ w
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            a @ w
            ts.append(time.perf_counter() - t0)
        return min(ts) * n_tokens / rows

    sec = cfg.n_layers * sum(best(i, o) for i, o in block) + best(d, V)
    flop = 2 * n_tokens * (cfg.n_layers * sum(i * o for i, o in block) + d * V)
    return sec, flop / 1e9


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
    n_tok = sum(int(t.numel()) for t in tokenize_prompts(model, list(held)))
    rows = 256 * 2**20 // (4 * round(n_tok / len(held)) * model.cfg.d_vocab) \
        * round(n_tok / len(held))  # tokens per batched pass under the 256 MiB logits budget
    floor_pass, gflop = matmul_floor_seconds(model, n_tok, rows)
    n_pass = n_abl + 1  # the ablated passes and the intact one
    print(f"matmul floor: {n_tok} tokens, {gflop:.0f} GFLOP per pass "
          f"({gflop / floor_pass:.0f} GFLOP/s measured here): {floor_pass:.2f} s per pass, "
          f"{floor_pass * n_pass:.1f} s for {n_pass} passes; causal_effect takes "
          f"{t_batch / (floor_pass * n_pass):.2f}x that floor")

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
