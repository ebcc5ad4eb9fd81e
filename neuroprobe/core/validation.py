"""Private input checks shared by every module: each raises NeuroprobeError with a message
that names the argument, what was expected, what came, and a fix."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError


def as_tensor(
    x, name: str, *, ndim: int | None = None, dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``x`` (tensor, ndarray, list, DataFrame, or object with ``.acts``) as a torch tensor.

    Never mutates ``x``; a copy is made only when a conversion needs one.
    """
    if hasattr(x, "acts") and not isinstance(x, (Tensor, np.ndarray)):
        x = x.acts
    if hasattr(x, "to_numpy") and not isinstance(x, (Tensor, np.ndarray)):
        x = x.to_numpy()
    try:
        t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as e:
        raise NeuroprobeError(
            f"{name} must be a tensor or array; got {type(x).__name__} that cannot be "
            f"converted ({e})."
        ) from None
    if ndim is not None and t.ndim != ndim:
        raise NeuroprobeError(
            f"{name} must be {ndim}-D; got shape {tuple(t.shape)}."
            + (" Reshape to [time, unit]." if ndim == 2 else "")
        )
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    return t


def check_finite(t: Tensor, name: str, *, axis_name: str = "column") -> None:
    """Raise if ``t`` has NaN/inf, naming how many columns and the first few."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = ~torch.isfinite(t)
        if t.ndim == 2:
            cols = torch.nonzero(bad.any(0)).flatten()
            raise NeuroprobeError(
                f"{name} contains NaN or inf in {cols.numel()} {axis_name}(s), first: "
                f"{cols[:5].tolist()}; drop or impute them before fitting."
            )
        raise NeuroprobeError(
            f"{name} contains {int(bad.sum())} NaN or inf value(s); pass finite values."
        )


def check_fraction(value, name: str, *, low_open: bool = True, high_open: bool = True) -> float:
    """A number in (0, 1) (bounds open unless told otherwise)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise NeuroprobeError(f"{name} must be a number in {lo}0, 1{hi}; got {value!r}.")
    return float(value)


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise NeuroprobeError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return int(value)


def resolve_device(device) -> torch.device:
    """A torch device that exists here; a clear error for one that does not."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise NeuroprobeError(
            f"device={device!r} is not a device name; use 'cpu', 'cuda', 'cuda:0' or 'mps'."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NeuroprobeError(
                f"device={device!r} was asked for but CUDA is not available on this machine; "
                "use device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NeuroprobeError(
                f"device={device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise NeuroprobeError(f"device={device!r}: MPS is not available here; use 'cpu'.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise NeuroprobeError(f"device={device!r} is not supported; use 'cpu' or 'cuda'.")
    return dev
