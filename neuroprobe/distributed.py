"""Distributed streaming: shards on workers, probe states reduced in a fixed tree.

One small backend-agnostic layer:

1. the corpus is split into contiguous shards with their global offsets
   (:func:`neuroprobe.shards`), so every shard's probes see global prompt/time indices;
2. a *backend* maps one task per shard to workers -- :class:`SerialBackend` (the default,
   in this process) or :class:`DaskBackend` (a ``dask.distributed.Client``);
3. each worker loads the model once (from a name, a config dict or a factory; cached per
   process), streams its shard with :func:`neuroprobe.stream` and returns only the probe
   states;
4. the states are merged by :func:`tree_reduce` in a tree fixed by shard index, so the
   floating-point sums never depend on which worker finished first: a Dask run is
   bit-identical to the serial run over the same shards.

Dask reschedules the tasks of a worker that dies, and a task's result depends only on its
shard, so a lost worker changes nothing in the result.

Scripts that start a ``LocalCluster`` need the ``if __name__ == "__main__":`` guard (worker
processes re-import the main module); see docs/distributed.md.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from neuroprobe.core import capture
from neuroprobe.core.capture import CorpusShard, shards
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import check_callable, check_int, check_known_keys

__all__ = ["SerialBackend", "DaskBackend", "tree_reduce", "stream_distributed", "stream"]

_MODELS: dict[str, Any] = {}  # per-process model cache (one load per worker)


def _model_key(spec) -> str:
    if isinstance(spec, str):
        return "name:" + spec
    if isinstance(spec, dict):
        return "cfg:" + json.dumps(spec, sort_keys=True, default=str)
    if callable(spec):
        try:  # the factory's code and arguments, so two lambdas of one module differ
            import hashlib

            import cloudpickle

            return "factory:" + hashlib.sha1(cloudpickle.dumps(spec)).hexdigest()
        except Exception:  # noqa: BLE001 - unpicklable: one load per object in this process
            return f"factory:{id(spec)}"
    raise NeuroprobeError(
        "model must be a model name (str), a config dict for npb.load_model, or a factory "
        f"callable returning a model when running on workers; got {type(spec).__name__}. "
        "Pass the name instead of a loaded model: workers load it once each."
    )


def _load(spec):
    key = _model_key(spec)
    if key not in _MODELS:
        from neuroprobe.core.models import load_model

        _MODELS[key] = spec() if callable(spec) and not isinstance(spec, (str, dict)) \
            else load_model(spec)
    return _MODELS[key]


def local_model(spec):
    """The model ``spec`` names, in this process (loaded once and cached, like a worker's);
    a loaded model is returned as is. Functions with ``client=`` use it on the driver for
    what the workers do not return (tokenizing, decoding)."""
    return _load(spec) if _is_spec(spec) else spec


_HEAP_TUNED: list[bool] = []


def driver_like_heap() -> None:
    """Give this (worker) process the heap behaviour of a plain Python process.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting it also fixes
    glibc's mmap threshold at 128 KiB, so every activation tensor of a forward pass is
    mmapped and page-faulted afresh instead of reused from the heap. Here: allocations up to
    32 MiB come from the heap (glibc's own ceiling for its dynamic threshold) and free memory
    is returned to the system above 256 MiB. Once per process; a no-op off glibc."""
    if _HEAP_TUNED:
        return
    _HEAP_TUNED.append(True)
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 256 << 20)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _shard_task(piece: CorpusShard, spec, probes: list, kw: dict, threads: int) -> list:
    stream = capture.stream

    if os.environ.get("NEUROPROBE_KEEP_WORKER_HEAP") != "1":
        driver_like_heap()
    torch.set_num_threads(threads)  # same float arithmetic as the driver's serial run
    model = spec if not _is_spec(spec) else _load(spec)
    return stream(model, piece.prompts, copy.deepcopy(probes), shard=piece.shard, **kw)


def _is_spec(m) -> bool:
    return isinstance(m, (str, dict)) or (callable(m) and not hasattr(m, "run_with_hooks"))


def tree_reduce(states: Sequence, merge: Callable[[Any, Any], Any] | None = None):
    """Merge ``states`` pairwise in a fixed tree: ``(0,1), (2,3), ...`` then again.

    The tree depends only on ``len(states)``, so the result does not depend on the order in
    which workers finished.

    Examples
    --------
    >>> from neuroprobe.distributed import tree_reduce
    >>> tree_reduce(["a", "b", "c"], merge=lambda x, y: f"({x}{y})")
    '((ab)c)'
    """
    if isinstance(states, (str, bytes)) or not hasattr(states, "__iter__"):
        raise NeuroprobeError(
            f"tree_reduce(states=...) must be a list of states; got {type(states).__name__}."
        )
    level = list(states)
    if not level:
        raise NeuroprobeError("tree_reduce needs at least one state.")
    if merge is None:
        bad = [i for i, st in enumerate(level) if not callable(getattr(st, "merge", None))]
        if bad and len(level) > 1:
            raise NeuroprobeError(
                f"tree_reduce: states[{bad[0]}] ({type(level[bad[0]]).__name__}) has no "
                "merge(other) method; pass merge=lambda a, b: ... or states that are probes."
            )
        merge = lambda a, b: a.merge(b)  # noqa: E731
    else:
        check_callable(merge, "merge", 2, expected="merge(a, b) -> merged state")
    while len(level) > 1:
        nxt = [merge(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class SerialBackend:
    """Run the shard tasks one after another in this process (the default).

    Examples
    --------
    >>> from neuroprobe.distributed import SerialBackend
    >>> SerialBackend().map(lambda x: x * 2, [1, 2, 3])
    [2, 4, 6]
    """

    def map(self, fn: Callable, items: Sequence, *args) -> list:
        _check_map(fn, items)
        return [fn(*_args(it, args)) for it in items]


def _check_map(fn, items) -> None:
    if not callable(fn):
        raise NeuroprobeError(f"map(fn, items): fn must be callable; got {type(fn).__name__}.")
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise NeuroprobeError(
            f"map(fn, items): items must be a list of task arguments; got {type(items).__name__}."
        )


def _args(item, args):
    return (item,) + tuple(args) if not isinstance(item, tuple) else item + tuple(args)


class DaskBackend:
    """Run the shard tasks on a ``dask.distributed.Client`` (results in shard order).

    Tasks are submitted with ``pure=False`` and a retry budget, so a worker that dies
    mid-job has its tasks recomputed elsewhere.

    Examples
    --------
    >>> from neuroprobe.distributed import DaskBackend
    >>> DaskBackend(client=None).retries
    3
    """

    def __init__(self, client, retries: int = 3) -> None:
        retries = check_int(retries, "retries", minimum=0)
        if client is not None and not (callable(getattr(client, "submit", None))
                                       and callable(getattr(client, "gather", None))):
            raise NeuroprobeError(
                f"DaskBackend(client=...) must be a dask.distributed.Client (with submit and "
                f"gather); got {type(client).__name__}."
            )
        self.client, self.retries = client, retries

    def map(self, fn: Callable, items: Sequence, *args) -> list:
        _check_map(fn, items)
        if self.client is None:
            raise NeuroprobeError(
                "DaskBackend(client=None) cannot run tasks; pass a dask.distributed.Client, or "
                "use SerialBackend() to run here."
            )
        futs = [self.client.submit(fn, *_args(it, args), pure=False, retries=self.retries,
                                   key=f"neuroprobe-shard-{i}-{id(items)}")
                for i, it in enumerate(items)]
        return self.client.gather(futs)


def _backend(client):
    if client is None:
        return SerialBackend()
    if isinstance(client, (SerialBackend, DaskBackend)):
        return client
    try:
        from dask.distributed import Client
    except ImportError:  # pragma: no cover
        raise NeuroprobeError(
            "client=... needs dask.distributed; install the extra: pip install "
            "'neuroprobe[dask]'."
        ) from None
    if not isinstance(client, Client):
        raise NeuroprobeError(
            f"client must be a dask.distributed.Client, a SerialBackend/DaskBackend or None; "
            f"got {type(client).__name__}."
        )
    return DaskBackend(client)


def as_backend(client):
    """The backend that runs tasks for ``client``: None -> :class:`SerialBackend`, a Dask
    ``Client`` -> :class:`DaskBackend`, a backend as is. Analyses with ``client=`` map their
    own shard tasks with its ``map(fn, items)`` (results in item order)."""
    return _backend(client)


def stream_distributed(model, prompts, probes: Sequence[Any], *, client=None,
                       n_shards: int = 8, **stream_kw) -> list:
    """:func:`neuroprobe.stream` over ``n_shards`` shards on a backend; merged probes.

    Parameters
    ----------
    model : str, dict, callable or model
        A model name / config for :func:`neuroprobe.load_model`, or a factory; each worker
        loads it once.  A loaded model works only with the serial backend.
    prompts, probes
        As for :func:`neuroprobe.stream`; ``probes`` are templates (not modified).
    client : dask.distributed.Client, SerialBackend, DaskBackend or None
        Where the shards run (None: serially, here).
    n_shards : int
        Number of shards; the result depends on it (the reduction tree), not on the
        backend or the number of workers.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.distributed import stream_distributed
    >>> cfg = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50,
    ...            n_ctx=16, act_fn="relu", seed=0)
    >>> (top,) = stream_distributed(cfg, [[1, 2, 3], [4, 5], [6, 7]],
    ...                             [npb.TopK("blocks.0.mlp.hook_post", k=2)], n_shards=3)
    >>> top.seen
    ((0, 3, 0, 7),)
    """
    import inspect

    backend = _backend(client)
    n_shards = check_int(n_shards, "n_shards", minimum=1)
    check_known_keys(stream_kw, "stream_distributed(**stream_kw)",
                     [n for n in inspect.signature(capture.stream).parameters
                      if n not in ("model", "prompts", "probes", "shard")])
    if (isinstance(probes, (str, bytes)) or not hasattr(probes, "__iter__")
            or hasattr(probes, "update")):
        raise NeuroprobeError(
            f"stream_distributed(probes=...) must be a list of probes; got "
            f"{type(probes).__name__}. Wrap a single probe in a list: [probe]."
        )
    probes = list(probes)
    if not probes:
        raise NeuroprobeError("stream_distributed(probes=...) is empty; pass a probe.")
    for i, p in enumerate(probes):
        if not (callable(getattr(p, "update", None)) and callable(getattr(p, "merge", None))):
            raise NeuroprobeError(
                f"probes[{i}] ({type(p).__name__}) is not a probe: a probe has hooks, "
                "update(acts, meta) and merge(other) (e.g. npb.TopK, npb.RunningCovariance)."
            )
    if not _is_spec(model) and not hasattr(model, "run_with_hooks"):
        raise NeuroprobeError(
            f"model must be a model name (str), a config dict, a factory callable or a loaded "
            f"model; got {type(model).__name__}."
        )
    if isinstance(backend, DaskBackend) and not _is_spec(model):
        _model_key(model)  # raises: a loaded model is not sent to workers
    local = _load(model) if _is_spec(model) else model
    split_kw = {k: stream_kw[k] for k in ("positions", "include_bos", "prepend_bos",
                                          "truncate", "text_column") if k in stream_kw}
    pieces = shards(local, prompts, n_shards, **split_kw)
    stream_kw.pop("progress", None)
    states = backend.map(_shard_task, pieces, model, probes, stream_kw,
                         torch.get_num_threads())
    return [tree_reduce([s[j] for s in states]) for j in range(len(probes))]


def stream(model, prompts, probes: Sequence[Any], *, client=None, **stream_kw) -> list:
    """Run probes over prompts in one pass, storing nothing else; returns the probes.

    ``npb.stream``: with ``client=None`` this is :func:`neuroprobe.core.capture.stream` in
    this process (see it for every argument, ``shard=`` included); with a
    ``dask.distributed.Client`` (or a :class:`DaskBackend` / :class:`SerialBackend`) the
    corpus runs as 8 shards on the workers (:func:`stream_distributed`: ``model`` must then
    be a model name, a config dict or a picklable factory) and the merged probes come back,
    bit-identical to the serial run over the same shards.

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> cfg = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50,
    ...            n_ctx=16, act_fn="relu", seed=0)
    >>> prompts = [[1, 2, 3], [4, 5], [6, 7]]
    >>> (here,) = npb.stream(npb.load_model(cfg), prompts, [npb.TopK("blocks.0.mlp.hook_post")])
    >>> (sharded,) = npb.stream(cfg, prompts, [npb.TopK("blocks.0.mlp.hook_post")],
    ...                         client=npb.SerialBackend())
    >>> bool(torch.allclose(here.values, sharded.values, rtol=1e-5, atol=1e-6)), sharded.seen
    (True, ((0, 3, 0, 7),))
    """
    if client is None:
        return capture.stream(model, prompts, probes, **stream_kw)
    if "shard" in stream_kw:
        raise NeuroprobeError(
            "stream(shard=..., client=...): with a client the corpus is split into shards for "
            "you; pass the whole corpus and leave shard out."
        )
    return stream_distributed(model, prompts, probes, client=client, **stream_kw)
