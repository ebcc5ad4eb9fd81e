"""Private: parsing contrasts given as strings over design column names, vectors or matrices."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from neuroprobe.core.errors import NeuroprobeError

_NUM = re.compile(r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[^\s+\-*/]+")


def parse_expression(expr: str, columns: Sequence[str]) -> np.ndarray:
    """``"a + b - 2*c"`` -> a weight vector over ``columns``.

    Terms are ``[sign] [number [*]] column`` or ``[sign] column [* number]``; column names
    are matched longest-first, so names that are not Python identifiers work.
    """
    cols = list(columns)
    by_len = sorted(cols, key=len, reverse=True)
    w = np.zeros(len(cols))
    s = expr
    i, n = 0, len(s)
    n_terms = 0

    def skip(i):
        while i < n and s[i].isspace():
            i += 1
        return i

    def unknown(i):
        m = _WORD.match(s, i)
        bad = m.group(0) if m else s[i:]
        return NeuroprobeError(
            f"contrast {expr!r} names unknown column {bad!r}; columns are: {', '.join(cols)}."
        )

    i = skip(i)
    if i == n:
        raise NeuroprobeError(
            f"contrast {expr!r} is empty; write e.g. '{cols[0]}' or a difference of columns "
            f"(columns are: {', '.join(cols)})."
        )
    while i < n:
        sign = 1.0
        had_sign = False
        while i < n and s[i] in "+-":
            sign = -sign if s[i] == "-" else sign
            had_sign = True
            i = skip(i + 1)
        if n_terms and not had_sign:
            raise NeuroprobeError(
                f"contrast {expr!r}: expected '+' or '-' between terms at position {i}; "
                f"columns are: {', '.join(cols)}."
            )
        coef = 1.0
        name = next((c for c in by_len if s.startswith(c, i)), None)
        if name is None:
            m = _NUM.match(s, i)
            if m is None:
                raise unknown(i)
            coef = float(m.group(0))
            i = skip(m.end())
            if i < n and s[i] == "*":
                i = skip(i + 1)
            name = next((c for c in by_len if s.startswith(c, i)), None)
            if name is None:
                raise unknown(i)
        i = skip(i + len(name))
        if i < n and s[i] in "*/":
            op = s[i]
            i = skip(i + 1)
            m = _NUM.match(s, i)
            if m is None:
                raise NeuroprobeError(
                    f"contrast {expr!r}: expected a number after {op!r} at position {i}."
                )
            v = float(m.group(0))
            coef = coef * v if op == "*" else coef / v
            i = skip(m.end())
        w[cols.index(name)] += sign * coef
        n_terms += 1
    return w


def _parse(expr: str, columns: Sequence[str]) -> np.ndarray:
    """The term parser; expressions with parentheses go to the full grammar."""
    try:
        return parse_expression(expr, columns)
    except NeuroprobeError:
        if "(" not in expr and ")" not in expr:
            raise
    from neuroprobe.glm.contrast_grammar import parse_linear

    return parse_linear(expr, columns)


def as_contrast(c, columns: Sequence[str]) -> np.ndarray:
    """A contrast as a float array ``[P]`` (t) or ``[q, P]`` (F)."""
    P = len(columns)
    if isinstance(c, str):
        return _parse(c, columns)
    if isinstance(c, (list, tuple)) and c and all(isinstance(x, str) for x in c):
        return np.stack([_parse(x, columns) for x in c])
    try:
        arr = np.asarray(c.detach().cpu() if hasattr(c, "detach") else c, dtype=np.float64)
    except (TypeError, ValueError):
        raise NeuroprobeError(
            f"contrast must be a string over the columns, a vector of length {P} or a "
            f"matrix [q, {P}]; got {type(c).__name__}."
        ) from None
    if arr.ndim not in (1, 2) or arr.shape[-1] != P:
        raise NeuroprobeError(
            f"contrast has shape {arr.shape} but the design has {P} columns "
            f"({', '.join(columns)}); pass a vector of length {P} (t test) or a matrix "
            f"[q, {P}] (F test)."
        )
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if not np.isfinite(arr).all():
        raise NeuroprobeError("contrast contains NaN or inf; pass finite weights.")
    if not np.any(arr):
        raise NeuroprobeError("contrast is all zeros; it tests nothing. Give non-zero weights.")
    return arr
