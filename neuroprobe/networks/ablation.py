"""Causal tests of functional networks: ablate a unit set and measure what the model loses.

A localized network is correlational (its units pass a t threshold).  AlKhamissi et al.
2025 test it causally: ablating the language units, and not random units, breaks the
model.  This module gives

* :func:`ablate` -- a context manager that zero-, mean- or resample-ablates any unit set
  (a :class:`~neuroprobe.FunctionalNetwork` over neurons or residual coordinates, a
  :class:`~neuroprobe.Directions`, explicit ``(hook, index)`` pairs) through hooks that
  are removed on exit and after exceptions;
* :func:`causal_effect` -- next-token cross-entropy (and accuracy) with the network
  ablated, against two nulls of random unit sets of the same size drawn from the same
  hooks: *layer-matched* (the same number of units per hook) and *variance-matched*
  (also the same activation-variance deciles, since selection by t may favour
  high-variance units), with the percentile of the real effect and a bootstrap CI over
  texts;
* :func:`dissociation` -- every network ablated on every condition's texts: the matrix.

Why many masks per forward pass: a null of 100 random sets costs 100 forward passes over
the texts.  Here ``K`` masks are stacked along the batch dimension (the batch is the texts
repeated ``K`` times, and the hook ablates copy ``k`` with mask ``k``), so small batches of
texts still fill the matrix multiplies.  Texts are grouped by token length, so no padding
(and no attention mask) is ever needed and every loss is exact.

All forward passes go through :func:`_losses` (one small function, to move onto the shared
engine later); reference statistics come from :func:`neuroprobe.stream`.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool
from torch import Tensor

from neuroprobe.core.capture import stream, tokenize_prompts
from neuroprobe.core.engine import can_resume, hooked, resume_forward
from neuroprobe.core.errors import NeuroprobeError, NeuroprobeWarning
from neuroprobe.core.hooks import resolve_hooks
from neuroprobe.core.probes import BatchMeta
from neuroprobe.core.units import Directions, UnitIndex
from neuroprobe.core.validation import (
    check_bool,
    check_int,
    check_model,
    check_positive_int,
    check_seed,
)
from neuroprobe.networks.sets import FunctionalNetwork

__all__ = [
    "AblationReference",
    "ablation_reference",
    "ablate",
    "CausalEffect",
    "causal_effect",
    "Dissociation",
    "dissociation",
    "random_networks",
]

MODES = ("zero", "mean", "resample")
_CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus_default.jsonl"


# ---- unit sets -> per-hook targets -----------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    """What to ablate at one hook: neuron coordinates, or the span of some directions."""

    name: str  # the hook name as the unit index shows it
    canonical: str
    neurons: np.ndarray | None = None  # [n] coordinates
    basis: Tensor | None = None  # [d, r] orthonormal basis of the directions' span


def _orthonormal(v: Tensor) -> Tensor:
    q, r = torch.linalg.qr(v.to(torch.float64).T)
    keep = r.diagonal().abs() > 1e-10 * max(1.0, float(r.diagonal().abs().max()))
    return q[:, keep]


def _targets(model, units, directions: Sequence[Directions] = ()) -> list[_Target]:
    """Resolve a unit set to per-hook targets (validating hooks against the model)."""
    if isinstance(units, Directions):
        (r,) = resolve_hooks(model, units, argname="units")
        return [_Target(r.name, r.canonical, basis=_orthonormal(units.vectors))]
    if isinstance(units, FunctionalNetwork):
        if units.units is None:
            raise NeuroprobeError(
                f"network {units.name!r} has no unit index (units=None); ablation needs to "
                "know each unit's hook: build it with npb.localize or pass units=rec.units."
            )
        dirs = {f"{d.hook}@{d.name}": d for d in directions}
        out = []
        cols = units.columns
        for b in units.units.blocks:
            sel = cols[(cols >= b.offset) & (cols < b.offset + b.size)] - b.offset
            if sel.size == 0:
                continue
            if b.kind == "direction":
                d = dirs.get(b.label)
                if d is None:
                    raise NeuroprobeError(
                        f"network {units.name!r} has direction units of {b.label!r}; pass the "
                        f"Directions object: ablate(..., directions=[Directions({b.hook!r}, "
                        f"..., name={b.name!r})])."
                    )
                (r,) = resolve_hooks(model, b.hook, argname="units")
                out.append(_Target(b.hook, r.canonical,
                                   basis=_orthonormal(d.vectors[b.indices[sel]])))
            else:
                (r,) = _resolve_one(model, b.hook, units.name)
                out.append(_Target(b.hook, r.canonical, neurons=b.indices[sel].astype(np.int64)))
        return _merge(out)
    if isinstance(units, Mapping):
        pairs = [(h, int(i)) for h, idx in units.items() for i in np.atleast_1d(idx)]
    elif isinstance(units, Sequence) and all(isinstance(u, tuple) and len(u) == 2
                                             for u in units):
        pairs = [(str(h), int(i)) for h, i in units]
    else:
        raise NeuroprobeError(
            "units must be a FunctionalNetwork, a Directions, a dict {hook: indices} or a list "
            f"of (hook, index) pairs; got {type(units).__name__}."
        )
    if not pairs:
        raise NeuroprobeError("units is empty: nothing to ablate.")
    by: dict[str, list[int]] = {}
    for h, i in pairs:
        by.setdefault(h, []).append(i)
    out = []
    for h, idx in by.items():
        (r,) = _resolve_one(model, h, "units")
        out.append(_Target(h, r.canonical, neurons=np.unique(np.asarray(idx, np.int64))))
    return _merge(out)


def _resolve_one(model, hook: str, what: str):
    try:
        return resolve_hooks(model, hook, argname="units")
    except NeuroprobeError as e:
        raise NeuroprobeError(
            f"{what}: the unit set names hook {hook!r}, which this model lacks (is the network "
            f"from another model's unit index?). {e}"
        ) from None


def _merge(targets: list[_Target]) -> list[_Target]:
    seen: dict[str, _Target] = {}
    for t in targets:
        if t.canonical in seen:
            raise NeuroprobeError(
                f"hook {t.name!r} appears twice in the unit set; give each hook once."
            )
        seen[t.canonical] = t
    return list(seen.values())


# ---- reference statistics --------------------------------------------------------------------
@dataclass
class _Moments:
    """Streaming probe: sum and sum of squares of each hook, and a uniform sample of rows
    (each row gets a random key; the ``max_rows`` smallest keys are kept)."""

    hooks: list[str]
    max_rows: int
    seed: int = 0
    s1: dict = field(default_factory=dict)
    s2: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)
    keys: Tensor | None = None
    n: int = 0

    def update(self, acts: dict[str, Tensor], meta: BatchMeta) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.n)
        new_keys = torch.rand(meta.n, generator=g)
        keys = new_keys if self.keys is None else torch.cat([self.keys, new_keys])
        keep = None
        if self.max_rows and keys.numel() > self.max_rows:
            keep = torch.topk(keys, self.max_rows, largest=False).indices
        for h, a in acts.items():
            a = a.detach().to("cpu", torch.float64)
            if h not in self.s1:
                self.s1[h] = torch.zeros(a.shape[1], dtype=torch.float64)
                self.s2[h] = torch.zeros(a.shape[1], dtype=torch.float64)
            self.s1[h] += a.sum(0)
            self.s2[h] += (a * a).sum(0)
            if self.max_rows:
                r = a.float() if h not in self.rows else torch.cat([self.rows[h], a.float()])
                self.rows[h] = r if keep is None else r[keep]
        self.keys = keys if keep is None else keys[keep]
        self.n += meta.n

    def merge(self, other):  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class AblationReference:
    """Per-hook statistics of a reference corpus, for mean- and resample-ablation.

    Attributes
    ----------
    mean, var : dict hook -> Tensor ``[d]``
        Mean and variance of every coordinate of the hook over the reference tokens.
    samples : dict hook -> Tensor ``[n_rows, d]``
        Rows of the hook's output at random reference tokens (resample-ablation draws
        from them).
    n_tokens : int

    Examples
    --------
    >>> import torch
    >>> ref = AblationReference({"h": torch.zeros(3)}, {"h": torch.ones(3)},
    ...                         {"h": torch.randn(5, 3)}, 5)
    >>> ref.hooks
    ['h']
    """

    mean: dict
    var: dict
    samples: dict
    n_tokens: int

    @property
    def hooks(self) -> list[str]:
        return list(self.mean)

    def unit_variance(self, units: UnitIndex) -> np.ndarray:
        """The reference variance of each neuron column of a unit index (NaN elsewhere)."""
        out = np.full(len(units), np.nan)
        for b in units.blocks:
            if b.kind == "neuron" and b.hook in self.var:
                out[b.offset:b.offset + b.size] = self.var[b.hook].numpy()[b.indices]
        return out

    def __repr__(self) -> str:
        return f"AblationReference({len(self.mean)} hooks, {self.n_tokens} tokens)"


def _default_reference_texts() -> list[str]:
    return [json.loads(line)["text"] for line in _CORPUS.read_text().splitlines()
            if line.strip()]


def _prompt_list(texts, name: str = "texts") -> list:
    """``texts`` as a list of prompts (strings or token-id lists), named when it is not one."""
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__iter__") or isinstance(
            texts, dict):
        raise NeuroprobeError(
            f"{name} must be a list of texts (strings or token-id lists); got "
            f"{type(texts).__name__} {str(texts)[:40]!r}. Wrap a single text in a list."
        )
    return list(texts)


def ablation_reference(model, hooks, texts: Sequence[str] | None = None, *,
                       max_rows: int = 2048, include_bos: bool = False, batch_size: int = 16,
                       seed: int = 0) -> AblationReference:
    """Mean, variance and sample rows of hooks over a reference corpus.

    Parameters
    ----------
    model : TransformerBridge or HookedRootModule
    hooks : str, list, FunctionalNetwork or Directions
        The hooks (a unit set's hooks are taken from it).
    texts : sequence of str, optional
        The reference corpus (default: neuroprobe's packaged 89-paragraph corpus).
    max_rows : int
        Rows kept per hook for resample-ablation (a uniform sample of the tokens; 0 keeps
        none, enough for mean-ablation).
    include_bos : bool
        Count BOS tokens (off: BOS is an attention sink, unlike any other token).

    Returns
    -------
    AblationReference

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> ref = npb.ablation_reference(model, "blocks.0.mlp.hook_post", [[1, 2, 3], [4, 5, 6]])
    >>> ref.n_tokens, tuple(ref.mean["blocks.0.mlp.hook_post"].shape)
    (6, (32,))
    """
    check_model(model)
    max_rows = check_int(max_rows, "max_rows", minimum=0)
    include_bos = check_bool(include_bos, "include_bos")
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_seed(seed)
    if isinstance(hooks, (FunctionalNetwork, Directions)):
        names = [t.name for t in _targets(model, hooks)]
    else:
        names = [r.name for r in resolve_hooks(model, hooks)]
    texts = _default_reference_texts() if texts is None else _prompt_list(texts)
    if not texts:
        raise NeuroprobeError("texts is empty; give reference texts (or None for the default).")
    probe = _Moments(names, max_rows, seed)
    stream(model, texts, [probe], include_bos=include_bos, batch_size=batch_size)
    n = probe.n
    if n < 2:
        raise NeuroprobeError(f"the reference texts gave {n} token(s); give longer texts.")
    mean = {h: (probe.s1[h] / n) for h in probe.s1}
    var = {h: (probe.s2[h] / n - mean[h] ** 2).clamp_min(0) * n / (n - 1) for h in probe.s1}
    samples = dict(probe.rows)
    return AblationReference({h: m.float() for h, m in mean.items()},
                             {h: v.float() for h, v in var.items()}, samples, n)


# ---- the hooks -------------------------------------------------------------------------------
def _replacement(mode: str, target: _Target, ref: AblationReference | None, act: Tensor,
                 gen: torch.Generator | None) -> Tensor | float:
    """What ablated coordinates become: 0, the reference mean, or a reference token's row."""
    if mode == "zero":
        return 0.0
    key = target.name if target.name in ref.mean else target.canonical
    if key not in ref.mean:
        raise NeuroprobeError(
            f"the ablation reference has no statistics for hook {target.name!r}; build it "
            "with npb.ablation_reference(model, network) or the network's hooks."
        )
    if mode == "mean":
        return ref.mean[key].to(act.device, act.dtype)
    pool = ref.samples.get(key)
    if pool is None or pool.shape[0] == 0:
        raise NeuroprobeError(
            "resample-ablation needs sample rows; build the reference with max_rows > 0."
        )
    idx = torch.randint(0, pool.shape[0], act.shape[:-1], generator=gen)
    return pool[idx].to(act.device, act.dtype)


def _make_hook(target: _Target, mode: str, ref, masks: Tensor | None, spare_bos: bool,
               gen: torch.Generator | None, n_copies: int):
    """The hook for one target.  ``masks`` ``[K, d]`` ablates copy k of the batch with row k;
    without it, the target's neurons (or basis) are ablated in every row."""

    def fn(act: Tensor, hook) -> Tensor:
        d = act.shape[-1]
        if target.neurons is not None and target.neurons.size and int(target.neurons.max()) >= d:
            raise NeuroprobeError(
                f"the unit set has index {int(target.neurons.max())} at hook {target.name!r}, "
                f"whose width is {d}: the network comes from another model's unit index."
            )
        v = _replacement(mode, target, ref, act, gen)
        if target.basis is not None:
            q = target.basis.to(act.device, act.dtype)
            if q.shape[0] != d:
                raise NeuroprobeError(
                    f"Directions at {target.name!r} have width {q.shape[0]}; the hook's is {d}."
                )
            new = act + ((v - act) @ q) @ q.T
        else:
            if masks is None:
                m = torch.zeros(d, dtype=torch.bool, device=act.device)
                m[torch.as_tensor(target.neurons, device=act.device)] = True
                mm = m.expand_as(act)
            else:
                K, mk = masks.shape[0], masks
                if mk.shape[1] < d:  # a unit index over part of the hook
                    mk = torch.cat([mk, mk.new_zeros(K, d - mk.shape[1])], 1)
                mm = mk.to(act.device)[:, None, None, :].expand(
                    K, act.shape[0] // K, *act.shape[1:]).reshape(act.shape)
            new = torch.where(mm, v if isinstance(v, Tensor) else torch.zeros_like(act), act)
        if spare_bos and act.ndim == 3 and act.shape[1] > 1:
            new = torch.cat([act[:, :1], new[:, 1:]], 1)
        return new

    return fn


def _check_mode(mode: str, reference) -> None:
    if mode not in MODES:
        raise NeuroprobeError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    if mode != "zero" and not isinstance(reference, AblationReference):
        raise NeuroprobeError(
            f"mode={mode!r} needs reference statistics; pass "
            "reference=npb.ablation_reference(model, network[, texts])."
        )


@contextlib.contextmanager
def ablate(model, units, *, mode: str = "zero", reference: AblationReference | None = None,
           directions: Sequence[Directions] = (), spare_bos: bool = True,
           seed: int = 0) -> Iterator[None]:
    """Ablate a unit set inside a ``with`` block; the hooks are removed on exit or error.

    Parameters
    ----------
    model : TransformerBridge or HookedRootModule
    units : FunctionalNetwork, Directions, dict {hook: indices} or list of (hook, index)
        Neurons, residual coordinates (e.g. ``blocks.*.hook_resid_post``) or directions (the
        component of the activation in their span is replaced).
    mode : {"zero", "mean", "resample"}
        Replace by 0, by the reference mean, or by the value at a random reference token.
    reference : AblationReference
        From :func:`ablation_reference` (needed for ``"mean"`` and ``"resample"``).
    directions : sequence of Directions
        The direction sets a network's direction units refer to.
    spare_bos : bool
        Leave position 0 (the BOS attention sink) untouched.
    seed : int
        For resample-ablation.

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> x = torch.tensor([[1, 2, 3, 4]])
    >>> with torch.no_grad(), npb.ablate(model, {"blocks.0.mlp.hook_post": range(32)}):
    ...     y = model(x)
    >>> bool((y != model(x)).any()), len(model.hook_dict["blocks.0.mlp.hook_post"].fwd_hooks)
    (True, 0)
    """
    _check_mode(mode, reference)
    targets = _targets(model, units, directions)
    gen = torch.Generator().manual_seed(seed)
    fwd = [(t.canonical, _make_hook(t, mode, reference, None, spare_bos, gen, 1))
           for t in targets]
    with model.hooks(fwd_hooks=fwd):
        yield


# ---- losses ----------------------------------------------------------------------------------
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def _start_layer(model, targets_masks) -> int:
    """The first block any target hook lives in (0 when a hook is outside the blocks, or
    the model cannot resume a pass from a block's residual input)."""
    layers = []
    for t, _ in targets_masks:
        m = _BLOCK.match(t.canonical)
        if m is None:
            return 0
        layers.append(int(m.group(1)))
    if not layers or min(layers) == 0:
        return 0
    if not can_resume(model):
        return 0
    return min(layers)


def _losses(model, x: Tensor, tgt: Tensor, fwd_hooks: list, start: int = 0
            ) -> tuple[Tensor, Tensor]:
    """Per-row mean next-token cross-entropy and accuracy (no padding).

    ``x`` is token ids ``[B, S]``, or with ``start > 0`` the residual stream entering block
    ``start`` ``[B, S, d_model]`` (the blocks before it are not run); ``tgt`` ``[B, S]``
    holds the token ids.  The one place this module runs the model forward."""
    with hooked(model, fwd_hooks):
        logits = resume_forward(model, x, start)
    lp = logits[:, :-1].float()
    tgt = tgt[:, 1:].to(lp.device)
    ce = torch.nn.functional.cross_entropy(lp.reshape(-1, lp.shape[-1]), tgt.reshape(-1),
                                           reduction="none").view(tgt.shape).mean(1)
    acc = (lp.argmax(-1) == tgt).float().mean(1)
    return ce.cpu().double(), acc.cpu().double()


def _groups(model, texts: Sequence[str]) -> list[tuple[np.ndarray, Tensor]]:
    """Texts grouped by token length: (text indices, ids [n, S]) per group."""
    toks = tokenize_prompts(model, list(texts))
    by: dict[int, list[int]] = {}
    for i, t in enumerate(toks):
        if t.numel() < 2:
            raise NeuroprobeError(
                f"text {i} has {t.numel()} token(s); next-token loss needs at least 2."
            )
        by.setdefault(int(t.numel()), []).append(i)
    dev = next(model.parameters()).device
    return [(np.asarray(ix), torch.stack([toks[i] for i in ix]).to(dev))
            for _, ix in sorted(by.items())]


def _max_rows(model, S: int, budget: int = 256 * 2**20) -> int:
    V = int(getattr(model.cfg, "d_vocab", 50000))
    return max(1, budget // (4 * S * V))


def _chunks(model, groups, max_per_forward: int | None):
    """(group, row offset, rows per forward) of every chunk of texts, in a fixed order."""
    for g, (ix, ids) in enumerate(groups):
        rows = max_per_forward or _max_rows(model, ids.shape[1])
        nb = max(1, min(len(ix), rows))
        for a in range(0, len(ix), nb):
            yield g, a, nb, rows


@dataclass(eq=False)
class _Prepared:
    """Held-out texts ready for many ablated passes: the length groups, the intact losses
    ``[n_texts]`` and, when ``start > 0``, the residual entering block ``start`` of every
    group (the ablated passes resume there: the blocks before it are the same in every
    ablation)."""

    groups: list
    n: int
    base_ce: np.ndarray
    base_acc: np.ndarray
    start: int = 0
    resid: list | None = None


def _prepare(model, texts: Sequence[str], start: int,
             max_per_forward: int | None = None) -> _Prepared:
    """One intact pass over the texts: baseline losses, and the residual at block ``start``
    (kept only if resuming from it reproduces the intact losses; else ``start`` = 0)."""
    groups = _groups(model, texts)
    n = len(texts)
    base_ce, base_acc = np.zeros(n), np.zeros(n)
    canon = None
    if start:
        try:
            (r,) = resolve_hooks(model, f"blocks.{start}.hook_resid_pre")
            canon = r.canonical
        except NeuroprobeError:
            start = 0
    store: list[list[Tensor]] = [[] for _ in groups]
    for g, a, nb, _ in _chunks(model, groups, max_per_forward):
        ix, ids = groups[g]
        sub = ids[a:a + nb]
        hooks = []
        if start:
            def grab(act, hook, g=g):
                store[g].append(act.detach().clone())
            hooks = [(canon, grab)]
        c, y = _losses(model, sub, sub, hooks)
        base_ce[ix[a:a + nb]] = c.numpy()
        base_acc[ix[a:a + nb]] = y.numpy()
    resid = None
    if start:
        resid = [torch.cat(s) for s in store]
        ix, ids = groups[0]
        k = min(len(ix), 8)
        try:  # resuming must give the intact losses (else run whole passes)
            c, _ = _losses(model, resid[0][:k], ids[:k], [], start)
            ok = np.allclose(c.numpy(), base_ce[ix[:k]], rtol=1e-5, atol=1e-5)
        except Exception:  # noqa: BLE001 - a model that cannot resume runs whole passes
            ok = False
        if not ok:
            start, resid = 0, None
    return _Prepared(groups, n, base_ce, base_acc, start, resid)


def _evaluate(model, prep: _Prepared, targets_masks, mode, ref, spare_bos, seed,
              max_per_forward: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CE and accuracy ``[K, n_texts]`` for K mask sets (``targets_masks``: list of
    (target, masks [K, d]) ), K masks stacked along the batch: copy k of the texts is
    ablated with mask k, in passes that resume at block ``prep.start``."""
    K = targets_masks[0][1].shape[0] if targets_masks else 1
    ce = np.zeros((K, prep.n))
    acc = np.zeros((K, prep.n))
    for g, a, nb, rows in _chunks(model, prep.groups, max_per_forward):
        ix, ids = prep.groups[g]
        sub = ids[a:a + nb]
        x = prep.resid[g][a:a + nb] if prep.start else sub
        kk = max(1, rows // sub.shape[0])
        for k0 in range(0, K, kk):
            k1 = min(K, k0 + kk)
            gen = torch.Generator().manual_seed(seed + a + 7919 * k0)
            hooks = [(t.canonical, _make_hook(t, mode, ref, m[k0:k1], spare_bos, gen,
                                              k1 - k0)) for t, m in targets_masks]
            reps = (k1 - k0,) + (1,) * (x.ndim - 1)
            c, y = _losses(model, x.repeat(*reps), sub.repeat(k1 - k0, 1), hooks, prep.start)
            ce[k0:k1, ix[a:a + nb]] = c.view(k1 - k0, -1).numpy()
            acc[k0:k1, ix[a:a + nb]] = y.view(k1 - k0, -1).numpy()
    return ce, acc


def _hook_masks(model, nets: Sequence[Bool[Tensor, " unit"]], units: UnitIndex
                ) -> list[tuple[_Target, Tensor]]:
    """Masks over a unit index (K of them) -> per hook, K boolean rows over the hook width."""
    M = torch.stack([torch.as_tensor(m) for m in nets])  # [K, N]
    out = []
    for b in units.blocks:
        if b.kind != "neuron":
            raise NeuroprobeError(
                "batched random masks take neuron units; for direction units ablate one "
                "network at a time with npb.ablate."
            )
        sub = M[:, b.offset:b.offset + b.size]
        if not bool(sub.any()):
            continue
        (r,) = _resolve_one(model, b.hook, "network")
        width = int(b.indices.max()) + 1
        full = torch.zeros(M.shape[0], width, dtype=torch.bool)
        full[:, torch.as_tensor(b.indices)] = sub
        out.append((_Target(b.hook, r.canonical, neurons=b.indices), full))
    return out


# ---- nulls -----------------------------------------------------------------------------------
def random_networks(network: FunctionalNetwork, n: int, *, match: str = "layer",
                    variance: np.ndarray | None = None, n_bins: int = 10, seed: int = 0,
                    exclude_network: bool = True) -> list[FunctionalNetwork]:
    """Random unit sets the size of ``network``, drawn from the same hooks.

    Parameters
    ----------
    network : FunctionalNetwork
        With a unit index.
    n : int
        How many random sets.
    match : {"layer", "variance"}
        ``"layer"``: the same number of units in each hook as the network.  ``"variance"``:
        also the same number in each decile (``n_bins``) of the units' activation variance
        within the hook (``variance`` per column, e.g. ``reference.unit_variance(units)``).
    exclude_network : bool
        Draw only among units outside the network (where enough remain).

    Returns
    -------
    list of FunctionalNetwork

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> ui = npb.UnitIndex.from_hooks({"blocks.0.hook_resid_post": 10,
    ...                                "blocks.1.hook_resid_post": 10})
    >>> net = npb.FunctionalNetwork(torch.arange(20) < 3, ui, task="x")
    >>> r = npb.random_networks(net, 2, seed=0)
    >>> [x.size for x in r], [int(x.mask[:10].sum()) for x in r]
    ([3, 3], [3, 3])
    """
    if not isinstance(network, FunctionalNetwork):
        raise NeuroprobeError(
            f"network must be a FunctionalNetwork (e.g. from npb.localize); got "
            f"{type(network).__name__}."
        )
    n = check_int(n, "n", minimum=0)
    seed = check_seed(seed)
    n_bins = check_positive_int(n_bins, "n_bins")
    exclude_network = check_bool(exclude_network, "exclude_network")
    if network.units is None:
        raise NeuroprobeError("random_networks needs a network with a unit index (units=...).")
    if match not in ("layer", "variance"):
        raise NeuroprobeError(f"match must be 'layer' or 'variance'; got {match!r}.")
    if match == "variance":
        variance = np.asarray(variance, dtype=float) if variance is not None else None
        if variance is None or variance.shape != (network.n_units,):
            raise NeuroprobeError(
                f"match='variance' needs variance=[n_units={network.n_units}] per column; use "
                "npb.ablation_reference(...).unit_variance(network.units)."
            )
    rng = np.random.default_rng(seed)
    mask = network.mask.numpy()
    groups = []  # (candidate columns, how many to draw)
    for hid in np.unique(network.units.hook_ids):
        cols = np.flatnonzero(network.units.hook_ids == hid)
        if match == "layer":
            strata = [cols]
        else:
            v = variance[cols]
            edges = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1])
            b = np.searchsorted(edges, v, side="right")
            strata = [cols[b == i] for i in range(n_bins)]
        for s in strata:
            c = int(mask[s].sum())
            if c:
                pool = s[~mask[s]] if exclude_network and (~mask[s]).sum() >= c else s
                groups.append((pool, c))
    out = []
    for i in range(n):
        m = np.zeros(network.n_units, bool)
        for pool, c in groups:
            m[rng.choice(pool, size=c, replace=False)] = True
        out.append(FunctionalNetwork(torch.from_numpy(m), network.units,
                                     name=f"random-{match}/{i}",
                                     threshold=f"{match}-matched random"))
    return out


# ---- causal effect ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CausalEffect:
    """The loss a network's ablation causes, against random unit sets of the same size.

    Attributes
    ----------
    network : str
    size : int
    mode : str
    baseline_ce, ablated_ce : float
        Mean next-token cross-entropy (nats) over the texts, intact and ablated.
    delta_ce, delta_acc : float
        Ablated minus intact (accuracy: top-1 next-token).
    ci_low, ci_high : float
        95% bootstrap CI of ``delta_ce`` over texts.
    null_delta_ce, null_delta_acc : ndarray ``[n_random]``
        Layer-matched random sets.
    variance_null_delta_ce : ndarray ``[n_random]``
        Variance-matched random sets (empty when not run).
    per_text_delta_ce : ndarray ``[n_texts]``

    Examples
    --------
    >>> import numpy as np
    >>> e = CausalEffect("net", 3, "mean", 2.0, 2.5, 0.5, -0.1, 0.4, 0.6,
    ...                  np.array([0.1, 0.2, 0.3]), np.zeros(3), np.array([0.2]), np.full(4, 0.5))
    >>> e.percentile, round(e.null_p95, 2), round(e.ratio_to_p95, 2)
    (100.0, 0.29, 1.72)
    """

    network: str
    size: int
    mode: str
    baseline_ce: float
    ablated_ce: float
    delta_ce: float
    delta_acc: float
    ci_low: float
    ci_high: float
    null_delta_ce: np.ndarray
    null_delta_acc: np.ndarray
    variance_null_delta_ce: np.ndarray
    per_text_delta_ce: np.ndarray

    @staticmethod
    def _pct(x: float, null: np.ndarray) -> float:
        if null.size == 0:
            return float("nan")
        return float(100 * ((null < x).mean() + 0.5 * (null == x).mean()))

    @property
    def percentile(self) -> float:
        """Percentile of the real effect in the layer-matched null (100 = above all)."""
        return self._pct(self.delta_ce, self.null_delta_ce)

    @property
    def variance_percentile(self) -> float:
        return self._pct(self.delta_ce, self.variance_null_delta_ce)

    @property
    def null_mean(self) -> float:
        return float(self.null_delta_ce.mean()) if self.null_delta_ce.size else float("nan")

    @property
    def null_p95(self) -> float:
        return float(np.percentile(self.null_delta_ce, 95)) if self.null_delta_ce.size \
            else float("nan")

    @property
    def variance_null_p95(self) -> float:
        v = self.variance_null_delta_ce
        return float(np.percentile(v, 95)) if v.size else float("nan")

    @property
    def ratio_to_p95(self) -> float:
        return self.delta_ce / self.null_p95 if self.null_p95 else float("nan")

    def summary(self) -> dict:
        """The headline numbers as plain floats (for results.json)."""
        return {
            "network": self.network, "size": self.size, "mode": self.mode,
            "baseline_ce": self.baseline_ce, "delta_ce": self.delta_ce,
            "delta_acc": self.delta_acc, "ci": [self.ci_low, self.ci_high],
            "random_delta_ce_mean": self.null_mean, "random_delta_ce_p95": self.null_p95,
            "effect_percentile": self.percentile, "ratio_to_p95": self.ratio_to_p95,
            "variance_matched_delta_ce_mean": float(self.variance_null_delta_ce.mean())
            if self.variance_null_delta_ce.size else float("nan"),
            "variance_matched_delta_ce_p95": self.variance_null_p95,
            "variance_matched_percentile": self.variance_percentile,
            "n_random": int(self.null_delta_ce.size),
        }

    def to_dataframe(self) -> pd.DataFrame:
        """One row for the network and one per random set."""
        rows = [{"set": self.network, "null": "", "delta_ce": self.delta_ce,
                 "delta_acc": self.delta_acc}]
        rows += [{"set": f"random/{i}", "null": "layer", "delta_ce": c, "delta_acc": a}
                 for i, (c, a) in enumerate(zip(self.null_delta_ce, self.null_delta_acc))]
        rows += [{"set": f"random-var/{i}", "null": "variance", "delta_ce": c,
                  "delta_acc": np.nan} for i, c in enumerate(self.variance_null_delta_ce)]
        return pd.DataFrame(rows)

    def plot(self, ax=None):
        """Histogram of the nulls with the real effect (see :mod:`neuroprobe.viz.localizers`)."""
        from neuroprobe.viz.localizers import plot_causal_effect

        return plot_causal_effect(self, ax=ax)

    def __repr__(self) -> str:
        return (f"CausalEffect({self.network!r}, {self.size} units, {self.mode}: dCE "
                f"{self.delta_ce:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}] vs random p95 "
                f"{self.null_p95:.4f}, percentile {self.percentile:.1f})")


def _warn_overlap(texts: Sequence[str], localizer) -> None:
    if localizer is None:
        return
    def key(t):
        return t if isinstance(t, str) else tuple(int(i) for i in t)

    loc = {key(t) for t in getattr(localizer, "texts", localizer)}
    n = sum(key(t) in loc for t in texts)
    if n:
        warnings.warn(
            f"{n} of the {len(texts)} held-out texts are also localizer stimuli; the effect "
            "is then measured partly on the data that selected the units. Use held-out texts.",
            NeuroprobeWarning, stacklevel=3,
        )


def _bootstrap(d: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    m = d[idx].mean(1)
    return float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))


def causal_effect(
    model, network: FunctionalNetwork, texts: Sequence[str], *, mode: str = "mean",
    reference: AblationReference | None = None, n_random: int = 100,
    variance_null: bool = True, spare_bos: bool = True, n_boot: int = 1000, seed: int = 0,
    localizer=None, max_per_forward: int | None = None,
) -> CausalEffect:
    """The change in next-token loss on held-out texts when a network is ablated.

    The network and ``n_random`` layer-matched random sets (and, with ``variance_null``,
    ``n_random`` variance-matched ones) are ablated in turn, many sets per forward pass.

    Parameters
    ----------
    model : TransformerBridge or HookedRootModule
    network : FunctionalNetwork
        Over neuron units (MLP neurons, residual coordinates) with a unit index.
    texts : sequence of str
        Held-out texts (at least 2 tokens each).
    mode : {"zero", "mean", "resample"}
    reference : AblationReference, optional
        Needed for ``"mean"``/``"resample"`` and for the variance-matched null; default:
        :func:`ablation_reference` over the packaged corpus for the network's hooks.
    n_random : int
        Random sets per null.
    variance_null : bool
        Also run the variance-matched null.
    spare_bos : bool
        Leave position 0 untouched.
    n_boot : int
        Bootstrap resamples of texts for the CI.
    localizer : LocalizerStimuli or sequence of str, optional
        The stimuli that defined the network: a warning is given if ``texts`` overlap them.
    max_per_forward : int, optional
        Rows (texts x masks) per forward pass (default: a 256 MiB logits budget).

    Returns
    -------
    CausalEffect

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> ui = npb.UnitIndex.from_hooks({"blocks.0.mlp.hook_post": 32, "blocks.1.mlp.hook_post": 32})
    >>> net = npb.FunctionalNetwork(torch.arange(64) % 8 == 0, ui, task="x")
    >>> e = npb.causal_effect(model, net, [[1, 2, 3, 4], [5, 6, 7, 8]], mode="zero",
    ...                       n_random=5, variance_null=False)
    >>> e.null_delta_ce.shape, e.size
    ((5,), 8)
    """
    if mode not in MODES:
        raise NeuroprobeError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    if not isinstance(network, FunctionalNetwork) or network.units is None:
        raise NeuroprobeError(
            "network must be a FunctionalNetwork with a unit index (from npb.localize)."
        )
    if network.size == 0:
        raise NeuroprobeError(f"network {network.name!r} is empty: nothing to ablate.")
    check_model(model)
    n_random = check_int(n_random, "n_random", minimum=0)
    n_boot = check_positive_int(n_boot, "n_boot")
    seed = check_seed(seed)
    variance_null = check_bool(variance_null, "variance_null")
    spare_bos = check_bool(spare_bos, "spare_bos")
    if max_per_forward is not None:
        max_per_forward = check_positive_int(max_per_forward, "max_per_forward")
    texts = _prompt_list(texts)
    if len(texts) < 2:
        raise NeuroprobeError(f"texts has {len(texts)} entries; give at least 2 held-out texts.")
    _warn_overlap(texts, localizer)
    _targets(model, network)  # validates hooks
    if reference is None and (mode != "zero" or variance_null):
        reference = ablation_reference(model, network, seed=seed,
                                       max_rows=1024 if mode == "resample" else 0)
    _check_mode(mode, reference)
    sets = [network.mask] + [r.mask for r in random_networks(network, n_random, seed=seed)]
    if variance_null:
        var = reference.unit_variance(network.units)
        sets += [r.mask for r in random_networks(network, n_random, match="variance",
                                                 variance=var, seed=seed + 1)]
    tm = _hook_masks(model, sets, network.units)
    prep = _prepare(model, texts, _start_layer(model, tm), max_per_forward)
    base_ce = prep.base_ce
    ce, acc = _evaluate(model, prep, tm, mode, reference, spare_bos, seed, max_per_forward)
    dce = ce - base_ce  # [K, n]
    dacc = acc - prep.base_acc
    lo, hi = _bootstrap(dce[0], n_boot, seed)
    layer = dce[1:1 + n_random].mean(1)
    return CausalEffect(
        network.name, network.size, mode, float(base_ce.mean()), float(ce[0].mean()),
        float(dce[0].mean()), float(dacc[0].mean()), lo, hi, layer,
        dacc[1:1 + n_random].mean(1),
        dce[1 + n_random:].mean(1) if variance_null else np.zeros(0), dce[0],
    )


# ---- dissociation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Dissociation:
    """Every network ablated on every condition's texts.

    Attributes
    ----------
    networks, conditions : tuple of str
    delta_ce, delta_acc : ndarray ``[n_networks, n_conditions]``
        Mean change (ablated - intact) on each condition's texts.
    baseline_ce : ndarray ``[n_conditions]``
    mode : str

    Examples
    --------
    >>> import numpy as np
    >>> d = Dissociation(("a", "b"), ("a", "b"), np.array([[2.0, 1], [0.5, 3]]),
    ...                  np.zeros((2, 2)), np.ones(2), "mean")
    >>> d.diagonal_wins, d.diagonal_wins_by_condition
    (2, 2)
    """

    networks: tuple
    conditions: tuple
    delta_ce: np.ndarray
    delta_acc: np.ndarray
    baseline_ce: np.ndarray
    mode: str

    def _square(self) -> bool:
        return len(self.networks) == len(self.conditions)

    @property
    def diagonal_wins(self) -> int:
        """Networks whose ablation hurts their own condition's texts most (row argmax)."""
        if not self._square():
            return 0
        return int((self.delta_ce.argmax(1) == np.arange(len(self.networks))).sum())

    @property
    def diagonal_wins_by_condition(self) -> int:
        """Conditions hurt most by their own network (column argmax)."""
        if not self._square():
            return 0
        return int((self.delta_ce.argmax(0) == np.arange(len(self.conditions))).sum())

    @property
    def diagonal_mean(self) -> float:
        return float(np.diag(self.delta_ce).mean()) if self._square() else float("nan")

    @property
    def off_diagonal_mean(self) -> float:
        if not self._square():
            return float("nan")
        off = ~np.eye(len(self.networks), dtype=bool)
        return float(self.delta_ce[off].mean())

    def to_dataframe(self) -> pd.DataFrame:
        """Long form: network, condition, delta_ce, delta_acc, baseline_ce."""
        return pd.DataFrame([
            {"network": a, "condition": c, "delta_ce": self.delta_ce[i, j],
             "delta_acc": self.delta_acc[i, j], "baseline_ce": self.baseline_ce[j]}
            for i, a in enumerate(self.networks) for j, c in enumerate(self.conditions)
        ])

    def summary(self) -> dict:
        out = {"networks": list(self.networks), "conditions": list(self.conditions),
               "delta_ce": self.delta_ce.round(5).tolist(),
               "delta_acc": self.delta_acc.round(5).tolist(),
               "baseline_ce": self.baseline_ce.round(5).tolist(), "mode": self.mode}
        if self._square():
            out.update(diagonal_wins=self.diagonal_wins,
                       diagonal_wins_by_condition=self.diagonal_wins_by_condition,
                       diagonal_mean=self.diagonal_mean, off_diagonal_mean=self.off_diagonal_mean)
        return out

    def plot(self, ax=None):
        """Heatmap (see :func:`neuroprobe.viz.localizers.plot_dissociation`)."""
        from neuroprobe.viz.localizers import plot_dissociation

        return plot_dissociation(self, ax=ax)

    def __repr__(self) -> str:
        return (f"Dissociation({len(self.networks)} networks x {len(self.conditions)} "
                f"conditions, {self.mode})")


def dissociation(
    model, networks: Mapping[str, FunctionalNetwork], conditions: Mapping[str, Sequence[str]],
    *, mode: str = "mean", reference: AblationReference | None = None,
    spare_bos: bool = True, seed: int = 0, max_per_forward: int | None = None,
) -> Dissociation:
    """Ablate each network and measure the loss on each condition's held-out texts.

    Parameters
    ----------
    model : TransformerBridge or HookedRootModule
    networks : dict name -> FunctionalNetwork
        Over one unit index (ablated together in one forward pass, stacked on the batch).
    conditions : dict name -> sequence of str
        Held-out texts per condition.
    mode, reference, spare_bos, seed, max_per_forward
        As in :func:`causal_effect` (a default reference covers all networks' hooks).

    Returns
    -------
    Dissociation

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> ui = npb.UnitIndex.from_hooks({"blocks.0.mlp.hook_post": 32})
    >>> nets = {"a": npb.FunctionalNetwork(torch.arange(32) < 16, ui),
    ...         "b": npb.FunctionalNetwork(torch.arange(32) >= 16, ui)}
    >>> d = npb.dissociation(model, nets, {"x": [[1, 2, 3]], "y": [[4, 5, 6]]}, mode="zero")
    >>> d.delta_ce.shape
    (2, 2)
    """
    from collections.abc import Mapping

    check_model(model)
    for arg, val, what in (("networks", networks, "name -> FunctionalNetwork"),
                           ("conditions", conditions, "name -> list of texts")):
        if not isinstance(val, Mapping):
            raise NeuroprobeError(
                f"{arg} must be a dict {what}; got {type(val).__name__} {str(val)[:40]!r}."
            )
    conditions = {str(k): _prompt_list(v, f"conditions[{k!r}]") for k, v in conditions.items()}
    seed = check_seed(seed)
    if not networks or not conditions:
        raise NeuroprobeError("networks and conditions must both be non-empty dicts.")
    nets = list(networks.values())
    units = nets[0].units
    for nm, net in networks.items():
        if not isinstance(net, FunctionalNetwork) or net.units is None:
            raise NeuroprobeError(f"network {nm!r} must be a FunctionalNetwork with units.")
        if net.units != units:
            raise NeuroprobeError(
                f"network {nm!r} has a different unit index; dissociation stacks networks "
                "over one index (localize them with the same hooks)."
            )
    if mode != "zero" and reference is None:
        union = nets[0]
        for net in nets[1:]:
            union = union | net
        reference = ablation_reference(model, union, seed=seed,
                                       max_rows=1024 if mode == "resample" else 0)
    _check_mode(mode, reference)
    masks = _hook_masks(model, [n.mask for n in nets], units)
    dce = np.zeros((len(nets), len(conditions)))
    dacc = np.zeros_like(dce)
    base = np.zeros(len(conditions))
    for j, (c, texts) in enumerate(conditions.items()):
        texts = list(texts)
        if not texts:
            raise NeuroprobeError(f"condition {c!r} has no texts.")
        prep = _prepare(model, texts, _start_layer(model, masks), max_per_forward)
        b_ce, b_acc = prep.base_ce, prep.base_acc
        ce, acc = _evaluate(model, prep, masks, mode, reference, spare_bos, seed,
                            max_per_forward)
        dce[:, j] = (ce - b_ce).mean(1)
        dacc[:, j] = (acc - b_acc).mean(1)
        base[j] = b_ce.mean()
    return Dissociation(tuple(networks), tuple(conditions), dce, dacc, base, mode)

