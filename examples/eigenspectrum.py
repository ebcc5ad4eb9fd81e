"""Reproduce "polysemanticity and coding theory": eigenspectra, alpha, random projections.

Two experiments, written to ``DIR/results.json`` plus figures:

1. Language model (default the offline SmolLM2-135M): the covariance of every MLP layer's
   hidden activations (``blocks.L.mlp.hook_post``, 1,536 units) over ~20,000 tokens of local
   English text, accumulated by streaming probes (nothing is held per token), its
   eigenspectrum (exact) and the power-law exponent alpha (the paper's Huber fit over
   components 10..50, 95 % bootstrap CI; Stringer and reptrix presets for comparison).
   The paper found alpha >= -1 at every depth of GPT-2 XL.
2. Digits autoencoders: a ReLU MLP autoencoder (64-256-256-128-256-256-64) trained on
   scikit-learn's bundled 8x8 digits with dropout 0, 0.2, 0.4, 0.8; alpha per hidden layer
   (activations over the 1,797 digits), and on the moving-dot stimulus the average action of
   1,000 random 3-D projections and the fraction of the frames' variance they explain.
   The paper found that dropout lowers alpha, lowers the action and raises the explained
   variance.

Text: the default corpus shipped in ``neuroprobe/data`` (89 paragraphs of English prose),
topped up with prose paragraphs of the Python language reference that ships with every
CPython (``pydoc_data.topics``) -- both local, no download.  BOS tokens are excluded (their
activations are outliers that would dominate the first component).

Usage::

    python examples/eigenspectrum.py --out out/spectrum [--model smollm2-135m]
        [--n-tokens 20000] [--skip-lm] [--skip-digits]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

import neuroprobe as npb
from neuroprobe.viz.spectrum import (
    plot_action_vs_alpha,
    plot_alpha_by_layer,
    plot_projection_curves,
    plot_spectrum,
)

DROPOUTS = (0.0, 0.2, 0.4, 0.8)


def local_texts() -> tuple[list[str], str]:
    """The default corpus, then prose paragraphs of the Python reference (offline)."""
    import pydoc_data.topics as topics

    texts = list(npb.load_default_corpus())
    extra = []
    for key in sorted(topics.topics):
        for para in re.split(r"\n\s*\n", topics.topics[key]):
            p = para.strip()
            # prose only: long, not indented code, no doctest prompts
            if len(p) > 300 and not p.startswith((" ", ">>>")) and "\n   " not in p:
                extra.append(" ".join(p.split()))
    desc = (f"neuroprobe default corpus ({len(texts)} paragraphs) + {len(extra)} prose "
            "paragraphs of the Python language reference (pydoc_data.topics)")
    return texts + extra, desc


def run_lm(args, out: Path) -> dict:
    t0 = time.time()
    model = npb.load_model(args.model)
    n_layers = int(model.cfg.n_layers)
    hooks = [f"blocks.{i}.mlp.hook_post" for i in range(n_layers)]
    texts, corpus_desc = local_texts()
    toks = npb.tokenize_prompts(model, texts)
    chosen, n_tok = [], 0
    for ids in toks:  # each prompt's first token is BOS, which is not recorded
        if n_tok >= args.n_tokens:
            break
        chosen.append(ids)
        n_tok += int(ids.numel()) - 1
    chosen.sort(key=lambda t: t.numel())  # less padding; order does not matter here
    t_load = time.time() - t0
    print(f"  {len(chosen)} texts, {n_tok} tokens; streaming {len(hooks)} hooks", flush=True)
    probes = [npb.SpectrumProbe(h) for h in hooks]
    t1, c1 = time.time(), time.process_time()
    with torch.no_grad():
        # token-id prompts: skip position 0 (the BOS token) explicitly
        probes = npb.stream(model, chosen, probes, batch_size=args.batch_size,
                            positions=slice(1, None), progress=False)
    t_stream, c_stream = time.time() - t1, time.process_time() - c1
    print(f"  streamed in {t_stream:.0f} s", flush=True)
    t2, c2 = time.time(), time.process_time()
    spectra = [npb.eigenspectrum(p, max_components=1000) for p in probes]
    fits = {m: [npb.powerlaw_alpha(s, method=m, n_boot=args.n_boot) for s in spectra]
            for m in ("huber", "stringer", "reptrix")}
    t_fit, c_fit = time.time() - t2, time.process_time() - c2

    def rows(fl):
        return [{"layer": i, "hook": h, "alpha": f.alpha, "ci_low": f.ci_low,
                 "ci_high": f.ci_high, "r2": f.r2}
                for i, (h, f) in enumerate(zip(hooks, fl, strict=True))]

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    cmap = plt.get_cmap("Greys")
    show = sorted({0, n_layers // 6, n_layers // 3, n_layers // 2, 2 * n_layers // 3,
                   5 * n_layers // 6, n_layers - 1})
    for j, i in enumerate(show):
        plot_spectrum(spectra[i], fits["huber"][i], ax=ax, label=f"layer {i}",
                      color=cmap(0.35 + 0.65 * j / max(len(show) - 1, 1)), shade=(j == 0))
    ax.set_title(f"{args.model} MLP eigenspectra ({n_tok} tokens)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "lm_spectra.png", dpi=130)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for m, c in (("huber", "C0"), ("stringer", "C1"), ("reptrix", "C2")):
        plot_alpha_by_layer(rows(fits[m]), ax=ax, color=c,
                            label={"huber": "Huber 10..50 (paper)", "stringer": "Stringer 11..500",
                                   "reptrix": "reptrix 11..100"}[m])
    ax.set_title(f"{args.model}: alpha by layer (95% bootstrap CI)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "lm_alpha_by_layer.png", dpi=130)
    plt.close("all")
    huber = rows(fits["huber"])
    return {
        "model": args.model,
        "hooks": "blocks.*.mlp.hook_post",
        "n_units": spectra[0].n_units,
        "n_tokens": int(probes[0].count),
        "n_tokens_expected": n_tok,
        "n_prompts": len(chosen),
        "corpus": corpus_desc,
        "include_bos": False,
        "alpha_by_layer": huber,
        "alpha_by_layer_stringer": rows(fits["stringer"]),
        "alpha_by_layer_reptrix": rows(fits["reptrix"]),
        "all_alpha_ge_minus_1": bool(all(r["alpha"] >= -1 for r in huber)),
        "n_layers_alpha_ge_minus_1": int(sum(r["alpha"] >= -1 for r in huber)),
        "seconds_load_and_tokenize": t_load,
        "seconds_stream": t_stream,
        "seconds_spectra_and_fits": t_fit,
        "seconds_alpha_all_layers_incl_recording": t_stream + t_fit,
        "cpu_seconds_stream": c_stream,
        "cpu_seconds_spectra_and_fits": c_fit,
    }


def run_digits(args, out: Path) -> dict:
    t0 = time.time()
    x = npb.load_digits_images()
    dot = npb.moving_dot(args.n_frames, size=8)
    frames = dot.flat()
    res = {"alpha_by_dropout": {}, "action_by_dropout": {}, "normalized_action_by_dropout": {},
           "explained_variance_by_dropout": {}, "reconstruction_mse_by_dropout": {}}
    curves = {}
    input_fit = npb.powerlaw_alpha(npb.eigenspectrum(x), n_boot=args.n_boot)
    for p in args.dropouts:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matmuls: extra threads only spin (4x slower when shared)
        try:
            ae = npb.train_digits_autoencoder(p, epochs=args.epochs, seed=args.seed)
        finally:
            torch.set_num_threads(threads)
        print(f"  trained dropout {p} ({time.time() - t0:.0f} s)", flush=True)
        hooks = ae.hook_names
        with torch.no_grad():
            recon, cache = ae.run_with_cache(x, names_filter=hooks)
            _, dcache = ae.run_with_cache(frames, names_filter=hooks)
        key = str(p)
        res["reconstruction_mse_by_dropout"][key] = float(((recon - x) ** 2).mean())
        al, ac, acn, ev = [], [], [], []
        for i, h in enumerate(hooks):
            spec = npb.eigenspectrum(cache[h])
            eigs = spec.eigenvalues
            rank = int((eigs > eigs[0] * 1e-11).sum()) if float(eigs[0]) > 0 else 0
            n_live = int((cache[h] > 0).any(0).sum())  # units active on some digit
            row = {"layer": i, "hook": h, "rank": rank, "live_units": n_live}
            if rank >= 20:  # dead units can leave fewer than 50 components: shorter window
                fit = npb.powerlaw_alpha(spec, (10, min(50, rank)), n_boot=args.n_boot)
                row.update(alpha=fit.alpha, ci_low=fit.ci_low, ci_high=fit.ci_high, r2=fit.r2,
                           fit_range=list(fit.fit_range))
            else:
                row.update(alpha=float("nan"), ci_low=float("nan"), ci_high=float("nan"),
                           r2=float("nan"), fit_range=None)
            al.append(row)
            proj = npb.random_projections(dcache[h], n=args.n_projections, dim=3,
                                          seed=args.seed, hook=h)
            z = proj.project(dcache[h])
            ac.append(npb.average_action(z).mean)
            dead = z.var(0).sum(-1) == 0  # a layer silent on the dot: no curve to normalise
            acn.append(npb.average_action(z[:, ~dead], normalize=True).mean
                       if bool((~dead).any()) else float("nan"))
            ev.append(npb.explained_input_variance(frames, z).mean)
            curves[(p, i)] = z[:, :3]
        res["alpha_by_dropout"][key] = al
        res["action_by_dropout"][key] = ac
        res["normalized_action_by_dropout"][key] = acn
        res["explained_variance_by_dropout"][key] = ev
    mean_alpha = {k: float(np.nanmean([r["alpha"] for r in v]))
                  for k, v in res["alpha_by_dropout"].items()}
    keys = [str(p) for p in args.dropouts]
    from scipy.stats import spearmanr

    flat_alpha = np.array([r["alpha"] for k in keys for r in res["alpha_by_dropout"][k]])
    flat_act = np.array([a for k in keys for a in res["action_by_dropout"][k]])
    flat_ev = np.array([a for k in keys for a in res["explained_variance_by_dropout"][k]])
    ok = np.isfinite(flat_alpha)
    res.update({
        "input_alpha": input_fit.alpha,
        "mean_alpha_by_dropout": mean_alpha,
        "mean_action_by_dropout": {k: float(np.mean(res["action_by_dropout"][k])) for k in keys},
        "mean_explained_variance_by_dropout": {
            k: float(np.mean(res["explained_variance_by_dropout"][k])) for k in keys},
        "spearman_dropout_vs_mean_alpha": float(spearmanr(
            [float(k) for k in keys], [mean_alpha[k] for k in keys]).statistic),
        "spearman_alpha_vs_action": float(spearmanr(flat_alpha[ok], flat_act[ok]).statistic),
        "spearman_action_vs_explained_variance": float(spearmanr(flat_act, flat_ev).statistic),
        "dropout_lowers_alpha": bool(mean_alpha[keys[-1]] < mean_alpha[keys[0]]),
        "hidden": [256, 256, 128, 256, 256],
        "epochs": args.epochs,
        "n_projections": args.n_projections,
        "n_frames": args.n_frames,
        "seconds": time.time() - t0,
    })

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    greens = plt.get_cmap("Greens")
    for j, k in enumerate(keys):
        col = greens(0.35 + 0.65 * j / max(len(keys) - 1, 1))
        plot_alpha_by_layer(res["alpha_by_dropout"][k], ax=axes[0], color=col,
                            label=f"dropout {k}")
        axes[1].plot(range(len(res["action_by_dropout"][k])), res["action_by_dropout"][k],
                     "o-", color=col, label=f"dropout {k}")
        axes[2].plot(range(len(res["explained_variance_by_dropout"][k])),
                     res["explained_variance_by_dropout"][k], "o-", color=col)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("layer")
    axes[1].set_ylabel("average action")
    axes[2].set_xlabel("layer")
    axes[2].set_ylabel("input variance explained")
    fig.tight_layout()
    fig.savefig(out / "digits_by_dropout.png", dpi=130)
    fig = plt.figure(figsize=(12, 5))
    n_l = len(res["alpha_by_dropout"][keys[0]])
    rows_p = [keys[0], keys[-1]]
    for r, k in enumerate(rows_p):
        for i in range(n_l):
            ax = fig.add_subplot(2, n_l, r * n_l + i + 1, projection="3d")
            plot_projection_curves(curves[(float(k), i)], n_show=1, ax=ax,
                                   title=f"dropout {k}, layer {i}\n"
                                   f"action {res['action_by_dropout'][k][i]:.3g}")
            ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
    fig.tight_layout()
    fig.savefig(out / "digits_projections.png", dpi=120)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for j, k in enumerate(keys):
        plot_action_vs_alpha([r["alpha"] for r in res["alpha_by_dropout"][k]],
                             res["action_by_dropout"][k], ax=ax,
                             color=greens(0.35 + 0.65 * j / max(len(keys) - 1, 1)),
                             label=f"dropout {k}")
    fig.tight_layout()
    fig.savefig(out / "digits_action_vs_alpha.png", dpi=130)
    plt.close("all")
    return res


def _finite(obj):
    """NaN/inf -> None, so results.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-tokens", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--dropouts", type=float, nargs="+", default=list(DROPOUTS))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--n-projections", type=int, default=1000)
    ap.add_argument("--n-frames", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-lm", action="store_true")
    ap.add_argument("--skip-digits", action="store_true")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results: dict = {"paper": "polysemanticity-coding-theory-eigenspectrum",
                     "torch_threads": torch.get_num_threads()}
    if not args.skip_digits:
        results["digits"] = run_digits(args, args.out)
        print("digits mean alpha by dropout:", results["digits"]["mean_alpha_by_dropout"])
    if not args.skip_lm:
        results["lm"] = run_lm(args, args.out)
        print("lm alpha by layer:",
              [round(r["alpha"], 3) for r in results["lm"]["alpha_by_layer"]])
    results["seconds"] = time.time() - t0
    (args.out / "results.json").write_text(json.dumps(_finite(results), indent=2))
    print(f"wrote {args.out / 'results.json'} in {results['seconds']:.1f} s")
    return results


if __name__ == "__main__":
    main()
