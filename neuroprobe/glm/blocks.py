"""The block-design fast path: OLS t contrasts of block-design runs from per-block statistics.

Why it exists: in a block design every regressor of a run (the task and control boxcars,
the run offsets) is constant within a block, so the OLS fit of a unit depends on its rows
only through each block's number of rows, mean and sum of squares about that mean.
Reduce every block to those numbers once (:class:`BlockStats`) and any arrangement of the
blocks into runs -- the many random splits of prompts into runs of
:func:`~neuroprobe.networks.experiment.functional_networks` -- costs one sum over blocks
per cell instead of a pass over the rows.  The numbers are those of
:func:`~neuroprobe.glm.fit.fit_glm` on the run's concatenated rows (t to rounding; the tests
check 1e-10), and significance is decided by :mod:`~neuroprobe.glm.pvalues` exactly as
:meth:`~neuroprobe.glm.contrast.ContrastResult.significant` decides it.

The two designs (cell-means models, saturated over their cells):

* :func:`task_vs_control` -- one run with task and control blocks, a boxcar for each
  (``BlockDesign.from_blocks(blocks)`` without baseline); contrast ``task - control``.
  With run ``i``'s cells T and C: ``D_i = mean_T - mean_C``, ``SS_i`` the two cells'
  within-cell sums of squares, ``df_i = n_T + n_C - 2`` and
  ``t = D_i / sqrt(SS_i / df_i * (1/n_T + 1/n_C))``.
* :func:`task_vs_other_tasks` -- a group of ``k`` runs of different tasks (e.g. the runs
  with the same run number) in one GLM: a boxcar per task, one control boxcar and run
  regressors; contrast ``task - mean(other tasks)``, which is ``D_i - mean_j D_j`` over
  the group's other runs, with the group's pooled ``SS`` and ``df = n_group - 2 k``.

Units whose pooled residual variance is zero (constant within every cell) get ``t = 0``
and are never significant.  Max-T needs the rows, which are not kept: use ``fit_glm``.

Examples
--------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> Y = torch.randn(48, 3, generator=g, dtype=torch.float64)   # 12 blocks of 4 rows
>>> task = torch.arange(48) // 4 % 2 == 0                       # task, control, task, ...
>>> Y[task, 0] += 2.0                                          # unit 0 prefers the task
>>> st = BlockStats.from_rows(Y, [4] * 12)
>>> cells = run_cells(st, task_blocks=[[0, 2, 4], [6, 8, 10]],
...                   control_blocks=[[1, 3, 5], [7, 9, 11]])    # two runs
>>> res = task_vs_control(cells)
>>> res.t.shape, res.df.tolist()
(torch.Size([2, 3]), [22, 22])
>>> res.significant(alpha=0.05, correction="bonferroni").tolist()
[[True, False, False], [True, False, False]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from scipy import stats
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import as_tensor, check_fraction, check_index_list
from neuroprobe.glm import pvalues as pv

__all__ = ["BlockStats", "RunCells", "BlockTTest", "run_cells", "task_vs_control",
           "task_vs_other_tasks"]


# ---------------------------------------------------------------------------------------
# per-block statistics
# ---------------------------------------------------------------------------------------
def _lengths(lengths) -> np.ndarray:
    """Rows per block as an int64 array: positive integers, refused otherwise (a float
    length would be truncated)."""
    if isinstance(lengths, (str, bytes)) or not hasattr(lengths, "__len__"):
        raise NeuroprobeError(
            f"lengths must be a sequence of positive ints (rows per block); got "
            f"{type(lengths).__name__} {lengths!r}."
        )
    lens = np.asarray(lengths)
    if lens.ndim != 1 or (lens.size and not np.issubdtype(lens.dtype, np.integer)):
        raise NeuroprobeError(
            f"lengths must be a 1-D sequence of ints (rows per block); got dtype {lens.dtype} "
            f"and shape {lens.shape}."
        )
    if lens.size and int(lens.min()) < 1:
        raise NeuroprobeError(
            f"every block needs at least one row; lengths has {int(lens.min())} at block "
            f"{int(np.argmin(lens))}."
        )
    return lens.astype(np.int64)


@dataclass(frozen=True, eq=False)
class BlockStats:
    """Per-block sufficient statistics of block-design time series ``Y [T, N]``.

    With ``mu`` a per-unit centre (the row-weighted mean of the block means), block ``b``
    with ``n_b`` rows, mean ``m_b`` and within-block sum of squares ``ss_b`` is kept as
    ``nm[b] = n_b (m_b - mu)`` and ``q[b] = ss_b + n_b (m_b - mu)^2`` (float64).  Sums of
    these over any set of blocks give that set's mean and sum of squares (centring first
    keeps float64 accurate), which is all an OLS fit of a design that is constant within
    blocks needs.

    Attributes
    ----------
    lengths : ndarray of int ``[B]``
        Rows (time points) per block.
    nm : Tensor ``[B, N]`` float64
        ``n_b (m_b - mu)``.
    q : Tensor ``[B, N]`` float64
        ``ss_b + n_b (m_b - mu)^2``.

    Examples
    --------
    >>> import torch
    >>> st = BlockStats.from_rows(torch.tensor([[1.0], [3.0], [5.0]], dtype=torch.float64),
    ...                           [2, 1])
    >>> st
    BlockStats(blocks=2, units=1, rows=3)
    >>> n, mean, ss = st.cells(np.array([0, 0]), 1)   # both blocks in one cell
    >>> n.tolist(), mean.tolist(), ss.tolist()
    ([3.0], [[0.0]], [[8.0]])
    """

    lengths: Int[np.ndarray, " block"]
    nm: Float[Tensor, "block unit"]
    q: Float[Tensor, "block unit"]

    def __post_init__(self) -> None:
        lengths = np.asarray(self.lengths)
        if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
            raise NeuroprobeError(
                f"lengths must be a 1-D int array (rows per block); got dtype "
                f"{lengths.dtype} and shape {lengths.shape}."
            )
        if lengths.size and int(lengths.min()) < 1:
            raise NeuroprobeError(
                f"every block needs at least one row; lengths has {int(lengths.min())} at "
                f"block {int(np.argmin(lengths))}."
            )
        B = lengths.shape[0]
        for name in ("nm", "q"):
            x = getattr(self, name)
            if not isinstance(x, Tensor) or x.dtype != torch.float64 or x.ndim != 2 \
                    or x.shape[0] != B:
                got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x)
                raise NeuroprobeError(
                    f"{name} must be a float64 tensor [blocks={B}, units]; got {got}."
                )
        if self.nm.shape != self.q.shape:
            raise NeuroprobeError(
                f"nm and q must have the same shape; got {tuple(self.nm.shape)} and "
                f"{tuple(self.q.shape)}."
            )
        object.__setattr__(self, "lengths", lengths)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_moments(
        cls,
        lengths: Int[np.ndarray, " block"] | Sequence[int],
        means: Float[Tensor, "block unit"],
        ss: Float[Tensor, "block unit"],
    ) -> BlockStats:
        """From each block's mean and its sum of squares about that mean.

        ``means`` is float64; ``ss`` any float dtype (it is converted to float64).

        Examples
        --------
        >>> import torch
        >>> st = BlockStats.from_moments([2, 2], torch.tensor([[0.0], [2.0]],
        ...                              dtype=torch.float64), torch.tensor([[1.0], [1.0]]))
        >>> st.nm.flatten().tolist(), st.q.flatten().tolist()
        ([-2.0, 2.0], [3.0, 3.0])
        """
        lens = _lengths(lengths)
        if not isinstance(means, Tensor) or means.dtype != torch.float64:
            raise NeuroprobeError(
                f"means must be a float64 tensor [blocks, units]; got "
                f"{getattr(means, 'dtype', type(means))}."
            )
        nt = torch.from_numpy(lens).double()[:, None]
        mu = (means * nt).sum(0) / nt.sum()
        centred = means - mu
        del means  # the caller's temporary is freed here when it was passed inline
        nm = centred * nt
        q = ss.double() + nm * centred
        return cls(lens, nm, q)

    @classmethod
    def from_rows(
        cls, Y: Float[Tensor, "time unit"], lengths: Int[np.ndarray, " block"] | Sequence[int],
    ) -> BlockStats:
        """From the rows of consecutive blocks (``lengths`` rows each, in order; float64).

        Examples
        --------
        >>> import torch
        >>> BlockStats.from_rows(torch.zeros(5, 2), [3, 2]).lengths.tolist()
        [3, 2]
        """
        lens = _lengths(lengths)
        Yd = as_tensor(Y, "Y").detach().to("cpu", torch.float64)
        if Yd.ndim != 2 or int(lens.sum()) != Yd.shape[0]:
            raise NeuroprobeError(
                f"Y must be [T, N] with T = sum(lengths) = {int(lens.sum())}; got shape "
                f"{tuple(Yd.shape)}."
            )
        if not bool(torch.isfinite(Yd).all()):
            bad = torch.nonzero(~torch.isfinite(Yd).all(0)).flatten()
            raise NeuroprobeError(
                f"Y contains NaN or inf in {bad.numel()} unit(s), first: {bad[:5].tolist()}; "
                "drop or impute them before computing block statistics."
            )
        block = torch.from_numpy(np.repeat(np.arange(lens.size), lens))
        n = torch.from_numpy(lens).double()[:, None]
        sums = torch.zeros(lens.size, Yd.shape[1], dtype=torch.float64).index_add_(0, block, Yd)
        means = sums / n
        dev = (Yd - means[block]).square()
        ss = torch.zeros_like(sums).index_add_(0, block, dev)
        return cls.from_moments(lens, means, ss)

    # ---- views --------------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.nm.shape[1])

    def __getitem__(self, blocks: slice) -> BlockStats:
        """The statistics of a contiguous range of blocks (views, no copy)."""
        if not isinstance(blocks, slice):
            raise NeuroprobeError(
                f"BlockStats can be sliced by a range of blocks (st[lo:hi]); got "
                f"{type(blocks).__name__}."
            )
        return BlockStats(self.lengths[blocks], self.nm[blocks], self.q[blocks])

    def cells(
        self, cell_of: Int[np.ndarray, " block"], n_cells: int,
    ) -> tuple[Float[np.ndarray, " cell"], Float[Tensor, "cell unit"],
               Float[Tensor, "cell unit"]]:
        """Rows ``n [C]``, centred mean ``[C, N]`` and sum of squares about the cell mean
        ``[C, N]`` of every cell; ``cell_of[b]`` is block ``b``'s cell (``-1``: unused)."""
        cell_of = np.asarray(cell_of)
        if cell_of.shape != (self.n_blocks,):
            raise NeuroprobeError(
                f"cell_of must have one entry per block ({self.n_blocks}); got shape "
                f"{cell_of.shape}."
            )
        use = cell_of >= 0
        idx = torch.from_numpy(np.where(use, cell_of, n_cells))
        N = self.nm.shape[1]
        NM = torch.zeros(n_cells + 1, N, dtype=torch.float64).index_add_(0, idx, self.nm)
        Q = torch.zeros(n_cells + 1, N, dtype=torch.float64).index_add_(0, idx, self.q)
        n = np.bincount(np.where(use, cell_of, n_cells), weights=self.lengths,
                        minlength=n_cells + 1)[:n_cells]
        nt = torch.from_numpy(np.maximum(n, 1))[:, None]
        NM, Q = NM[:n_cells], Q[:n_cells]
        SS = (Q - NM * NM / nt).clamp_min_(0)
        return n, NM / nt, SS

    def __repr__(self) -> str:
        return (f"BlockStats(blocks={self.n_blocks}, units={self.n_units}, "
                f"rows={int(self.lengths.sum())})")


# ---------------------------------------------------------------------------------------
# runs: one task cell and one control cell each
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RunCells:
    """The task and control cells of block-design runs (one of each per run).

    Attributes
    ----------
    n_task, n_control : ndarray ``[R]`` float64
        Rows in the run's task blocks and control blocks.
    difference : Tensor ``[R, N]`` float64
        Task mean minus control mean, per run and unit.
    ss : Tensor ``[R, N]`` float64
        Within-cell sum of squares of the run's two cells (the run's residual SS).
    """

    n_task: Float[np.ndarray, " run"]
    n_control: Float[np.ndarray, " run"]
    difference: Float[Tensor, "run unit"]
    ss: Float[Tensor, "run unit"]

    @property
    def n_runs(self) -> int:
        return int(self.n_task.shape[0])

    def __repr__(self) -> str:
        return f"RunCells(runs={self.n_runs}, units={int(self.difference.shape[1])})"


def run_cells(
    stats: BlockStats,
    task_blocks: Sequence[Sequence[int]],
    control_blocks: Sequence[Sequence[int]],
) -> RunCells:
    """Sum the blocks of every run into its task cell and its control cell.

    Parameters
    ----------
    stats : BlockStats
        Statistics of every block (blocks are numbered as in ``stats``).
    task_blocks, control_blocks : sequence of sequences of int
        For every run, the indices of its task blocks and of its control blocks.  A block
        belongs to at most one run.

    Returns
    -------
    RunCells

    Examples
    --------
    >>> import torch
    >>> st = BlockStats.from_rows(torch.arange(8.0)[:, None], [2, 2, 2, 2])
    >>> cells = run_cells(st, [[0, 2]], [[1, 3]])
    >>> cells.n_task.tolist(), cells.difference.tolist()
    ([4.0], [[-2.0]])
    """
    for nm, v in (("task_blocks", task_blocks), ("control_blocks", control_blocks)):
        if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
            raise NeuroprobeError(
                f"{nm} must be a list with one list of block indices per run; got "
                f"{type(v).__name__} {v!r}."
            )
    if len(task_blocks) != len(control_blocks) or not len(task_blocks):
        raise NeuroprobeError(
            f"task_blocks and control_blocks need one entry per run (at least one run); got "
            f"{len(task_blocks)} and {len(control_blocks)}."
        )
    runs = [(np.asarray(check_index_list(tb, f"task_blocks[{i}]", allow_empty=True),
                        dtype=np.int64),
             np.asarray(check_index_list(cb, f"control_blocks[{i}]", allow_empty=True),
                        dtype=np.int64))
            for i, (tb, cb) in enumerate(zip(task_blocks, control_blocks, strict=True))]
    for i, (tb, cb) in enumerate(runs):
        if tb.size == 0 or cb.size == 0:
            raise NeuroprobeError(
                f"run {i} has {tb.size} task and {cb.size} control blocks; every run needs "
                "both to contrast them."
            )
    every = np.concatenate([b for run in runs for b in run])
    if int(every.min()) < 0 or int(every.max()) >= stats.n_blocks:
        raise NeuroprobeError(
            f"block indices must lie in [0, {stats.n_blocks}); got {int(every.min())} .. "
            f"{int(every.max())}."
        )
    if np.unique(every).size != every.size:
        raise NeuroprobeError("a block is listed twice; every block belongs to one cell.")
    lo, hi = int(every.min()), int(every.max()) + 1
    cell_of = np.full(hi - lo, -1)
    for i, (tb, cb) in enumerate(runs):
        cell_of[tb - lo] = 2 * i
        cell_of[cb - lo] = 2 * i + 1
    n, M, SS = stats[lo:hi].cells(cell_of, 2 * len(runs))
    return RunCells(n_task=n[0::2], n_control=n[1::2], difference=M[0::2] - M[1::2],
                    ss=SS[0::2] + SS[1::2])


# ---------------------------------------------------------------------------------------
# t contrasts
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class BlockTTest:
    """A t contrast for every run and unit (p is the one-sided upper tail, as in
    :class:`~neuroprobe.glm.contrast.ContrastResult`).

    Attributes
    ----------
    contrast : str
        What was tested (``"task - control"``, ``"task - mean(other tasks)"``).
    t : Tensor ``[R, N]`` float64
        The t statistic (0 for units with zero residual variance).
    df : ndarray of int ``[R]``
        Residual degrees of freedom of each run's GLM.
    constant : Tensor ``[R, N]`` bool
        Units with zero residual variance (never significant).
    """

    contrast: str
    t: Float[Tensor, "run unit"]
    df: Int[np.ndarray, " run"]
    constant: Bool[Tensor, "run unit"]

    @cached_property
    def p(self) -> Float[Tensor, "run unit"]:
        """One-sided upper-tail p; 1 for constant units."""
        p = stats.t.sf(self.t.numpy(), self.df[:, None])
        p[self.constant.numpy()] = 1.0
        return torch.from_numpy(p)

    def significant(self, alpha: float = 0.05,
                    correction: str = "bonferroni") -> Bool[Tensor, "run unit"]:
        """Which units are significant in each run, correcting over the run's ``N`` units.

        Parameters
        ----------
        alpha : float in (0, 1)
        correction : {"bonferroni", "holm", "fdr_bh", "none"}
            As :meth:`~neuroprobe.glm.contrast.ContrastResult.significant` (the same
            :func:`~neuroprobe.glm.pvalues.reject` rule; constant units count with p = 1).

        Returns
        -------
        BoolTensor ``[R, N]``
        """
        alpha = check_fraction(alpha, "alpha")
        if correction not in pv.CORRECTIONS:
            raise NeuroprobeError(
                f"correction must be one of {pv.CORRECTIONS}; got {correction!r}. (max_t "
                "permutes rows, which per-block statistics do not keep: use fit_glm.)"
            )
        # constant units enter the family with p = 1 (t = -inf), as in ContrastResult
        t = self.t.masked_fill(self.constant, -np.inf).numpy()
        mask = torch.from_numpy(pv.reject_t(t, self.df, alpha, correction))
        return mask & ~self.constant

    def __repr__(self) -> str:
        return (f"BlockTTest({self.contrast!r}, runs={self.t.shape[0]}, "
                f"units={self.t.shape[1]}, df={self.df.tolist()})")


def _t_test(contrast: str, effect: Tensor, var_factor: np.ndarray, ss: Tensor,
            df: np.ndarray) -> BlockTTest:
    """t for effects ``[R, N]`` with variance ``sigma^2 var_factor [R]``, ``sigma^2`` the
    pooled residual sum of squares ``ss [R, N]`` over ``df [R]``."""
    if df.size and int(df.min()) < 1:
        r = int(np.argmin(df))
        raise NeuroprobeError(
            f"run {r} of the {contrast!r} test has {int(df[r])} residual degrees of freedom: "
            "its cells have too few rows to estimate a variance. Give every run more rows "
            "(longer or more blocks)."
        )
    dft = torch.from_numpy(df.astype(np.float64))[:, None]
    vft = torch.from_numpy(np.asarray(var_factor, dtype=np.float64))[:, None]
    sigma2 = ss / dft
    const = sigma2 <= 1e-24 * (1.0 + effect.abs())
    t = effect / torch.sqrt(sigma2 * vft)
    t = t.masked_fill_(const, 0.0)
    return BlockTTest(contrast, t, df, const)


def task_vs_control(cells: RunCells) -> BlockTTest:
    """``task - control`` in every run's own GLM (task and control boxcars).

    Same t as ``fit_glm(Y_run, BlockDesign.from_blocks(blocks)).contrast("task -
    control")`` on the run's rows.

    Examples
    --------
    >>> import torch
    >>> Y = torch.tensor([[3.0], [3.2], [0.1], [0.0], [2.9], [3.1], [-0.1], [0.2]],
    ...                  dtype=torch.float64)
    >>> res = task_vs_control(run_cells(BlockStats.from_rows(Y, [2, 2, 2, 2]),
    ...                                 [[0, 2]], [[1, 3]]))
    >>> round(float(res.t[0, 0]), 3), res.df.tolist()
    (32.863, [6])
    """
    nt, nc = cells.n_task, cells.n_control
    v = 1 / nt + 1 / nc
    return _t_test("task - control", cells.difference, v, cells.ss,
                   (nt + nc - 2).astype(np.int64))


def task_vs_other_tasks(cells: RunCells, groups: Sequence[int]) -> BlockTTest:
    """``task - mean(other tasks)`` in one GLM per group of runs.

    The runs of a group (``groups[i]`` is run ``i``'s group, e.g. its run number) are of
    different tasks and are fitted together: a boxcar per task, one control boxcar and run
    regressors (``BlockDesign.from_blocks`` of the group's blocks, labelled by run).  Each
    run's contrast weighs its own task +1 and the group's other tasks ``-1/(k-1)``.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(1)
    >>> st = BlockStats.from_rows(torch.randn(12, 2, generator=g, dtype=torch.float64),
    ...                           [2] * 6)
    >>> cells = run_cells(st, [[0], [2], [4]], [[1], [3], [5]])   # three tasks, one group
    >>> res = task_vs_other_tasks(cells, groups=[0, 0, 0])
    >>> res.df.tolist()
    [6, 6, 6]
    """
    rn = np.asarray(groups)
    R = cells.n_runs
    if rn.shape != (R,):
        raise NeuroprobeError(f"groups needs one entry per run ({R}); got shape {rn.shape}.")
    nt, nc = cells.n_task, cells.n_control
    v = 1 / nt + 1 / nc
    # W @ D with W[i, i] = 1, W[i, j] = -1/(k-1) for the other runs j of i's group
    same = (rn[:, None] == rn[None, :]).astype(np.float64)
    k = same.sum(1)
    W = np.where(np.eye(R, dtype=bool), 1.0, -same / np.maximum(k - 1, 1)[:, None])
    eff = torch.from_numpy(W) @ cells.difference
    vf = v + (same - np.eye(R)) @ v / np.maximum(k - 1, 1) ** 2
    ss_g = torch.from_numpy(same) @ cells.ss
    df_g = (same @ (nt + nc) - 2 * k).astype(np.int64)
    return _t_test("task - mean(other tasks)", eff, vf, ss_g, df_g)
