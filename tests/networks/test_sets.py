"""Tests of neuroprobe.networks.sets: set algebra, Dice/Jaccard, overlap, templates, prediction
(single, leave-one-run-out, confusion counts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import distance

from neuroprobe import NeuroprobeError
from neuroprobe.core.units import UnitIndex
from neuroprobe.networks.sets import (
    FunctionalNetwork,
    LeaveOneRunOut,
    confusion_matrix,
    consensus,
    dice,
    jaccard,
    leave_one_run_out,
    overlap_matrix,
    predict_task,
    shared_core,
    templates,
)

TASKS = ("a", "b", "c", "d")


def planted(n_runs=5, n_units=400, n_core=20, n_spec=30, flip=0.02, seed=0):
    """Networks where units [core] belong to every task, units of block k to task k,
    and each run adds / drops a few random units."""
    rng = np.random.default_rng(seed)
    truth = {}
    for k, t in enumerate(TASKS):
        m = np.zeros(n_units, bool)
        m[:n_core] = True
        m[n_core + k * n_spec : n_core + (k + 1) * n_spec] = True
        truth[t] = m
    nets = []
    for t in TASKS:
        for r in range(n_runs):
            noise = rng.random(n_units) < flip
            nets.append(FunctionalNetwork(torch.from_numpy(truth[t] ^ noise), task=t, run=r))
    return truth, nets


def test_dice_jaccard_match_scipy():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.random(50) < 0.3, rng.random(50) < 0.5
        assert dice(a, b) == pytest.approx(1 - distance.dice(a, b))
        assert jaccard(a, b) == pytest.approx(1 - distance.jaccard(a, b))
    z = np.zeros(5, bool)
    assert np.isnan(dice(z, z)) and np.isnan(jaccard(z, z))
    assert dice(z, ~z) == 0.0


def test_set_algebra_and_tables():
    ui = UnitIndex.from_hooks({"blocks.0.hook_mlp_out": 4, "blocks.1.hook_mlp_out": 4})
    a = FunctionalNetwork(torch.tensor([1, 1, 0, 0, 1, 0, 0, 0]).bool(), ui, task="x", run=0)
    b = FunctionalNetwork(torch.tensor([0, 1, 1, 0, 1, 1, 0, 0]).bool(), ui, task="x", run=1)
    am, bm = a.mask.numpy(), b.mask.numpy()
    assert (a & b).mask.numpy().tolist() == (am & bm).tolist()
    assert (a | b).mask.numpy().tolist() == (am | bm).tolist()
    assert (a - b).mask.numpy().tolist() == (am & ~bm).tolist()
    assert (a ^ b).mask.numpy().tolist() == (am ^ bm).tolist()
    assert (a & b).task == "x"
    df = a.to_dataframe()
    assert df["column"].tolist() == [0, 1, 4]
    assert df["hook"].tolist() == ["blocks.0.hook_mlp_out"] * 2 + ["blocks.1.hook_mlp_out"]
    bl = a.by_layer()
    assert bl["n_units"].tolist() == [2, 1] and bl["n_total"].tolist() == [4, 4]
    assert "3/8" in repr(a)
    # inputs are not aliased
    m = torch.zeros(3, dtype=torch.bool)
    n = FunctionalNetwork(m)
    m[0] = True
    assert n.size == 0


def test_bad_networks():
    with pytest.raises(NeuroprobeError, match="mask has 3 entries but units has 8"):
        FunctionalNetwork(torch.zeros(3).bool(), UnitIndex.from_hooks({"h": 8}))
    with pytest.raises(NeuroprobeError, match="must be boolean"):
        FunctionalNetwork(torch.tensor([0.5, 1.0]))
    with pytest.raises(NeuroprobeError, match="different unit sets: 3 vs 4"):
        FunctionalNetwork(torch.zeros(3).bool()) & torch.zeros(4).bool()
    with pytest.raises(NeuroprobeError, match="min_runs must be between 1 and"):
        consensus([FunctionalNetwork(torch.zeros(3).bool())] * 2, min_runs=3)
    with pytest.raises(NeuroprobeError, match="has no task"):
        templates([FunctionalNetwork(torch.zeros(3).bool())])


def test_overlap_matrix_equals_pairwise_loop_and_separates_tasks():
    _, nets = planted()
    om = overlap_matrix(nets)
    k = len(nets)
    for i in range(k):
        for j in range(k):
            assert om.values[i, j] == pytest.approx(dice(nets[i], nets[j]))
    oj = overlap_matrix(nets, metric="jaccard")
    assert oj.values[0, 7] == pytest.approx(jaccard(nets[0], nets[7]))
    # within-task pairs: same task different run; reference from explicit loops
    within = [dice(nets[i], nets[j]) for i in range(k) for j in range(i + 1, k)
              if nets[i].task == nets[j].task]
    across = [dice(nets[i], nets[j]) for i in range(k) for j in range(i + 1, k)
              if nets[i].task != nets[j].task]
    assert om.within_task_mean == pytest.approx(np.mean(within))
    assert om.across_task_mean == pytest.approx(np.mean(across))
    assert om.within_task_mean > 0.7 > 0.45 > om.across_task_mean
    tm = om.task_means()
    assert tm.shape == (4, 4) and np.all(np.diag(tm.values) > tm.values[0, 1])


def test_templates_and_shared_core_recover_planted_sets_exactly():
    truth, nets = planted(n_runs=7, flip=0.03)
    tm = templates(nets)  # majority of 7 runs removes the independent flips
    for t in TASKS:
        np.testing.assert_array_equal(tm[t].mask.numpy(), truth[t])
    core = shared_core(tm)
    expect = np.logical_and.reduce([truth[t] for t in TASKS])
    np.testing.assert_array_equal(core.mask.numpy(), expect)
    assert core.size == 20
    # consensus reference: count loop
    M = np.stack([n.mask.numpy() for n in nets if n.task == "a"])
    for k in (1, 4, 7):
        np.testing.assert_array_equal(
            consensus([n for n in nets if n.task == "a"], min_runs=k).mask.numpy(),
            M.sum(0) >= k,
        )


def test_prediction_recovers_planted_tasks_and_null_is_chance():
    truth, nets = planted(n_runs=6, flip=0.05, seed=2)
    train = [n for n in nets if n.run < 5]
    test = [n for n in nets if n.run == 5]
    pred = predict_task(test, templates(train))
    assert pred.predicted == tuple(TASKS) and pred.accuracy == 1.0
    # score = |R ∩ T| / |T|, checked against a direct computation
    tm = templates(train)
    for i, r in enumerate(test):
        for j, t in enumerate(pred.tasks):
            ref = (r.mask & tm[t].mask).sum().item() / tm[t].mask.sum().item()
            assert pred.scores[i, j] == pytest.approx(ref)
    cm = pred.confusion()
    assert np.trace(cm.values) == 4 and cm.values.sum() == 4
    assert list(pred.to_dataframe().columns[:4]) == ["network", "true", "predicted", "correct"]
    # networks with no task information: accuracy averages to chance over many shuffles
    rng = np.random.default_rng(0)
    accs = []
    for _ in range(200):
        core_only = [FunctionalNetwork(torch.from_numpy(rng.random(400) < 0.1), task=t, run=9)
                     for t in TASKS]
        accs.append(predict_task(core_only, tm).accuracy)
    assert abs(np.mean(accs) - 0.25) < 0.06


def test_prediction_reports_empty_templates_and_empty_networks():
    z = torch.zeros(6, dtype=torch.bool)
    tm = {"a": FunctionalNetwork(z, task="a"),
          "b": FunctionalNetwork(torch.tensor([1, 1, 0, 0, 0, 0]).bool(), task="b")}
    pred = predict_task([FunctionalNetwork(z, task="a", run=0),
                         FunctionalNetwork(torch.tensor([1, 0, 0, 0, 0, 0]).bool(), task="b",
                                           run=0)], tm)
    assert np.isnan(pred.scores[:, 0]).all()
    assert pred.predicted == (None, "b") and pred.accuracy == 0.5
    assert any("empty template" in n for n in pred.notes)
    assert any("activate no template unit" in n for n in pred.notes)
    assert "none" in pred.confusion().columns
    with pytest.raises(NeuroprobeError, match="non-empty dict task"):
        predict_task([FunctionalNetwork(z)], {})


def test_confusion_matrix_sums_predictions_and_marks_unpredicted():
    m = lambda *v: torch.tensor(v).bool()  # noqa: E731
    tm = {"a": FunctionalNetwork(m(1, 1, 0, 0), task="a"),
          "b": FunctionalNetwork(m(0, 0, 1, 1), task="b")}
    p1 = predict_task([FunctionalNetwork(m(1, 0, 0, 0), task="a"),
                       FunctionalNetwork(m(1, 1, 0, 1), task="b")], tm)
    p2 = predict_task([FunctionalNetwork(m(0, 0, 0, 0), task="b")], tm)
    cm = confusion_matrix([p1, p2])
    assert list(cm.index) == ["a", "b"] and list(cm.columns) == ["a", "b", "none"]
    assert cm.values.tolist() == [[1, 0, 0], [1, 0, 1]]
    # the same counts as summing each prediction's own confusion (a plain loop)
    ref = p1.confusion().reindex(columns=cm.columns, fill_value=0) + p2.confusion()
    assert ref.values.tolist() == cm.values.tolist()
    assert confusion_matrix([p1]).equals(p1.confusion())
    assert list(confusion_matrix([p1]).columns) == ["a", "b"]  # no "none" without one
    empty = confusion_matrix([], tasks=["a", "b"])
    assert empty.values.tolist() == [[0, 0], [0, 0]]
    p3 = predict_task([FunctionalNetwork(m(0, 0, 1, 1), task="b")], tm)
    with pytest.raises(NeuroprobeError, match="predicted as 'b', which is not among tasks"):
        confusion_matrix([p3], tasks=["a"])


def test_leave_one_run_out_equals_a_plain_loop_and_shuffled_labels_are_chance():
    truth, nets = planted(n_runs=5, flip=0.05, seed=3)
    loo = leave_one_run_out(nets)
    assert isinstance(loo, LeaveOneRunOut) and loo.runs == (0, 1, 2, 3, 4)
    for held, pred in zip(loo.runs, loo.predictions, strict=True):  # the plain loop
        ref = predict_task([n for n in nets if n.run == held],
                           templates([n for n in nets if n.run != held]))
        assert pred.predicted == ref.predicted
        np.testing.assert_array_equal(pred.scores, ref.scores)
    assert loo.accuracy == 1.0 and "5 folds" in repr(loo)
    assert np.trace(loo.confusion().values) == 4 * 5
    # the null: masks permuted across the training labels, one permutation per fold
    null = leave_one_run_out(nets, shuffle=7)
    rng = np.random.default_rng(7)
    for held, pred in zip(null.runs, null.predictions, strict=True):
        train = [n for n in nets if n.run != held]
        perm = rng.permutation(len(train))
        shuffled = [FunctionalNetwork(train[j].mask, task=train[i].task, run=train[i].run)
                    for i, j in enumerate(perm)]
        ref = predict_task([n for n in nets if n.run == held], templates(shuffled))
        assert pred.predicted == ref.predicted
    assert null.shuffled and leave_one_run_out(nets, shuffle=7).accuracy == null.accuracy
    accs = [leave_one_run_out(nets, shuffle=s).accuracy for s in range(40)]
    assert abs(np.mean(accs) - 0.25) < 0.1
    assert leave_one_run_out(nets, min_runs=4).predictions[0].tasks == TASKS


def test_leave_one_run_out_bad_input():
    _, nets = planted(n_runs=2)
    with pytest.raises(NeuroprobeError, match="needs a task and a run"):
        leave_one_run_out(nets + [FunctionalNetwork(nets[0].mask, task="a")])
    with pytest.raises(NeuroprobeError, match="at least 2 runs; got runs \\[0\\]"):
        leave_one_run_out([n for n in nets if n.run == 0])
