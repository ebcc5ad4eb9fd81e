"""Tests of neuroprobe.glm.blocks, the block-design fast path.

* fast vs slow: t and p of task_vs_control / task_vs_other_tasks equal fit_glm on the
  concatenated rows of the same runs (1e-10), and so do the significance decisions of every
  correction;
* reference values: nilearn's run_glm + compute_contrast on the same designs;
* the rejection rule of the Bonferroni shortcut (critical t) equals pvalues.reject on p,
  also for t values at the critical value;
* planted structure, bad input, jaxtyping shapes checked at runtime.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.glm import pvalues as pv
from neuroprobe.glm.blocks import (
    BlockStats,
    BlockTTest,
    RunCells,
    run_cells,
    task_vs_control,
    task_vs_other_tasks,
)

N_UNITS = 60
TASKS = ("a", "b", "c")


def _rel(a, b):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float).reshape(a.shape)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


@pytest.fixture(scope="module")
def case():
    """Three tasks x two runs; each run 4 task + 4 control blocks of 2-7 rows in alternating
    order; units with an offset, noise, and task effects on the first units."""
    rng = np.random.default_rng(0)
    lengths, runs = [], []  # runs: (task, run, task block ids, control block ids)
    for r in range(2):
        for task in TASKS:
            tb, cb = [], []
            for _ in range(4):
                for kind in ("task", "control") if rng.integers(2) else ("control", "task"):
                    (tb if kind == "task" else cb).append(len(lengths))
                    lengths.append(int(rng.integers(2, 8)))
            runs.append((task, r, tb, cb))
    lengths = np.asarray(lengths)
    task_of = {}
    for task, _, tb, _ in runs:
        for b in tb:
            task_of[b] = task
    rows = []
    for b, n in enumerate(lengths):
        y = 3.0 + rng.standard_normal((n, N_UNITS))
        if b in task_of:
            y[:, :10] += 1.5  # every task
            k = TASKS.index(task_of[b])
            y[:, 10 + 5 * k : 15 + 5 * k] += 2.0  # this task only
        rows.append(y)
    Y = torch.from_numpy(np.concatenate(rows))
    starts = np.r_[0, np.cumsum(lengths)]
    return dict(Y=Y, lengths=lengths, runs=runs, starts=starts,
                stats=BlockStats.from_rows(Y, lengths))


def _rows_and_blocks(case, group):
    """Rows and BlockDesign blocks of the runs in ``group`` (labelled by position)."""
    Y, starts = case["Y"], case["starts"]
    ys, blocks = [], []
    for j, (task, _, tb, cb) in enumerate(group):
        for b in sorted(tb + cb):
            ys.append(Y[starts[b] : starts[b + 1]])
            blocks.append((task if b in tb else "control", int(starts[b + 1] - starts[b]), j))
    return torch.cat(ys), npb.BlockDesign.from_blocks(blocks)


def _cells(case):
    runs = case["runs"]
    return run_cells(case["stats"], [r[2] for r in runs], [r[3] for r in runs])


def test_task_vs_control_equals_fit_glm(case):
    res = task_vs_control(_cells(case))
    assert isinstance(res, BlockTTest) and res.t.shape == (len(case["runs"]), N_UNITS)
    for i, run in enumerate(case["runs"]):
        Y, d = _rows_and_blocks(case, [run])
        con = npb.fit_glm(Y, d).contrast(f"{run[0]} - control")
        assert res.df[i] == con.df
        assert _rel(res.t[i], con.t) < 1e-10
        assert _rel(res.p[i], con.p) < 1e-10
        for corr, alpha in (("bonferroni", 0.05), ("holm", 0.05), ("fdr_bh", 0.05),
                            ("none", 0.001)):
            np.testing.assert_array_equal(res.significant(alpha, corr)[i].numpy(),
                                          con.significant(alpha, corr).numpy())
    assert 0 < int(res.significant().sum()) < res.t.numel()  # not vacuous


def test_task_vs_other_tasks_equals_fit_glm(case):
    runs = case["runs"]
    res = task_vs_other_tasks(_cells(case), groups=[r[1] for r in runs])
    for i, run in enumerate(runs):
        group = [g for g in runs if g[1] == run[1]]
        Y, d = _rows_and_blocks(case, group)
        cols = list(d.matrix.columns)
        c = np.zeros(len(cols))
        c[cols.index(run[0])] = 1.0
        for other in TASKS:
            if other != run[0]:
                c[cols.index(other)] = -0.5
        con = npb.fit_glm(Y, d).contrast(c)
        assert res.df[i] == con.df
        assert _rel(res.t[i], con.t) < 1e-10
        assert _rel(res.p[i], con.p) < 1e-10
        for corr in ("bonferroni", "holm", "fdr_bh"):
            np.testing.assert_array_equal(res.significant(0.05, corr)[i].numpy(),
                                          con.significant(0.05, corr).numpy())
    # the task-specific units of each task, and not the shared ones
    sig = res.significant().numpy()
    k = TASKS.index(runs[0][0])
    assert sig[0, 10 + 5 * k : 15 + 5 * k].all() and not sig[0, :10].any()


def test_matches_nilearn(case):
    from nilearn.glm.contrasts import compute_contrast
    from nilearn.glm.first_level.first_level import run_glm

    runs = case["runs"]
    vs = task_vs_control(_cells(case))
    spec = task_vs_other_tasks(_cells(case), groups=[r[1] for r in runs])
    Y, d = _rows_and_blocks(case, [runs[0]])
    X = d.matrix
    labels, results = run_glm(Y.numpy(), X.to_numpy(), noise_model="ols")
    c = np.where(X.columns == runs[0][0], 1.0, np.where(X.columns == "control", -1.0, 0.0))
    ref = compute_contrast(labels, results, c)
    assert _rel(vs.t[0], ref.stat()) < 1e-10
    assert _rel(vs.p[0], ref.p_value()) < 1e-9
    group = [g for g in runs if g[1] == 0]
    Y, d = _rows_and_blocks(case, group)
    X = d.matrix
    labels, results = run_glm(Y.numpy(), X.to_numpy(), noise_model="ols")
    c = np.array([1.0 if col == runs[0][0] else -0.5 if col in TASKS else 0.0
                  for col in X.columns])
    ref = compute_contrast(labels, results, c)
    assert _rel(spec.t[0], ref.stat()) < 1e-10
    assert _rel(spec.p[0], ref.p_value()) < 1e-9


def test_block_stats_from_moments_and_cells(case):
    Y, lengths, starts = case["Y"], case["lengths"], case["starts"]
    means = torch.stack([Y[a:b].mean(0) for a, b in zip(starts[:-1], starts[1:], strict=True)])
    ss = torch.stack([((Y[a:b] - Y[a:b].mean(0)) ** 2).sum(0)
                      for a, b in zip(starts[:-1], starts[1:], strict=True)])
    st = BlockStats.from_moments(lengths, means, ss)
    torch.testing.assert_close(st.nm, case["stats"].nm, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(st.q, case["stats"].q, rtol=1e-12, atol=1e-10)
    # a cell of blocks 1, 4, 5: its mean (about the centre) and sum of squares
    cell_of = np.full(len(lengths), -1)
    cell_of[[1, 4, 5]] = 0
    n, mean, ss_cell = st.cells(cell_of, 1)
    rows = torch.cat([Y[starts[b] : starts[b + 1]] for b in (1, 4, 5)])
    mu = (means * torch.from_numpy(lengths)[:, None]).sum(0) / lengths.sum()
    assert n.tolist() == [float(rows.shape[0])]
    torch.testing.assert_close(mean[0], rows.mean(0) - mu, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ss_cell[0], ((rows - rows.mean(0)) ** 2).sum(0), rtol=1e-10,
                               atol=1e-10)
    assert st[2:5].n_blocks == 3 and "blocks=3" in repr(st[2:5])


def test_reject_t_equals_reject_of_p_also_at_the_critical_value():
    rng = np.random.default_rng(1)
    df = np.array([7, 40, 300])
    t = rng.standard_normal((3, 500)) * 3
    level = 0.05 / 500
    crit = stats.t.isf(level, df)
    t[:, :4] = crit[:, None] * np.array([1 - 1e-15, 1.0, 1 + 1e-15, 1 + 1e-9])
    t[:, 4] = -np.inf
    for method, alpha in (("bonferroni", 0.05), ("none", 0.05), ("holm", 0.05),
                          ("fdr_bh", 0.2)):
        want = np.stack([pv.reject(stats.t.sf(row, d), alpha, method)
                         for row, d in zip(t, df, strict=True)])
        np.testing.assert_array_equal(pv.reject_t(t, df, alpha, method), want)
    assert pv.reject_t(t, df, 0.05, "bonferroni")[:, 5:].any()  # not vacuous


def test_constant_units_are_never_significant():
    Y = torch.zeros(16, 3, dtype=torch.float64)
    Y[:, 1] = torch.arange(16.0) % 3
    Y[0:4, 2] = Y[8:12, 2] = 5.0  # constant within each cell, different between the cells
    res = task_vs_control(run_cells(BlockStats.from_rows(Y, [4] * 4), [[0, 2]], [[1, 3]]))
    assert res.constant[0].tolist() == [True, False, True]
    assert res.t[0, 0] == 0 and res.p[0, 0] == 1 and res.p[0, 2] == 1
    for corr in ("bonferroni", "holm", "fdr_bh", "none"):
        assert not res.significant(0.5, corr)[0, [0, 2]].any()


def test_bad_input(case):
    st = case["stats"]
    with pytest.raises(NeuroprobeError, match="one entry per run"):
        run_cells(st, [[0]], [])
    with pytest.raises(NeuroprobeError, match="run 0 has 1 task and 0 control blocks"):
        run_cells(st, [[0]], [[]])
    with pytest.raises(NeuroprobeError, match=r"block indices must lie in \[0, 48\)"):
        run_cells(st, [[0]], [[99]])
    with pytest.raises(NeuroprobeError, match="a block is listed twice"):
        run_cells(st, [[0, 1]], [[1]])
    with pytest.raises(NeuroprobeError, match="groups needs one entry per run"):
        task_vs_other_tasks(_cells(case), groups=[0, 1])
    with pytest.raises(NeuroprobeError, match="correction must be one of .* use fit_glm"):
        task_vs_control(_cells(case)).significant(0.05, "max_t")
    with pytest.raises(NeuroprobeError, match="alpha"):
        task_vs_control(_cells(case)).significant(1.5)
    with pytest.raises(NeuroprobeError, match=r"Y must be \[T, N\] with T = sum\(lengths\)"):
        BlockStats.from_rows(torch.zeros(5, 2), [2, 2])
    with pytest.raises(NeuroprobeError, match="every block needs at least one row"):
        BlockStats(np.array([1, 0]), torch.zeros(2, 1, dtype=torch.float64),
                   torch.zeros(2, 1, dtype=torch.float64))
    with pytest.raises(NeuroprobeError, match=r"nm must be a float64 tensor \[blocks=2"):
        BlockStats(np.array([1, 1]), torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.float64))
    with pytest.raises(NeuroprobeError, match="means must be a float64 tensor"):
        BlockStats.from_moments([1], torch.zeros(1, 1), torch.zeros(1, 1))
    with pytest.raises(NeuroprobeError, match="cell_of must have one entry per block"):
        st.cells(np.zeros(3, int), 1)
    with pytest.raises(NeuroprobeError, match="sliced by a range of blocks"):
        st[3]


def test_shapes_are_checked_at_runtime(case):
    """The jaxtyping annotations hold (checked with beartype) on real calls."""
    from beartype import beartype
    from jaxtyping import jaxtyped

    import neuroprobe.glm.blocks as blocks
    import neuroprobe.glm.design as design

    check = lambda f: jaxtyped(typechecker=beartype)(f)  # noqa: E731
    runs = case["runs"]
    st = check(BlockStats.from_rows.__func__)(BlockStats, case["Y"], case["lengths"])
    cells = check(blocks.run_cells)(st, [r[2] for r in runs], [r[3] for r in runs])
    assert isinstance(cells, RunCells)
    check(blocks.task_vs_control)(cells)
    check(blocks.task_vs_other_tasks)(cells, [r[1] for r in runs])
    check(BlockStats.cells)(st, np.zeros(st.n_blocks, dtype=np.int64), 1)
    d = npb.BlockDesign.from_blocks([("a", 3), ("b", 3)] * 2, baseline="b")
    X, cols = check(design.as_design_matrix)(d, 12)
    check(design.check_rank)(X, cols)
    check(design.block_segments)(X, cols)
    with pytest.raises(Exception, match="(?i)type-check|shape|dimension"):
        check(design.check_rank)(X[0], cols)
