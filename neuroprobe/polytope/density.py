"""Polytope density: spline-code boundaries crossed per unit of Euclidean distance.

Between two activations at a hook, the straight path ``h(t) = a + t (b - a)``,
``t in [0, 1]``, is fed through the rest of the network (the hook's output is replaced), and
every sign change of a downstream pre-activation along the path is one polytope boundary
crossed.  The *path density* is the number of crossings divided by ``|b - a|``; the paper's
cheap *endpoint density* is the Hamming distance of the two endpoint codes over ``|b - a|``
(a lower bound on the crossings: a unit that flips and flips back is invisible to it).

``method="exact"`` (piecewise-linear networks): inside a linear region every downstream
pre-activation is affine in ``t``, so the exit point of the region is solved for directly
(the first root of ``z_j + t z'_j`` over all downstream units), and the walk steps from
region to region.  The slope ``z'`` is the exact finite difference over ``delta`` (1e-6 of
the path) taken only after checking that the code at ``t + delta`` equals the code at ``t``
(regions are convex, so the whole step is then inside one region); a crossing inside
``delta`` is stepped over and counted through the Hamming distance of the two codes.
Crossings are therefore counted exactly, except for a unit that flips twice within
``1e-6`` of the path.  The network is copied to float64 for the walk, and a linearity check
on the first step refuses smooth networks.

``method="sampled"`` (any network, e.g. SiLU/GELU with binary codes of the pre-activations):
codes at ``n_steps + 1`` evenly spaced points, summing the Hamming distances of neighbours;
the same with ``10 n_steps`` is the convergence check (``converged`` tells whether the two
counts agree).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from neuroprobe.core.engine import frozen_copy, hooked, model_dtype, run_hooks
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import (
    as_tensor,
    check_finite,
    check_int,
    check_name_list,
    check_positive_int,
    check_real,
    warn_degenerate,
)
from neuroprobe.polytope.spline import _forward_failed, _is_pre_hook, preactivation_hooks
from neuroprobe.testbeds import reinitialize_, untrained_copy  # re-exported (old path)

__all__ = [
    "PathDensity",
    "ScalingRays",
    "ClassDensity",
    "path_density",
    "endpoint_density",
    "scaling_rays",
    "class_density",
    "untrained_copy",
    "reinitialize_",
    "activations",
]

_DELTA = 1e-6
_EPS = 1e-10


# ------------------------------------------------------------------------------------------
# the downstream network as a function of the hook's activation
# ------------------------------------------------------------------------------------------
def _check_model_hook(model, hook, name: str = "hook") -> str:
    """``model`` is a HookedRootModule and ``hook`` one of its hooks (close matches named)."""
    import difflib

    if not hasattr(model, "hook_dict") or not hasattr(model, "hooks"):
        raise NeuroprobeError(
            f"model must be a HookedRootModule (with HookPoints); got "
            f"{type(model).__name__}. Wrap your layers' inputs/outputs in HookPoints."
        )
    if not isinstance(hook, str):
        raise NeuroprobeError(f"{name} must be a hook name (str); got {type(hook).__name__} "
                              f"{hook!r}.")
    if hook not in model.hook_dict:
        close = difflib.get_close_matches(hook, list(model.hook_dict), n=3, cutoff=0.5)
        raise NeuroprobeError(
            f"{name}={hook!r} is not a hook of this model"
            + (f"; did you mean {close}?" if close else ".")
            + f" Hooks are: {list(model.hook_dict)[:10]}"
        )
    return hook


def _batch_tensor(x, name: str) -> Tensor:
    """A batch ``[n >= 1, ...]`` of inputs or activations (not a single unbatched vector)."""
    t = as_tensor(x, name)
    if t.ndim < 2:
        raise NeuroprobeError(
            f"{name} must be a batch [n, ...] (one row per input / pair); got shape "
            f"{tuple(t.shape)}. Add the batch axis: {name}[None]."
        )
    if t.shape[0] == 0:
        raise NeuroprobeError(f"{name} is empty (shape {tuple(t.shape)}); pass at least one row.")
    if t.is_complex():
        raise NeuroprobeError(f"{name} is complex ({t.dtype}); pass real values.")
    return t


class _Downstream:
    """The network after ``hook`` as a function of ``hook``'s activation ``h [B, D]``.

    Runs ``model`` on carrier inputs with ``hook``'s output replaced by ``h``; records the
    pre-activation hooks that fire after ``hook``: :meth:`pre_activations` gives them
    (``[B, U]`` float64), :meth:`pre_activations_and_output` the model's output too.
    """

    def __init__(self, model, hook: str, carrier: Tensor, code_hooks, dtype, batch_size,
                 position: int | None = None):
        _check_model_hook(model, hook)
        check_positive_int(batch_size, "batch_size")
        self.model = model
        self.hook = hook
        self.carrier = carrier
        self.position = position
        pre = preactivation_hooks(model)
        order: list[str] = []
        shape: dict[str, tuple] = {}

        full: dict[str, tuple] = {}

        def logger(name):  # bind the asked-for name: bridges pass canonical names
            def log(t, hook):
                order.append(name)
                full[name] = tuple(t.shape)
                shape[name] = tuple(t.shape[1:] if position is None else t.shape[2:])
                return t

            return log

        names = [hook] + [p for p in pre if p != hook]
        try:
            with hooked(model, [(n, logger(n)) for n in names]) as fwd:
                fwd.run(self._carrier(torch.zeros(1, dtype=torch.long)))
        except RuntimeError as e:
            raise _forward_failed(model, carrier, "inputs", e) from e
        if position is not None and hook in full:
            fs = full[hook]
            if len(fs) < 3 or not -fs[1] <= position < fs[1]:
                raise NeuroprobeError(
                    f"position={position} does not fit hook {hook!r}, whose output has shape "
                    f"{fs}: position is for language models ([batch, pos, d_model]) and must "
                    f"be in [-{fs[1] if len(fs) > 1 else 0}, {fs[1] if len(fs) > 1 else 0})."
                    if len(fs) >= 3 else
                    f"position={position} is for language models ([batch, pos, d] hook outputs); "
                    f"hook {hook!r} gives {fs}. Leave position=None."
                )
        if hook not in order:
            raise NeuroprobeError(f"hook {hook!r} never fired in a forward pass of the model.")
        after = order[order.index(hook) + 1:]
        # a path in a pre-activation space crosses that layer's own boundaries too
        self.self_pre = _is_pre_hook(hook)
        self.region_hooks = ([hook] if self.self_pre else []) + \
            [p for p in after if _is_pre_hook(p)]
        if not self.region_hooks:
            raise NeuroprobeError(
                f"no pre-activation hook fires after {hook!r}: there is no downstream spline "
                f"code to count. Pre-activation hooks: {pre}. Use an earlier hook."
            )
        if code_hooks is None:
            self.code_hooks = list(self.region_hooks)
        else:
            code_hooks = check_name_list(code_hooks, "code_hooks", what="hook")
            bad = [c for c in code_hooks if c not in self.region_hooks]
            if bad:
                raise NeuroprobeError(
                    f"code_hooks {bad} are not pre-activation hooks downstream of {hook!r}; "
                    f"downstream pre-activation hooks are: {self.region_hooks}."
                )
            self.code_hooks = code_hooks
        self.hook_shape = shape[hook]
        self.width = {p: int(np.prod(shape[p])) for p in self.region_hooks}
        offs, o = {}, 0
        for p in self.region_hooks:
            offs[p] = (o, o + self.width[p])
            o += self.width[p]
        self.n_units = o
        # units of the deepest region hook influence no other region unit: their crossings
        # never change the affine model of the others, so the walk need not stop at them
        self.last_mask = torch.zeros(o, dtype=torch.bool)
        self.last_mask[offs[self.region_hooks[-1]][0]:] = True
        self.code_cols = np.concatenate([np.arange(*offs[c]) for c in self.code_hooks])
        self.all_is_code = len(self.code_cols) == o

    def _carrier(self, rows: Tensor) -> Tensor:
        """The carrier inputs of ``rows`` (the engine moves them to the model's device)."""
        c = self.carrier
        if c.shape[0] == 1:
            c = c.expand(rows.shape[0], *c.shape[1:])
        else:
            c = c[rows]
        return c.to(model_dtype(self.model)) if c.is_floating_point() else c

    def _hooks(self, h: Tensor, zs: list[Tensor]) -> list:
        """Replace ``hook``'s output by ``h``; append each region hook's pre-activations
        to ``zs`` in firing order."""
        pos = self.position

        def rep(t, hook):
            if pos is None:
                t = h.reshape(t.shape).to(t.dtype)
                new = t
            else:
                t = t.clone()
                t[:, pos] = h.reshape(t[:, pos].shape).to(t.dtype)
                new = t[:, pos]
            if self.self_pre:
                zs.append(new.reshape(new.shape[0], -1))
            return t

        def cap(t, hook):
            zs.append((t if pos is None else t[:, pos]).reshape(t.shape[0], -1))
            return t

        return [(self.hook, rep)] + [(p, cap) for p in self.region_hooks if p != self.hook]

    def pre_activations(self, h: Float[Tensor, "batch d"], rows: Tensor
                        ) -> Float[Tensor, "batch unit"]:
        """Downstream pre-activations ``[B, U]`` (float64, CPU) with ``hook``'s output ``h``;
        the pass stops after the last region hook."""
        zs: list[Tensor] = []
        with hooked(self.model, self._hooks(h, zs)) as fwd:
            fwd.run_until_fired(self._carrier(rows))
        return torch.cat(zs, 1).to(torch.float64).cpu()

    def pre_activations_and_output(self, h: Float[Tensor, "batch d"], rows: Tensor
                                   ) -> tuple[Float[Tensor, "batch unit"],
                                              Float[Tensor, "batch out"]]:
        """:meth:`pre_activations` and the model's output ``[B, C]`` (float32, CPU; at
        ``position`` for a language model) from the same whole pass."""
        zs: list[Tensor] = []
        with hooked(self.model, self._hooks(h, zs)) as fwd:
            out = fwd.run(self._carrier(rows))
        z = torch.cat(zs, 1).to(torch.float64).cpu()
        out = out if self.position is None else out[:, self.position]
        return z, out.reshape(out.shape[0], -1).float().cpu()


def downstream_codes(
    model,
    hook: str,
    points: Float[Tensor, "point d"],
    *,
    inputs: Tensor | None = None,
    batch_size: int = 4096,
) -> Bool[Tensor, "point unit"]:
    """The polytope each point lies in: which downstream pre-activations are positive.

    Every point replaces ``hook``'s output; the code is the sign pattern of every
    pre-activation hook that fires after ``hook`` (and of ``hook`` itself when it is one),
    in firing order.  Two points share a region exactly when their codes are equal.

    Parameters
    ----------
    model : HookedRootModule
    hook : str
        Where the points live, e.g. ``"hook_input"`` or ``"blocks.0.mlp.hook_post"``.
    points : Tensor ``[points, d]``
        Activations at ``hook`` (flattened per input), cast to the model's dtype.
    inputs : Tensor, optional
        Model inputs that carry the forward pass: one shared by every point, or one per
        point.  Defaults to the first point for ``hook="hook_input"``.

    Returns
    -------
    Tensor ``bool [points, units]``

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> from neuroprobe.polytope.density import downstream_codes
    >>> m = ReLUMLP([2, 8, 8, 3], seed=0)
    >>> codes = downstream_codes(m, "hook_input", torch.tensor([[1.0, 0.5], [1.0, 0.6]]))
    >>> codes.shape
    torch.Size([2, 16])
    """
    _check_model_hook(model, hook)
    check_positive_int(batch_size, "batch_size")
    points = as_tensor(points, "points")
    if points.ndim != 2:
        raise NeuroprobeError(
            f"points must be [points, d] activations at {hook!r}; got shape "
            f"{tuple(points.shape)}."
        )
    if inputs is None:
        if hook != "hook_input":
            raise NeuroprobeError(
                f"downstream_codes(hook={hook!r}) needs inputs=... (model inputs that carry "
                "the forward pass); only hook='hook_input' can default to the points."
            )
        inputs = points[:1]
    carrier = as_tensor(inputs, "inputs")
    n = points.shape[0]
    if carrier.shape[0] not in (1, n):
        raise NeuroprobeError(
            f"inputs must have one row per point ({n}) or a single row; got {carrier.shape[0]}."
        )
    f = _Downstream(model, hook, carrier, None, torch.float64, batch_size)
    rows = torch.arange(n) if carrier.shape[0] > 1 else torch.zeros(n, dtype=torch.long)
    dtype = model_dtype(model)
    codes = [f.pre_activations(points[s:s + batch_size].to(dtype), rows[s:s + batch_size]) > 0
             for s in range(0, n, batch_size)]
    return torch.cat(codes)


def _prepare_model(model, exact: bool):
    """The exact walk runs on a float64 copy; the sampled one on the model itself."""
    return frozen_copy(model, torch.float64) if exact else model


# ------------------------------------------------------------------------------------------
# walks
# ------------------------------------------------------------------------------------------
def _exact_walk(f: _Downstream, start: Tensor, end: Tensor, rows: Tensor,
                record: bool = False, max_iter: int = 1_000_000):
    """Exact crossing counts along ``start -> end`` for every pair (vectorised over pairs)."""
    P = start.shape[0]
    direction = end - start
    t = torch.zeros(P, dtype=torch.float64)
    count = torch.zeros(P, dtype=torch.long)
    prev_code: Tensor | None = None
    positions: list[list[float]] = [[] for _ in range(P)] if record else []
    active = torch.arange(P)
    cols = torch.as_tensor(f.code_cols)
    skip_last = f.last_mask
    checked = False
    it = 0
    while active.numel():
        it += 1
        if it > max_iter:  # pragma: no cover - safety net
            raise NeuroprobeError("exact walk did not finish; use method='sampled'.")
        ta = t[active]
        h = start[active] + ta[:, None] * direction[active]
        hd = h + _DELTA * direction[active]
        zz = f.pre_activations(torch.cat([h, hd]), torch.cat([rows[active], rows[active]]))
        z, zd = zz[: len(active)], zz[len(active):]
        region = z > 0
        code = region[:, cols] if not f.all_is_code else region
        if prev_code is None:
            prev_code = torch.zeros(P, code.shape[1], dtype=torch.bool)
            prev_code[active] = code
        else:
            flips = (code != prev_code[active]).sum(1)
            count[active] += flips
            if record:
                for i in torch.nonzero(flips).flatten().tolist():
                    positions[int(active[i])].extend([float(ta[i])] * int(flips[i]))
            prev_code[active] = code
        done = ta >= 1.0
        same = ((zd > 0) == region).all(1)
        slope = (zd - z) / _DELTA
        root = -z / slope  # NaN (0/0) and non-positive roots are not exits; +inf is none
        root.masked_fill_(~(root > 0), torch.inf)
        if record:  # rays need every crossing's own position
            step = root.min(1).values
        elif bool(skip_last.all()):  # every unit is affine along the whole path
            step = torch.full((root.shape[0],), torch.inf, dtype=root.dtype)
        else:  # deepest-layer crossings are counted at the next stop (Hamming of codes)
            step = root[:, ~skip_last].min(1).values
        if not checked:
            _check_linearity(f, h, direction[active], z, slope, step, rows[active], same)
            checked = True
        nxt = torch.where(same, ta + step + _EPS, ta + _DELTA)
        nxt = torch.clamp(nxt, max=1.0)
        t[active] = nxt
        active = active[~done]
    return count.numpy(), positions


def _check_linearity(f, h, d, z, slope, step, rows, same):
    """Refuse smooth networks: the affine model must hold half way to the region's exit."""
    ok = same  # an infinite step (no exit ahead) is checked half way along the path
    if not bool(ok.any()):
        return
    idx = torch.nonzero(ok).flatten()[:64]
    s = torch.clamp(step[idx] / 2, max=0.5)
    pred = z[idx] + s[:, None] * slope[idx]
    got = f.pre_activations(h[idx] + s[:, None] * d[idx], rows[idx])
    scale = z[idx].abs().max().clamp(min=1.0)
    err = float((pred - got).abs().max() / scale)
    if err > 1e-6:
        raise NeuroprobeError(
            f"method='exact' needs a piecewise-linear network downstream of the hook, but the "
            f"pre-activations are not affine inside a region (relative deviation {err:.2g}); "
            "this network has smooth parts (SiLU/GELU/LayerNorm/softmax). Use "
            "method='sampled'."
        )


def _sampled_counts(f: _Downstream, start, end, rows, n_steps, batch_size):
    """Crossings counted on a grid of ``n_steps + 1`` points (a lower bound)."""
    P = start.shape[0]
    cols = torch.as_tensor(f.code_cols)
    counts = np.zeros(P, dtype=np.int64)
    ts = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
    per = max(1, batch_size)
    for i in range(P):
        prev = None
        for s in range(0, n_steps + 1, per):
            tt = ts[s:s + per]
            h = start[i][None] + tt[:, None] * (end[i] - start[i])[None]
            z = f.pre_activations(h, rows[i].repeat(len(tt)))
            code = (z > 0)[:, cols]
            if prev is not None:
                code = torch.cat([prev[None], code])
            counts[i] += int((code[1:] != code[:-1]).sum())
            prev = code[-1]
    return counts


# ------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PathDensity:
    """Boundary crossings along straight paths between pairs of activations.

    Attributes
    ----------
    crossings : ndarray ``int [P]``
        Spline-code boundaries crossed along each path (exact, or counted on the grid).
    distance : ndarray ``float [P]``
        Euclidean length of each path.
    endpoint_hamming : ndarray ``int [P]``
        Hamming distance between the codes of the two endpoints.
    method : str
        ``"exact"`` or ``"sampled"``.
    hook : str
    code_hooks : tuple of str
        The pre-activation hooks whose code was counted.
    crossings_fine : ndarray or None
        For ``"sampled"``: the count on the 10x finer grid (convergence check).
    n_steps : int or None

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> m = ReLUMLP([2, 8, 8, 2], seed=0)
    >>> x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    >>> r = path_density(m, "hook_input", x[:2], x[1:], inputs=x[:2])
    >>> r
    PathDensity(n_pairs=2, method='exact', hook='hook_input', n_code_units=16)
    >>> bool((r.crossings >= r.endpoint_hamming).all())
    True
    """

    crossings: np.ndarray
    distance: np.ndarray
    endpoint_hamming: np.ndarray
    method: str
    hook: str
    code_hooks: tuple
    n_code_units: int
    crossings_fine: np.ndarray | None = field(default=None, repr=False)
    n_steps: int | None = None

    def __repr__(self) -> str:
        return (
            f"PathDensity(n_pairs={len(self.crossings)}, method={self.method!r}, "
            f"hook={self.hook!r}, n_code_units={self.n_code_units})"
        )

    @property
    def density(self) -> np.ndarray:
        """Crossings per unit Euclidean length ``[P]``."""
        return self.crossings / self.distance

    @property
    def endpoint_density(self) -> np.ndarray:
        """The paper's cheap version: endpoint Hamming distance / Euclidean distance."""
        return self.endpoint_hamming / self.distance

    @property
    def converged(self) -> np.ndarray:
        """Per pair: whether the count is final (always for exact; N vs 10N grid for sampled)."""
        if self.crossings_fine is None:
            return np.ones(len(self.crossings), dtype=bool)
        return self.crossings == self.crossings_fine

    def to_dataframe(self) -> pd.DataFrame:
        df = pd.DataFrame(
            {
                "pair": np.arange(len(self.crossings)),
                "crossings": self.crossings,
                "distance": self.distance,
                "density": self.density,
                "endpoint_hamming": self.endpoint_hamming,
                "endpoint_density": self.endpoint_density,
            }
        )
        if self.crossings_fine is not None:
            df["crossings_fine"] = self.crossings_fine
            df["converged"] = self.converged
        return df


def activations(model, inputs: Tensor, hook: str, *, position: int | None = None,
                batch_size: int = 4096) -> Tensor:
    """The output of ``hook`` for every input, flattened to ``[n, D]`` (float32).

    With ``position`` (language models: ``inputs`` are token ids ``[n, pos]``), only that
    token position's activation.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> activations(ReLUMLP([4, 8, 3]), torch.zeros(2, 4), "blocks.0.mlp.hook_post").shape
    torch.Size([2, 8])
    """
    _check_model_hook(model, hook)
    check_positive_int(batch_size, "batch_size")
    inputs = _batch_tensor(inputs, "inputs")
    try:
        # one whole pass on the first input: the hooked passes stop once ``hook`` fired, so
        # an early hook (``hook_input``) would otherwise hand back inputs the model cannot take
        with hooked(model, []) as fwd:
            x1 = inputs[:1]
            fwd.run(x1.to(model_dtype(model)) if x1.is_floating_point() else x1)
        a = run_hooks(model, inputs, [hook], batch_size=batch_size)[hook]
    except RuntimeError as e:
        raise _forward_failed(model, inputs, "inputs", e) from e
    if position is not None:
        position = check_int(position, "position")
        if a.ndim < 3 or not -a.shape[1] <= position < a.shape[1]:
            raise NeuroprobeError(
                f"position={position} does not fit hook {hook!r}, whose output has shape "
                f"{tuple(a.shape)}: position indexes the token axis [batch, pos, d] of a "
                "language model's hook; leave it None otherwise."
            )
        a = a[:, position]
    return a.reshape(a.shape[0], -1)


def _check_method(method):
    if method not in ("exact", "sampled"):
        raise NeuroprobeError(
            f"method must be 'exact' (piecewise-linear networks) or 'sampled' (any network); "
            f"got {method!r}."
        )


def _paths(start, end, f: _Downstream):
    start = _batch_tensor(start, "start").to(torch.float64)
    end = _batch_tensor(end, "end").to(torch.float64)
    for nm, x in (("start", start), ("end", end)):
        check_finite(x.reshape(x.shape[0], -1) if x.ndim > 1 else x[None], nm)
    start = start.reshape(start.shape[0], -1)
    end = end.reshape(end.shape[0], -1)
    if start.shape != end.shape:
        raise NeuroprobeError(
            f"start and end must have the same shape [pairs, d]; got {tuple(start.shape)} and "
            f"{tuple(end.shape)}."
        )
    D = int(np.prod(f.hook_shape))
    if start.shape[1] != D:
        raise NeuroprobeError(
            f"activations at {f.hook!r} have {D} values per input; start/end have "
            f"{start.shape[1]}."
        )
    dist = (end - start).norm(dim=1)
    zero = torch.nonzero(dist == 0).flatten()
    if zero.numel():
        raise NeuroprobeError(
            f"{zero.numel()} path(s) have zero length (start == end), first pairs: "
            f"{zero[:5].tolist()}; density is undefined there -- drop identical pairs."
        )
    return start, end, dist


def path_density(
    model,
    hook: str,
    start: Float[Tensor, "pair d"],
    end: Float[Tensor, "pair d"],
    *,
    inputs: Tensor | None = None,
    code_hooks: str | Sequence[str] | None = None,
    method: str = "exact",
    n_steps: int = 1000,
    position: int | None = None,
    batch_size: int = 4096,
) -> PathDensity:
    """Polytope boundaries crossed along straight paths between activations at ``hook``.

    Parameters
    ----------
    model : HookedRootModule
        The network (any ``HookedRootModule`` whose hook outputs are ``[batch, ...]`` per
        input).  For ``method="exact"`` everything after ``hook`` must be piecewise linear
        (ReLU, leaky ReLU, max-pool, linear layers).
    hook : str
        Where the path lives, e.g. ``"hook_input"`` (input space) or
        ``"blocks.1.mlp.hook_post"`` (the input space of layer 2).
    start, end : Tensor ``[pairs, d]``
        Path endpoints (activations at ``hook``, flattened per input).
    inputs : Tensor, optional
        Model inputs that carry the forward pass (one per pair or a single one): the hook's
        output is replaced by the path points.  Defaults to ``start`` for ``"hook_input"``.
    code_hooks : str or list, optional
        Pre-activation hooks whose code is counted; default all that fire after ``hook``.
    method : {"exact", "sampled"}
    n_steps : int
        Grid size for ``"sampled"`` (also run with ``10 * n_steps`` as convergence check).
    position : int, optional
        For language models: the token position whose activation is replaced and whose
        downstream pre-activations are coded (``inputs`` are token ids ``[n, pos]``).

    Returns
    -------
    PathDensity

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> m = ReLUMLP([2, 8, 8, 3], seed=0)
    >>> a, b = torch.tensor([[-2.0, -1.0]]), torch.tensor([[2.0, 1.5]])
    >>> exact = npb.path_density(m, "hook_input", a, b)
    >>> grid = npb.path_density(m, "hook_input", a, b, method="sampled", n_steps=5000)
    >>> exact.crossings.tolist(), grid.crossings.tolist()
    ([14], [14])
    """
    _check_method(method)
    check_positive_int(n_steps, "n_steps")
    check_positive_int(batch_size, "batch_size")
    _check_model_hook(model, hook)
    _batch_tensor(start, "start"), _batch_tensor(end, "end")
    if position is not None:
        position = check_int(position, "position")
    if inputs is None:
        if hook != "hook_input":
            raise NeuroprobeError(
                f"path_density(hook={hook!r}) needs inputs=... (model inputs that carry the "
                "forward pass, e.g. the inputs that produced start); only hook='hook_input' "
                "can default to start."
            )
        inputs = start
    carrier = _batch_tensor(inputs, "inputs")
    m = _prepare_model(model, method == "exact")
    f = _Downstream(m, hook, carrier, code_hooks, torch.float64, batch_size, position)
    start, end, dist = _paths(start, end, f)
    P = start.shape[0]
    if carrier.shape[0] not in (1, P):
        raise NeuroprobeError(
            f"inputs must have one row per pair ({P}) or a single row; got {carrier.shape[0]}."
        )
    rows = torch.arange(P) if carrier.shape[0] > 1 else torch.zeros(P, dtype=torch.long)
    return _density(f, start, end, dist, rows, method, n_steps, batch_size)


def _density(f, start, end, dist, rows, method, n_steps, batch_size) -> PathDensity:
    cols = torch.as_tensor(f.code_cols)
    za = (f.pre_activations(start, rows) > 0)[:, cols]
    zb = (f.pre_activations(end, rows) > 0)[:, cols]
    ham = (za != zb).sum(1).numpy()
    fine = None
    if method == "exact":
        counts = np.zeros(len(rows), dtype=np.int64)
        for s in range(0, len(rows), batch_size):
            sl = slice(s, s + batch_size)
            counts[sl] = _exact_walk(f, start[sl], end[sl], rows[sl])[0]
        steps = None
    else:
        counts = _sampled_counts(f, start, end, rows, n_steps, batch_size)
        fine = _sampled_counts(f, start, end, rows, 10 * n_steps, batch_size)
        steps = n_steps
    return PathDensity(counts, dist.numpy(), ham, method, f.hook, tuple(f.code_hooks),
                       len(f.code_cols), fine, steps)


def endpoint_density(codes_a, codes_b, acts_a, acts_b) -> np.ndarray:
    """The paper's cheap polytope density: Hamming(code_a, code_b) / |act_a - act_b|.

    Works for any model (no forward passes): codes from :func:`~neuroprobe.spline_codes`,
    activations the vectors the codes belong to.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.polytope.spline import spline_codes
    >>> a, b = torch.tensor([[1.0, 1.0]]), torch.tensor([[-1.0, 1.0]])
    >>> endpoint_density(spline_codes(a), spline_codes(b), a, b).tolist()
    [0.5]
    """
    from neuroprobe.polytope.spline import hamming_distance

    h = hamming_distance(codes_a, codes_b)
    xs = []
    for nm, acts, codes in (("acts_a", acts_a, codes_a), ("acts_b", acts_b, codes_b)):
        x = _batch_tensor(acts, nm).double()
        if x.shape[0] != len(codes):
            cn = "codes_a" if nm == "acts_a" else "codes_b"
            raise NeuroprobeError(
                f"{nm} has {x.shape[0]} rows but {cn} has {len(codes)} codes; pass the "
                f"activations the codes belong to, one row per code."
            )
        x = x.reshape(x.shape[0], -1)
        check_finite(x, nm)
        xs.append(x)
    xa, xb = xs
    if xa.shape[1] != xb.shape[1]:
        raise NeuroprobeError(
            f"acts_a and acts_b have different widths ({xa.shape[1]} vs {xb.shape[1]}); the "
            "distance needs activations of the same hook."
        )
    d = (xa - xb).norm(dim=1).numpy()
    if (d == 0).any():
        raise NeuroprobeError(
            f"{int((d == 0).sum())} pair(s) have zero Euclidean distance; drop identical "
            "pairs before computing densities."
        )
    return h / d


# ------------------------------------------------------------------------------------------
# scaling rays
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ScalingRays:
    """Crossing density along rays ``s * a`` for ``s`` in ``[0, k]`` (prediction 3).

    Attributes
    ----------
    bin_edges : ndarray ``[n_bins + 1]`` (in units of s)
    density : ndarray ``[n, n_bins]``
        Crossings per unit Euclidean length in each bin of ``s``, per ray.
    crossing_scales : list of ndarray
        The scales at which each ray crosses a boundary (exact).
    grid : ndarray ``[n_grid]``
    predictions : ndarray ``int [n, n_grid]``
        Output class (argmax) with the activation scaled by each grid value.
    norms : ndarray ``[n]``
        ``|a|`` of each ray.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> m = ReLUMLP([4, 16, 16, 3], seed=0)
    >>> x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0))
    >>> r = scaling_rays(m, "hook_input", x, k=3.0, n_bins=6, n_grid=30)
    >>> r.density.shape, r.predictions.shape
    ((5, 6), (5, 30))
    """

    bin_edges: np.ndarray
    density: np.ndarray
    crossing_scales: list
    grid: np.ndarray
    predictions: np.ndarray
    norms: np.ndarray
    k: float
    hook: str

    def __repr__(self) -> str:
        return (f"ScalingRays(n={self.density.shape[0]}, n_bins={self.density.shape[1]}, "
                f"k={self.k}, hook={self.hook!r})")

    @property
    def scales(self) -> np.ndarray:
        """Bin centres."""
        return (self.bin_edges[1:] + self.bin_edges[:-1]) / 2

    @property
    def mean_density(self) -> np.ndarray:
        return self.density.mean(0)

    @property
    def class_change_scales(self) -> list:
        """Per ray, the grid scales at which the predicted class changed."""
        out = []
        for p in self.predictions:
            ch = np.nonzero(p[1:] != p[:-1])[0]
            out.append((self.grid[ch] + self.grid[ch + 1]) / 2)
        return out

    @property
    def inner_outer_ratio(self) -> float:
        """Mean crossing density for ``s < 1`` over that for ``1 < s < k``."""
        inner = sum(int(((c > 0) & (c < 1)).sum()) for c in self.crossing_scales)
        outer = sum(int(((c > 1) & (c < self.k)).sum()) for c in self.crossing_scales)
        len_in = float(self.norms.sum())
        len_out = float(self.norms.sum() * (self.k - 1))
        return (inner / len_in) / (outer / len_out) if outer else math.inf

    @property
    def peak_scale(self) -> float:
        """The bin centre of the highest mean density."""
        return float(self.scales[int(np.argmax(self.mean_density))])

    @property
    def change_density_ratio(self) -> float:
        """For class changes beyond the activation (``s > 1``): the crossing density of the
        bin where the class changed over the mean density of the same ray at ``s > 1``,
        averaged over changes.  > 1 means the class changes where boundaries are dense
        (prediction 3); ~1 or below means they are not.  NaN without such changes."""
        vals = []
        outer = self.scales > 1
        for i, ch in enumerate(self.class_change_scales):
            base = self.density[i][outer].mean()
            for s in ch[ch > 1]:
                b = min(int(np.searchsorted(self.bin_edges, s)) - 1, self.density.shape[1] - 1)
                if base > 0:
                    vals.append(self.density[i, b] / base)
        return float(np.mean(vals)) if vals else math.nan

    @property
    def inner_change_fraction(self) -> float:
        """Fraction of the class changes that happen between the origin and the activation
        (``s < 1``)."""
        ch = np.concatenate(self.class_change_scales) if self.class_change_scales else []
        return float((np.asarray(ch) < 1).mean()) if len(ch) else math.nan

    def to_dataframe(self) -> pd.DataFrame:
        """Mean density per bin: ``scale``, ``density``, ``n_class_changes``."""
        changes = np.concatenate(self.class_change_scales) if self.class_change_scales \
            else np.zeros(0)
        n_ch = np.histogram(changes, self.bin_edges)[0]
        return pd.DataFrame({"scale": self.scales, "density": self.mean_density,
                             "n_class_changes": n_ch})


def scaling_rays(
    model,
    hook: str,
    inputs: Tensor,
    *,
    k: float = 3.0,
    n_bins: int = 60,
    n_grid: int = 600,
    method: str = "exact",
    position: int | None = None,
    code_hooks=None,
    batch_size: int = 4096,
) -> ScalingRays:
    """Scale each input's activation at ``hook`` by ``s`` in ``[0, k]``: crossings per bin
    of ``s`` and the output class (next token for a language model) along the ray -- the
    paper's prediction 3.

    ``method="exact"`` walks the ray region by region (piecewise-linear networks);
    ``"sampled"`` counts code changes between the ``n_grid`` points of the grid (any
    network; a lower bound, placed at the midpoints), from the same forward passes that give
    the outputs.

    Parameters
    ----------
    position : int, optional
        Language models: the token position scaled (``inputs`` are token ids ``[n, pos]``).

    Returns
    -------
    ScalingRays

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> m = ReLUMLP([2, 8, 8, 3], seed=0)
    >>> x = torch.tensor([[1.0, 0.5]])
    >>> rays = npb.scaling_rays(m, "hook_input", x, k=3.0, n_bins=6, n_grid=60)
    >>> ray = npb.path_density(m, "hook_input", torch.zeros_like(x), 3.0 * x)
    >>> [len(c) for c in rays.crossing_scales] == ray.crossings.tolist(), rays.density.shape
    (True, (1, 6))
    """
    _check_method(method)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.integer,
                                                             np.floating)) or not k > 1:
        raise NeuroprobeError(f"k must be a number > 1 (rays run from 0 to k); got {k!r}.")
    k = check_real(k, "k (rays run from 0 to k)", minimum=1.0, low_open=True)
    check_positive_int(n_bins, "n_bins")
    check_positive_int(n_grid, "n_grid", minimum=2)
    check_positive_int(batch_size, "batch_size")
    _check_model_hook(model, hook)
    carrier = _batch_tensor(inputs, "inputs")
    m = _prepare_model(model, method == "exact")
    a = activations(m, carrier, hook, position=position).double()
    check_finite(a, "activations")
    norms = a.norm(dim=1)
    if (norms == 0).any():
        raise NeuroprobeError(
            f"{int((norms == 0).sum())} input(s) have a zero activation at {hook!r}: a ray "
            "from the origin has zero length there; drop those inputs."
        )
    f = _Downstream(m, hook, carrier, code_hooks, torch.float64, batch_size, position)
    rows = torch.arange(a.shape[0])
    grid = np.linspace(0, k, n_grid)
    g = torch.as_tensor(grid)
    preds = np.zeros((a.shape[0], n_grid), dtype=np.int64)
    cols = torch.as_tensor(f.code_cols)
    sampled_pos = []
    pdt = model_dtype(m)
    for i in range(a.shape[0]):
        zs, outs = [], []
        for s0 in range(0, n_grid, batch_size):
            gg = g[s0:s0 + batch_size]
            z, out = f.pre_activations_and_output((gg[:, None] * a[i][None]).to(pdt),
                                                  rows[i].repeat(len(gg)))
            zs.append(z)
            outs.append(out.argmax(1))
        preds[i] = torch.cat(outs).numpy()
        if method == "sampled":
            code = (torch.cat(zs) > 0)[:, cols]
            flips = (code[1:] != code[:-1]).sum(1).numpy()
            mids = (grid[1:] + grid[:-1]) / 2
            sampled_pos.append(np.repeat(mids, flips))
    if method == "exact":
        _, pos = _exact_walk(f, torch.zeros_like(a), k * a, rows, record=True)
        cs = [np.asarray(p) * k for p in pos]
    else:
        cs = sampled_pos
    edges = np.linspace(0, k, n_bins + 1)
    dens = np.stack([np.histogram(c, edges)[0] for c in cs]) / (
        (edges[1] - edges[0]) * norms.numpy()[:, None])
    return ScalingRays(edges, dens, cs, grid, preds, norms.numpy(), float(k), hook)


# ------------------------------------------------------------------------------------------
# intra- vs inter-class density
# ------------------------------------------------------------------------------------------
def _sample_pairs(labels: np.ndarray, n_pairs: int, rng) -> tuple[np.ndarray, np.ndarray]:
    n = len(labels)
    intra, inter = [], []
    tries = 0
    while (len(intra) < n_pairs or len(inter) < n_pairs) and tries < 200:
        tries += 1
        i = rng.integers(0, n, 4 * n_pairs)
        j = rng.integers(0, n, 4 * n_pairs)
        keep = i != j
        i, j = i[keep], j[keep]
        same = labels[i] == labels[j]
        intra += list(zip(i[same], j[same], strict=False))
        inter += list(zip(i[~same], j[~same], strict=False))
    if len(intra) < n_pairs or len(inter) < n_pairs:
        raise NeuroprobeError(
            "labels must have at least two classes with two or more members each to form "
            "intra- and inter-class pairs."
        )
    return np.asarray(intra[:n_pairs]), np.asarray(inter[:n_pairs])


@dataclass(frozen=True, eq=False)
class ClassDensity:
    """Intra- vs inter-class polytope density per layer, for the network and its null.

    Attributes
    ----------
    table : DataFrame
        One row per (network, layer): ``network`` ("trained"/"null"), ``layer`` (hook),
        ``intra``, ``inter`` (mean densities), ``ratio`` (inter / intra), ``ci_low``,
        ``ci_high`` (bootstrap percentile CI of the ratio), ``p_value`` (two-sided
        Mann-Whitney U of the two density samples), ``count_ratio`` (mean crossings inter /
        intra), ``distance_ratio`` (mean distance inter / intra), ``endpoint_ratio`` (the
        same ratio for the endpoint densities), ``intra_crossings``, ``inter_crossings``,
        ``intra_distance``, ``inter_distance``, ``n_pairs``.
    pairs : DataFrame
        One row per pair and layer: ``network``, ``layer``, ``kind`` (intra/inter), ``i``,
        ``j``, ``crossings``, ``distance``, ``density``, ``endpoint_hamming``.
    method : str
    """

    table: pd.DataFrame
    pairs: pd.DataFrame
    method: str

    def __repr__(self) -> str:
        return (f"ClassDensity(layers={self.table['layer'].nunique()}, "
                f"networks={sorted(self.table['network'].unique())}, method={self.method!r})")

    def to_dataframe(self) -> pd.DataFrame:
        return self.table.copy()

    def records(self, network: str = "trained") -> list[dict]:
        """The per-layer summary of one network as a list of dicts (for JSON)."""
        cols = ["layer", "intra", "inter", "ratio", "ci_low", "ci_high", "p_value",
                "count_ratio", "distance_ratio", "endpoint_ratio"]
        t = self.table[self.table["network"] == network]
        return [{c: (r[c] if c == "layer" else float(r[c])) for c in cols}
                for _, r in t.iterrows()]


def _summary(intra: PathDensity, inter: PathDensity, n_boot: int, rng) -> dict:
    from scipy.stats import mannwhitneyu

    di, de = intra.density, inter.density
    if di.mean() == 0:
        warn_degenerate(
            f"class_density at {intra.hook!r}: no intra-class path crosses a polytope boundary "
            "(mean intra density 0), so the inter/intra ratio is infinite or undefined; use "
            "a later hook or more pairs.", stacklevel=4,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = de.mean() / di.mean()
    bi = rng.integers(0, len(di), (n_boot, len(di)))
    be = rng.integers(0, len(de), (n_boot, len(de)))
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = de[be].mean(1) / di[bi].mean(1)
    p = float(mannwhitneyu(de, di, alternative="two-sided").pvalue)
    return {
        "intra": float(di.mean()),
        "inter": float(de.mean()),
        "ratio": float(ratio),
        "ci_low": float(np.percentile(boots, 2.5)),
        "ci_high": float(np.percentile(boots, 97.5)),
        "p_value": p,
        "count_ratio": float(inter.crossings.mean() / max(intra.crossings.mean(), 1e-300)),
        "distance_ratio": float(inter.distance.mean() / intra.distance.mean()),
        "endpoint_ratio": float(inter.endpoint_density.mean() / intra.endpoint_density.mean()),
        "intra_crossings": float(intra.crossings.mean()),
        "inter_crossings": float(inter.crossings.mean()),
        "intra_distance": float(intra.distance.mean()),
        "inter_distance": float(inter.distance.mean()),
        "n_pairs": int(len(di)),
    }


def class_density(
    model,
    inputs: Tensor,
    labels,
    hooks: Sequence[str],
    *,
    null_model="reinit",
    n_pairs: int = 300,
    method: str = "exact",
    n_steps: int = 1000,
    n_boot: int = 2000,
    seed: int = 0,
    batch_size: int = 4096,
) -> ClassDensity:
    """Intra- vs inter-class polytope density at each hook (the paper's prediction 2).

    For ``n_pairs`` random same-label pairs and ``n_pairs`` different-label pairs of
    ``inputs``, the path density between their activations at each hook; the ratio
    inter / intra with a bootstrap CI, a Mann-Whitney test, and the raw crossing counts and
    distances (density is their ratio, and either can drive it).  The same pairs are run
    through ``null_model`` (default: an untrained re-initialised copy): a p-value alone can
    pass a random network.

    Parameters
    ----------
    hooks : list of str
        Activation hooks, e.g. ``["hook_input", "blocks.0.mlp.hook_post", ...]``.
    null_model : "reinit", a model, or None
        The null network (``None`` skips it).

    Returns
    -------
    ClassDensity

    Examples
    --------
    >>> import numpy as np, torch, neuroprobe as npb
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> m = ReLUMLP([2, 8, 8, 3], seed=0)
    >>> y = np.repeat([0, 1], 8)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(16, 2, generator=g) + 3 * torch.tensor(y)[:, None]
    >>> res = npb.class_density(m, x, y, ["hook_input"], n_pairs=10, n_boot=50)
    >>> sorted(res.to_dataframe()["network"])
    ['null', 'trained']
    """
    _check_method(method)
    check_positive_int(n_pairs, "n_pairs")
    check_positive_int(n_steps, "n_steps")
    check_positive_int(n_boot, "n_boot")
    check_positive_int(batch_size, "batch_size")
    seed = check_int(seed, "seed", minimum=0)
    x = _batch_tensor(inputs, "inputs")
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise NeuroprobeError(
            f"labels must be a 1-D sequence of class labels, one per input; got "
            f"{type(labels).__name__} {labels!r:.40}."
        )
    y = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels)
    if y.ndim != 1:
        raise NeuroprobeError(f"labels must be 1-D (one class per input); got shape {y.shape}.")
    if len(y) != x.shape[0]:
        raise NeuroprobeError(
            f"labels must have one entry per input ({x.shape[0]}); got {len(y)}."
        )
    hooks = check_name_list(hooks, "hooks", what="hook")
    for h in hooks:
        _check_model_hook(model, h, "hooks entry")
    if not isinstance(null_model, str) and null_model is not None:
        if not hasattr(null_model, "hook_dict"):
            raise NeuroprobeError(
                f"null_model must be 'reinit', a model, or None; got "
                f"{type(null_model).__name__}."
            )
        for h in hooks:
            _check_model_hook(null_model, h, "hooks entry (in null_model)")
    rng = np.random.default_rng(seed)
    intra, inter = _sample_pairs(y, n_pairs, rng)
    nets = [("trained", model)]
    if isinstance(null_model, str):
        if null_model != "reinit":
            raise NeuroprobeError(
                f"null_model must be 'reinit', a model, or None; got {null_model!r}."
            )
        nets.append(("null", untrained_copy(model, seed=seed + 1)))
    elif null_model is not None:
        nets.append(("null", null_model))
    rows, prs = [], []
    for net_name, net in nets:
        m = _prepare_model(net, method == "exact")
        for hook in hooks:
            a = activations(m, x, hook).double()
            check_finite(a, f"activations at {hook}")
            res = {}
            for kind, pr in (("intra", intra), ("inter", inter)):
                i, j = pr[:, 0], pr[:, 1]
                d = (a[j] - a[i]).norm(dim=1)
                keep = (d > 0).numpy()
                if not keep.any():
                    raise NeuroprobeError(
                        f"every {kind}-class pair has identical activations at {hook!r} "
                        f"(network {net_name!r}): no path to walk. Pass distinct inputs or "
                        "a later hook."
                    )
                i, j = i[keep], j[keep]
                f = _Downstream(m, hook, x[torch.as_tensor(i)], None, torch.float64,
                                batch_size)
                r = _density(f, a[i], a[j], d[torch.as_tensor(keep)],
                             torch.arange(len(i)), method, n_steps, batch_size)
                res[kind] = r
                prs.append(pd.DataFrame({
                    "network": net_name, "layer": hook, "kind": kind, "i": i, "j": j,
                    "crossings": r.crossings, "distance": r.distance, "density": r.density,
                    "endpoint_hamming": r.endpoint_hamming,
                }))
            rows.append({"network": net_name, "layer": hook,
                         **_summary(res["intra"], res["inter"], n_boot, rng)})
    return ClassDensity(pd.DataFrame(rows), pd.concat(prs, ignore_index=True), method)
