"""Benchmark: ``spliced_losses`` against the same splice with a float64 log-softmax.

A 2-layer native model with a 49,152-way vocabulary (SmolLM2's) and logits scaled to a real
LM's size, so the forward passes are cheap and the time goes where this benchmark looks: the
loss arithmetic over the 49k-way rows. The anchor is written here: one ``run_with_hooks``
pass per replacement, ``log_softmax`` of a float64 copy of the logits, CE by gather, KL by
``sum p (log p - log q)`` (what ``spliced_losses`` did before it kept the logits in float32).
Both compute the clean run plus two replacements; the numbers are checked to agree.

Usage::

    python benchmarks/spliced_losses.py [--contexts 32] [--context-size 128] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import neuroprobe as npb
from neuroprobe.dictionary import spliced_losses

HOOK = "blocks.0.hook_resid_post"


def anchor(model, ids: torch.Tensor, replacements: dict, batch_size: int) -> dict:
    """Float64 log-softmax CE and KL of each replacement spliced in at positions 1.."""
    ce = {n: 0.0 for n in ["clean", *replacements]}
    kl = dict.fromkeys(replacements, 0.0)
    count = 0
    with torch.no_grad():
        for s in range(0, ids.shape[0], batch_size):
            x = ids[s:s + batch_size]
            tgt = x[:, 2:, None]
            lp_clean = torch.log_softmax(model(x)[:, 1:-1].double(), -1)
            ce["clean"] += float(-lp_clean.gather(-1, tgt).sum())
            p_clean = lp_clean.exp()
            for name, fn in replacements.items():
                def hook(act, hook, fn=fn):
                    out = act.clone()
                    out[:, 1:] = fn(act[:, 1:])
                    return out

                logits = model.run_with_hooks(x, fwd_hooks=[(HOOK, hook)])
                lp = torch.log_softmax(logits[:, 1:-1].double(), -1)
                ce[name] += float(-lp.gather(-1, tgt).sum())
                kl[name] += float((p_clean * (lp_clean - lp)).sum())
            count += tgt.numel()
    return {"ce": {n: v / count for n, v in ce.items()},
            "kl": {n: v / count for n, v in kl.items()}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, default=32)
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    model = npb.load_model(dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64,
                                d_vocab=49152, n_ctx=a.context_size, act_fn="relu",
                                normalization_type="LN", seed=0))
    head = dict(model.named_parameters())["head._original_component.weight"]
    with torch.no_grad():
        head.mul_(12.0)  # logits of a real LM's size (|logit| up to ~50)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (a.contexts, a.context_size), generator=g)
    reps = {"scaled": lambda v: v * 1.01, "zero": torch.zeros_like}
    ctxs = ids.tolist()

    def ours():
        return spliced_losses(model, ctxs, HOOK, reps, batch_size=a.batch_size)

    def theirs():
        return anchor(model, ids, reps, a.batch_size)

    got, want = ours(), theirs()  # warm-up, and the numbers agree
    for name in reps:
        assert abs(got["ce"][name] - want["ce"][name]) <= 1e-6 * abs(want["ce"][name])
        assert abs(got["kl"][name] - want["kl"][name]) <= 1e-3 * want["kl"][name] + 1e-8
    times = {"neuroprobe": [], "float64 anchor": []}
    for _ in range(a.repeat):  # interleaved rounds
        for label, fn in (("float64 anchor", theirs), ("neuroprobe", ours)):
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    n_tok = a.contexts * (a.context_size - 2)
    print(f"spliced CE/KL, clean + 2 replacements, {n_tok} predictions x 49152 (median of "
          f"{a.repeat}): neuroprobe {med['neuroprobe']:.3f} s; float64 log-softmax anchor "
          f"{med['float64 anchor']:.3f} s; ratio {med['float64 anchor'] / med['neuroprobe']:.2f}x")
    for k, v in times.items():
        print(f"  {k}: {[round(t, 3) for t in v]} s")


if __name__ == "__main__":
    main()
