"""Tests of neuroprobe.networks.experiment.functional_networks, the report and the example script.

* planted structure: a fake recorder whose units respond to known tasks (a shared core for
  every task, a specific block per task) -- networks, templates, core and prediction must
  recover it exactly;
* fast-vs-full equivalence: the cell-means fast path equals fit_glm on the concatenated rows;
* end to end on a tiny random native model with an offline BPE tokenizer (CI);
* bad input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from neuroprobe import NeuroprobeError
from neuroprobe.core import capture as capture_mod
from neuroprobe.core.units import UnitIndex
from neuroprobe.networks.experiment import FunctionalNetworksResult, functional_networks
from neuroprobe.networks.stimuli import load_prompts, load_words, toy_tokenizer

ROOT = Path(__file__).resolve().parents[2]
RESULT_KEYS = {
    "model", "n_units", "n_runs_per_task", "tasks", "time_mode", "correction", "alpha",
    "network_sizes", "within_task_dice", "across_task_dice", "overlap_matrix",
    "heldout_accuracy", "heldout_accuracy_std", "heldout_prompts_accuracy",
    "shared_core_size", "specific_contrast", "null_accuracy", "chance", "confusion", "seconds",
}
TASKS3 = ("political_science", "paleontology", "pathology")


@pytest.fixture(scope="module")
def tok():
    texts = (load_prompts().to_dataframe().prompt.tolist()
             + load_prompts(split="B").to_dataframe().prompt.tolist() + list(load_words()))
    return toy_tokenizer(texts, vocab_size=500)


@pytest.fixture(scope="module")
def small():
    """12 set-A and 8 set-B prompts of three tasks: enough for 3 runs x 4 blocks."""
    a, b = load_prompts(split="A", tasks=TASKS3), load_prompts(split="B", tasks=TASKS3)
    return {"sets": {"A": {t: list(a[t][:12]) for t in TASKS3},
                     "B": {t: list(b[t][:8]) for t in TASKS3}}}


@pytest.fixture(scope="module")
def tiny(tok):
    from transformer_lens.model_bridge import TransformerBridge

    cfg = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=len(tok),
               n_ctx=96, act_fn="relu", normalization_type="LN", seed=0)
    m = TransformerBridge.boot_native(cfg, tokenizer=tok)
    m.requires_grad_(False)
    return m


# ---- planted structure ----------------------------------------------------------------------
N_CORE, N_SPEC, N_UNITS = 4, 6, 48


class PlantedRecorder:
    """Stands in for capture.record: each word is one time point; unit activations are
    noise plus +effect on the shared core for any task prompt and on task k's own units for
    task k's prompts."""

    def __init__(self, effect=2.0, seed=0):
        self.rng = np.random.default_rng(seed)
        self.effect = effect
        self.task_of = {}
        for split in ("A", "B"):
            ps = load_prompts(split=split, tasks=TASKS3)
            for k, t in enumerate(ps.tasks):
                for p in ps[t]:
                    self.task_of[p] = k
        self.units = UnitIndex.from_hooks({"blocks.0.hook_resid_post": N_UNITS // 2,
                                           "blocks.1.hook_resid_post": N_UNITS // 2})

    def __call__(self, model, prompts, hooks=None, **kw):
        rows, pidx = [], []
        for i, p in enumerate(prompts):
            n = len(p.split())
            a = self.rng.standard_normal((n, N_UNITS))
            k = self.task_of.get(p)
            if k is not None:
                a[:, :N_CORE] += self.effect
                s = N_CORE + k * N_SPEC
                a[:, s : s + N_SPEC] += self.effect
            rows.append(a)
            pidx += [i] * n
        return SimpleNamespace(acts=torch.tensor(np.concatenate(rows), dtype=torch.float32),
                               prompt_index=torch.tensor(pidx), units=self.units)


def planted_truth():
    core = np.zeros(N_UNITS, bool)
    core[:N_CORE] = True
    spec = {}
    for k, t in enumerate(TASKS3):
        m = np.zeros(N_UNITS, bool)
        m[N_CORE + k * N_SPEC : N_CORE + (k + 1) * N_SPEC] = True
        spec[t] = m
    return core, spec


def word_counter(texts):
    return [len(t.split()) for t in texts]


def test_planted_networks_recovered_exactly(monkeypatch):
    monkeypatch.setattr(capture_mod, "record", PlantedRecorder())
    res = functional_networks(object(), tasks=TASKS3, n_runs=5, n_task_blocks=8, n_splits=4,
                              tokenizer=word_counter, model_name="planted", seed=1)
    core, spec = planted_truth()
    for t in TASKS3:
        np.testing.assert_array_equal(res.templates[t].mask.numpy(), core | spec[t])
        np.testing.assert_array_equal(res.specific_templates[t].mask.numpy(), spec[t])
    np.testing.assert_array_equal(res.core.mask.numpy(), core)
    s = res.summary()
    assert s["shared_core_size"] == N_CORE and s["specific_contrast"]["shared_core_size"] == 0
    assert s["heldout_accuracy"] == 1.0 and s["heldout_prompts_accuracy"] == 1.0
    assert s["specific_contrast"]["heldout_accuracy"] == 1.0
    assert s["within_task_dice"] > 0.95 > 0.6 > s["across_task_dice"]
    # core/(core+spec) = 4/10 of each network is shared: across-task Dice ~ 0.4
    assert abs(s["across_task_dice"] - N_CORE / (N_CORE + N_SPEC)) < 0.05
    assert s["null_accuracy"] < 0.7  # shuffled labels lose the task information
    assert set(s) >= RESULT_KEYS
    cm = np.asarray(s["confusion"]["counts"])
    assert np.trace(cm) == cm.sum() == 4 * 5 * 3  # splits x folds x tasks
    assert res.tmaps.shape == (3, N_UNITS)
    assert (res.tmaps[0, N_CORE : N_CORE + N_SPEC] > 5).all()


def test_no_signal_is_reported_not_divided_by_zero(monkeypatch):
    monkeypatch.setattr(capture_mod, "record", PlantedRecorder(effect=0.0))
    res = functional_networks(object(), tasks=TASKS3, n_runs=3, n_task_blocks=4, n_splits=2,
                              tokenizer=word_counter, model_name="null", alpha=1e-6)
    s = res.summary()
    assert all(sz == 0 for v in s["network_sizes"].values() for sz in v)
    assert any("no unit passed the threshold" in n for n in s["notes"])
    assert s["heldout_accuracy"] == 0.0  # every prediction is "none", counted as wrong
    assert "none" in s["confusion"]["columns_predicted"]
    json.dumps(s)  # nan-free, serialisable


def test_metrics_are_typed_and_noise_model_failures_are_one_type(monkeypatch):
    import dataclasses

    from jaxtyping import Float

    from neuroprobe.networks import experiment as ex

    monkeypatch.setattr(capture_mod, "record", PlantedRecorder())

    def broken_fit_glm(*args, **kwargs):
        raise RuntimeError("no rows today")

    monkeypatch.setattr(ex, "fit_glm", broken_fit_glm)
    res = functional_networks(object(), tasks=TASKS3, n_runs=3, n_task_blocks=4, n_splits=2,
                              tokenizer=word_counter, model_name="planted",
                              noise_models=("ols", "ar1"))
    m, s = res.metrics, res.summary()
    assert isinstance(m, ex.FunctionalNetworksMetrics)
    assert isinstance(m.task_vs_control, ex.ContrastMetrics)
    assert round(m.task_vs_control.heldout_accuracy, 6) == s["heldout_accuracy"]
    assert round(m.specific.within_task_dice, 6) == s["specific_contrast"]["within_task_dice"]
    assert m["heldout_accuracy"] == m.task_vs_control.heldout_accuracy  # 0.1 dict access
    assert m.confusion.to_numpy().sum() == 2 * 3 * 3  # splits x folds x tasks
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.shared_core_fraction = 0.0
    ols, ar1 = m.noise_models
    assert isinstance(ar1, ex.NoiseModelSizes) and ols.error is None and m.noise_model_runs == (0,)
    assert ar1.sizes == {} and ar1.error == "not available: RuntimeError: no rows today"
    assert s["noise_model_sizes"]["ar1"] == ar1.error  # results.json keeps its keys
    assert s["noise_model_sizes"]["ols"] == ols.sizes and s["noise_model_sizes"]["runs"] == [0]
    assert "noise model 'ar1' failed: no rows today" in s["notes"]
    assert isinstance(res.tmaps, Float[np.ndarray, "task unit"])
    assert res.tmaps.shape == (3, N_UNITS)


# ---- fast path vs fit_glm --------------------------------------------------------------------
def test_fast_glm_equals_fit_glm_on_native_model(tiny, small):
    kw = dict(prompts=small, n_runs=3, n_task_blocks=4, n_splits=1, seed=3,
              alpha=0.05, correction="holm")
    fast = functional_networks(tiny, glm="fast", **kw)
    full = functional_networks(tiny, glm="full", **kw)
    for a, b in zip(fast.networks + fast.specific_networks + fast.heldout_networks,
                    full.networks + full.specific_networks + full.heldout_networks,
                    strict=True):
        assert torch.equal(a.mask, b.mask), (a.name, a.size, b.size)
    np.testing.assert_allclose(fast.tmaps, full.tmaps, rtol=1e-3, atol=1e-3)
    assert fast.summary()["heldout_accuracy"] == full.summary()["heldout_accuracy"]
    assert sum(n.size for n in fast.networks) > 0  # the comparison is not vacuous


# ---- end to end -------------------------------------------------------------------------------
def test_end_to_end_native_model_results_figures_report(tiny, small, tmp_path):
    res = functional_networks(tiny, small, n_runs=3, n_task_blocks=4, n_splits=2,
                              noise_models=("ols", "ar1", "max_t"), n_permutations=50)
    assert isinstance(res, FunctionalNetworksResult)
    assert res.n_units == 2 * 3 * 16 and "96 units" in repr(res)
    path = res.save(tmp_path, report=True)
    assert path.name == "report.html"
    s = json.loads((tmp_path / "results.json").read_text())
    assert set(s) >= RESULT_KEYS
    assert s["time_mode"] == "prompt" and s["include_bos"] is False
    assert s["chance"] == pytest.approx(1 / 3)
    nm = s["noise_model_sizes"]
    assert set(nm) == {"runs", "ols", "ar1", "max_t"} and nm["runs"] == [0]
    assert all(len(nm[k]["pathology"]) == 1 for k in ("ols", "ar1", "max_t"))
    assert len(s["network_sizes"]["pathology"]) == 3
    for fig in ("design_matrix", "tmaps", "overlap", "venn", "confusion", "network_by_layer"):
        assert (tmp_path / f"{fig}.png").stat().st_size > 1000
    html = path.read_text()
    assert "Headline numbers" in html and html.count("data:image/png;base64") >= 6
    df = res.to_dataframe()
    assert set(df["contrast"]) == {"task - control", "task - other tasks",
                                   "task - control (set B)"}


def test_generated_time_mode_runs(tiny):
    a = load_prompts(split="A", tasks=TASKS3[:2])
    few = {t: list(a[t][:4]) for t in a.tasks}
    res = functional_networks(tiny, few, n_runs=2, n_task_blocks=2, n_splits=1,
                              time="generated", max_new_tokens=3)
    assert res.time_mode == "generated"
    assert len(res.networks) == 4


def test_bad_input(tiny, tmp_path):
    with pytest.raises(NeuroprobeError, match="unknown task 'medcal'"):
        functional_networks(tiny, tasks=["medcal"])
    with pytest.raises(NeuroprobeError, match="needs 48 prompts per task, but"):
        functional_networks(tiny, n_runs=6, n_task_blocks=8)
    long = {"a": ["word " * 200, "short one"] * 1, "b": ["x y", "y z"]}
    with pytest.raises(NeuroprobeError, match="longer than the model's context"):
        functional_networks(tiny, long, n_runs=2, n_task_blocks=1)
    with pytest.raises(NeuroprobeError, match="time must be one of"):
        functional_networks(tiny, time="tokens")
    with pytest.raises(NeuroprobeError, match="n_runs must be >= 2"):
        functional_networks(tiny, n_runs=1)
    with pytest.raises(NeuroprobeError, match="needs glm='full'"):
        functional_networks(tiny, correction="max_t")
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"cooking": ["a"], "control": ["b"]}))
    with pytest.raises(NeuroprobeError, match="task name 'control' is not allowed"):
        functional_networks(tiny, f)


def test_example_script_help():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "functional_networks.py"),
                          "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--model", "--out", "--report", "--prompts", "--runs", "--time", "--seed"):
        assert flag in out.stdout


@pytest.mark.smollm2
def test_smollm2_small_run_separates_tasks(smollm2, small):
    res = functional_networks(smollm2, small, n_runs=3, n_task_blocks=4, n_splits=5,
                              hooks=("blocks.*.hook_resid_post",))
    s = res.summary()
    assert s["n_units"] == 30 * 576
    assert s["within_task_dice"] > s["across_task_dice"]
    assert s["heldout_accuracy"] > s["chance"]


def test_generate_prompts_is_seeded_and_cached(tiny, tmp_path):
    from neuroprobe.networks.stimuli import generate_prompts

    a = generate_prompts(tiny, "volcanoes", n=2, seed=1, cache_dir=tmp_path, max_new_tokens=6,
                         max_attempts=2)
    files = list(tmp_path.glob("prompts-*.json"))
    assert len(files) == 1 and isinstance(a, list) and len(a) <= 2
    assert json.loads(files[0].read_text())["prompts"] == a
    # served from the cache: the same list without generating again

    class NoGenerate:
        cfg, tokenizer = tiny.cfg, tiny.tokenizer

        def generate(self, *args, **kwargs):
            raise AssertionError("generate called despite the cache")

    assert generate_prompts(NoGenerate(), "volcanoes", n=2, seed=1, cache_dir=tmp_path,
                            max_new_tokens=6) == a


def test_recording_as_shard_tasks_equals_one_process(tiny, small):
    """client=: the stimuli are recorded as shard tasks cut at the recording's chunks, so
    every statistic, network and score is the serial run's (raw rows kept for AR(1) too)."""
    from neuroprobe.distributed import SerialBackend

    kw = dict(n_runs=3, n_task_blocks=4, n_splits=2, noise_models=("ols", "ar1"))
    one = functional_networks(tiny, small, **kw).summary()
    sharded = functional_networks(tiny, small, client=SerialBackend(), **kw).summary()
    timings = [k for k in one if "second" in k or "time_s" in k]
    for key in timings:
        one.pop(key)
        sharded.pop(key)
    assert json.dumps(one, sort_keys=True, default=str) == json.dumps(
        sharded, sort_keys=True, default=str)
def test_dissociation_section_on_native_model(tiny, small, tmp_path):
    """dissociation=True: each task-specific template ablated on every task's set-B
    prompts, equal to npb.dissociation called by hand; in results.json and the report."""
    import neuroprobe as npb

    res = functional_networks(tiny, small, n_runs=3, n_task_blocks=4, n_splits=1,
                              alpha=0.5, correction="none", dissociation=True,
                              dissociation_mode="zero")
    d = res.dissociation
    assert d is not None and d.delta_ce.shape == (3, 3)
    assert d.networks == TASKS3 and d.conditions == TASKS3
    assert any(res.specific_templates[t].size for t in TASKS3)
    b = load_prompts(split="B", tasks=TASKS3)
    want = npb.dissociation(tiny, {t: res.specific_templates[t] for t in TASKS3},
                            {t: list(b[t][:8]) for t in TASKS3}, mode="zero")
    np.testing.assert_allclose(d.delta_ce, want.delta_ce, rtol=1e-5, atol=1e-6)
    assert np.abs(d.delta_ce).max() > 0
    path = res.save(tmp_path, report=True)
    s = json.loads((tmp_path / "results.json").read_text())
    assert s["task_dissociation"]["networks"] == list(TASKS3)
    assert np.array(s["task_dissociation"]["delta_ce"]).shape == (3, 3)
    assert "diagonal_wins" in s["task_dissociation"]
    html = path.read_text()
    assert "Causal test: task-specific networks" in html and "dissociation heatmap" in html
    # off by default: no key, no section
    plain = functional_networks(tiny, small, n_runs=3, n_task_blocks=4, n_splits=1)
    assert plain.dissociation is None and "task_dissociation" not in plain.summary()
    # mean-ablation takes its reference over the set-A stimuli (they fit the context of 96)
    mean = functional_networks(tiny, small, n_runs=3, n_task_blocks=4, n_splits=1,
                               alpha=0.5, correction="none", dissociation=True)
    assert mean.dissociation.mode == "mean" and mean.dissociation.delta_ce.shape == (3, 3)
    with pytest.raises(NeuroprobeError, match="dissociation_mode must be one of"):
        functional_networks(tiny, small, n_runs=3, n_task_blocks=4, n_splits=1,
                            dissociation=True, dissociation_mode="noise")
