"""The distributed layer: Dask LocalCluster runs are bit-identical to the serial run,
also when a worker process is killed mid-job."""

import os
import signal
import tempfile
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

import neuroprobe as npb
from neuroprobe.distributed import SerialBackend, stream_distributed, tree_reduce
from tests.conftest import NATIVE_CFG

HOOK = "blocks.1.mlp.hook_post"


def _prompts(n=48):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(1, 100, (int(torch.randint(4, 30, (1,), generator=g)),),
                          generator=g).tolist() for _ in range(n)]


def _probes():
    return [npb.TopK(HOOK, k=4), npb.RunningCovariance(HOOK)]


def _same(a, b):
    for f in ("values", "prompt_index", "position", "time_index", "token_ids"):
        assert torch.equal(getattr(a[0], f), getattr(b[0], f)), f
    assert a[1].count == b[1].count
    assert torch.equal(a[1].mean, b[1].mean) and torch.equal(a[1].m2, b[1].m2)


def test_serial_tree_equals_one_pass(native_model):
    prompts = _prompts(20)
    whole = npb.stream(native_model, prompts, _probes())
    sharded = stream_distributed(dict(NATIVE_CFG), prompts, _probes(), n_shards=5)
    for f in ("values", "prompt_index", "position", "time_index"):
        assert torch.equal(getattr(whole[0], f), getattr(sharded[0], f))
    torch.testing.assert_close(whole[1].covariance, sharded[1].covariance, rtol=0, atol=1e-12)
    assert tree_reduce(list("abcde"), merge=lambda a, b: f"({a}{b})") == "(((ab)(cd))e)"


@pytest.mark.parametrize("per_text", [True, False])
def test_max_activating_examples_on_shards_equals_one_pass(native_model, per_text):
    prompts = _prompts(20)
    units = [(HOOK, 0), (HOOK, 7), ("blocks.0.hook_resid_post", 3)]
    whole = npb.max_activating_examples(native_model, units, prompts, 4, per_text=per_text)
    sharded = npb.max_activating_examples(dict(NATIVE_CFG), units, prompts, 4,
                                          per_text=per_text, client=SerialBackend())
    pd.testing.assert_frame_equal(whole.examples, sharded.examples)
    assert (whole.n_texts, whole.n_tokens) == (sharded.n_texts, sharded.n_tokens)


def test_alpha_by_layer_streamed_on_shards_equals_the_recording(native_model):
    prompts = _prompts(20)
    hooks = "blocks.*.hook_resid_post"
    rec = npb.record(native_model, prompts, hooks)
    want = npb.alpha_by_layer(rec, n_boot=10, fit_range=(1, 12))
    here = npb.alpha_by_layer(native_model, hooks, prompts=prompts, n_boot=10,
                              fit_range=(1, 12))
    sharded = npb.alpha_by_layer(dict(NATIVE_CFG), hooks, prompts=prompts, n_boot=10,
                                 fit_range=(1, 12), client=SerialBackend())
    for got in (here, sharded):
        assert got["hook"].tolist() == want["hook"].tolist()
        np.testing.assert_allclose(got["alpha"], want["alpha"], rtol=1e-8)
        assert got["n_samples"].tolist() == want["n_samples"].tolist()
    with pytest.raises(npb.NeuroprobeError, match="needs hooks"):
        npb.alpha_by_layer(native_model, prompts=prompts)
    with pytest.raises(npb.NeuroprobeError, match="pass prompts"):
        npb.alpha_by_layer(rec, client=SerialBackend())


def _store_arrays(store):
    return [np.load(store.path / f"acts_{j}.npy") for j in range(len(store.hooks))]


@pytest.mark.parametrize("exclude_first", [True, False])
def test_harvest_as_shard_tasks_equals_one_process(native_model, tmp_path, exclude_first):
    from neuroprobe.dictionary import harvest

    g = torch.Generator().manual_seed(1)
    corpus = [torch.randint(1, 100, (90,), generator=g).tolist() for _ in range(6)]
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
    one = harvest(native_model, corpus, hooks, path=tmp_path / "one", context_size=16,
                  exclude_first=exclude_first, seed=3)
    sharded = harvest(dict(NATIVE_CFG), corpus, hooks, path=tmp_path / "sharded",
                      context_size=16, exclude_first=exclude_first, seed=3,
                      client=SerialBackend(), n_shards=5)
    assert (one.n_tokens, one.widths) == (sharded.n_tokens, sharded.widths)
    for a, b in zip(_store_arrays(one), _store_arrays(sharded), strict=True):
        np.testing.assert_array_equal(a, b)


def test_loaded_model_refused_on_dask_and_bad_client(native_model):
    with pytest.raises(npb.NeuroprobeError, match="client must be"):
        stream_distributed(native_model, [[1, 2]], _probes(), client="localhost:8786")


def test_dask_local_cluster_bit_identical_and_survives_a_killed_worker():
    distributed = pytest.importorskip("dask.distributed")
    prompts = _prompts()
    serial = stream_distributed(dict(NATIVE_CFG), prompts, _probes(), n_shards=8,
                                client=SerialBackend())
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        out = npb.stream(dict(NATIVE_CFG), prompts, _probes(), client=client)
        _same(serial, out)
        # the analyses that take client= give the serial answer
        units = [(HOOK, 1), (HOOK, 5)]
        here = npb.max_activating_examples(npb.load_model(dict(NATIVE_CFG)), units, prompts, 3)
        there = npb.max_activating_examples(dict(NATIVE_CFG), units, prompts, 3, client=client)
        pd.testing.assert_frame_equal(here.examples, there.examples)
        serial_alpha = npb.alpha_by_layer(dict(NATIVE_CFG), "blocks.*.hook_resid_post",
                                          prompts=prompts, client=SerialBackend(), n_boot=10,
                                          fit_range=(1, 12))
        dask_alpha = npb.alpha_by_layer(dict(NATIVE_CFG), "blocks.*.hook_resid_post",
                                        prompts=prompts, client=client, n_boot=10,
                                        fit_range=(1, 12))
        pd.testing.assert_frame_equal(serial_alpha, dask_alpha)
        from neuroprobe.dictionary import harvest

        with tempfile.TemporaryDirectory() as d:
            kw = dict(context_size=8, seed=1)
            here_store = harvest(npb.load_model(dict(NATIVE_CFG)), prompts, HOOK,
                                 path=f"{d}/here", **kw)
            dask_store = harvest(dict(NATIVE_CFG), prompts, HOOK, path=f"{d}/dask",
                                 client=client, **kw)
            serial_store = harvest(dict(NATIVE_CFG), prompts, HOOK, path=f"{d}/serial",
                                   client=SerialBackend(), **kw)
            # the Dask store is byte-identical to the serial run of the same shard plan
            # (n_shards=8 by default): every file, header included
            for f in sorted(p.name for p in serial_store.path.iterdir() if p.suffix == ".npy"):
                assert (dask_store.path / f).read_bytes() == (serial_store.path / f).read_bytes()
            for a, b in zip(_store_arrays(serial_store), _store_arrays(dask_store), strict=True):
                assert np.array_equal(a.view(np.uint16), b.view(np.uint16))
            # ... and to the one-process store: the shards are cut at multiples of the batch
            # size (16), so every forward runs the batch one process runs (cut elsewhere,
            # other batch shapes round the float32 products differently in the last bits and
            # a few float16 roundings flip: 2 of 43,456 values with pieces of 12-13)
            for f in sorted(p.name for p in here_store.path.iterdir() if p.suffix == ".npy"):
                assert (dask_store.path / f).read_bytes() == (here_store.path / f).read_bytes()
        # again, killing a worker process while it runs a shard
        result, killed = {}, []

        def job():
            result["v"] = stream_distributed(dict(NATIVE_CFG), prompts, _probes(),
                                             n_shards=8, client=client)

        th = threading.Thread(target=job)
        th.start()
        t0 = time.time()
        while time.time() - t0 < 20 and not killed and th.is_alive():
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                pids = client.run(os.getpid, workers=[busy[0]])
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.01)
        th.join(60)
        assert killed, "no worker was busy long enough to be killed"
        _same(serial, result["v"])
