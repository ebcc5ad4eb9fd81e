"""The activation store: a harvest of hook outputs on disk, shuffled across contexts.

:func:`harvest` cuts a corpus into fixed-length contexts (BOS + ``context_size - 1``
tokens), runs them through :func:`neuroprobe.stream` -- capture's one engine, so the
forward stops at the last hooked layer, padding and hooks are handled there, and several
hooks (several SAEs) come from one forward pass -- and writes every kept token's activation
into a float16 or bfloat16 memmap per hook, at a row given by one random permutation of all
rows.  Reading the file front to back therefore yields tokens mixed across the whole corpus
(the job of SAELens's mixing buffer, done once at write time).

Position 0 of every context is left out by default: on SmolLM2 the attention sink at
``blocks.15.hook_resid_post`` has a mean norm of ~23,700 against ~170 elsewhere and would
swamp every variance-based metric.  Pass ``exclude_first=False`` to keep it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import (
    check_bool,
    check_index_list,
    check_int,
    check_name_list,
    check_positive_int,
    check_writable_path,
    warn_degenerate,
)

__all__ = ["ActivationStore", "harvest", "corpus_contexts"]

_STORE_DTYPES = ("float16", "bfloat16")


def kept_positions(exclude_first: bool):
    """The ``positions`` argument of ``record`` / ``stream`` that leaves position 0 (BOS, the
    attention sink) out when ``exclude_first`` -- the dictionary folder's default -- and
    keeps every position otherwise.

    Examples
    --------
    >>> from neuroprobe.dictionary.store import kept_positions
    >>> kept_positions(True), kept_positions(False)
    (slice(1, None, None), 'all')
    """
    return slice(1, None) if exclude_first else "all"


def corpus_contexts(model, corpus, *, n_tokens: int | None, context_size: int = 128,
                    text_column: str = "text") -> list[list[int]]:
    """Cut a corpus into contexts of ``context_size`` token ids, BOS first when the model's
    tokenizer has one.

    With a tokenizer, each text becomes ``tokenizer(text, add_special_tokens=False)`` ids
    followed by the EOS id (when the tokenizer has one); the texts are joined into one token
    stream in corpus order, and the stream is cut into consecutive pieces of
    ``context_size - 1`` ids, each with the BOS id prepended.  Without a tokenizer the corpus
    is token-id sequences, joined as they are and cut into pieces of ``context_size`` ids.
    A last piece shorter than that is dropped.

    Parameters
    ----------
    model : TransformerBridge
        Its ``tokenizer`` (may be None) and ``cfg.n_ctx`` / ``cfg.d_vocab`` are used.
    corpus : iterable of str, str or Path, datasets.Dataset, or token-id sequences
        What :func:`neuroprobe.iter_texts` takes (texts, a ``.txt`` file with one text per
        paragraph, a ``.jsonl`` file, a ``datasets.Dataset``) or, for a model without a
        tokenizer, token-id sequences.
    n_tokens : int or None
        Stop once the contexts hold ``n_tokens`` tokens after position 0 (whole contexts, so
        up to one context more); None: the whole corpus.
    context_size : int
        Tokens per context, BOS included (at least 2, at most ``model.cfg.n_ctx``).
    text_column : str
        Column of a dataset / field of a ``.jsonl`` line holding the text.

    Returns
    -------
    list of list of int
        The contexts, each of ``context_size`` token ids, in corpus order.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.dictionary import corpus_contexts
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> corpus_contexts(model, [list(range(10)), list(range(10, 20))], n_tokens=None,
    ...                 context_size=4)
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]
    """
    from neuroprobe.mae.corpus import iter_texts

    context_size = _check_context_size(model, context_size)
    if n_tokens is not None:
        n_tokens = check_int(n_tokens, "n_tokens", minimum=1)
    if not isinstance(text_column, str):
        raise NeuroprobeError(f"text_column must be a column name (str); got {text_column!r}.")
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    body = context_size - (1 if bos is not None else 0)
    if body < 1:
        raise NeuroprobeError(f"context_size={context_size} is too small; use at least 2.")
    kept = context_size - 1  # rows per context when position 0 is dropped (upper bound)
    need = None if n_tokens is None else -(-int(n_tokens) // max(kept, 1))
    out: list[list[int]] = []
    buf: list[int] = []

    def items():
        if tok is None:
            if isinstance(corpus, (str, bytes)) or not hasattr(corpus, "__iter__"):
                raise NeuroprobeError(
                    f"corpus must be a list of token-id sequences for a model without a "
                    f"tokenizer; got {type(corpus).__name__}."
                )
            for i, seq in enumerate(corpus):
                if isinstance(seq, str):
                    raise NeuroprobeError(
                        f"corpus item {i}: a model without a tokenizer needs token-id "
                        "sequences as its corpus, not strings."
                    )
                try:
                    ids = check_index_list(seq, f"corpus item {i}", unique=False,
                                           allow_empty=True, what="token id",
                                           size=None if d_vocab is None else int(d_vocab))
                except NeuroprobeError as e:
                    raise NeuroprobeError(
                        f"{e} A model without a tokenizer needs token-id sequences as its "
                        "corpus."
                    ) from None
                yield ids
        else:
            eos = getattr(tok, "eos_token_id", None)
            for text in iter_texts(corpus, text_column):
                ids = tok(text, add_special_tokens=False)["input_ids"]
                yield list(ids) + ([int(eos)] if eos is not None else [])

    for ids in items():
        buf.extend(ids)
        while len(buf) >= body:
            out.append(([int(bos)] if bos is not None else []) + buf[:body])
            buf = buf[body:]
            if need is not None and len(out) >= need:
                return out
    return out


def _check_model(model) -> None:
    """A language model (token ids in, hooks inside), named when it is something else."""
    from neuroprobe.core.engine import is_language_model

    if not is_language_model(model) or not hasattr(model, "hook_dict"):
        raise NeuroprobeError(
            "model must be a language model with hooks (a TransformerBridge from "
            f"npb.load_model, or an ActivationStore where one is accepted); got "
            f"{type(model).__name__}."
        )


def _check_context_size(model, context_size) -> int:
    """An int >= 2 that fits the model's context (``model`` checked first)."""
    _check_model(model)
    context_size = check_int(context_size, "context_size", minimum=2)
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if n_ctx is not None and context_size > int(n_ctx):
        raise NeuroprobeError(
            f"context_size={context_size} is longer than the model's context n_ctx={n_ctx}; "
            f"pass context_size <= {n_ctx}."
        )
    return context_size


@dataclass(frozen=True)
class ActivationStore:
    """A harvest on disk: one ``[n_tokens, d]`` memmap per hook, rows shuffled.

    Made by :func:`harvest` (or :meth:`from_arrays`), reopened with :meth:`open`; read with
    :meth:`rows` and :meth:`batches`, which return float32 tensors whatever the stored dtype.

    Attributes
    ----------
    path : Path
        The store's folder (``store.json`` and ``acts_<j>.npy`` for the ``j``-th hook).
    hooks : tuple of str
        Hook names, in file order.
    widths : tuple of int
        Width of each hook's activations.
    n_tokens : int
        Rows (tokens) per hook.
    dtype : str
        Storage dtype, ``"float16"`` or ``"bfloat16"``.
    meta : dict
        Model name, context size, ``exclude_first``, seed and harvest speed.

    Examples
    --------
    >>> import tempfile, neuroprobe as npb
    >>> from neuroprobe.dictionary import ActivationStore, harvest
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> folder = tempfile.mkdtemp()
    >>> st = harvest(model, [list(range(50))], "blocks.0.hook_resid_post", path=folder,
    ...              context_size=10)
    >>> st
    ActivationStore(..., n_tokens=45, hooks=['blocks.0.hook_resid_post'], dtype=float16)
    >>> ActivationStore.open(folder).rows("blocks.0.hook_resid_post", 0, 4).shape
    torch.Size([4, 16])
    """

    path: Path
    hooks: tuple[str, ...]
    widths: tuple[int, ...]
    n_tokens: int
    dtype: str
    meta: dict

    @classmethod
    def open(cls, path) -> ActivationStore:
        """Open a store written by :func:`harvest` or :meth:`from_arrays`.

        Parameters
        ----------
        path : str or Path
            The store's folder (holding ``store.json``).

        Returns
        -------
        ActivationStore

        Examples
        --------
        >>> import tempfile, torch
        >>> from neuroprobe.dictionary import ActivationStore
        >>> folder = tempfile.mkdtemp()
        >>> _ = ActivationStore.from_arrays(folder, {"h": torch.ones(6, 2)})
        >>> ActivationStore.open(folder).n_tokens
        6
        """
        import os

        if not isinstance(path, (str, os.PathLike)):
            raise NeuroprobeError(
                f"ActivationStore.open(path=...) must be a folder path; got {type(path).__name__}."
            )
        p = Path(path)
        if not (p / "store.json").is_file():
            raise NeuroprobeError(
                f"ActivationStore.open({str(path)!r}): no store.json there; harvest one with "
                "neuroprobe.dictionary.harvest(model, corpus, hooks, path=...)."
            )
        try:
            m = json.loads((p / "store.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise NeuroprobeError(
                f"{p / 'store.json'} is not valid JSON ({e}); the store is corrupt, harvest it "
                "again."
            ) from None
        keys = ("hooks", "widths", "n_tokens", "dtype", "meta")
        missing = [k for k in keys if not isinstance(m, dict) or k not in m]
        if missing:
            raise NeuroprobeError(
                f"{p / 'store.json'} lacks {missing}; it was not written by harvest (or is "
                "corrupt). Harvest the store again."
            )
        for j in range(len(m["hooks"])):
            if not (p / f"acts_{j}.npy").is_file():
                raise NeuroprobeError(
                    f"ActivationStore.open({str(path)!r}): acts_{j}.npy (hook "
                    f"{m['hooks'][j]!r}) is missing; the store is incomplete, harvest it again."
                )
        return cls(p, tuple(m["hooks"]), tuple(m["widths"]), int(m["n_tokens"]), m["dtype"],
                   m["meta"])

    @classmethod
    def from_arrays(cls, path, arrays: dict, *, dtype: str = "float16", seed: int = 0,
                    meta: dict | None = None) -> ActivationStore:
        """A store from in-memory ``{hook: [n, d]}`` activations (rows shuffled by ``seed``).

        Parameters
        ----------
        path : str or Path
            Folder to write.
        arrays : dict
            ``{hook name: [n, d] tensor or array}``, the same ``n`` for every hook.
        dtype : {"float16", "bfloat16"}
            Storage dtype.
        seed : int
            Seed of the row shuffle (row ``i`` is written at ``permutation(n)[i]``).
        meta : dict, optional
            Kept as the store's ``meta``.

        Returns
        -------
        ActivationStore

        Examples
        --------
        >>> import tempfile, torch
        >>> from neuroprobe.dictionary import ActivationStore
        >>> st = ActivationStore.from_arrays(tempfile.mkdtemp(), {"h": torch.randn(10, 3)})
        >>> st.n_tokens, st.rows("h", 0, 2).shape
        (10, torch.Size([2, 3]))
        """
        if not isinstance(dtype, str) or dtype not in _STORE_DTYPES:
            raise NeuroprobeError(f"dtype={dtype!r}; use one of {_STORE_DTYPES}.")
        seed = check_int(seed, "seed", minimum=0)
        if not isinstance(arrays, dict) or not arrays:
            raise NeuroprobeError(
                "arrays must be a non-empty dict {hook name: [n, d] activations}; got "
                f"{type(arrays).__name__ if not isinstance(arrays, dict) else 'an empty dict'}."
            )
        from neuroprobe.core.validation import as_tensor

        tensors = {}
        for h, a in arrays.items():
            if not isinstance(h, str):
                raise NeuroprobeError(f"arrays keys must be hook names (str); got {h!r}.")
            t = as_tensor(a, f"arrays[{h!r}]", ndim=2)
            if not t.is_floating_point():
                t = t.float()
            if t.shape[0] == 0 or t.shape[1] == 0:
                raise NeuroprobeError(f"arrays[{h!r}] has shape {tuple(t.shape)}; it is empty.")
            tensors[h] = t
        arrays = tensors
        out = check_writable_path(path, "path", directory=True)
        hooks = list(arrays)
        ns = {int(torch.as_tensor(a).shape[0]) for a in arrays.values()}
        if len(ns) != 1:
            raise NeuroprobeError(
                f"arrays have different row counts {sorted(ns)}; every hook needs one row per "
                "token."
            )
        n = ns.pop()
        perm = np.random.default_rng(seed).permutation(n)
        widths = []
        for j, h in enumerate(hooks):
            x = torch.as_tensor(arrays[h]).detach().cpu()
            x = x.to(torch.bfloat16 if dtype == "bfloat16" else torch.float16)
            _warn_store_not_finite(int((~torch.isfinite(x)).sum()), h, dtype)
            v = x.view(torch.uint16).numpy() if dtype == "bfloat16" else x.numpy()
            a = np.lib.format.open_memmap(out / f"acts_{j}.npy", mode="w+", dtype=v.dtype,
                                          shape=v.shape)
            a[perm] = v
            a.flush()
            widths.append(int(v.shape[1]))
        meta = dict(meta or {})
        (out / "store.json").write_text(json.dumps(dict(
            hooks=hooks, widths=widths, n_tokens=n, dtype=dtype, meta=meta), indent=2))
        return cls(out, tuple(hooks), tuple(widths), n, dtype, meta)

    def hook_column(self, hook: str) -> int:
        """Position of ``hook`` in :attr:`hooks` (its file is ``acts_<position>.npy``).

        Parameters
        ----------
        hook : str
            A hook name of this store.

        Returns
        -------
        int

        Raises
        ------
        NeuroprobeError
            When the store does not hold ``hook`` (the message lists the hooks it holds).

        Examples
        --------
        >>> import tempfile, torch
        >>> from neuroprobe.dictionary import ActivationStore
        >>> st = ActivationStore.from_arrays(tempfile.mkdtemp(),
        ...                                  {"a": torch.ones(4, 2), "b": torch.ones(4, 3)})
        >>> st.hook_column("b")
        1
        """
        if hook not in self.hooks:
            raise NeuroprobeError(
                f"hook {hook!r} is not in this activation store; it holds {list(self.hooks)}."
            )
        return self.hooks.index(hook)

    def array(self, hook: str) -> np.memmap:
        """The raw memmap of one hook (float16, or uint16 holding bfloat16 bits).

        Parameters
        ----------
        hook : str
            A hook name of this store.

        Returns
        -------
        numpy.memmap
            ``[n_tokens, width]``, read-only.
        """
        j = self.hook_column(hook)
        f = self.path / f"acts_{j}.npy"
        try:
            a = np.load(f, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            raise NeuroprobeError(
                f"{f} (hook {hook!r}) is not a readable .npy array ({e}); the store is corrupt "
                "or truncated. Harvest it again."
            ) from None
        if a.ndim != 2 or a.shape != (self.n_tokens, self.widths[j]):
            raise NeuroprobeError(
                f"{f} has shape {a.shape}, but store.json says ({self.n_tokens}, "
                f"{self.widths[j]}); the store is corrupt. Harvest it again."
            )
        return a

    def rows(self, hook: str, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` of one hook as a float32 tensor.

        Parameters
        ----------
        hook : str
            A hook name of this store.
        start, stop : int
            Row range, ``0 <= start <= stop <= n_tokens``.

        Returns
        -------
        Tensor
            ``[stop - start, width]``, float32 (a copy: the file is not modified through it).

        Examples
        --------
        >>> import tempfile, torch
        >>> from neuroprobe.dictionary import ActivationStore
        >>> st = ActivationStore.from_arrays(tempfile.mkdtemp(), {"h": torch.ones(5, 3)},
        ...                                  dtype="bfloat16")
        >>> st.rows("h", 1, 3)
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
        """
        start = check_int(start, "start", minimum=0, maximum=self.n_tokens)
        stop = check_int(stop, "stop", minimum=start, maximum=self.n_tokens)
        a = np.asarray(self.array(hook)[start:stop])
        t = torch.from_numpy(a.copy())
        if self.dtype == "bfloat16":
            t = t.view(torch.bfloat16)
        return t.float()

    def batches(self, hook: str, batch_size: int, *, start: int = 0, stop: int | None = None
                ) -> Iterator[Tensor]:
        """Consecutive float32 batches of rows ``start:stop`` (already shuffled on disk).

        Parameters
        ----------
        hook : str
            A hook name of this store.
        batch_size : int
            Rows per batch (the last batch may be shorter).
        start, stop : int
            Row range (default: all rows).

        Yields
        ------
        Tensor
            ``[<= batch_size, width]`` float32 batches, in row order.

        Examples
        --------
        >>> import tempfile, torch
        >>> from neuroprobe.dictionary import ActivationStore
        >>> st = ActivationStore.from_arrays(tempfile.mkdtemp(), {"h": torch.ones(10, 3)})
        >>> [b.shape[0] for b in st.batches("h", 4)]
        [4, 4, 2]
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        start = check_int(start, "start", minimum=0, maximum=self.n_tokens)
        stop = self.n_tokens if stop is None else check_int(stop, "stop", minimum=start,
                                                            maximum=self.n_tokens)
        for s in range(start, stop, batch_size):
            yield self.rows(hook, s, min(stop, s + batch_size))

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, n_tokens={self.n_tokens}, "
                f"hooks={list(self.hooks)}, dtype={self.dtype})")


def _warn_store_not_finite(n_bad: int, hook: str, dtype: str) -> None:
    if n_bad:
        warn_degenerate(
            f"the activation store's {hook!r} holds {n_bad} NaN or inf value(s) (NaN "
            f"activations, or values beyond the {dtype} range); an SAE trained on it is not "
            "meaningful. Check the model's weights, or harvest in bfloat16 for large values.",
            stacklevel=4)


class _StoreWriter:
    """A streaming probe that writes each batch's rows at their shuffled positions."""

    def __init__(self, hooks: Sequence[str], arrays: list, perm: np.ndarray, bf16: bool):
        self.hooks = list(hooks)
        self.arrays, self.perm, self.bf16 = arrays, perm, bf16
        self.fired: set[str] = set()
        self.n_bad = dict.fromkeys(self.hooks, 0)  # NaN/inf values written, per hook

    def update(self, acts: dict[str, Tensor], meta) -> None:
        dest = self.perm[meta.time_index.cpu().numpy()]
        order = np.argsort(dest)  # write in increasing file order
        for h, arr in zip(self.hooks, self.arrays):
            x = acts[h].detach()
            if x.ndim != 2 or x.shape[1] != arr.shape[1]:
                raise NeuroprobeError(
                    f"hook {h!r} gave activations of shape {tuple(x.shape)}; the store expects "
                    f"[n, {arr.shape[1]}] (a per-token hook)."
                )
            x = x.to("cpu", torch.bfloat16 if self.bf16 else torch.float16)
            self.n_bad[h] += int((~torch.isfinite(x)).sum())
            v = x.view(torch.uint16).numpy() if self.bf16 else x.numpy()
            arr[dest[order]] = v[order]
            self.fired.add(h)

    def merge(self, other):  # pragma: no cover - a writer is never merged
        raise NeuroprobeError("an activation-store writer cannot be merged.")


def _harvest_shard(piece, spec, hooks: list, out: str, n_rows: int, seed: int, bf16: bool,
                   kw: dict) -> dict:
    """One shard task: open the store's files for writing, stream the shard's contexts into
    them at their shuffled positions, return the NaN/inf counts per hook."""
    from neuroprobe.core.capture import stream
    from neuroprobe.distributed import driver_like_heap, local_model

    driver_like_heap()
    arrays = [np.load(Path(out) / f"acts_{j}.npy", mmap_mode="r+") for j in range(len(hooks))]
    perm = np.random.default_rng(seed).permutation(n_rows)
    writer = _StoreWriter(hooks, arrays, perm, bf16)
    stream(local_model(spec), piece.prompts, [writer], shard=piece.shard, **kw)
    for a in arrays:
        a.flush()
    return writer.n_bad


def _harvest_on(client, spec, model, ctxs, hooks, out, n_rows, seed, bf16, n_shards,
                **kw) -> dict:
    """The harvest as shard tasks (contiguous pieces of the contexts with their global row
    offsets, so every row lands where the one-process harvest puts it)."""
    from neuroprobe.core.capture import shards
    from neuroprobe.distributed import as_backend

    # cut at multiples of the batch size: each shard runs the one-process harvest's very
    # batches, so its float32 forward (and the float16 rows) are bit-identical to it
    pieces = shards(model, ctxs, min(n_shards, len(ctxs)), positions=kw["positions"],
                    include_bos=kw["include_bos"], align=kw["batch_size"])
    parts = as_backend(client).map(
        _harvest_shard, [(p, spec, list(hooks), str(out), n_rows, seed, bf16, kw)
                         for p in pieces])
    return {h: sum(int(p[h]) for p in parts) for h in hooks}


def harvest(model, corpus, hooks: str | Sequence[str], *, path, n_tokens: int | None = None,
            context_size: int = 128, batch_size: int = 16, dtype: str = "float16",
            exclude_first: bool = True, seed: int = 0, progress: bool | None = None,
            text_column: str = "text", client=None, n_shards: int = 8) -> ActivationStore:
    """Harvest hook outputs over a corpus into an on-disk, shuffled :class:`ActivationStore`.

    The corpus is cut into contexts by :func:`corpus_contexts`; the ``i``-th kept token
    (contexts in order, positions in order: the row order of ``npb.record`` on the same
    contexts, position 0 left out by default) is written at row ``permutation(n_tokens)[i]``
    of each hook's file, the permutation drawn from ``seed``.

    Parameters
    ----------
    model : TransformerBridge
    corpus : texts, path, datasets.Dataset, or token-id sequences
        See :func:`corpus_contexts`.
    hooks : str or list of str
        Exact hook names; all are harvested from the same forward pass, which stops after
        the deepest of them.
    path : str or Path
        Folder to write (``store.json`` + ``acts_<j>.npy`` per hook).
    n_tokens : int, optional
        Tokens to keep (whole contexts, so at most one context more); None: the whole corpus.
    context_size : int
        Tokens per context, BOS included.
    dtype : {"float16", "bfloat16"}
    exclude_first : bool
        Leave position 0 (BOS / attention sink) out (default True).
    seed : int
        Seed of the shuffle.
    client : dask.distributed.Client, DaskBackend or SerialBackend, optional
        Harvest as ``n_shards`` shard tasks on workers that share ``path`` (one machine, or
        a shared filesystem): each worker loads ``model`` (then a name, a config dict or a
        picklable factory) once and writes its shard's rows at their shuffled positions in
        the same files. The store is byte-identical to the one-process harvest (shards are
        cut at multiples of ``batch_size``, so every forward runs the same batch).
    n_shards : int
        Shards with a ``client``.
    batch_size : int
        Contexts per forward pass.
    progress : bool, optional
        A progress bar (default: only on a terminal).
    text_column : str
        Column / field holding the text (see :func:`corpus_contexts`).

    Returns
    -------
    ActivationStore
        ``n_tokens`` = contexts x (``context_size - 1``), or x ``context_size`` with
        ``exclude_first=False``.

    Raises
    ------
    NeuroprobeError
        For an unknown hook or a hook that does not fire on this model's forward pass, a
        corpus shorter than one context, or bad arguments.

    Examples
    --------
    >>> import tempfile, neuroprobe as npb
    >>> from neuroprobe.dictionary import harvest
    >>> model = npb.load_model(dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> corpus = [[i % 50 for i in range(s, s + 40)] for s in range(5)]
    >>> st = harvest(model, corpus, ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"],
    ...              path=tempfile.mkdtemp(), context_size=8)
    >>> st.n_tokens, st.widths
    (175, (16, 16))
    """
    import time

    from neuroprobe.core.capture import stream
    from neuroprobe.distributed import local_model

    spec = model
    if client is not None:  # the driver reads the corpus and plans; workers run the model
        model = local_model(spec)
        n_shards = check_positive_int(n_shards, "n_shards")
    if not isinstance(dtype, str) or dtype not in _STORE_DTYPES:
        raise NeuroprobeError(f"harvest(dtype={dtype!r}); use one of {_STORE_DTYPES}.")
    context_size = _check_context_size(model, context_size)
    hooks = _check_store_hooks(model, hooks)
    batch_size = check_positive_int(batch_size, "batch_size")
    exclude_first = check_bool(exclude_first, "exclude_first")
    seed = check_int(seed, "seed", minimum=0)
    if progress is not None:
        progress = check_bool(progress, "progress")
    out = check_writable_path(path, "path", directory=True)
    ctxs = corpus_contexts(model, corpus, n_tokens=n_tokens, context_size=context_size,
                           text_column=text_column)
    if not ctxs:
        raise NeuroprobeError(
            f"the corpus has fewer than context_size={context_size} tokens; pass more text or "
            "a smaller context_size."
        )
    per_ctx = context_size - (1 if exclude_first else 0)
    n_rows = len(ctxs) * per_ctx
    widths = _widths(model, hooks, ctxs[0])
    arrays = [np.lib.format.open_memmap(out / f"acts_{j}.npy", mode="w+",
                                        dtype=np.uint16 if dtype == "bfloat16" else np.float16,
                                        shape=(n_rows, w)) for j, w in enumerate(widths)]
    positions = kept_positions(exclude_first)
    t0 = time.perf_counter()
    if client is None:
        perm = np.random.default_rng(seed).permutation(n_rows)
        writer = _StoreWriter(hooks, arrays, perm, dtype == "bfloat16")
        stream(model, ctxs, [writer], batch_size=batch_size, positions=positions,
               include_bos=True, progress=progress)
        n_bad = writer.n_bad
    else:
        for a in arrays:
            a.flush()
        n_bad = _harvest_on(client, spec, model, ctxs, hooks, out, n_rows, seed,
                            dtype == "bfloat16", n_shards, batch_size=batch_size,
                            positions=positions, include_bos=True)
    secs = time.perf_counter() - t0
    for a in arrays:
        a.flush()
    for h in hooks:
        _warn_store_not_finite(n_bad[h], h, dtype)
    meta = dict(model_name=str(getattr(model.cfg, "model_name", "")),
                context_size=int(context_size), exclude_first=bool(exclude_first),
                seed=int(seed), n_contexts=len(ctxs), seconds=secs,
                tokens_per_s=n_rows / max(secs, 1e-9),
                prepend_bos=getattr(getattr(model, "tokenizer", None), "bos_token_id",
                                    None) is not None)
    (out / "store.json").write_text(json.dumps(dict(
        hooks=hooks, widths=list(widths), n_tokens=n_rows, dtype=dtype, meta=meta), indent=2))
    return ActivationStore(out, tuple(hooks), tuple(widths), n_rows, dtype, meta)


def _check_store_hooks(model, hooks) -> list[str]:
    """Exact, distinct hook names of this model (a str is one hook, never its characters)."""
    from neuroprobe.core.hooks import resolve_hooks

    hooks = check_name_list(hooks, "hooks", what="hook name")
    dup = sorted({h for h in hooks if hooks.count(h) > 1})
    if dup:
        raise NeuroprobeError(f"hooks repeats {dup}; pass each hook once.")
    globbed = [h for h in hooks if any(c in h for c in "*?[")]
    if globbed:
        raise NeuroprobeError(
            f"hooks must be exact hook names, not patterns; got {globbed}. List the names, "
            "e.g. ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']."
        )
    resolve_hooks(model, hooks, argname="hooks")  # unknown names, with close matches
    return hooks


def _widths(model, hooks: list[str], example: list[int]) -> list[int]:
    """Width of each hook's output (the engine's :func:`hook_widths`, one token).

    A hook that the model's forward never reaches is named first (from a one-token pass
    that records which hooks fire), with the fix, before anything is written."""
    from neuroprobe.core.engine import hook_shapes, hook_widths
    from neuroprobe.core.hooks import resolve_hooks

    reqs = resolve_hooks(model, hooks, argname="hooks")
    canonical = {r.name: r.canonical for r in reqs}
    fired = hook_shapes(model, list(canonical.values()),
                        torch.as_tensor([example[:1]], dtype=torch.long))
    silent = [h for h in hooks if canonical.get(h, h) not in fired]
    if silent:
        raise _not_fired(silent)
    _, widths = hook_widths(model, reqs, torch.as_tensor(example, dtype=torch.long))
    return [widths[canonical.get(h, h)] for h in hooks]


def _not_fired(hooks: list[str]) -> NeuroprobeError:
    return NeuroprobeError(
        f"hook(s) {hooks} did not fire on a forward pass of this model (its forward never "
        "reaches them), so nothing can be harvested there; pass hooks that every forward "
        "pass reaches, e.g. 'blocks.0.hook_resid_post' (see npb.hook_names(model))."
    )
