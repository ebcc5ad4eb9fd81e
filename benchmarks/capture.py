"""Capture benchmark: neuroprobe.record vs a plain forward pass, peak memory, cached loading.

Run:  python benchmarks/capture.py [--tokens 2048] [--repeats 3]

1. Overhead: recording every ``blocks.*.mlp.hook_post`` and ``blocks.*.hook_resid_post`` of
   SmolLM2-135M over the same batches as a plain forward pass (no hooks), interleaved runs,
   ratio of medians.  Target: <= 1.15x.
2. Memory: peak RSS of a fresh process that loads the model and records, against the size
   of the recorded tensor plus the model's parameters.  Target: <= 1.3x.
3. Loading: first ``load_model("smollm2-135m")`` with an empty cache (dequantize + write the
   safetensors cache) vs a second load in a new process.  Target: >= 4x faster.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HOOKS = ["blocks.*.mlp.hook_post", "blocks.*.hook_resid_post"]
TEXT = (
    "The history of science is the study of the development of science and scientific "
    "knowledge, including both the natural and social sciences. Medical imaging lets "
    "physicians see inside the body without surgery; magnetic resonance imaging uses strong "
    "magnetic fields and radio waves, while computed tomography combines many X-ray images. "
    "Paleontologists study fossils to learn about ancient life, from trilobites to dinosaurs, "
    "and archaeologists excavate settlements to understand the cultures that built them. "
)


def _prompts(model, n_tokens: int, seq: int = 64):
    """Token-id prompts of exactly ``seq`` tokens (BOS + text), ``n_tokens`` in total."""
    import torch

    ids = model.to_tokens(TEXT * 40, prepend_bos=False)[0]
    bos = int(model.tokenizer.bos_token_id)
    n = n_tokens // seq
    return [torch.cat([torch.tensor([bos]), ids[i * (seq - 1):(i + 1) * (seq - 1)]])
            for i in range(n)]


def bench_overhead(n_tokens: int, repeats: int, batch_size: int) -> dict:
    import torch

    import neuroprobe as npb
    from neuroprobe.core.engine import pad_left

    torch.set_grad_enabled(False)
    model = npb.load_model("smollm2-135m")
    prompts = _prompts(model, n_tokens)
    npb.record(model, prompts[:2], hooks=HOOKS)  # warm-up

    def plain():
        for s in range(0, len(prompts), batch_size):
            ids, mask = pad_left(prompts[s:s + batch_size], 2)
            model(ids, attention_mask=mask)

    def rec():
        return npb.record(model, prompts, hooks=HOOKS, batch_size=batch_size, progress=False)

    t_plain, t_rec = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plain()
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r = rec()
        t_rec.append(time.perf_counter() - t0)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    # shared machines: the fastest of interleaved repeats is the least disturbed estimate
    return {
        "tokens": int(r.n_time),
        "units": int(r.n_units),
        "recorded_mib": r.acts.nelement() * 4 / 2**20,
        "plain_forward_s": min(t_plain),
        "record_s": min(t_rec),
        "overhead_ratio": min(t_rec) / min(t_plain),
        "overhead_ratio_median": med(t_rec) / med(t_plain),
        "all_plain_s": t_plain,
        "all_record_s": t_rec,
        "tokens_per_s_record": r.n_time / min(t_rec),
    }


def _memory_child(n_tokens: int, batch_size: int) -> None:
    import torch

    import neuroprobe as npb

    model = npb.load_model("smollm2-135m")
    prompts = _prompts(model, n_tokens)
    model_bytes = sum(p.nelement() * p.element_size() for p in model.parameters())
    import gc

    # weights load memory-mapped: one forward pass pages them in, so the peak below is what
    # recording adds, not the model's pages arriving
    from neuroprobe.core.engine import pad_left

    with torch.no_grad():
        ids, mask = pad_left(prompts[:batch_size], 2)
        model(ids, attention_mask=mask)
    gc.collect()
    base = _status_kib("VmRSS") * 1024
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    with torch.no_grad():
        rec = npb.record(model, prompts, hooks=HOOKS, batch_size=batch_size, progress=False)
    peak = _status_kib("VmHWM") * 1024
    rec_bytes = rec.acts.nelement() * rec.acts.element_size()
    print(json.dumps({"model_bytes": model_bytes, "recording_bytes": rec_bytes,
                      "rss_before_record": base, "peak_rss": peak,
                      "lifetime_peak_rss_incl_loading":
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def bench_memory(n_tokens: int, batch_size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", "--tokens", str(n_tokens),
                          "--batch-size", str(batch_size)],
                         capture_output=True, text=True, check=True)
    d = json.loads(out.stdout.strip().splitlines()[-1])
    d["peak_over_recording_plus_model"] = d["peak_rss"] / (d["recording_bytes"] +
                                                           d["model_bytes"])
    # what recording adds on top of the loaded model and the Python/torch runtime
    d["record_growth_over_recording"] = (d["peak_rss"] - d["rss_before_record"]) / d[
        "recording_bytes"]
    return d


def _load_child() -> None:
    import neuroprobe as npb  # import time is not part of the load time

    t0 = time.perf_counter()
    npb.load_model("smollm2-135m")
    print(json.dumps({"load_s": time.perf_counter() - t0}))


def bench_load() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NEUROPROBE_CACHE=cache)
        times = []
        for _ in range(2):
            out = subprocess.run([sys.executable, __file__, "--load-child"], env=env,
                                 capture_output=True, text=True, check=True)
            times.append(json.loads(out.stdout.strip().splitlines()[-1])["load_s"])
    return {"first_load_s": times[0], "second_load_s": times[1],
            "speedup": times[0] / times[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--load-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--only", choices=["overhead", "memory", "load"], help="run one part")
    a = ap.parse_args()
    if a.memory_child:
        return _memory_child(a.tokens, a.batch_size)
    if a.load_child:
        return _load_child()
    parts = {"overhead": lambda: bench_overhead(a.tokens, a.repeats, a.batch_size),
             "memory": lambda: bench_memory(a.tokens, a.batch_size),
             "load": bench_load}
    res = {k: f() for k, f in parts.items() if a.only in (None, k)}
    o, m, ld = res.get("overhead"), res.get("memory"), res.get("load")
    if o:
        _print_overhead(o, a.repeats)
    if m:
        _print_memory(m)
    if ld:
        _print_load(ld)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


def _print_overhead(o: dict, repeats: int) -> None:
    print(f"recording {o['tokens']} tokens x {o['units']} units ({o['recorded_mib']:.0f} MiB)")
    print(f"  plain forward {o['plain_forward_s']:.2f} s | record {o['record_s']:.2f} s | "
          f"ratio {o['overhead_ratio']:.3f}x (best of {repeats} interleaved; median ratio "
          f"{o['overhead_ratio_median']:.3f}x)  (target <= 1.15x)")


def _print_memory(m: dict) -> None:
    print(f"  peak RSS while recording {m['peak_rss'] / 2**20:.0f} MiB = "
          f"{m['peak_over_recording_plus_model']:.2f}x recording + model "
          f"({(m['recording_bytes'] + m['model_bytes']) / 2**20:.0f} MiB; target <= 1.3x; "
          "includes the Python/torch runtime of "
          f"{(m['rss_before_record'] - m['model_bytes']) / 2**20:.0f} MiB)")
    print(f"  memory added by record: {(m['peak_rss'] - m['rss_before_record']) / 2**20:.0f} MiB "
          f"= {m['record_growth_over_recording']:.2f}x the recorded tensor")


def _print_load(ld: dict) -> None:
    print(f"  load_model: first {ld['first_load_s']:.1f} s, second {ld['second_load_s']:.1f} s, "
          f"speedup {ld['speedup']:.1f}x  (target >= 4x)")


if __name__ == "__main__":
    main()
