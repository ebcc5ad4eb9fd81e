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


# --- Shared validators for every public entry point (issue 16: hostile inputs) ---------------
# Each returns the cleaned value. Keep messages in the house form: argument, expected, got, fix.


def warn_degenerate(message: str, *, stacklevel: int = 3) -> None:
    """Warn with :class:`~neuroprobe.NeuroprobeWarning` (degenerate science, not an error)."""
    import warnings

    from neuroprobe.core.errors import NeuroprobeWarning

    warnings.warn(message, NeuroprobeWarning, stacklevel=stacklevel)


def check_bool(value, name: str) -> bool:
    """A real bool (``numpy.bool_`` too); refuses ints and strings such as ``"False"``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise NeuroprobeError(f"{name} must be True or False; got {value!r} ({type(value).__name__}).")


def check_choice(value, name: str, choices) -> str:
    """One of ``choices`` (strings), with the close matches named when it is misspelt."""
    import difflib

    choices = list(choices)
    if isinstance(value, str) and value in choices:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
    raise NeuroprobeError(
        f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}.{hint}"
    )


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool, not a float such as ``2.7``) in ``[minimum, maximum]``."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if ok and minimum is not None and value < minimum:
        ok = False
    if ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        lo = "-inf" if minimum is None else str(minimum)
        hi = "inf" if maximum is None else str(maximum)
        raise NeuroprobeError(
            f"{name} must be an integer in [{lo}, {hi}]; got {value!r} ({type(value).__name__})."
        )
    return int(value)


def check_real(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
               low_open: bool = False, high_open: bool = False, finite: bool = True) -> float:
    """A real number (not a bool) in the interval given; finite unless ``finite=False``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    v = float(value) if ok else float("nan")
    if ok and finite and not np.isfinite(v):
        ok = False
    if ok and minimum is not None and (v <= minimum if low_open else v < minimum):
        ok = False
    if ok and maximum is not None and (v >= maximum if high_open else v > maximum):
        ok = False
    if not ok:
        lo = "-inf" if minimum is None else f"{minimum:g}"
        hi = "inf" if maximum is None else f"{maximum:g}"
        interval = ("(" if low_open else "[") + f"{lo}, {hi}" + (")" if high_open else "]")
        raise NeuroprobeError(
            f"{name} must be a {'finite ' if finite else ''}number in {interval}; got {value!r}."
        )
    return v


def check_index_list(values, name: str, *, size: int | None = None, allow_empty: bool = False,
                     unique: bool = True, what: str = "index") -> list[int]:
    """Integer indices (a list, tuple, range, int array or tensor) in ``[0, size)``.

    Refuses floats (``[1.0, 2.5]`` would be truncated), bools, an empty list unless
    ``allow_empty``, repeats unless ``unique=False``, and indices out of range. Order is kept.
    """
    whats = "indices" if what == "index" else f"{what}s"
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        wrap = (f" Wrap a single {what} in a list: [{values!r}]."
                if isinstance(values, (int, np.integer)) else "")
        raise NeuroprobeError(
            f"{name} must be a list of integer {whats}; got {type(values).__name__} "
            f"{values!r}.{wrap}"
        )
    if isinstance(values, (Tensor, np.ndarray)):
        arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else values
        if arr.ndim != 1:
            raise NeuroprobeError(f"{name} must be 1-D; got shape {tuple(arr.shape)}.")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise NeuroprobeError(
                f"{name} must hold integer {whats}; got dtype {arr.dtype}. Cast with "
                ".long() / .astype(int) only if the values are whole numbers."
            )
        out = [int(v) for v in arr.tolist()]
    else:
        out = []
        for v in values:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise NeuroprobeError(
                    f"{name} must hold integer {whats}; got {v!r} ({type(v).__name__}) "
                    f"among them."
                )
            out.append(int(v))
    if not out and not allow_empty:
        raise NeuroprobeError(f"{name} is empty; pass at least one {what}.")
    if size is not None:
        bad = [v for v in out if v < 0 or v >= size]
        if bad:
            raise NeuroprobeError(
                f"{name} has {whats} out of range [0, {size}): {bad[:5]}"
                f"{' ...' if len(bad) > 5 else ''}."
            )
    if unique and len(set(out)) != len(out):
        seen, dup = set(), []
        for v in out:
            if v in seen:
                dup.append(v)
            seen.add(v)
        raise NeuroprobeError(f"{name} repeats {whats} {sorted(set(dup))[:5]}; pass each once.")
    return out


def check_name_list(values, name: str, *, what: str = "name", allow_empty: bool = False
                    ) -> list[str]:
    """A list of strings; a single string becomes ``[string]`` (never split into characters)."""
    if isinstance(values, str):
        return [values]
    if not hasattr(values, "__iter__") or isinstance(values, bytes):
        raise NeuroprobeError(
            f"{name} must be a {what} (str) or a list of them; got {type(values).__name__} "
            f"{values!r}."
        )
    out = list(values)
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise NeuroprobeError(
            f"{name} must hold {what}s as strings; got {bad[0]!r} ({type(bad[0]).__name__})."
        )
    if not out and not allow_empty:
        raise NeuroprobeError(f"{name} is empty; pass at least one {what}.")
    return out


def check_text_list(texts, name: str) -> list[str]:
    """A list of strings; a bare string is refused (iterating it would give characters)."""
    if isinstance(texts, (str, bytes)) or texts is None or not hasattr(texts, "__iter__"):
        raise NeuroprobeError(
            f"{name} must be a list of strings; got {type(texts).__name__} {texts!r:.40}. "
            f"Wrap a single text in a list: [{texts!r:.30}]."
        )
    out = list(texts)
    bad = [t for t in out if not isinstance(t, str)]
    if bad:
        raise NeuroprobeError(
            f"{name} must hold strings; got {type(bad[0]).__name__} {bad[0]!r:.40} among them."
        )
    return out


def check_writable_path(path, name: str, *, directory: bool = False):
    """A path we can write: a file path (not an existing directory) whose parent can be created,
    or with ``directory=True`` a directory that exists or can be made. Returns a ``Path``."""
    import os
    from pathlib import Path

    if not isinstance(path, (str, os.PathLike)):
        raise NeuroprobeError(f"{name} must be a path (str or Path); got {type(path).__name__}.")
    p = Path(path)
    if directory:
        if p.exists() and not p.is_dir():
            raise NeuroprobeError(f"{name}={str(p)!r} is a file; pass a directory.")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NeuroprobeError(
                f"{name}={str(p)!r} cannot be created ({e.strerror}); pass a writable directory."
            ) from None
        if not os.access(p, os.W_OK):
            raise NeuroprobeError(f"{name}={str(p)!r} is not writable; pass a writable directory.")
        return p
    if p.is_dir():
        raise NeuroprobeError(f"{name}={str(p)!r} is a directory; pass a file path inside it.")
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NeuroprobeError(
            f"{name}={str(p)!r}: its folder cannot be created ({e.strerror}); pass a writable "
            "path."
        ) from None
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise NeuroprobeError(f"{name}={str(p)!r} is not writable; pass a writable path.")
    return p


def check_known_keys(mapping, name: str, allowed) -> None:
    """Refuse keys of ``mapping`` that are not in ``allowed``, naming close matches."""
    import difflib

    allowed = list(allowed)
    unknown = [k for k in mapping if k not in allowed]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise NeuroprobeError(
            f"{name} has unknown key(s) {', '.join(hints)}; known keys: "
            f"{', '.join(sorted(map(str, allowed)))}."
        )


def warn_if_not_finite(t: Tensor, name: str) -> bool:
    """Warn (NeuroprobeWarning) if ``t`` has NaN/inf; return whether it is all finite."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n = int((~torch.isfinite(t)).sum())
        warn_degenerate(
            f"{name} contains {n} NaN or inf value(s) (e.g. NaN weights or an overflow); "
            "results computed from them are not meaningful.", stacklevel=4,
        )
        return False
    return True


def check_model(model, name: str = "model"):
    """A hooked model: what ``npb.load_model`` returns (a TransformerLens 4 bridge or a native
    model) or a ``HookedRootModule`` such as ``npb.ReLUMLP``. Returns it unchanged."""
    if hasattr(model, "hook_dict") and callable(model):
        return model
    if isinstance(model, (str, dict)):
        fix = f"load it first: {name} = npb.load_model({model!r})"
    else:
        fix = "load one with npb.load_model('smollm2-135m') or pass a HookedRootModule"
    raise NeuroprobeError(
        f"{name} must be a hooked model (npb.load_model(...) or a TransformerLens "
        f"HookedRootModule); got {type(model).__name__} {str(model)[:60]!r}; {fix}."
    )


def check_seed(seed, name: str = "seed") -> int:
    """A seed: an integer in ``[0, 2**32)`` (what numpy and torch both accept)."""
    return check_int(seed, name, minimum=0, maximum=2**32 - 1)


def check_callable(fn, name: str, n_args: int, *, expected: str) -> None:
    """``fn`` is callable and accepts ``n_args`` positional arguments (``expected`` shows the
    signature wanted, e.g. ``"f(step, loss)"``); a wrong signature is caught here, not as a raw
    TypeError deep inside a loop."""
    import inspect

    if not callable(fn):
        raise NeuroprobeError(
            f"{name} must be a callable {expected}; got {type(fn).__name__} {fn!r}."
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        sig.bind(*range(n_args))
    except TypeError as e:
        raise NeuroprobeError(
            f"{name} must accept {n_args} positional argument(s), as in {expected}; its "
            f"signature is {getattr(fn, '__name__', type(fn).__name__)}{sig} ({e})."
        ) from None


def read_text_file(path, name: str, *, what: str = "a UTF-8 text file") -> str:
    """The text of ``path``; a binary (non-UTF-8) file, a folder or an unreadable file is a
    NeuroprobeError naming ``name`` and the file, not a raw ``UnicodeDecodeError``."""
    from pathlib import Path

    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise NeuroprobeError(
            f"{name}={str(p)!r} is not {what}: byte {e.start} is not UTF-8 (a binary file?). "
            "Pass a UTF-8 text file."
        ) from None
    except IsADirectoryError:
        raise NeuroprobeError(f"{name}={str(p)!r} is a directory; pass {what}.") from None
    except FileNotFoundError:
        raise NeuroprobeError(f"{name}={str(p)!r} does not exist; pass {what}.") from None
    except PermissionError:
        raise NeuroprobeError(f"{name}={str(p)!r} is not readable (permission denied).") from None


def check_float_dtype(dtype, name: str = "dtype", *, allow_none: bool = False,
                      allow_str: bool = True) -> torch.dtype | None:
    """A floating torch dtype (``torch.float32``, or its name ``"float32"`` unless
    ``allow_str=False``); integer and bool dtypes are refused, since storing activations in
    them truncates every value. ``None`` passes through when ``allow_none``."""
    if dtype is None and allow_none:
        return None
    if not allow_str and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise NeuroprobeError(
            f"{name} must be a floating-point torch dtype such as torch.float32 or "
            f"torch.bfloat16; got {dtype!r} ({type(dtype).__name__})."
        )
    dt = dtype
    if isinstance(dtype, str):
        dt = getattr(torch, dtype.replace("torch.", ""), None)
    if not isinstance(dt, torch.dtype):
        raise NeuroprobeError(
            f"{name}={dtype!r} is not a torch dtype; use torch.float32, 'float32', "
            "torch.bfloat16, ..."
        )
    if not dt.is_floating_point:
        raise NeuroprobeError(
            f"{name}={dtype!r} is not a floating dtype: values stored as {dt} are truncated "
            "to whole numbers. Use torch.float32 (or float16 / bfloat16 / float64)."
        )
    return dt
