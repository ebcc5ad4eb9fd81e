"""Stimuli for block-design experiments: task prompt sets, random-word controls, runs.

The functional-network experiment (arXiv:2311.10898) presents a model with *blocks*: one
task prompt per task block (a question from one domain), one string of random words per
control block, alternating.  This module provides

* :func:`load_prompts` -- the packaged prompt sets (five domains, two disjoint sets ``"A"``
  and ``"B"`` of 40 prompts each, written for neuroprobe) or any user set: a dict
  ``domain -> prompts``, a JSON or YAML file, or an existing :class:`PromptSet`;
* :func:`load_words` -- the packaged control word list (everyday English words written for
  neuroprobe, avoiding the five domains) or your own;
* :func:`random_word_controls` -- random word strings matched in *token* length to given
  texts, built from per-word token counts (the tokenizer runs once over the word list and
  once to verify, never once per added word);
* :func:`make_runs` -- block-design runs: alternating task/control blocks, prompts drawn
  without replacement and block order seeded;
* :func:`split_into_runs` -- the same runs from (prompt, control) pairs that are already
  made, indexed into a list of stimuli (the functional-network experiment records every
  stimulus once and re-partitions the pairs into runs many times).

Examples
--------
>>> ps = load_prompts(split="A")
>>> ps.tasks
('political_science', 'medical_imaging', 'paleontology', 'archeology', 'pathology')
>>> len(ps["pathology"])
40
>>> set(ps["pathology"]) & set(load_prompts(split="B")["pathology"])
set()
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import check_text_list, read_text_file

__all__ = [
    "TASKS",
    "CONTROL",
    "PromptSet",
    "BlockRun",
    "load_prompts",
    "load_words",
    "count_tokens",
    "random_word_controls",
    "require_enough_prompts",
    "make_runs",
    "split_into_runs",
    "generate_prompts",
    "toy_tokenizer",
]

#: The five task domains of the seed paper, in the order used throughout.
TASKS: tuple[str, ...] = (
    "political_science",
    "medical_imaging",
    "paleontology",
    "archeology",
    "pathology",
)
#: Condition label of control (random-word) blocks.
CONTROL = "control"

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Columns the block design generates itself: a task of that name would be overwritten.
_RESERVED_RE = re.compile(r"^(constant|run_\d+|drift_\d+|run\d+_drift_\d+)$")


# ---------------------------------------------------------------------------------------------
# prompt sets
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptSet:
    """Task prompts by domain: ``prompts[task]`` is a tuple of strings.

    Task names are identifiers (they become design-matrix column names and contrast terms),
    and ``"control"`` is reserved for the control condition.

    Examples
    --------
    >>> ps = PromptSet({"cooking": ["How do I boil an egg?", "What is a roux?"]})
    >>> ps.tasks, len(ps), ps.n_prompts
    (('cooking',), 1, 2)
    >>> ps.to_dataframe().columns.tolist()
    ['task', 'prompt']
    """

    prompts: Mapping[str, tuple[str, ...]]
    name: str = "custom"

    def __post_init__(self) -> None:
        if not isinstance(self.prompts, Mapping) or not self.prompts:
            raise NeuroprobeError(
                f"prompts must be a non-empty dict task -> list of prompt strings; got "
                f"{type(self.prompts).__name__} {self.prompts!r:.80}. Example: "
                "{'cooking': ['How do I boil an egg?', ...]}"
            )
        if not isinstance(self.name, str):
            raise NeuroprobeError(
                f"name must be a str; got {type(self.name).__name__} {self.name!r}."
            )
        clean: dict[str, tuple[str, ...]] = {}
        for task, plist in self.prompts.items():
            if isinstance(task, str) and _RESERVED_RE.match(task):
                raise NeuroprobeError(
                    f"task name {task!r} is reserved: the block design makes a column of that "
                    "name itself (constant, run_<k>, drift_<k>, run<r>_drift_<k>), which "
                    "would overwrite the task's regressor. Rename the task."
                )
            if not isinstance(task, str) or not _NAME_RE.match(task) or task == CONTROL:
                raise NeuroprobeError(
                    f"task name {task!r} is not allowed: task names must be identifiers "
                    f"(letters, digits, underscore; e.g. 'medical_imaging') and not "
                    f"{CONTROL!r}, which names the control condition. Rename the task."
                )
            if isinstance(plist, str) or not isinstance(plist, Sequence) or len(plist) == 0:
                raise NeuroprobeError(
                    f"prompts for task {task!r} must be a non-empty list of strings; got "
                    f"{type(plist).__name__} {plist!r:.60}"
                )
            bad = [p for p in plist if not isinstance(p, str) or not p.strip()]
            if bad:
                raise NeuroprobeError(
                    f"prompts for task {task!r} contain {len(bad)} empty or non-string "
                    f"entries (first: {bad[0]!r}); every prompt must be a non-empty string."
                )
            dup = len(plist) - len(set(plist))
            if dup:
                raise NeuroprobeError(
                    f"prompts for task {task!r} contain {dup} duplicate(s); each prompt "
                    "must appear once so that runs never repeat a stimulus."
                )
            clean[task] = tuple(plist)
        object.__setattr__(self, "prompts", clean)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task names, in the set's order."""
        return tuple(self.prompts)

    @property
    def n_prompts(self) -> int:
        """Total number of prompts over all tasks."""
        return sum(len(v) for v in self.prompts.values())

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, task: str) -> tuple[str, ...]:
        if task not in self.prompts:
            raise NeuroprobeError(
                f"unknown task {task!r}; this prompt set ({self.name!r}) has tasks "
                f"{list(self.tasks)}. Check the spelling or pass tasks= from that list."
            )
        return self.prompts[task]

    def select(self, tasks: Sequence[str]) -> PromptSet:
        """The set restricted to ``tasks`` (in that order)."""
        from neuroprobe.core.validation import check_name_list

        tasks = check_name_list(tasks, "tasks", what="task")
        dup = sorted({t for t in tasks if tasks.count(t) > 1})
        if dup:
            raise NeuroprobeError(f"tasks repeats {dup}; name each task once.")
        return PromptSet({t: self[t] for t in tasks}, name=self.name)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per prompt: ``task``, ``prompt``."""
        rows = [(t, p) for t, ps in self.prompts.items() for p in ps]
        return pd.DataFrame(rows, columns=["task", "prompt"])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{t}[{len(p)}]" for t, p in self.prompts.items())
        return f"PromptSet({self.name!r}: {sizes})"


def _read_file(path: Path) -> Any:
    text = read_text_file(path, "source", what="a JSON / YAML prompt file")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:  # pragma: no cover - pyyaml ships with our dependencies
            raise NeuroprobeError(
                f"reading {path} needs PyYAML (pip install pyyaml), or save it as JSON"
            ) from e
        return yaml.safe_load(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise NeuroprobeError(
            f"prompt file {str(path)!r} is not valid JSON ({e}); write a JSON object "
            "task -> list of prompts, or {'sets': {'A': {...}, 'B': {...}}}, or use .yaml"
        ) from e


def load_prompts(
    source: None | str | os.PathLike | Mapping | PromptSet = None,
    split: str = "A",
    tasks: Sequence[str] | None = None,
) -> PromptSet:
    """Load a task prompt set.

    Parameters
    ----------
    source : None, path, dict or PromptSet
        ``None``: the packaged prompts (five domains of arXiv:2311.10898, sets ``"A"`` and
        ``"B"``, 40 prompts each, disjoint).  A path to a JSON or YAML file, or a dict, in
        one of two layouts: flat ``{task: [prompts]}`` (a single set, called ``"A"``), or
        with sets ``{"sets": {"A": {task: [...]}, "B": {...}}}`` (the ``"sets"`` level may
        be omitted when every top-level key is a set name whose value is a dict).
        A :class:`PromptSet` passes through.
    split : str
        Which set to return (``"A"`` defines networks, ``"B"`` tests them).
    tasks : list of str, optional
        Keep only these tasks, in this order; unknown names raise.

    Returns
    -------
    PromptSet

    Examples
    --------
    >>> load_prompts({"cooking": ["Boil an egg.", "Make a roux."]}).tasks
    ('cooking',)
    >>> load_prompts(split="B", tasks=["pathology", "archeology"]).tasks
    ('pathology', 'archeology')
    """
    if not isinstance(split, str):
        raise NeuroprobeError(
            f"split must be a set name (str), e.g. 'A' or 'B'; got {type(split).__name__} "
            f"{split!r}."
        )
    if isinstance(source, PromptSet):
        ps = source
    else:
        name = "neuroprobe"
        if source is None:
            raw = json.loads(
                resources.files("neuroprobe").joinpath("data/prompts.json").read_text("utf-8")
            )
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise NeuroprobeError(
                    f"prompt file {str(path)!r} "
                    f"{'is a directory' if path.is_dir() else 'does not exist'}; pass a "
                    "JSON/YAML file path, a dict task -> prompts, or None for the packaged prompts"
                )
            raw, name = _read_file(path), path.stem
        elif isinstance(source, Mapping):
            raw, name = dict(source), "custom"
        else:
            raise NeuroprobeError(
                f"source must be None, a file path, a dict or a PromptSet; got "
                f"{type(source).__name__}"
            )
        if not isinstance(raw, Mapping):
            raise NeuroprobeError(
                f"prompt source must hold a mapping (task -> prompts); got "
                f"{type(raw).__name__}"
            )
        sets = raw.get("sets") if "sets" in raw else None
        if "sets" in raw and (not isinstance(sets, Mapping) or not sets):
            raise NeuroprobeError(
                f"the prompt source's 'sets' must be a non-empty mapping set name -> "
                f"{{task: [prompts]}}; got {type(sets).__name__} {sets!r:.60}."
            )
        if sets is None and raw and all(isinstance(v, Mapping) for v in raw.values()):
            sets = raw
        if sets is None:
            sets = {"A": {k: v for k, v in raw.items() if k not in ("description", "license")}}
        if split not in sets:
            raise NeuroprobeError(
                f"split={split!r} is not in the prompt source; it has sets {list(sets)}. "
                "A flat task -> prompts mapping is a single set named 'A'."
            )
        chosen = sets[split]
        ps = PromptSet(dict(chosen), name=f"{name}:{split}")
        # all sets must name the same tasks, or set-B prediction would be meaningless
        for other, content in sets.items():
            if other != split and isinstance(content, Mapping) and set(content) != set(chosen):
                raise NeuroprobeError(
                    f"prompt sets {split!r} and {other!r} name different tasks: "
                    f"{sorted(chosen)} vs {sorted(content)}; every set needs the same tasks."
                )
    if tasks is not None:
        ps = ps.select(tasks)
    return ps


def load_words(source: None | str | os.PathLike | Sequence[str] = None) -> tuple[str, ...]:
    """Control words (one per line; ``#`` starts a comment line), deduplicated, in order.

    ``None`` loads the packaged list ``neuroprobe/data/words_en.txt``: 666 everyday English
    words (food, household objects, animals, clothing, weather, time, play, travel) written
    for neuroprobe and chosen to avoid the five task domains.

    Examples
    --------
    >>> w = load_words()
    >>> len(w) > 500, w[0]
    (True, 'apple')
    >>> load_words(["cat", "dog", "cat"])
    ('cat', 'dog')
    """
    if source is None:
        text = resources.files("neuroprobe").joinpath("data/words_en.txt").read_text("utf-8")
        items = text.splitlines()
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise NeuroprobeError(
                f"word list file {str(path)!r} "
                f"{'is a directory' if path.is_dir() else 'does not exist'}; pass a text file "
                "with one word per line, a list of words, or None for the packaged list."
            )
        items = read_text_file(path, "words", what="a word list (one word per line)")
        items = items.splitlines()
    elif isinstance(source, bytes) or not hasattr(source, "__iter__"):
        raise NeuroprobeError(
            f"words must be None, a word-list file path or a list of strings; got "
            f"{type(source).__name__} {source!r:.60}."
        )
    else:
        items = list(source)
    words = []
    for w in items:
        if not isinstance(w, str):
            raise NeuroprobeError(f"words must be strings; got {type(w).__name__} {w!r}")
        w = w.strip()
        if w and not w.startswith("#"):
            words.append(w)
    words = list(dict.fromkeys(words))
    if len(words) < 2:
        raise NeuroprobeError(
            f"need at least 2 distinct control words; got {len(words)}. Pass a longer list."
        )
    return tuple(words)


# ---------------------------------------------------------------------------------------------
# token counting and length-matched controls
# ---------------------------------------------------------------------------------------------
TokenCounter = Callable[[Sequence[str]], Sequence[int]]


def _get_tokenizer(obj: Any) -> Any:
    """A Hugging Face tokenizer passes through; a model gives its ``.tokenizer``."""
    if hasattr(obj, "convert_tokens_to_ids"):
        return obj
    tok = getattr(obj, "tokenizer", None)
    return tok if tok is not None else obj


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """Number of tokens of each text, without special tokens (no BOS), in one batched call.

    ``tokenizer`` is a Hugging Face tokenizer, a model with a ``.tokenizer``, or a callable
    ``list[str] -> list[int]`` of counts.

    Examples
    --------
    >>> count_tokens(lambda ts: [len(t.split()) for t in ts], ["a b c", "d"]).tolist()
    [3, 1]
    """
    texts = check_text_list(texts, "texts")
    if not texts:
        return np.zeros(0, dtype=np.int64)
    tok = _get_tokenizer(tokenizer)
    if hasattr(tok, "convert_tokens_to_ids"):
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        return np.asarray([len(i) for i in ids], dtype=np.int64)
    if callable(tok):
        try:
            got = tok(texts)
        except TypeError as e:
            raise NeuroprobeError(
                f"tokenizer callable failed on a list of {len(texts)} strings ({e}); a token "
                "counter must take one argument, list[str], and return one count per text."
            ) from e
        if got is None or isinstance(got, (str, bytes)) or not hasattr(got, "__iter__"):
            raise NeuroprobeError(
                f"token counter returned {type(got).__name__} {got!r:.40}; it must return a "
                f"list of {len(texts)} integer counts, one per text."
            )
        raw = np.asarray(list(got))
        if raw.size and (raw.dtype.kind not in "iu" or (raw < 0).any()):
            raise NeuroprobeError(
                f"token counter must return non-negative integer counts; got dtype {raw.dtype} "
                f"(first values {raw.ravel()[:3].tolist()}). Return len(ids) for each text."
            )
        out = raw.astype(np.int64)
        if out.shape != (len(texts),):
            raise NeuroprobeError(
                f"token counter returned {out.shape[0] if out.ndim else 'a scalar'} counts for "
                f"{len(texts)} texts; it must return one count per text"
            )
        return out
    raise NeuroprobeError(
        f"tokenizer must be a Hugging Face tokenizer, a model with .tokenizer, or a callable "
        f"list[str] -> token counts; got {type(tokenizer).__name__}. A model without a "
        "tokenizer needs a tokenizer passed explicitly."
    )


def random_word_controls(
    tokenizer: Any,
    lengths: Sequence[int],
    words: Sequence[str] | None = None,
    seed: int = 0,
    max_tries: int = 4,
) -> list[str]:
    """Random word strings whose token counts equal ``lengths``.

    Each word's token count (with and without a leading space) is measured once, in one
    batched tokenizer call over the word list.  A string is built by drawing words at
    random and adding their counts; when the remaining budget is smaller than the longest
    word, the last word is drawn among words of exactly the remaining length.  All strings
    are then tokenized once to verify; the rare string whose count differs (tokens merging
    across a word boundary) is rebuilt with fresh draws (at most ``max_tries`` rounds).

    Parameters
    ----------
    tokenizer : tokenizer, model or callable
        See :func:`count_tokens`.
    lengths : sequence of int
        Target token counts (without BOS), e.g. ``count_tokens(tok, task_prompts)``.
    words : sequence of str, optional
        Control vocabulary; default :func:`load_words`.
    seed : int
        Seed of the random draws (same seed, same strings).

    Returns
    -------
    list of str
        One control string per target length.

    Examples
    --------
    >>> n_words = lambda ts: [len(t.split()) for t in ts]
    >>> ctl = random_word_controls(n_words, [3, 5], words=["red", "cat", "sun"], seed=1)
    >>> [len(c.split()) for c in ctl]
    [3, 5]
    """
    from neuroprobe.core.validation import check_index_list, check_int

    lengths = check_index_list(lengths, "lengths", allow_empty=True, unique=False,
                               what="token count")
    seed = check_int(seed, "seed", minimum=0)
    max_tries = check_int(max_tries, "max_tries", minimum=0)
    if not lengths:
        return []
    if any(x < 1 for x in lengths):
        raise NeuroprobeError(
            f"lengths must be >= 1 token; got min {min(lengths)}. Empty prompts cannot be matched."
        )
    vocab = list(load_words(words))
    first = count_tokens(tokenizer, vocab)  # count as the first word (no leading space)
    inner = count_tokens(tokenizer, [" " + w for w in vocab])  # count after a space
    keep = (first >= 1) & (inner >= 1)
    vocab = [w for w, k in zip(vocab, keep, strict=False) if k]
    first, inner = first[keep], inner[keep]
    if not vocab:
        raise NeuroprobeError("no control word tokenizes to at least one token")
    by_inner: dict[int, np.ndarray] = {
        int(c): np.flatnonzero(inner == c) for c in np.unique(inner)
    }
    rng = np.random.default_rng(seed)

    def build(target: int) -> str:
        # first word: any word not longer than the target
        ok = np.flatnonzero(first <= target)
        if ok.size == 0:
            ok = np.array([int(np.argmin(first))])
        i = int(rng.choice(ok))
        out, used = [vocab[i]], int(first[i])
        while used < target:
            rem = target - used
            cand = np.flatnonzero(inner <= rem)
            if cand.size == 0:
                break
            # when an exact-length word exists and the budget is small, finish with it
            if rem in by_inner and rem <= int(np.median(inner)):
                cand = by_inner[rem]
            j = int(rng.choice(cand))
            out.append(vocab[j])
            used += int(inner[j])
        return " ".join(out)

    result = [build(t) for t in lengths]
    todo = list(range(len(lengths)))
    for attempt in range(max_tries + 1):
        got = count_tokens(tokenizer, [result[i] for i in todo])
        todo = [i for i, g in zip(todo, got, strict=False) if int(g) != lengths[i]]
        if not todo or attempt == max_tries:
            break
        for i in todo:
            result[i] = build(lengths[i])
    if todo:
        from neuroprobe.core.validation import warn_degenerate

        warn_degenerate(
            f"random_word_controls: {len(todo)} of {len(lengths)} control string(s) do not have "
            f"their target token count after {max_tries} rebuild round(s) (first: index "
            f"{todo[0]}, target {lengths[todo[0]]}); those controls are not length-matched. "
            "Pass a larger word list or more max_tries.", stacklevel=3,
        )
    return result


# ---------------------------------------------------------------------------------------------
# block-design runs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockRun:
    """One block-design run: alternating task and control blocks, one prompt per block.

    Attributes
    ----------
    task : str
        The task of the run's task blocks.
    run : int
        Run number within the task (0-based).
    prompts : tuple of str
        Block stimuli in presentation order.
    conditions : tuple of str
        Condition of each block: ``task`` or ``"control"``.
    source : str
        Name of the prompt set the task prompts came from.
    stimulus_ids : tuple of int, optional
        Index of each block's stimulus in the list of stimuli the runs were drawn from
        (:func:`split_into_runs` sets it; ``None`` for :func:`make_runs`' runs).

    Examples
    --------
    >>> r = BlockRun("cooking", 0, ("Boil an egg.", "red cat sun"), ("cooking", "control"))
    >>> r.n_blocks, r.task_prompts
    (2, ('Boil an egg.',))
    """

    task: str
    run: int
    prompts: tuple[str, ...]
    conditions: tuple[str, ...]
    source: str = ""
    stimulus_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        from neuroprobe.core.validation import check_index_list, check_int

        if not isinstance(self.task, str):
            raise NeuroprobeError(
                f"task must be a str; got {type(self.task).__name__} {self.task!r}."
            )
        object.__setattr__(self, "run", check_int(self.run, "run", minimum=0))
        for fname in ("prompts", "conditions"):
            v = getattr(self, fname)
            if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
                raise NeuroprobeError(
                    f"{fname} must be a tuple of strings (one per block); got "
                    f"{type(v).__name__} {v!r:.40}."
                )
            v = tuple(v)
            bad = [x for x in v if not isinstance(x, str)]
            if bad:
                raise NeuroprobeError(
                    f"{fname} must hold strings; got {type(bad[0]).__name__} {bad[0]!r:.40}."
                )
            object.__setattr__(self, fname, v)
        odd = sorted({c for c in self.conditions if c not in (self.task, CONTROL)})
        if odd:
            raise NeuroprobeError(
                f"conditions of run {self.run} of task {self.task!r} must each be "
                f"{self.task!r} or {CONTROL!r}; got {odd}."
            )
        if self.stimulus_ids is not None:
            object.__setattr__(self, "stimulus_ids", tuple(check_index_list(
                self.stimulus_ids, "stimulus_ids", allow_empty=True, unique=False,
                what="stimulus id")))
        if len(self.prompts) != len(self.conditions):
            raise NeuroprobeError(
                f"BlockRun needs one condition per prompt; got {len(self.prompts)} prompts "
                f"and {len(self.conditions)} conditions"
            )
        if self.stimulus_ids is not None and len(self.stimulus_ids) != len(self.prompts):
            raise NeuroprobeError(
                f"BlockRun needs one stimulus id per prompt; got {len(self.prompts)} prompts "
                f"and {len(self.stimulus_ids)} stimulus_ids"
            )
        if self.task not in self.conditions:
            raise NeuroprobeError(
                f"run {self.run} of task {self.task!r} has no task blocks (conditions: "
                f"{sorted(set(self.conditions))}); a run needs task blocks to contrast "
                "against control blocks."
            )

    @property
    def n_blocks(self) -> int:
        return len(self.prompts)

    @property
    def task_prompts(self) -> tuple[str, ...]:
        return tuple(p for p, c in zip(self.prompts, self.conditions, strict=False) if c != CONTROL)

    def blocks_of(self, condition: str) -> tuple[int, ...]:
        """Stimulus ids of the blocks of ``condition`` (runs from :func:`split_into_runs`).

        Examples
        --------
        >>> r = BlockRun("t", 0, ("q", "w"), ("control", "t"), stimulus_ids=(7, 6))
        >>> r.blocks_of("t"), r.blocks_of(CONTROL)
        ((6,), (7,))
        """
        if condition not in (self.task, CONTROL):
            raise NeuroprobeError(
                f"condition must be {self.task!r} or {CONTROL!r} (the conditions of run "
                f"{self.run}); got {condition!r}."
            )
        if self.stimulus_ids is None:
            raise NeuroprobeError(
                f"run {self.run} of task {self.task!r} has no stimulus_ids; build the runs "
                "with split_into_runs (make_runs' runs hold the prompts only)"
            )
        return tuple(s for s, c in zip(self.stimulus_ids, self.conditions, strict=True)
                     if c == condition)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per block: ``block``, ``condition``, ``prompt``."""
        return pd.DataFrame(
            {
                "block": np.arange(self.n_blocks),
                "condition": list(self.conditions),
                "prompt": list(self.prompts),
            }
        )


def _alternate(pairs: Sequence[tuple[Any, Any]], task: str,
               task_first: bool) -> list[tuple[Any, str]]:
    """The blocks of one run from its (task stimulus, control stimulus) pairs: task,
    control, task, control, ... (or control first), with each block's condition."""
    out = []
    for stim, ctl in pairs:
        pair = [(stim, task), (ctl, CONTROL)]
        out += pair if task_first else pair[::-1]
    return out


def require_enough_prompts(ps: PromptSet, n_runs: int, n_task_blocks: int) -> None:
    """Raise unless every task of ``ps`` has ``n_runs * n_task_blocks`` prompts.

    The error names the short tasks and the fix (fewer runs or blocks, more prompts).

    Examples
    --------
    >>> require_enough_prompts(PromptSet({"t": ["a", "b"]}), n_runs=1, n_task_blocks=2)
    >>> require_enough_prompts(PromptSet({"t": ["a"]}), n_runs=1, n_task_blocks=2)
    Traceback (most recent call last):
    ...
    neuroprobe.core.errors.NeuroprobeError: prompt set 'custom' is too small ...
    """
    need = n_runs * n_task_blocks
    short = {t: len(p) for t, p in ps.prompts.items() if len(p) < need}
    if short:
        raise NeuroprobeError(
            f"prompt set {ps.name!r} is too small for n_runs={n_runs} x "
            f"n_task_blocks={n_task_blocks}: that needs {need} prompts per task, but "
            + ", ".join(f"{t!r} has {n}" for t, n in short.items())
            + ". Lower n_runs or n_task_blocks, or add prompts."
        )


def make_runs(
    prompts: PromptSet,
    tokenizer: Any,
    n_runs: int,
    n_task_blocks: int = 8,
    words: Sequence[str] | None = None,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
) -> list[BlockRun]:
    """Build block-design runs: per task, ``n_runs`` runs of alternating task/control blocks.

    Task prompts are drawn without replacement (a prompt appears in at most one run); each
    task block is paired with a random-word control of the same token length.  The order is
    task, control, task, control, ... or control first, chosen at random per run.

    Parameters
    ----------
    prompts : PromptSet
        Source of task prompts (e.g. ``load_prompts(split="A")``).
    tokenizer : tokenizer, model or callable
        Used to length-match controls (see :func:`count_tokens`).
    n_runs : int
        Runs per task.
    n_task_blocks : int
        Task blocks per run (as many control blocks are added).
    seed : int
        Seed of prompt assignment, block order and control words.

    Returns
    -------
    list of BlockRun
        Ordered by task, then run.

    Examples
    --------
    >>> ps = PromptSet({"t1": [f"question {i} about stars" for i in range(6)]})
    >>> runs = make_runs(ps, lambda ts: [len(t.split()) for t in ts], n_runs=3,
    ...                  n_task_blocks=2, words=["red", "cat", "sun"])
    >>> len(runs), runs[0].n_blocks, sorted(set(runs[0].conditions))
    (3, 4, ['control', 't1'])
    """
    from neuroprobe.core.validation import check_int, check_positive_int

    check_positive_int(n_runs, "n_runs")
    check_positive_int(n_task_blocks, "n_task_blocks")
    seed = check_int(seed, "seed", minimum=0)
    ps = prompts if isinstance(prompts, PromptSet) else load_prompts(prompts)
    if tasks is not None:
        ps = ps.select(tasks)
    require_enough_prompts(ps, n_runs, n_task_blocks)
    need = n_runs * n_task_blocks
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[list[str]]] = {}
    for t in ps.tasks:
        order = rng.permutation(len(ps[t]))[:need]
        chosen[t] = [[ps[t][i] for i in order[r * n_task_blocks : (r + 1) * n_task_blocks]]
                     for r in range(n_runs)]
    flat = [p for t in ps.tasks for run in chosen[t] for p in run]
    lengths = count_tokens(tokenizer, flat)
    controls = random_word_controls(tokenizer, lengths, words=words, seed=seed + 1)
    runs, k = [], 0
    for t in ps.tasks:
        for r in range(n_runs):
            task_first = bool(rng.integers(2))
            pairs = list(zip(chosen[t][r], controls[k : k + n_task_blocks], strict=True))
            k += n_task_blocks
            blocks = _alternate(pairs, t, task_first)
            runs.append(BlockRun(t, r, tuple(b for b, _ in blocks),
                                 tuple(c for _, c in blocks), ps.name))
    return runs


def split_into_runs(
    pairs: Mapping[str, Sequence[tuple[int, int]]],
    texts: Sequence[str],
    n_runs: int,
    n_task_blocks: int,
    rng: np.random.Generator,
    source: str = "",
) -> list[BlockRun]:
    """Randomly partition each task's (prompt, control) pairs into block-design runs.

    Like :func:`make_runs`, but over stimuli that already exist: ``pairs[task]`` lists
    ``(prompt id, control id)`` indices into ``texts``, each prompt paired with its
    length-matched control once.  Per task, ``n_runs * n_task_blocks`` pairs are drawn
    without replacement (``rng.permutation``), then each run's order -- task first or
    control first -- is drawn (``rng.integers(2)``), task after task.  The runs carry
    the ``stimulus_ids`` of their blocks.

    Parameters
    ----------
    pairs : dict task -> list of (int, int)
        Stimulus ids of each task prompt and its control.
    texts : sequence of str
        The stimuli the ids index.
    n_runs, n_task_blocks : int
        Runs per task and task blocks per run (as many control blocks).
    rng : numpy Generator
        Consumed in the order above (the same pairs and generator state give the same runs).
    source : str
        Name of the prompt set (``BlockRun.source``).

    Returns
    -------
    list of BlockRun
        Ordered by task, then run.

    Examples
    --------
    >>> texts = ["q0", "c0", "q1", "c1", "q2", "c2", "q3", "c3"]
    >>> runs = split_into_runs({"t": [(0, 1), (2, 3), (4, 5), (6, 7)]}, texts, n_runs=2,
    ...                        n_task_blocks=2, rng=np.random.default_rng(0))
    >>> len(runs), runs[0].n_blocks, sorted(set(runs[0].conditions))
    (2, 4, ['control', 't'])
    >>> all(texts[i] == p for r in runs for i, p in zip(r.stimulus_ids, r.prompts))
    True
    """
    from neuroprobe.core.validation import check_index_list, check_positive_int

    n_runs = check_positive_int(n_runs, "n_runs")
    n_task_blocks = check_positive_int(n_task_blocks, "n_task_blocks")
    if not isinstance(rng, np.random.Generator):
        raise NeuroprobeError(
            f"rng must be a numpy Generator (np.random.default_rng(seed)); got "
            f"{type(rng).__name__}."
        )
    texts = check_text_list(texts, "texts")
    if not isinstance(pairs, Mapping) or not pairs:
        raise NeuroprobeError(
            f"pairs must be a non-empty dict task -> list of (prompt id, control id); got "
            f"{type(pairs).__name__}."
        )
    for task, task_pairs in pairs.items():
        for pr in task_pairs:
            if isinstance(pr, (str, bytes)) or not hasattr(pr, "__len__") or len(pr) != 2:
                raise NeuroprobeError(
                    f"pairs[{task!r}] must hold (prompt id, control id) pairs; got {pr!r:.40}."
                )
            check_index_list(pr, f"pairs[{task!r}] entry", size=len(texts), unique=False,
                             what="stimulus id")
    need = n_runs * n_task_blocks
    runs = []
    for task, task_pairs in pairs.items():
        if len(task_pairs) < need:
            raise NeuroprobeError(
                f"task {task!r} has {len(task_pairs)} (prompt, control) pairs; "
                f"n_runs={n_runs} x n_task_blocks={n_task_blocks} needs {need}"
            )
        order = rng.permutation(len(task_pairs))[:need]
        for r in range(n_runs):
            task_first = bool(rng.integers(2))
            block = order[r * n_task_blocks : (r + 1) * n_task_blocks]
            chosen = [task_pairs[int(i)] for i in block]
            blocks = _alternate(chosen, task, task_first)
            ids = tuple(int(b) for b, _ in blocks)
            runs.append(BlockRun(task, r, tuple(texts[i] for i in ids),
                                 tuple(c for _, c in blocks), source, ids))
    return runs


# ---------------------------------------------------------------------------------------------
# prompts written by the model itself
# ---------------------------------------------------------------------------------------------
def generate_prompts(
    model: Any,
    topic: str,
    n: int,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    max_new_tokens: int = 40,
    max_attempts: int | None = None,
) -> list[str]:
    """Ask the model for ``n`` distinct one-sentence questions about ``topic``.

    The paper had a chat model write its prompts; this does the same with the loaded model
    (best with an instruction-tuned one such as SmolLM2-135M-Instruct).  Sampling is seeded
    (attempt ``a`` samples from its own generator seeded with ``seed + a``); each reply's
    first line that ends in ``?`` and has at least 5 words is kept.  With ``cache_dir`` the
    list is stored as JSON keyed by model, topic, n and seed, and read back on the next
    call.  Expect a few seconds per prompt on a CPU.  Returns fewer than ``n`` prompts only
    if ``max_attempts`` (default ``4 * n``) runs out; check the length.

    Examples
    --------
    Generation takes seconds per prompt on a CPU, so this example is not run in the tests:

    >>> import neuroprobe as npb
    >>> model = npb.load_model("smollm2-135m")  # doctest: +SKIP
    >>> npb.generate_prompts(model, "paleontology", n=3, cache_dir="prompt-cache")  # doctest: +SKIP
    ['What did the first dinosaurs eat?', ...]
    """
    import hashlib

    from neuroprobe.core.validation import check_int, check_positive_int, check_writable_path

    check_positive_int(n, "n")
    if not isinstance(topic, str) or not topic.strip():
        raise NeuroprobeError(f"topic must be a non-empty str; got {topic!r}.")
    seed = check_int(seed, "seed", minimum=0)
    check_positive_int(max_new_tokens, "max_new_tokens")
    if max_attempts is not None:
        check_positive_int(max_attempts, "max_attempts")
    if cache_dir is not None:
        check_writable_path(cache_dir, "cache_dir", directory=True)
    name = getattr(getattr(model, "cfg", None), "model_name", type(model).__name__)
    key = hashlib.sha1(f"{name}|{topic}|{n}|{seed}|{max_new_tokens}".encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"prompts-{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        return list(json.loads(path.read_text("utf-8"))["prompts"])
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise NeuroprobeError(
            f"model must be a language model with a tokenizer (e.g. npb.load_model("
            f"'smollm2-135m-instruct')); got {type(model).__name__} without .tokenizer."
        )
    request = f"Write one short question about {topic}."
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(
            [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = request + "\nQuestion:"
    from neuroprobe.core.generation import eos_token_id, generate_tokens

    ids = model.to_tokens(text)[0].cpu()
    out: list[str] = []
    attempts = max_attempts if max_attempts is not None else 4 * n
    eos = eos_token_id(model)
    for a0 in range(0, attempts, 8):  # eight seeded attempts per batch
        if len(out) >= n:
            break
        seeds = [seed + a for a in range(a0, min(attempts, a0 + 8))]
        replies = generate_tokens(model, [ids] * len(seeds), max_new_tokens, do_sample=True,
                                  temperature=0.9, seeds=seeds, eos_id=eos,
                                  batch_size=len(seeds))
        for reply in replies:
            if len(out) >= n:
                break
            for line in tok.decode(reply.tolist(), skip_special_tokens=True).splitlines():
                line = line.strip().strip('"').strip()
                if line.endswith("?") and len(line.split()) >= 5 and line not in out:
                    out.append(line)
                    break
    if len(out) < n:
        from neuroprobe.core.validation import warn_degenerate

        warn_degenerate(
            f"generate_prompts: only {len(out)} of {n} prompts about {topic!r} after "
            f"{attempts} attempts (a reply counts when a line ends in '?' and has >= 5 words); "
            "raise max_attempts or use an instruction-tuned model.", stacklevel=3,
        )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model": name, "topic": topic, "seed": seed,
                                    "prompts": out}, indent=1), "utf-8")
    return out


# ---------------------------------------------------------------------------------------------
# an offline tokenizer for random native models
# ---------------------------------------------------------------------------------------------
def toy_tokenizer(texts: Sequence[str], vocab_size: int = 400) -> Any:
    """A small byte-level BPE tokenizer trained on ``texts`` (no hub access, < 1 s).

    Random native models (``TransformerBridge.boot_native(cfg, tokenizer=...)``) have no
    tokenizer; this gives them one so that string prompts, length-matched controls and the
    whole experiment run unchanged in tests.  ``<bos>`` is id 0, ``<pad>`` id 1.

    Examples
    --------
    >>> tok = toy_tokenizer(["the cat sat on the mat", "a dog"], vocab_size=300)
    >>> tok.bos_token_id, len(tok("the cat", add_special_tokens=False)["input_ids"]) >= 1
    (0, True)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from neuroprobe.core.validation import check_int

    texts = check_text_list(texts, "texts")
    if not any(t.strip() for t in texts):
        raise NeuroprobeError("texts has no non-empty text to train the tokenizer on.")
    # 256 byte-level symbols + <bos>, <pad>, <unk>: the smallest vocabulary it can have
    vocab_size = check_int(vocab_size, "vocab_size", minimum=259)

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        special_tokens=["<bos>", "<pad>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(list(texts), trainer)
    # the tokenizer prepends <bos> itself (only with add_special_tokens=True), like Llama's
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 0)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<pad>", pad_token="<pad>",
        unk_token="<unk>", add_bos_token=True,
    )
    # TransformerLens re-loads tokenizers without add_bos_token from name_or_path; ours has
    # no files, so declare what it is
    tok.init_kwargs["name_or_path"] = "neuroprobe-toy-bpe"
    tok.init_kwargs["add_bos_token"] = True
    return tok
