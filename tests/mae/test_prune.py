"""Tests of neuroprobe.mae.prune: exact pruning semantics against a plain sequential reference,
batched == unbatched activations, a planted bigram unit, bad input, SmolLM2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.mae.prune import MAE, max_activating_examples, prune_to_mae
from neuroprobe.mae.sentences import split_sentences

CFG = dict(n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=60, n_ctx=40,
           act_fn="relu", seed=0)


@pytest.fixture(scope="module")
def native():
    return npb.load_model(CFG)


# ---- the plain sequential reference (one candidate per forward pass, no padding) ----------
def _act_at(model, unit, seq, pos):
    """Activation of ``unit`` at position ``pos`` of one unpadded sequence, full model."""
    return float(_acts_all(model, unit, seq)[pos])


def _acts_all(model, unit, seq):
    hook, idx = unit if not isinstance(unit, npb.Directions) else (unit.hook, None)
    got = {}

    def fn(act, hook):
        got["a"] = act[0]

    with torch.no_grad():
        model.run_with_hooks(torch.tensor([seq]), fwd_hooks=[(hook, fn)])
    a = got["a"]
    return (a @ unit.vectors[0].to(a.dtype) if idx is None else a[:, idx]).tolist()


def reference_mae(model, unit, ids, prefix, sent, max_drop, window):
    """The DESIGN.md section 3 semantics, written out naively.

    ``sent`` is the anchor's sentence as a token range ``(s0, e0)`` or a function of the anchor.
    """
    P = len(prefix)
    acts = _acts_all(model, unit, prefix + ids)[P:]
    a = int(np.argmax(acts))
    orig = acts[a]
    s0, e0 = sent(a) if callable(sent) else sent
    thr = (1 - max_drop) * orig
    e_best = None
    for e in range(s0 + 1, e0 + 1):
        if e < min(a + 1 + window, e0) or e < a + 1:
            continue
        if _act_at(model, unit, prefix + ids[s0:e], P + a - s0) >= thr:
            e_best = e
            break
    if e_best is None:
        return None
    s_best = s0
    for s in range(s0, a + 1):
        if s > max(a - window, s0):
            break
        if _act_at(model, unit, prefix + ids[s:e_best], P + a - s) >= thr:
            s_best = s
    return ids[s_best:e_best], a - s_best


def test_batched_prune_equals_sequential_reference_native(native):
    rng = np.random.default_rng(0)
    units = [("blocks.0.mlp.hook_post", 5), ("blocks.2.hook_resid_post", 3),
             npb.Directions("blocks.1.hook_resid_post", torch.randn(1, 32,
                                                                    generator=torch.Generator()
                                                                    .manual_seed(1)))]
    n_cases = 0
    for unit in units:
        for _t in range(2):
            ids = rng.integers(0, 60, size=int(rng.integers(6, 12))).tolist()
            for max_drop, window in [(0.6, 0), (0.3, 1)]:
                mae = prune_to_mae(native, unit, ids, max_drop=max_drop, window=window)
                ref = reference_mae(native, unit, ids, [], (0, len(ids)), max_drop, window)
                if mae.original_activation <= 0:
                    assert not mae.passed and "never exceeds 0" in mae.reason
                    continue
                assert ref is not None and mae.passed
                assert mae.token_ids == ref[0] and mae.anchor == ref[1]
                assert mae.activation >= (1 - max_drop) * mae.original_activation
                assert mae.original_token_ids[mae.start:mae.end] == mae.token_ids
                n_cases += 1
    assert n_cases >= 8


def test_batched_activations_with_padding_equal_unbatched(native):
    from neuroprobe.mae.reader import UnitReader, resolve_unit

    spec = resolve_unit(native, ("blocks.2.mlp.hook_post", 7))
    seqs = [[1, 2, 3], list(range(5, 30)), [7, 8, 9, 10, 11, 12]]
    batched, _ = UnitReader(native, spec, batch_size=8).run(seqs)
    for s, b in zip(seqs, batched, strict=False):
        one = _acts_all(native, ("blocks.2.mlp.hook_post", 7), s)
        np.testing.assert_allclose(b.numpy(), one, atol=1e-4)


# ---- planted structure: a unit that fires on the bigram (A, B) ---------------------------
A, B = 7, 11


def planted_bigram_model():
    """One layer, no LayerNorm: attention looks at the previous token (learned positions),
    copies 'previous token is A' into the residual; MLP neuron 3 = relu(isB + prevA - 1.5)."""
    n_ctx = 24
    m = npb.load_model(dict(n_layers=1, d_model=64, n_heads=1, d_head=24, d_mlp=8, d_vocab=50,
                            n_ctx=n_ctx, act_fn="relu", normalization_type=None, seed=0))
    P = dict(m.named_parameters())

    def get(suffix):
        return next(v for k, v in P.items() if k.endswith(suffix))

    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        E = get("tok_embed._original_component.weight")
        E[A, 0] = 1.0
        E[B, 1] = 1.0
        pos = get("pos._original_component.weight")
        for p in range(n_ctx):
            pos[p, 40 + p] = 1.0
        q = get("attn._original_component.q._original_component.weight")
        k = get("attn._original_component.k._original_component.weight")
        for p in range(1, n_ctx):
            q[p - 1, 40 + p] = 10.0
        for j in range(n_ctx - 1):
            k[j, 40 + j] = 10.0
        get("attn._original_component.v._original_component.weight")[0, 0] = 1.0
        get("attn._original_component.o._original_component.weight")[2, 0] = 1.0
        w_in = get("mlp._original_component.fc_in._original_component.weight")
        b_in = get("mlp._original_component.fc_in._original_component.bias")
        w_in[3, 1] = 1.0
        w_in[3, 2] = 1.0
        b_in[:] = -1.0
        b_in[3] = -1.5
    return m


@pytest.fixture(scope="module")
def bigram():
    return planted_bigram_model()


UNIT = ("blocks.0.mlp.hook_post", 3)


def test_planted_bigram_unit_fires_only_on_bigram(bigram):
    from neuroprobe.mae.reader import UnitReader, resolve_unit

    r = UnitReader(bigram, resolve_unit(bigram, UNIT))
    (acts,), _ = r.run([[3, A, B, 4, B, A, 5, B]])
    assert acts[2] > 0.4 and float(acts.abs().sum() - acts[2]) < 1e-5


@pytest.mark.parametrize("window", [0, 1, 2])
def test_planted_bigram_mae_is_the_bigram_plus_window(bigram, window):
    ids = [3, 4, 5, 8, 9, A, B, 12, 13, 14, 15]
    mae = prune_to_mae(bigram, UNIT, ids, window=window)
    a = ids.index(B)
    assert mae.passed
    assert mae.token_ids == ids[a - 1 - max(0, window - 1): a + 1 + window]
    assert mae.token_ids[mae.anchor] == B


def test_planted_bigram_local_search(bigram):
    ids = [3, 4, 5, 8, 9, A, B, 12]
    mae = prune_to_mae(bigram, UNIT, ids, window=2)
    assert mae.token_ids == [9, A, B, 12]
    found = npb.local_search(bigram, UNIT, mae, substituter=lambda left, s, r, n: [[20], [21]],
                             spans=(1,))
    t = found.table
    first = t[(t.position == mae.anchor - 1)]  # replacing A
    irrelevant = t[(t.position == 0)]  # replacing the window token before A
    assert len(first) and (first.kind == "negative").all()
    assert len(irrelevant) and (irrelevant.kind == "positive").all()
    assert not (t.position > mae.anchor).any()  # after the anchor: skipped by default


def test_fallback_sentences_and_text(native):
    # a tokenizer-less model has one sentence; use max_drop tiny so the sentence passes
    ids = list(range(3, 20))
    for fb in ("none", "text", "sentences"):
        mae = prune_to_mae(native, ("blocks.1.mlp.hook_post", 17), ids, max_drop=0.05,
                           fallback=fb)
        assert mae.passed


def test_token_importance_and_trajectory_on_bigram(bigram):
    ids = [3, 4, A, B]
    imp = npb.token_importance(bigram, UNIT, ids, method="mask")
    assert imp.anchor == 3 and np.isnan(imp.importance[3])
    assert imp.importance[2] > 0.4 and abs(imp.importance[0]) < 1e-5
    imp_mean = npb.token_importance(bigram, UNIT, ids, method="mean")
    assert imp_mean.importance[2] > 0.4 and imp_mean.importance[3] > 0.4
    tr = npb.activation_trajectory(bigram, UNIT, ids)
    # removing tokens from the start keeps the bigram until A itself is removed
    assert tr.from_start[:3] == pytest.approx([0.5, 0.5, 0.5], abs=1e-5)
    assert tr.from_start[3] < 1e-5
    assert tr.to_dataframe().shape[0] == len(tr.from_start) + len(tr.from_end)


# ---- max-activating examples ------------------------------------------------------------
def test_max_activating_examples_matches_record(native):
    rng = np.random.default_rng(3)
    texts = [rng.integers(0, 60, size=int(rng.integers(4, 15))).tolist() for _ in range(30)]
    units = [("blocks.1.mlp.hook_post", 2), ("blocks.1.mlp.hook_post", 9),
             ("blocks.0.mlp.hook_post", 4)]
    ex = max_activating_examples(native, units, texts, k=5, batch_size=7)
    rec = npb.record(native, texts, hooks=["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"])
    for u in units:
        col = rec.units.column(u)
        a = rec.acts[:, col].numpy()
        pi = rec.prompt_index.numpy()
        best = np.array([a[pi == p].max() for p in range(len(texts))])
        df = ex.for_unit(u)
        np.testing.assert_allclose(df.activation.to_numpy(), np.sort(best)[::-1][:5], atol=1e-5)
        assert df.text_index.nunique() == 5
    assert "<table>" in ex._repr_html_()


# ---- bad input ---------------------------------------------------------------------------
def test_bad_input(native):
    with pytest.raises(NeuroprobeError, match="valid indices are 0..63"):
        prune_to_mae(native, ("blocks.0.mlp.hook_post", 64), [1, 2, 3])
    with pytest.raises(NeuroprobeError, match="unknown hook"):
        prune_to_mae(native, ("blocks.9.mlp.hook_post", 1), [1, 2, 3])
    with pytest.raises(NeuroprobeError, match="max_drop must be a number in"):
        prune_to_mae(native, ("blocks.0.mlp.hook_post", 1), [1, 2, 3], max_drop=1.5)
    with pytest.raises(NeuroprobeError, match="max_drop must be a number in"):
        prune_to_mae(native, ("blocks.0.mlp.hook_post", 1), [1, 2, 3], max_drop=0)
    with pytest.raises(NeuroprobeError, match="text is empty"):
        prune_to_mae(native, ("blocks.0.mlp.hook_post", 1), [])
    with pytest.raises(NeuroprobeError, match="window must be an int"):
        prune_to_mae(native, ("blocks.0.mlp.hook_post", 1), [1, 2], window=-1)
    with pytest.raises(NeuroprobeError, match="fallback must be"):
        prune_to_mae(native, ("blocks.0.mlp.hook_post", 1), [1, 2], fallback="x")


def test_unit_never_fires_is_reported_not_raised(bigram):
    mae = prune_to_mae(bigram, UNIT, [3, 4, 5, 6])
    assert not mae.passed and "never exceeds 0" in mae.reason
    assert mae.token_ids == [3, 4, 5, 6]


def test_text_longer_than_context_uses_anchor_window(bigram):
    ids = [3] * 30 + [A, B] + [4] * 10  # n_ctx is 24
    mae = prune_to_mae(bigram, UNIT, ids)
    assert mae.passed and mae.token_ids == [A, B]
    assert "more than the context" in mae.reason
    assert len(mae.original_token_ids) <= 24


def test_mae_result_views(bigram):
    mae = prune_to_mae(bigram, UNIT, [3, A, B, 4], window=1)
    assert isinstance(mae, MAE)
    df = mae.to_dataframe()
    assert df.is_anchor.sum() == 1 and list(df.token_id) == mae.token_ids
    d = json.loads(mae.to_json())
    assert d["token_ids"] == mae.token_ids and d["passed"] is True
    h = mae._repr_html_()
    assert "<span" in h and "http" not in h and "<script" not in h


def test_sentence_splitter():
    t = "Dr. Smith paid $3.50 for tea. Was it good? Yes!\n\nNew paragraph here"
    got = [t[s:e].strip() for s, e in split_sentences(t)]
    assert got == ["Dr. Smith paid $3.50 for tea.", "Was it good?", "Yes!",
                   "New paragraph here"]
    spans = split_sentences(t)
    assert spans[0][0] == 0 and spans[-1][1] == len(t)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


# ---- SmolLM2 -----------------------------------------------------------------------------
@pytest.mark.smollm2
def test_smollm2_batched_prune_equals_sequential_reference(smollm2):
    m = smollm2
    text = ("The museum opened in 1902. Its collection of Roman coins is one of the largest in "
            "Europe, and visitors come from all over the world to see it. Tickets are cheap.")
    tok = m.tokenizer
    ids = m.to_tokens(text)[0].tolist()[1:]
    offs = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    sents = split_sentences(text)

    def sentence_of(a):
        c = offs[a][0] + (len(text[offs[a][0]:offs[a][1]]) -
                          len(text[offs[a][0]:offs[a][1]].lstrip()))
        s, e = next((s, e) for s, e in sents if s <= c < e)
        toks = [i for i, (x, y) in enumerate(offs)
                if s <= x + (len(text[x:y]) - len(text[x:y].lstrip())) < e]
        return toks[0], toks[-1] + 1

    compared = 0
    for unit, window in [(("blocks.4.mlp.hook_post", 100), 0),
                         (("blocks.2.mlp.hook_post", 7), 1)]:
        mae = prune_to_mae(m, unit, text, window=window)
        ref = reference_mae(m, unit, ids, [1], sentence_of, 0.6, window)
        if ref is None:
            assert not mae.passed
            continue
        assert mae.passed and mae.token_ids == ref[0] and mae.anchor == ref[1]
        assert len(mae.token_ids) < len(ids)
        assert mae.text in text
        compared += 1
    assert compared >= 1


# ---- corpora -----------------------------------------------------------------------------
def test_corpus_inputs(tmp_path):
    from datasets import Dataset

    from neuroprobe.mae.corpus import iter_texts, load_default_corpus

    texts = load_default_corpus()
    assert len(texts) >= 50 and all(t.strip() for t in texts)
    assert load_default_corpus(2, with_meta=True)[0]["text"] == texts[0]
    j = tmp_path / "c.jsonl"
    j.write_text("\n".join(json.dumps({"body": t}) for t in ["one.", "two."]) + "\n")
    assert list(iter_texts(j, text_column="body")) == ["one.", "two."]
    t = tmp_path / "c.txt"
    t.write_text("first para\nstill first\n\nsecond para\n")
    assert list(iter_texts(t)) == ["first para\nstill first", "second para"]
    assert list(iter_texts(Dataset.from_dict({"text": ["a", "", "b"]}))) == ["a", "b"]
    with pytest.raises(NeuroprobeError, match="not an existing file"):
        list(iter_texts("no such file.jsonl"))
    with pytest.raises(NeuroprobeError, match="no string field 'text'"):
        list(iter_texts(j))
