"""Block designs: design matrices for a mass-univariate GLM over token time series.

A recording of a network is a time series ``[T, N]`` (one row per token).  In a *block
design* consecutive stretches of tokens (one prompt per block) belong to one condition
(``"medical"``, ``"random"`` ...).  :class:`BlockDesign` turns the sequence of blocks (or the
per-token labels of a :class:`~neuroprobe.core.capture.Recording`) into a design matrix ``[T, P]``
with named columns, ready for :func:`neuroprobe.fit_glm`.

Columns, in order:

* one boxcar per condition (1 inside the condition's blocks, 0 elsewhere), except the
  ``baseline`` condition when one is named;
* drift regressors per run (``drift="polynomial"`` or ``"cosine"``), none by default;
* run regressors ``run_1 ... run_{R-1}`` when there are several runs (run 0 is the reference);
* ``constant`` (intercept) -- unless the condition boxcars already sum to one.

**Implicit baseline vs own column.**  With ``baseline="random"`` the control condition has no
column: the intercept models its mean and the ``medical`` beta *is* the difference
medical - random (contrast ``"medical"``).  With ``baseline=None`` every condition gets its own
column; when every time point belongs to some condition the boxcars sum to one, so no
intercept is added (a cell-means model) and the same test is the contrast
``"medical - random"``.  Both give identical t statistics for that difference.

No haemodynamic convolution by default (tokens are not BOLD); ``hrf="glover"`` or ``"spm"``
convolve the boxcars with nilearn's canonical HRFs sampled every ``t_r`` for comparison with
fMRI practice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import as_tensor, check_known_keys, check_real

__all__ = ["BlockDesign"]

_DRIFTS = (None, "polynomial", "cosine")
_HRFS = (None, "glover", "spm")
# columns that model nuisance (intercept, run offsets): never permuted by max-T
_NUISANCE = re.compile(r"^(constant|intercept|const|run_\d+)$")
# names the design generates (or that max-T treats as nuisance): a condition may not use them
_RESERVED = re.compile(r"^(constant|intercept|const|run_\d+|drift_\d+|run\d+_drift_\d+)$")
#: keyword options of from_blocks / from_labels (the BlockDesign fields after labels, runs)
_OPTIONS = ("baseline", "drift", "drift_order", "high_pass", "hrf", "t_r", "hrf_oversampling")


def _check_label(lab, where: str):
    """One condition label: a string, a number (used as its text) or None/NaN/"" for rest.
    Tuples, lists, dicts, arrays ... are refused (they would be split or stringified)."""
    if _is_rest(lab) or isinstance(lab, (str, np.str_)):
        return lab
    if isinstance(lab, (int, float, np.integer, np.floating, np.bool_)):
        return lab
    raise NeuroprobeError(
        f"{where} must be a condition name (str, or None / '' for an unlabelled rest time "
        f"point); got {type(lab).__name__} {lab!r}. Give one plain label per time point "
        "(e.g. join a tuple into one string: 'medical/long')."
    )


def _is_rest(lab) -> bool:
    return lab is None or (isinstance(lab, float) and np.isnan(lab)) or lab == ""


def _gamma_difference_hrf(t_r, delay, undershoot, dispersion, u_dispersion, ratio,
                          time_length=32.0, oversampling=1):
    """nilearn's gamma-difference HRF, sampled every ``t_r / oversampling``, summing to 1."""
    from scipy.stats import gamma

    dt = t_r / oversampling
    ts = np.linspace(0, time_length, int(np.rint(float(time_length) / dt)))
    peak = gamma.pdf(ts, delay / dispersion, loc=dt, scale=dispersion)
    under = gamma.pdf(ts, undershoot / u_dispersion, loc=dt, scale=u_dispersion)
    hrf = peak - ratio * under
    return hrf / hrf.sum()


def _hrf_kernel(name: str, t_r: float, oversampling: int = 1) -> np.ndarray:
    if name == "spm":
        return _gamma_difference_hrf(t_r, 6, 16.0, 1.0, 1.0, 0.167, oversampling=oversampling)
    return _gamma_difference_hrf(t_r, 6, 12.0, 0.9, 0.9, 0.48,  # glover
                                 oversampling=oversampling)


def _hrf_regressor(box: np.ndarray, name: str, t_r: float, oversampling: int,
                   min_onset: float = -24.0) -> np.ndarray:
    """A boxcar of one run convolved with the HRF as nilearn's ``compute_regressor`` does:
    the blocks become events (onset, duration) on a grid ``oversampling`` times finer than
    the time points (from ``min_onset`` before the first), the grid regressor is convolved
    with the HRF sampled on that grid, then linearly interpolated back at the time points."""
    n = box.size
    if oversampling == 1 or n < 2:
        return np.convolve(box, _hrf_kernel(name, t_r))[:n]
    ft = np.arange(n) * t_r
    edges = np.diff(np.r_[0.0, box, 0.0])
    on, off = np.flatnonzero(edges > 0), np.flatnonzero(edges < 0)
    onsets, durations = on * t_r, (off - on) * t_r
    lo, hi = ft.min(), ft.max()
    n_hr = (n - 1) / (hi - lo) * (hi * (1 + 1.0 / (n - 1)) - lo - min_onset) * oversampling + 1
    grid = np.linspace(lo + min_onset, hi * (1 + 1.0 / (n - 1)), int(np.rint(n_hr)))
    tmax = grid.size
    reg = np.zeros(tmax)
    t_on = np.minimum(np.searchsorted(grid, onsets), tmax - 1)
    np.add.at(reg, t_on, 1.0)
    t_off = np.minimum(np.searchsorted(grid, onsets + durations), tmax - 1)
    t_off = np.where((t_off < tmax - 1) & (t_off == t_on), t_off + 1, t_off)
    np.add.at(reg, t_off, -1.0)
    reg = np.cumsum(reg)
    conv = np.convolve(reg, _hrf_kernel(name, t_r, oversampling))[:tmax]
    return np.interp(ft, grid, conv)


def _poly_drift(n: int, order: int, t_r: float) -> np.ndarray:
    """nilearn's polynomial drift (orthogonalised powers), without its constant column."""
    ft = np.arange(n) * t_r
    tmax = float(ft.max()) if n > 1 else 1.0
    pol = np.stack([(ft / tmax) ** k for k in range(order + 1)], axis=1)
    for i in range(1, pol.shape[1]):
        pol[:, i] -= pol[:, i] @ pol[:, :i] @ np.linalg.pinv(pol[:, :i])
    return pol[:, 1:]


def _cosine_drift(n: int, high_pass: float, t_r: float) -> np.ndarray:
    """nilearn's discrete-cosine drift basis, without its constant column."""
    order = min(n - 1, int(np.floor(2 * n * high_pass * t_r)))
    tim = np.arange(n)
    out = np.zeros((n, order))
    for k in range(1, order + 1):
        out[:, k - 1] = np.sqrt(2.0 / n) * np.cos((np.pi / n) * (tim + 0.5) * k)
    return out


@dataclass(frozen=True, eq=False)
class BlockDesign:
    """A block design over ``T`` time points, and its design matrix.

    Build it with :meth:`from_blocks` (a list of ``(condition, length)`` blocks) or
    :meth:`from_labels` (one condition label per time point, e.g. ``rec.labels``).

    Parameters
    ----------
    labels : tuple of str
        Condition of every time point (``""`` = unlabelled, modelled by the intercept only).
        Refused: a single condition covering every time point (its column would be the
        intercept), a baseline that is the only condition, names the design generates
        (``constant``, ``intercept``, ``const``, ``run_<k>``, ``drift_<k>``,
        ``run<r>_drift_<k>``), and labels that are not one plain value (str, number,
        None) per time point.
    runs : ndarray of int ``[T]``
        Run (session) of every time point; runs are consecutive stretches.
    baseline : str, optional
        Condition without a column (implicit baseline, modelled by the intercept).
    drift : {None, "polynomial", "cosine"}
        Drift regressors added per run.
    drift_order : int
        Order of the polynomial drift.
    high_pass : float
        Cut-off frequency (cycles per time unit) of the cosine drift.
    hrf : {None, "glover", "spm"}
        Convolve the condition boxcars with a canonical HRF (off by default).
    t_r : float
        Time between two time points (only matters for ``hrf`` and ``high_pass``).
    hrf_oversampling : int
        With ``hrf``: the boxcars are convolved on a grid this many times finer than the
        time points and sampled back, as nilearn's ``compute_regressor`` (whose default,
        50, this is; 1 convolves the sampled boxcar, as before).

    Examples
    --------
    >>> from neuroprobe import BlockDesign
    >>> d = BlockDesign.from_blocks([("task", 3), ("control", 2)] * 2, baseline="control")
    >>> d.matrix.columns.tolist()
    ['task', 'constant']
    >>> d.matrix["task"].tolist()
    [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    >>> BlockDesign.from_blocks([("task", 3), ("control", 2)] * 2).matrix.columns.tolist()
    ['task', 'control']
    """

    labels: tuple
    runs: Int[np.ndarray, " time"]
    baseline: str | None = None
    drift: str | None = None
    drift_order: int = 1
    high_pass: float = 0.01
    hrf: str | None = None
    t_r: float = 1.0
    hrf_oversampling: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.labels, (str, bytes)) or not hasattr(self.labels, "__iter__"):
            raise NeuroprobeError(
                f"labels must be a sequence of condition names, one per time point; got "
                f"{type(self.labels).__name__} {self.labels!r}."
            )
        raw = [_check_label(x, f"labels[{i}]") for i, x in enumerate(self.labels)]
        labels = tuple("" if _is_rest(x) else str(x) for x in raw)
        texts = {x for x in dict.fromkeys(raw) if isinstance(x, (str, np.str_))}
        others = {str(x) for x in dict.fromkeys(raw)
                  if not _is_rest(x) and not isinstance(x, (str, np.str_))}
        if texts & others:
            both = sorted(texts & others)
            raise NeuroprobeError(
                f"labels mix the string(s) {both} with numbers that print the same (e.g. "
                f"'{both[0]}' and {both[0]}), which would silently become one condition; use "
                "one type for the labels."
            )
        object.__setattr__(self, "labels", labels)
        T = len(labels)
        if T == 0:
            raise NeuroprobeError("BlockDesign needs at least one time point; got 0 labels.")
        if isinstance(self.runs, (str, bytes, dict)):
            raise NeuroprobeError(
                f"runs must be a sequence of int run ids, one per time point; got "
                f"{type(self.runs).__name__} {self.runs!r}."
            )
        runs = np.asarray(self.runs if self.runs is not None else np.zeros(T, int))
        if runs.shape != (T,):
            raise NeuroprobeError(
                f"runs must have one entry per time point ({T}); got "
                f"{type(self.runs).__name__} of shape {runs.shape}. Pass a sequence of int "
                "run ids of length T."
            )
        if runs.size and not (np.issubdtype(runs.dtype, np.integer)
                              or np.issubdtype(runs.dtype, np.bool_)):
            if np.issubdtype(runs.dtype, np.floating) and np.isfinite(runs).all() \
                    and (runs == np.round(runs)).all():
                runs = runs.astype(np.int64)
            else:
                raise NeuroprobeError(
                    f"runs must hold integer run ids (one per time point); got dtype "
                    f"{runs.dtype} (e.g. {runs.ravel()[0]!r}). Number the runs 0, 1, ..."
                )
        # runs are consecutive stretches, renumbered 0..R-1 in order of appearance
        change = np.r_[True, runs[1:] != runs[:-1]]
        order = list(dict.fromkeys(runs.tolist()))
        if int(change.sum()) != len(order):
            raise NeuroprobeError(
                "runs must be consecutive stretches of time points (each run appears once); "
                f"got runs {order} interleaved. Concatenate each run's blocks together."
            )
        object.__setattr__(self, "runs", np.cumsum(change) - 1)
        conds = self.conditions_all
        if not conds:
            raise NeuroprobeError(
                "BlockDesign has no labelled time point; give each block a condition name."
            )
        if self.baseline is not None and self.baseline not in conds:
            raise NeuroprobeError(
                f"baseline={self.baseline!r} is not a condition of the design; conditions are: "
                f"{', '.join(conds)}."
            )
        if self.drift not in _DRIFTS:
            raise NeuroprobeError(
                f"drift must be one of {_DRIFTS}; got {self.drift!r}."
            )
        if self.hrf not in _HRFS:
            raise NeuroprobeError(f"hrf must be one of {_HRFS}; got {self.hrf!r}.")
        if isinstance(self.hrf_oversampling, bool) or not isinstance(
                self.hrf_oversampling, (int, np.integer)) or self.hrf_oversampling < 1:
            raise NeuroprobeError(
                f"hrf_oversampling must be an int >= 1; got {self.hrf_oversampling!r}."
            )
        check_real(self.t_r, "t_r", minimum=0, low_open=True)
        check_real(self.high_pass, "high_pass", minimum=0)
        if isinstance(self.drift_order, (bool, np.bool_)) or \
                not isinstance(self.drift_order, (int, np.integer)) or self.drift_order < 1:
            raise NeuroprobeError(f"drift_order must be an int >= 1; got {self.drift_order!r}.")
        shortest = int(np.bincount(self.runs).min())
        if self.drift == "polynomial" and self.drift_order >= shortest:
            raise NeuroprobeError(
                f"drift_order={self.drift_order} needs more time points per run than the "
                f"shortest run has ({shortest}): a polynomial of order k takes k + 1 of them. "
                "Use a lower drift_order."
            )
        if self.hrf is not None:
            n_kernel = 32.0 * self.hrf_oversampling / float(self.t_r)
            if n_kernel > 1e7:
                raise NeuroprobeError(
                    f"hrf={self.hrf!r} with t_r={self.t_r!r} and hrf_oversampling="
                    f"{self.hrf_oversampling} samples the 32 s HRF at {n_kernel:.3g} points; "
                    "t_r is in seconds per time point (e.g. 1.0): use a larger t_r or a "
                    "smaller hrf_oversampling."
                )
        reserved = [c for c in conds if _RESERVED.match(c)]
        if reserved:
            raise NeuroprobeError(
                f"condition name(s) {reserved} collide with columns the design generates "
                "('constant', 'intercept', 'run_<k>', 'drift_<k>', 'run<r>_drift_<k>'), which "
                "would overwrite or be mistaken for them; rename the condition(s), e.g. "
                f"{reserved[0]!r} -> 'cond_{reserved[0]}'."
            )
        rest = "" in labels
        if not self.conditions:
            raise NeuroprobeError(
                f"the design has no condition column: its only condition {conds[0]!r} is the "
                "baseline, so only the intercept is left and nothing can be contrasted. Add a "
                "task condition, or pass baseline=None."
            )
        if len(conds) + rest < 2:
            raise NeuroprobeError(
                f"the design has a single condition {conds[0]!r} covering every time point: "
                "its column is the intercept, so a contrast of it tests mean != 0, not a task "
                "effect. Add a control condition (e.g. blocks of random text, with "
                "baseline='control') or unlabelled rest blocks (None)."
            )

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_blocks(cls, blocks: Sequence, **options) -> BlockDesign:
        """A design from blocks ``(condition, length)`` or ``(condition, length, run)``.

        ``condition`` may be ``None`` or ``""`` for an unlabelled (rest) block.  Other
        keyword arguments are those of :class:`BlockDesign` (``baseline``, ``drift``, ...).

        Examples
        --------
        >>> d = BlockDesign.from_blocks([("a", 2, 0), ("b", 2, 0), ("a", 2, 1), ("b", 2, 1)],
        ...                             baseline="b")
        >>> d.matrix.columns.tolist()
        ['a', 'run_1', 'constant']
        """
        check_known_keys(options, "BlockDesign.from_blocks options", _OPTIONS)
        if isinstance(blocks, (str, bytes, dict)) or not hasattr(blocks, "__iter__"):
            raise NeuroprobeError(
                f"blocks must be a list of (condition, length) or (condition, length, run) "
                f"tuples; got {type(blocks).__name__} {blocks!r}."
            )
        labels: list = []
        runs: list = []
        for i, blk in enumerate(blocks):
            if not isinstance(blk, (tuple, list)) or len(blk) not in (2, 3):
                raise NeuroprobeError(
                    f"blocks[{i}] must be (condition, length) or (condition, length, run); "
                    f"got {blk!r}."
                )
            cond, length = _check_label(blk[0], f"blocks[{i}] condition"), blk[1]
            run = blk[2] if len(blk) == 3 else 0
            if isinstance(run, (bool, np.bool_)) or not isinstance(run, (int, np.integer)):
                raise NeuroprobeError(
                    f"blocks[{i}] run must be an int run id; got {type(run).__name__} {run!r}."
                )
            if not isinstance(length, (int, np.integer)) or isinstance(length, bool) \
                    or length < 1:
                raise NeuroprobeError(
                    f"blocks[{i}] length must be a positive int (time points); got {length!r}."
                )
            labels += [cond] * int(length)
            runs += [run] * int(length)
        if not labels:
            raise NeuroprobeError("blocks is empty; pass at least one (condition, length).")
        return cls(tuple(labels), np.asarray(runs), **options)

    @classmethod
    def from_labels(
        cls, labels: Sequence | np.ndarray, *,
        runs: Int[np.ndarray, " time"] | Sequence[int] | None = None, **options,
    ) -> BlockDesign:
        """A design from one condition label per time point.

        ``labels`` may be a sequence/array of labels or a Recording (its ``labels``, which
        ``record(..., labels=...)`` fills from per-prompt labels).  ``runs`` is an optional
        run id per time point.

        Examples
        --------
        >>> BlockDesign.from_labels(["x", "x", "y", "y"], baseline="y").matrix.shape
        (4, 2)
        """
        check_known_keys(options, "BlockDesign.from_labels options", _OPTIONS)
        if hasattr(labels, "acts") and hasattr(labels, "labels"):
            if labels.labels is None:
                raise NeuroprobeError(
                    "this Recording has no labels; record it with record(..., labels=[...]) "
                    "giving one condition per prompt, or pass the labels yourself."
                )
            labels = labels.labels
        if isinstance(labels, (str, bytes)):
            raise NeuroprobeError(
                f"labels must be a sequence of condition names, one per time point; got the "
                f"string {labels!r}, which would be split into characters. Pass a list "
                f"([{labels!r}] * T), or list({labels!r}) if one character per time point is "
                "meant."
            )
        if isinstance(labels, dict) or not hasattr(labels, "__iter__"):
            raise NeuroprobeError(
                f"labels must be a sequence of condition names, one per time point; got "
                f"{type(labels).__name__} {labels!r}."
            )
        if isinstance(labels, (np.ndarray, pd.Series, pd.Index)):
            if np.ndim(labels) != 1:
                raise NeuroprobeError(
                    f"labels must be 1-D (one condition per time point); got shape "
                    f"{np.shape(labels)}. Tuple labels become extra columns: join each into "
                    "one string."
                )
            labels = list(np.asarray(labels, dtype=object))
        else:
            labels = list(labels)  # each label is checked by BlockDesign itself
        return cls(tuple(labels), runs, **options)

    # ---- views --------------------------------------------------------------------------
    @property
    def n_time(self) -> int:
        return len(self.labels)

    @property
    def n_runs(self) -> int:
        return int(self.runs.max()) + 1

    @cached_property
    def conditions_all(self) -> list[str]:
        """All condition names, in order of first appearance."""
        return [c for c in dict.fromkeys(self.labels) if c != ""]

    @property
    def conditions(self) -> list[str]:
        """Conditions that have a column (all but the baseline)."""
        return [c for c in self.conditions_all if c != self.baseline]

    @cached_property
    def blocks(self) -> pd.DataFrame:
        """One row per block: ``condition``, ``onset``, ``length``, ``run``."""
        lab = np.asarray(self.labels, dtype=object)
        change = np.r_[True, (lab[1:] != lab[:-1]) | (self.runs[1:] != self.runs[:-1])]
        onsets = np.flatnonzero(change)
        lengths = np.diff(np.r_[onsets, self.n_time])
        return pd.DataFrame(
            {"condition": lab[onsets], "onset": onsets, "length": lengths,
             "run": self.runs[onsets]}
        )

    @cached_property
    def matrix(self) -> pd.DataFrame:
        """The design matrix ``[T, P]`` (float64 DataFrame with named columns)."""
        T = self.n_time
        lab = np.asarray(self.labels, dtype=object)
        cols: dict[str, np.ndarray] = {}
        for c in self.conditions:
            box = (lab == c).astype(np.float64)
            if self.hrf is not None:
                conv = np.zeros(T)
                for r in range(self.n_runs):  # no bleeding across runs
                    sl = self.runs == r
                    conv[sl] = _hrf_regressor(box[sl], self.hrf, self.t_r,
                                              int(self.hrf_oversampling))
                box = conv
            cols[c] = box
        multi = self.n_runs > 1
        if self.drift is not None:
            for r in range(self.n_runs):
                sl = np.flatnonzero(self.runs == r)
                n = sl.size
                if self.drift == "polynomial":
                    d = _poly_drift(n, int(self.drift_order), self.t_r)
                else:
                    d = _cosine_drift(n, float(self.high_pass), self.t_r)
                for k in range(d.shape[1]):
                    col = np.zeros(T)
                    col[sl] = d[:, k]
                    cols[f"run{r}_drift_{k + 1}" if multi else f"drift_{k + 1}"] = col
        for r in range(1, self.n_runs):
            cols[f"run_{r}"] = (self.runs == r).astype(np.float64)
        covered = (lab != "").all()
        if self.baseline is not None or not covered or self.hrf is not None:
            cols["constant"] = np.ones(T)
        return pd.DataFrame(cols)

    def to_dataframe(self) -> pd.DataFrame:
        """The design matrix (same as :attr:`matrix`)."""
        return self.matrix.copy()

    def plot(self, ax=None, **kwargs):
        """Plot the design matrix like nilearn's ``plot_design_matrix``; returns the Axes."""
        from neuroprobe.viz.glm import plot_design_matrix

        return plot_design_matrix(self.matrix, ax=ax, **kwargs)

    def __repr__(self) -> str:
        return (
            f"BlockDesign(T={self.n_time}, conditions={self.conditions_all}, "
            f"baseline={self.baseline!r}, runs={self.n_runs}, blocks={len(self.blocks)}, "
            f"drift={self.drift!r}, hrf={self.hrf!r}, columns={list(self.matrix.columns)})"
        )


# ---------------------------------------------------------------------------------------
# design matrices as arrays: what the fits (fit_glm, GLMProbe) need from X
# ---------------------------------------------------------------------------------------
def as_design_matrix(
    X, T: int | None = None,
) -> tuple[Float[np.ndarray, "time regressor"], tuple[str, ...]]:
    """A design as a contiguous float64 array and its column names.

    ``X`` is a :class:`BlockDesign`, a DataFrame (its column names are kept) or an array /
    tensor ``[T, P]`` (columns named ``x0, x1, ...``).  With ``T`` given, ``X`` must have
    ``T`` rows (one per time point of ``Y``).

    Examples
    --------
    >>> X, cols = as_design_matrix(BlockDesign.from_blocks([("a", 2), ("b", 2)], baseline="b"))
    >>> X.shape, cols
    ((4, 2), ('a', 'constant'))
    """
    if hasattr(X, "matrix") and isinstance(X.matrix, pd.DataFrame):
        X = X.matrix  # a BlockDesign
    if isinstance(X, pd.DataFrame):
        cols = tuple(str(c) for c in X.columns)
        try:
            arr = X.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise NeuroprobeError(
                "X (design DataFrame) has non-numeric columns; every column must be numeric."
            ) from None
    else:
        arr = as_tensor(X, "X").detach().cpu().to(torch.float64).numpy()
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise NeuroprobeError(f"X must be 2-D [time, regressor]; got shape {arr.shape}.")
        cols = tuple(f"x{i}" for i in range(arr.shape[1]))
    if arr.shape[1] == 0:
        raise NeuroprobeError(
            f"X has no columns (shape {arr.shape}); the design needs at least one regressor "
            "(e.g. a BlockDesign's condition boxcars and constant)."
        )
    if len(set(cols)) != len(cols):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise NeuroprobeError(f"X has duplicate column names {dup}; rename them.")
    if not np.isfinite(arr).all():
        bad = [cols[j] for j in np.flatnonzero(~np.isfinite(arr).all(0))]
        raise NeuroprobeError(
            f"X contains NaN or inf in column(s) {bad}; the design must be finite."
        )
    if T is not None and arr.shape[0] != T:
        raise NeuroprobeError(
            f"Y and X have different numbers of time points: Y has shape [T={T}, N] but X "
            f"has shape {arr.shape}; X needs one row per time point of Y."
        )
    return np.ascontiguousarray(arr), cols


def check_rank(X: Float[np.ndarray, "time regressor"], columns: Sequence[str],
               allow_rank_deficient: bool = False) -> int:
    """``rank(X)``, after checking that the GLM is estimable: more time points than the
    rank, and full column rank unless ``allow_rank_deficient`` (the error names the
    collinear columns).

    Examples
    --------
    >>> check_rank(np.array([[1.0, 0], [1, 1], [1, 0]]), ["constant", "a"])
    2
    """
    T, P = X.shape
    rank = int(np.linalg.matrix_rank(X))
    if T <= rank:
        raise NeuroprobeError(
            f"the GLM needs more time points than the rank of X: T={T}, rank(X)={rank}; "
            "record more tokens or use fewer regressors."
        )
    if rank < P and not allow_rank_deficient:
        Xn = X / np.maximum(np.linalg.norm(X, axis=0), 1e-300)
        _, s, vt = np.linalg.svd(Xn, full_matrices=False)
        null = vt[s <= s.max() * max(X.shape) * np.finfo(float).eps * 10]
        involved = [columns[j] for j in np.flatnonzero((np.abs(null) > 1e-6).any(0))]
        raise NeuroprobeError(
            f"X is rank deficient (rank {rank} < {P} columns): columns {involved} are "
            "collinear. Drop one of them (e.g. the intercept when every condition has its own "
            "column), or pass allow_rank_deficient=True to fit through the pseudo-inverse "
            "(only estimable contrasts are then meaningful)."
        )
    return rank


def block_segments(
    X: Float[np.ndarray, "time regressor"], columns: Sequence[str],
) -> tuple[Int[np.ndarray, " time"] | None, tuple[int, ...]]:
    """The block structure of a design: segments and exchangeable condition columns.

    Segments are the maximal runs of identical rows over the piecewise-constant columns
    (those that change at most ``T/4`` times); ``segments[t]`` is time point ``t``'s segment.
    The second value lists the piecewise-constant columns that change and are not nuisance
    (``constant``, ``intercept``, ``run_<k>``): the block labels that max-T permutes.
    ``(None, ())`` when there is no such structure (or more than ``min(4096, T/2)``
    segments).  The fits use the segments to sum ``Y`` per block instead of multiplying it
    row by row.

    Examples
    --------
    >>> d = BlockDesign.from_blocks([("a", 3), ("b", 3)] * 2, baseline="b")
    >>> seg, perm_cols = block_segments(*as_design_matrix(d))
    >>> seg.tolist(), perm_cols
    ([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3], (0,))
    """
    T = X.shape[0]
    changes = np.diff(X, axis=0) != 0
    pc = [j for j in range(X.shape[1]) if changes[:, j].sum() <= T // 4]
    if not pc:
        return None, ()
    brk = np.r_[True, changes[:, pc].any(1)]
    seg = np.cumsum(brk) - 1
    if int(seg[-1]) + 1 > min(4096, T // 2):
        return None, ()
    perm_cols = tuple(
        j for j in pc if changes[:, j].any() and not _NUISANCE.match(columns[j])
    )
    return seg, perm_cols


@dataclass(frozen=True)
class BlockLayout:
    """A fit's design as max-T permutes it: the design ``X [T, P]``, each time point's
    segment, the permuted (condition) columns ``J`` and the nuisance columns ``K``, and per
    segment its first row, its length and its condition values ``A [S, |J|]``."""

    X: np.ndarray
    segments: np.ndarray
    J: list
    K: list
    starts: np.ndarray
    lengths: np.ndarray
    A: np.ndarray

    @property
    def n_segments(self) -> int:
        return int(self.starts.shape[0])


def block_layout(glm) -> BlockLayout:
    """The :class:`BlockLayout` of a fit that keeps a permutation state."""
    pm = glm._perm
    X = np.array(glm.design.to_numpy())
    T, P = X.shape
    seg = pm.segments
    J = list(pm.perm_cols)
    starts = np.r_[0, np.flatnonzero(np.diff(seg)) + 1]
    return BlockLayout(X, seg, J, [j for j in range(P) if j not in J], starts,
                       np.diff(np.r_[starts, T]).astype(float), X[starts][:, J])
