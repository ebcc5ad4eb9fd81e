"""Benchmarks of neuroprobe.dictionary, ratios from one run on the same data.

1. Harvest (``harvest``: engine forward stopped at the layer + float16 memmap writes at
   shuffled rows) against a plain forward through the same layers
   (``model(ids, stop_at_layer=L+1)`` under ``torch.no_grad``, activations discarded).
   Target: >= 0.9x.
2. Training from the store (``train_sae_on_store``, TopK) against a plain PyTorch loop of the
   same recipe, written here (the activations held in memory as one float32 tensor,
   ``nn.Linear`` encoder, top-k, dense decode, Adam, decoder rows renormalised).  The
   issue's own anchor, SAELens's training loop on the same cached activations, is in
   ``benchmarks/saelens_train.py`` (SAELens pins ``transformer-lens<4``, so it runs in a side
   venv; its ``SAETrainer`` trains offline from any iterator of activations).  Target: >= 1.5x
   against each.

Usage::

    python benchmarks/dictionary.py [--model smollm2-135m] [--n-tokens 20000] [--steps 20]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import torch

import neuroprobe as npb
from neuroprobe.dictionary import (
    corpus_contexts,
    harvest,
    load_shakespeare_corpus,
    train_sae_on_store,
)


def plain_forward(model, ctxs, layer: int, batch_size: int) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(ctxs), batch_size):
            model(torch.tensor(ctxs[s:s + batch_size]), stop_at_layer=layer + 1)
    return time.perf_counter() - t0


def plain_topk_loop(x: torch.Tensor, d_sae: int, k: int, batch_size: int, steps: int,
                    lr: float = 1e-3) -> float:
    """The same TopK recipe as a plain loop over an in-memory tensor; returns seconds."""
    d = x.shape[1]
    scale = math.sqrt(d) / float(x.norm(dim=1).mean())
    enc = torch.nn.Linear(d, d_sae)
    W_dec = torch.nn.Parameter(enc.weight.detach().clone())
    b_dec = torch.nn.Parameter(x.mean(0) * scale)
    opt = torch.optim.Adam([*enc.parameters(), W_dec, b_dec], lr=lr)
    n_b = x.shape[0] // batch_size
    t0 = time.perf_counter()
    for step in range(steps):
        b = step % n_b
        xb = x[b * batch_size:(b + 1) * batch_size] * scale
        pre = torch.relu(enc(xb - b_dec))
        v, i = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, i, v)
        loss = (f @ W_dec + b_dec - xb).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--hook", default="blocks.15.hook_resid_post")
    ap.add_argument("--n-tokens", type=int, default=20_000)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved rounds of each measurement (medians are printed)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    model = npb.load_model(a.model)
    corpus = load_shakespeare_corpus()
    layer = npb.core.units.hook_layer(a.hook)
    ctxs = corpus_contexts(model, corpus, n_tokens=a.n_tokens, context_size=128)
    n_tok = len(ctxs) * 127
    # both at harvest's default batch of 16 contexts, after one warm-up of each; the rounds
    # alternate (plain, harvest, plain, ...) so that drifts of a shared machine hit both
    bs = 16
    plain_forward(model, ctxs[:2], layer, bs)
    harvest(model, corpus, [a.hook], path=tempfile.mkdtemp(), n_tokens=2 * 127,
            context_size=128, batch_size=bs)
    t_plain, t_harv = [], []
    for _ in range(a.repeat):
        t_plain.append(plain_forward(model, ctxs, layer, bs))
        t0 = time.perf_counter()
        st = harvest(model, corpus, [a.hook], path=tempfile.mkdtemp(), n_tokens=a.n_tokens,
                     context_size=128, batch_size=bs)
        t_harv.append(time.perf_counter() - t0)
    t_p, t_h = statistics.median(t_plain), statistics.median(t_harv)
    print(f"harvest {st.n_tokens} tokens (median of {a.repeat}): {n_tok / t_h:.0f} tokens/s; "
          f"plain forward {n_tok / t_p:.0f} tokens/s; ratio {t_p / t_h:.2f}x (target >= 0.9x)")
    print(f"  rounds, seconds: plain {[round(t, 2) for t in t_plain]}, harvest "
          f"{[round(t, 2) for t in t_harv]}")
    steps = a.steps
    x = st.rows(a.hook, 0, st.n_tokens)
    t_np, t_ref = [], []
    for _ in range(a.repeat):
        sae = train_sae_on_store(st, hook=a.hook, d_sae=a.d_sae, architecture="topk", k=32,
                                 batch_size=a.batch_size, n_steps=steps)
        t_np.append(steps * a.batch_size / sae.metadata["training"]["tokens_per_s"])
        t_ref.append(plain_topk_loop(x, a.d_sae, 32, a.batch_size, steps))
    t_n, t_r = statistics.median(t_np), statistics.median(t_ref)
    print(f"training {steps} steps of {a.batch_size} (median of {a.repeat}): neuroprobe "
          f"{steps * a.batch_size / t_n:.0f} tokens/s; plain PyTorch loop "
          f"{steps * a.batch_size / t_r:.0f} tokens/s; ratio {t_r / t_n:.2f}x "
          "(target >= 1.5x)")
    print(f"  rounds, seconds: neuroprobe {[round(t, 2) for t in t_np]}, plain loop "
          f"{[round(t, 2) for t in t_ref]}")
    return dict(harvest_ratio=t_p / t_h, train_ratio=t_r / t_n)


if __name__ == "__main__":
    main()
