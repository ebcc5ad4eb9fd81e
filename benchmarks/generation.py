"""Generation benchmark: ``record_generation`` against the loop it replaced, in one run.

Run:  python benchmarks/generation.py [--prompts 16] [--new-tokens 32] [--repeats 2]

The anchor is the previous implementation: one prompt at a time through TransformerLens's
own ``generate`` (KV cache on), the hooks writing one row per step.  neuroprobe generates
all prompts in left-padded batches with its own loop, then records the generated positions
in one teacher-forced pass.  Both run greedy on the same SmolLM2 prompts, interleaved; the
ratio of medians is printed.  Target: >= 3x.

The anchor is only right where TransformerLens's KV cache works (transformers <= 5.23; the
locked environment): with transformers 5.24 it silently feeds no context, and the script
says so by comparing the two loops' tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

PROMPTS = [
    "The capital of France is", "Once upon a time, there was a little",
    "The best way to learn a language is", "In 1969, astronauts", "def fibonacci(n):",
    "Photosynthesis is the process by which", "My favourite recipe for soup starts with",
    "The stock market fell sharply because", "To fix a flat bicycle tyre, first",
    "The mitochondria is", "Dear hiring manager, I am writing to", "The rules of chess say",
    "Volcanoes erupt when", "A good night's sleep helps", "The Roman Empire was",
    "Water boils at",
]


def old_loop(model, prompts, max_new_tokens, hooks):
    """The previous record_generation: one prompt at a time through model.generate."""
    from neuroprobe.core.hooks import resolve_hooks

    reqs = resolve_hooks(model, hooks)
    rows: list = []
    step: dict = {}
    tokens = []

    def grab(j):
        def fn(act, hook):
            step[j] = act[:, -1].reshape(act.shape[0], -1)[0].cpu()
        return fn

    def commit(act, hook):
        rows.append(torch.cat([step[j] for j in range(len(reqs))]))

    fwd = [(r.canonical, grab(j)) for j, r in enumerate(reqs)] + [("unembed.hook_out", commit)]
    with torch.no_grad(), model.hooks(fwd_hooks=fwd):
        for p in prompts:
            t = model.to_tokens(p)
            out = model.generate(t, max_new_tokens=max_new_tokens, do_sample=False,
                                 stop_at_eos=False, use_past_kv_cache=True, verbose=False,
                                 return_type="tokens")
            tokens.append(out[0, t.shape[1]:].tolist())
    return torch.stack(rows), tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import transformers

    import neuroprobe as npb
    from neuroprobe.core.generation import _cache_is_exact

    model = npb.load_model("smollm2-135m")
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    hooks = "blocks.*.hook_resid_post"
    print(f"transformers {transformers.__version__}; KV cache exact on this model: "
          f"{_cache_is_exact(model)}")
    t_old, t_new = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        old_acts, old_tokens = old_loop(model, prompts, args.new_tokens, hooks)
        t_old.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rec = npb.record_generation(model, prompts, args.new_tokens, hooks, stop_at_eos=False)
        t_new.append(time.perf_counter() - t0)
        print(f"repeat {r}: previous loop {t_old[-1]:.2f} s, neuroprobe {t_new[-1]:.2f} s",
              flush=True)
    new_tokens = [rec.token_ids[rec.prompt_index == i].tolist()[1:] for i in range(len(prompts))]
    same = sum(a[: args.new_tokens - 1] == b for a, b in zip(old_tokens, new_tokens))
    err = float(((old_acts - rec.acts).abs() / (rec.acts.abs() + 1)).max())
    print(f"prompts whose greedy tokens agree: {same}/{len(prompts)}; max relative difference "
          f"of the recorded rows: {err:.2e}")
    mo, mn = statistics.median(t_old), statistics.median(t_new)
    n = args.prompts * args.new_tokens
    print(f"record_generation, {args.prompts} prompts x {args.new_tokens} new tokens: previous "
          f"loop {mo:.2f} s ({n / mo:.0f} tok/s), neuroprobe {mn:.2f} s ({n / mn:.0f} tok/s): "
          f"{mo / mn:.1f}x faster (target >= 3x)")


if __name__ == "__main__":
    main()
