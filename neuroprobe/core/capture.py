"""Hook capture: record chosen hooks for every token as a time series, or stream probes.

``record`` tokenizes each prompt exactly as ``model.to_tokens`` does, batches prompts with
left padding and an explicit attention mask (built from token counts, never from pad ids),
and writes each batch's activations straight into one preallocated ``[T, N]`` buffer from
inside the hooks -- no ``ActivationCache`` of the whole run is ever held.  When ``[T, N]``
would exceed the memory budget the buffer is a disk-backed memmap instead.

The forward passes, padding, stop-at-layer and hook widths are the core engine's
(:mod:`neuroprobe.core.engine`); what is capture's own is the plan of which rows each prompt
contributes (``_Plan``) and the buffer they are written into.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from neuroprobe.core.engine import (
    hook_widths,
    hooked,
    is_language_model,
    model_dtype,
    pad_left,
    pad_token_id,
    stop_layer,
)
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.hooks import (
    HookRequest,
    HookSpec,
    check_hooked_model,
    hook_names,
    resolve_hooks,
)
from neuroprobe.core.probes import BatchMeta, TopK
from neuroprobe.core.recording import Recording
from neuroprobe.core.shards import Shard
from neuroprobe.core.storage import check_memory_budget, memmap_buffer
from neuroprobe.core.units import UnitIndex, project
from neuroprobe.core.validation import (
    check_bool,
    check_float_dtype,
    check_index_list,
    check_int,
    check_model,
    check_name_list,
    check_positive_int,
    check_writable_path,
    warn_degenerate,
)

__all__ = ["record", "stream", "record_generation", "hook_names", "tokenize_prompts",
           "shards", "CorpusShard"]

Positions = Union[str, slice, Callable[[int, int], Sequence[int]]]
#: what ``prompts=`` accepts: strings, token-id sequences (each its own length), a
#: ``[batch, pos]`` tensor of token ids, ``[batch, ...]`` inputs of a plain
#: HookedRootModule, or any iterable of prompts (a ``datasets.Dataset``)
Prompts = Union[
    Sequence[str], Sequence[Sequence[int]], Sequence[Int[Tensor, " _pos"]],
    Int[Tensor, "batch pos"], Float[Tensor, "batch ..."], Iterable,
]


# ---- inputs ---------------------------------------------------------------------------------
def _as_prompt_list(prompts, text_column: str) -> list:
    if not isinstance(text_column, str):
        raise NeuroprobeError(
            f"text_column must be a column name (str); got {type(text_column).__name__} "
            f"{text_column!r}."
        )
    if prompts is None:
        raise NeuroprobeError("prompts is None; pass a list of strings or token-id sequences.")
    if isinstance(prompts, str):
        raise NeuroprobeError(
            "prompts must be a list of prompts; got a single str. Wrap it: prompts=[text]."
        )
    if hasattr(prompts, "column_names") and hasattr(prompts, "__getitem__"):  # datasets.Dataset
        if text_column not in prompts.column_names:
            raise NeuroprobeError(
                f"the dataset has no column {text_column!r}; columns are "
                f"{prompts.column_names}. Pass text_column=..."
            )
        prompts = prompts[text_column]
    if isinstance(prompts, Tensor) and prompts.ndim == 2:
        return list(prompts)
    out = list(prompts) if isinstance(prompts, Iterable) else None
    if out is None:
        raise NeuroprobeError(f"prompts must be iterable; got {type(prompts).__name__}.")
    if not out:
        raise NeuroprobeError("prompts is empty; pass at least one prompt.")
    return out


def tokenize_prompts(
    model, prompts: Prompts, *, prepend_bos: bool | None = None, truncate: bool = False,
    text_column: str = "text",
) -> list[Int[Tensor, " _pos"]]:
    """Token ids of each prompt, exactly as ``model.to_tokens(prompt)`` gives them.

    Strings are tokenized (BOS prepended per the model's default unless ``prepend_bos``
    says otherwise); token-id sequences (lists or 1-D tensors) are used as given.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> [t.tolist() for t in npb.tokenize_prompts(model, [[1, 2, 3], [4, 5]])]
    [[1, 2, 3], [4, 5]]
    """
    check_model(model)
    if prepend_bos is not None:
        prepend_bos = check_bool(prepend_bos, "prepend_bos")
    truncate = check_bool(truncate, "truncate")
    items = _as_prompt_list(prompts, text_column)
    n_ctx = int(getattr(getattr(model, "cfg", None), "n_ctx", None) or 1 << 30)
    d_vocab = int(getattr(getattr(model, "cfg", None), "d_vocab", None) or 1 << 62)
    out = []
    for i, p in enumerate(items):
        if isinstance(p, str):
            if not p.strip():
                raise NeuroprobeError(
                    f"prompts[{i}] is an empty string; remove it or give it some text."
                )
            if getattr(model, "tokenizer", None) is None:
                raise NeuroprobeError(
                    f"prompts[{i}] is a string but this model has no tokenizer (a native "
                    "model?); pass token-id sequences instead, e.g. [[1, 5, 9], [2, 7]]."
                )
            ids = model.to_tokens(p, prepend_bos=prepend_bos, truncate=False)[0].cpu()
        else:
            if isinstance(p, (bytes, dict)) or not isinstance(p, (Tensor, np.ndarray, Iterable)):
                raise NeuroprobeError(
                    f"prompts[{i}] must be a str or a non-empty 1-D sequence of token ids; "
                    f"got {type(p).__name__} {p!r}."
                )
            try:
                ids = torch.as_tensor(p.tolist() if isinstance(p, (Tensor, np.ndarray))
                                      else list(p))
            except (TypeError, ValueError, RuntimeError):
                raise NeuroprobeError(
                    f"prompts[{i}] must be a str or a non-empty 1-D sequence of integer token "
                    f"ids; got {type(p).__name__} that is not one."
                ) from None
            if ids.dtype == torch.bool:
                raise NeuroprobeError(
                    f"prompts[{i}] holds booleans, not token ids; pass integer token ids."
                )
            if ids.ndim != 1 or ids.numel() == 0 or ids.is_floating_point():
                raise NeuroprobeError(
                    f"prompts[{i}] must be a str or a non-empty 1-D sequence of token ids; "
                    f"got {type(p).__name__} with shape {tuple(ids.shape)}."
                )
            if int(ids.min()) < 0 or int(ids.max()) >= d_vocab:
                raise NeuroprobeError(
                    f"prompts[{i}] has token ids outside [0, {d_vocab}) (min {int(ids.min())},"
                    f" max {int(ids.max())}); the model's vocabulary has {d_vocab} tokens."
                )
            ids = ids.long()
        if ids.numel() > n_ctx:
            if not truncate:
                raise NeuroprobeError(
                    f"prompts[{i}] has {ids.numel()} tokens, longer than the model's context "
                    f"of {n_ctx}; shorten it or pass truncate=True to keep its first {n_ctx}."
                )
            ids = ids[:n_ctx]
        out.append(ids)
    return out


def _starts_with_bos(model, prepend_bos: bool | None, items: list,
                     toks: list[Tensor]) -> list[bool]:
    """Whether each prompt's first token is a BOS: prepended to a string by the model, or
    already the first id of a token-id prompt (when the tokenizer has a BOS token)."""
    default = bool(getattr(model.cfg, "default_prepend_bos", True))
    pb = default if prepend_bos is None else prepend_bos
    tk = getattr(model, "tokenizer", None)
    bos_id = getattr(tk, "bos_token_id", None) if tk is not None else None
    return [pb if isinstance(p, str) else (bos_id is not None and int(t[0]) == int(bos_id))
            for p, t in zip(items, toks)]


def _check_positions(positions) -> None:
    """Refuse a ``positions`` argument before any prompt is tokenized."""
    if isinstance(positions, str):
        if positions not in ("all", "last"):
            raise NeuroprobeError(
                f"positions={positions!r}; use 'all', 'last', a slice, or a callable "
                "(prompt_index, n_tokens) -> positions."
            )
    elif isinstance(positions, slice):
        for part in ("start", "stop", "step"):
            v = getattr(positions, part)
            if v is not None:
                check_int(v, f"positions=slice(...).{part}")
        if positions.step is not None and positions.step < 1:
            raise NeuroprobeError(
                f"positions=slice(...) has step {positions.step}; use a step >= 1 (rows of a "
                "recording are time points, in increasing order)."
            )
    elif not callable(positions):
        raise NeuroprobeError(
            f"positions must be 'all', 'last', a slice or a callable (prompt_index, n_tokens) "
            f"-> positions; got {type(positions).__name__} {positions!r}. For fixed positions "
            f"use positions=lambda i, n: {positions!r}."
        )


def _select_positions(n: int, positions: Positions, prompt_i: int, skip_first: bool) -> Tensor:
    start = 1 if skip_first else 0
    if isinstance(positions, str):
        if positions == "all":
            return torch.arange(start, n)
        if positions == "last":
            return torch.tensor([n - 1]) if n - 1 >= start else torch.zeros(0, dtype=torch.long)
        raise NeuroprobeError(
            f"positions={positions!r}; use 'all', 'last', a slice, or a callable "
            "(prompt_index, n_tokens) -> positions."
        )
    if isinstance(positions, slice):
        pos = torch.arange(n)[positions]
    elif callable(positions):
        try:
            got = positions(prompt_i, n)
        except TypeError as e:
            raise NeuroprobeError(
                f"positions: the callable {positions!r} failed when called as "
                f"positions(prompt_index={prompt_i}, n_tokens={n}) ({e}); it must take "
                "(prompt_index, n_tokens) and return token positions."
            ) from None
        where = f"positions callable's result for prompt {prompt_i} ({n} tokens)"
        idx = check_index_list(got, where, size=n, allow_empty=True, what="position")
        if any(b <= a for a, b in zip(idx, idx[1:])):
            raise NeuroprobeError(
                f"{where} is {idx[:8]}{' ...' if len(idx) > 8 else ''}: positions must be in "
                "increasing order (rows of a recording are time points); return "
                "sorted(positions)."
            )
        pos = torch.as_tensor(idx, dtype=torch.long)
    else:
        raise NeuroprobeError(
            f"positions must be 'all', 'last', a slice or a callable; got {positions!r}."
        )
    return pos[pos >= start]


# ---- plan -----------------------------------------------------------------------------------
@dataclass
class _Plan:
    """Which rows each prompt contributes, and where they go."""

    tokens: list[Tensor]
    positions: list[Tensor]  # selected positions per prompt
    offsets: np.ndarray  # first row of each prompt in the time series
    n_rows: int


def _plan(model, prompts, positions, include_bos, prepend_bos, truncate, text_column,
          first_prompt: int = 0) -> _Plan:
    _check_positions(positions)
    include_bos = check_bool(include_bos, "include_bos")
    items = _as_prompt_list(prompts, text_column)
    if is_language_model(model):
        toks = tokenize_prompts(model, items, prepend_bos=prepend_bos, truncate=truncate,
                                text_column=text_column)
        bos = _starts_with_bos(model, prepend_bos, items, toks)
        pos = [_select_positions(t.numel(), positions, i + first_prompt, b and not include_bos)
               for i, (t, b) in enumerate(zip(toks, bos))]
    else:  # a plain HookedRootModule: each input is one time point
        toks = []
        for i, x in enumerate(items):
            try:
                t = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError):
                raise NeuroprobeError(
                    f"prompts[{i}] must be a numeric input tensor for this {type(model).__name__}"
                    f" (one time point each); got {type(x).__name__} {x!r:.60}."
                ) from None
            if t.shape != (toks[0].shape if toks else t.shape) or t.dtype == torch.bool:
                raise NeuroprobeError(
                    f"prompts[{i}] has shape {tuple(t.shape)} and dtype {t.dtype}; every input "
                    f"must be numeric and have the shape of prompts[0], {tuple(toks[0].shape)}."
                )
            toks.append(t)
        pos = [torch.zeros(1, dtype=torch.long) for _ in toks]
    counts = np.array([p.numel() for p in pos], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    if not counts.sum():
        raise NeuroprobeError(
            f"positions={positions!r} (include_bos={include_bos}) selects no token in any of "
            f"the {len(toks)} prompt(s) (longest: {max(t.numel() for t in toks)} tokens); "
            "nothing would be recorded. Choose positions inside the prompts."
        )
    return _Plan(toks, pos, offsets, int(counts.sum()))


def _batches(n: int, batch_size: int):
    for s in range(0, n, batch_size):
        yield list(range(s, min(n, s + batch_size)))


def _available_memory() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 << 30


def _allocate(T: int, N: int, dtype: torch.dtype, budget: int | None,
              storage_dir: str | None) -> tuple[Tensor, str | None]:
    nbytes = T * N * torch.tensor([], dtype=dtype).element_size()
    budget = check_memory_budget(budget)
    budget = int(_available_memory() * 0.5) if budget is None else budget
    if nbytes <= budget:
        return torch.empty((T, N), dtype=dtype), None
    if storage_dir is not None:
        storage_dir = str(check_writable_path(storage_dir, "storage_dir", directory=True))
    buf, path = memmap_buffer(T, N, dtype, storage_dir)
    warnings.warn(
        f"record: the recording [{T} x {N}] needs {nbytes / 2**30:.2f} GiB, over the memory "
        f"budget of {budget / 2**30:.2f} GiB; writing it to a disk-backed memmap at {path}"
        + (" (deleted with the recording)." if storage_dir is None else "."),
        stacklevel=3,
    )
    return buf, path


@dataclass
class _Batch:
    """One batch of prompts as the model sees it, and where its kept rows go."""

    x: Tensor  # [batch, pos] left-padded token ids, or [batch, ...] inputs
    mask: Tensor | None  # [batch, pos] attention mask (None for non-language models)
    b: Tensor | None  # batch row of every kept token (None: every input is one row)
    s: Tensor | None  # its position in the padded batch
    dense: bool  # no padding and every position kept: the rows are a view of the output
    dest: Tensor  # global time index of every kept row
    prompt_index: Tensor
    position: Tensor
    token_ids: Tensor | None


def _lm_batch(plan: _Plan, idx: list[int], pad_id: int) -> _Batch:
    toks = [plan.tokens[i] for i in idx]
    ids, mask = pad_left(toks, pad_id)
    S = ids.shape[1]
    bi, si, dest, pidx, ppos = [], [], [], [], []
    for k, i in enumerate(idx):
        p = plan.positions[i]
        L = toks[k].numel()
        bi.append(torch.full_like(p, k))
        si.append(p + (S - L))
        dest.append(torch.arange(p.numel()) + int(plan.offsets[i]))
        pidx.append(torch.full_like(p, i))
        ppos.append(p)
    b, s = torch.cat(bi), torch.cat(si)
    return _Batch(ids, mask, b, s, b.numel() == ids.numel(), torch.cat(dest), torch.cat(pidx),
                  torch.cat(ppos), ids[b, s])


def _input_batch(model, plan: _Plan, idx: list[int]) -> _Batch:
    x = torch.stack([plan.tokens[i] for i in idx]).to(model_dtype(model))
    dest = torch.as_tensor([int(plan.offsets[i]) for i in idx])
    return _Batch(x, None, None, None, False, dest, torch.as_tensor(idx),
                  torch.zeros(len(idx), dtype=torch.long), None)


def _progress(batches: list, progress: bool | None, desc: str):
    if progress is None:
        progress = sys.stderr.isatty() and len(batches) > 4
    try:
        from tqdm.auto import tqdm

        return tqdm(batches, desc=desc, disable=not progress, unit="batch")
    except ImportError:  # pragma: no cover
        return batches


def _run(
    model, plan: _Plan, reqs: list[HookRequest], probe_reqs: list[tuple[Any, list[HookRequest]]],
    *, buffer: Tensor | None, col_offsets: dict[int, int], batch_size: int,
    progress: bool | None, desc: str,
) -> None:
    """One pass over the data: hooks write into ``buffer`` and feed probes, batch by batch.

    The engine runs each batch until every hook has fired; the hooks select the batch's
    kept rows (a view when nothing is padded or skipped) and write them straight into the
    batch's contiguous range of ``buffer``.
    """
    lm = is_language_model(model)
    pad_id = pad_token_id(model)
    stop = stop_layer(model, list(reqs) + [r for _, rs in probe_reqs for r in rs])
    by_canon: dict[str, list[tuple[str, Any]]] = {}
    for j, r in enumerate(reqs):
        by_canon.setdefault(r.canonical, []).append(("rec", j))
    for pi, (_, rs) in enumerate(probe_reqs):
        for r in rs:
            by_canon.setdefault(r.canonical, []).append(("probe", (pi, r.name)))
    state: dict[str, Any] = {}
    finite: dict[str, Tensor] = {}  # per hook: every batch so far free of NaN/inf
    names = {r.canonical: r.name for r in reqs}
    for _, rs in probe_reqs:
        for r in rs:
            names.setdefault(r.canonical, r.name)

    def make_hook(canonical: str):
        consumers = by_canon[canonical]

        def fn(act: Tensor, hook) -> None:
            if not lm:
                sel = act
            elif state["dense"]:  # no padding, every position kept: a view, no copy
                sel = act.reshape(act.shape[0] * act.shape[1], *act.shape[2:])
            else:
                sel = act[state["b"], state["s"]]
            sel = sel.reshape(sel.shape[0], int(np.prod(sel.shape[1:])))
            _note_finite(finite, canonical, sel)
            for kind, key in consumers:
                if kind == "rec":
                    v = _recorded_columns(reqs[key], sel)
                    a = col_offsets[key]
                    # a batch's rows are one contiguous range of the time series
                    buffer[state["r0"]:state["r1"], a:a + v.shape[1]] = v.to(
                        device=buffer.device, dtype=buffer.dtype)
                else:
                    state["probe_acts"][key[0]][key[1]] = sel

        return fn

    with hooked(model, [(c, make_hook(c)) for c in by_canon]) as fwd:
        for idx in _progress(list(_batches(len(plan.tokens), batch_size)), progress, desc):
            batch = _lm_batch(plan, idx, pad_id) if lm else _input_batch(model, plan, idx)
            if lm:
                state.update(b=batch.b.to(fwd.device), s=batch.s.to(fwd.device),
                             dense=batch.dense)
            d = batch.dest
            state["r0"] = int(d[0]) if d.numel() else 0
            state["r1"] = state["r0"] + d.numel()
            state["probe_acts"] = [{} for _ in probe_reqs]
            fwd.run_until_fired(batch.x, attention_mask=batch.mask,
                                stop_at_layer=stop)
            if probe_reqs:
                meta = BatchMeta(prompt_index=batch.prompt_index, position=batch.position,
                                 time_index=batch.dest, token_ids=batch.token_ids)
                for (probe, _), acts in zip(probe_reqs, state["probe_acts"]):
                    probe.update(acts, meta)
    bad = [names[c] for c, ok in finite.items() if not bool(ok)]
    if bad:
        warn_degenerate(
            f"{desc}: hook(s) {', '.join(repr(h) for h in bad[:6])}"
            f"{' ...' if len(bad) > 6 else ''} gave NaN or inf activations (NaN weights or an "
            "overflow, e.g. float16); statistics, rankings and top-k examples computed from "
            "them are not meaningful. Check the model's weights or record in float32.",
            stacklevel=4,
        )


def _hook_widths(model, reqs: list[HookRequest], plan: _Plan):
    """:func:`hook_widths` on the first prompt; for a plain HookedRootModule an input its
    layers cannot take (a wrong width) is named as such, not as a raw matmul error."""
    try:
        return hook_widths(model, reqs, plan.tokens[0])
    except RuntimeError as e:
        if is_language_model(model):
            raise
        raise NeuroprobeError(
            f"prompts: an input of shape {tuple(plan.tokens[0].shape)} could not be run through "
            f"this {type(model).__name__} ({str(e).splitlines()[0][:120]}); pass inputs "
            "[n, ...] of the shape its first layer takes."
        ) from None


def _note_finite(finite: dict[str, Tensor], key: str, x: Tensor) -> None:
    """AND into ``finite[key]`` whether ``x`` is free of NaN/inf, on ``x``'s device: one
    reduction per batch (NaN and inf survive a sum; half types are summed in float32), and
    no device synchronisation until the flags are read once, after the pass."""
    if not x.is_floating_point() or x.numel() == 0:
        return
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else None
    ok = torch.isfinite(x.sum(dtype=acc))
    finite[key] = ok if key not in finite else finite[key] & ok


def _recorded_columns(req: HookRequest, acts: Tensor) -> Tensor:
    """The columns ``record`` keeps of one hook's ``[n, d]`` output: its directions
    projected, its chosen neurons, or everything."""
    if req.directions is not None:
        return project(acts, req.directions)
    if req.indices is not None:
        return acts[:, torch.as_tensor(req.indices, device=acts.device)]
    return acts


def _token_strings(model, token_ids: Tensor) -> list[str] | None:
    """Each token id as the text it decodes to (None without a tokenizer)."""
    tk = getattr(model, "tokenizer", None)
    if tk is None:
        return None
    return [tk.convert_tokens_to_string([t]) for t in tk.convert_ids_to_tokens(token_ids.tolist())]


def _check_indices(reqs: list[HookRequest], widths: dict[str, int]) -> None:
    for r in reqs:
        w = widths[r.canonical]
        if r.indices is not None:
            bad = r.indices[(r.indices < 0) | (r.indices >= w)]
            if bad.size:
                raise NeuroprobeError(
                    f"index {int(bad[0])} is out of range for hook {r.name!r}, whose valid "
                    f"indices are 0..{w - 1}."
                )
        if r.directions is not None and r.directions.width != w:
            raise NeuroprobeError(
                f"Directions at {r.name!r} have width {r.directions.width}, but the hook's "
                f"output has width {w}; build the directions with that width."
            )


def _check_no_repeated_units(reqs: list[HookRequest], widths: dict[str, int]) -> None:
    """Refuse two requests that record the same neuron (``[h, (h, [3])]``): the recording
    would hold two columns with one identity."""
    taken: dict[tuple[str, str], tuple[np.ndarray, str]] = {}
    for r in reqs:
        if r.directions is not None:
            continue
        idx = np.arange(widths[r.canonical]) if r.indices is None else r.indices
        key = (r.canonical, r.name)
        for (canon, name), (prev, who) in taken.items():
            if canon == r.canonical:
                both = np.intersect1d(prev, idx)
                if both.size:
                    raise NeuroprobeError(
                        f"hooks: neuron(s) {both[:5].tolist()} of {name!r} are requested twice "
                        f"(by {who} and by {_req_repr(r)}); each unit can be recorded once."
                    )
        taken[key] = (idx, _req_repr(r))


def _req_repr(r: HookRequest) -> str:
    return repr(r.name) if r.indices is None else f"({r.name!r}, {r.indices[:4].tolist()}...)"


def _unit_index(reqs: list[HookRequest], widths: dict[str, int]) -> tuple[UnitIndex, dict]:
    ui = UnitIndex()
    col: dict[int, int] = {}
    for j, r in enumerate(reqs):
        col[j] = len(ui)
        if r.directions is not None:
            ui = ui.extended(r.name, "direction", np.arange(r.directions.n_directions),
                             r.directions.name)
        elif r.indices is not None:
            ui = ui.extended(r.name, "neuron", r.indices.astype(np.int64))
        else:
            ui = ui.extended(r.name, "neuron", np.arange(widths[r.canonical]))
    return ui, col


def _as_probe_list(probes, name: str = "probes", *, allow_empty: bool = True) -> list:
    """``probes`` as a list of objects following the Probe protocol, else a NeuroprobeError."""
    if hasattr(probes, "update") and hasattr(probes, "hooks"):
        raise NeuroprobeError(
            f"{name} must be a list of probes; got one {type(probes).__name__}. Wrap it: "
            f"{name}=[probe]."
        )
    if isinstance(probes, (str, bytes, dict)) or not isinstance(probes, Iterable):
        raise NeuroprobeError(
            f"{name} must be a list of probes (e.g. [npb.TopK('blocks.0.mlp.hook_post')]); got "
            f"{type(probes).__name__} {probes!r}."
        )
    out = list(probes)
    for i, p in enumerate(out):
        if not (hasattr(p, "hooks") and hasattr(p, "update")):
            raise NeuroprobeError(
                f"{name}[{i}] must follow the Probe protocol (a .hooks attribute and an "
                f".update(acts, meta) method, e.g. npb.TopK or npb.RunningCovariance); got "
                f"{type(p).__name__} {p!r}."
            )
    if not out and not allow_empty:
        raise NeuroprobeError(
            f"stream({name}=...) is empty; pass at least one probe, e.g. "
            "[npb.TopK('blocks.0.mlp.hook_post')]."
        )
    return out


def _probe_requests(model, probes) -> list[tuple[Any, list[HookRequest]]]:
    out = []
    for p in _as_probe_list(probes):
        inner = p.probe if isinstance(p, _ShardView) else p
        argname = f"{type(inner).__name__}.hooks"
        hooks = check_name_list(p.hooks, argname, what="hook name") \
            if isinstance(p.hooks, str) else p.hooks
        out.append((p, resolve_hooks(model, hooks, argname=argname)))
    return out


def _check_probe_indices(probe, widths: dict[str, int], reqs: list[HookRequest]) -> None:
    """A probe's ``indices`` (TopK) must lie inside what it watches: the hook's width, or
    the number of directions of its Directions target."""
    inner = probe.probe if isinstance(probe, _ShardView) else probe
    idx = inner.indices if isinstance(inner, TopK) else None
    if idx is None or not reqs:
        return
    dirs = getattr(inner, "_dirs", None)
    size = dirs.n_directions if dirs is not None else widths.get(reqs[0].canonical)
    if size is None:
        return
    bad = [int(i) for i in idx if not 0 <= int(i) < size]
    if bad:
        what = "directions" if dirs is not None else "neurons"
        raise NeuroprobeError(
            f"{type(inner).__name__}(indices=...) has {bad[:5]} out of range: "
            f"{reqs[0].name!r} has {size} {what} (valid indices 0..{size - 1})."
        )


class _ShardView:
    """A probe seen through a shard's offsets: global prompt/time indices in every batch."""

    def __init__(self, probe, shard: Shard) -> None:
        self.probe, self.shard, self.hooks = probe, shard, probe.hooks

    def update(self, acts: dict, meta: BatchMeta) -> None:
        if self.shard.first_prompt or self.shard.first_time:
            meta = BatchMeta(meta.prompt_index + self.shard.first_prompt, meta.position,
                             meta.time_index + self.shard.first_time, meta.token_ids)
        self.probe.update(acts, meta)


def _check_labels(labels, n_prompts: int) -> list | None:
    """``labels``: None, or one label per prompt in a list-like (never a string split into
    characters)."""
    if labels is None:
        return None
    if isinstance(labels, (str, bytes, dict)) or not isinstance(labels, Iterable):
        raise NeuroprobeError(
            f"labels must be a list with one label per prompt; got {type(labels).__name__} "
            f"{labels!r}. For one label for every prompt use labels=[label] * len(prompts)."
        )
    labels = list(labels)
    if len(labels) != n_prompts:
        raise NeuroprobeError(
            f"labels has {len(labels)} entries for {n_prompts} prompts; give one "
            "label per prompt."
        )
    return labels


def _check_storage_dir(storage_dir) -> None:
    if storage_dir is not None and not isinstance(storage_dir, (str, os.PathLike)):
        raise NeuroprobeError(
            f"storage_dir must be a directory path (str or Path) or None; got "
            f"{type(storage_dir).__name__} {storage_dir!r}."
        )
    if storage_dir is not None and os.path.exists(storage_dir) \
            and not os.path.isdir(storage_dir):
        raise NeuroprobeError(f"storage_dir={str(storage_dir)!r} is a file; pass a directory.")


def _check_progress(progress) -> bool | None:
    return None if progress is None else check_bool(progress, "progress")


def _model_name(model) -> str:
    cfg = getattr(model, "cfg", None)
    return str(getattr(cfg, "model_name", type(model).__name__))


# ---- public API -----------------------------------------------------------------------------
def record(
    model,
    prompts: Prompts,
    hooks: HookSpec | Sequence[HookSpec] = "blocks.*.hook_resid_post",
    *,
    batch_size: int = 16,
    positions: Positions = "all",
    include_bos: bool = True,
    prepend_bos: bool | None = None,
    truncate: bool = False,
    labels: Sequence | None = None,
    probes: Sequence[Any] = (),
    dtype: torch.dtype = torch.float32,
    memory_budget: int | None = None,
    storage_dir: str | None = None,
    progress: bool | None = None,
    text_column: str = "text",
) -> Recording:
    """Record hooks for every token of every prompt as one time series ``[T, N]``.

    Parameters
    ----------
    model : TransformerBridge or HookedRootModule
        From :func:`neuroprobe.load_model`.
    prompts : list of str, list of token-id sequences, datasets.Dataset, or Tensor
        Strings are tokenized like ``model.to_tokens``; token ids are used as given; a
        ``datasets.Dataset`` uses its ``text_column``.  For a non-language
        ``HookedRootModule`` this is a tensor ``[n, ...]`` of inputs, one time point each.
    hooks : str, callable, Directions, (hook, indices), or a list of them
        Exact names (canonical or TransformerLens aliases), glob patterns
        (``"blocks.*.mlp.hook_post"``), a callable ``name -> bool``, a
        :class:`~neuroprobe.Directions` (projected inside the hook, so only
        ``T x n_directions`` is stored), or ``(hook, indices)`` to keep some neurons.
    batch_size : int
        Prompts per forward pass (left-padded with an attention mask).
    positions : "all", "last", slice, or callable
        Which token positions to record per prompt; a callable gets
        ``(prompt_index, n_tokens)`` and returns integer positions in ``[0, n_tokens)``,
        increasing and each once (anything else raises rather than being truncated or
        reordered).  Positions that select no token in any prompt raise.
    include_bos : bool
        Keep the BOS token's row (it is an attention sink, identical in every prompt; set
        False for time-series analyses).  BOS is the token the model prepends to a string
        prompt, or the first id of a token-id prompt when it equals the tokenizer's BOS id.
    prepend_bos : bool, optional
        Override the model's default for string prompts.
    truncate : bool
        Cut prompts longer than the context instead of raising.
    labels : sequence, optional
        One label per prompt (a list, not a string), carried to every row (``rec.labels``).
    probes : sequence of probes
        Streaming probes fed in the same pass (see :mod:`neuroprobe.core.probes`).
    dtype : torch.dtype
        Storage dtype of ``acts``: a floating dtype (an integer dtype would truncate every
        activation and is refused).
    memory_budget : int, optional
        Bytes allowed for ``acts`` in memory (default: half the free memory); above it the
        recording goes to a disk-backed memmap (in ``storage_dir``) with a warning.
    progress : bool, optional
        A tqdm bar (default: only on a terminal, for more than 4 batches).

    Returns
    -------
    Recording

    Warns
    -----
    NeuroprobeWarning
        Once per call, naming the hooks, when any activation is NaN or inf (NaN weights, a
        float16 overflow): they are recorded as they are, and nothing computed from them is
        meaningful.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> rec = npb.record(model, [[1, 2, 3], [4, 5]], hooks="blocks.*.mlp.hook_post")
    >>> rec.acts.shape, rec.units[33], rec.prompt_index.tolist()
    (torch.Size([5, 64]), ('blocks.1.mlp.hook_post', 1), [0, 0, 0, 1, 1])
    """
    check_hooked_model(model)
    batch_size = check_positive_int(batch_size, "batch_size")
    dtype = torch.float32 if dtype is None else check_float_dtype(dtype, "dtype")
    check_memory_budget(memory_budget)
    _check_storage_dir(storage_dir)
    progress = _check_progress(progress)
    probes = _as_probe_list(probes)
    reqs = resolve_hooks(model, hooks)
    plan = _plan(model, prompts, positions, include_bos, prepend_bos, truncate, text_column)
    labels = _check_labels(labels, len(plan.tokens))
    lm = is_language_model(model)
    reqs, widths = _hook_widths(model, reqs, plan)
    _check_indices(reqs, widths)
    _check_no_repeated_units(reqs, widths)
    preqs = _probe_requests(model, probes)
    for p, rs in preqs:
        if isinstance(p, TopK) and p.indices is not None:  # a one-token pass, when needed
            rs, pw = _hook_widths(model, rs, plan)
            _check_probe_indices(p, pw, rs)
    units, col = _unit_index(reqs, widths)
    buffer, path = _allocate(plan.n_rows, len(units), dtype, memory_budget, storage_dir)
    _run(model, plan, reqs, preqs, buffer=buffer, col_offsets=col,
         batch_size=batch_size, progress=progress, desc="record")
    pidx = torch.cat([torch.full((p.numel(),), i, dtype=torch.long)
                      for i, p in enumerate(plan.positions)])
    pos = torch.cat(plan.positions).long()
    token_ids = tokens = None
    if lm:
        token_ids = torch.cat([t[p] for t, p in zip(plan.tokens, plan.positions)]).long()
        tokens = _token_strings(model, token_ids)
    return Recording(
        acts=buffer, units=units, prompt_index=pidx, position=pos, token_ids=token_ids,
        tokens=tokens, prompt_labels=labels, n_prompts=len(plan.tokens),
        source=f"{_model_name(model)}: prompt tokens", storage=path,
    )


@dataclass(frozen=True)
class CorpusShard:
    """One contiguous piece of a corpus with its offsets (from :func:`shards`).

    Attributes
    ----------
    prompts : list
        The shard's prompts (strings or token-id sequences), in corpus order.
    shard : Shard
        Its offsets; pass it as ``stream(..., shard=piece.shard)``.
    n_rows : int
        Time points the shard contributes.
    """

    prompts: list
    shard: Shard
    n_rows: int


def shards(model, prompts, n: int, *, positions="all", include_bos: bool = True,
           prepend_bos: bool | None = None, truncate: bool = False,
           text_column: str = "text", align: int = 1) -> list[CorpusShard]:
    """Split a corpus into ``n`` contiguous shards, each with its global offsets.

    Offsets are computed the way :func:`neuroprobe.record` numbers rows (same tokenization,
    ``positions`` and ``include_bos``), so give ``stream`` the same options.  Empty shards
    (``n`` larger than the number of prompts) are dropped.  ``align`` cuts only before
    prompts whose index is a multiple of it: give ``stream``'s ``batch_size`` and every
    shard runs exactly the batches one process runs over the whole corpus (so float32
    results match one process's to the bit, not only to rounding: other batch shapes round
    matrix products differently in the last bits).

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    >>> parts = npb.shards(model, prompts, 2)
    >>> [(p.shard.first_prompt, p.shard.first_time, p.n_rows) for p in parts]
    [(0, 0, 5), (2, 5, 4)]
    >>> tops = [npb.stream(model, p.prompts, [npb.TopK("blocks.0.mlp.hook_post", k=2)],
    ...                    shard=p.shard)[0] for p in parts]
    >>> merged = tops[1].merge(tops[0])
    >>> merged.seen
    ((0, 3, 0, 9),)
    >>> [p.shard.first_prompt for p in npb.shards(model, [[1, 2]] * 7, 3, align=2)]
    [0, 4, 6]
    """
    n = check_positive_int(n, "n")
    align = check_positive_int(align, "align")
    items = _as_prompt_list(prompts, text_column)
    plan = _plan(model, items, positions, include_bos, prepend_bos, truncate, text_column)
    counts = np.array([p.numel() for p in plan.positions], dtype=np.int64)
    out: list[CorpusShard] = []
    starts = np.arange(0, len(items), align)  # where a cut may fall
    for idx in np.array_split(np.arange(starts.size), n):
        if idx.size == 0:
            continue
        a, b = int(starts[idx[0]]), min(len(items), int(starts[idx[-1]]) + align)
        out.append(CorpusShard(items[a:b], Shard(a, int(plan.offsets[a]), len(out)),
                               int(counts[a:b].sum())))
    return out


def stream(
    model,
    prompts: Prompts,
    probes: Sequence[Any],
    *,
    batch_size: int = 16,
    positions: Positions = "all",
    include_bos: bool = True,
    prepend_bos: bool | None = None,
    truncate: bool = False,
    progress: bool | None = None,
    text_column: str = "text",
    shard: Shard | None = None,
) -> list:
    """Run probes over prompts in one pass, storing nothing else; returns the probes.

    Use this for analyses too large to hold as a ``[T, N]`` recording: a running
    covariance over millions of tokens, top-k examples over a corpus, GLM statistics.

    Parameters
    ----------
    shard : Shard, optional
        Where ``prompts`` sit in the whole corpus (from :func:`neuroprobe.shards`): probes
        get global ``prompt_index`` / ``time_index``, so shards streamed separately merge
        exactly into one pass.  Default: the prompts are the whole corpus.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> cov, top = npb.stream(model, [[1, 2, 3], [4, 5, 6, 7]],
    ...                       [npb.RunningCovariance("blocks.0.hook_resid_post"),
    ...                        npb.TopK("blocks.0.mlp.hook_post", k=2)])
    >>> cov.count, tuple(cov.covariance.shape), tuple(top.values.shape)
    (7, (16, 16), (2, 32))
    """
    check_hooked_model(model)
    probes = _as_probe_list(probes, allow_empty=False)
    batch_size = check_positive_int(batch_size, "batch_size")
    progress = _check_progress(progress)
    shard = Shard() if shard is None else shard
    if not isinstance(shard, Shard):
        raise NeuroprobeError(
            f"stream(shard=...) must be a neuroprobe.Shard (from npb.shards); got "
            f"{type(shard).__name__}."
        )
    plan = _plan(model, prompts, positions, include_bos, prepend_bos, truncate, text_column,
                 first_prompt=shard.first_prompt)
    preqs = []
    for p, rs in _probe_requests(model, [_ShardView(p, shard) for p in probes]):
        rs, widths = _hook_widths(model, rs, plan)
        _check_indices(rs, widths)
        _check_probe_indices(p, widths, rs)
        preqs.append((p, rs))
    _run(model, plan, [], preqs, buffer=None, col_offsets={}, batch_size=batch_size,
         progress=progress, desc="stream")
    return probes


def record_generation(
    model,
    prompts: Prompts,
    max_new_tokens: int = 32,
    hooks: HookSpec | Sequence[HookSpec] = "blocks.*.hook_resid_post",
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    stop_at_eos: bool | None = None,
    labels: Sequence | None = None,
    batch_size: int = 16,
    dtype: torch.dtype = torch.float32,
    progress: bool | None = None,
) -> Recording:
    """Record hooks over *generated* tokens: one row per generation step.

    Tokens are generated in batches of ``batch_size`` prompts (left-padded, with an
    attention mask), then the generated positions are recorded in one teacher-forced pass
    over prompt + generated tokens with :func:`record`.  In a causal model the activation
    at position ``p`` depends only on tokens ``<= p``, so this is exact, and it cannot be
    broken by how a library threads its KV cache (transformers 5.24 broke TransformerLens's
    cached generation silently; see ``docs/capture.md``).

    Step ``k`` processes one input token -- the last prompt token at ``k = 0``, the
    ``k``-th generated token after that -- and produces the next token; its activations
    form row ``k`` of that prompt.  ``position`` is the input token's position in the full
    sequence and ``token_ids`` the input token.  Greedy by default; with ``do_sample=True``
    prompt ``i`` samples from its own generator seeded with ``seed + i``, so its
    continuation does not depend on ``batch_size`` or on the other prompts.

    Parameters
    ----------
    stop_at_eos : bool, optional
        Stop a prompt once it generates the end-of-sequence token (that step is kept).
        Default: True when the model has an EOS token (from its tokenizer or config),
        False otherwise; True for a model without one raises.
    temperature, top_k
        Sampling settings (used with ``do_sample=True``): ``temperature > 0``, ``top_k``
        None (all tokens) or an int in ``[1, d_vocab]``.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> rec = npb.record_generation(model, [[1, 2, 3]], max_new_tokens=4,
    ...                             hooks="blocks.0.hook_resid_post")
    >>> rec.acts.shape, rec.position.tolist()
    (torch.Size([4, 16]), [2, 3, 4, 5])
    """
    from neuroprobe.core.generation import check_sampling, eos_token_id, generate_tokens

    check_hooked_model(model)
    if not is_language_model(model):
        raise NeuroprobeError(
            "record_generation needs a language model (a TransformerBridge from "
            f"npb.load_model); got {type(model).__name__}."
        )
    max_new_tokens = check_positive_int(max_new_tokens, "max_new_tokens")
    batch_size = check_positive_int(batch_size, "batch_size")
    d_vocab = int(getattr(model.cfg, "d_vocab", 1 << 62))
    top_k = check_sampling(do_sample, temperature, top_k, d_vocab)
    do_sample = bool(do_sample)
    seed = check_int(seed, "seed", minimum=0)
    dtype = torch.float32 if dtype is None else check_float_dtype(dtype, "dtype")
    progress = _check_progress(progress)
    eos = eos_token_id(model)
    if stop_at_eos is not None:
        stop_at_eos = check_bool(stop_at_eos, "stop_at_eos")
    if stop_at_eos is None:
        stop_at_eos = eos is not None
    elif stop_at_eos and eos is None:
        raise NeuroprobeError(
            "stop_at_eos=True, but this model has no end-of-sequence token (no tokenizer and "
            "no cfg.eos_token_id); pass stop_at_eos=False (or leave it None) to generate "
            "max_new_tokens tokens per prompt."
        )
    items = _as_prompt_list(prompts, "text")
    toks = tokenize_prompts(model, items)
    n_ctx = int(getattr(model.cfg, "n_ctx", 1 << 30))
    for i, t in enumerate(toks):
        if t.numel() + max_new_tokens > n_ctx:
            raise NeuroprobeError(
                f"prompts[{i}] has {t.numel()} tokens; with max_new_tokens={max_new_tokens} "
                f"it exceeds the context of {n_ctx}. Lower max_new_tokens or shorten it."
            )
    labels = _check_labels(labels, len(toks))
    reqs = resolve_hooks(model, hooks)  # fail on a bad hook before generating anything
    del reqs
    if progress is None:
        progress = sys.stderr.isatty() and len(toks) > batch_size
    from tqdm.auto import tqdm

    new = generate_tokens(
        model, toks, max_new_tokens, do_sample=do_sample, temperature=float(temperature),
        top_k=top_k, seeds=[seed + i for i in range(len(toks))],
        eos_id=eos if stop_at_eos else None, batch_size=batch_size,
        progress=(lambda it: tqdm(it, desc="generate", unit="batch")) if progress else None,
    )
    # step k feeds token L-1+k and produces generated token k: the last one is never an input
    seqs = [torch.cat([t, g[:-1]]) for t, g in zip(toks, new)]
    first = [t.numel() - 1 for t in toks]
    rec = record(
        model, seqs, hooks, batch_size=batch_size, include_bos=True,
        positions=lambda i, n: range(first[i], n), labels=labels, dtype=dtype,
        progress=progress,
    )
    return replace(rec, source=f"{_model_name(model)}: generated tokens")
