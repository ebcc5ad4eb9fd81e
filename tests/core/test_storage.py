"""Out-of-core recordings: memory-mapped load, 16-bit memmaps, temp-file cleanup, bad files."""

import gc
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

import neuroprobe as npb

HOOK = "blocks.0.mlp.hook_post"


def _rec(T, N, dtype=torch.float32):
    return npb.Recording(
        acts=torch.randn(T, N).to(dtype), units=npb.UnitIndex.from_hooks({HOOK: N}),
        prompt_index=torch.zeros(T, dtype=torch.long), position=torch.arange(T), n_prompts=1)


def test_load_maps_the_file_resident_memory_under_5_percent(tmp_path):
    """A 300 MB file (T=750, N=100,000 float32): load + one 1,000-column block."""
    path = tmp_path / "big.pt"
    rec = _rec(750, 100_000)
    rec.save(path)
    del rec
    gc.collect()
    size = path.stat().st_size
    assert size > 290e6
    code = textwrap.dedent(f"""
        import neuroprobe as npb
        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) * 1024
        r0 = rss()
        rec = npb.Recording.load({str(path)!r})
        block = rec.column_block(5000, 6000)
        print(rss() - r0, float(block.sum()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.getcwd()).stdout.split()
    grown = int(out[0])
    assert grown < 0.05 * size, f"resident memory grew {grown / 2**20:.1f} MiB for a " \
        f"{size / 2**20:.1f} MiB file"


def test_load_round_trips_and_points_at_the_file(tmp_path):
    rec = _rec(20, 7)
    p = rec.save(tmp_path / "r.pt")
    back = npb.Recording.load(p)
    assert torch.equal(back.acts, rec.acts) and back.storage == str(p)
    assert torch.equal(back.column_block(2, 5), rec.acts[:, 2:5])
    for dt in (torch.bfloat16, torch.float16, torch.float64):
        r = _rec(9, 4, dt)
        b = npb.Recording.load(r.save(tmp_path / f"r{dt}.pt"))
        assert b.acts.dtype == dt and torch.equal(b.column_block(1, 3), r.acts[:, 1:3])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sixteen_bit_recordings_go_to_the_memmap(native_model, dtype, tmp_path):
    prompts = [[1, 2, 3, 4], [5, 6, 7]]
    ref = npb.record(native_model, prompts, HOOK, dtype=dtype)
    with pytest.warns(UserWarning, match="memmap"):
        rec = npb.record(native_model, prompts, HOOK, dtype=dtype, memory_budget=0,
                         storage_dir=str(tmp_path))
    assert rec.acts.dtype == dtype and rec.storage is not None
    assert torch.equal(rec.acts, ref.acts)
    assert os.path.exists(rec.storage)  # the user chose the directory: kept
    del rec
    gc.collect()
    assert len(list(tmp_path.iterdir())) == 1


def test_temporary_memmap_removed_with_the_recording(native_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = npb.record(native_model, [[1, 2, 3]], HOOK, memory_budget=0)
    path = rec.storage
    assert os.path.exists(path)
    del rec
    gc.collect()
    assert not os.path.exists(path)


def test_temporary_memmap_removed_at_exit(tmp_path):
    code = textwrap.dedent("""
        import warnings, neuroprobe as npb
        from tests.conftest import NATIVE_CFG
        warnings.simplefilter("ignore")
        m = npb.load_model(dict(NATIVE_CFG))
        rec = npb.record(m, [[1, 2, 3]], "blocks.0.mlp.hook_post", memory_budget=0)
        KEEP = rec  # alive until the interpreter exits
        print(rec.storage)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.getcwd()).stdout.strip().splitlines()[-1]
    assert out.endswith(".npy") and not os.path.exists(out)


@pytest.mark.parametrize("bad", [-1, 1.5, "1G", True])
def test_memory_budget_validated(native_model, bad):
    with pytest.raises(npb.NeuroprobeError, match="memory_budget"):
        npb.record(native_model, [[1, 2, 3]], HOOK, memory_budget=bad)


def test_bad_files_raise_naming_the_file(tmp_path):
    good = _rec(30, 5).save(tmp_path / "good.pt")
    data = good.read_bytes()
    cases = {
        "empty.pt": (b"", "empty"),
        "trunc.pt": (data[: len(data) // 2], "truncated or corrupt"),
        "foreign.pt": (b"hello, not a recording" * 10, "not a neuroprobe recording"),
    }
    for name, (content, why) in cases.items():
        f = tmp_path / name
        f.write_bytes(content)
        with pytest.raises(npb.NeuroprobeError, match=why) as e:
            npb.Recording.load(f)
        assert name in str(e.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(3)}, other)
    with pytest.raises(npb.NeuroprobeError, match="other.pt.*expected a dict with keys"):
        npb.Recording.load(other)
    with pytest.raises(npb.NeuroprobeError, match="no such file"):
        npb.Recording.load(tmp_path / "missing.pt")
    np.save(tmp_path / "arr.npy", np.ones(3))
    with pytest.raises(npb.NeuroprobeError, match="arr.npy"):
        npb.Recording.load(tmp_path / "arr.npy")
