"""SAE features as units in every consumer: each analysis run on ``sae.features()`` equals the
same analysis run on ``sae.encode(...)`` of the recorded hook output (fast-vs-slow
equivalence on small random native models)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import neuroprobe as npb
from neuroprobe.core import capture as capture_mod
from neuroprobe.dictionary import SAE

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def sae():
    s = SAE(32, 48, "topk", k=6, hook_name=HOOK, seed=2)
    with torch.no_grad():
        s.b_enc.normal_(0, 0.05)
    return s


@pytest.fixture(scope="module")
def texts():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 100, size=int(rng.integers(6, 18))).tolist() for _ in range(14)]


@pytest.fixture(scope="module")
def both(native_model, sae, texts):
    """One recording of the raw hook and of the features, and encode() of the raw part."""
    rec = npb.record(native_model, texts, hooks=[HOOK, sae.features()], batch_size=4)
    raw, feats = rec.acts[:, :32], rec.acts[:, 32:]
    with torch.no_grad():
        enc = sae.encode(raw)
    alive = torch.nonzero(enc.std(0) > 0).flatten()[:10]
    assert alive.numel() >= 6  # enough varying features for the comparisons to mean something
    return SimpleNamespace(rec=rec, raw=raw, feats=feats, enc=enc, alive=alive.tolist())


def _design(T: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({"task": rng.normal(size=T), "drift": np.linspace(-1, 1, T),
                         "constant": np.ones(T)})


def test_fit_glm_on_feature_recording_equals_glm_on_encoded_hook(native_model, sae, texts,
                                                                  both):
    units = sae.features(both.alive)
    rec = npb.record(native_model, texts, hooks=[units], batch_size=4)
    X = _design(rec.acts.shape[0])
    got = npb.fit_glm(rec, X).contrast("task")
    ref = npb.fit_glm(both.enc[:, both.alive].double(), X).contrast("task")
    np.testing.assert_allclose(np.asarray(got.t), np.asarray(ref.t), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got.effect), np.asarray(ref.effect), rtol=1e-4,
                               atol=1e-6)
    assert float(np.abs(np.asarray(ref.t)).max()) > 0.5  # not all zero


def test_glm_probe_streamed_equals_fit_glm_in_memory(native_model, sae, texts, both):
    units = sae.features(both.alive)
    X = _design(both.rec.acts.shape[0])
    (probe,) = npb.stream(native_model, texts, [npb.GLMProbe(units, X)], batch_size=4)
    got = probe.fit().contrast("task")
    ref = npb.fit_glm(both.enc[:, both.alive].double(), X).contrast("task")
    np.testing.assert_allclose(np.asarray(got.t), np.asarray(ref.t), rtol=1e-4, atol=1e-4)


def test_eigenspectrum_of_features_equals_spectrum_of_encoded_hook(native_model, sae, texts,
                                                                   both):
    rec = npb.record(native_model, texts, hooks=[sae.features()], batch_size=4)
    got = npb.eigenspectrum(rec, max_components=12).eigenvalues
    ref = npb.eigenspectrum(both.enc.double(), max_components=12).eigenvalues
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-7)
    # and the streamed probe over the features gives the same spectrum
    (probe,) = npb.stream(native_model, texts, [npb.SpectrumProbe(sae.features())],
                          batch_size=4)
    streamed = npb.eigenspectrum(probe, max_components=12).eigenvalues
    np.testing.assert_allclose(np.asarray(streamed), np.asarray(ref), rtol=1e-4, atol=1e-7)
    assert float(np.asarray(ref)[0]) > 0


def test_local_search_activations_equal_encode_by_hand(native_model, texts):
    # k=2: whether feature k survives the TopK changes with the substitutions
    sae = SAE(32, 48, "topk", k=2, hook_name=HOOK, seed=2)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.05)
    rec = npb.record(native_model, texts, hooks=[HOOK], batch_size=4)
    with torch.no_grad():
        enc = sae.encode(rec.acts)
    both = SimpleNamespace(rec=rec, enc=enc)
    feats = sae.features()
    pi = both.rec.prompt_index.numpy()
    # a feature whose best token has tokens before it in its text (something to substitute)
    for k in torch.argsort(-both.enc.sum(0)).tolist():
        best = np.array([both.enc[pi == p, k].max().item() for p in range(len(texts))])
        p_best = int(np.argmax(best))
        if int(both.enc[pi == p_best, k].argmax()) >= 3:
            break
    text = texts[p_best]
    mae = npb.prune_to_mae(native_model, (feats, k), text, max_drop=0.05, window=3)
    assert mae.anchor >= 1  # tokens before the anchor to substitute
    cands = [[t] for t in (20, 21, 22, 23, 24)]
    found = npb.local_search(native_model, (feats, k), mae, spans=(1,),
                             substituter=lambda left, s, r, n: cands)
    table = found.table
    assert len(table) >= 8 and table.position.nunique() >= 2
    hand = []
    for ids, anchor in zip(table.token_ids, table.anchor, strict=True):
        raw = npb.record(native_model, [list(ids)], hooks=[HOOK]).acts
        assert raw.shape[0] == len(ids)  # no BOS: row i is token i
        with torch.no_grad():
            hand.append(float(sae.encode(raw)[int(anchor), k]))
    hand = np.array(hand)
    np.testing.assert_allclose(table.activation.to_numpy(), hand, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(table["drop"].to_numpy(), 1 - hand / mae.activation, rtol=1e-4,
                               atol=1e-5)
    assert table.text.iloc[int(table.activation.argmax())] == \
        table.text.iloc[int(np.argmax(hand))]
    assert hand.std() > 0  # the substitutions change the activation


def test_max_activating_examples_equal_encoded_maxima(native_model, sae, texts, both):
    k = both.alive[0]
    ex = npb.max_activating_examples(native_model, [(sae.features(), k)], texts, k=4)
    pi = both.rec.prompt_index.numpy()
    best = np.array([both.enc[pi == p, k].max().item() for p in range(len(texts))])
    got = ex.for_unit(ex.units[0]).activation.to_numpy()
    np.testing.assert_allclose(got, np.sort(best)[::-1][:4], atol=1e-5)


# ---- the functional-networks experiment over SAE features -----------------------------------
NET_HOOK = "blocks.1.hook_resid_post"
TASKS3 = ("political_science", "paleontology", "pathology")


@pytest.fixture(scope="module")
def tiny():
    from transformer_lens.model_bridge import TransformerBridge

    from neuroprobe.networks.stimuli import load_prompts, load_words, toy_tokenizer

    texts = (load_prompts().to_dataframe().prompt.tolist()
             + load_prompts(split="B").to_dataframe().prompt.tolist() + list(load_words()))
    tok = toy_tokenizer(texts, vocab_size=500)
    cfg = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=len(tok),
               n_ctx=96, act_fn="relu", normalization_type="LN", seed=0)
    m = TransformerBridge.boot_native(cfg, tokenizer=tok)
    m.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def small():
    from neuroprobe.networks.stimuli import load_prompts

    a, b = load_prompts(split="A", tasks=TASKS3), load_prompts(split="B", tasks=TASKS3)
    return {"sets": {"A": {t: list(a[t][:12]) for t in TASKS3},
                     "B": {t: list(b[t][:8]) for t in TASKS3}}}


@pytest.mark.filterwarnings("ignore:overlap_matrix")
def test_functional_networks_on_features_equal_networks_of_encoded_activations(
        tiny, small, monkeypatch):
    sae = SAE(16, 24, "topk", k=12, hook_name=NET_HOOK, seed=4)
    with torch.no_grad():
        sae.b_enc.fill_(0.3)  # features fire on many tokens: t values for most of them
    feats = sae.features()
    kw = dict(prompts=small, n_runs=3, n_task_blocks=4, n_splits=1, seed=3, alpha=0.05,
              correction="none")
    got = npb.functional_networks(tiny, hooks=[feats], **kw)

    real = capture_mod.record
    units = real(tiny, ["a b c"], hooks=[feats], progress=False).units

    def encoded_record(model, prompts, hooks=None, **rkw):
        rec = real(model, prompts, hooks=[NET_HOOK], **rkw)  # the raw hook only
        with torch.no_grad():
            acts = sae.encode(rec.acts)
        return SimpleNamespace(acts=acts, prompt_index=rec.prompt_index, units=units)

    monkeypatch.setattr(capture_mod, "record", encoded_record)
    ref = npb.functional_networks(tiny, hooks=[feats], **kw)
    assert got.n_units == ref.n_units == 24
    np.testing.assert_allclose(got.tmaps, ref.tmaps, rtol=1e-4, atol=1e-4)
    assert float(np.abs(ref.tmaps).max()) > 1.0  # the t maps are not all zero
    for a, b in zip(got.networks + got.specific_networks + got.heldout_networks,
                    ref.networks + ref.specific_networks + ref.heldout_networks, strict=True):
        assert torch.equal(a.mask, b.mask), (a.name, a.size, b.size)
    assert sum(n.size for n in ref.networks) > 0  # some feature is in some network
    assert got.summary()["heldout_accuracy"] == ref.summary()["heldout_accuracy"]
