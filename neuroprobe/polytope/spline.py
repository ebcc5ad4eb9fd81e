"""Spline codes: which units are above threshold, as bit-packed binary vectors.

A ReLU network partitions the input space of layer ``l`` into convex polytopes; each one is
named by its *spline code*, the binary vector saying which pre-activations of layers
``l..L`` are above threshold (Black, Sharkey et al., "Interpreting neural networks through
the polytope lens", 2022; Balestriero & Baraniuk, 2018).  Concatenating the pre-activation
hooks of layers ``l..L`` (``blocks.*.mlp.hook_pre``: the *gate* pre-activation on gated
MLPs) gives the code for that layer range.

Smooth activations (SiLU, GELU) have *probabilistic* codes: a unit is "on" with
probability ``sigmoid(z / T)`` (SiLU) or ``Phi(z / T)`` (GELU); ``T = 1`` is the
Balestriero-Baraniuk soft assignment of the activation itself, and ``T -> 0`` recovers the
binary code.  The expected Hamming distance between two independent probabilistic codes is
``sum p (1 - q) + q (1 - p)``, which equals the binary Hamming distance in that limit.

Binary codes are stored packed, 8 units per byte (3,072 units -> 384 bytes).  All-pairs
Hamming and Jaccard distances are computed blockwise through integer/float matrix products
(``|a| + |b| - 2 a.b``), which is much faster on CPU than per-pair popcounts.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from neuroprobe.core.engine import run_hooks
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.hooks import match_hook_names
from neuroprobe.core.shards import note_batch, union_seen
from neuroprobe.core.units import UnitIndex
from neuroprobe.core.validation import (
    as_tensor,
    check_bool,
    check_finite,
    check_index_list,
    check_int,
    check_name_list,
    check_positive_int,
    check_real,
)

__all__ = [
    "SplineCodes",
    "ProbabilisticCodes",
    "SplineCodeProbe",
    "spline_codes",
    "probabilistic_codes",
    "preactivation_hooks",
    "hamming_distance",
    "jaccard_distance",
    "hamming_matrix",
    "jaccard_matrix",
    "expected_hamming",
    "expected_hamming_matrix",
]

_PRE_SUFFIXES = ("hook_pre",)


def _is_pre_hook(name: str) -> bool:
    last = name.split("@")[0].rsplit(".", 1)[-1]
    return last in _PRE_SUFFIXES


def preactivation_hooks(model) -> list[str]:
    """Names of the pre-activation hooks of a model (``...hook_pre``), in module order.

    On TransformerLens models these are ``blocks.L.mlp.hook_pre`` (the gate pre-activation
    of a gated MLP); the ReLU MLPs of neuroprobe name theirs the same way.

    Examples
    --------
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> preactivation_hooks(ReLUMLP([4, 8, 8, 3]))
    ['blocks.0.mlp.hook_pre', 'blocks.1.mlp.hook_pre']
    """
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None:
        raise NeuroprobeError(
            f"model must be a HookedRootModule or TransformerBridge with a hook_dict; got "
            f"{type(model).__name__}. Wrap your network's pre-activations in HookPoints."
        )
    return [n for n in hook_dict if _is_pre_hook(n)]


def _check_pre_hooks(hooks: Sequence[str], available: Sequence[str], check: bool) -> None:
    bad = [h for h in hooks if not _is_pre_hook(h)]
    if bad and check:
        raise NeuroprobeError(
            f"hooks {bad[:5]} are not pre-activation hooks: spline codes threshold the input "
            f"of a nonlinearity. Pre-activation hooks here: {list(available)[:8]}"
            f"{' ...' if len(available) > 8 else ''}. Pass one of those, or "
            "check_hooks=False if your hook really is a pre-activation."
        )


# ------------------------------------------------------------------------------------------
# binary codes
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SplineCodes:
    """Binary spline codes of ``n`` points, bit-packed.

    Attributes
    ----------
    packed : ndarray ``uint8 [n, ceil(n_bits / 8)]``
        Bit ``j`` of row ``i`` (``np.packbits`` order, big-endian within a byte) is 1 when
        unit ``j`` is above ``threshold`` at point ``i``.
    n_bits : int
        Number of units in the code.
    threshold : float
        The threshold used.
    units : UnitIndex or None
        Which unit each bit is (when the codes came from a recording or a model).

    Examples
    --------
    >>> import torch
    >>> c = spline_codes(torch.tensor([[1.0, -2.0, 0.5], [-1.0, -1.0, 3.0]]))
    >>> c
    SplineCodes(n=2, n_bits=3, n_bytes=1, threshold=0.0)
    >>> c.unpack().int().tolist()
    [[1, 0, 1], [0, 0, 1]]
    """

    packed: np.ndarray
    n_bits: int
    threshold: float = 0.0
    units: UnitIndex | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.packed.shape[0])

    @property
    def n_bytes(self) -> int:
        return int(self.packed.shape[1])

    def __repr__(self) -> str:
        return (
            f"SplineCodes(n={len(self)}, n_bits={self.n_bits}, n_bytes={self.n_bytes}, "
            f"threshold={self.threshold})"
        )

    def _rows(self, rows):
        """``rows`` checked against ``len(self)``: an int, a slice, a bool mask of length n or
        integer indices."""
        n = len(self)
        if isinstance(rows, slice):
            return rows
        if isinstance(rows, (int, np.integer)) and not isinstance(rows, (bool, np.bool_)):
            if not -n <= int(rows) < n:
                raise NeuroprobeError(f"rows={int(rows)} is out of range for {n} codes.")
            return int(rows)
        arr = rows.detach().cpu().numpy() if isinstance(rows, Tensor) else rows
        if isinstance(arr, np.ndarray) and arr.dtype == bool:
            if arr.shape != (n,):
                raise NeuroprobeError(
                    f"rows as a boolean mask must have one entry per code ({n}); got shape "
                    f"{arr.shape}."
                )
            return arr
        return np.asarray(check_index_list(arr, "rows", size=n, unique=False, allow_empty=True,
                                           what="row"), dtype=np.int64)

    def unpack(self, rows=None) -> Bool[Tensor, "n bit"]:
        """The codes as a bool tensor ``[n, n_bits]`` (optionally only ``rows``)."""
        p = self.packed if rows is None else self.packed[self._rows(rows)]
        bits = np.unpackbits(np.atleast_2d(p), axis=1, count=self.n_bits)
        return torch.from_numpy(bits.astype(bool))

    def __getitem__(self, rows) -> SplineCodes:
        p = self.packed[self._rows(rows)]
        if p.ndim == 1:
            p = p[None]
        return SplineCodes(np.ascontiguousarray(p), self.n_bits, self.threshold, self.units)

    @property
    def n_active(self) -> np.ndarray:
        """Number of units on, per point ``[n]``."""
        return _popcount_rows(self.packed)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per point: ``point``, ``n_active``, ``fraction_active``, ``code`` (hex)."""
        return pd.DataFrame(
            {
                "point": np.arange(len(self)),
                "n_active": self.n_active,
                "fraction_active": self.n_active / max(self.n_bits, 1),
                "code": [r.tobytes().hex() for r in self.packed],
            }
        )


def _popcount_rows(packed: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(packed).sum(axis=1).astype(np.int64)
    return np.unpackbits(packed, axis=1).sum(axis=1).astype(np.int64)  # pragma: no cover


def _input_hint(model) -> str:
    """What the model's first layer takes, for error messages (empty when unknown)."""
    sizes = getattr(model, "sizes", None)
    if isinstance(sizes, (list, tuple)) and sizes and isinstance(sizes[0], int):
        return f" (this model takes inputs [n, {sizes[0]}])"
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            return f" (its first linear layer takes {mod.in_features} features)"
        if isinstance(mod, torch.nn.Conv2d):
            return f" (its first convolution takes {mod.in_channels} channels)"
    return ""


def _forward_failed(model, inputs, name: str, err: Exception) -> NeuroprobeError:
    """The NeuroprobeError for a forward pass that failed on the given inputs."""
    shape = tuple(inputs.shape) if hasattr(inputs, "shape") else type(inputs).__name__
    return NeuroprobeError(
        f"{name} of shape {shape} do not fit the model: its forward pass failed ({err}). "
        f"Pass inputs of the model's input shape{_input_hint(model)}."
    )


def _check_code_args(hooks, check_hooks, batch_size, spatial):
    if hooks is not None:
        hooks = check_name_list(hooks, "hooks", what="hook name or glob")
    check_bool(check_hooks, "check_hooks")
    check_positive_int(batch_size, "batch_size")
    if spatial is not None and (
        isinstance(spatial, (str, bytes)) or not hasattr(spatial, "__len__") or len(spatial) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                   for v in spatial)):
        raise NeuroprobeError(
            f"spatial must be a (row, column) pair of ints; got {spatial!r}."
        )
    return hooks


def _preacts_from_source(source, inputs, hooks, check_hooks, batch_size, spatial=None):
    """Pre-activation matrix ``[n, units]`` and its UnitIndex from any supported source."""
    hooks = _check_code_args(hooks, check_hooks, batch_size, spatial)
    if isinstance(source, torch.nn.Module):
        avail = preactivation_hooks(source)
        names = avail if hooks is None else match_hook_names(list(source.hook_dict), hooks)
        if not names:
            raise NeuroprobeError(
                f"model {type(source).__name__} has no pre-activation hooks (names ending in "
                "'hook_pre'); pass hooks=[...] and check_hooks=False."
            )
        _check_pre_hooks(names, avail, check_hooks)
        if inputs is None:
            raise NeuroprobeError(
                "spline_codes(model, inputs=None): pass the inputs to run (a tensor of inputs "
                "for a HookedRootModule, a list of strings for a language model)."
            )
        if isinstance(inputs, Tensor) and not hasattr(source, "tokenizer"):
            if inputs.ndim < 2 or inputs.shape[0] == 0:
                raise NeuroprobeError(
                    f"inputs must be a batch [n >= 1, ...] of inputs; got shape "
                    f"{tuple(inputs.shape)}. Add the batch axis: inputs[None]."
                )
            try:
                acts = run_hooks(source, inputs, names, batch_size=batch_size)
            except RuntimeError as e:
                raise _forward_failed(source, inputs, "inputs", e) from e
            if spatial is not None:
                acts = {n: _at_position(a, n, spatial) for n, a in acts.items()}
            widths = {n: int(np.prod(acts[n].shape[1:])) for n in names}
            x = torch.cat([acts[n].reshape(acts[n].shape[0], -1) for n in names], 1)
            return x, UnitIndex.from_hooks(widths)
        if spatial is not None:
            raise NeuroprobeError("spatial=(i, j) is for convolutional HookedRootModules run "
                                  "on a tensor of images; language models have none.")
        from neuroprobe.core.capture import record  # lazily: only language models need it

        if not isinstance(inputs, (str, Tensor)) and hasattr(inputs, "__iter__"):
            bad = [x for x in inputs if not isinstance(x, (str, Tensor, np.ndarray))
                   and not (hasattr(x, "__iter__") and not isinstance(x, bytes))]
            if bad:
                raise NeuroprobeError(
                    f"inputs for a language model must be prompts (a list of strings) or "
                    f"token-id lists / a token tensor [n, pos]; got {type(bad[0]).__name__} "
                    f"{bad[0]!r:.30} among them. Wrap one prompt's token ids in a list."
                )

        rec = record(source, inputs, hooks=names, batch_size=batch_size)
        return rec.acts, rec.units
    if spatial is not None:
        raise NeuroprobeError("spatial=(i, j) needs a model and image inputs; slice "
                              "pre-activations yourself.")
    if inputs is not None:
        raise NeuroprobeError(
            "spline_codes(x, inputs=...) : inputs are only used when the first argument is a "
            "model; pass pre-activations alone, or the model first."
        )
    units = getattr(source, "units", None)
    x = as_tensor(source, "x", ndim=2)
    if x.is_complex():
        raise NeuroprobeError(f"x is complex ({x.dtype}); pre-activations are real.")
    if x.shape[1] == 0:
        raise NeuroprobeError(f"x has 0 unit columns (shape {tuple(x.shape)}); a spline code "
                              "needs at least one unit.")
    if units is not None:
        names = list(units.hooks) if hooks is None else match_hook_names(units.hooks, hooks)
        _check_pre_hooks(names, [h for h in units.hooks if _is_pre_hook(h)], check_hooks)
        if hooks is not None:
            cols = np.concatenate([units.select(hook=h) for h in names])
            x, units = x[:, torch.as_tensor(cols)], units.subset(cols)
    elif hooks is not None:
        raise NeuroprobeError(
            "hooks=... needs a Recording (or a model) to know which columns belong to which "
            "hook; got a bare tensor. Slice the columns yourself or pass the Recording."
        )
    return x, units


def _at_position(a: Tensor, name: str, spatial) -> Tensor:
    """Channels of a ``[n, C, H, W]`` hook output at one spatial position -> ``[n, C]``."""
    i, j = spatial
    if a.ndim != 4:
        raise NeuroprobeError(
            f"spatial=(i, j) needs [batch, channel, height, width] outputs; hook {name!r} gives "
            f"shape {tuple(a.shape)}."
        )
    if not (-a.shape[2] <= i < a.shape[2] and -a.shape[3] <= j < a.shape[3]):
        raise NeuroprobeError(
            f"spatial={tuple(spatial)} is outside hook {name!r}'s {a.shape[2]}x{a.shape[3]} map."
        )
    return a[:, :, i, j]


def spline_codes(
    source,
    inputs=None,
    *,
    hooks: str | Sequence[str] | None = None,
    threshold: float = 0.0,
    check_hooks: bool = True,
    spatial: tuple[int, int] | None = None,
    batch_size: int = 256,
) -> SplineCodes:
    """Binary spline codes: ``pre-activation > threshold`` for every unit, bit-packed.

    Parameters
    ----------
    source : Tensor ``[n, units]``, ndarray, Recording, or model
        Pre-activations (one row per input / token), a :class:`~neuroprobe.Recording` of
        pre-activation hooks, or a model (a ``HookedRootModule`` or ``TransformerBridge``)
        to run on ``inputs``.
    inputs : Tensor or list of str, optional
        Only with a model: the inputs (tensor of inputs for a HookedRootModule, prompts for a
        language model; every token becomes a row).
    hooks : str or list of str, optional
        Hook names or globs to include (e.g. ``"blocks.1[0-1].mlp.hook_pre"`` for the code
        of layers 10-11).  Default: every pre-activation hook.  The code of layers ``l..L``
        is the concatenation of their pre-activation hooks.
    threshold : float
        A unit is on when its pre-activation is strictly above this value (0 for ReLU).
    check_hooks : bool
        Raise when a hook is not a pre-activation (name not ending in ``hook_pre``).
    spatial : (int, int), optional
        Convolutional networks: code the channels at this (row, column) of each
        ``[batch, channel, height, width]`` pre-activation (default: every position).

    Returns
    -------
    SplineCodes

    Examples
    --------
    >>> import torch
    >>> spline_codes(torch.randn(5, 3072)).n_bytes
    384
    """
    x, units = _preacts_from_source(source, inputs, hooks, check_hooks, batch_size, spatial)
    if not x.is_floating_point():
        x = x.float()
    check_finite(x, "pre-activations", axis_name="unit")
    threshold = check_real(threshold, "threshold")
    bits = (x > threshold).cpu().numpy()
    return SplineCodes(np.packbits(bits, axis=1), int(x.shape[1]), float(threshold), units)


# ------------------------------------------------------------------------------------------
# probabilistic codes
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ProbabilisticCodes:
    """Soft spline codes: per unit, the probability of being in the "on" region.

    Attributes
    ----------
    probs : Tensor ``float32 [n, n_bits]``
    activation : str
        ``"silu"`` (``sigmoid(z / T)``), ``"gelu"`` (``Phi(z / T)``) or ``"relu"`` (hard).
    temperature : float
    units : UnitIndex or None

    Examples
    --------
    >>> import torch
    >>> probabilistic_codes(torch.zeros(2, 4)).probs.tolist()[0]
    [0.5, 0.5, 0.5, 0.5]
    """

    probs: Float[Tensor, "n bit"]
    activation: str
    temperature: float
    units: UnitIndex | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    @property
    def n_bits(self) -> int:
        return int(self.probs.shape[1])

    def __repr__(self) -> str:
        return (
            f"ProbabilisticCodes(n={len(self)}, n_bits={self.n_bits}, "
            f"activation={self.activation!r}, temperature={self.temperature})"
        )

    def binarize(self) -> SplineCodes:
        """The T -> 0 limit: ``probs > 0.5`` (i.e. pre-activation > 0)."""
        return SplineCodes(np.packbits((self.probs > 0.5).numpy(), axis=1), self.n_bits, 0.0,
                           self.units)

    def to_dataframe(self) -> pd.DataFrame:
        """Per point: ``point``, ``expected_active`` (sum of probabilities), ``entropy``."""
        p = self.probs.double().clamp(1e-12, 1 - 1e-12)
        ent = -(p * p.log2() + (1 - p) * (1 - p).log2()).sum(1)
        return pd.DataFrame(
            {
                "point": np.arange(len(self)),
                "expected_active": self.probs.double().sum(1).numpy(),
                "entropy_bits": ent.numpy(),
            }
        )


_ACTIVATIONS = ("silu", "gelu", "relu")


def probabilistic_codes(
    source,
    inputs=None,
    *,
    activation: str = "silu",
    temperature: float = 1.0,
    hooks: str | Sequence[str] | None = None,
    check_hooks: bool = True,
    spatial: tuple[int, int] | None = None,
    batch_size: int = 256,
) -> ProbabilisticCodes:
    """Probabilistic spline codes for smooth activations (Balestriero & Baraniuk).

    ``p = sigmoid(z / T)`` for SiLU/Swish, ``p = Phi(z / T)`` for GELU (``Phi`` the normal
    CDF), and the hard ``z > 0`` for ReLU.  ``temperature=1`` is the soft region assignment
    of the activation itself (``silu(z) = z * sigmoid(z)``, ``gelu(z) = z * Phi(z)``); as
    ``temperature -> 0`` the codes become the binary ones and :func:`expected_hamming`
    becomes :func:`hamming_distance`.

    Parameters are as in :func:`spline_codes`.

    Returns
    -------
    ProbabilisticCodes

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[2.0, -2.0]])
    >>> probabilistic_codes(z, activation="gelu", temperature=1e-3).probs.tolist()
    [[1.0, 0.0]]
    """
    if activation not in _ACTIVATIONS:
        raise NeuroprobeError(
            f"activation must be one of {_ACTIVATIONS}; got {activation!r}. Use 'silu' for "
            "SiLU/Swish (SmolLM2, Llama), 'gelu' for GELU (GPT-2)."
        )
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(
            temperature, (int, float, np.integer, np.floating)) or not temperature > 0 \
            or not math.isfinite(temperature):
        raise NeuroprobeError(
            f"temperature must be a positive finite number; got {temperature!r}. Use a small "
            "value (1e-3) for codes close to binary."
        )
    x, units = _preacts_from_source(source, inputs, hooks, check_hooks, batch_size, spatial)
    x = x.double()
    check_finite(x, "pre-activations", axis_name="unit")
    z = x / float(temperature)
    if activation == "silu":
        p = torch.sigmoid(z)
    elif activation == "gelu":
        p = 0.5 * torch.erfc(-z / math.sqrt(2.0))
    else:
        p = (x > 0).double()
    return ProbabilisticCodes(p.float(), activation, float(temperature), units)


# ------------------------------------------------------------------------------------------
# distances
# ------------------------------------------------------------------------------------------
def _check_pair(a, b, name_a="a", name_b="b"):
    for nm, c in ((name_a, a), (name_b, b)):
        if not isinstance(c, SplineCodes):
            raise NeuroprobeError(
                f"{nm} must be SplineCodes (from spline_codes); got {type(c).__name__}."
            )
    if a.n_bits != b.n_bits:
        raise NeuroprobeError(
            f"codes have different widths: {name_a} has {a.n_bits} bits, {name_b} has "
            f"{b.n_bits}. Codes must come from the same hooks (same layer range) to compare."
        )


def _rowwise(a: SplineCodes, b: SplineCodes):
    _check_pair(a, b)
    if len(a) != len(b) and len(a) != 1 and len(b) != 1:
        raise NeuroprobeError(
            f"a and b must have the same number of codes (or one of them 1); got {len(a)} "
            f"and {len(b)}. For all pairs use hamming_matrix."
        )
    inter = _popcount_rows(a.packed & b.packed)
    union = _popcount_rows(a.packed | b.packed)
    return inter, union


def hamming_distance(a: SplineCodes, b: SplineCodes) -> np.ndarray:
    """Hamming distance (number of differing units) between matching rows of ``a`` and ``b``.

    Examples
    --------
    >>> import torch
    >>> a = spline_codes(torch.tensor([[1.0, 1.0, -1.0]]))
    >>> b = spline_codes(torch.tensor([[1.0, -1.0, 1.0]]))
    >>> hamming_distance(a, b).tolist(), jaccard_distance(a, b).tolist()
    ([2], [0.666...])
    """
    inter, union = _rowwise(a, b)
    return (union - inter).astype(np.int64)


def jaccard_distance(a: SplineCodes, b: SplineCodes) -> np.ndarray:
    """Jaccard distance ``1 - |a & b| / |a | b|`` between matching rows (0 if both empty).

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> m = ReLUMLP([2, 8, 8, 3], seed=0)
    >>> x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    >>> a = npb.spline_codes(m, x, hooks="blocks.*.mlp.hook_pre")
    >>> b = npb.spline_codes(m, -x, hooks="blocks.*.mlp.hook_pre")
    >>> npb.jaccard_distance(a, a).tolist(), npb.jaccard_distance(a, b).round(3).tolist()
    ([0.0, 0.0, 0.0, 0.0, 0.0], [0.182, 0.25, 0.182, 0.25, 0.333])
    """
    inter, union = _rowwise(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 1.0 - inter / union
    return np.where(union == 0, 0.0, d)


def _unpack_block(c: SplineCodes, s: int, e: int, dtype) -> Tensor:
    bits = np.unpackbits(c.packed[s:e], axis=1)  # padded to a multiple of 8: zeros
    return torch.from_numpy(bits).to(dtype)


def gram_blocks(a: SplineCodes, b: SplineCodes | None, block_size: int):
    """Yield ``(i0, i1, j0, j1, a.b counts)`` over blocks; only i <= j when b is None.

    The shared kernel of the code distances: ``counts[i, j]`` is the number of units active
    in both code ``i0 + i`` of ``a`` and code ``j0 + j`` of ``b`` (an int8 matrix product
    where the torch build has one), one ``block_size`` row block in memory at a time; the
    all-pairs matrices here and the kNN graph of :func:`neuroprobe.hdbscan_clusters` are
    built from it.
    """
    sym = b is None
    bb = a if sym else b
    use_int = _int_mm_ok()
    dtype = torch.int8 if use_int else torch.float32
    bt = [(_unpack_block(bb, j, min(j + block_size, len(bb)), dtype), j)
          for j in range(0, len(bb), block_size)]
    for i in range(0, len(a), block_size):
        ai = _unpack_block(a, i, min(i + block_size, len(a)), dtype)
        for bj, j in bt:
            if sym and j < i:
                continue
            if use_int and ai.shape[0] > 16 and bj.shape[0] % 8 == 0:
                g = torch._int_mm(ai, bj.T.contiguous())
            else:
                g = ai.float() @ bj.float().T
            yield i, i + ai.shape[0], j, j + bj.shape[0], g.numpy()


_INT_MM: bool | None = None


def _int_mm_ok() -> bool:
    global _INT_MM
    if _INT_MM is None:
        try:
            x = torch.ones(32, 16, dtype=torch.int8)
            _INT_MM = bool((torch._int_mm(x, x.T.contiguous()) == 16).all())
        except Exception:  # pragma: no cover - depends on the torch build
            _INT_MM = False
    return _INT_MM


def _pair_matrix(a, b, block_size, kind) -> np.ndarray:
    if b is not None:
        _check_pair(a, b)
    elif not isinstance(a, SplineCodes):
        _check_pair(a, a)
    block_size = check_int(block_size, "block_size", minimum=8)
    na = a.n_active.astype(np.float32)
    nb = na if b is None else b.n_active.astype(np.float32)
    out = np.empty((len(a), len(a) if b is None else len(b)), dtype=np.float32)
    for i0, i1, j0, j1, g in gram_blocks(a, b, block_size):
        g = g.astype(np.float32)
        union = na[i0:i1, None] + nb[None, j0:j1] - g
        if kind == "hamming":
            d = union - g
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                d = np.where(union > 0, 1.0 - g / np.maximum(union, 1), 0.0)
        out[i0:i1, j0:j1] = d
        if b is None and j0 != i0:
            out[j0:j1, i0:i1] = d.T
    return out


def hamming_matrix(
    a: SplineCodes, b: SplineCodes | None = None, *, block_size: int = 2048
) -> Float[np.ndarray, "n m"]:
    """All-pairs Hamming distances (counts, float32 ``[len(a), len(b)]``).

    Computed blockwise as ``|a| + |b| - 2 a.b`` with integer matrix products (int8 ->
    int32, exact) when torch supports them, else float32 (exact below 2^24 bits).  With
    ``b=None`` only the upper block triangle is computed and mirrored.

    Examples
    --------
    >>> import torch
    >>> c = spline_codes(torch.tensor([[1.0, 1, -1], [1.0, -1, 1], [-1.0, -1, -1]]))
    >>> hamming_matrix(c).astype(int).tolist()
    [[0, 2, 2], [2, 0, 2], [2, 2, 0]]
    """
    return _pair_matrix(a, b, block_size, "hamming")


def jaccard_matrix(
    a: SplineCodes, b: SplineCodes | None = None, *, block_size: int = 2048
) -> Float[np.ndarray, "n m"]:
    """All-pairs Jaccard distances ``1 - |a & b| / |a | b|`` (float32, 0 for two empty codes).

    Examples
    --------
    >>> import torch
    >>> c = spline_codes(torch.tensor([[1.0, 1, -1], [1.0, -1, -1]]))
    >>> jaccard_matrix(c).round(3).tolist()
    [[0.0, 0.5], [0.5, 0.0]]
    """
    return _pair_matrix(a, b, block_size, "jaccard")


def _check_prob(p, name):
    if isinstance(p, ProbabilisticCodes):
        return p.probs.double()
    if isinstance(p, SplineCodes):
        return p.unpack().double()
    raise NeuroprobeError(
        f"{name} must be ProbabilisticCodes or SplineCodes; got {type(p).__name__}."
    )


def expected_hamming(p, q) -> np.ndarray:
    """Expected Hamming distance of matching rows of two (independent) probabilistic codes.

    ``E[H] = sum_j p_j (1 - q_j) + q_j (1 - p_j)``; for binary codes it is the Hamming
    distance.

    Examples
    --------
    >>> import torch
    >>> p = probabilistic_codes(torch.tensor([[0.0, 50.0]]))
    >>> q = probabilistic_codes(torch.tensor([[0.0, -50.0]]))
    >>> expected_hamming(p, q).round(3).tolist()
    [1.5]
    """
    a, b = _check_prob(p, "p"), _check_prob(q, "q")
    if a.shape[1] != b.shape[1]:
        raise NeuroprobeError(
            f"codes have different widths: p has {a.shape[1]} bits, q has {b.shape[1]}."
        )
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise NeuroprobeError(
            f"p and q must have the same number of codes (or one of them 1); got "
            f"{a.shape[0]} and {b.shape[0]}."
        )
    return (a * (1 - b) + b * (1 - a)).sum(1).numpy()


def expected_hamming_matrix(p, q=None, *, block_size: int = 2048) -> np.ndarray:
    """All-pairs expected Hamming distance ``sum p + sum q - 2 p.q`` (float64 ``[n, m]``).

    Examples
    --------
    >>> import numpy as np, torch, neuroprobe as npb
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> m = ReLUMLP([2, 8, 8, 3], seed=0)
    >>> x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    >>> soft = npb.probabilistic_codes(m, x, hooks="blocks.*.mlp.hook_pre", temperature=1e-4)
    >>> hard = npb.spline_codes(m, x, hooks="blocks.*.mlp.hook_pre")
    >>> bool(np.abs(npb.expected_hamming_matrix(soft) - npb.hamming_matrix(hard)).max() < 1e-3)
    True
    """
    block_size = check_positive_int(block_size, "block_size")
    a = _check_prob(p, "p")
    b = a if q is None else _check_prob(q, "q")
    if a.shape[1] != b.shape[1]:
        raise NeuroprobeError(
            f"codes have different widths: p has {a.shape[1]} bits, q has {b.shape[1]}."
        )
    sa, sb = a.sum(1), b.sum(1)
    out = np.empty((a.shape[0], b.shape[0]))
    for i in range(0, a.shape[0], block_size):
        ai = a[i:i + block_size]
        out[i:i + ai.shape[0]] = (sa[i:i + ai.shape[0], None] + sb[None] - 2 * ai @ b.T).numpy()
    return out


# ------------------------------------------------------------------------------------------
# streaming probe
# ------------------------------------------------------------------------------------------
class SplineCodeProbe:
    """Streaming probe that keeps the packed spline codes of every recorded token.

    Use it with :func:`neuroprobe.stream` to code corpora whose pre-activations would not fit
    in memory (3,072 units cost 384 bytes per token instead of 12 kB).

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.probes import BatchMeta
    >>> p = SplineCodeProbe(["blocks.0.mlp.hook_pre"])
    >>> i = torch.arange(2)
    >>> p.update({"blocks.0.mlp.hook_pre": torch.tensor([[1.0, -1.0], [-1.0, 1.0]])},
    ...          BatchMeta(i, i, i))
    >>> p.codes().unpack().int().tolist()
    [[1, 0], [0, 1]]
    """

    def __init__(self, hooks: Sequence[str], threshold: float = 0.0):
        self.hooks = check_name_list(hooks, "hooks", what="hook name or glob")
        self.threshold = check_real(threshold, "threshold")
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []  # (time_index, packed)
        self._n_bits: int | None = None
        self.seen: tuple = ()  # (prompt0, prompt1, time0, time1) ranges, see core.shards

    def update(self, acts: dict, meta) -> None:
        keys = [k for k in acts if any(fnmatch.fnmatchcase(k, h) for h in self.hooks)]
        if not keys:
            warnings.warn(f"SplineCodeProbe got none of its hooks {self.hooks}", stacklevel=2)
            return
        x = torch.cat([acts[k].reshape(acts[k].shape[0], -1).float() for k in keys], 1)
        check_finite(x, "pre-activations", axis_name="unit")
        if self._n_bits is not None and x.shape[1] != self._n_bits:
            raise NeuroprobeError(
                f"SplineCodeProbe: batch has {x.shape[1]} units, earlier batches had "
                f"{self._n_bits}; the hooks must keep the same width."
            )
        self._n_bits = int(x.shape[1])
        self.seen = note_batch(self.seen, meta, "SplineCodeProbe")
        packed = np.packbits((x > self.threshold).cpu().numpy(), axis=1)
        self._chunks.append((np.asarray(meta.time_index.cpu()), packed))

    def merge(self, other: SplineCodeProbe) -> SplineCodeProbe:
        if not isinstance(other, SplineCodeProbe):
            raise NeuroprobeError(
                f"other must be a SplineCodeProbe; got {type(other).__name__}."
            )
        if other.threshold != self.threshold:
            raise NeuroprobeError(
                f"cannot merge SplineCodeProbes of thresholds {self.threshold} and "
                f"{other.threshold}: their bits mean different things."
            )
        if self._n_bits and other._n_bits and self._n_bits != other._n_bits:
            raise NeuroprobeError(
                f"cannot merge SplineCodeProbes of {self._n_bits} and {other._n_bits} bits."
            )
        new = SplineCodeProbe(self.hooks, self.threshold)
        new.seen = union_seen(self.seen, other.seen, "SplineCodeProbe (self)",
                         "SplineCodeProbe (other)")
        new._chunks = self._chunks + other._chunks
        new._n_bits = self._n_bits or other._n_bits
        return new

    def codes(self) -> SplineCodes:
        """All codes seen so far, ordered by time index."""
        if not self._chunks:
            raise NeuroprobeError("SplineCodeProbe has seen no data yet; run it first.")
        t = np.concatenate([c[0] for c in self._chunks])
        p = np.concatenate([c[1] for c in self._chunks])
        return SplineCodes(p[np.argsort(t, kind="stable")], int(self._n_bits), self.threshold)
