"""A short tour of capture: load the offline model, record, select, stream probes, save.

Run:  python examples/capture_tour.py --out out/tour [--model smollm2-135m]

Writes ``DIR/results.json`` (shapes, timings, top tokens of a few neurons) and
``DIR/recording.pt`` (a Recording that ``npb.Recording.load`` reads back).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import neuroprobe as npb

PROMPTS = [
    "Magnetic resonance imaging shows the soft tissue of the brain in fine detail.",
    "The senate passed the bill after a long debate about taxes and public spending.",
    "Paleontologists dated the fossil to the late Cretaceous period.",
    "The excavation uncovered pottery shards from a Bronze Age settlement.",
    "The biopsy revealed inflamed tissue with abnormal cell growth.",
    "Violet river table seven quickly under marble lantern.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default="out/tour")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model = npb.load_model(a.model)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    rec = npb.record(model, PROMPTS, hooks=["blocks.*.hook_resid_post", "blocks.*.mlp.hook_post"],
                     include_bos=False, labels=["medical", "politics", "paleo", "archeo",
                                                "pathology", "random"])
    t_rec = time.perf_counter() - t0
    print(rec)
    mlp = rec.select(hook="blocks.*.mlp.hook_post")
    print(f"MLP neurons: {mlp.n_units}; residual units: {rec.n_units - mlp.n_units}")

    # streaming probes in one pass: a covariance and the top tokens of layer 10's neurons
    hook = "blocks.10.mlp.hook_post"
    cov, top = npb.stream(model, PROMPTS, [npb.RunningCovariance("blocks.10.hook_resid_post"),
                                           npb.TopK(hook, k=3)], include_bos=False)
    eig = torch.linalg.eigvalsh(cov.covariance).flip(0)
    print(f"layer-10 residual covariance over {cov.count} tokens; top eigenvalues "
          f"{[round(float(e), 2) for e in eig[:3]]}")
    best = torch.argsort(top.values[0], descending=True)[:5].tolist()
    top_tokens = {}
    for j in best:
        df = top.to_dataframe(j)
        toks = [rec.tokens[int(t)] for t in df["time_index"]]
        top_tokens[f"{hook}[{j}]"] = list(zip(toks, df["activation"].round(3).tolist()))
        print(f"  {hook}[{j}]: {top_tokens[f'{hook}[{j}]']}")

    path = rec.save(out / "recording.pt")
    back = npb.Recording.load(path)
    assert torch.equal(back.acts, rec.acts)
    results = {
        "model": a.model,
        "n_tokens": rec.n_time,
        "n_units": rec.n_units,
        "hooks": len(rec.units.hooks),
        "load_seconds": round(t_load, 2),
        "record_seconds": round(t_rec, 2),
        "top_tokens": top_tokens,
        "recording": str(path),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
