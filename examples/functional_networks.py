"""Functional networks of a language model (arXiv:2311.10898), end to end.

Five task domains (political science, medical imaging, paleontology, archeology, pathology)
alternate with random-word strings of the same token length, one prompt per block; every
unit's activation over tokens is fit with a GLM; significant units form each (task, run)
network.  Writes ``OUT/results.json`` and figures, and with ``--report`` ``OUT/report.html``,
whose path it prints.

    python examples/functional_networks.py --model smollm2-135m --out out/demo --report

Options: ``--prompts FILE`` (JSON/YAML: task -> prompts, or sets A and B), ``--runs N``,
``--blocks N`` (task blocks per run), ``--splits N`` (random prompt splits),
``--time prompt|generated``, ``--noise-models ols ar1 max_t``, ``--seed``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m",
                    help="model name for neuroprobe.load_model (default: smollm2-135m, offline)")
    ap.add_argument("--out", default="out/functional_networks", help="output folder")
    ap.add_argument("--report", action="store_true", help="also write OUT/report.html")
    ap.add_argument("--prompts", default=None,
                    help="JSON/YAML prompt file (default: the packaged sets A and B)")
    ap.add_argument("--tasks", nargs="+", default=None, help="subset of the file's tasks")
    ap.add_argument("--runs", type=int, default=5, help="runs per task (default 5)")
    ap.add_argument("--blocks", type=int, default=8, help="task blocks per run (default 8)")
    ap.add_argument("--splits", type=int, default=50,
                    help="random splits of prompts into runs (default 50)")
    ap.add_argument("--time", choices=("prompt", "generated"), default="prompt",
                    help="time points: prompt tokens (fast) or generated tokens (slow)")
    ap.add_argument("--max-new-tokens", type=int, default=16,
                    help="tokens generated per block with --time generated")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--correction", default="bonferroni",
                    choices=("bonferroni", "holm", "fdr_bh", "none"))
    ap.add_argument("--mlp-hidden", action="store_true",
                    help="also record the MLP hidden neurons (blocks.*.mlp.hook_post)")
    ap.add_argument("--noise-models", nargs="+", default=["ols", "ar1", "max_t"],
                    help="noise models whose network sizes are compared on the first split "
                    "(default: ols ar1 max_t)")
    ap.add_argument("--permutations", type=int, default=200,
                    help="block permutations for max-T (default 200)")
    ap.add_argument("--include-bos", action="store_true", help="keep the BOS time point")
    ap.add_argument("--device", default=None, help="cpu (default) or cuda")
    ap.add_argument("--noise-runs", type=int, default=1,
                    help="runs per task refitted with the other noise models (default 1)")
    ap.add_argument("--dissociation", action="store_true",
                    help="causal test: ablate each task-specific template on every task's "
                         "set-B prompts (a 5 x 5 matrix in results.json and the report)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch

    import neuroprobe as npb
    from neuroprobe.networks.experiment import functional_networks

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    say(f"loading {args.model}")
    model = npb.load_model(args.model, device=args.device)
    res = functional_networks(
        model,
        args.prompts,
        tasks=args.tasks,
        n_runs=args.runs,
        n_task_blocks=args.blocks,
        n_splits=args.splits,
        time=args.time,
        max_new_tokens=args.max_new_tokens,
        alpha=args.alpha,
        correction=args.correction,
        mlp_hidden=args.mlp_hidden,
        include_bos=args.include_bos,
        noise_models=tuple(args.noise_models),
        n_permutations=args.permutations,
        noise_runs=args.noise_runs,
        seed=args.seed,
        model_name=args.model,
        progress=say,
        dissociation=args.dissociation,
    )
    out = Path(args.out)
    path = res.save(out, figures=True, report=args.report)
    s = res.summary()
    say(f"done in {time.perf_counter() - t0:.0f} s")
    if not args.quiet:
        print(
            f"{s['model']}: {s['n_units']} units, {len(s['tasks'])} tasks x "
            f"{s['n_runs_per_task']} runs ({s['time_mode']} tokens)\n"
            f"  Dice within task {s['within_task_dice']:.3f} vs across {s['across_task_dice']:.3f}"
            f"\n  held-out runs accuracy {s['heldout_accuracy']:.3f} ± "
            f"{s['heldout_accuracy_std']:.3f}; set-B prompts {s['heldout_prompts_accuracy']}; "
            f"null {s['null_accuracy']:.3f}; chance {s['chance']:.2f}\n"
            f"  shared core {s['shared_core_size']} units; task-specific contrast accuracy "
            f"{s['specific_contrast']['heldout_accuracy']}",
            file=sys.stderr,
        )
    print(path.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
