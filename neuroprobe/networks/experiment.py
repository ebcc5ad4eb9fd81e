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
forward pass.  This is exact: prompts are independent forward passes, so a prompt's
activations do not depend on which run it is placed in (``glm="full"`` keeps the rows and
calls :func:`neuroprobe.fit_glm` per run instead; the tests check both agree).

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

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import check_fraction, check_positive_int
from neuroprobe.networks.sets import (
    FunctionalNetwork,
    OverlapMatrix,
    overlap_matrix,
    predict_task,
    shared_core,
    templates,
)
from neuroprobe.networks.stimuli import (
    CONTROL,
    PromptSet,
    _require_enough_prompts,
    count_tokens,
    load_prompts,
)
from neuroprobe.core.units import UnitIndex

__all__ = [
    "NETWORK_HOOKS",
    "MLP_HIDDEN_HOOKS",
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


# ---------------------------------------------------------------------------------------------
# stored stimulus activations
# ---------------------------------------------------------------------------------------------
@dataclass
class _Store:
    """Per-stimulus sufficient statistics (and optionally some stimuli's raw rows).

    With ``mu`` a per-unit centre (the mean over all stimuli), stimulus ``s`` with ``n_s``
    rows, mean ``m_s`` and within-stimulus sum of squares ``ss_s`` is summarised by
    ``nm[s] = n_s (m_s - mu)`` and ``q[s] = ss_s + n_s (m_s - mu)^2`` (float64).  Every OLS
    fit of a design whose regressors are constant within a stimulus (boxcars, run
    regressors) depends on the data only through sums of these over the design's cells, so
    a whole split of prompts into runs costs one segment sum over stimuli.
    """

    lengths: np.ndarray  # [S] time points per stimulus
    nm: torch.Tensor  # [S, N] float64
    q: torch.Tensor  # [S, N] float64
    raw: torch.Tensor | None = None  # [T_kept, N] rows of the stimuli in raw_start
    raw_start: dict | None = None  # stimulus id -> first row in raw

    def rows(self, stim: Sequence[int]) -> torch.Tensor:
        if self.raw is None or self.raw_start is None:
            raise NeuroprobeError("raw rows were not kept for these stimuli")
        idx = np.concatenate([np.arange(self.raw_start[s], self.raw_start[s] + self.lengths[s])
                              for s in stim])
        return self.raw[torch.from_numpy(idx)].float()

    def cells(self, cell_of: np.ndarray, n_cells: int):
        """Per-cell ``n`` [C], centred sum ``NM`` [C, N] and ``SS`` about the cell mean [C, N];
        ``cell_of[s]`` is stimulus ``s``'s cell (``-1``: not used)."""
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


def _record_store(
    model: Any,
    texts: list[str],
    hooks: Sequence[str],
    time_mode: str,
    include_bos: bool,
    batch_size: int,
    max_new_tokens: int,
    seed: int,
    keep_raw: set[int] | None = None,
    chunk: int = 32,
    progress: Callable[[str], None] | None = None,
) -> tuple[_Store, UnitIndex]:
    from neuroprobe.core import capture

    means, sss, lengths, raws = [], [], [], []
    raw_start: dict[int, int] = {}
    n_raw = 0
    units = None
    for c0 in range(0, len(texts), chunk):
        sub = texts[c0 : c0 + chunk]
        if time_mode == "prompt":
            rec = capture.record(model, sub, hooks=list(hooks), batch_size=batch_size,
                                 include_bos=include_bos, progress=False)
        else:
            rec = capture.record_generation(model, sub, max_new_tokens=max_new_tokens,
                                            hooks=list(hooks), seed=seed + c0, progress=False)
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
                f"stimulus {bad} ({texts[bad]!r:.60}) produced no time point; with "
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
        if progress is not None and (c0 // chunk) % 4 == 3 or c0 + chunk >= len(texts):
            if progress is not None:
                progress(f"recorded {min(c0 + chunk, len(texts))}/{len(texts)} stimuli")
    raw = torch.cat(raws) if raws else None
    lens = np.concatenate(lengths).astype(np.int64)
    mean = torch.cat(means)
    del means
    nt = torch.from_numpy(lens).double()[:, None]
    mu = (mean * nt).sum(0) / nt.sum()
    mean -= mu
    nm = mean * nt
    q = torch.cat(sss).double()
    del sss
    q += nm * mean
    del mean
    store = _Store(lens, nm, q, raw, raw_start or None)
    if not isinstance(units, UnitIndex):
        units = UnitIndex.from_units(units)
    return store, units


# ---------------------------------------------------------------------------------------------
# splits of prompts into runs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Run:
    task: str
    run: int
    stim: tuple[int, ...]  # stimulus ids in block order
    conditions: tuple[str, ...]


def _split(rng: np.random.Generator, ids: dict[str, list[tuple[int, int]]], n_runs: int,
           n_blocks: int) -> list[_Run]:
    """Random partition of each task's (prompt, control) pairs into runs."""
    runs = []
    for task, pairs in ids.items():
        order = rng.permutation(len(pairs))[: n_runs * n_blocks]
        for r in range(n_runs):
            stim, cond = [], []
            task_first = bool(rng.integers(2))
            for i in order[r * n_blocks : (r + 1) * n_blocks]:
                p, c = pairs[int(i)]
                seq = [(p, task), (c, CONTROL)]
                for s, k in seq if task_first else seq[::-1]:
                    stim.append(s)
                    cond.append(k)
            runs.append(_Run(task, r, tuple(stim), tuple(cond)))
    return runs


def _blocks(store: _Store, run: _Run, run_label: int = 0) -> list[tuple[str, int, int]]:
    return [(c, int(store.lengths[s]), run_label) for s, c in zip(run.stim, run.conditions,
                                                                   strict=True)]


# ---------------------------------------------------------------------------------------------
# GLM per run
# ---------------------------------------------------------------------------------------------
_FAST_CORRECTIONS = ("bonferroni", "holm", "fdr_bh", "none")


def _reject(p: np.ndarray, alpha: float, correction: str) -> np.ndarray:
    """Multiple-comparison decisions (statsmodels' multipletests conventions)."""
    n = p.size
    if correction == "none":
        return p <= alpha
    if correction == "bonferroni":
        return p * n <= alpha
    order = np.argsort(p, kind="stable")
    ps = p[order]
    out = np.zeros(n, bool)
    if correction == "holm":
        ok = ps * (n - np.arange(n)) <= alpha
        k = n if ok.all() else int(np.argmin(ok))  # first failure stops the step-down
        out[order[:k]] = True
    else:  # fdr_bh step-up
        ok = np.flatnonzero(ps * n / np.arange(1, n + 1) <= alpha)
        if ok.size:
            out[order[: ok[-1] + 1]] = True
    return out


@dataclass
class _Fitter:
    """Contrasts of block-design runs, fast (cell sums of per-stimulus statistics) or full
    (:func:`neuroprobe.fit_glm` on the concatenated rows; identical results)."""

    store: _Store
    alpha: float
    correction: str
    glm: str = "fast"
    _crit: dict = field(default_factory=dict)

    def _decide(self, t: torch.Tensor, const: torch.Tensor, df: np.ndarray) -> torch.Tensor:
        """Significance of ``t`` [R, N] with ``df`` [R] after the correction over N units."""
        from scipy import stats

        N = t.shape[1]
        if self.correction in ("bonferroni", "none"):
            level = self.alpha / N if self.correction == "bonferroni" else self.alpha
            crit = []
            for d in df.tolist():  # p <= level  <=>  t >= isf(level, df)
                key = (level, int(d))
                if key not in self._crit:
                    self._crit[key] = float(stats.t.isf(level, d))
                crit.append(self._crit[key])
            mask = t >= torch.tensor(crit, dtype=t.dtype)[:, None]
        else:
            p = stats.t.sf(t.numpy(), df[:, None])
            mask = torch.from_numpy(np.stack([_reject(row, self.alpha, self.correction)
                                              for row in p]))
        return mask & ~const

    def _t(self, effect: torch.Tensor, var_factor: np.ndarray, ss: torch.Tensor,
           df: np.ndarray):
        """t [R, N] (float32) and mask [R, N] for effects [R, N], ``var_factor`` [R], pooled
        residual sums of squares [R, N] and residual df [R]."""
        dft = torch.from_numpy(df.astype(np.float64))[:, None]
        vft = torch.from_numpy(np.asarray(var_factor, dtype=np.float64))[:, None]
        sigma2 = ss / dft
        const = sigma2 <= 1e-24 * (1.0 + effect.abs())
        t = effect / torch.sqrt(sigma2 * vft)
        t = t.masked_fill_(const, 0.0)
        return t, self._decide(t, const, df)

    def split(self, runs: list[_Run], tasks: Sequence[str]):
        """For every run, ``task - control`` (design: task and control boxcars) and
        ``task - mean(other tasks)`` in one GLM over the runs sharing its run number (task
        boxcars, control boxcar, run regressors).  Returns two lists of ``(t, mask)``
        (float32 [N], bool [N]), both in the order of ``runs``."""
        if self.glm == "full":
            return self._split_full(runs, tasks)
        lo = min(min(r.stim) for r in runs)
        hi = max(max(r.stim) for r in runs) + 1
        sub = _Store(self.store.lengths[lo:hi], self.store.nm[lo:hi], self.store.q[lo:hi])
        cell_of = np.full(hi - lo, -1)
        for i, r in enumerate(runs):
            for st, c in zip(r.stim, r.conditions, strict=True):
                cell_of[st - lo] = 2 * i + (c == CONTROL)
        n, M, SS = sub.cells(cell_of, 2 * len(runs))
        R = len(runs)
        nt, nc = n[0::2], n[1::2]
        D = M[0::2] - M[1::2]  # [R, N] task - control within each run
        SSr = SS[0::2] + SS[1::2]
        v = 1 / nt + 1 / nc
        t1, m1 = self._t(D, v, SSr, (nt + nc - 2).astype(np.int64))
        # task-specific: W @ D with W[i, i] = 1, W[i, j] = -1/(k-1) for j in i's group
        rn = np.asarray([r.run for r in runs])
        same = (rn[:, None] == rn[None, :]).astype(np.float64)
        k = same.sum(1)
        W = np.where(np.eye(R, dtype=bool), 1.0, -same / np.maximum(k - 1, 1)[:, None])
        eff = torch.from_numpy(W) @ D
        vf = v + (same - np.eye(R)) @ v / np.maximum(k - 1, 1) ** 2
        ss_g = torch.from_numpy(same) @ SSr
        df_g = (same @ (nt + nc) - 2 * k).astype(np.int64)
        t2, m2 = self._t(eff, vf, ss_g, df_g)
        t1, t2 = t1.float(), t2.float()
        return ([(t1[i], m1[i]) for i in range(R)], [(t2[i], m2[i]) for i in range(R)])

    def _split_full(self, runs: list[_Run], tasks: Sequence[str]):
        vs_control = [self._full([r], lambda cols, r=r: f"{r.task} - {CONTROL}") for r in runs]
        specific = []
        for r in runs:
            group = [g for g in runs if g.run == r.run]
            specific.append(self._full(group, _specific_vector(r.task, tasks)))
        return vs_control, specific

    def _full(self, group: list[_Run], contrast):
        from neuroprobe.glm.design import BlockDesign
        from neuroprobe.glm.fit import fit_glm

        Y = torch.cat([self.store.rows(r.stim) for r in group])
        blocks = [b for j, r in enumerate(group) for b in _blocks(self.store, r, j)]
        X = BlockDesign.from_blocks(blocks).matrix
        con = fit_glm(Y, X, dtype=torch.float64).contrast(contrast(list(X.columns)))
        mask = con.significant(alpha=self.alpha, correction=self.correction)
        return torch.as_tensor(con.t).float().cpu(), torch.as_tensor(mask).cpu()


def _specific_vector(task: str, tasks: Sequence[str]):
    def vec(columns: list[str]) -> np.ndarray:
        v = np.zeros(len(columns))
        present = [t for t in tasks if t in columns]
        others = [t for t in present if t != task]
        v[columns.index(task)] = 1.0
        for t in others:
            v[columns.index(t)] = -1.0 / len(others)
        return v

    return vec


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionalNetworksResult:
    """Everything :func:`functional_networks` measured.

    The headline numbers are in :meth:`summary` (the ``results.json`` content); the
    networks, overlap matrices, templates and t-maps of the first split are kept for
    figures and further analysis.  :meth:`save` writes ``results.json``, the figures and
    (``report=True``) ``report.html``.
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
    tmaps: np.ndarray = field(repr=False)
    design: pd.DataFrame = field(repr=False)
    metrics: dict = field(repr=False)
    seconds: dict = field(repr=False)
    notes: tuple[str, ...] = ()

    @property
    def n_units(self) -> int:
        return len(self.units)

    def summary(self) -> dict:
        """The ``results.json`` dictionary (plain Python types)."""
        m = self.metrics
        out = {
            "model": self.model,
            "n_units": self.n_units,
            "hooks": m.get("hooks", self.units.hooks),
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
            "noise_model_sizes": m.get("noise_model_sizes", {}),
            "seconds": round(float(sum(self.seconds.values())), 2),
            "seconds_by_stage": {k: round(float(v), 2) for k, v in self.seconds.items()},
            "notes": list(self.notes),
        }
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
        m = self.metrics
        return (
            f"FunctionalNetworksResult({self.model}, {self.n_units} units, "
            f"{len(self.tasks)} tasks x {self.n_runs_per_task} runs, {self.time_mode} tokens: "
            f"dice within {m['within_task_dice']:.3f} / across {m['across_task_dice']:.3f}, "
            f"heldout acc {m['heldout_accuracy']:.3f}, set-B acc "
            f"{m['heldout_prompts_accuracy']:.3f}, chance {1 / len(self.tasks):.2f})"
        )


def _contrast_summary(within, across, acc_runs, acc_prompts, acc_null) -> dict:
    """Repeatability and prediction figures of one contrast's networks (means over pairs and
    random splits, with the spread of the accuracies)."""
    m_acc, s_acc = _mean_std(acc_runs)
    m_pa, s_pa = _mean_std(acc_prompts)
    return {
        "within_task_dice": _mean_std(within)[0],
        "across_task_dice": _mean_std(across)[0],
        "heldout_accuracy": m_acc,
        "heldout_accuracy_std": s_acc,
        "heldout_prompts_accuracy": m_pa,
        "heldout_prompts_accuracy_std": s_pa,
        "null_accuracy": _mean_std(acc_null)[0],
    }


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


def _mean_std(v: Sequence[float]) -> tuple[float, float]:
    a = np.asarray([x for x in v if not math.isnan(x)], dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


# ---------------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------------
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

    Returns
    -------
    FunctionalNetworksResult

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
    if time not in _TIME_MODES:
        raise NeuroprobeError(f"time must be one of {_TIME_MODES}; got {time!r}")
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
    if glm == "fast" and correction not in _FAST_CORRECTIONS:
        raise NeuroprobeError(
            f"correction={correction!r} needs glm='full' (the fast path supports "
            f"{_FAST_CORRECTIONS}); max_t is offered through noise_models=('ols', 'max_t')"
        )
    for nm in noise_models:
        if nm not in ("ols", "ar1", "max_t"):
            raise NeuroprobeError(
                f"noise_models entries must be 'ols', 'ar1' or 'max_t'; got {nm!r}"
            )
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise NeuroprobeError(
            "model has no tokenizer; pass tokenizer= (e.g. neuroprobe.networks.stimuli.toy_tokenizer "
            "for a random native model)"
        )

    # ---- stimuli ------------------------------------------------------------------------
    set_a = load_prompts(prompts, split="A", tasks=tasks)
    try:
        set_b: PromptSet | None = load_prompts(prompts, split="B", tasks=set_a.tasks)
    except NeuroprobeError as e:
        if "is not in the prompt source" not in str(e):
            raise
        set_b = None
    task_names = set_a.tasks
    _require_enough_prompts(set_a, n_runs, n_task_blocks)
    need = n_runs * n_task_blocks
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

    texts: list[str] = []
    ids: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for name, ps, n_use in (("A", set_a, need), ("B", set_b, n_runs_b * n_task_blocks)):
        if ps is None:
            continue
        ids[name] = {}
        sel = {t: list(ps[t]) for t in task_names}
        flat = [p for t in task_names for p in sel[t]]
        lens = count_tokens(tok, flat)
        n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
        limit = (n_ctx - 1 - (max_new_tokens if time == "generated" else 0)) if n_ctx else None
        if limit is not None and lens.max() > limit:
            i = int(np.argmax(lens))
            raise NeuroprobeError(
                f"prompt {flat[i]!r:.60} has {int(lens[i])} tokens, longer than the model's "
                f"context allows ({n_ctx} incl. BOS"
                + (f" and {max_new_tokens} generated tokens" if time == "generated" else "")
                + "). Shorten or drop it."
            )
        from neuroprobe.networks.stimuli import random_word_controls

        ctl = random_word_controls(tok, lens, words=words, seed=seed + (0 if name == "A" else 7))
        k = 0
        for t in task_names:
            pairs = []
            for _ in sel[t]:
                pairs.append((len(texts), len(texts) + 1))
                texts.extend([flat[k], ctl[k]])
                k += 1
            ids[name][t] = pairs
        del n_use
    seconds["stimuli"] = _clock() - time_now
    time_now = _clock()

    # ---- recording ----------------------------------------------------------------------
    all_hooks = list(hooks) + (list(MLP_HIDDEN_HOOKS) if mlp_hidden else [])
    say(f"recording {len(texts)} stimuli ({time} tokens) at {len(all_hooks)} hook patterns")
    extra = [nm for nm in noise_models if nm != "ols"]
    # all random splits of prompts into runs are drawn up front (they do not depend on the
    # data), so that only the rows needed later are kept in memory
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(n_splits):
        ra = _split(rng, ids["A"], n_runs, n_task_blocks)
        rb = _split(rng, ids["B"], n_runs_b, n_task_blocks) if "B" in ids else []
        splits.append((ra, rb))
    if glm == "full":
        keep_raw: set[int] | None = set(range(len(texts)))
    elif extra:
        keep_raw = {i for r in splits[0][0] if r.run < noise_runs for i in r.stim}
    else:
        keep_raw = None
    store, units = _record_store(model, texts, all_hooks, time, include_bos, batch_size,
                                 max_new_tokens, seed, keep_raw=keep_raw, progress=say)
    n_units = len(units)
    seconds["recording"] = _clock() - time_now
    time_now = _clock()
    say(f"recorded {int(store.lengths.sum())} time points x {n_units} units")

    # ---- GLM over splits ----------------------------------------------------------------
    fitter = _Fitter(store, alpha, correction, glm)
    threshold = f"{correction} p<{alpha}"
    t_glm = 0.0
    t_net = 0.0
    first: dict[str, Any] = {}
    acc_runs, acc_null, acc_prompts = [], [], []
    spec_acc, spec_prompts, spec_null = [], [], []
    within, across, spec_within, spec_across = [], [], [], []
    confusion = np.zeros((len(task_names), len(task_names) + 1), int)
    p_confusion = np.zeros_like(confusion)
    tmaps = np.zeros((len(task_names), n_units), np.float32)

    def run_networks(runs: list[_Run], keep_t: bool):
        g0 = _clock()
        vs_control, specific = fitter.split(runs, task_names)
        nets = []
        for r, (t, mask) in zip(runs, vs_control, strict=True):
            nets.append(FunctionalNetwork(mask, units, task=r.task, run=r.run,
                                          threshold=threshold))
            if keep_t:
                tmaps[task_names.index(r.task)] += t.numpy() / n_runs
                if "design" not in first:
                    from neuroprobe.glm.design import BlockDesign

                    first["design"] = BlockDesign.from_blocks(_blocks(store, r)).matrix
        spec = [FunctionalNetwork(mask, units, task=r.task, run=r.run,
                                  threshold=threshold + ", vs other tasks")
                for r, (_, mask) in zip(runs, specific, strict=True)]
        return nets, spec, _clock() - g0

    def loo(nets: list[FunctionalNetwork], null_rng=None):
        """Leave-one-run-out accuracy (and confusion counts)."""
        accs, cm = [], np.zeros_like(confusion)
        for held in range(n_runs):
            train = [n for n in nets if n.run != held]
            test = [n for n in nets if n.run == held]
            if null_rng is not None:
                perm = null_rng.permutation(len(train))
                train = [FunctionalNetwork(train[j].mask, units, task=train[i].task,
                                           run=train[i].run) for i, j in enumerate(perm)]
            tm = templates(train, min_runs=_min_runs(min_runs, n_runs - 1))
            pred = predict_task(test, tm)
            accs.append(pred.accuracy)
            _add_confusion(cm, pred, task_names)
        return float(np.mean(accs)), cm

    for s in range(n_splits):
        runs_a, runs_b = splits[s]
        nets, spec, dt = run_networks(runs_a, keep_t=(s == 0))
        t_glm += dt
        if "B" in ids:
            nets_b, spec_b, dt = run_networks(runs_b, keep_t=False)
            t_glm += dt
        g0 = _clock()
        om, som = overlap_matrix(nets), overlap_matrix(spec)
        within.append(om.within_task_mean)
        across.append(om.across_task_mean)
        spec_within.append(som.within_task_mean)
        spec_across.append(som.across_task_mean)
        a, cm = loo(nets)
        acc_runs.append(a)
        confusion += cm
        acc_null.append(loo(nets, null_rng=np.random.default_rng(seed + 1000 + s))[0])
        spec_acc.append(loo(spec)[0])
        spec_null.append(loo(spec, null_rng=np.random.default_rng(seed + 2000 + s))[0])
        tm_all = templates(nets, min_runs=_min_runs(min_runs, n_runs))
        stm_all = templates(spec, min_runs=_min_runs(min_runs, n_runs))
        if "B" in ids:
            pred_b = predict_task(nets_b, tm_all)
            acc_prompts.append(pred_b.accuracy)
            _add_confusion(p_confusion, pred_b, task_names)
            spec_prompts.append(predict_task(spec_b, stm_all).accuracy)
        if s == 0:
            first.update(nets=nets, spec=spec, om=om, som=som, tm=tm_all, stm=stm_all,
                         nets_b=nets_b if "B" in ids else [], runs_a=runs_a)
        t_net += _clock() - g0
        say(f"split {s + 1}/{n_splits}: held-out accuracy {a:.2f}")
    seconds["glm"] = t_glm
    seconds["networks"] = t_net
    time_now = _clock()

    # ---- noise models (first split, set A) ---------------------------------------------
    noise_sizes: dict[str, Any] = {}
    if extra:
        nruns = [r for r in first["runs_a"] if r.run < noise_runs]
        noise_sizes["runs"] = sorted({r.run for r in nruns})
        noise_sizes["ols"] = {t: [n.size for n in first["nets"] if n.task == t
                                  and n.run < noise_runs] for t in task_names}
        for nm in extra:
            try:
                noise_sizes[nm] = _noise_model_sizes(nm, nruns, store, fitter,
                                                     task_names, seed, n_permutations)
            except Exception as e:  # report, do not fail the whole experiment
                noise_sizes[nm] = f"not available: {type(e).__name__}: {e}"[:300]
                notes.append(f"noise model {nm!r} failed: {e}"[:200])
    seconds["noise_models"] = _clock() - time_now

    # ---- summaries ----------------------------------------------------------------------
    core = shared_core(first["tm"])
    tm_sizes = [first["tm"][t].size for t in task_names]
    core_frac = core.size / float(np.mean(tm_sizes)) if np.mean(tm_sizes) > 0 else float("nan")
    spec_core = shared_core(first["stm"])
    if all(n.size == 0 for n in first["nets"]):
        notes.append("no unit passed the threshold in any run: every network is empty, "
                     "prediction is undefined (reported as no prediction)")
    by_layer, peak = _layer_profile(first["tm"], units, task_names)
    s_by_layer, s_peak = _layer_profile(first["stm"], units, task_names)
    metrics = {
        **_contrast_summary(within, across, acc_runs, acc_prompts, acc_null),
        "shared_core_fraction": core_frac,
        "specific_contrast": {
            "contrast": "task - mean(other tasks), one GLM over the five tasks' runs",
            "network_sizes": {t: [n.size for n in first["spec"] if n.task == t]
                              for t in task_names},
            **_contrast_summary(spec_within, spec_across, spec_acc, spec_prompts, spec_null),
            "shared_core_size": spec_core.size,
            "network_fraction_by_layer": s_by_layer,
            "peak_layer": s_peak,
        },
        "confusion": _confusion_dict(confusion, task_names),
        "prompts_confusion": _confusion_dict(p_confusion, task_names),
        "network_fraction_by_layer": by_layer,
        "peak_layer": peak,
        "noise_model_sizes": noise_sizes,
        "hooks": [h if isinstance(h, str) else repr(h) for h in all_hooks],
    }
    name = model_name or getattr(getattr(model, "cfg", None), "model_name", None) or type(
        model).__name__
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
        networks=tuple(first["nets"]),
        specific_networks=tuple(first["spec"]),
        heldout_networks=tuple(first["nets_b"]),
        overlap=first["om"],
        specific_overlap=first["som"],
        templates=first["tm"],
        specific_templates=first["stm"],
        core=core,
        tmaps=tmaps,
        design=first["design"],
        metrics=metrics,
        seconds=seconds,
        notes=tuple(notes),
    )


def _clock() -> float:
    return time.perf_counter()


def _min_runs(min_runs: int | None, n: int) -> int:
    return n // 2 + 1 if min_runs is None else max(1, min(int(min_runs), n))


def _add_confusion(cm: np.ndarray, pred, task_names: Sequence[str]) -> None:
    for t, p in zip(pred.true, pred.predicted, strict=True):
        j = len(task_names) if p is None else task_names.index(p)
        cm[task_names.index(t), j] += 1


def _confusion_dict(cm: np.ndarray, task_names: Sequence[str]) -> dict:
    cols = list(task_names) + ["none"]
    keep = cols if cm[:, -1].any() else cols[:-1]
    return {"rows_true": list(task_names), "columns_predicted": keep,
            "counts": cm[:, : len(keep)].tolist()}


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


def _noise_model_sizes(nm: str, runs: list[_Run], store: _Store, fitter: _Fitter,
                       task_names: Sequence[str], seed: int,
                       n_permutations: int = 1000) -> dict[str, list[int]]:
    """Network sizes of the given runs under AR(1) prewhitening or permutation max-T."""
    from neuroprobe.glm.design import BlockDesign
    from neuroprobe.glm.fit import fit_glm

    out: dict[str, list[int]] = {t: [] for t in task_names}
    for r in runs:
        Y = store.rows(r.stim)
        X = BlockDesign.from_blocks(_blocks(store, r)).matrix
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
