"""Compatibility check against SAELens itself (not CI; needs the package registry).

SAELens pins ``transformer-lens<4``, so it can never share neuroprobe's environment.  This
script (run with neuroprobe's Python) writes a TopK and an L1 SAE in the SAELens format,
builds a side venv with ``sae-lens`` (``--venv``, default ``/tmp/saelens-venv``), loads both
there with ``SAE.load_from_disk`` and compares SAELens's ``encode`` / ``decode`` outputs on
the same inputs with neuroprobe's, printing the largest absolute differences.

Usage::

    python benchmarks/saelens_compat.py [--venv /tmp/saelens-venv] [--sae-lens 6.54.12]
        [--torch "torch --index-url https://download.pytorch.org/whl/cpu"]

Torch is installed first (``--torch``: pip arguments, e.g. a local CPU wheel), then
``sae-lens`` with that torch pinned, so that pip does not pull a CUDA build of torch as a
dependency of ``transformer-lens<4``.  An existing venv in which ``import sae_lens`` works
is reused.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from neuroprobe.dictionary import SAE

_CHILD = r"""
import json, sys, torch
from safetensors.torch import load_file, save_file
from sae_lens import SAE
out = {}
for name in ("topk", "l1"):
    d = sys.argv[1] + "/" + name
    sae = SAE.load_from_disk(d, device="cpu")
    x = load_file(sys.argv[1] + "/x.safetensors")["x"]
    with torch.no_grad():
        f = sae.encode(x)
        xh = sae.decode(f)
    save_file({"f": f.contiguous(), "xh": xh.contiguous()}, d + "/saelens_out.safetensors")
    sae.save_model(d + "_by_saelens")  # the other direction: SAELens writes, neuroprobe reads
    out[name] = type(sae).__name__
print(json.dumps(out))
"""


def main(argv=None) -> dict:
    from safetensors.torch import load_file, save_file

    from neuroprobe.dictionary import load_sae

    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", default="/tmp/saelens-venv")
    ap.add_argument("--sae-lens", default="6.54.12")
    ap.add_argument("--torch", default="torch",
                    help="pip arguments that install torch in the side venv first")
    a = ap.parse_args(argv)
    venv = Path(a.venv)
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if subprocess.run([str(py), "-c", "import sae_lens"], capture_output=True).returncode:
        pip = [str(py), "-m", "pip", "install", "-q"]
        subprocess.run(pip + shlex.split(a.torch), check=True)
        tv = subprocess.run([str(py), "-c", "import torch; print(torch.__version__)"],
                            check=True, capture_output=True, text=True).stdout.strip()
        pin = venv / "torch-pin.txt"
        pin.write_text(f"torch=={tv.split('+')[0]}\n")
        subprocess.run(pip + ["-c", str(pin), f"sae-lens=={a.sae_lens}"], check=True)
    ver = subprocess.run([str(py), "-c", "import importlib.metadata as m; "
                          "print(m.version('sae-lens'), m.version('transformer-lens'), "
                          "m.version('torch'))"], check=True, capture_output=True,
                         text=True).stdout.split()
    print(f"side venv {venv}: sae-lens {ver[0]}, transformer-lens {ver[1]}, torch {ver[2]}")
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    x = torch.randn(64, 32) * 3
    save_file({"x": x}, str(tmp / "x.safetensors"))
    saes = {"topk": SAE(32, 128, "topk", k=8, hook_name="blocks.0.hook_resid_post", seed=1),
            "l1": SAE(32, 128, "l1", hook_name="blocks.0.hook_resid_post", seed=2)}
    for name, s in saes.items():
        with torch.no_grad():
            s.b_enc.normal_(0, 0.1)
            s.b_dec.normal_(0, 0.1)
        s.save(tmp / name, format="saelens")
    r = subprocess.run([str(py), "-c", _CHILD, str(tmp)], check=True, capture_output=True,
                       text=True)
    print("SAELens classes:", r.stdout.strip())
    report = {"sae_lens": ver[0], "transformer_lens": ver[1], "torch": ver[2]}
    for name, s in saes.items():
        got = load_file(str(tmp / name / "saelens_out.safetensors"))
        with torch.no_grad():
            f, xh = s.encode(x), s.decode(s.encode(x))
        back = load_sae(tmp / f"{name}_by_saelens")
        with torch.no_grad():
            fb = back.encode(x)
        report[name] = dict(encode_max_abs_diff=float((got["f"] - f).abs().max()),
                            decode_max_abs_diff=float((got["xh"] - xh).abs().max()),
                            saelens_l0=float((got["f"] > 0).sum(1).float().mean()),
                            saelens_max_feature=float(got["f"].max()),
                            reread_encode_max_abs_diff=float((fb - f).abs().max()))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
