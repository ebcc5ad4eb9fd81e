"""The one forward engine: every forward pass neuroprobe runs for analysis goes through here.

Capture, the MAE reader, spline codes and polytope density each used to pad, mask, move to
the device, stop early and attach hooks in their own way; a fix to one (left padding without
a mask is wrong by ~11%, pad ids equal EOS on many tokenizers, a hook left attached after an
exception corrupts every later pass) had to be made four times.  This module is the single
place for those rules:

* where a model lives: :func:`model_device`, :func:`model_dtype`;
* batches of token sequences: :func:`pad_left` -- left padding with the attention mask built
  from the token counts, never from pad ids;
* how far to run: :func:`stop_layer` (``stop_at_layer`` that still runs every requested
  hook's block) and the early exit of :meth:`HookedForward.run_until_fired`, which stops the
  pass as soon as every attached hook has fired (the final norm, unembedding and logits are
  then never computed);
* which hooks and how wide: :func:`resolve_hooks` (the one resolver of exact names,
  TransformerLens aliases, globs and callables, from :mod:`neuroprobe.core.hooks`),
  :func:`hook_shapes` and :func:`hook_widths` from a one-token pass;
* running hooks: :func:`hooked` attaches hooks for a series of passes under
  ``torch.no_grad()`` and removes them on exit, also after an exception; :func:`forward`
  and :func:`run_hooks` are the one-off passes built on it;
* where to start: :func:`resume_forward` runs a pass from the residual stream entering a
  block, skipping the blocks before it (a TransformerBridge's own ``start_at_layer`` still
  runs them and throws their output away).

The engine knows nothing of what the hooks do with the activations: capture writes them into
its preallocated buffer, the MAE reader keeps one unit, polytope replaces a hook's output.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.hooks import HookRequest, match_hook_names, resolve_hooks
from neuroprobe.core.units import hook_layer

__all__ = [
    "HookedForward",
    "block_list",
    "can_resume",
    "forward",
    "frozen_copy",
    "hook_shapes",
    "hook_width",
    "hook_widths",
    "hooked",
    "is_language_model",
    "match_hook_names",
    "model_device",
    "model_dtype",
    "pad_left",
    "pad_token_id",
    "resolve_hooks",
    "resume_forward",
    "run_hooks",
    "stop_layer",
]

#: one forward hook as TransformerLens takes it: ``(hook name, fn(act, hook) -> act | None)``
FwdHook = tuple[str, Callable]

_EMBED_PREFIXES = ("embed", "pos_embed", "hook_embed", "hook_pos_embed")


# ---- where the model lives ------------------------------------------------------------------
def is_language_model(model) -> bool:
    """Whether ``model`` takes token ids (a TransformerBridge: ``to_tokens`` and ``cfg``).

    Anything else is a plain ``HookedRootModule`` whose inputs are tensors, one input per
    time point.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.core.engine import is_language_model
    >>> is_language_model(npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8,
    ...     d_mlp=32, d_vocab=50, n_ctx=16, act_fn="relu", seed=0)))
    True
    """
    return hasattr(model, "to_tokens") and hasattr(model, "cfg")


def model_device(model) -> torch.device:
    """The device of the model's parameters (CPU for a model without parameters).

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.engine import model_device
    >>> model_device(torch.nn.Linear(2, 2))
    device(type='cpu')
    """
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def model_dtype(model) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 without one): the
    dtype floating inputs are cast to.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.engine import model_dtype
    >>> model_dtype(torch.nn.Linear(2, 2).double())
    torch.float64
    """
    try:
        return next(p for p in model.parameters() if p.is_floating_point()).dtype
    except StopIteration:
        return torch.float32


def frozen_copy(model, dtype: torch.dtype):
    """A deep copy of ``model`` in ``dtype`` with gradients off; ``model`` is untouched.

    The exact polytope walk needs float64 downstream pre-activations.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.engine import frozen_copy
    >>> lin = torch.nn.Linear(2, 2)
    >>> m = frozen_copy(lin, torch.float64)
    >>> m.weight.dtype, m.weight.requires_grad, lin.weight.dtype
    (torch.float64, False, torch.float32)
    """
    m = copy.deepcopy(model).to(dtype)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


# ---- batches of token sequences ---------------------------------------------------------------
def pad_token_id(model) -> int:
    """The id written into padding positions: the tokenizer's pad id, else 0.

    It only fills the padding; the attention mask of :func:`pad_left` is what hides it, so
    a pad id that equals EOS (SmolLM2: pad = eos = 2) is harmless.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.engine import pad_token_id
    >>> pad_token_id(torch.nn.Linear(2, 2))
    0
    """
    tok = getattr(model, "tokenizer", None)
    pad = getattr(tok, "pad_token_id", None) if tok is not None else None
    return 0 if pad is None else int(pad)


def pad_left(
    tokens: Sequence[Int[Tensor, " _pos"]], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Left-pad token sequences to one ``[batch, pos]`` batch, with its attention mask.

    The mask is 1 on each sequence's own tokens and 0 on the padding, built from the token
    counts -- never by comparing ids with ``pad_id``, which may be a real token.  Left
    padding keeps every sequence's last token at the last position.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.engine import pad_left
    >>> ids, mask = pad_left([torch.tensor([5, 6, 7]), torch.tensor([2])], pad_id=2)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [2, 2, 2]], [[1, 1, 1], [0, 0, 1]])
    """
    S = max(t.numel() for t in tokens)
    ids = torch.full((len(tokens), S), pad_id, dtype=torch.long)
    mask = torch.zeros((len(tokens), S), dtype=torch.long)
    for i, t in enumerate(tokens):
        ids[i, S - t.numel():] = t
        mask[i, S - t.numel():] = 1
    return ids, mask


# ---- how far to run ---------------------------------------------------------------------------
def stop_layer(model, hooks: Iterable[str | HookRequest]) -> int | None:
    """``stop_at_layer`` that still runs the block of every hook (None: the whole model).

    ``hooks`` are canonical hook names (or :class:`~neuroprobe.core.hooks.HookRequest`).
    Embedding hooks alone need no block (0); a hook after the blocks (``ln_final``,
    ``unembed``) needs the whole model; models without blocks (plain ``HookedRootModule``)
    always run whole.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.core.engine import stop_layer
    >>> model = npb.load_model(dict(n_layers=3, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> stop_layer(model, ["blocks.0.mlp.hook_out"]), stop_layer(model, ["hook_embed"])
    (1, 0)
    >>> stop_layer(model, ["blocks.2.hook_out"]) is None
    True
    """
    names = [h.canonical if isinstance(h, HookRequest) else str(h) for h in hooks]
    n_layers = int(getattr(getattr(model, "cfg", None), "n_layers", 0) or 0)
    if not n_layers or not is_language_model(model) or not names:
        return None
    layers = [hook_layer(n) for n in names]
    if any(layer < 0 and not n.startswith(_EMBED_PREFIXES) for layer, n in zip(layers, names)):
        return None  # a hook after the blocks: run the whole model
    last = max(layers)
    if last < 0:
        return 0  # embeddings only
    return last + 1 if last + 1 < n_layers else None


# ---- running hooks ----------------------------------------------------------------------------
class _AllHooksFired(Exception):
    """Raised from a hook once every hook attached to the pass has fired, to skip the rest
    of the forward pass: nothing after the last hook is needed."""


class HookedForward:
    """Forward passes of one model with a fixed set of hooks attached; made by :func:`hooked`.

    Inputs are moved to the model's device; every pass runs under ``torch.no_grad()``.
    ``n_forward`` counts the passes run.
    """

    def __init__(self, model, names: Sequence[str]) -> None:
        self.model = model
        self.device = model_device(model)
        self.n_forward = 0
        self._need = len(set(names))
        self._fired: set[str] = set()
        self._armed = False

    def _wrap(self, name: str, fn: Callable) -> Callable:
        fired = self._fired

        def hook(act: Tensor, hook):
            out = fn(act, hook)
            fired.add(name)
            if self._armed and len(fired) == self._need:
                raise _AllHooksFired
            return out

        return hook

    def _kwargs(self, attention_mask: Tensor | None, stop_at_layer: int | None) -> dict:
        kw: dict = {}
        if attention_mask is not None:
            kw["attention_mask"] = attention_mask.to(self.device)
        if stop_at_layer is not None:
            kw["stop_at_layer"] = stop_at_layer
        return kw

    def run(
        self, x: Shaped[Tensor, "batch ..."], *,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        stop_at_layer: int | None = None,
    ) -> Tensor:
        """One whole forward pass; returns the model's output (logits for a language model,
        the residual stream with ``stop_at_layer``)."""
        kw = self._kwargs(attention_mask, stop_at_layer)
        self._fired.clear()
        self.n_forward += 1
        return self.model(x.to(self.device), **kw)

    def run_until_fired(
        self, x: Shaped[Tensor, "batch ..."], *,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        stop_at_layer: int | None = None,
    ) -> None:
        """One forward pass that stops as soon as every attached hook has fired (the hooks
        see exactly what a whole pass would give them); the output is not computed."""
        kw = self._kwargs(attention_mask, stop_at_layer)
        self._fired.clear()
        self.n_forward += 1
        self._armed = True
        try:
            self.model(x.to(self.device), **kw)
        except _AllHooksFired:
            pass
        finally:
            self._armed = False


@contextmanager
def hooked(model, fwd_hooks: Sequence[FwdHook] = ()) -> Iterator[HookedForward]:
    """Attach ``fwd_hooks`` to ``model`` for the ``with`` block; they are removed on exit,
    also when a hook or the pass raises.

    Each hook is ``(name, fn)`` with ``fn(act, hook)`` returning a replacement or None;
    inside ``fn``, ``hook.name`` is the canonical name, so bind the name you asked for in a
    closure.  Passes run under ``torch.no_grad()``.

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> from neuroprobe.core.engine import hooked, pad_left
    >>> model = npb.load_model(dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> seen = {}
    >>> grab = lambda act, hook: seen.update(shape=tuple(act.shape))
    >>> ids, mask = pad_left([torch.tensor([1, 2, 3]), torch.tensor([4])], pad_id=0)
    >>> with hooked(model, [("blocks.0.hook_out", grab)]) as fwd:
    ...     fwd.run_until_fired(ids, attention_mask=mask, stop_at_layer=1)
    >>> seen["shape"], fwd.n_forward
    ((2, 3, 16), 1)
    """
    ok = not isinstance(fwd_hooks, (str, bytes)) and isinstance(fwd_hooks, Iterable)
    if ok:
        fwd_hooks = list(fwd_hooks)  # a generator is read once
        ok = all(isinstance(h, (tuple, list)) and len(h) == 2 and callable(h[1])
                 for h in fwd_hooks)
    if not ok:
        raise NeuroprobeError(
            "hooked(fwd_hooks=...) must be a list of (hook name, fn(act, hook)) pairs; got "
            f"{fwd_hooks!r:.120}."
        )
    names = [name for name, _ in fwd_hooks]
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise NeuroprobeError(
            f"hooked() takes exact hook names; got {bad[0]!r}. Resolve globs and callables "
            "first with resolve_hooks(model, ...) and pass each request's .canonical name."
        )
    fwd = HookedForward(model, names)
    wrapped = [(name, fwd._wrap(name, fn)) for name, fn in fwd_hooks]
    if wrapped and not hasattr(model, "hooks"):
        raise NeuroprobeError(
            f"model must be a HookedRootModule or TransformerBridge (with hook points); got "
            f"{type(model).__name__}. Wrap your layers' outputs in HookPoints."
        )
    attach = model.hooks(fwd_hooks=wrapped) if wrapped else nullcontext()
    with torch.no_grad():
        with attach:  # TransformerLens removes the hooks in its own finally
            try:
                yield fwd
            finally:
                fwd._armed = False


def forward(
    model, x: Shaped[Tensor, "batch ..."], *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    stop_at_layer: int | None = None,
) -> Tensor:
    """One forward pass without hooks under ``torch.no_grad()`` (``x`` moved to the model's
    device); returns the model's output, e.g. logits ``[batch, pos, d_vocab]``.

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> from neuroprobe.core.engine import forward
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> forward(model, torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 50])
    """
    with hooked(model) as fwd:
        return fwd.run(x, attention_mask=attention_mask, stop_at_layer=stop_at_layer)


def run_hooks(
    model, inputs: Shaped[Tensor, "n ..."], hooks: Sequence[str], *, batch_size: int = 4096
) -> dict[str, Float[Tensor, "n ..."]]:
    """Outputs of ``hooks`` for a tensor of inputs on a ``HookedRootModule``: ``{hook:
    Tensor[n, ...]}`` in float32 on the CPU, in batches of ``batch_size`` inputs.

    Floating inputs are cast to the model's dtype; each pass stops once every hook fired.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> from neuroprobe.core.engine import run_hooks
    >>> out = run_hooks(ReLUMLP([4, 8, 3]), torch.zeros(5, 4), ["blocks.0.mlp.hook_post"])
    >>> out["blocks.0.mlp.hook_post"].shape
    torch.Size([5, 8])
    """
    from neuroprobe.core.validation import check_name_list, check_positive_int

    batch_size = check_positive_int(batch_size, "run_hooks(batch_size=...)")
    hooks = check_name_list(hooks, "run_hooks(hooks=...)", what="hook name")
    if not isinstance(inputs, Tensor):
        raise NeuroprobeError(
            f"run_hooks(inputs=...) must be a tensor [n, ...]; got {type(inputs).__name__}."
        )
    out: dict[str, list[Tensor]] = {h: [] for h in hooks}

    def make(h):
        def fn(t, hook):
            out[h].append(t.detach().float().cpu())
            return t

        return fn

    dtype = model_dtype(model)
    with hooked(model, [(h, make(h)) for h in hooks]) as fwd:
        for s in range(0, inputs.shape[0], batch_size):
            xb = inputs[s:s + batch_size]
            fwd.run_until_fired(xb.to(dtype) if xb.is_floating_point() else xb)
    return {h: torch.cat(v) for h, v in out.items()}


# ---- hook shapes and widths -------------------------------------------------------------------
def hook_shapes(model, names: Sequence[str], example: Shaped[Tensor, "1 ..."]
                ) -> dict[str, tuple[int, ...]]:
    """The output shape of each hook that fires in one pass on ``example`` (a batch of one:
    ``[1, pos]`` token ids, or ``[1, ...]`` for a plain ``HookedRootModule``).

    Hooks that do not fire are absent; the pass stops once all fired.

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> from neuroprobe.core.engine import hook_shapes
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> hook_shapes(model, ["blocks.0.mlp.hook_post"], torch.zeros((1, 1), dtype=torch.long))
    {'blocks.0.mlp.hook_post': (1, 1, 32)}
    """
    need = list(dict.fromkeys(names))
    shapes: dict[str, tuple[int, ...]] = {}

    def grab(name):
        def fn(act, hook):
            shapes[name] = tuple(act.shape)

        return fn

    with hooked(model, [(n, grab(n)) for n in need]) as fwd:
        fwd.run_until_fired(example, stop_at_layer=stop_layer(model, need))
    return shapes


def hook_widths(model, reqs: Sequence[HookRequest], example: Shaped[Tensor, "..."]
                ) -> tuple[list[HookRequest], dict[str, int]]:
    """The requests that give per-token outputs, and each one's width (values per token).

    ``example`` is one prompt's token ids (its first token is run) or, for a plain
    ``HookedRootModule``, one input.  Hooks matched by a glob or callable that do not fire,
    or whose output is not per token (attention patterns), are dropped; a hook named exactly
    raises instead.

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> from neuroprobe.core.engine import hook_widths, resolve_hooks
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> reqs, widths = hook_widths(model, resolve_hooks(model, "blocks.0.attn.hook_z"),
    ...                            torch.tensor([1, 2]))
    >>> [(r.name, widths[r.canonical]) for r in reqs]  # widths are keyed by canonical name
    [('blocks.0.attn.hook_z', 16)]
    """
    lm = is_language_model(model)
    # one token (or one input) is enough to learn each hook's width
    x = example[None, :1] if lm else example[None].to(model_dtype(model))
    shapes = hook_shapes(model, [r.canonical for r in reqs], x)
    widths: dict[str, int] = {}
    for name, shape in shapes.items():
        per_token = (len(shape) >= 3 and shape[1] == 1) if lm else len(shape) >= 1
        if per_token:
            per = shape[2:] if lm else shape[1:]
            widths[name] = int(np.prod(per)) if len(per) else 1
    kept = []
    for r in reqs:
        if r.canonical in widths:
            kept.append(r)
        elif not r.optional:
            if r.canonical in shapes:
                raise NeuroprobeError(
                    f"hook {r.name!r} gives shape {shapes[r.canonical]} for one token, not "
                    "[batch, pos, ...]; only per-token hooks can be recorded as time series."
                )
            raise NeuroprobeError(
                f"hook {r.name!r} did not fire in a forward pass of this model; it cannot be "
                "recorded."
            )
    if not kept:
        raise NeuroprobeError(
            f"none of the requested hooks {[r.name for r in reqs][:6]} gives per-token "
            "activations; choose hooks like 'blocks.*.hook_resid_post'."
        )
    return kept, widths


def hook_width(model, canonical: str) -> int:
    """Width of the hook's per-token output, from one tiny forward pass."""
    shape = hook_shapes(model, [canonical], torch.zeros((1, 1), dtype=torch.long)).get(canonical)
    if shape is None:
        raise NeuroprobeError(
            f"hook {canonical!r} did not fire in a forward pass; a unit must sit at a hook "
            "that every forward pass reaches."
        )
    if len(shape) != 3:
        raise NeuroprobeError(
            f"hook {canonical!r} gives shape {shape}, not [batch, pos, d]; a unit must "
            "be one coordinate of a per-token hook (e.g. blocks.3.mlp.hook_post)."
        )
    return int(shape[-1])


def block_list(model) -> tuple[torch.nn.Module, str] | None:
    """``(parent, attribute)`` of the wrapped model's module list that holds a
    TransformerBridge's blocks (the list its inner model loops over); None for a model
    without one (a HookedTransformer skips blocks itself).

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.core.engine import block_list
    >>> model = npb.load_model(dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> parent, attr = block_list(model)
    >>> len(getattr(parent, attr))
    2
    """
    inner = getattr(model, "original_model", None)
    blocks = getattr(model, "blocks", None)
    if inner is None or blocks is None:
        return None
    for name, mod in inner.named_modules():
        if (isinstance(mod, torch.nn.ModuleList) and len(mod) == len(blocks)
                and all(a is b for a, b in zip(mod, blocks))):
            parent_name, _, attr = name.rpartition(".")
            return (inner.get_submodule(parent_name) if parent_name else inner), attr
    return None


def can_resume(model) -> bool:
    """Whether :func:`resume_forward` can skip the blocks before its start on ``model``.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.core.engine import can_resume
    >>> can_resume(npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                                d_vocab=50, n_ctx=16, act_fn="relu", seed=0)))
    True
    """
    if not hasattr(model, "original_model"):
        return hasattr(model, "blocks")
    return block_list(model) is not None


@contextmanager
def _only_blocks_from(model, start: int) -> Iterator[None]:
    """Cut a TransformerBridge's inner block list to ``start..`` for the ``with`` block and
    restore it after (also on errors)."""
    where = block_list(model) if start else None
    if where is None:
        yield
        return
    parent, attr = where
    full = getattr(parent, attr)
    setattr(parent, attr, torch.nn.ModuleList(list(full)[start:]))
    try:
        yield
    finally:
        setattr(parent, attr, full)


def resume_forward(model, x: Shaped[Tensor, "batch ..."], start: int) -> Tensor:
    """A forward pass from block ``start`` on; returns the model's output (logits).

    ``x`` is token ids ``[batch, pos]`` when ``start == 0``, else the residual stream
    entering block ``start`` ``[batch, pos, d_model]`` (what ``blocks.{start}.hook_resid_pre``
    sees); blocks ``0..start-1`` are not run.  Hooks attached with :func:`hooked` fire as
    usual in the blocks that run.  Check :func:`can_resume` first: on a model whose block
    list is not found the earlier blocks would run on the residual as if it were tokens.

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> from neuroprobe.core.engine import hooked, resume_forward
    >>> model = npb.load_model(dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> grab = {}
    >>> with hooked(model, [("blocks.1.hook_resid_pre",
    ...                      lambda a, hook: grab.setdefault("r", a.clone()))]) as fwd:
    ...     full = fwd.run(ids)
    >>> with torch.no_grad():
    ...     part = resume_forward(model, grab["r"], 1)
    >>> bool(torch.allclose(full, part, atol=1e-5))
    True
    """
    x = x.to(model_device(model))
    with torch.no_grad(), _only_blocks_from(model, start):
        return model(x, start_at_layer=start) if start else model(x)
