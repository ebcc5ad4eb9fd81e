"""Hostile inputs to networks.sets and networks.stimuli (issue 16): every case either raises a
NeuroprobeError naming the argument, warns with NeuroprobeWarning, or gives a checked result."""

import numpy as np
import pytest
import torch

from neuroprobe.core.errors import NeuroprobeError, NeuroprobeWarning
from neuroprobe.core.units import UnitIndex
from neuroprobe.networks.sets import (
    FunctionalNetwork,
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
from neuroprobe.networks.stimuli import (
    BlockRun,
    PromptSet,
    count_tokens,
    generate_prompts,
    load_prompts,
    load_words,
    make_runs,
    random_word_controls,
    split_into_runs,
    toy_tokenizer,
)


def m(*v):
    return torch.tensor(v).bool()


UI_RESID = UnitIndex.from_hooks({"blocks.0.hook_resid_post": 4})
UI_MLP = UnitIndex.from_hooks({"blocks.0.hook_mlp_out": 4})
A0 = FunctionalNetwork(m(1, 1, 0, 0), units=UI_RESID, task="a", run=0)
A1 = FunctionalNetwork(m(1, 0, 1, 0), units=UI_RESID, task="a", run=1)
B0 = FunctionalNetwork(m(0, 1, 1, 0), units=UI_RESID, task="b", run=0)
B1 = FunctionalNetwork(m(0, 1, 1, 1), units=UI_RESID, task="b", run=1)
MLP = FunctionalNetwork(m(1, 0, 1, 0), units=UI_MLP, task="b", run=0)
EMPTY = FunctionalNetwork(m(0, 0, 0, 0), units=UI_RESID, task="z", run=0)
COUNT = lambda ts: [len(t.split()) for t in ts]  # noqa: E731  a token counter
WORDS = ["red", "cat", "sun"]
PS = PromptSet({"t1": [f"question {i} about stars" for i in range(6)]})
RNG = np.random.default_rng

RAISES = [
    # unit-index identity: same width, different hooks (the `a & b` rule everywhere)
    ("and_units", lambda: A0 & MLP, "different unit indexes"),
    ("dice_units", lambda: dice(A0, MLP), "different unit indexes"),
    ("jaccard_units", lambda: jaccard(A0, MLP), "different unit indexes"),
    ("method_dice_units", lambda: A0.dice(MLP), "different unit indexes"),
    ("overlap_units", lambda: overlap_matrix([A0, MLP]), "different unit indexes"),
    ("consensus_units", lambda: consensus([A0, MLP]), "different unit indexes"),
    ("shared_core_units", lambda: shared_core([A0, MLP]), "different unit indexes"),
    ("templates_units", lambda: templates([A0, A1, MLP]), "different unit indexes"),
    ("predict_units", lambda: predict_task([MLP], {"a": A0}), "different unit indexes"),
    ("loo_units", lambda: leave_one_run_out([A0, A1, MLP, B1]), "different unit indexes"),
    # integer arguments never truncated
    ("consensus_float", lambda: consensus([A0, A1, B0], min_runs=2.7), "min_runs"),
    ("consensus_bool", lambda: consensus([A0, A1, B0], min_runs=True), "min_runs"),
    ("consensus_str", lambda: consensus([A0, A1, B0], min_runs="2"), "min_runs"),
    ("consensus_zero", lambda: consensus([A0, A1], min_runs=0), "min_runs"),
    ("templates_float", lambda: templates([A0, A1], min_runs=2.7), "min_runs"),
    ("loo_float", lambda: leave_one_run_out([A0, A1, B0, B1], min_runs=1.5), "min_runs"),
    ("loo_shuffle_str", lambda: leave_one_run_out([A0, A1, B0, B1], shuffle="x"), "shuffle"),
    ("consensus_name", lambda: consensus([A0, A1], name=5), "name"),
    # empty, single and non-network inputs
    ("templates_empty", lambda: templates([]), "networks is empty"),
    ("templates_single", lambda: templates(A0), "networks must be a sequence"),
    ("templates_mask", lambda: templates([np.array([1, 0, 0, 0])]), r"networks\[0\]"),
    ("overlap_single", lambda: overlap_matrix(A0), "networks must be a sequence"),
    ("overlap_one", lambda: overlap_matrix([A0]), "at least 2"),
    ("overlap_int", lambda: overlap_matrix(5), "networks must be a sequence"),
    ("overlap_str", lambda: overlap_matrix("ab"), "networks must be a sequence"),
    ("overlap_empty", lambda: overlap_matrix([]), "at least 2"),
    ("overlap_metric", lambda: overlap_matrix([A0, A1], metric="Dice"), "metric"),
    ("shared_core_single", lambda: shared_core(A0), "networks must be a sequence"),
    ("shared_core_empty", lambda: shared_core({}), "networks is empty"),
    ("predict_single", lambda: predict_task(A0, {"a": A0}), "test must be a sequence"),
    ("predict_key", lambda: predict_task([A0], {3: A0}), "keyed by task name"),
    ("predict_list", lambda: predict_task([A0], [A0]), "templates must be a non-empty dict"),
    ("confusion_str", lambda: confusion_matrix("ab"), "predictions"),
    ("confusion_items", lambda: confusion_matrix([1, 2]), "TaskPrediction"),
    ("confusion_none_task", lambda: confusion_matrix([predict_task(
        [EMPTY], {"none": A0})]), "named 'none'"),
    ("loo_masks", lambda: leave_one_run_out([np.array([1, 0])] * 2), "FunctionalNetwork"),
    # masks
    ("dice_str", lambda: dice("ab", "cd"), "a must be a FunctionalNetwork or a 1-D"),
    ("dice_none", lambda: dice(None, A0), "a must be"),
    ("and_str", lambda: A0 & "x", "other must be"),
    ("mask_str", lambda: FunctionalNetwork("101"), "mask must be"),
    ("mask_none", lambda: FunctionalNetwork(None), "mask must be"),
    ("mask_float", lambda: FunctionalNetwork(torch.tensor([0.5, 1.0])), "must be boolean"),
    ("mask_nan", lambda: dice(np.array([np.nan, 1]), np.array([1, 0])), "must be boolean"),
    ("mask_empty", lambda: FunctionalNetwork(torch.zeros(0, dtype=torch.bool)), "0 entries"),
    ("units_type", lambda: FunctionalNetwork(m(1, 0), units=[1, 2]), "units must be a UnitIndex"),
    ("run_float", lambda: FunctionalNetwork(m(1, 0), run=1.5), "run"),
    ("task_int", lambda: FunctionalNetwork(m(1, 0), task=3), "task must be a str"),
    ("name_int", lambda: FunctionalNetwork(m(1, 0), name=3), "name must be a str"),
    # stimuli
    ("ps_name", lambda: PromptSet({"t": ["a"]}, name=5), "name must be a str"),
    ("ps_constant", lambda: PromptSet({"constant": ["a"]}), "reserved"),
    ("ps_run_regressor", lambda: PromptSet({"run_1": ["a"]}), "reserved"),
    ("ps_drift", lambda: PromptSet({"drift_2": ["a"]}), "reserved"),
    ("ps_select_none", lambda: PS.select(None), "tasks must be"),
    ("ps_select_dup", lambda: PS.select(["t1", "t1"]), "tasks repeats"),
    ("lp_split_int", lambda: load_prompts(split=5), "split must be a set name"),
    ("lp_sets_empty", lambda: load_prompts({"sets": {}}), "'sets' must be a non-empty"),
    ("lp_sets_list", lambda: load_prompts({"sets": ["a"]}), "'sets' must be a non-empty"),
    ("lp_dir", lambda: load_prompts("/"), "is a directory"),
    ("lw_int", lambda: load_words(5), "words must be None, a word-list file path"),
    ("lw_dir", lambda: load_words("/"), "is a directory"),
    ("ct_str", lambda: count_tokens(COUNT, "abc def"), "texts must be a list of strings"),
    ("ct_none", lambda: count_tokens(COUNT, None), "texts must be a list"),
    ("ct_nonstr", lambda: count_tokens(COUNT, [1, 2]), "texts must hold strings"),
    ("ct_float_counts", lambda: count_tokens(lambda ts: [1.5] * len(ts), ["a"]),
     "non-negative integer counts"),
    ("ct_negative_counts", lambda: count_tokens(lambda ts: [-1] * len(ts), ["a"]),
     "non-negative integer counts"),
    ("ct_none_counts", lambda: count_tokens(lambda ts: None, ["a"]), "token counter returned"),
    ("ct_str_counts", lambda: count_tokens(lambda ts: ["x"] * len(ts), ["a"]),
     "non-negative integer counts"),
    ("ct_signature", lambda: count_tokens(lambda a, b: 1, ["a"]), "take one argument"),
    ("rwc_float", lambda: random_word_controls(COUNT, [2.7, 3], words=WORDS), "lengths"),
    ("rwc_int", lambda: random_word_controls(COUNT, 3, words=WORDS), "lengths must be a list"),
    ("rwc_str", lambda: random_word_controls(COUNT, "3", words=WORDS), "lengths must be a list"),
    ("rwc_zero", lambda: random_word_controls(COUNT, [0], words=WORDS), "lengths must be >= 1"),
    ("rwc_seed_str", lambda: random_word_controls(COUNT, [3], words=WORDS, seed="x"), "seed"),
    ("rwc_seed_neg", lambda: random_word_controls(COUNT, [3], words=WORDS, seed=-1), "seed"),
    ("rwc_tries_neg", lambda: random_word_controls(COUNT, [3], words=WORDS, max_tries=-1),
     "max_tries"),
    ("rwc_tries_float", lambda: random_word_controls(COUNT, [3], words=WORDS, max_tries=2.5),
     "max_tries"),
    ("mr_seed_str", lambda: make_runs(PS, COUNT, 1, 2, words=WORDS, seed="x"), "seed"),
    ("mr_seed_float", lambda: make_runs(PS, COUNT, 1, 2, words=WORDS, seed=1.5), "seed"),
    ("mr_runs_float", lambda: make_runs(PS, COUNT, 2.5, 2, words=WORDS), "n_runs"),
    ("mr_blocks_bool", lambda: make_runs(PS, COUNT, 1, True, words=WORDS), "n_task_blocks"),
    ("br_str_prompts", lambda: BlockRun("t", 0, "ab", ("t", "control")), "prompts must be a"),
    ("br_bad_condition", lambda: BlockRun("t", 0, ("a", "b"), ("t", "ctrl")), "conditions"),
    ("br_run_float", lambda: BlockRun("t", 1.5, ("a", "b"), ("t", "control")), "run"),
    ("br_run_negative", lambda: BlockRun("t", -1, ("a", "b"), ("t", "control")), "run"),
    ("br_nonstr", lambda: BlockRun("t", 0, (1, 2), ("t", "control")), "prompts must hold"),
    ("br_task_int", lambda: BlockRun(5, 0, ("a",), (5,)), "task must be a str"),
    ("br_ids_float", lambda: BlockRun("t", 0, ("a", "b"), ("t", "control"),
                                      stimulus_ids=(0.5, 1)), "stimulus_ids"),
    ("br_blocks_of", lambda: BlockRun("t", 0, ("a", "b"), ("t", "control"),
                                      stimulus_ids=(0, 1)).blocks_of("x"), "condition must be"),
    ("sir_out_of_range", lambda: split_into_runs({"t": [(0, 9), (2, 3)]}, list("abcd"), 1, 2,
                                                 RNG(0)), "out of range"),
    ("sir_zero_runs", lambda: split_into_runs({"t": [(0, 1)]}, list("ab"), 0, 1, RNG(0)),
     "n_runs"),
    ("sir_float_runs", lambda: split_into_runs({"t": [(0, 1)]}, list("ab"), 1.5, 1, RNG(0)),
     "n_runs"),
    ("sir_rng_int", lambda: split_into_runs({"t": [(0, 1)]}, list("ab"), 1, 1, 0), "rng"),
    ("sir_pair_shape", lambda: split_into_runs({"t": [(0,)]}, list("ab"), 1, 1, RNG(0)),
     "pairs"),
    ("gp_topic", lambda: generate_prompts(None, 5, 2), "topic"),
    ("gp_seed", lambda: generate_prompts(None, "x", 2, seed="s"), "seed"),
    ("gp_max_new", lambda: generate_prompts(None, "x", 2, max_new_tokens=0), "max_new_tokens"),
    ("gp_attempts", lambda: generate_prompts(None, "x", 2, max_attempts=-1), "max_attempts"),
    ("gp_cache_dir", lambda: generate_prompts(None, "x", 2, cache_dir=5), "cache_dir"),
    ("gp_no_tokenizer", lambda: generate_prompts(None, "x", 2), "model must be a language"),
    ("tt_vocab_small", lambda: toy_tokenizer(["a b"], vocab_size=0), "vocab_size"),
    ("tt_vocab_float", lambda: toy_tokenizer(["a b"], vocab_size=300.5), "vocab_size"),
    ("tt_texts_str", lambda: toy_tokenizer("abc"), "texts must be a list"),
    ("tt_texts_empty", lambda: toy_tokenizer([]), "texts has no non-empty text"),
    ("tt_texts_nonstr", lambda: toy_tokenizer([1, 2]), "texts must hold strings"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in RAISES], ids=[c[0] for c in RAISES])
def test_refused(call, match):
    with pytest.raises(NeuroprobeError, match=match):
        call()


WARNS = [
    ("overlap_empty_networks", lambda: overlap_matrix([EMPTY, EMPTY]), "are empty"),
    ("overlap_one_empty", lambda: overlap_matrix([A0, EMPTY]), "1 of 2 networks are empty"),
    ("dice_both_empty", lambda: dice(EMPTY, EMPTY), "both networks are empty"),
    ("jaccard_both_empty", lambda: jaccard(EMPTY, EMPTY), "both networks are empty"),
    ("templates_min_runs_capped", lambda: templates([A0, A1, B0], min_runs=2),
     "more than the runs of task"),
    ("rwc_unmatched", lambda: random_word_controls(
        lambda ts: [2 * len(t.split()) for t in ts], [3], words=WORDS), "not length-matched"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in WARNS], ids=[c[0] for c in WARNS])
def test_degenerate_warns(call, match):
    with pytest.warns(NeuroprobeWarning, match=match):
        call()


def test_valid_calls_still_work():
    # bare masks (no UnitIndex) of the same width still compare with indexed networks
    assert dice(A0, np.array([1, 1, 0, 0])) == 1.0
    assert (A0 & [1, 0, 0, 0]).size == 1
    # numpy ints for integers, tuples for lists, a bare string for one task
    assert consensus((A0, A1), min_runs=np.int64(2)).mask.tolist() == [True, False, False, False]
    assert FunctionalNetwork(m(1, 0), run=np.int64(3)).run == 3
    assert load_prompts(split="B", tasks="pathology").tasks == ("pathology",)
    assert PS.select("t1").tasks == ("t1",)
    assert random_word_controls(COUNT, torch.tensor([2, 3]), words=WORDS, seed=1) == \
        random_word_controls(COUNT, [2, 3], words=WORDS, seed=1)
    assert random_word_controls(COUNT, [], words=WORDS) == []
    # an empty list of predictions is an empty table (a fold with no test network)
    assert confusion_matrix([]).shape == (0, 0)
    om = overlap_matrix([A0, A1, B0, B1])
    assert om.values.shape == (4, 4) and not np.isnan(om.values).any()
    # the original message of an out-of-range min_runs is kept
    with pytest.raises(NeuroprobeError, match="min_runs must be between 1 and"):
        consensus([A0, A1], min_runs=3)


def test_generate_prompts_warns_when_short(smollm2):
    with pytest.warns(NeuroprobeWarning, match="only 0 of 1 prompts"):
        out = generate_prompts(smollm2, "cats", 1, max_attempts=1, max_new_tokens=3)
    assert out == []
