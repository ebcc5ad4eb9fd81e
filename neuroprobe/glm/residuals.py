"""Residuals, predicted values and R^2 of a fitted GLM, on demand and in column blocks.

:func:`~neuroprobe.fit_glm` never forms a ``T x N`` residual (it works from sufficient
statistics), so these are computed only when asked, for the units asked, from ``Y`` and the
result, ``block`` units at a time (peak memory: a few ``T x block`` arrays).  They follow
nilearn's ``RegressionResults`` exactly (``FirstLevelModel(minimize_memory=False)``):

* ``predicted = Xw beta`` with the whitened design ``Xw`` (``X`` itself for OLS; for AR(1)
  ``x_0, x_t - rho x_{t-1}`` with the unit's binned rho);
* ``residuals = Y - predicted`` (nilearn subtracts the whitened prediction from the raw
  ``Y``; for OLS these are the ordinary residuals);
* ``r_square = var(predicted) / var(Yw)`` over time, ``Yw`` the whitened data.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import as_tensor, check_positive_int, warn_degenerate

__all__ = ["glm_predicted", "glm_residuals", "glm_r_square"]


def _check_result(result) -> None:
    from neuroprobe.glm.fit import GLMResult

    if not isinstance(result, GLMResult):
        raise NeuroprobeError(
            f"result must be a GLMResult (from npb.fit_glm or GLMProbe.fit); got "
            f"{type(result).__name__}."
        )


def _select(result, units) -> np.ndarray:
    N = result.n_units
    if units is None:
        return np.arange(N)
    if isinstance(units, slice):
        return np.arange(N)[units]
    if isinstance(units, (str, bytes, dict, float)) or units is Ellipsis:
        raise NeuroprobeError(
            f"units must be a slice, integer indices or a bool mask [N={N}]; got "
            f"{type(units).__name__} {units!r}."
        )
    idx = units.detach().cpu().numpy() if isinstance(units, torch.Tensor) else \
        np.asarray(units)
    if idx.dtype == bool:
        if idx.shape != (N,):
            raise NeuroprobeError(
                f"units (a mask) has shape {idx.shape}; the result has N={N} units."
            )
        return np.flatnonzero(idx)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise NeuroprobeError(
            f"units must hold integer indices (or be a bool mask [N={N}]); got dtype "
            f"{idx.dtype} (e.g. {idx.ravel()[0]!r}). Floats are not truncated: pass ints."
        )
    if idx.ndim > 1:
        raise NeuroprobeError(f"units must be 1-D; got shape {idx.shape}.")
    idx = idx.astype(np.int64).ravel()
    if idx.size and (idx.min() < -N or idx.max() >= N):
        bad = idx[(idx < -N) | (idx >= N)]
        raise NeuroprobeError(
            f"units has indices outside [-{N}, {N}): {bad[:5].tolist()}; the result has "
            f"N={N} units."
        )
    return np.where(idx < 0, idx + N, idx)


def _design(result) -> Tensor:
    if result.design is None:
        raise NeuroprobeError("this GLMResult has no design attached; refit with fit_glm.")
    return torch.as_tensor(np.array(result.design.to_numpy(), dtype=np.float64))


def _rho(result, idx: np.ndarray) -> Tensor | None:
    if result.rho is None:
        return None
    return result.rho.detach().cpu().to(torch.float64)[torch.as_tensor(idx)]


def _whiten(a: Tensor, rho: Tensor | None) -> Tensor:
    """``a_0, a_t - rho a_{t-1}`` per column (nilearn's AR(1) whitening)."""
    if rho is None:
        return a
    out = a.clone()
    out[1:] -= rho[None, :] * a[:-1]
    return out


def _pred_block(X: Tensor, beta: Tensor, idx: np.ndarray, rho) -> Tensor:
    b = beta.detach().cpu().to(torch.float64)[:, torch.as_tensor(idx)]
    return _whiten(X @ b, rho)


def _y_block(Y, idx: np.ndarray, T: int) -> Tensor:
    y = Y[:, torch.as_tensor(idx)].detach().cpu().to(torch.float64)
    if y.shape[0] != T:
        raise NeuroprobeError(
            f"Y has {y.shape[0]} time points but the GLM was fitted on T={T}; pass the Y "
            "that was fitted."
        )
    if not bool(torch.isfinite(y).all()):
        cols = idx[np.flatnonzero(~torch.isfinite(y).all(0).numpy())]
        raise NeuroprobeError(
            f"Y contains NaN or inf in unit(s) {cols[:5].tolist()}; fit_glm refuses such "
            "data, so this is not the Y that was fitted. Pass the fitted data."
        )
    return y


def _as_y(Y, result) -> Tensor:
    if hasattr(Y, "acts") and hasattr(Y, "units"):
        Y = Y.acts
    _check_result(result)
    Yt = as_tensor(Y, "Y")
    if Yt.ndim != 2 or Yt.shape[1] != result.n_units:
        raise NeuroprobeError(
            f"Y must be [T, N={result.n_units}] (the fitted data); got shape "
            f"{tuple(Yt.shape)}."
        )
    return Yt


def glm_predicted(result, *, units=None) -> Float[Tensor, "T n"]:
    """nilearn's predicted values ``Xw beta`` of the selected units (``[T, n]`` float64).

    Parameters
    ----------
    result : GLMResult
    units : slice, index array or bool mask ``[N]``, optional
        Which units (default all; select a few for wide layers).

    Returns
    -------
    Tensor ``[T, n]``

    Examples
    --------
    >>> import numpy as np, pandas as pd, neuroprobe as npb
    >>> X = pd.DataFrame({"task": np.tile([1.0] * 5 + [0.0] * 5, 3), "constant": 1.0})
    >>> Y = np.random.default_rng(0).standard_normal((30, 4))
    >>> res = npb.fit_glm(Y, X)
    >>> npb.glm_predicted(res, units=[0, 2]).shape
    torch.Size([30, 2])
    """
    _check_result(result)
    idx = _select(result, units)
    return _pred_block(_design(result), result.beta, idx, _rho(result, idx))


def glm_residuals(result, Y, *, units=None, block: int = 4096) -> Float[Tensor, "T n"]:
    """nilearn's residuals ``Y - Xw beta`` of the selected units (``[T, n]`` float64).

    Parameters
    ----------
    result : GLMResult
    Y : Tensor, ndarray or Recording ``[T, N]``
        The data that were fitted.
    units : slice, index array or bool mask ``[N]``, optional
        Which units (default all).
    block : int
        Units per block of the computation.

    Returns
    -------
    Tensor ``[T, n]``

    Examples
    --------
    >>> import numpy as np, pandas as pd, neuroprobe as npb
    >>> X = pd.DataFrame({"task": np.tile([1.0] * 5 + [0.0] * 5, 3), "constant": 1.0})
    >>> Y = np.random.default_rng(0).standard_normal((30, 4))
    >>> res = npb.fit_glm(Y, X)
    >>> r = npb.glm_residuals(res, Y)
    >>> bool(abs(float(r.sum())) < 1e-10)  # OLS with a constant: residuals sum to 0
    True
    """
    Yt = _as_y(Y, result)
    block = check_positive_int(block, "block")
    idx = _select(result, units)
    X = _design(result)
    out = torch.empty(result.n_time, idx.size, dtype=torch.float64)
    for j in range(0, idx.size, block):
        sel = idx[j : j + block]
        out[:, j : j + sel.size] = _y_block(Yt, sel, result.n_time) - _pred_block(
            X, result.beta, sel, _rho(result, sel))
    return out


def glm_r_square(result, Y, *, units=None, block: int = 4096) -> Float[Tensor, " n"]:
    """nilearn's ``r_square``: ``var(Xw beta) / var(Yw)`` per unit (pseudo-R^2 for AR(1)).

    Computed ``block`` units at a time; never holds more than a few ``T x block`` arrays.

    Parameters
    ----------
    result : GLMResult
    Y : Tensor, ndarray or Recording ``[T, N]``
        The data that were fitted.
    units : slice, index array or bool mask ``[N]``, optional
        Which units (default all).
    block : int
        Units per block.

    Returns
    -------
    Tensor ``[n]``

    Examples
    --------
    >>> import numpy as np, pandas as pd, neuroprobe as npb
    >>> X = pd.DataFrame({"task": np.tile([1.0] * 5 + [0.0] * 5, 3), "constant": 1.0})
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.standard_normal((30, 2)) + np.outer(X["task"], [3.0, 0.0])
    >>> r2 = npb.glm_r_square(npb.fit_glm(Y, X), Y)
    >>> bool(r2[0] > 0.5 > r2[1])
    True
    """
    Yt = _as_y(Y, result)
    block = check_positive_int(block, "block")
    idx = _select(result, units)
    X = _design(result)
    out = torch.empty(idx.size, dtype=torch.float64)
    for j in range(0, idx.size, block):
        sel = idx[j : j + block]
        rho = _rho(result, sel)
        pred = _pred_block(X, result.beta, sel, rho)
        yw = _whiten(_y_block(Yt, sel, result.n_time), rho)
        out[j : j + sel.size] = pred.var(0, correction=0) / yw.var(0, correction=0)
    const = result.constant.detach().cpu().numpy()[idx]
    if const.any():
        out[torch.as_tensor(const)] = float("nan")
        warn_degenerate(
            f"{int(const.sum())} of {idx.size} units are constant over time: their R^2 "
            "(explained / total variance, 0 / 0) is undefined and is returned as NaN."
        )
    return out
