"""Tests of neuroprobe.mae.substitute: local search invariants against a plain reference,
substituter protocol, masked-LM substituter, bad input, SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.mae.substitute import MaskedLMSubstituter, SpanRequest, local_search

CFG = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=60, n_ctx=40,
           act_fn="relu", seed=1)
UNIT = ("blocks.1.mlp.hook_post", 10)


@pytest.fixture(scope="module")
def native():
    return npb.load_model(CFG)


@pytest.fixture(scope="module")
def mae(native):
    ids = [4, 18, 33, 7, 51, 2, 9, 27, 40, 12, 5]
    m = npb.prune_to_mae(native, UNIT, ids, window=3)
    assert m.passed and m.activation > 0
    return m


def _act(model, seq, pos):
    got = {}

    def fn(act, hook):
        got["a"] = act[0, pos, UNIT[1]]

    with torch.no_grad():
        model.run_with_hooks(torch.tensor([seq]), fwd_hooks=[(UNIT[0], fn)])
    return float(got["a"])


def test_local_search_rows_match_unbatched_reference(native, mae):
    found = local_search(native, UNIT, mae, top_n=4, spans=(1, 2))
    t = found.table
    assert len(t) > 0
    seen = set()
    for _, r in t.iterrows():
        ids = list(r.token_ids)
        assert ids != mae.token_ids and tuple(ids) not in seen  # no identity, deduplicated
        seen.add(tuple(ids))
        # the activation read at the (shifted) anchor, recomputed one sequence at a time
        assert r.activation == pytest.approx(_act(native, ids, r.anchor), abs=1e-4)
        drop = 1 - r.activation / mae.activation
        assert r["drop"] == pytest.approx(drop)
        want = "positive" if drop < 0.4 else ("negative" if drop > 0.7 else "neutral")
        assert r.kind == want
        assert r.position + r.span - 1 <= mae.anchor  # nothing after the anchor
    assert found.n_positive + found.n_negative + found.n_neutral == len(t)
    assert "<table>" in found._repr_html_()
    assert found.to_json().startswith("{")


def test_lm_head_candidates_are_the_models_top_tokens_reranked(native, mae):
    ids = mae.token_ids
    req = SpanRequest("", "", "", tuple(ids), 1, 2, 3)
    plain = npb.LMHeadSubstituter(native, rerank=False).propose([req])[0]
    with torch.no_grad():
        logits = native(torch.tensor([ids]))[0, 0]
    top = [t for t in torch.argsort(logits, descending=True).tolist() if t != ids[1]][:3]
    assert [c[0] for c in plain] == top
    # re-ranked: the best by the whole sequence's log-likelihood among the pool
    rer = npb.LMHeadSubstituter(native, pool=2.0).propose([req])[0]
    pool = [t for t in torch.argsort(logits, descending=True).tolist() if t != ids[1]][:6]

    def ll(seq):
        with torch.no_grad():
            lp = torch.log_softmax(native(torch.tensor([seq]))[0], -1)
        return float(sum(lp[i, seq[i + 1]] for i in range(len(seq) - 1)))

    scores = {t: ll(ids[:1] + [t] + ids[2:]) for t in pool}
    assert [c[0] for c in rer] == sorted(pool, key=lambda t: -scores[t])[:3]


def test_cached_activations_equal_fresh_ones(native, mae):
    a = local_search(native, UNIT, mae, top_n=3, spans=(1,))
    b = local_search(native, UNIT, mae, spans=(1,), top_n=3,
                     substituter=npb.LMHeadSubstituter(native, pool=1.0, rerank=False))
    common = a.table.merge(b.table, on="text")
    assert len(common) > 0
    np.testing.assert_allclose(common.activation_x, common.activation_y, atol=1e-4)


def test_local_search_leaves_the_substituter_alone(native, mae):
    sub = npb.LMHeadSubstituter(native, pool=2.0)
    sub.prepend_bos = True  # the user's own setting; the search uses the MAE's instead
    before = dict(vars(sub))
    found = local_search(native, UNIT, mae, substituter=sub, top_n=3, spans=(1,))
    assert len(found) > 0 and found.n_forward > 0
    assert vars(sub) == before
    # the same when the search raises half way (here: in the substituter's re-ranking pass)

    def fail_on_batches(module, args):
        if args[0].shape[0] > 1:
            raise RuntimeError("forward failed")

    handle = native.blocks[0].register_forward_pre_hook(fail_on_batches)
    try:
        with pytest.raises(RuntimeError, match="forward failed"):
            local_search(native, UNIT, mae, substituter=sub, top_n=3, spans=(1,))
    finally:
        handle.remove()
    assert vars(sub) == before
    # and a later search with it gives the same result as the first
    again = local_search(native, UNIT, mae, substituter=sub, top_n=3, spans=(1,))
    assert again.table.equals(found.table) and again.n_forward == found.n_forward


def test_function_substituter_and_stop_words(native, mae):
    calls = []

    def sub(left, span, right, n):
        calls.append(span)
        return [[1], [1], [2]]  # duplicates are removed

    found = local_search(native, UNIT, mae, substituter=sub, spans=(1,))
    assert len(calls) == mae.anchor + 1
    assert found.table.groupby("position").size().max() <= 2


def test_bad_input(native, mae):
    with pytest.raises(NeuroprobeError, match="returned no candidates"):
        local_search(native, UNIT, mae, substituter=lambda left, s, r, n: [])
    with pytest.raises(NeuroprobeError, match="one list per request"):
        local_search(native, UNIT, mae, substituter=type("S", (), {
            "propose": lambda self, reqs: [[]]})())
    with pytest.raises(NeuroprobeError, match="MAE is for unit"):
        local_search(native, ("blocks.0.mlp.hook_post", 1), mae)
    with pytest.raises(NeuroprobeError, match="positive_max_drop must be a number in"):
        local_search(native, UNIT, mae, positive_max_drop=1.2)
    with pytest.raises(NeuroprobeError, match="must not exceed negative_min_drop"):
        local_search(native, UNIT, mae, positive_max_drop=0.8, negative_min_drop=0.5)
    with pytest.raises(NeuroprobeError, match="propose"):
        local_search(native, UNIT, mae, substituter=42)


def _tiny_bert(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "red", "big", "house", "."]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + ["##s", "##ing", "##ed"]
    wp = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", mask_token="[MASK]",
                                  pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    model = BertForMaskedLM(cfg)
    with torch.no_grad():  # make the word pieces the most likely predictions
        model.cls.predictions.decoder.bias[len(vocab) - 3:] += 50.0
    return model, tok


def test_masked_lm_substituter_never_returns_word_pieces(tmp_path):
    model, tok = _tiny_bert(tmp_path)
    sub = MaskedLMSubstituter(model, tok)
    reqs = [SpanRequest("the", " cat", " sat on the mat", (1, 2, 3), 1, 2, 4),
            SpanRequest("the cat sat on the", " mat", "", (1, 2, 3), 5, 6, 3)]
    out = sub.propose(reqs)
    assert [len(o) for o in out] == [4, 3]
    for o in out:
        assert all(c.startswith(" ") and "##" not in c and c.strip() for c in o)
        assert len(set(o)) == len(o)
    with pytest.raises(NeuroprobeError, match="mask token"):
        MaskedLMSubstituter(model, None)


# ---- SmolLM2 ------------------------------------------------------------------------------
@pytest.mark.smollm2
def test_smollm2_local_search_round_trips(smollm2):
    m = smollm2
    unit = ("blocks.4.mlp.hook_post", 100)
    text = "Years of war followed, and King Louis XVI was executed in 1793."
    mae = npb.prune_to_mae(m, unit, text)
    assert mae.passed and len(mae.token_ids) < len(m.to_tokens(text)[0]) - 1
    found = local_search(m, unit, mae, top_n=5, spans=(1,))
    assert len(found) > 0
    tok = m.tokenizer
    for _, r in found.table.iterrows():
        ids = list(r.token_ids)
        assert tok(tok.decode(ids), add_special_tokens=False)["input_ids"] == ids
        assert "##" not in r.replacement and r.replacement.strip() != r.replaced.strip()


def test_direction_unit_local_search(native):
    g = torch.Generator().manual_seed(3)
    d = npb.Directions("blocks.1.hook_resid_post", torch.randn(2, 32, generator=g), name="rand")
    unit = (d, 1)
    ids = [4, 18, 33, 7, 51, 2, 9]
    mae = npb.prune_to_mae(native, unit, ids, window=2)
    if not mae.activation > 0:  # pick the other sign of the direction
        d = npb.Directions("blocks.1.hook_resid_post", -d.vectors, name="rand")
        unit = (d, 1)
        mae = npb.prune_to_mae(native, unit, ids, window=2)
    assert mae.passed and mae.unit == "blocks.1.hook_resid_post@rand[1]"
    found = local_search(native, unit, mae, top_n=3, spans=(1,))
    assert len(found) > 0
    got = {}

    def fn(act, hook):
        got["a"] = act[0]

    for _, r in found.table.head(4).iterrows():
        with torch.no_grad():
            native.run_with_hooks(torch.tensor([list(r.token_ids)]),
                                  fwd_hooks=[("blocks.1.hook_resid_post", fn)])
        want = float(got["a"][r.anchor] @ d.vectors[1])
        assert r.activation == pytest.approx(want, abs=1e-4)
