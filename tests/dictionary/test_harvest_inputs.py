"""User corpora through the harvest and training, with a model that has a tokenizer.

A small random native model gets a real tokenizer attached: a byte-level BPE trained on the
test texts (``npb.toy_tokenizer``, always run) and the offline SmolLM2-135M tokenizer
(``smollm2`` marker; its 49,152-token vocabulary on a 2-layer, 32-wide random model, so
only the shared model load costs time).  Each corpus form -- a list of strings, a ``.txt``
file, a ``.jsonl`` file and a ``datasets.Dataset`` saved to and loaded from a local folder
-- is cut into the contexts written out by hand here (each text's ids without special
tokens, then EOS; texts joined; pieces of ``context_size - 1`` ids with BOS prepended), and
the harvested rows equal ``npb.record`` on those token ids (position 0 left out by default).
"""

import json

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe.dictionary import ActivationStore, corpus_contexts, harvest, train_sae

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
CTX = 16

TEXTS = [
    "The river ran fast after the spring rain, and the old mill turned all night.",
    "She kept a small notebook of the birds she saw on her walk to the station.",
    "In the morning the market filled with bread, cheese, apples and loud voices.",
    "A lighthouse keeper counts the ships that pass, and writes their names down.",
    "Nobody expected the quiet student to win the chess tournament in the city.",
    "The recipe asks for two eggs, a cup of flour and a pinch of salt.",
    "Snow covered the mountain road, so the bus waited in the valley until noon.",
    "He fixed the broken clock with a tiny screwdriver and a lot of patience.",
    "Our neighbours grow tomatoes, beans and sunflowers in the garden behind the house.",
    "The library stays open late on Thursdays, when the reading club meets.",
    "After the storm, children collected shells and smooth stones along the beach.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "A fox crossed the field at dusk and disappeared into the dark hedge.",
    "The train to the coast leaves at seven and arrives a little before ten.",
    "My grandmother told stories about the harbour town where she was born.",
    "They painted the fence white and planted roses along the garden path.",
]


def _native_with(tok):
    from transformer_lens.model_bridge import TransformerBridge

    from tests.conftest import NATIVE_CFG

    m = TransformerBridge.boot_native(dict(NATIVE_CFG, d_vocab=len(tok)), tokenizer=tok)
    m.requires_grad_(False)
    return m.eval()


@pytest.fixture(scope="module", params=["toy_bpe", pytest.param("smollm2",
                                                                  marks=pytest.mark.smollm2)])
def lm(request):
    """A random 2-layer native model with a real tokenizer attached."""
    if request.param == "toy_bpe":
        tok = npb.toy_tokenizer(TEXTS, vocab_size=400)
    else:
        tok = request.getfixturevalue("smollm2").tokenizer
    assert tok.bos_token_id is not None and tok.eos_token_id is not None
    return _native_with(tok)


def _hand_contexts(tok, texts, context_size):
    """The documented cut, written out: ids + EOS per text, joined, BOS + pieces."""
    ids = []
    for t in texts:
        ids += list(tok(t, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
    body = context_size - 1
    return [[tok.bos_token_id] + ids[s:s + body] for s in range(0, len(ids) - body + 1, body)]


def _corpus(form, tmp_path):
    """The same texts as each supported corpus form, and the text_column to read it with."""
    if form == "list":
        return list(TEXTS), "text"
    if form == "txt":  # one text per paragraph
        p = tmp_path / "corpus.txt"
        p.write_text("\n\n".join(TEXTS) + "\n")
        return p, "text"
    if form == "jsonl":  # the text in another field than "text"
        p = tmp_path / "corpus.jsonl"
        p.write_text("".join(json.dumps({"id": i, "body": t}) + "\n"
                             for i, t in enumerate(TEXTS)))
        return str(p), "body"
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": TEXTS, "n": list(range(len(TEXTS)))}).save_to_disk(
        str(folder))
    return datasets.load_from_disk(str(folder)), "text"


def _assert_store_equals_record(st, model, ctxs, positions, seed=0):
    rec = npb.record(model, ctxs, hooks=HOOKS, positions=positions)
    assert st.n_tokens == rec.acts.shape[0]
    perm = np.random.default_rng(seed).permutation(st.n_tokens)
    col = 0
    for h, w in zip(st.hooks, st.widths):
        want = rec.acts[:, col:col + w].half().float()
        torch.testing.assert_close(st.rows(h, 0, st.n_tokens)[perm], want, rtol=0, atol=0)
        col += w


def test_corpus_contexts_tokenize_join_with_eos_and_prepend_bos(lm):
    tok = lm.tokenizer
    want = _hand_contexts(tok, TEXTS, CTX)
    assert len(want) >= 10
    got = corpus_contexts(lm, TEXTS, n_tokens=None, context_size=CTX)
    assert got == want
    assert all(len(c) == CTX and c[0] == tok.bos_token_id for c in got)
    # the EOS joins really are inside contexts (texts run across context boundaries)
    assert sum(c[1:].count(tok.eos_token_id) for c in got) >= len(TEXTS) - 2
    # n_tokens: whole contexts, enough for that many tokens after position 0
    assert corpus_contexts(lm, TEXTS, n_tokens=2 * (CTX - 1) + 1, context_size=CTX) == want[:3]


@pytest.mark.parametrize("form", ["list", "txt", "jsonl", "dataset"])
def test_harvest_from_each_corpus_form_equals_record(lm, form, tmp_path):
    corpus, column = _corpus(form, tmp_path)
    want = _hand_contexts(lm.tokenizer, TEXTS, CTX)
    assert corpus_contexts(lm, corpus, n_tokens=None, context_size=CTX,
                           text_column=column) == want
    st = harvest(lm, corpus, HOOKS, path=tmp_path / "store", context_size=CTX,
                 text_column=column)
    assert st.n_tokens == len(want) * (CTX - 1) and st.meta["n_contexts"] == len(want)
    assert st.meta["prepend_bos"] is True
    _assert_store_equals_record(st, lm, want, slice(1, None))
    if form == "list":  # position 0 kept on request; a token budget cuts whole contexts
        full = harvest(lm, corpus, HOOKS, path=tmp_path / "full", context_size=CTX,
                       exclude_first=False, seed=3)
        _assert_store_equals_record(full, lm, want, "all", seed=3)
        few = harvest(lm, corpus, HOOKS, path=tmp_path / "few", context_size=CTX, n_tokens=40)
        _assert_store_equals_record(few, lm, want[:3], slice(1, None))


@pytest.mark.parametrize("form", ["txt", "jsonl", "dataset"])
def test_train_sae_from_a_user_corpus_trains_on_its_harvest(lm, form, tmp_path):
    corpus, column = _corpus(form, tmp_path)
    kw = dict(hook=HOOKS[0], d_sae=16, k=4, n_tokens=None, context_size=CTX, batch_size=64,
              n_steps=4, seed=1)
    sae = train_sae(lm, corpus, store_dir=tmp_path / "store", text_column=column, **kw)
    st = ActivationStore.open(tmp_path / "store")
    want = _hand_contexts(lm.tokenizer, TEXTS, CTX)
    assert st.hooks == (HOOKS[0],) and st.n_tokens == len(want) * (CTX - 1)
    rec = npb.record(lm, want, hooks=HOOKS[0], positions=slice(1, None))
    perm = np.random.default_rng(1).permutation(st.n_tokens)
    torch.testing.assert_close(st.rows(HOOKS[0], 0, st.n_tokens)[perm],
                               rec.acts.half().float(), rtol=0, atol=0)
    # the same SAE as training on that store directly (the list corpus, same seed)
    again = train_sae(lm, list(TEXTS), store_dir=tmp_path / "again", **kw)
    assert sae.hook_name == HOOKS[0] and sae.metadata["prepend_bos"] is True
    for n in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(sae, n), getattr(again, n)), n
