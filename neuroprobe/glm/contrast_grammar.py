"""Private: the full linear contrast grammar -- parentheses, scalars on either side, ``/``.

``"face / 10 + (window - face) * 2 - house"`` -> weights over the design columns, as
nilearn's ``expression_to_contrast_vector`` (pandas ``eval`` of the expression over an
identity matrix) gives them.  Grammar (recursive descent)::

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := ("+" | "-") factor | number | column | "(" expr ")"

Every sub-expression is a linear form ``w . columns + c``; a product needs one scalar side,
a divisor must be a non-zero scalar, and the whole must have no constant part.  Column
names are matched longest first (names with spaces or dots work).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from neuroprobe.core.errors import NeuroprobeError


def parse_number(text: str, expr: str) -> float:
    """A number of a contrast string, refused when float64 cannot hold it (``1e400``
    overflows to inf, ``1e-400`` underflows to 0)."""
    v = float(text)
    if not np.isfinite(v) or (v == 0 and any(ch in "123456789" for ch in
                                             text.lower().split("e")[0])):
        raise NeuroprobeError(
            f"contrast {expr!r}: the number {text!r} is outside float64's range (it "
            f"{'overflows to inf' if not np.isfinite(v) else 'underflows to 0'}); scale the "
            "weights to moderate numbers -- t, p and z do not depend on the scale."
        )
    return v

_NUM = re.compile(r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?")


class _Parser:
    def __init__(self, expr: str, columns: Sequence[str]):
        self.s, self.cols = expr, list(columns)
        self.by_len = sorted(self.cols, key=len, reverse=True)
        self.i = 0
        self.P = len(self.cols)

    def fail(self, what: str) -> NeuroprobeError:
        return NeuroprobeError(
            f"contrast {self.s!r}: {what} at position {self.i}; columns are: "
            f"{', '.join(self.cols)}."
        )

    def skip(self) -> None:
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def peek(self) -> str:
        self.skip()
        return self.s[self.i] if self.i < len(self.s) else ""

    def expr(self):
        w, c = self.term()
        while self.peek() in ("+", "-") and self.peek():
            op = self.s[self.i]
            self.i += 1
            w2, c2 = self.term()
            sg = 1.0 if op == "+" else -1.0
            w, c = w + sg * w2, c + sg * c2
        return w, c

    def term(self):
        w, c = self.factor()
        while self.peek() in ("*", "/") and self.peek():
            op = self.s[self.i]
            self.i += 1
            w2, c2 = self.factor()
            before = np.count_nonzero(w) + np.count_nonzero(w2) + (c != 0) + (c2 != 0)
            if op == "*":
                if np.any(w) and np.any(w2):
                    raise self.fail("a product of two column terms is not linear")
                zero = (not np.any(w) and c == 0) or (not np.any(w2) and c2 == 0)
                w, c = (w * c2, c * c2) if np.any(w) or not np.any(w2) else (w2 * c, c * c2)
            else:
                if np.any(w2):
                    raise self.fail("division by a column term is not linear")
                if c2 == 0:
                    raise self.fail("division by zero")
                zero = not np.any(w) and c == 0
                w, c = w / c2, c / c2
            if not zero and before and not (np.any(w) or c != 0):
                raise self.fail(
                    "a product or quotient underflows to 0 in float64 (scale the weights to "
                    "moderate numbers; t, p and z do not depend on the scale)"
                )
        return w, c

    def factor(self):
        ch = self.peek()
        if ch in ("+", "-") and ch:
            self.i += 1
            w, c = self.factor()
            return (w, c) if ch == "+" else (-w, -c)
        if ch == "(":
            self.i += 1
            w, c = self.expr()
            if self.peek() != ")":
                raise self.fail("expected ')'")
            self.i += 1
            return w, c
        name = next((n for n in self.by_len if self.s.startswith(n, self.i)), None)
        if name is not None:
            self.i += len(name)
            w = np.zeros(self.P)
            w[self.cols.index(name)] = 1.0
            return w, 0.0
        m = _NUM.match(self.s, self.i)
        if m is not None:

            self.i = m.end()
            return np.zeros(self.P), parse_number(m.group(0), self.s)
        raise self.fail("expected a column name, a number or '('")


def parse_linear(expr: str, columns: Sequence[str]) -> np.ndarray:
    """Weights over ``columns`` of a linear expression with parentheses and scalars."""
    p = _Parser(expr, columns)
    try:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            w, c = p.expr()
    except RecursionError:
        raise NeuroprobeError(
            f"contrast {expr[:40]!r}...: parentheses nested too deeply to parse; simplify the "
            "expression."
        ) from None
    if not (np.isfinite(w).all() and np.isfinite(c)):
        raise NeuroprobeError(
            f"contrast {expr!r}: its weights overflow float64; scale them to moderate "
            "numbers -- t, p and z do not depend on the scale."
        )
    if p.peek():
        raise p.fail(f"unexpected {p.s[p.i]!r}")
    if c != 0:
        raise NeuroprobeError(
            f"contrast {expr!r} has a constant part ({c:g}); a contrast weighs columns only."
        )
    return w
