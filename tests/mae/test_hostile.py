"""Issue 16 (hostile inputs), the MAE slice: every bad argument of the public MAE functions
is refused at the entry point with a NeuroprobeError naming it; degenerate science (a dead
unit, a string substituter without a tokenizer) warns or says why.  The tables below are the
sweep: one row per hostile case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError, NeuroprobeWarning
from neuroprobe.mae.corpus import iter_texts, load_default_corpus

CFG = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50, n_ctx=32,
           act_fn="relu", seed=0)
HOOK = "blocks.0.mlp.hook_post"
U = (HOOK, 3)
TEXTS = [[5, 9, 2, 7, 11, 4], [1, 2, 3, 4], [8, 9, 10]]


@pytest.fixture(scope="module")
def m():
    return npb.load_model(CFG)


@pytest.fixture(scope="module")
def mae(m):
    return npb.prune_to_mae(m, U, [5, 9, 2, 7, 11, 4], window=2)


def _sub(fn):
    return lambda m, mae: npb.local_search(m, U, mae, substituter=fn, spans=(1,), top_n=2)


def _small_vocab():
    return npb.load_model(dict(CFG, d_vocab=8))


def _tmpdir():
    import tempfile

    return tempfile.mkdtemp()


def _bad_jsonl():
    import os
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".jsonl")
    with os.fdopen(fd, "w") as f:
        f.write('{"text": "a"}\n{bad\n')
    return path


def _examples(m):
    return npb.max_activating_examples(m, U, TEXTS, k=2)


class _NoArgPropose:
    def propose(self):
        return []


CASES = [
    # ---- corpora ----
    ("ldc n=-2", lambda m, mae: load_default_corpus(-2), "n must be an integer"),
    ("ldc n=0", lambda m, mae: load_default_corpus(0), "n must be an integer"),
    ("ldc n=2.5", lambda m, mae: load_default_corpus(2.5), "n must be an integer"),
    ("ldc n='3'", lambda m, mae: load_default_corpus("3"), "n must be an integer"),
    ("ldc with_meta str", lambda m, mae: load_default_corpus(2, with_meta="yes"), "with_meta"),
    ("iter int", lambda m, mae: list(iter_texts(5)), "corpus must be"),
    ("iter text_column int", lambda m, mae: list(iter_texts(["a"], text_column=5)),
     "text_column"),
    # ---- token ids (float ids were truncated) ----
    ("prune float ids", lambda m, mae: npb.prune_to_mae(m, U, [5.7, 9.2, 2.0]),
     "text must hold integer token ids"),
    ("prune float tensor", lambda m, mae: npb.prune_to_mae(m, U, torch.tensor([5.7, 9.2])),
     "text must hold integer token ids"),
    ("prune float ndarray", lambda m, mae: npb.prune_to_mae(m, U, np.array([1.0, 2.0])),
     "text must hold integer token ids"),
    ("prune bool ids", lambda m, mae: npb.prune_to_mae(m, U, [True, False]),
     "text must hold integer token ids"),
    ("prune nested ids", lambda m, mae: npb.prune_to_mae(m, U, [[1, 2], [3, 4]]),
     "text must hold integer token ids"),
    ("prune 2-D tensor", lambda m, mae: npb.prune_to_mae(m, U, torch.tensor([[1, 2]])),
     "text must be 1-D"),
    ("prune oov ids", lambda m, mae: npb.prune_to_mae(m, U, [1, 999]), "out of range"),
    ("prune negative ids", lambda m, mae: npb.prune_to_mae(m, U, [-1, 2]), "out of range"),
    ("prune empty ids", lambda m, mae: npb.prune_to_mae(m, U, []), "text is empty"),
    ("prune int text", lambda m, mae: npb.prune_to_mae(m, U, 5), "text must be"),
    ("prune str on native", lambda m, mae: npb.prune_to_mae(m, U, "hello"), "no tokenizer"),
    ("prune prepend_bos str", lambda m, mae: npb.prune_to_mae(m, U, [1, 2], prepend_bos="yes"),
     "prepend_bos must be True or False"),
    ("prune window float", lambda m, mae: npb.prune_to_mae(m, U, [1, 2], window=1.5), "window"),
    ("prune batch_size 0", lambda m, mae: npb.prune_to_mae(m, U, [1, 2], batch_size=0),
     "batch_size"),
    ("prune fallback typo", lambda m, mae: npb.prune_to_mae(m, U, [1, 2], fallback="txt"),
     "fallback"),
    ("prune fallback list", lambda m, mae: npb.prune_to_mae(m, U, [1, 2], fallback=["text"]),
     "fallback"),
    ("prune max_drop 1", lambda m, mae: npb.prune_to_mae(m, U, [1, 2], max_drop=1), "max_drop"),
    ("prune unit float index", lambda m, mae: npb.prune_to_mae(m, (HOOK, 3.0), [1, 2]), "unit"),
    ("prune unit out of range", lambda m, mae: npb.prune_to_mae(m, (HOOK, 99), [1, 2]),
     "out of range"),
    # ---- max_activating_examples: every count is int >= 1 or None ----
    ("mxa max_texts -2", lambda m, mae: npb.max_activating_examples(m, U, TEXTS, max_texts=-2),
     "max_texts must be an integer"),
    ("mxa max_texts 0", lambda m, mae: npb.max_activating_examples(m, U, TEXTS, max_texts=0),
     "max_texts must be an integer"),
    ("mxa max_texts 1.5", lambda m, mae: npb.max_activating_examples(m, U, TEXTS, max_texts=1.5),
     "max_texts must be an integer"),
    ("mxa k 0", lambda m, mae: npb.max_activating_examples(m, U, TEXTS, k=0), "k must be"),
    ("mxa k 2.0", lambda m, mae: npb.max_activating_examples(m, U, TEXTS, k=2.0), "k must be"),
    ("mxa context_tokens -1",
     lambda m, mae: npb.max_activating_examples(m, U, TEXTS, context_tokens=-1),
     "context_tokens"),
    ("mxa context_tokens 1.5",
     lambda m, mae: npb.max_activating_examples(m, U, TEXTS, context_tokens=1.5),
     "context_tokens"),
    ("mxa batch_size 0", lambda m, mae: npb.max_activating_examples(m, U, TEXTS, batch_size=0),
     "batch_size"),
    ("mxa per_text str", lambda m, mae: npb.max_activating_examples(m, U, TEXTS, per_text="no"),
     "per_text"),
    ("mxa progress str", lambda m, mae: npb.max_activating_examples(m, U, TEXTS, progress="y"),
     "progress"),
    ("mxa empty corpus", lambda m, mae: npb.max_activating_examples(m, U, []),
     "corpus has no non-empty text"),
    ("mxa blank strings", lambda m, mae: npb.max_activating_examples(m, U, ["", "  "]),
     "corpus has no non-empty text"),
    ("mxa empty units", lambda m, mae: npb.max_activating_examples(m, [], TEXTS),
     "units is empty"),
    ("mxa units a hook string", lambda m, mae: npb.max_activating_examples(m, HOOK, TEXTS),
     "units must be"),
    ("mxa duplicate units", lambda m, mae: npb.max_activating_examples(m, [U, U], TEXTS),
     "units repeats"),
    ("mxa float ids corpus", lambda m, mae: npb.max_activating_examples(m, U, [[1.5, 2.5]]),
     r"corpus\[0\] must hold integer token ids"),
    ("mxa float tensor corpus",
     lambda m, mae: npb.max_activating_examples(m, U, [torch.tensor([1.5, 2.5])]),
     r"corpus\[0\] must hold integer token ids"),
    ("mxa oov corpus", lambda m, mae: npb.max_activating_examples(m, U, [[1, 2], [1, 999]]),
     r"corpus\[1\] has token ids out of range"),
    ("mxa empty sequence", lambda m, mae: npb.max_activating_examples(m, U, [[1, 2], []]),
     r"corpus\[1\] is empty"),
    ("mxa strings on native", lambda m, mae: npb.max_activating_examples(m, U, ["hi there"]),
     "no tokenizer"),
    ("mxa int corpus", lambda m, mae: npb.max_activating_examples(m, U, 5), "corpus must be"),
    # ---- diagnostics ----
    ("ti method typo", lambda m, mae: npb.token_importance(m, U, [1, 2, 3], method="msk"),
     "method"),
    ("ti n_samples 0",
     lambda m, mae: npb.token_importance(m, U, [1, 2, 3], method="resample", n_samples=0),
     "n_samples"),
    ("ti n_samples 1.5",
     lambda m, mae: npb.token_importance(m, U, [1, 2, 3], method="resample", n_samples=1.5),
     "n_samples"),
    ("ti seed str",
     lambda m, mae: npb.token_importance(m, U, [1, 2, 3], method="resample", seed="a"), "seed"),
    ("ti batch_size 0", lambda m, mae: npb.token_importance(m, U, [1, 2, 3], batch_size=0),
     "batch_size"),
    ("ti float ids", lambda m, mae: npb.token_importance(m, U, [1.5, 2, 3]),
     "text must hold integer token ids"),
    ("tr batch_size 0", lambda m, mae: npb.activation_trajectory(m, U, [1, 2, 3], batch_size=0),
     "batch_size"),
    ("tr float ids", lambda m, mae: npb.activation_trajectory(m, U, [1.5, 2, 3]),
     "text must hold integer token ids"),
    # ---- local search and substituters ----
    ("ls string candidates, no tokenizer", _sub(lambda left, span, right, n: [" dog"]),
     "no tokenizer"),
    ("ls substituter 1 arg", _sub(lambda x: [" dog"]), "substituter must accept 4"),
    ("ls substituter 2 args", _sub(lambda a, b: [" dog"]), "substituter must accept 4"),
    ("ls propose without args", _sub(_NoArgPropose()), "substituter.propose must accept 1"),
    ("ls substituter int", _sub(5), "substituter must have a propose"),
    ("ls returns a bare str", _sub(lambda left, span, right, n: "dog"),
     "must return a list of candidates"),
    ("ls returns bare ints", _sub(lambda left, span, right, n: [3, 4]),
     "must be a list of integer token ids"),
    ("ls returns float ids", _sub(lambda left, span, right, n: [[3.5]]),
     "must hold integer token ids"),
    ("ls returns oov ids", _sub(lambda left, span, right, n: [[999]]), "out of range"),
    ("ls returns nothing", _sub(lambda left, span, right, n: None), "returned no candidates"),
    ("ls not an MAE", lambda m, mae: npb.local_search(m, U, [1, 2, 3]), "mae must be an MAE"),
    ("ls top_n 0", lambda m, mae: npb.local_search(m, U, mae, top_n=0), "top_n"),
    ("ls spans int", lambda m, mae: npb.local_search(m, U, mae, spans=1), "spans must be"),
    ("ls spans float", lambda m, mae: npb.local_search(m, U, mae, spans=(1.5,)), "spans"),
    ("ls spans empty", lambda m, mae: npb.local_search(m, U, mae, spans=()), "spans is empty"),
    ("ls batch_size 0", lambda m, mae: npb.local_search(m, U, mae, batch_size=0), "batch_size"),
    ("ls include_stop_words str",
     lambda m, mae: npb.local_search(m, U, mae, include_stop_words="x"), "include_stop_words"),
    ("ls include_after_anchor int",
     lambda m, mae: npb.local_search(m, U, mae, include_after_anchor=1), "include_after_anchor"),
    ("ls drops crossed",
     lambda m, mae: npb.local_search(m, U, mae, positive_max_drop=0.8, negative_min_drop=0.2),
     "positive_max_drop"),
    ("lmh pool nan", lambda m, mae: npb.LMHeadSubstituter(m, pool=float("nan")), "pool"),
    ("lmh pool inf", lambda m, mae: npb.LMHeadSubstituter(m, pool=float("inf")), "pool"),
    ("lmh pool bool", lambda m, mae: npb.LMHeadSubstituter(m, pool=True), "pool"),
    ("lmh pool 0.5", lambda m, mae: npb.LMHeadSubstituter(m, pool=0.5), "pool"),
    ("lmh rerank str", lambda m, mae: npb.LMHeadSubstituter(m, rerank="no"), "rerank"),
    ("lmh not a model", lambda m, mae: npb.LMHeadSubstituter(5), "language model"),
    ("lmh propose a str", lambda m, mae: npb.LMHeadSubstituter(m).propose("abc"),
     "requests must be a list"),
    ("lmh propose one request unwrapped",
     lambda m, mae: npb.LMHeadSubstituter(m).propose(npb.SpanRequest("", "", "", (4, 5), 1, 2, 1)),
     "requests must be a list"),
    ("lmh propose non-request", lambda m, mae: npb.LMHeadSubstituter(m).propose([5]),
     r"requests\[0\] must be a SpanRequest"),
    ("lmh request float ids", lambda m, mae: npb.LMHeadSubstituter(m).propose(
        [npb.SpanRequest("", "", "", (4.5, 5, 6), 1, 2, 3)]), "must hold integer token ids"),
    ("lmh request span outside", lambda m, mae: npb.LMHeadSubstituter(m).propose(
        [npb.SpanRequest("", "", "", (4, 5, 6), 9, 10, 3)]), "spans tokens"),
    ("lmh request top_n 0", lambda m, mae: npb.LMHeadSubstituter(m).propose(
        [npb.SpanRequest("", "", "", (4, 5, 6), 1, 2, 0)]), "top_n"),
    ("ls spans longer than the MAE", lambda m, mae: npb.local_search(m, U, mae, spans=(100,)),
     "longer than the MAE"),
    ("ls MAE of another vocabulary", lambda m, mae: npb.local_search(_small_vocab(), U, mae),
     "mae.token_ids has token ids out of range"),
    ("ti MAE of another vocabulary", lambda m, mae: npb.token_importance(_small_vocab(), U, mae),
     "another model"),
    ("tr MAE of another vocabulary",
     lambda m, mae: npb.activation_trajectory(_small_vocab(), U, mae), "another model"),
    ("MAE.to_json to a directory", lambda m, mae: mae.to_json(_tmpdir()), "is a directory"),
    ("MAE.to_json unwritable", lambda m, mae: mae.to_json("/proc/npb_x/y.json"),
     "cannot be created"),
    ("LocalSearch.to_json to a directory",
     lambda m, mae: npb.local_search(m, U, mae, spans=(1,), top_n=2).to_json(_tmpdir()),
     "is a directory"),
    ("for_unit position 99", lambda m, mae: _examples(m).for_unit(99), "out of range"),
    ("for_unit position -1", lambda m, mae: _examples(m).for_unit(-1), "out of range"),
    ("for_unit float index", lambda m, mae: _examples(m).for_unit((HOOK, 3.7)),
     "is not among these examples' units"),
    ("iter corrupt jsonl", lambda m, mae: list(iter_texts(_bad_jsonl())), "not valid JSON"),
    ("iter a directory", lambda m, mae: list(iter_texts(_tmpdir())), "is a directory"),
    ("iter missing file", lambda m, mae: list(iter_texts("/nonexistent/corpus.txt")),
     "not an existing file"),
    ("as_substituter None", lambda m, mae: npb.as_substituter(None), "substituter must have"),
    ("mlm batch_size 0", lambda m, mae: npb.MaskedLMSubstituter(5, batch_size=0), "batch_size"),
    ("mlm device", lambda m, mae: npb.MaskedLMSubstituter(5, device="gpu"), "device"),
    ("mlm without tokenizer", lambda m, mae: npb.MaskedLMSubstituter(5), "mask token"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_by_name(m, mae, call, match):
    with pytest.raises(NeuroprobeError, match=match):
        call(m, mae)


# ---- degenerate science: warned and marked, not silent ------------------------------------
def _dead_unit(m, texts):
    """A unit of ``m`` that never exceeds 0 on ``texts`` (the native ReLU model has some)."""
    rec = npb.record(m, texts, hooks=[HOOK])
    dead = np.flatnonzero((rec.acts <= 0).all(0).numpy())
    assert dead.size, "the fixture model has no dead unit on these texts"
    return (HOOK, int(dead[0]))


def test_dead_unit_top_examples_warn(m):
    unit = _dead_unit(m, TEXTS)
    with pytest.warns(NeuroprobeWarning, match="never exceed 0.*dead units"):
        ex = npb.max_activating_examples(m, [U, unit], TEXTS, k=3)
    assert (ex.for_unit(unit)["activation"] <= 0).all()


def test_live_unit_top_examples_do_not_warn(m):
    import warnings

    rec = npb.record(m, TEXTS, hooks=[HOOK])
    live = int(np.flatnonzero((rec.acts > 0).any(0).numpy())[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeuroprobeWarning)
        npb.max_activating_examples(m, [(HOOK, live)], TEXTS, k=2)


def test_dead_unit_diagnostics_warn_and_prune_says_why(m):
    unit = _dead_unit(m, TEXTS)
    text = TEXTS[0]
    with pytest.warns(NeuroprobeWarning, match="never exceeds 0"):
        npb.token_importance(m, unit, text)
    with pytest.warns(NeuroprobeWarning, match="never exceeds 0"):
        npb.activation_trajectory(m, unit, text)
    res = npb.prune_to_mae(m, unit, text)
    assert not res.passed and "never exceeds 0" in res.reason


def test_valid_token_id_forms_still_work(m):
    ids = [5, 9, 2, 7]
    base = npb.prune_to_mae(m, U, ids)
    for form in (tuple(ids), np.array(ids), torch.tensor(ids), [np.int64(i) for i in ids]):
        assert npb.prune_to_mae(m, U, form).token_ids == base.token_ids
    ex = npb.max_activating_examples(m, U, [torch.tensor([1, 2, 3]), np.array([4, 5])],
                                     k=1, max_texts=np.int64(2))
    assert ex.n_texts == 2


def test_token_id_substituter_works_on_native_model(m, mae):
    found = npb.local_search(m, U, mae, substituter=lambda left, span, right, n: [[3], [4]],
                             spans=(1,))
    assert len(found) > 0 and set(found["kind"]) <= {"positive", "negative", "neutral"}


def test_inputs_are_not_mutated(m):
    texts = [list(t) for t in TEXTS]
    npb.max_activating_examples(m, U, texts, k=2)
    assert texts == TEXTS


def test_nan_weights_warn_in_every_mae_function():
    m = npb.load_model(CFG)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "mlp" in n and "in" in n.lower():
                p.fill_(float("nan"))
    with pytest.warns(NeuroprobeWarning, match="NaN or inf"):
        npb.max_activating_examples(m, U, TEXTS, k=2)
    with pytest.warns(NeuroprobeWarning, match="NaN or inf"):
        res = npb.prune_to_mae(m, U, TEXTS[0])
    assert not res.passed and "NaN" in res.reason
    with pytest.warns(NeuroprobeWarning, match="NaN or inf"):
        npb.token_importance(m, U, TEXTS[0])
