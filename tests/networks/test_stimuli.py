"""Tests of neuroprobe.networks.stimuli: prompt sets, control words, length matching, runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuroprobe import NeuroprobeError
from neuroprobe.networks.stimuli import (
    CONTROL,
    TASKS,
    BlockRun,
    PromptSet,
    count_tokens,
    load_prompts,
    load_words,
    make_runs,
    random_word_controls,
    require_enough_prompts,
    split_into_runs,
    toy_tokenizer,
)


@pytest.fixture(scope="module")
def bpe():
    texts = load_prompts().to_dataframe().prompt.tolist() + list(load_words())
    return toy_tokenizer(texts, vocab_size=400)


class CountingTokenizer:
    """Wraps a HF tokenizer and counts how many texts it is asked to tokenize."""

    def __init__(self, tok):
        self.tok, self.calls, self.texts = tok, 0, 0

    def __call__(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return [len(x) for x in self.tok(list(texts), add_special_tokens=False)["input_ids"]]


def test_packaged_prompts_two_disjoint_sets_of_40():
    a, b = load_prompts(split="A"), load_prompts(split="B")
    assert a.tasks == b.tasks == TASKS
    for t in TASKS:
        assert len(a[t]) >= 40 and len(b[t]) >= 40
        assert not set(a[t]) & set(b[t])
        # one or two sentences each
        assert all(1 <= p.count(".") + p.count("?") <= 2 for p in a[t] + b[t])
    every = [p for s in (a, b) for t in TASKS for p in s[t]]
    assert len(every) == len(set(every))


def test_user_prompts_dict_json_yaml_same(tmp_path):
    d = {"cooking": ["Boil an egg.", "Make a roux."], "sport": ["Kick a ball.", "Run a lap."]}
    (tmp_path / "p.json").write_text(json.dumps(d))
    (tmp_path / "p.yaml").write_text(
        "cooking:\n  - Boil an egg.\n  - Make a roux.\nsport:\n  - Kick a ball.\n  - Run a lap.\n"
    )
    sets = {"sets": {"A": d, "B": {"cooking": ["Fry."], "sport": ["Swim."]}}}
    (tmp_path / "s.json").write_text(json.dumps(sets))
    for src in (d, tmp_path / "p.json", str(tmp_path / "p.yaml")):
        ps = load_prompts(src)
        assert ps.prompts == {k: tuple(v) for k, v in d.items()}
    assert load_prompts(tmp_path / "s.json", split="B")["sport"] == ("Swim.",)
    assert load_prompts(load_prompts(d)).tasks == ("cooking", "sport")


def test_bad_prompt_sources(tmp_path):
    with pytest.raises(NeuroprobeError, match="unknown task 'medcal'.*political_science"):
        load_prompts(tasks=["medcal"])
    with pytest.raises(NeuroprobeError, match="task name 'my task' is not allowed"):
        load_prompts({"my task": ["x"]})
    with pytest.raises(NeuroprobeError, match="'control', which names the control"):
        load_prompts({"control": ["x"]})
    with pytest.raises(NeuroprobeError, match="split='B' is not in the prompt source"):
        load_prompts({"a": ["x"]}, split="B")
    with pytest.raises(NeuroprobeError, match="name different tasks"):
        load_prompts({"A": {"a": ["x"]}, "B": {"b": ["y"]}})
    with pytest.raises(NeuroprobeError, match="does not exist"):
        load_prompts(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(NeuroprobeError, match="not valid JSON"):
        load_prompts(tmp_path / "bad.json")
    with pytest.raises(NeuroprobeError, match="duplicate"):
        PromptSet({"a": ["x", "x"]})
    with pytest.raises(NeuroprobeError, match="empty or non-string"):
        PromptSet({"a": ["x", " "]})


def test_word_list_is_clean():
    w = load_words()
    assert len(w) >= 500 and len(set(w)) == len(w)
    assert all(x.isalpha() and x.islower() for x in w)
    with pytest.raises(NeuroprobeError, match="at least 2 distinct"):
        load_words(["one"])


def test_controls_match_token_lengths_exactly_with_few_tokenizer_calls(bpe):
    prompts = load_prompts().to_dataframe().prompt.tolist()
    target = count_tokens(bpe, prompts)
    counter = CountingTokenizer(bpe)
    ctl = random_word_controls(counter, target, seed=3)
    got = count_tokens(bpe, ctl)
    np.testing.assert_array_equal(got, target)
    # the word list is tokenized twice (with/without leading space) and the results once
    # or a few times: never once per added word
    assert counter.calls <= 2 + 4
    n_words = sum(len(c.split()) for c in ctl)
    assert counter.texts < 2 * len(load_words()) + 2 * len(prompts) < n_words + 3 * len(
        load_words()
    )
    vocab = set(load_words())
    assert all(set(c.split()) <= vocab for c in ctl)
    # seeded
    assert random_word_controls(bpe, target[:5], seed=3) == random_word_controls(
        bpe, target[:5], seed=3
    )
    assert random_word_controls(bpe, target[:5], seed=3) != random_word_controls(
        bpe, target[:5], seed=4
    )


def test_controls_reference_naive_loop_lengths(bpe):
    """Fast construction agrees with the naive 'tokenize after every word' definition."""
    target = [3, 7, 12]
    ctl = random_word_controls(bpe, target, seed=0)
    for c, t in zip(ctl, target, strict=True):
        words, s = c.split(), ""
        for w in words:  # the slow reference: re-tokenize the growing string
            s = (s + " " + w).strip()
        assert len(bpe(s, add_special_tokens=False)["input_ids"]) == t


def test_make_runs_structure_and_errors(bpe):
    ps = load_prompts(split="A")
    runs = make_runs(ps, bpe, n_runs=5, n_task_blocks=8, seed=0)
    assert len(runs) == 5 * len(TASKS)
    for t in TASKS:
        mine = [r for r in runs if r.task == t]
        used = [p for r in mine for p in r.task_prompts]
        assert len(used) == len(set(used)) == 40 and set(used) <= set(ps[t])
        for r in mine:
            assert r.n_blocks == 16
            c = np.asarray(r.conditions)
            assert (c[::2] != c[1::2]).all()  # alternating
            assert set(c) == {t, CONTROL}
            lens = count_tokens(bpe, list(r.prompts))
            np.testing.assert_array_equal(lens[c == t], lens[c == CONTROL])  # pairwise
    assert make_runs(ps, bpe, 2, 4, seed=1)[0] == make_runs(ps, bpe, 2, 4, seed=1)[0]
    assert runs[0].to_dataframe().shape == (16, 3)
    with pytest.raises(NeuroprobeError, match="needs 48 prompts per task, but 'politi"):
        make_runs(ps, bpe, n_runs=6, n_task_blocks=8)
    with pytest.raises(NeuroprobeError, match="has no task blocks"):
        BlockRun("a", 0, ("x", "y"), (CONTROL, CONTROL))


@pytest.mark.smollm2
def test_controls_length_matched_on_smollm2(smollm2):
    ps = load_prompts(split="B")
    prompts = ps.to_dataframe().prompt.tolist()
    target = count_tokens(smollm2, prompts)
    ctl = random_word_controls(smollm2, target, seed=0)
    assert (count_tokens(smollm2, ctl) == target).mean() == 1.0


def _split_reference(rng, pairs, n_runs, n_blocks):
    """The plain definition of a split (what the experiment drew before split_into_runs)."""
    out = []
    for task, ps in pairs.items():
        order = rng.permutation(len(ps))[: n_runs * n_blocks]
        for r in range(n_runs):
            stim, cond = [], []
            task_first = bool(rng.integers(2))
            for i in order[r * n_blocks : (r + 1) * n_blocks]:
                p, c = ps[int(i)]
                seq = [(p, task), (c, CONTROL)]
                for s, k in seq if task_first else seq[::-1]:
                    stim.append(s)
                    cond.append(k)
            out.append((task, r, tuple(stim), tuple(cond)))
    return out


def test_split_into_runs_equals_the_plain_definition_and_indexes_the_texts():
    pairs = {t: [(2 * (10 * k + i), 2 * (10 * k + i) + 1) for i in range(10)]
             for k, t in enumerate(("t1", "t2"))}
    texts = [f"{'prompt' if i % 2 == 0 else 'control'} {i // 2}" for i in range(40)]
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(3):  # the generator is consumed the same way, split after split
        runs = split_into_runs(pairs, texts, n_runs=3, n_task_blocks=3, rng=rng_a, source="A")
        ref = _split_reference(rng_b, pairs, 3, 3)
        assert [(r.task, r.run, r.stimulus_ids, r.conditions) for r in runs] == ref
    for r in runs:
        assert r.source == "A" and r.prompts == tuple(texts[i] for i in r.stimulus_ids)
        c = np.asarray(r.conditions)
        assert (c[::2] != c[1::2]).all() and set(c) == {r.task, CONTROL}
        assert set(r.blocks_of(r.task)) == {i for i in r.stimulus_ids if i % 2 == 0}
        assert len(r.blocks_of(CONTROL)) == 3
    used = [i for r in runs if r.task == "t1" for i in r.blocks_of("t1")]
    assert len(used) == len(set(used)) == 9
    with pytest.raises(NeuroprobeError, match="task 't1' has 10 .* needs 12"):
        split_into_runs(pairs, texts, n_runs=4, n_task_blocks=3, rng=rng_a)


def test_require_enough_prompts_and_block_run_ids():
    require_enough_prompts(PromptSet({"t": ["a", "b"]}), n_runs=1, n_task_blocks=2)
    with pytest.raises(NeuroprobeError, match="needs 4 prompts per task, but 't' has 2"):
        require_enough_prompts(PromptSet({"t": ["a", "b"]}), n_runs=2, n_task_blocks=2)
    with pytest.raises(NeuroprobeError, match="one stimulus id per prompt"):
        BlockRun("t", 0, ("x", "y"), ("t", CONTROL), stimulus_ids=(1,))
    with pytest.raises(NeuroprobeError, match="has no stimulus_ids; build the runs with"):
        BlockRun("t", 0, ("x", "y"), ("t", CONTROL)).blocks_of("t")
