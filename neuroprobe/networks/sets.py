"""Functional networks: sets of units active with a task, and what to do with them.

A :class:`FunctionalNetwork` is a boolean mask over a unit index (usually the significant
units of a GLM contrast, ``con.significant(alpha, correction="bonferroni")``), with the
task, the run and the threshold that made it.  On top of it:

* set algebra (``a & b``, ``a | b``, ``a - b``, ``a ^ b``), :func:`dice`, :func:`jaccard`;
* :func:`overlap_matrix` over many (task, run) networks, with the mean overlap within a
  task (different runs) and across tasks -- the repeatability test of arXiv:2311.10898;
* :func:`consensus` / :func:`templates` -- units active in at least ``k`` of ``n`` runs;
* :func:`shared_core` -- units in every network (e.g. the generic-English core shared by
  all task-vs-random-words networks);
* :func:`predict_task` -- for each held-out network, the fraction of each template's units
  that are active; the template with the largest fraction is the predicted task;
* :func:`leave_one_run_out` -- that prediction for every run in turn, with templates of
  the other runs (optionally with shuffled task labels: the null model);
  :func:`confusion_matrix` counts true vs predicted tasks over any number of predictions.

Examples
--------
>>> import torch
>>> a = FunctionalNetwork(torch.tensor([1, 1, 0, 0], dtype=torch.bool), task="t1", run=0)
>>> b = FunctionalNetwork(torch.tensor([1, 0, 1, 0], dtype=torch.bool), task="t1", run=1)
>>> (a & b).size, dice(a, b), jaccard(a, b)
(1, 0.5, 0.3333333333333333)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Union

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.units import UnitIndex
from neuroprobe.core.validation import check_choice, check_int, check_name_list, warn_degenerate

__all__ = [
    "FunctionalNetwork",
    "OverlapMatrix",
    "TaskPrediction",
    "dice",
    "jaccard",
    "overlap_matrix",
    "consensus",
    "templates",
    "shared_core",
    "predict_task",
    "confusion_matrix",
    "LeaveOneRunOut",
    "leave_one_run_out",
]

MaskLike = Union["FunctionalNetwork", Tensor, np.ndarray]


def _as_mask(x: MaskLike, name: str = "network") -> Tensor:
    if isinstance(x, FunctionalNetwork):
        return x.mask
    if isinstance(x, (str, bytes, Mapping)) or x is None or np.isscalar(x) or not (
        isinstance(x, (Tensor, np.ndarray)) or hasattr(x, "__len__")
    ):
        raise NeuroprobeError(
            f"{name} must be a FunctionalNetwork or a 1-D boolean mask [n_units] (tensor, "
            f"array or list of 0/1); got {type(x).__name__} {x!r:.60}."
        )
    try:
        t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None:
        raise NeuroprobeError(
            f"{name} must be a 1-D boolean mask [n_units] or a FunctionalNetwork; got "
            f"{type(x).__name__} that is not numeric ({np.asarray(x, dtype=object)!r:.60})."
        )
    if t.ndim != 1:
        raise NeuroprobeError(
            f"{name} must be a 1-D boolean mask [n_units] or a FunctionalNetwork; got shape "
            f"{tuple(t.shape)}"
        )
    if t.dtype != torch.bool:
        if t.is_complex() or not bool(((t == 0) | (t == 1)).all()):
            raise NeuroprobeError(
                f"{name} must be boolean (or 0/1); got dtype {t.dtype} with other values. "
                "Threshold it first, e.g. con.significant(alpha=0.05)."
            )
        t = t.bool()
    return t.detach().cpu()


def _check_same_units(nets, name: str = "networks") -> None:
    """Networks compared or combined must be over the same unit index, not only the same width
    (``blocks.0.hook_resid_post`` and ``blocks.0.hook_mlp_out`` both have ``d_model`` units)."""
    first = None
    for n in nets:
        if not isinstance(n, FunctionalNetwork) or n.units is None:
            continue
        if first is None:
            first = n
        elif n.units != first.units:
            raise NeuroprobeError(
                f"{name}: networks {first.name!r} ({first.units!r}) and {n.name!r} "
                f"({n.units!r}) are over different unit indexes of the same width; overlaps "
                "of different units mean nothing. Compare networks recorded with the same "
                "hooks (the same UnitIndex)."
            )


def _net_list(networks, name: str, *, allow_mapping: bool = False) -> list:
    """A sequence of networks as a list (never a single network, a string or a number)."""
    if allow_mapping and isinstance(networks, Mapping):
        return list(networks.values())
    if isinstance(networks, (FunctionalNetwork, str, bytes, Mapping)) or networks is None or \
            not hasattr(networks, "__iter__") or (
                isinstance(networks, (Tensor, np.ndarray)) and np.ndim(networks) != 2):
        kind = "a single network" if isinstance(networks, (FunctionalNetwork, Tensor,
                                                           np.ndarray)) else \
            f"{type(networks).__name__} {networks!r:.40}"
        raise NeuroprobeError(
            f"{name} must be a sequence (list) of FunctionalNetworks; got {kind}. Wrap a "
            "single network in a list: [network]."
        )
    return list(networks)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FunctionalNetwork:
    """A set of units: a boolean mask over a unit index.

    Parameters
    ----------
    mask : BoolTensor ``[n_units]``
        ``True`` for units in the network.
    units : UnitIndex, optional
        The unit index the mask refers to (enables :meth:`by_layer` and
        :meth:`to_dataframe` with hook names).
    name : str
        Label (default: ``task`` and ``run``).
    task : str, optional
        Task that defined the network.
    run : int, optional
        Run that defined the network (``None`` for templates).
    threshold : str
        How units were selected (e.g. ``"bonferroni p<0.05"``).

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.core.units import UnitIndex
    >>> ui = UnitIndex.from_hooks({"blocks.0.hook_mlp_out": 3, "blocks.1.hook_mlp_out": 3})
    >>> net = FunctionalNetwork(torch.tensor([1, 0, 0, 1, 1, 0]).bool(), units=ui, task="a")
    >>> net.size, round(net.fraction, 3), net.by_layer()["n_units"].tolist()
    (3, 0.5, [1, 2])
    """

    mask: Bool[Tensor, " unit"]
    units: UnitIndex | None = None
    name: str = ""
    task: str | None = None
    run: int | None = None
    threshold: str = ""

    def __post_init__(self) -> None:
        m = torch.from_numpy(_as_mask(self.mask, "mask").numpy().copy())  # own copy
        object.__setattr__(self, "mask", m)
        if m.shape[0] == 0:
            raise NeuroprobeError(
                "mask has 0 entries: a network is a mask over the units of a recording, so it "
                "needs at least one unit (an empty selection is a mask of all False)."
            )
        if self.units is not None and not isinstance(self.units, UnitIndex):
            raise NeuroprobeError(
                f"units must be a UnitIndex (e.g. recording.units) or None; got "
                f"{type(self.units).__name__}."
            )
        for fname in ("name", "threshold"):
            if not isinstance(getattr(self, fname), str):
                raise NeuroprobeError(
                    f"{fname} must be a str; got {type(getattr(self, fname)).__name__} "
                    f"{getattr(self, fname)!r}."
                )
        if self.task is not None and not isinstance(self.task, str):
            raise NeuroprobeError(
                f"task must be a str or None; got {type(self.task).__name__} {self.task!r}."
            )
        if self.run is not None:
            object.__setattr__(self, "run", check_int(self.run, "run", minimum=0))
        if self.units is not None and len(self.units) != m.shape[0]:
            raise NeuroprobeError(
                f"mask has {m.shape[0]} entries but units has {len(self.units)}; the mask "
                "must have one entry per unit of the index"
            )
        if not self.name:
            label = self.task or "network"
            if self.run is not None:
                label = f"{label}/run{self.run}"
            object.__setattr__(self, "name", label)

    # ---- sizes --------------------------------------------------------------------------
    @property
    def n_units(self) -> int:
        """Number of units in the index (the mask's length)."""
        return int(self.mask.shape[0])

    @cached_property
    def size(self) -> int:
        """Number of units in the network."""
        return int(self.mask.sum())

    @property
    def fraction(self) -> float:
        """Fraction of all units that are in the network."""
        return self.size / self.n_units if self.n_units else float("nan")

    @property
    def columns(self) -> np.ndarray:
        """Column numbers of the network's units."""
        return np.flatnonzero(self.mask.numpy())

    def __len__(self) -> int:
        return self.size

    # ---- set algebra --------------------------------------------------------------------
    def _combine(self, other: MaskLike, op: str) -> FunctionalNetwork:
        om = _as_mask(other, "other")
        if om.shape != self.mask.shape:
            raise NeuroprobeError(
                f"cannot combine networks over different unit sets: {self.n_units} vs "
                f"{om.shape[0]} units. Both must come from the same unit index."
            )
        if (
            isinstance(other, FunctionalNetwork)
            and self.units is not None
            and other.units is not None
            and self.units != other.units
        ):
            raise NeuroprobeError(
                f"networks {self.name!r} and {other.name!r} have different unit indexes of "
                "the same length; record both with the same hooks."
            )
        m = {"&": self.mask & om, "|": self.mask | om, "-": self.mask & ~om,
             "^": self.mask ^ om}[op]
        oname = other.name if isinstance(other, FunctionalNetwork) else "mask"
        task = self.task if isinstance(other, FunctionalNetwork) and other.task == self.task \
            else None
        return FunctionalNetwork(m, self.units, f"({self.name} {op} {oname})", task, None,
                                 self.threshold)

    def __and__(self, other: MaskLike) -> FunctionalNetwork:
        return self._combine(other, "&")

    def __or__(self, other: MaskLike) -> FunctionalNetwork:
        return self._combine(other, "|")

    def __sub__(self, other: MaskLike) -> FunctionalNetwork:
        return self._combine(other, "-")

    def __xor__(self, other: MaskLike) -> FunctionalNetwork:
        return self._combine(other, "^")

    def dice(self, other: MaskLike) -> float:
        """Dice coefficient with ``other``: ``2|A∩B| / (|A|+|B|)``."""
        return dice(self, other)

    def jaccard(self, other: MaskLike) -> float:
        """Jaccard index with ``other``: ``|A∩B| / |A∪B|``."""
        return jaccard(self, other)

    # ---- tables -------------------------------------------------------------------------
    def _unit_frame(self) -> pd.DataFrame:
        if self.units is not None:
            return self.units.to_dataframe()
        n = self.n_units
        return pd.DataFrame({"unit": np.arange(n), "hook": [""] * n,
                             "layer": np.full(n, -1), "index": np.arange(n)})

    def to_dataframe(self) -> pd.DataFrame:
        """One row per unit in the network: ``column``, ``hook``, ``layer``, ``index``."""
        df = self._unit_frame()
        cols = self.columns
        out = df.iloc[cols][["hook", "layer", "index"]].reset_index(drop=True)
        out.insert(0, "column", cols)
        return out

    def by_layer(self) -> pd.DataFrame:
        """Network size per (hook kind, layer): ``layer``, ``hook``, ``n_units``, ``n_total``,
        ``fraction``.  ``hook`` is the hook name with its layer number replaced by ``*``."""
        df = self._unit_frame()
        hook = df["hook"].astype(str).str.replace(r"blocks\.\d+\.", "blocks.*.", regex=True)
        frame = pd.DataFrame({"layer": df["layer"].to_numpy(), "hook": hook,
                              "in_net": self.mask.numpy()})
        g = frame.groupby(["layer", "hook"], sort=True)["in_net"]
        out = pd.DataFrame({"n_units": g.sum().astype(int), "n_total": g.size()}).reset_index()
        out["fraction"] = out["n_units"] / out["n_total"]
        return out

    def __repr__(self) -> str:
        return (f"FunctionalNetwork({self.name!r}: {self.size}/{self.n_units} units"
                f"{', ' + self.threshold if self.threshold else ''})")


# ---------------------------------------------------------------------------------------------
def _sizes(a: MaskLike, b: MaskLike) -> tuple[int, int, int]:
    ma, mb = _as_mask(a, "a"), _as_mask(b, "b")
    _check_same_units([a, b], "a and b")
    if ma.shape != mb.shape:
        raise NeuroprobeError(
            f"networks have different lengths ({ma.shape[0]} vs {mb.shape[0]} units); "
            "compare networks over the same unit index"
        )
    return int(ma.sum()), int(mb.sum()), int((ma & mb).sum())


def dice(a: MaskLike, b: MaskLike) -> float:
    """Dice coefficient ``2|A∩B| / (|A|+|B|)``; ``nan`` when both sets are empty.

    Examples
    --------
    >>> import numpy as np
    >>> dice(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
    0.5
    """
    na, nb, nab = _sizes(a, b)
    if not na + nb:
        _warn_both_empty("dice")
    return 2 * nab / (na + nb) if na + nb else float("nan")


def jaccard(a: MaskLike, b: MaskLike) -> float:
    """Jaccard index ``|A∩B| / |A∪B|``; ``nan`` when both sets are empty.

    Examples
    --------
    >>> import numpy as np
    >>> jaccard(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
    0.3333333333333333
    """
    na, nb, nab = _sizes(a, b)
    union = na + nb - nab
    if not union:
        _warn_both_empty("jaccard")
    return nab / union if union else float("nan")


def _warn_both_empty(metric: str) -> None:
    warn_degenerate(
        f"{metric}: both networks are empty (no unit passed the threshold), so their overlap "
        "is undefined and NaN is returned; loosen the threshold or drop empty networks.",
        stacklevel=4,
    )


def _stack(networks: Sequence[MaskLike], name: str = "networks") -> np.ndarray:
    """Masks as a numpy bool matrix ``[k, N]`` (numpy: no thread start-up per small op)."""
    nets = _net_list(networks, name)
    masks = [_as_mask(n, f"{name}[{i}]").numpy() for i, n in enumerate(nets)]
    if not masks:
        raise NeuroprobeError(f"{name} is empty; pass at least one network")
    if len({m.shape[0] for m in masks}) != 1:
        raise NeuroprobeError(
            f"{name} have different lengths {sorted({m.shape[0] for m in masks})}; all must "
            "be over the same unit index"
        )
    _check_same_units(nets, name)
    return np.stack(masks)


def _gram(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``|A_i ∩ B_j|`` for bool matrices (exact: float32 counts below 2**24)."""
    return (A.astype(np.float32) @ B.astype(np.float32).T).astype(np.float64)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OverlapMatrix:
    """Pairwise overlap (Dice or Jaccard) of networks.

    Attributes
    ----------
    values : ndarray ``[k, k]``
        ``values[i, j]`` = overlap of networks ``i`` and ``j`` (diagonal 1 for non-empty).
    labels : tuple of str
        Network names.
    tasks, runs : tuple
        Task and run of each network.
    metric : str
        ``"dice"`` or ``"jaccard"``.
    sizes : ndarray ``[k]``
        Network sizes.
    """

    values: Float[np.ndarray, "k k"]
    labels: tuple[str, ...]
    tasks: tuple
    runs: tuple
    metric: str
    sizes: np.ndarray = field(repr=False)

    def _pairs(self, same_task: bool) -> np.ndarray:
        k = len(self.labels)
        iu = np.triu_indices(k, 1)
        t = np.asarray([str(x) for x in self.tasks], dtype=object)
        sel = (t[iu[0]] == t[iu[1]]) == same_task
        return self.values[iu][sel]

    @property
    def within_task(self) -> np.ndarray:
        """Overlaps of all pairs of different networks of the same task."""
        return self._pairs(True)

    @property
    def across_task(self) -> np.ndarray:
        """Overlaps of all pairs of networks of different tasks."""
        return self._pairs(False)

    @property
    def within_task_mean(self) -> float:
        """Mean overlap over pairs of the same task (ignoring nan pairs of empty networks)."""
        v = self.within_task
        return float(np.nanmean(v)) if v.size and not np.all(np.isnan(v)) else float("nan")

    @property
    def across_task_mean(self) -> float:
        """Mean overlap over pairs of different tasks (ignoring nan pairs)."""
        v = self.across_task
        return float(np.nanmean(v)) if v.size and not np.all(np.isnan(v)) else float("nan")

    def task_means(self) -> pd.DataFrame:
        """Mean overlap per (task, task) pair of tasks (diagonal: different runs only)."""
        tasks = list(dict.fromkeys(str(t) for t in self.tasks))
        t = np.asarray([str(x) for x in self.tasks])
        out = np.full((len(tasks), len(tasks)), np.nan)
        for i, a in enumerate(tasks):
            for j, b in enumerate(tasks):
                block = self.values[np.ix_(t == a, t == b)]
                if a == b:
                    block = block[~np.eye(block.shape[0], dtype=bool)]
                block = block[~np.isnan(block)]
                if block.size:
                    out[i, j] = block.mean()
        return pd.DataFrame(out, index=tasks, columns=tasks)

    def to_dataframe(self) -> pd.DataFrame:
        """The matrix with network names as index and columns."""
        return pd.DataFrame(self.values, index=list(self.labels), columns=list(self.labels))

    def __repr__(self) -> str:
        k = len(self.labels)
        return (f"OverlapMatrix({self.metric}, [{k} x {k}], within_task_mean="
                f"{self.within_task_mean:.3f}, across_task_mean={self.across_task_mean:.3f})")


def overlap_matrix(networks: Sequence[FunctionalNetwork], metric: str = "dice") -> OverlapMatrix:
    """Pairwise Dice (or Jaccard) of networks, computed at once from a mask product.

    Parameters
    ----------
    networks : sequence of FunctionalNetwork
        E.g. every (task, run) network; tasks and runs are read from the networks.
    metric : {"dice", "jaccard"}

    Examples
    --------
    >>> import torch
    >>> m = lambda *v: torch.tensor(v).bool()
    >>> nets = [FunctionalNetwork(m(1, 1, 0, 0), task="a", run=0),
    ...         FunctionalNetwork(m(1, 1, 1, 0), task="a", run=1),
    ...         FunctionalNetwork(m(0, 0, 1, 1), task="b", run=0)]
    >>> om = overlap_matrix(nets)
    >>> round(om.within_task_mean, 3), round(om.across_task_mean, 3)
    (0.8, 0.2)
    """
    metric = check_choice(metric, "metric", ("dice", "jaccard"))
    nets = _net_list(networks, "networks")
    if len(nets) < 2:
        raise NeuroprobeError(
            f"networks has {len(nets)} network(s); an overlap matrix compares networks pairwise, "
            "so pass at least 2 (e.g. every (task, run) network of an experiment)."
        )
    M = _stack(nets)
    inter = _gram(M, M)
    sizes = M.sum(1).astype(np.float64)
    if (sizes == 0).any():
        empty = [getattr(nets[i], "name", f"networks[{i}]") for i in np.flatnonzero(sizes == 0)]
        warn_degenerate(
            f"overlap_matrix: {len(empty)} of {len(nets)} networks are empty (no unit passed "
            f"the threshold): {empty[:5]}; their overlaps with each other (and their diagonal) "
            "are NaN and with other networks 0. Loosen the threshold or drop them.",
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "dice":
            vals = 2 * inter / (sizes[:, None] + sizes[None, :])
        else:
            vals = inter / (sizes[:, None] + sizes[None, :] - inter)
    labels = tuple(getattr(n, "name", f"network{i}") for i, n in enumerate(nets))
    return OverlapMatrix(
        values=vals,
        labels=labels,
        tasks=tuple(getattr(n, "task", None) for n in nets),
        runs=tuple(getattr(n, "run", None) for n in nets),
        metric=metric,
        sizes=sizes.astype(int),
    )


# ---------------------------------------------------------------------------------------------
def consensus(
    networks: Sequence[FunctionalNetwork], min_runs: int | None = None, name: str = ""
) -> FunctionalNetwork:
    """Template network: units active in at least ``min_runs`` of the given networks.

    ``min_runs`` defaults to a majority (``n // 2 + 1``); ``min_runs=n`` is the
    intersection, ``min_runs=1`` the union.

    Examples
    --------
    >>> import torch
    >>> nets = [FunctionalNetwork(torch.tensor(v).bool(), task="a", run=i)
    ...         for i, v in enumerate([(1, 1, 0), (1, 0, 0), (1, 1, 1)])]
    >>> consensus(nets).mask.tolist(), consensus(nets, min_runs=3).mask.tolist()
    ([True, True, False], [True, False, False])
    """
    nets = _net_list(networks, "networks")
    M = _stack(nets)
    n = len(nets)
    if not isinstance(name, str):
        raise NeuroprobeError(f"name must be a str; got {type(name).__name__} {name!r}.")
    k = n // 2 + 1 if min_runs is None else check_int(min_runs, "min_runs")
    if not 1 <= k <= n:
        raise NeuroprobeError(
            f"min_runs must be between 1 and the number of networks ({n}); got {min_runs}"
        )
    counts = M.sum(0, dtype=np.int64)
    tasks = {getattr(x, "task", None) for x in nets}
    task = tasks.pop() if len(tasks) == 1 else None
    first = nets[0] if isinstance(nets[0], FunctionalNetwork) else None
    return FunctionalNetwork(
        torch.from_numpy(counts >= k),
        units=first.units if first is not None else None,
        name=name or f"{task or 'consensus'} template (>= {k}/{n} runs)",
        task=task,
        run=None,
        threshold=(first.threshold + "; " if first is not None and first.threshold else "")
        + f"active in >= {k} of {n} runs",
    )


def templates(
    networks: Sequence[FunctionalNetwork], min_runs: int | None = None
) -> dict[str, FunctionalNetwork]:
    """One consensus template per task (networks grouped by their ``task``).

    ``min_runs`` as in :func:`consensus` (default: a majority of that task's runs).

    Examples
    --------
    >>> import torch
    >>> nets = [FunctionalNetwork(torch.tensor(v).bool(), task=t, run=0)
    ...         for t, v in [("a", (1, 0)), ("b", (0, 1))]]
    >>> {k: v.mask.tolist() for k, v in templates(nets).items()}
    {'a': [True, False], 'b': [False, True]}
    """
    nets = _net_list(networks, "networks")
    if not nets:
        raise NeuroprobeError(
            "networks is empty; templates need at least one network per task, e.g. "
            "templates(result.networks)."
        )
    if min_runs is not None:
        min_runs = check_int(min_runs, "min_runs", minimum=1)
    bad = [i for i, n in enumerate(nets) if not isinstance(n, FunctionalNetwork)]
    if bad:
        raise NeuroprobeError(
            f"networks[{bad[0]}] is a {type(nets[bad[0]]).__name__}, not a FunctionalNetwork; "
            "templates group networks by their task, so pass FunctionalNetwork(mask, task=...)."
        )
    _stack(nets)  # one unit index for all
    groups: dict[str, list[FunctionalNetwork]] = {}
    for n in nets:
        if n.task is None:
            raise NeuroprobeError(
                f"network {n.name!r} has no task; templates group networks by task, so "
                "build them with FunctionalNetwork(..., task=...)"
            )
        groups.setdefault(n.task, []).append(n)
    short = {t: len(g) for t, g in groups.items() if min_runs is not None and len(g) < min_runs}
    if short:
        warn_degenerate(
            f"templates: min_runs={min_runs} is more than the runs of task(s) {short}; their "
            "templates use every run they have (the intersection).",
        )
    return {t: consensus(g, min_runs if min_runs is None else min(min_runs, len(g)))
            for t, g in groups.items()}


def shared_core(networks: Sequence[FunctionalNetwork] | Mapping[str, FunctionalNetwork],
                name: str = "shared core") -> FunctionalNetwork:
    """Units in every given network (the intersection).

    Examples
    --------
    >>> import torch
    >>> nets = {"a": FunctionalNetwork(torch.tensor([1, 1, 0]).bool(), task="a"),
    ...         "b": FunctionalNetwork(torch.tensor([1, 0, 1]).bool(), task="b")}
    >>> shared_core(nets).mask.tolist()
    [True, False, False]
    """
    nets = _net_list(networks, "networks", allow_mapping=True)
    if not nets:
        raise NeuroprobeError("networks is empty; pass at least one network")
    c = consensus(nets, min_runs=len(nets), name=name)
    return FunctionalNetwork(c.mask, c.units, name, None, None, c.threshold)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskPrediction:
    """Task prediction of held-out networks from templates.

    Attributes
    ----------
    scores : ndarray ``[n_test, n_tasks]``
        Fraction of each template's units active in each test network (``nan`` for an
        empty template).
    tasks : tuple of str
        Template tasks (columns of ``scores``).
    true : tuple
        True task of each test network.
    predicted : tuple
        Predicted task (argmax of the row), or ``None`` when no template unit is active in
        that network or every template is empty.
    labels : tuple of str
        Names of the test networks.
    notes : tuple of str
        Problems met (empty templates, empty test networks).
    """

    scores: Float[np.ndarray, "n_test n_tasks"]
    tasks: tuple[str, ...]
    true: tuple
    predicted: tuple
    labels: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def n_test(self) -> int:
        return len(self.true)

    @property
    def correct(self) -> np.ndarray:
        """``[n_test]`` bool: prediction equals the true task (``None`` counts as wrong)."""
        pairs = zip(self.predicted, self.true, strict=False)
        return np.asarray([p is not None and p == t for p, t in pairs], dtype=bool)

    @property
    def accuracy(self) -> float:
        """Fraction of test networks predicted correctly (``nan`` with no test network)."""
        return float(self.correct.mean()) if self.n_test else float("nan")

    @property
    def chance(self) -> float:
        """``1 / n_tasks``."""
        return 1.0 / len(self.tasks) if self.tasks else float("nan")

    @property
    def n_unpredicted(self) -> int:
        """Test networks for which no prediction could be made."""
        return sum(p is None for p in self.predicted)

    def confusion(self) -> pd.DataFrame:
        """Counts: rows = true task, columns = predicted task (plus ``"none"`` if any);
        :func:`confusion_matrix` of this one prediction."""
        return confusion_matrix([self])

    def to_dataframe(self) -> pd.DataFrame:
        """One row per test network: ``network``, ``true``, ``predicted``, ``correct`` and
        one ``score_<task>`` column per template."""
        df = pd.DataFrame({"network": list(self.labels), "true": list(self.true),
                           "predicted": list(self.predicted), "correct": self.correct})
        for j, t in enumerate(self.tasks):
            df[f"score_{t}"] = self.scores[:, j]
        return df

    def __repr__(self) -> str:
        return (f"TaskPrediction({self.n_test} networks x {len(self.tasks)} templates, "
                f"accuracy={self.accuracy:.3f}, chance={self.chance:.3f}"
                f"{', ' + '; '.join(self.notes) if self.notes else ''})")


def predict_task(
    test: Sequence[FunctionalNetwork], templates: Mapping[str, FunctionalNetwork]
) -> TaskPrediction:
    """Predict each test network's task: the template with the largest fraction active.

    The score of template ``T`` for test network ``R`` is ``|R ∩ T| / |T|`` (the paper's
    "% of the template's elements active").  Empty templates score ``nan`` and are never
    predicted; a test network that activates no template unit gets prediction ``None``
    (counted as wrong) -- both are listed in ``notes`` instead of dividing by zero.

    Examples
    --------
    >>> import torch
    >>> m = lambda *v: torch.tensor(v).bool()
    >>> tmpl = {"a": FunctionalNetwork(m(1, 1, 0, 0), task="a"),
    ...         "b": FunctionalNetwork(m(0, 0, 1, 1), task="b")}
    >>> pred = predict_task([FunctionalNetwork(m(1, 0, 0, 0), task="a", run=5),
    ...                      FunctionalNetwork(m(0, 1, 1, 1), task="b", run=5)], tmpl)
    >>> pred.predicted, pred.accuracy
    (('a', 'b'), 1.0)
    """
    if not isinstance(templates, Mapping) or not templates:
        raise NeuroprobeError(
            "templates must be a non-empty dict task -> FunctionalNetwork, e.g. "
            "templates(train_networks)"
        )
    tests = _net_list(test, "test")
    if not tests:
        raise NeuroprobeError("test is empty; pass at least one held-out network")
    bad_keys = [t for t in templates if not isinstance(t, str)]
    if bad_keys:
        raise NeuroprobeError(
            f"templates must be keyed by task name (str); got key {bad_keys[0]!r} "
            f"({type(bad_keys[0]).__name__})."
        )
    tasks = tuple(templates)
    T = _stack([templates[t] for t in tasks], "templates")
    R = _stack(tests, "test")
    _check_same_units(list(templates.values()) + tests, "test and templates")
    if T.shape[1] != R.shape[1]:
        raise NeuroprobeError(
            f"test networks have {R.shape[1]} units but templates have {T.shape[1]}; both "
            "must be over the same unit index"
        )
    inter = _gram(R, T)
    tsize = T.sum(1).astype(np.float64)
    notes = []
    empty = [t for t, s in zip(tasks, tsize, strict=False) if s == 0]
    if empty:
        notes.append(f"empty template(s) {empty}: no unit passed the threshold in enough runs")
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(tsize[None, :] > 0, inter / np.maximum(tsize[None, :], 1), np.nan)
    predicted = []
    n_none = 0
    for row in scores:
        if np.all(np.isnan(row)) or np.nanmax(row) <= 0:
            predicted.append(None)
            n_none += 1
        else:
            predicted.append(tasks[int(np.nanargmax(row))])
    if n_none:
        notes.append(f"{n_none} test network(s) activate no template unit: no prediction")
    return TaskPrediction(
        scores=scores,
        tasks=tasks,
        true=tuple(getattr(n, "task", None) for n in tests),
        predicted=tuple(predicted),
        labels=tuple(getattr(n, "name", f"test{i}") for i, n in enumerate(tests)),
        notes=tuple(notes),
    )




def confusion_matrix(
    predictions: Sequence[TaskPrediction], tasks: Sequence[str] | None = None
) -> pd.DataFrame:
    """Counts of true vs predicted task, summed over predictions.

    Rows are the tasks (then any other true label, as a string), columns the tasks, plus
    ``"none"`` when some network got no prediction.  ``tasks`` defaults to the templates'
    tasks of all predictions, in order of appearance.

    Examples
    --------
    >>> import torch
    >>> m = lambda *v: torch.tensor(v).bool()
    >>> tmpl = {"a": FunctionalNetwork(m(1, 1, 0, 0), task="a"),
    ...         "b": FunctionalNetwork(m(0, 0, 1, 1), task="b")}
    >>> p1 = predict_task([FunctionalNetwork(m(1, 0, 0, 0), task="a")], tmpl)
    >>> p2 = predict_task([FunctionalNetwork(m(0, 0, 0, 0), task="b")], tmpl)
    >>> confusion_matrix([p1, p2]).values.tolist()
    [[1, 0, 0], [0, 0, 1]]
    """
    if isinstance(predictions, TaskPrediction):
        predictions = [predictions]
    if not hasattr(predictions, "__iter__") or isinstance(predictions, (str, bytes, Mapping)):
        raise NeuroprobeError(
            f"predictions must be a list of TaskPrediction (from predict_task); got "
            f"{type(predictions).__name__}."
        )
    preds = list(predictions)
    bad = [p for p in preds if not isinstance(p, TaskPrediction)]
    if bad:
        raise NeuroprobeError(
            f"predictions must hold TaskPrediction objects (from predict_task); got "
            f"{type(bad[0]).__name__}."
        )
    if tasks is not None:
        tasks = check_name_list(tasks, "tasks", what="task")
        if len(set(tasks)) != len(tasks):
            raise NeuroprobeError(f"tasks repeats a task: {tasks}; name each once.")
    task_cols = list(tasks) if tasks is not None else list(
        dict.fromkeys(t for p in preds for t in p.tasks))
    rows = list(dict.fromkeys(task_cols + [str(t) for pr in preds for t in pr.true]))
    unpredicted = any(p is None for pr in preds for p in pr.predicted)
    if unpredicted and "none" in task_cols:
        raise NeuroprobeError(
            "a task is named 'none', which is also the column of the networks that got no "
            "prediction; rename that task so that the two are not counted together."
        )
    cols = task_cols + (["none"] if unpredicted else [])
    row_of = {r: i for i, r in enumerate(rows)}
    col_of = {c: j for j, c in enumerate(cols)}
    counts = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for pr in preds:
        for t, p in zip(pr.true, pr.predicted, strict=True):
            c = "none" if p is None else p
            if c not in col_of:
                raise NeuroprobeError(
                    f"a network was predicted as {c!r}, which is not among tasks {task_cols}; "
                    "pass tasks=None or every template's task"
                )
            counts[row_of[str(t)], col_of[c]] += 1
    out = pd.DataFrame(counts, index=rows, columns=cols)
    out.index.name, out.columns.name = "true", "predicted"
    return out


@dataclass(frozen=True)
class LeaveOneRunOut:
    """Leave-one-run-out task prediction (see :func:`leave_one_run_out`).

    Attributes
    ----------
    runs : tuple of int
        The held-out run of each fold.
    predictions : tuple of TaskPrediction
        Each fold's prediction of the held-out run's networks.
    shuffled : bool
        Whether the training networks' task labels were shuffled (the null model).
    """

    runs: tuple[int, ...]
    predictions: tuple[TaskPrediction, ...]
    shuffled: bool = False

    @property
    def accuracy(self) -> float:
        """Mean over folds of each fold's accuracy."""
        return float(np.mean([p.accuracy for p in self.predictions]))

    def confusion(self) -> pd.DataFrame:
        """:func:`confusion_matrix` summed over the folds."""
        return confusion_matrix(self.predictions)

    def __repr__(self) -> str:
        return (f"LeaveOneRunOut({len(self.runs)} folds, accuracy={self.accuracy:.3f}"
                f"{', shuffled labels' if self.shuffled else ''})")


def leave_one_run_out(
    networks: Sequence[FunctionalNetwork],
    min_runs: int | None = None,
    shuffle: int | np.random.Generator | None = None,
) -> LeaveOneRunOut:
    """Predict each run's networks from templates of the other runs, run by run.

    For every run ``r`` (in sorted order), :func:`templates` of the networks of all other
    runs (``min_runs`` of them, default a majority) predict the tasks of run ``r``'s
    networks (:func:`predict_task`): the held-out-run accuracy of arXiv:2311.10898.

    Parameters
    ----------
    networks : sequence of FunctionalNetwork
        One network per (task, run); every network needs its ``task`` and ``run``.
    min_runs : int, optional
        Training runs a unit must be active in to enter a template.
    shuffle : int or numpy Generator, optional
        The null model: in every fold the training networks' masks are permuted across
        their (task, run) labels (``rng.permutation``, one per fold, in fold order) before
        the templates are made, so that the templates carry no task information.

    Returns
    -------
    LeaveOneRunOut

    Examples
    --------
    >>> import torch
    >>> nets = [FunctionalNetwork(torch.tensor(v).bool(), task=t, run=r)
    ...         for r in range(3) for t, v in [("a", (1, 1, 0, 0)), ("b", (0, 0, 1, 1))]]
    >>> loo = leave_one_run_out(nets)
    >>> loo.runs, loo.accuracy
    ((0, 1, 2), 1.0)
    >>> loo.confusion().values.tolist()
    [[3, 0], [0, 3]]
    """
    nets = _net_list(networks, "networks")
    if any(not isinstance(n, FunctionalNetwork) for n in nets):
        raise NeuroprobeError(
            "networks must hold FunctionalNetwork objects (with task and run); got "
            f"{type(next(n for n in nets if not isinstance(n, FunctionalNetwork))).__name__}."
        )
    if min_runs is not None:
        min_runs = check_int(min_runs, "min_runs", minimum=1)
    if shuffle is not None and not isinstance(shuffle, np.random.Generator):
        shuffle = check_int(shuffle, "shuffle (a seed)", minimum=0)
    if any(n.run is None or n.task is None for n in nets):
        raise NeuroprobeError(
            "every network needs a task and a run for leave-one-run-out prediction; build "
            "them with FunctionalNetwork(mask, task=..., run=...)"
        )
    runs = sorted({n.run for n in nets})
    if len(runs) < 2:
        raise NeuroprobeError(
            f"leave-one-run-out needs networks of at least 2 runs; got runs {runs}"
        )
    rng = None if shuffle is None else np.random.default_rng(shuffle)
    preds = []
    for held in runs:
        train = [n for n in nets if n.run != held]
        test = [n for n in nets if n.run == held]
        if rng is not None:
            perm = rng.permutation(len(train))
            train = [FunctionalNetwork(train[j].mask, train[j].units, task=train[i].task,
                                       run=train[i].run) for i, j in enumerate(perm)]
        preds.append(predict_task(test, templates(train, min_runs=min_runs)))
    return LeaveOneRunOut(tuple(runs), tuple(preds), shuffled=rng is not None)
