"""Out-of-core analyses of a file-backed Recording (issue 12): fit_glm and eigenspectrum read
a recording larger than their memory budget in blocks, give the in-memory numbers, and keep
the process's resident memory bounded (measured in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe.core.outofcore import column_blocks, file_backing, read_rows, row_blocks


def _recording(T: int, N: int, dtype=torch.float32, seed: int = 0) -> npb.Recording:
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(T, N, generator=g, dtype=torch.float64)
    acts[:, : N // 4] += torch.linspace(0, 3, T, dtype=torch.float64)[:, None]
    acts = (acts * 2 + 1).to(dtype)
    return npb.Recording(acts=acts, units=npb.UnitIndex.from_hooks({"h": N}),
                         prompt_index=torch.zeros(T, dtype=torch.long),
                         position=torch.arange(T))


@pytest.fixture()
def saved(tmp_path):
    rec = _recording(240, 50)
    path = rec.save(tmp_path / "rec.pt")
    return rec, npb.Recording.load(path)


def test_blocks_read_from_the_file_equal_the_array(saved):
    rec, loaded = saved
    assert file_backing(loaded) is not None and file_backing(rec) is None
    T, N = rec.acts.shape
    assert torch.equal(read_rows(*file_backing(loaded), (T, N), rec.acts.dtype, 17, 93),
                       rec.acts[17:93])
    rows = torch.cat([b for _, _, b in row_blocks(loaded, 37)])
    cols = torch.cat([b for _, _, b in column_blocks(loaded, 7)], dim=1)
    assert torch.equal(rows, rec.acts) and torch.equal(cols, rec.acts)
    assert torch.equal(torch.cat([b for _, _, b in row_blocks(rec, 37)]), rec.acts)


@pytest.mark.parametrize("noise", ["ols", "ar1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fit_glm_on_a_file_larger_than_the_budget_equals_in_memory(tmp_path, noise, dtype):
    rec = _recording(240, 50, dtype=dtype)
    loaded = npb.Recording.load(rec.save(tmp_path / "rec.pt"))
    design = npb.BlockDesign.from_blocks([("rest", 20), ("task", 20)] * 6, baseline="rest")
    budget = 240 * 12 * 7  # about 7 columns per block: 8 blocks
    want = npb.fit_glm(rec, design, noise=noise)
    got = npb.fit_glm(loaded, design, noise=noise, memory_budget=budget)
    for a, b in [(got.beta, want.beta), (got.dispersion, want.dispersion)]:
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.contrast("task").t.numpy(), want.contrast("task").t.numpy(),
                               rtol=1e-12, atol=1e-12)


def test_fit_glm_on_a_file_refuses_nan_in_a_block(tmp_path):
    rec = _recording(240, 50)
    rec.acts[5, 33] = float("nan")
    loaded = npb.Recording.load(rec.save(tmp_path / "rec.pt"))
    design = npb.BlockDesign.from_blocks([("rest", 20), ("task", 20)] * 6, baseline="rest")
    with pytest.raises(npb.NeuroprobeError, match="NaN"):
        npb.fit_glm(loaded, design, memory_budget=240 * 12 * 7)


@pytest.mark.parametrize("hook, stride", [(None, None), ("h", 2)])
def test_eigenspectrum_of_a_file_equals_in_memory(saved, hook, stride):
    rec, loaded = saved
    want = npb.eigenspectrum(rec, 30, method="exact", hook=hook, stride=stride)
    got = npb.eigenspectrum(loaded, 30, method="auto", hook=hook, stride=stride, chunk_size=37)
    np.testing.assert_allclose(got.eigenvalues.numpy(), want.eigenvalues.numpy(), rtol=1e-10)
    assert got.total_variance == pytest.approx(want.total_variance, rel=1e-12)
    assert (got.n_units, got.stride, got.hook, got.method) == (
        want.n_units, want.stride, want.hook, "exact")


def test_eigenspectrum_of_a_bfloat16_file_equals_in_memory(tmp_path):
    rec = _recording(200, 30, dtype=torch.bfloat16)
    loaded = npb.Recording.load(rec.save(tmp_path / "r.pt"))
    want = npb.eigenspectrum(rec, 20, method="exact")
    got = npb.eigenspectrum(loaded, 20, chunk_size=64)
    np.testing.assert_allclose(got.eigenvalues.numpy(), want.eigenvalues.numpy(), rtol=1e-10)


def test_eigenspectrum_of_a_file_refuses_nan(tmp_path):
    rec = _recording(100, 20)
    rec.acts[50, 3] = float("inf")
    loaded = npb.Recording.load(rec.save(tmp_path / "r.pt"))
    with pytest.raises(npb.NeuroprobeError, match="NaN or inf"):
        npb.eigenspectrum(loaded, 10, chunk_size=16)


_PEAK = textwrap.dedent("""
    import json, sys, torch, neuroprobe as npb

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    path, budget, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    small = npb.Recording.load(sys.argv[4])
    design = npb.BlockDesign.from_blocks([("rest", 50), ("task", 50)] * 50, baseline="rest")
    warm = npb.BlockDesign.from_blocks([("rest", 20), ("task", 20)] * 6, baseline="rest")
    npb.fit_glm(small, warm, noise="ar1", memory_budget=4096)   # imports and first calls
    npb.eigenspectrum(small, 10, chunk_size=16)
    rec = npb.Recording.load(path)
    base = rss("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to now
    if what == "glm":
        res = npb.fit_glm(rec, design, noise="ar1", memory_budget=budget)
    else:
        res = npb.eigenspectrum(rec, 100, chunk_size=budget // (12 * rec.n_units))
    print(json.dumps({"base": base, "peak": rss("VmHWM:"),
                      "file": rec.acts.element_size() * rec.acts.nelement()}))
""")


@pytest.mark.parametrize("what", ["glm", "spectrum"])
def test_peak_memory_on_a_file_is_bounded_by_the_budget(tmp_path, what):
    """A 40 MB float32 recording analysed with a 4 MiB budget (the spectrum's row blocks:
    float32 rows plus their float64 centred copy): the peak resident memory grows
    by the budget and the small results, not by the file (measured in a fresh process)."""
    T, N = (5000, 2000) if what == "glm" else (20000, 500)
    big = _recording(T, N).save(tmp_path / "big.pt")
    small = _recording(240, 50).save(tmp_path / "small.pt")
    budget = 4 << 20
    out = subprocess.run([sys.executable, "-c", _PEAK, str(big), str(budget), what, str(small)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    grew = m["peak"] - m["base"]
    # the O(P N) GLM results; the d x d covariance, its copy and the eigensolver's work
    results = 8 * N * 40 if what == "glm" else 8 * N * N * 4
    assert grew < budget + results + (12 << 20), (grew / 2**20, m)
    assert grew < 0.5 * m["file"] + results, (grew / 2**20, m)
