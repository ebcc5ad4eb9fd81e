"""Distributed benchmark: TopK over SmolLM2's MLP neurons, serial vs 1 and 2 Dask workers.

(Named scale_out.py, not distributed.py: a script of that name would shadow the
``distributed`` package for ``dask.distributed`` when run from this folder.)

Run:  python benchmarks/scale_out.py [--tokens 40000] [--shards 8]

SmolLM2-135M, TopK (k = 20) over every neuron of ``blocks.{0..5}.mlp.hook_post`` on
``--tokens`` tokens of the default corpus (repeated until long enough).  Prints wall times,
the ratios (targets: 2 workers >= 1.6x faster than 1 worker; 1 worker within 10% of the
serial ``stream`` on 1 core), peak RSS per worker, whether every run is bit-identical to the
serial run over the same shards, and the time to merge 8 GLMProbe states of N = 100,000
units (target < 1 s).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

HOOKS = [f"blocks.{i}.mlp.hook_post" for i in range(6)]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _corpus(tokens: int, model) -> list[str]:
    from neuroprobe.mae.corpus import load_default_corpus

    texts = load_default_corpus()
    out, n = [], 0
    while n < tokens:
        for t in texts:
            out.append(t)
            n += len(model.to_tokens(t)[0])
            if n >= tokens:
                break
    return out


def _same(a, b) -> bool:
    return all(torch.equal(x.values, y.values) and torch.equal(x.time_index, y.time_index)
               for x, y in zip(a, b))


def _merge_glm(n_units: int = 100_000, parts: int = 8) -> float:
    import neuroprobe as npb
    from neuroprobe.core.probes import BatchMeta

    T = 8 * 64
    X = np.stack([np.sin(np.arange(T) / 5.0), np.ones(T)], 1)
    states = []
    for i in range(parts):
        p = npb.GLMProbe("h", X)
        t = torch.arange(i * 64, (i + 1) * 64)
        p.update({"h": torch.randn(64, n_units)}, BatchMeta(t // 8, t % 8, t))
        states.append(p)
    t0 = time.perf_counter()
    npb.tree_reduce(states)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=40_000)
    ap.add_argument("--shards", type=int, default=8)
    args = ap.parse_args()
    from dask.distributed import Client, LocalCluster

    import neuroprobe as npb

    torch.set_num_threads(1)
    model = npb.load_model("smollm2-135m")
    prompts = _corpus(args.tokens, model)
    probes = [npb.TopK(h, k=20) for h in HOOKS]
    res: dict = {"tokens": args.tokens, "prompts": len(prompts), "shards": args.shards}
    t0 = time.perf_counter()
    serial = npb.stream_distributed("smollm2-135m", prompts, probes, n_shards=args.shards)
    res["serial_s"] = time.perf_counter() - t0
    res["serial_peak_rss_mib"] = _peak_rss_mib()
    for n in (1, 2):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cl, Client(cl) as client:
            client.run(lambda: torch.set_num_threads(1))
            t0 = time.perf_counter()
            out = npb.stream_distributed("smollm2-135m", prompts, probes, client=client,
                                         n_shards=args.shards)
            res[f"workers{n}_s"] = time.perf_counter() - t0
            res[f"workers{n}_identical"] = _same(serial, out)
            res[f"workers{n}_peak_rss_mib"] = list(client.run(_peak_rss_mib).values())
    res["speedup_2_vs_1"] = res["workers1_s"] / res["workers2_s"]
    res["workers1_vs_serial"] = res["workers1_s"] / res["serial_s"]
    res["merge_8_glm_states_N100000_s"] = _merge_glm()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
