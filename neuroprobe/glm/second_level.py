"""Across runs, prompt sets, models or seeds: fixed effects and the second-level GLM.

* :func:`fixed_effects` combines t contrasts of the same units from several first-level fits
  (runs, prompt sets) as nilearn's ``compute_fixed_effects``: the mean effect with variance
  ``mean(var) / n`` (or the precision-weighted mean), ``df = sum of the runs' df``.
* :func:`second_level` is nilearn's ``SecondLevelModel``: an OLS GLM over maps (one row per
  run / model / seed, one column per unit), by default the intercept only (the one-sample
  t test of ``"intercept"``); :func:`paired_second_level` builds nilearn's paired design
  (``condition`` = +1 / -1 plus one column per pair) whose ``"condition"`` t equals the
  one-sample t of the differences.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import as_tensor, check_bool, warn_degenerate
from neuroprobe.glm.contrast import ContrastResult
from neuroprobe.glm.fit import fit_glm

__all__ = ["fixed_effects", "second_level", "paired_second_level"]

_TINY = 1.0e-16  # nilearn's floor of the variances in compute_fixed_effects


def fixed_effects(contrasts: Sequence, *, precision_weighted: bool = False):
    """Fixed-effects combination of t contrasts of the same units (nilearn numbers).

    Parameters
    ----------
    contrasts : sequence of ContrastResult (t)
        One per run / prompt set, over the same units.
    precision_weighted : bool
        Weight each run by ``1 / variance`` (nilearn's ``precision_weighted=True``);
        default: the plain mean with variance ``mean(variance) / n_runs``.

    Returns
    -------
    ContrastResult
        ``effect``, ``variance``, ``t = effect / sqrt(variance)`` with ``df`` the sum of the
        runs' ``df``; ``p``, ``z`` (nilearn's conversion), corrections as for any contrast
        (not ``max_t``). Units constant in every run get ``t = 0``.

    Examples
    --------
    >>> import numpy as np, torch, neuroprobe as npb
    >>> d = npb.BlockDesign.from_blocks([("a", 5), ("b", 5)] * 4, baseline="b")
    >>> g = torch.Generator().manual_seed(0)
    >>> runs = [npb.fit_glm(torch.randn(40, 3, generator=g, dtype=torch.float64), d)
    ...         for _ in range(3)]
    >>> ffx = npb.fixed_effects([r.contrast("a") for r in runs])
    >>> ffx.df, tuple(ffx.t.shape)
    (114, (3,))
    """
    precision_weighted = check_bool(precision_weighted, "precision_weighted")
    if isinstance(contrasts, ContrastResult):
        raise NeuroprobeError(
            "contrasts must be a list of t ContrastResults (one per run); got a single "
            "ContrastResult. Pass [con_run1, con_run2, ...]."
        )
    if isinstance(contrasts, (str, bytes, dict)) or not hasattr(contrasts, "__iter__"):
        raise NeuroprobeError(
            f"contrasts must be a list of t ContrastResults (one per run); got "
            f"{type(contrasts).__name__} {contrasts!r}."
        )
    cons = list(contrasts)
    if not cons:
        raise NeuroprobeError("contrasts is empty; give one t ContrastResult per run.")
    for i, c in enumerate(cons):
        if not isinstance(c, ContrastResult) or c.stat_type != "t":
            raise NeuroprobeError(
                f"contrasts[{i}] must be a t ContrastResult (res.contrast('a - b')); got "
                f"{type(c).__name__}{' (F)' if getattr(c, 'stat_type', '') == 'F' else ''}."
            )
        if c.stat.shape != cons[0].stat.shape:
            raise NeuroprobeError(
                f"contrasts[{i}] has {c.stat.shape[0]} units but contrasts[0] has "
                f"{cons[0].stat.shape[0]}; fixed effects combine the same units."
            )
    c0 = cons[0]
    for i, c in enumerate(cons[1:], 1):
        if c.units is not None and c0.units is not None and len(c.units) == len(c0.units) \
                and list(c.units) != list(c0.units):
            raise NeuroprobeError(
                f"contrasts[{i}] is over other units than contrasts[0] (their unit indices "
                "differ); fixed effects combine the same units of each run."
            )
        if tuple(c.columns) == tuple(c0.columns) and not np.allclose(
                np.asarray(c.contrast, dtype=float), np.asarray(c0.contrast, dtype=float)):
            warn_degenerate(
                f"contrasts[{i}] weighs the columns {list(c.columns)} as "
                f"{np.asarray(c.contrast).tolist()} but contrasts[0] as "
                f"{np.asarray(c0.contrast).tolist()}: fixed effects average one effect over "
                "runs, and these are different contrasts."
            )
    dev = cons[0].stat.device
    eff = torch.stack([c.effect.to(dev, torch.float64) for c in cons])
    var = torch.stack([c.variance.to(dev, torch.float64) for c in cons]).clamp_min(_TINY)
    if precision_weighted:
        w = 1.0 / var
        v = 1.0 / w.sum(0)
        e = (eff * w).sum(0) * v
    else:
        v = var.mean(0) / len(cons)
        e = eff.mean(0)
    const = torch.stack([c.constant.to(dev) for c in cons]).all(0)
    t = torch.where(const, torch.zeros_like(e), e / torch.sqrt(v))
    return ContrastResult(
        effect=e, variance=v, stat=t, stat_type="t", df=int(sum(c.df for c in cons)), dim=1,
        contrast=c0.contrast, columns=c0.columns, constant=const, units=c0.units, _glm=None,
    )


def _maps(maps, name: str) -> Tensor:
    if isinstance(maps, (list, tuple)):
        if not maps:
            raise NeuroprobeError(f"{name} is empty; give one map (or contrast) per row.")
        rows = [m.effect if isinstance(m, ContrastResult) else as_tensor(m, name)
                for m in maps]
        if any(r.ndim != 1 for r in rows):
            raise NeuroprobeError(
                f"every entry of {name} must be one map [N] (a t contrast's effect); got "
                f"shapes {[tuple(r.shape) for r in rows]}."
            )
        if len({r.shape[0] for r in rows}) != 1:
            raise NeuroprobeError(
                f"the maps of {name} have different numbers of units: "
                f"{sorted({int(r.shape[0]) for r in rows})}."
            )
        Y = torch.stack([r.detach().cpu().to(torch.float64) for r in rows])
    else:
        Y = as_tensor(maps, name).detach().cpu().to(torch.float64)
        if Y.ndim != 2:
            raise NeuroprobeError(
                f"{name} must be [n_maps, N] or a list of maps; got shape {tuple(Y.shape)}."
            )
    return Y


def second_level(maps, design=None, *, units=None):
    """nilearn's ``SecondLevelModel``: an OLS GLM across maps (runs, models, seeds).

    Parameters
    ----------
    maps : Tensor ``[n_maps, N]``, or a list of ``[N]`` maps or t ContrastResults
        One row per first-level map (a contrast's ``effect``).
    design : DataFrame ``[n_maps, P]``, optional
        Second-level design; default one column ``"intercept"`` (one-sample t test).
    units : UnitIndex, optional
        Unit index to attach (taken from the first ContrastResult when given those).

    Returns
    -------
    GLMResult
        ``result.contrast("intercept")`` is the one-sample t test of the mean effect.

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> g = torch.Generator().manual_seed(0)
    >>> maps = torch.randn(8, 4, generator=g, dtype=torch.float64) + torch.tensor([2., 0, 0, 0])
    >>> res = npb.second_level(maps)
    >>> res.columns, res.df_resid
    (('intercept',), 7)
    >>> bool(res.contrast("intercept").t[0] > 3)
    True
    """
    if units is None and isinstance(maps, (list, tuple)) and maps and \
            isinstance(maps[0], ContrastResult):
        units = maps[0].units
    Y = _maps(maps, "maps")
    if design is None:
        design = pd.DataFrame({"intercept": np.ones(Y.shape[0])})
    P = np.shape(getattr(design, "matrix", design))[-1] if np.ndim(
        getattr(design, "matrix", design)) == 2 else 1
    if Y.shape[0] <= P:
        raise NeuroprobeError(
            f"the second level needs more maps than design columns to estimate a variance: "
            f"got {Y.shape[0]} map(s) for {P} column(s). Add maps (runs, seeds, models)."
        )
    return fit_glm(Y, design, units=units)


def paired_second_level(maps_a, maps_b, *, units=None):
    """Paired second-level t test (nilearn's paired design) of ``maps_a`` vs ``maps_b``.

    The design has ``condition`` (+1 for the rows of ``maps_a``, -1 for those of
    ``maps_b``) and one column per pair ``pair_<i>``; ``result.contrast("condition")`` is
    the paired t test (equal to the one-sample t of ``maps_a - maps_b``; its effect is half
    the mean difference, as nilearn's).

    Parameters
    ----------
    maps_a, maps_b : Tensor ``[n, N]`` or lists of ``n`` maps / t ContrastResults
        Row ``i`` of both is pair ``i`` (the same seed, model or prompt set).
    units : UnitIndex, optional

    Returns
    -------
    GLMResult

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> g = torch.Generator().manual_seed(1)
    >>> a = torch.randn(6, 3, generator=g, dtype=torch.float64)
    >>> res = npb.paired_second_level(a + 1.0, a + 0.1 * torch.randn(6, 3, generator=g))
    >>> res.df_resid, bool((res.contrast("condition").t > 5).all())
    (5, True)
    """
    A, B = _maps(maps_a, "maps_a"), _maps(maps_b, "maps_b")
    if A.shape != B.shape:
        raise NeuroprobeError(
            f"maps_a and maps_b must have the same shape (pairs x units); got "
            f"{tuple(A.shape)} and {tuple(B.shape)}."
        )
    n = A.shape[0]
    if n < 2:
        raise NeuroprobeError(
            f"the paired second level needs at least 2 pairs (its design has 1 + n columns "
            f"for 2 n maps); got {n} pair(s). Add pairs."
        )
    design = pd.DataFrame({"condition": np.r_[np.ones(n), -np.ones(n)]})
    for i in range(n):
        design[f"pair_{i}"] = np.r_[np.eye(n)[i], np.eye(n)[i]]
    return second_level(torch.cat([A, B]), design, units=units)
