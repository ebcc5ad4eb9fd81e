"""The one public exception of neuroprobe."""

from __future__ import annotations

__all__ = ["NeuroprobeError", "NeuroprobeWarning"]


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


class NeuroprobeWarning(UserWarning):
    """Warned for degenerate science or a slower fallback that still gives exact numbers.

    Filter it like any warning category, e.g.
    ``warnings.simplefilter("error", npb.NeuroprobeWarning)`` to make every such case fail.

    Examples
    --------
    >>> from neuroprobe import NeuroprobeWarning
    >>> issubclass(NeuroprobeWarning, UserWarning)
    True
    """
