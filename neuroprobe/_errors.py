"""The one public exception of neuroprobe."""

from __future__ import annotations

__all__ = ["NeuroprobeError"]


class NeuroprobeError(ValueError):
    """Raised for bad input to any neuroprobe function.

    Messages name the argument, what was expected, what was received and a fix.
    It subclasses :class:`ValueError`, so ``except ValueError`` keeps working.

    Examples
    --------
    >>> from neuroprobe import NeuroprobeError
    >>> issubclass(NeuroprobeError, ValueError)
    True
    """
