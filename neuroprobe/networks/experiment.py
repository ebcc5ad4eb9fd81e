"""Whole experiments as one call.

:func:`functional_networks` reproduces the functional-network experiment of
arXiv:2311.10898 (block design, mass-univariate GLM per unit, Bonferroni, overlap of
networks within vs across tasks, consensus templates, task prediction on held-out runs and
on held-out prompts) on any model with hook points, and returns a
:class:`FunctionalNetworksResult` that writes ``results.json``, figures and an HTML report.

How the runs are built (and why it is cheap to redo them many times): every stimulus --
each task prompt of sets A and B and its token-length-matched random-word control -- is
run through the model *once* and reduced to per-stimulus sufficient statistics (number of
rows, mean, sum of squares about the mean).  A run is a sequence of stimuli in block order
(task, control, task, control, ...); because every regressor of these designs is constant
within a block, a run's OLS fit depends on its rows only through those statistics, so
random re-partitions of the prompts into runs ("splits") cost a segment sum each, not a
forward pass (:mod:`neuroprobe.glm.blocks`, the GLM's block-design fast path, with the GLM's
own p-values and corrections).  This is exact: prompts are independent forward passes, so a
prompt's activations do not depend on which run it is placed in (``glm="full"`` keeps the
rows and calls :func:`neuroprobe.fit_glm` per run instead; the tests check both agree).

The experiment runs in named phases, each a function below: prepare the stimuli
(:func:`_prepare_stimuli`), draw every split up front (:func:`_draw_splits`), record the
stimuli once (:func:`_record_stimuli`), evaluate each split (:func:`_evaluate_split`: GLM,
networks, overlap, leave-one-run-out and set-B prediction), refit with other noise models
(:func:`_noise_models`) and assemble the typed :class:`FunctionalNetworksMetrics`
(:func:`_assemble_metrics`).

Two contrasts are reported:

* ``task - control`` (the paper's): task blocks against random-word blocks.  A large part of
  each such network is shared by all five tasks (reading English vs reading word salad);
  that *shared core* is reported.
* the task-specific contrast (``specific_contrast``): one GLM over the five task runs with
  the same run number, one regressor per task plus the control boxcar and run regressors,
  contrast ``task - mean(other tasks)``.  Its networks contain no shared core by
  construction.

Caveat (say it whenever you report sizes): tokens are not independent time points.  Within
a block, consecutive tokens' activations are strongly autocorrelated, so OLS t values are
inflated and Bonferroni over ``N`` units does not control the family-wise error at the
nominal level.  ``noise_models=("ols", "ar1", "max_t")`` refits the first split's runs with
the GLM's AR(1) prewhitening and with block-permutation max-T and reports how network sizes
change (``results["noise_model_sizes"]``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.units import UnitIndex
from neuroprobe.core.validation import check_choice, check_fraction, check_positive_int
from neuroprobe.glm import pvalues
from neuroprobe.glm.blocks import BlockStats, run_cells, task_vs_control, task_vs_other_tasks
from neuroprobe.glm.design import BlockDesign
from neuroprobe.glm.fit import fit_glm
from neuroprobe.networks.sets import (
    FunctionalNetwork,
    LeaveOneRunOut,
    OverlapMatrix,
    TaskPrediction,
    confusion_matrix,
    leave_one_run_out,
    overlap_matrix,
    predict_task,
    shared_core,
    templates,
)
from neuroprobe.networks.stimuli import (
    CONTROL,
    BlockRun,
    PromptSet,
    count_tokens,
    load_prompts,
    random_word_controls,
    require_enough_prompts,
    split_into_runs,
)

__all__ = [
    "NETWORK_HOOKS",
    "MLP_HIDDEN_HOOKS",
    "ContrastMetrics",
    "NoiseModelSizes",
    "FunctionalNetworksMetrics",
    "FunctionalNetworksResult",
    "functional_networks",
]

#: "All layer outputs": the residual stream after every block, every attention output and
#: every MLP output.
NETWORK_HOOKS: tuple[str, ...] = (
    "blocks.*.hook_resid_post",
    "blocks.*.hook_attn_out",
    "blocks.*.hook_mlp_out",
)
#: MLP hidden neurons (add with ``mlp_hidden=True``).
MLP_HIDDEN_HOOKS: tuple[str, ...] = ("blocks.*.mlp.hook_post",)

_TIME_MODES = ("prompt", "generated")
_SPECIFIC = "task - mean(other tasks), one GLM over the five tasks' runs"


# ---------------------------------------------------------------------------------------------
# phase 1: stimuli
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Stimuli:
    """Every stimulus of the experiment, recorded once: each task prompt of sets A and B
    followed by its token-length-matched random-word control.

    ``pairs[set][task]`` lists ``(prompt id, control id)`` indices into ``texts``.
    """

    texts: tuple[str, ...]
    pairs: dict[str, dict[str, list[tuple[int, int]]]]
    tasks: tuple[str, ...]
    n_runs_b: int
    notes: tuple[str, ...]


def _prepare_stimuli(prompts: Any, tasks: Sequence[str] | None, tokenizer: Any, n_ctx: int | None,
                     *, n_runs: int, n_task_blocks: int, time_mode: str, max_new_tokens: int,
                     words: Sequence[str] | None, seed: int) -> _Stimuli:
    """Load sets A and B, check their sizes and lengths, pair every prompt with a control."""
    set_a = load_prompts(prompts, split="A", tasks=tasks)
    try:
        set_b: PromptSet | None = load_prompts(prompts, split="B", tasks=set_a.tasks)
    except NeuroprobeError as e:
        if "is not in the prompt source" not in str(e):
            raise
        set_b = None
    task_names = set_a.tasks
    require_enough_prompts(set_a, n_runs, n_task_blocks)
    notes: list[str] = []
    n_runs_b = 0
    if set_b is not None:
        n_runs_b = min(n_runs, min(len(set_b[t]) for t in task_names) // n_task_blocks)
        if n_runs_b < 1:
            notes.append(f"set B has fewer than {n_task_blocks} prompts per task: not used")
            set_b = None
    if set_b is None:
        notes.append("no prompt set B: heldout_prompts_accuracy is not measured")
    if len(task_names) < 2:
        raise NeuroprobeError(
            f"need at least 2 tasks to compare networks and predict tasks; got {task_names}"
        )
    generated = time_mode == "generated"
    limit = (n_ctx - 1 - (max_new_tokens if generated else 0)) if n_ctx else None
    texts: list[str] = []
    pairs: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for name, ps in (("A", set_a), ("B", set_b)):
        if ps is None:
            continue
        flat = [p for t in task_names for p in ps[t]]
        lens = count_tokens(tokenizer, flat)
        if limit is not None and lens.max() > limit:
            i = int(np.argmax(lens))
            raise NeuroprobeError(
                f"prompt {flat[i]!r:.60} has {int(lens[i])} tokens, longer than the model's "
                f"context allows ({n_ctx} incl. BOS"
                + (f" and {max_new_tokens} generated tokens" if generated else "")
                + "). Shorten or drop it."
            )
        ctl = random_word_controls(tokenizer, lens, words=words,
                                   seed=seed + (0 if name == "A" else 7))
        pairs[name] = {}
        k = 0
        for t in task_names:
            pairs[name][t] = []
            for _ in ps[t]:
                pairs[name][t].append((len(texts), len(texts) + 1))
                texts.extend([flat[k], ctl[k]])
                k += 1
    return _Stimuli(tuple(texts), pairs, task_names, n_runs_b, tuple(notes))


def _draw_splits(stimuli: _Stimuli, *, n_runs: int, n_task_blocks: int, n_splits: int,
                 seed: int) -> list[tuple[list[BlockRun], list[BlockRun]]]:
    """Every random split of the prompts into runs, drawn up front (they do not depend on the
    data, so only the rows needed later are kept while recording): set-A runs and set-B
    runs per split, from one generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(n_splits):
        ra = split_into_runs(stimuli.pairs["A"], stimuli.texts, n_runs, n_task_blocks, rng,
                             source="A")
        rb = split_into_runs(stimuli.pairs["B"], stimuli.texts, stimuli.n_runs_b,
                             n_task_blocks, rng, source="B") if "B" in stimuli.pairs else []
        splits.append((ra, rb))
    return splits


# ---------------------------------------------------------------------------------------------
# phase 2: recording (per-stimulus statistics, and the rows of some stimuli)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _RawRows:
    """The recorded rows (float32) of some stimuli, for the fits that need rows (``fit_glm``:
    ``glm="full"`` and the AR(1) / max-T noise models)."""

    rows_all: Float[Tensor, "kept_time unit"]
    start: dict[int, int]  # stimulus id -> its first row in rows_all
    lengths: Int[np.ndarray, " stimulus"]

    def rows(self, stimuli: Sequence[int]) -> Float[Tensor, "time unit"]:
        missing = [s for s in stimuli if s not in self.start]
        if missing:
            raise NeuroprobeError(f"raw rows were not kept for stimuli {missing[:5]}")
        idx = np.concatenate([np.arange(self.start[s], self.start[s] + self.lengths[s])
                              for s in stimuli])
        return self.rows_all[torch.from_numpy(idx)].float()


def _record_stimuli(
    model: Any,
    texts: Sequence[str],
    hooks: Sequence[str],
    time_mode: str,
    include_bos: bool,
    batch_size: int,
    max_new_tokens: int,
    seed: int,
    keep_raw: set[int] | None = None,
    chunk: int = 32,
    progress: Callable[[str], None] | None = None,
    offset: int = 0,
) -> tuple[BlockStats, _RawRows | None, UnitIndex]:
    """Record every stimulus once, ``chunk`` stimuli at a time, and reduce each to its
    :class:`~neuroprobe.glm.blocks.BlockStats` (rows, mean, sum of squares about the mean);
    the rows of the stimuli in ``keep_raw`` are kept as recorded. ``offset``: the index of
    ``texts[0]`` in the whole stimulus list (a shard's; it seeds generation)."""
    from neuroprobe.core import capture

    means, sss, lengths, raws = [], [], [], []
    raw_start: dict[int, int] = {}
    n_raw = 0
    units = None
    for c0 in range(0, len(texts), chunk):
        sub = list(texts[c0 : c0 + chunk])
        if time_mode == "prompt":
            rec = capture.record(model, sub, hooks=list(hooks), batch_size=batch_size,
                                 include_bos=include_bos, progress=False)
        else:
            rec = capture.record_generation(model, sub, max_new_tokens=max_new_tokens,
                                            hooks=list(hooks), seed=seed + offset + c0,
                                            progress=False)
        acts = torch.as_tensor(rec.acts).detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(acts).all()):
            raise NeuroprobeError(
                "the recording contains NaN or inf activations; check the model and dtype"
            )
        pidx = torch.as_tensor(rec.prompt_index).long().cpu()
        n = torch.bincount(pidx, minlength=len(sub))[: len(sub)]
        if bool((n == 0).any()):
            bad = c0 + int(torch.nonzero(n == 0)[0])
            raise NeuroprobeError(
                f"stimulus {offset + bad} ({texts[bad]!r:.60}) produced no time point; with "
                "include_bos=False a prompt needs at least one real token"
            )
        if keep_raw:  # rows kept as recorded (float32), before they are centred in place
            for j in range(len(sub)):
                if c0 + j in keep_raw:
                    rows = acts[pidx == j].clone()
                    raw_start[c0 + j] = n_raw
                    n_raw += rows.shape[0]
                    raws.append(rows)
        # float32 per-stimulus mean and sum of squares about it (a few rows each: exact to
        # float32 rounding), in place on the chunk's rows; float64 from here on
        sums = torch.zeros(len(sub), acts.shape[1]).index_add_(0, pidx, acts)
        mean = sums / n[:, None].float()
        acts.sub_(mean[pidx]).square_()
        ss = sums.zero_().index_add_(0, pidx, acts)
        means.append(mean.double())
        sss.append(ss)
        lengths.append(n.numpy())
        units = rec.units if units is None else units
        del acts, sums
        done = c0 + chunk >= len(texts)
        if progress is not None and ((c0 // chunk) % 4 == 3 or done):
            progress(f"recorded {min(c0 + chunk, len(texts))}/{len(texts)} stimuli")
    lens = np.concatenate(lengths).astype(np.int64)
    mean_all = torch.cat(means)
    del means
    ss_all = torch.cat(sss)
    del sss
    stats = BlockStats.from_moments(lens, mean_all, ss_all)
    del mean_all, ss_all
    raw = _RawRows(torch.cat(raws), raw_start, lens) if raws else None
    if not isinstance(units, UnitIndex):
        units = UnitIndex.from_units(units)
    return stats, raw, units


def _record_piece(first: int, texts: list, spec: Any, kw: dict, keep: list | None):
    """One shard task: the model that ``spec`` names (loaded once per worker process) records
    ``texts``, the stimuli ``first, first + 1, ...`` of the whole list."""
    from neuroprobe.distributed import driver_like_heap, local_model

    driver_like_heap()
    local = {i - first for i in keep if first <= i < first + len(texts)} if keep else None
    return _record_stimuli(local_model(spec), texts, keep_raw=local, offset=first, **kw)


def _record_stimuli_on(client: Any, spec: Any, texts: Sequence[str], *, n_shards: int = 8,
                       keep_raw: set[int] | None = None, chunk: int = 32,
                       **kw: Any) -> tuple[BlockStats, _RawRows | None, UnitIndex]:
    """:func:`_record_stimuli` as shard tasks on ``client``'s workers. Shards are cut at
    multiples of ``chunk``, so every stimulus is recorded in the same batches as in one
    process and the joined statistics are the serial ones."""
    from neuroprobe.distributed import as_backend

    per = chunk * max(1, -(-len(texts) // (chunk * n_shards)))
    keep = sorted(keep_raw) if keep_raw else None
    kw = dict(kw, chunk=chunk)
    items = [(c0, list(texts[c0 : c0 + per]), spec, kw, keep)
             for c0 in range(0, len(texts), per)]
    parts = as_backend(client).map(_record_piece, items)
    stats = BlockStats(np.concatenate([p[0].lengths for p in parts]),
                       torch.cat([p[0].nm for p in parts]), torch.cat([p[0].q for p in parts]))
    raw = None
    if any(p[1] is not None for p in parts):
        rows, start, n_rows = [], {}, 0
        for (c0, *_), (_, r, _) in zip(items, parts, strict=True):
            if r is None:
                continue
            start.update({c0 + s: n_rows + b for s, b in r.start.items()})
            rows.append(r.rows_all)
            n_rows += r.rows_all.shape[0]
        raw = _RawRows(torch.cat(rows), start, stats.lengths)
    return stats, raw, parts[0][2]


# ---------------------------------------------------------------------------------------------
# phase 3: evaluate a split (GLM per run, networks, overlap, prediction)
# ---------------------------------------------------------------------------------------------
def _design_blocks(lengths: np.ndarray, run: BlockRun, label: int = 0) -> list[tuple]:
    """The ``BlockDesign.from_blocks`` blocks of a run: (condition, rows, run label)."""
    return [(c, int(lengths[s]), label)
            for s, c in zip(run.stimulus_ids, run.conditions, strict=True)]


def _specific_vector(task: str, tasks: Sequence[str]) -> Callable[[list[str]], np.ndarray]:
    """Contrast ``task - mean(other tasks present)`` as a vector over design columns."""
    def vec(columns: list[str]) -> np.ndarray:
        v = np.zeros(len(columns))
        present = [t for t in tasks if t in columns]
        others = [t for t in present if t != task]
        v[columns.index(task)] = 1.0
        for t in others:
            v[columns.index(t)] = -1.0 / len(others)
        return v

    return vec


@dataclass(frozen=True, eq=False)
class _RunContrasts:
    """Both contrasts of a list of runs: ``task - control`` t (float32) and decisions, and
    the task-specific decisions, one row per run."""

    t: Float[Tensor, "run unit"]
    vs_control: Bool[Tensor, "run unit"]
    specific: Bool[Tensor, "run unit"]


@dataclass(frozen=True, eq=False)
class _RunGLM:
    """How the runs of a split are fitted: :mod:`neuroprobe.glm.blocks` over the per-stimulus
    statistics (``route="fast"``) or :func:`~neuroprobe.glm.fit.fit_glm` on the rows
    (``"full"``); both give the same networks."""

    stats: BlockStats
    raw: _RawRows | None
    tasks: tuple[str, ...]
    alpha: float
    correction: str
    route: str = "fast"

    def fit(self, runs: Sequence[BlockRun]) -> _RunContrasts:
        if self.route == "full":
            return self._fit_full(runs)
        cells = run_cells(self.stats, [r.blocks_of(r.task) for r in runs],
                          [r.blocks_of(CONTROL) for r in runs])
        vs = task_vs_control(cells)
        spec = task_vs_other_tasks(cells, groups=[r.run for r in runs])
        return _RunContrasts(vs.t.float(), vs.significant(self.alpha, self.correction),
                             spec.significant(self.alpha, self.correction))

    def _fit_full(self, runs: Sequence[BlockRun]) -> _RunContrasts:
        vs = [self._fit_rows([r], lambda cols, r=r: f"{r.task} - {CONTROL}") for r in runs]
        spec = [self._fit_rows([g for g in runs if g.run == r.run],
                               _specific_vector(r.task, self.tasks)) for r in runs]
        return _RunContrasts(torch.stack([t for t, _ in vs]), torch.stack([m for _, m in vs]),
                             torch.stack([m for _, m in spec]))

    def _fit_rows(self, group: Sequence[BlockRun], contrast: Callable[[list[str]], Any]):
        Y = torch.cat([self.raw.rows(r.stimulus_ids) for r in group])
        blocks = [b for j, r in enumerate(group) for b in _design_blocks(self.stats.lengths, r, j)]
        X = BlockDesign.from_blocks(blocks).matrix
        con = fit_glm(Y, X, dtype=torch.float64).contrast(contrast(list(X.columns)))
        mask = con.significant(alpha=self.alpha, correction=self.correction)
        return torch.as_tensor(con.t).float().cpu(), torch.as_tensor(mask).cpu()


@dataclass(frozen=True, eq=False)
class _Networks:
    """The networks of a list of runs under both contrasts (one per run, in run order)."""

    vs_control: tuple[FunctionalNetwork, ...]
    specific: tuple[FunctionalNetwork, ...]

    @classmethod
    def of(cls, runs: Sequence[BlockRun], con: _RunContrasts, units: UnitIndex,
           threshold: str) -> _Networks:
        vs = tuple(FunctionalNetwork(con.vs_control[i], units, task=r.task, run=r.run,
                                     threshold=threshold) for i, r in enumerate(runs))
        spec = tuple(FunctionalNetwork(con.specific[i], units, task=r.task, run=r.run,
                                       threshold=threshold + ", vs other tasks")
                     for i, r in enumerate(runs))
        return cls(vs, spec)


@dataclass(frozen=True, eq=False)
class _SplitEvaluation:
    """Everything one split measured."""

    contrasts: _RunContrasts  # of the set-A runs
    networks: _Networks  # set-A runs
    heldout: _Networks | None  # set-B runs
    overlap: OverlapMatrix
    specific_overlap: OverlapMatrix
    loo: LeaveOneRunOut
    loo_null: LeaveOneRunOut
    specific_loo: LeaveOneRunOut
    specific_loo_null: LeaveOneRunOut
    templates: dict[str, FunctionalNetwork]  # of all set-A runs
    specific_templates: dict[str, FunctionalNetwork]
    prompts: TaskPrediction | None  # set-B networks vs the set-A templates
    specific_prompts: TaskPrediction | None
    glm_seconds: float


def _evaluate_split(runs_a: Sequence[BlockRun], runs_b: Sequence[BlockRun], fitter: _RunGLM,
                    units: UnitIndex, *, threshold: str, min_runs: int | None,
                    null_seeds: tuple[int, int]) -> _SplitEvaluation:
    """GLM of every run, its networks, their overlap, leave-one-run-out prediction (also
    with shuffled labels, seeded ``null_seeds``) and the prediction of set B's networks."""
    g0 = _clock()
    con_a = fitter.fit(runs_a)
    nets = _Networks.of(runs_a, con_a, units, threshold)
    glm_seconds = _clock() - g0
    heldout = None
    if runs_b:
        g0 = _clock()
        heldout = _Networks.of(runs_b, fitter.fit(runs_b), units, threshold)
        glm_seconds += _clock() - g0
    mr = None if min_runs is None else max(1, int(min_runs))
    tm = templates(nets.vs_control, min_runs=mr)
    stm = templates(nets.specific, min_runs=mr)
    return _SplitEvaluation(
        contrasts=con_a,
        networks=nets,
        heldout=heldout,
        overlap=overlap_matrix(nets.vs_control),
        specific_overlap=overlap_matrix(nets.specific),
        loo=leave_one_run_out(nets.vs_control, mr),
        loo_null=leave_one_run_out(nets.vs_control, mr, shuffle=null_seeds[0]),
        specific_loo=leave_one_run_out(nets.specific, mr),
        specific_loo_null=leave_one_run_out(nets.specific, mr, shuffle=null_seeds[1]),
        templates=tm,
        specific_templates=stm,
        prompts=predict_task(heldout.vs_control, tm) if heldout else None,
        specific_prompts=predict_task(heldout.specific, stm) if heldout else None,
        glm_seconds=glm_seconds,
    )


@dataclass(frozen=True)
class _SplitScores:
    """The numbers one split contributes to the metrics (which average them over splits)."""

    within: float
    across: float
    specific_within: float
    specific_across: float
    accuracy: float
    null_accuracy: float
    specific_accuracy: float
    specific_null_accuracy: float
    prompts_accuracy: float | None
    specific_prompts_accuracy: float | None
    folds: tuple[TaskPrediction, ...]  # held-out-run predictions (for the confusion matrix)
    prompts: TaskPrediction | None

    @classmethod
    def of(cls, ev: _SplitEvaluation) -> _SplitScores:
        return cls(
            within=ev.overlap.within_task_mean, across=ev.overlap.across_task_mean,
            specific_within=ev.specific_overlap.within_task_mean,
            specific_across=ev.specific_overlap.across_task_mean,
            accuracy=ev.loo.accuracy, null_accuracy=ev.loo_null.accuracy,
            specific_accuracy=ev.specific_loo.accuracy,
            specific_null_accuracy=ev.specific_loo_null.accuracy,
            prompts_accuracy=ev.prompts.accuracy if ev.prompts else None,
            specific_prompts_accuracy=ev.specific_prompts.accuracy if ev.prompts else None,
            folds=ev.loo.predictions, prompts=ev.prompts,
        )


def _tmaps(runs: Sequence[BlockRun], con: _RunContrasts, tasks: Sequence[str],
           n_runs: int) -> Float[np.ndarray, "task unit"]:
    """Mean ``task - control`` t over each task's runs (float32)."""
    out = np.zeros((len(tasks), con.t.shape[1]), np.float32)
    for i, r in enumerate(runs):
        out[tasks.index(r.task)] += con.t[i].numpy() / n_runs
    return out


# ---------------------------------------------------------------------------------------------
# phase 4: other noise models (first split, set A)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseModelSizes:
    """Network sizes of some runs under one noise model (or why they are not available).

    Attributes
    ----------
    noise_model : str
        ``"ols"``, ``"ar1"`` (prewhitened refit) or ``"max_t"`` (block-permutation max-T).
    sizes : dict task -> list of int
        Network size of each refitted run (empty when the refit failed).
    error : str or None
        ``"not available: <exception>"`` when the refit failed, else ``None``.
    """

    noise_model: str
    sizes: dict[str, list[int]]
    error: str | None = None


def _refit_sizes(nm: str, runs: Sequence[BlockRun], fitter: _RunGLM, tasks: Sequence[str],
                 seed: int, n_permutations: int) -> dict[str, list[int]]:
    """Network sizes of the given runs under AR(1) prewhitening or permutation max-T."""
    out: dict[str, list[int]] = {t: [] for t in tasks}
    for r in runs:
        Y = fitter.raw.rows(r.stimulus_ids)
        X = BlockDesign.from_blocks(_design_blocks(fitter.stats.lengths, r)).matrix
        if nm == "ar1":
            con = fit_glm(Y, X, noise="ar1", dtype=torch.float32).contrast(
                f"{r.task} - {CONTROL}")
            mask = con.significant(alpha=fitter.alpha, correction=fitter.correction)
        else:  # block-permutation max-T (whole blocks' condition labels permuted)
            con = fit_glm(Y, X, dtype=torch.float32).contrast(f"{r.task} - {CONTROL}")
            mask = con.significant(alpha=fitter.alpha, correction="max_t",
                                   n_permutations=n_permutations, seed=seed)
        out[r.task].append(int(torch.as_tensor(mask).sum()))
    return out


@dataclass(frozen=True)
class _NoiseModels:
    runs: tuple[int, ...] = ()
    models: tuple[NoiseModelSizes, ...] = ()
    notes: tuple[str, ...] = ()


def _noise_models(models: Sequence[str], first: _SplitEvaluation, runs_a: Sequence[BlockRun],
                  fitter: _RunGLM, *, noise_runs: int, seed: int,
                  n_permutations: int) -> _NoiseModels:
    """Refit the first ``noise_runs`` set-A runs of each task of the first split with every
    noise model but OLS; OLS's sizes are those of the split itself.  A refit that fails is
    reported (``error`` and a note), not raised."""
    tasks = fitter.tasks
    runs = [r for r in runs_a if r.run < noise_runs]
    ols = NoiseModelSizes("ols", {t: [n.size for n in first.networks.vs_control
                                      if n.task == t and n.run < noise_runs] for t in tasks})
    out, notes = [ols], []
    for nm in models:
        try:
            out.append(NoiseModelSizes(nm, _refit_sizes(nm, runs, fitter, tasks, seed,
                                                        n_permutations)))
        except Exception as e:  # report, do not fail the whole experiment
            out.append(NoiseModelSizes(nm, {}, f"not available: {type(e).__name__}: {e}"[:300]))
            notes.append(f"noise model {nm!r} failed: {e}"[:200])
    return _NoiseModels(tuple(sorted({r.run for r in runs})), tuple(out), tuple(notes))


# ---------------------------------------------------------------------------------------------
# phase 5: metrics
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ContrastMetrics:
    """Repeatability and prediction figures of one contrast's networks.

    Means over network pairs and random splits; accuracies with their spread (std over
    splits); the depth profile of the first split's templates.

    Attributes
    ----------
    within_task_dice, across_task_dice : float
        Mean Dice of networks of the same task (different runs) and of different tasks.
    heldout_accuracy, heldout_accuracy_std : float
        Leave-one-run-out task prediction.
    heldout_prompts_accuracy, heldout_prompts_accuracy_std : float
        Prediction of set-B networks from set-A templates (``nan`` without set B).
    null_accuracy : float
        Leave-one-run-out accuracy with shuffled training labels.
    network_fraction_by_layer : dict
        ``{"layers": [...], task: [fraction of the layer's units in the template]}``.
    peak_layer : dict task -> int or None
        Layer with the largest fraction (``None`` for an empty template).
    """

    within_task_dice: float
    across_task_dice: float
    heldout_accuracy: float
    heldout_accuracy_std: float
    heldout_prompts_accuracy: float
    heldout_prompts_accuracy_std: float
    null_accuracy: float
    network_fraction_by_layer: dict
    peak_layer: dict

    def scores(self) -> dict[str, float]:
        """The seven repeatability and prediction numbers, by their ``results.json`` key."""
        return {
            "within_task_dice": self.within_task_dice,
            "across_task_dice": self.across_task_dice,
            "heldout_accuracy": self.heldout_accuracy,
            "heldout_accuracy_std": self.heldout_accuracy_std,
            "heldout_prompts_accuracy": self.heldout_prompts_accuracy,
            "heldout_prompts_accuracy_std": self.heldout_prompts_accuracy_std,
            "null_accuracy": self.null_accuracy,
        }


@dataclass(frozen=True, eq=False)
class FunctionalNetworksMetrics:
    """The headline numbers of :func:`functional_networks`.

    Attributes
    ----------
    task_vs_control : ContrastMetrics
        The paper's contrast (task blocks vs random-word blocks).
    specific : ContrastMetrics
        The task-specific contrast (task - mean of the other tasks).
    specific_contrast : str
        How the task-specific contrast is built.
    specific_network_sizes : dict task -> list of int
        Task-specific network sizes of the first split.
    specific_shared_core_size : int
        Units in every task-specific template (0 by construction, up to noise).
    shared_core_fraction : float
        Shared core of the task-vs-control templates over their mean size.
    confusion : DataFrame
        Held-out-run predictions of all splits, true task x predicted task.
    prompts_confusion : DataFrame
        Set-B networks vs set-A templates, all splits.
    noise_model_runs : tuple of int
        The runs refitted with other noise models (empty when none was asked for).
    noise_models : tuple of NoiseModelSizes
        OLS first, then each other noise model.
    hooks : tuple of str
        The hook patterns recorded.
    """

    task_vs_control: ContrastMetrics
    specific: ContrastMetrics
    specific_contrast: str
    specific_network_sizes: dict[str, list[int]]
    specific_shared_core_size: int
    shared_core_fraction: float
    confusion: pd.DataFrame
    prompts_confusion: pd.DataFrame
    noise_model_runs: tuple[int, ...]
    noise_models: tuple[NoiseModelSizes, ...]
    hooks: tuple[str, ...]

    def noise_model_sizes(self) -> dict[str, Any]:
        """The ``results.json`` entry: ``{"runs": [...], model: sizes or error}`` (``{}``
        when only OLS was asked for)."""
        if not self.noise_models:
            return {}
        out: dict[str, Any] = {"runs": list(self.noise_model_runs)}
        for nm in self.noise_models:  # results.json keeps 0.1's layout: the error text
            out[nm.noise_model] = nm.sizes if nm.error is None else nm.error
        return out

    def to_dict(self) -> dict[str, Any]:
        """The metrics as the plain dictionary ``results.json`` is built from."""
        spec = self.specific
        return {
            **self.task_vs_control.scores(),
            "shared_core_fraction": self.shared_core_fraction,
            "specific_contrast": {
                "contrast": self.specific_contrast,
                "network_sizes": self.specific_network_sizes,
                **spec.scores(),
                "shared_core_size": self.specific_shared_core_size,
                "network_fraction_by_layer": spec.network_fraction_by_layer,
                "peak_layer": spec.peak_layer,
            },
            "confusion": _confusion_json(self.confusion),
            "prompts_confusion": _confusion_json(self.prompts_confusion),
            "network_fraction_by_layer": self.task_vs_control.network_fraction_by_layer,
            "peak_layer": self.task_vs_control.peak_layer,
            "noise_model_sizes": self.noise_model_sizes(),
            "hooks": list(self.hooks),
        }

    def __getitem__(self, key: str) -> Any:
        """``metrics["heldout_accuracy"]``: a key of :meth:`to_dict` (how 0.1 code read the
        metrics, which were a dict)."""
        return self.to_dict()[key]


def _confusion_json(cm: pd.DataFrame) -> dict[str, list]:
    return {"rows_true": [str(r) for r in cm.index],
            "columns_predicted": [str(c) for c in cm.columns],
            "counts": cm.to_numpy().tolist()}


def _contrast_metrics(within, across, acc_runs, acc_prompts, acc_null,
                      tm: dict[str, FunctionalNetwork], units: UnitIndex,
                      tasks: Sequence[str]) -> ContrastMetrics:
    m_acc, s_acc = _mean_std(acc_runs)
    m_pa, s_pa = _mean_std(acc_prompts)
    by_layer, peak = _layer_profile(tm, units, tasks)
    return ContrastMetrics(
        within_task_dice=_mean_std(within)[0],
        across_task_dice=_mean_std(across)[0],
        heldout_accuracy=m_acc,
        heldout_accuracy_std=s_acc,
        heldout_prompts_accuracy=m_pa,
        heldout_prompts_accuracy_std=s_pa,
        null_accuracy=_mean_std(acc_null)[0],
        network_fraction_by_layer=by_layer,
        peak_layer=peak,
    )


def _assemble_metrics(scores: Sequence[_SplitScores], first: _SplitEvaluation, core,
                      units: UnitIndex, tasks: Sequence[str], hooks: Sequence,
                      noise: _NoiseModels) -> FunctionalNetworksMetrics:
    tm_sizes = [first.templates[t].size for t in tasks]
    core_frac = core.size / float(np.mean(tm_sizes)) if np.mean(tm_sizes) > 0 else float("nan")
    prompts = [s for s in scores if s.prompts is not None]
    return FunctionalNetworksMetrics(
        task_vs_control=_contrast_metrics(
            [s.within for s in scores], [s.across for s in scores],
            [s.accuracy for s in scores], [s.prompts_accuracy for s in prompts],
            [s.null_accuracy for s in scores], first.templates, units, tasks),
        specific=_contrast_metrics(
            [s.specific_within for s in scores], [s.specific_across for s in scores],
            [s.specific_accuracy for s in scores],
            [s.specific_prompts_accuracy for s in prompts],
            [s.specific_null_accuracy for s in scores], first.specific_templates, units,
            tasks),
        specific_contrast=_SPECIFIC,
        specific_network_sizes={t: [n.size for n in first.networks.specific if n.task == t]
                                for t in tasks},
        specific_shared_core_size=shared_core(first.specific_templates).size,
        shared_core_fraction=core_frac,
        confusion=confusion_matrix([p for s in scores for p in s.folds], tasks=tasks),
        prompts_confusion=confusion_matrix([s.prompts for s in prompts], tasks=tasks),
        noise_model_runs=noise.runs,
        noise_models=noise.models,
        hooks=tuple(h if isinstance(h, str) else repr(h) for h in hooks),
    )


def _layer_profile(tm: dict[str, FunctionalNetwork], units: UnitIndex,
                   task_names: Sequence[str]) -> tuple[dict, dict]:
    layers = units.layers
    uniq = np.unique(layers)
    tot = np.array([(layers == lay).sum() for lay in uniq], float)
    prof, peak = {"layers": uniq.tolist()}, {}
    for t in task_names:
        m = tm[t].mask.numpy()
        frac = np.array([m[layers == lay].sum() for lay in uniq]) / tot
        prof[t] = np.round(frac, 4).tolist()
        peak[t] = int(uniq[int(np.argmax(frac))]) if frac.max() > 0 else None
    return prof, peak


def _mean_std(v: Sequence[float]) -> tuple[float, float]:
    a = np.asarray([x for x in v if not math.isnan(x)], dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionalNetworksResult:
    """Everything :func:`functional_networks` measured.

    The headline numbers are in :attr:`metrics` (typed) and :meth:`summary` (the
    ``results.json`` content); the networks, overlap matrices, templates and t-maps of the
    first split are kept for figures and further analysis.  :meth:`save` writes
    ``results.json``, the figures and (``report=True``) ``report.html``.
    """

    model: str
    units: UnitIndex
    tasks: tuple[str, ...]
    time_mode: str
    correction: str
    alpha: float
    n_runs_per_task: int
    n_task_blocks: int
    n_splits: int
    include_bos: bool
    networks: tuple[FunctionalNetwork, ...]
    specific_networks: tuple[FunctionalNetwork, ...]
    heldout_networks: tuple[FunctionalNetwork, ...]
    overlap: OverlapMatrix
    specific_overlap: OverlapMatrix
    templates: dict[str, FunctionalNetwork]
    specific_templates: dict[str, FunctionalNetwork]
    core: FunctionalNetwork
    tmaps: Float[np.ndarray, "task unit"] = field(repr=False)
    design: pd.DataFrame = field(repr=False)
    metrics: FunctionalNetworksMetrics = field(repr=False)
    seconds: dict = field(repr=False)
    notes: tuple[str, ...] = ()
    dissociation: Any = field(default=None, repr=False)

    @property
    def n_units(self) -> int:
        return len(self.units)

    def summary(self) -> dict:
        """The ``results.json`` dictionary (plain Python types)."""
        m = self.metrics.to_dict()
        out = {
            "model": self.model,
            "n_units": self.n_units,
            "hooks": m["hooks"],
            "n_runs_per_task": self.n_runs_per_task,
            "n_task_blocks": self.n_task_blocks,
            "n_splits": self.n_splits,
            "tasks": list(self.tasks),
            "time_mode": self.time_mode,
            "include_bos": self.include_bos,
            "correction": self.correction,
            "alpha": self.alpha,
            "network_sizes": {t: [n.size for n in self.networks if n.task == t]
                              for t in self.tasks},
            "within_task_dice": m["within_task_dice"],
            "across_task_dice": m["across_task_dice"],
            "overlap_matrix": {
                "labels": list(self.overlap.labels),
                "values": _round(self.overlap.values),
                "task_means": _round(self.overlap.task_means().values),
            },
            "heldout_accuracy": m["heldout_accuracy"],
            "heldout_accuracy_std": m["heldout_accuracy_std"],
            "heldout_prompts_accuracy": m["heldout_prompts_accuracy"],
            "heldout_prompts_accuracy_std": m["heldout_prompts_accuracy_std"],
            "shared_core_size": self.core.size,
            "shared_core_fraction": m["shared_core_fraction"],
            "specific_contrast": m["specific_contrast"],
            "null_accuracy": m["null_accuracy"],
            "chance": 1.0 / len(self.tasks),
            "confusion": m["confusion"],
            "prompts_confusion": m["prompts_confusion"],
            "network_fraction_by_layer": m["network_fraction_by_layer"],
            "peak_layer": m["peak_layer"],
            "noise_model_sizes": m["noise_model_sizes"],
            "seconds": round(float(sum(self.seconds.values())), 2),
            "seconds_by_stage": {k: round(float(v), 2) for k, v in self.seconds.items()},
            "notes": list(self.notes),
        }
        if self.dissociation is not None:
            out["task_dissociation"] = self.dissociation.summary()
        return _jsonable(out)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per network of the first split: ``contrast``, ``task``, ``run``, ``size``,
        ``fraction``."""
        rows = []
        for kind, nets in (("task - control", self.networks),
                           ("task - other tasks", self.specific_networks),
                           ("task - control (set B)", self.heldout_networks)):
            for n in nets:
                rows.append((kind, n.task, n.run, n.size, n.fraction))
        return pd.DataFrame(rows, columns=["contrast", "task", "run", "size", "fraction"])

    def save(self, out_dir: str | Path, figures: bool = True, report: bool = False) -> Path:
        """Write ``results.json`` (and figures, and ``report.html``) into ``out_dir``.

        Returns the path of ``report.html`` when ``report=True``, else of ``results.json``.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "results.json"
        path.write_text(json.dumps(self.summary(), indent=1))
        figs: dict[str, Path] = {}
        if figures or report:
            from neuroprobe.viz.networks import save_figures

            figs = save_figures(self, out)
        if report:
            from neuroprobe.report import write_report

            return write_report(self, out, figs)
        return path

    def __repr__(self) -> str:
        m = self.metrics.task_vs_control
        return (
            f"FunctionalNetworksResult({self.model}, {self.n_units} units, "
            f"{len(self.tasks)} tasks x {self.n_runs_per_task} runs, {self.time_mode} tokens: "
            f"dice within {m.within_task_dice:.3f} / across {m.across_task_dice:.3f}, "
            f"heldout acc {m.heldout_accuracy:.3f}, set-B acc "
            f"{m.heldout_prompts_accuracy:.3f}, chance {1 / len(self.tasks):.2f})"
        )


def _round(a: np.ndarray, nd: int = 4) -> list:
    return np.where(np.isnan(a), None, np.round(a.astype(float), nd)).tolist()


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return None if math.isnan(x) else round(x, 6)
    return x


# ---------------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------------
def _check_arguments(*, time_mode: str, alpha: float, n_runs: int, n_task_blocks: int,
                     n_splits: int, glm: str, correction: str,
                     noise_models: Sequence[str]) -> None:
    if time_mode not in _TIME_MODES:
        raise NeuroprobeError(f"time must be one of {_TIME_MODES}; got {time_mode!r}")
    check_fraction(alpha, "alpha")
    check_positive_int(n_runs, "n_runs")
    check_positive_int(n_task_blocks, "n_task_blocks")
    check_positive_int(n_splits, "n_splits")
    if n_runs < 2:
        raise NeuroprobeError(
            f"n_runs must be >= 2 (held-out prediction leaves one run out); got {n_runs}"
        )
    if glm not in ("fast", "full"):
        raise NeuroprobeError(f"glm must be 'fast' or 'full'; got {glm!r}")
    if glm == "fast" and correction not in pvalues.CORRECTIONS:
        raise NeuroprobeError(
            f"correction={correction!r} needs glm='full' (the fast path supports "
            f"{pvalues.CORRECTIONS}); max_t is offered through noise_models=('ols', 'max_t')"
        )
    for nm in noise_models:
        if nm not in ("ols", "ar1", "max_t"):
            raise NeuroprobeError(
                f"noise_models entries must be 'ols', 'ar1' or 'max_t'; got {nm!r}"
            )


def functional_networks(
    model: Any,
    prompts: Any = None,
    *,
    tasks: Sequence[str] | None = None,
    n_runs: int = 5,
    n_task_blocks: int = 8,
    hooks: Sequence[str] = NETWORK_HOOKS,
    mlp_hidden: bool = False,
    time: str = "prompt",
    max_new_tokens: int = 16,
    alpha: float = 0.05,
    correction: str = "bonferroni",
    min_runs: int | None = None,
    n_splits: int = 20,
    include_bos: bool = False,
    noise_models: Sequence[str] = ("ols",),
    glm: str = "fast",
    n_permutations: int = 1000,
    noise_runs: int = 1,
    words: Sequence[str] | None = None,
    tokenizer: Any = None,
    batch_size: int = 16,
    seed: int = 0,
    model_name: str | None = None,
    progress: Callable[[str], None] | None = None,
    client: Any = None,
    dissociation: bool = False,
    dissociation_mode: str = "mean",
) -> FunctionalNetworksResult:
    """Functional networks of a model: block-design runs, GLM per unit, overlap, prediction.

    Parameters
    ----------
    model : TransformerBridge or HookedRootModule
        A loaded model (``npb.load_model(...)``) with a tokenizer (or pass ``tokenizer``).
    prompts : None, dict, path or PromptSet
        Task prompts (see :func:`neuroprobe.networks.stimuli.load_prompts`).  Set ``"A"`` defines
        networks; set ``"B"`` (if present) tests them (``heldout_prompts_accuracy``).
    tasks : list of str, optional
        Subset of tasks (default: all of the prompt set).
    n_runs, n_task_blocks : int
        Runs per task and task blocks per run (as many control blocks).  Set A needs
        ``n_runs * n_task_blocks`` prompts per task.
    hooks : sequence of str
        Hook names/globs recorded (default: residual stream, attention output and MLP output
        of every block).  ``mlp_hidden=True`` adds the MLP hidden neurons.
    time : {"prompt", "generated"}
        Time points are the prompt tokens (teacher forced; fast) or the generated tokens
        (``max_new_tokens`` per block, as in the paper; ~50x slower on a CPU).
    alpha, correction : float, str
        Threshold of every network (``con.significant(alpha, correction)``).
    min_runs : int, optional
        Runs a unit must be active in to enter a template (default: a majority).
    n_splits : int
        Random partitions of the prompts into runs; accuracies are mean and std over them.
    include_bos : bool
        Keep the BOS position as a time point (default ``False``: it is an attention sink,
        identical in every prompt, with a huge residual norm).
    noise_models : sequence of {"ols", "ar1", "max_t"}
        Besides OLS, refit the first ``noise_runs`` set-A runs of each task (first split)
        with AR(1) prewhitening and/or block-permutation max-T (``n_permutations``) and
        report the network sizes next to OLS's (``results["noise_model_sizes"]``).
    glm : {"fast", "full"}
        ``"fast"`` (default) computes each run's OLS contrast from per-stimulus means and
        sums of squares (exact for these designs, whose regressors are constant within a
        block; ~1000x faster, so many splits are affordable); ``"full"`` calls
        :func:`neuroprobe.fit_glm` on every run's concatenated rows (same numbers; keeps
        every row in memory).
    words : sequence of str, optional
        Control vocabulary (default: the packaged list).
    tokenizer : optional
        Tokenizer for length matching (default: ``model.tokenizer``).
    seed : int
        Seeds controls, splits and block order.
    client : dask.distributed.Client, DaskBackend or SerialBackend, optional
        Record the stimuli as shard tasks on workers (:mod:`neuroprobe.distributed`);
        ``model`` is then what each worker loads (a model name, a config dict or a
        picklable factory; the driver loads it too, for the tokenizer and the analyses).
        Shards are cut at the recording's own chunks, so the statistics, hence every network
        and score, are the serial run's.
    dissociation : bool
        The causal test (off by default: it costs about ``5 x 5`` forward passes over the
        set-B prompts): ablate each task's task-specific template (task - other tasks) and
        measure the next-token loss on every task's set-B prompts
        (:func:`neuroprobe.dissociation`); kept as ``result.dissociation``, written to
        ``results.json`` as ``task_dissociation`` and as a section (with the heatmap) of
        the HTML report.  Needs set-B prompts and the model's tokenizer.
    dissociation_mode : {"mean", "zero", "resample"}
        The ablation (mean and resample: statistics over the set-A stimuli, task prompts
        and controls).

    Returns
    -------
    FunctionalNetworksResult
        Its ``metrics`` is a :class:`FunctionalNetworksMetrics`; ``summary()`` is the
        ``results.json`` content.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model("smollm2-135m")                  # doctest: +SKIP
    >>> res = npb.functional_networks(model, n_splits=50)        # doctest: +SKIP
    >>> s = res.summary()                                        # doctest: +SKIP
    >>> s["within_task_dice"] > s["across_task_dice"]            # doctest: +SKIP
    True
    >>> res.save("out/fn", report=True)                          # doctest: +SKIP
    PosixPath('out/fn/report.html')
    """
    t_start = time_now = _clock()
    seconds: dict[str, float] = {}
    say = progress or (lambda s: None)
    spec = model
    if client is not None:
        from neuroprobe.distributed import local_model

        model = local_model(spec)
    _check_arguments(time_mode=time, alpha=alpha, n_runs=n_runs, n_task_blocks=n_task_blocks,
                     n_splits=n_splits, glm=glm, correction=correction,
                     noise_models=noise_models)
    if dissociation:
        from neuroprobe.networks.ablation import MODES

        check_choice(dissociation_mode, "dissociation_mode", MODES)
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise NeuroprobeError(
            "model has no tokenizer; pass tokenizer= (e.g. "
            "neuroprobe.networks.stimuli.toy_tokenizer for a random native model)"
        )

    # ---- phase 1: stimuli and every split of them into runs -----------------------------
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    stimuli = _prepare_stimuli(prompts, tasks, tok, n_ctx, n_runs=n_runs,
                               n_task_blocks=n_task_blocks, time_mode=time,
                               max_new_tokens=max_new_tokens, words=words, seed=seed)
    task_names = stimuli.tasks
    notes = list(stimuli.notes)
    splits = _draw_splits(stimuli, n_runs=n_runs, n_task_blocks=n_task_blocks,
                          n_splits=n_splits, seed=seed)
    seconds["stimuli"] = _clock() - time_now
    time_now = _clock()

    # ---- phase 2: recording -------------------------------------------------------------
    all_hooks = list(hooks) + (list(MLP_HIDDEN_HOOKS) if mlp_hidden else [])
    texts = stimuli.texts
    say(f"recording {len(texts)} stimuli ({time} tokens) at {len(all_hooks)} hook patterns")
    extra = [nm for nm in noise_models if nm != "ols"]
    if glm == "full":
        keep_raw: set[int] | None = set(range(len(texts)))
    elif extra:
        keep_raw = {i for r in splits[0][0] if r.run < noise_runs for i in r.stimulus_ids}
    else:
        keep_raw = None
    if client is None:
        stats, raw, units = _record_stimuli(model, texts, all_hooks, time, include_bos,
                                            batch_size, max_new_tokens, seed,
                                            keep_raw=keep_raw, progress=say)
    else:
        stats, raw, units = _record_stimuli_on(
            client, spec, texts, keep_raw=keep_raw, hooks=all_hooks, time_mode=time,
            include_bos=include_bos, batch_size=batch_size, max_new_tokens=max_new_tokens,
            seed=seed)
    seconds["recording"] = _clock() - time_now
    time_now = _clock()
    say(f"recorded {int(stats.lengths.sum())} time points x {len(units)} units")

    # ---- phase 3: evaluate every split --------------------------------------------------
    fitter = _RunGLM(stats, raw, task_names, alpha, correction, glm)
    threshold = f"{correction} p<{alpha}"
    t_glm = 0.0
    scores: list[_SplitScores] = []
    for s, (runs_a, runs_b) in enumerate(splits):
        ev = _evaluate_split(runs_a, runs_b, fitter, units, threshold=threshold,
                             min_runs=min_runs, null_seeds=(seed + 1000 + s, seed + 2000 + s))
        t_glm += ev.glm_seconds
        if s == 0:
            g1 = _clock()
            first = ev
            tmaps = _tmaps(runs_a, ev.contrasts, task_names, n_runs)
            design = BlockDesign.from_blocks(_design_blocks(stats.lengths, runs_a[0])).matrix
            t_glm += _clock() - g1
        scores.append(_SplitScores.of(ev))
        say(f"split {s + 1}/{n_splits}: held-out accuracy {ev.loo.accuracy:.2f}")
    seconds["glm"] = t_glm
    seconds["networks"] = _clock() - time_now - t_glm
    time_now = _clock()

    # ---- phase 4: other noise models (first split, set A) -------------------------------
    noise = _NoiseModels()
    if extra:
        noise = _noise_models(extra, first, splits[0][0], fitter, noise_runs=noise_runs,
                              seed=seed, n_permutations=n_permutations)
        notes += noise.notes
    seconds["noise_models"] = _clock() - time_now

    # ---- phase 5: assemble --------------------------------------------------------------
    core = shared_core(first.templates)
    if all(n.size == 0 for n in first.networks.vs_control):
        notes.append("no unit passed the threshold in any run: every network is empty, "
                     "prediction is undefined (reported as no prediction)")
    metrics = _assemble_metrics(scores, first, core, units, task_names, all_hooks, noise)
    name = model_name or getattr(getattr(model, "cfg", None), "model_name", None) or type(
        model).__name__
    diss = None
    if dissociation:
        time_now = _clock()
        diss = _task_dissociation(model, stimuli, first.specific_templates, dissociation_mode,
                                  seed, notes, say)
        seconds["dissociation"] = _clock() - time_now
    seconds["total_unaccounted"] = max(0.0, _clock() - t_start - sum(seconds.values()))
    return FunctionalNetworksResult(
        model=str(name),
        units=units,
        tasks=task_names,
        time_mode=time,
        correction=correction,
        alpha=alpha,
        n_runs_per_task=n_runs,
        n_task_blocks=n_task_blocks,
        n_splits=n_splits,
        include_bos=include_bos,
        networks=first.networks.vs_control,
        specific_networks=first.networks.specific,
        heldout_networks=first.heldout.vs_control if first.heldout else (),
        overlap=first.overlap,
        specific_overlap=first.specific_overlap,
        templates=first.templates,
        specific_templates=first.specific_templates,
        core=core,
        tmaps=tmaps,
        design=design,
        metrics=metrics,
        seconds=seconds,
        notes=tuple(notes),
        dissociation=diss,
    )


def _task_dissociation(model: Any, stimuli: _Stimuli, templates: dict[str, FunctionalNetwork],
                       mode: str, seed: int, notes: list[str], say: Callable[[str], None]):
    """Each task-specific template ablated on every task's set-B prompts (or None, with a
    note, when there is no set B or every template is empty)."""
    from neuroprobe.networks.ablation import ablation_reference, dissociation

    if "B" not in stimuli.pairs:
        notes.append("dissociation not run: it needs held-out set-B prompts")
        return None
    nets = {t: templates[t] for t in stimuli.tasks}
    if all(n.size == 0 for n in nets.values()):
        notes.append("dissociation not run: every task-specific template is empty")
        return None
    conds = {t: [stimuli.texts[p] for p, _ in stimuli.pairs["B"][t]] for t in stimuli.tasks}
    say(f"dissociation: {len(nets)} task-specific templates x {len(conds)} set-B prompt sets")
    ref = None
    if mode != "zero":  # reference statistics: the set-A stimuli (they fit the context)
        union = None
        for n in nets.values():
            union = n if union is None else union | n
        ref_texts = [stimuli.texts[i] for t in stimuli.tasks for pair in stimuli.pairs["A"][t]
                     for i in pair]
        ref = ablation_reference(model, union, ref_texts, seed=seed,
                                 max_rows=1024 if mode == "resample" else 0)
    return dissociation(model, nets, conds, mode=mode, reference=ref, seed=seed)


def _clock() -> float:
    return time.perf_counter()
