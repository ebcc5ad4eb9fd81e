"""Issue 16 (hostile inputs), the dictionary slice: SAE construction, files, harvest,
training, evaluation, bases and dashboards refuse bad arguments at the entry point with a
NeuroprobeError naming them, and NaN activations are warned about (store) or refused
(training).  The tables below are the sweep: one row per hostile case."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError, NeuroprobeWarning
from neuroprobe.dictionary import (
    SAE,
    ActivationStore,
    compare_bases,
    corpus_contexts,
    evaluate_sae,
    feature_dashboard,
    harvest,
    load_bible_corpus,
    load_sae,
    load_shakespeare_corpus,
    save_sae,
    spliced_losses,
    train_sae,
    train_sae_on_store,
)

CFG = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50, n_ctx=32,
           act_fn="relu", seed=0)
H = "blocks.0.hook_resid_post"
CORPUS = [[(7 * i + s) % 50 for i in range(64)] for s in range(6)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_dict")
    m = npb.load_model(CFG)
    st = ActivationStore.from_arrays(d / "store", {H: torch.randn(300, 16,
                                                   generator=torch.Generator().manual_seed(0))})
    sae = SAE(16, 32, "topk", k=4, hook_name=H)
    afile = d / "afile"
    afile.write_text("x")
    saved = d / "saved"
    save_sae(sae, saved)
    return dict(m=m, st=st, sae=sae, d=d, afile=str(afile), saved=saved)


def _dead_sae():
    sae = SAE(16, 32, "topk", k=4, hook_name=H)
    with torch.no_grad():
        sae.b_enc.fill_(-1e6)
    return sae


def _tsos(**kw):
    base = dict(hook=H, d_sae=32, k=4, batch_size=64, n_steps=2)
    base.update(kw)
    return lambda e: train_sae_on_store(e["st"], **base)


def _harvest(**kw):
    base = dict(path=None, context_size=16)
    base.update(kw)

    def call(e):
        kw2 = dict(base)
        if kw2["path"] is None:
            kw2["path"] = e["d"] / f"h{abs(hash(str(kw))) % 10**8}"
        hooks = kw2.pop("hooks", H)
        return harvest(e["m"], kw2.pop("corpus", CORPUS), hooks, **kw2)

    return call


def _eval(**kw):
    base = dict(n_tokens=100, context_size=16)
    base.update(kw)
    return lambda e: evaluate_sae(base.pop("sae", e["sae"]), e["m"], CORPUS, **base)


def _cb(**kw):
    base = dict(hook=H, bases=("pca",), n_units=4, n_tokens=600, context_size=16, n_top=3,
                n_random=3, n_boot=10)
    base.update(kw)
    return lambda e: compare_bases(e["m"], CORPUS, **base)


def _fd(**kw):
    base = dict(features=[0], n_tokens=100, context_size=16, mae=False)
    base.update(kw)
    return lambda e: feature_dashboard(e["m"], base.pop("sae", e["sae"]), CORPUS, **base)


def _corrupt_cfg(text):
    def call(e):
        d = e["d"] / f"c{abs(hash(text)) % 10**8}"
        save_sae(e["sae"], d)
        (d / "cfg.json").write_text(text)
        return load_sae(d)

    return call


def _corrupt_store(text):
    def call(e):
        d = e["d"] / f"s{abs(hash(text)) % 10**8}"
        d.mkdir(exist_ok=True)
        (d / "store.json").write_text(text)
        return ActivationStore.open(d)

    return call


def _corrupt_array(data):
    def call(e):
        d = e["d"] / f"ca{abs(hash(data)) % 10**8}"
        ActivationStore.from_arrays(d, {H: torch.zeros(4, 3)})
        (d / "acts_0.npy").write_bytes(data)
        return ActivationStore.open(d).rows(H, 0, 2)

    return call


CASES = [
    # ---- the SAE ----
    ("SAE d_sae 0", lambda e: SAE(16, 0, "topk", k=4), "d_sae"),
    ("SAE d_sae 2.5", lambda e: SAE(16, 2.5, "l1"), "d_sae"),
    ("SAE k 0", lambda e: SAE(16, 32, "topk", k=0), "k must be"),
    ("SAE k 2.5", lambda e: SAE(16, 32, "topk", k=2.5), "k must be"),
    ("SAE k > d_sae", lambda e: SAE(16, 8, "topk", k=9), "larger than d_sae"),
    ("SAE architecture", lambda e: SAE(16, 32, "relu"), "architecture"),
    ("SAE dtype int", lambda e: SAE(16, 32, "l1", dtype=torch.int32), "dtype must be a float"),
    ("SAE dtype str", lambda e: SAE(16, 32, "l1", dtype="float32"), "dtype must be a float"),
    ("SAE device", lambda e: SAE(16, 32, "l1", device="gpu"), "device"),
    ("SAE seed str", lambda e: SAE(16, 32, "l1", seed="a"), "seed"),
    ("SAE hook_name int", lambda e: SAE(16, 32, "l1", hook_name=5), "hook_name"),
    ("SAE metadata list", lambda e: SAE(16, 32, "l1", metadata=[1]), "metadata"),
    ("SAE encode wrong width", lambda e: e["sae"].encode(torch.zeros(2, 8)), "d_in=16"),
    ("SAE decode list", lambda e: e["sae"].decode([0] * 32), "decode"),
    ("SAE decode wrong width", lambda e: e["sae"].decode(torch.zeros(2, 8)), "d_sae=32"),
    ("SAE to_dtype str", lambda e: e["sae"].to_dtype("half"), "dtype must be a float"),
    ("SAE fold scale 0", lambda e: e["sae"].fold_input_scale(0), "scale"),
    ("features float", lambda e: e["sae"].features([1.5, 2]), "integer feature numbers"),
    ("features duplicate", lambda e: e["sae"].features([1, 1]), "repeats"),
    ("features bool", lambda e: e["sae"].features([True]), "integer feature numbers"),
    ("features str", lambda e: e["sae"].features("1"), "list of integer feature numbers"),
    ("features out of range", lambda e: e["sae"].features([99]), "feature numbers in 0..31"),
    ("features empty", lambda e: e["sae"].features([]), "empty"),
    # ---- files: missing, corrupt, a directory / a file, unwritable ----
    ("save to a file", lambda e: save_sae(e["sae"], e["afile"]), "is a file"),
    ("save unwritable", lambda e: save_sae(e["sae"], "/proc/npb_nope/x"), "cannot be created"),
    ("save path int", lambda e: save_sae(e["sae"], 5), "path must be a path"),
    ("save not an SAE", lambda e: save_sae(5, e["d"] / "x"), "needs an SAE"),
    ("save format", lambda e: save_sae(e["sae"], e["d"] / "x", format="hf"), "format"),
    ("save l1 as sparsify", lambda e: save_sae(SAE(4, 8, "l1"), e["d"] / "y", format="sparsify"),
     "TopK SAEs only"),
    ("load missing", lambda e: load_sae(e["d"] / "missing"), "expected a folder with cfg.json"),
    ("load a file", lambda e: load_sae(e["afile"]), "expected a folder with cfg.json"),
    ("load path int", lambda e: load_sae(5), "must be a folder path"),
    ("load dtype int", lambda e: load_sae(e["saved"], dtype=torch.int32), "dtype must be"),
    ("load dtype str", lambda e: load_sae(e["saved"], dtype="float16"), "dtype must be"),
    ("load device", lambda e: load_sae(e["saved"], device="gpu"), "device"),
    ("load hook_name int", lambda e: load_sae(e["saved"], hook_name=3), "hook_name"),
    ("load cfg not JSON", _corrupt_cfg("{bad"), "not valid JSON"),
    ("load cfg a list", _corrupt_cfg("[1, 2]"), "not an object"),
    ("load cfg d_in str", _corrupt_cfg('{"architecture": "topk", "d_in": "x", "d_sae": 32, '
                                       '"k": 4}'), "d_in must be a non-negative integer"),
    ("load cfg k float", _corrupt_cfg('{"architecture": "topk", "d_in": 16, "d_sae": 32, '
                                      '"k": 4.5}'), "k must be a non-negative integer"),
    ("load cfg shapes", _corrupt_cfg('{"architecture": "topk", "d_in": 8, "d_sae": 32, '
                                     '"k": 4}'), "shape"),
    ("store open missing", lambda e: ActivationStore.open(e["d"] / "nostore"), "no store.json"),
    ("store open path int", lambda e: ActivationStore.open(5), "folder path"),
    ("store open corrupt", _corrupt_store("{bad"), "not valid JSON"),
    ("store open no keys", _corrupt_store("{}"), "lacks"),
    ("store open no arrays", _corrupt_store('{"hooks": ["h"], "widths": [3], "n_tokens": 5, '
                                            '"dtype": "float16", "meta": {}}'), "missing"),
    ("store from 1-D", lambda e: ActivationStore.from_arrays(e["d"] / "a1", {H: torch.zeros(9)}),
     "must be 2-D"),
    ("store from {}", lambda e: ActivationStore.from_arrays(e["d"] / "a2", {}), "non-empty dict"),
    ("store from list", lambda e: ActivationStore.from_arrays(e["d"] / "a3", [torch.zeros(2, 2)]),
     "non-empty dict"),
    ("store from ragged", lambda e: ActivationStore.from_arrays(
        e["d"] / "a4", {"a": torch.zeros(3, 2), "b": torch.zeros(4, 2)}), "row counts"),
    ("store from a file path", lambda e: ActivationStore.from_arrays(
        e["afile"], {H: torch.zeros(3, 2)}), "is a file"),
    ("store from dtype", lambda e: ActivationStore.from_arrays(
        e["d"] / "a5", {H: torch.zeros(3, 2)}, dtype="float32"), "dtype"),
    ("store corrupt array", _corrupt_array(b"garbage"), "not a readable .npy"),
    ("store rows float", lambda e: e["st"].rows(H, 0.5, 2), "start"),
    ("store rows past end", lambda e: e["st"].rows(H, 0, 10**6), "stop"),
    ("store batches 0", lambda e: list(e["st"].batches(H, 0)), "batch_size"),
    ("store unknown hook", lambda e: e["st"].rows("nope", 0, 2), "not in this activation store"),
    # ---- harvest / corpus_contexts ----
    ("harvest dtype", _harvest(dtype="float32"), "dtype"),
    ("harvest hooks int", _harvest(hooks=5), "hooks must be a hook name"),
    ("harvest hooks list of int", _harvest(hooks=[5]), "hooks must hold hook names"),
    ("harvest hooks empty", _harvest(hooks=[]), "hooks is empty"),
    ("harvest hooks unknown", _harvest(hooks="blocks.9.hook_resid_post"),
     "hooks: unknown hook 'blocks.9.hook_resid_post'"),
    ("harvest hooks duplicate", _harvest(hooks=[H, H]), "hooks repeats"),
    ("harvest hooks pattern", _harvest(hooks="blocks.*.hook_resid_post"), "exact hook names"),
    ("harvest hook not per-token", _harvest(hooks="blocks.0.attn.hook_pattern"), "per-token"),
    ("harvest context_size 1", _harvest(context_size=1), "context_size"),
    ("harvest context_size 2.5", _harvest(context_size=2.5), "context_size"),
    ("harvest context_size > n_ctx", _harvest(context_size=64), "n_ctx=32"),
    ("harvest n_tokens 0", _harvest(n_tokens=0), "n_tokens"),
    ("harvest n_tokens -5", _harvest(n_tokens=-5), "n_tokens"),
    ("harvest n_tokens 2.5", _harvest(n_tokens=2.5), "n_tokens"),
    ("harvest batch_size 0", _harvest(batch_size=0), "batch_size"),
    ("harvest exclude_first str", _harvest(exclude_first="no"), "exclude_first"),
    ("harvest seed -1", _harvest(seed=-1), "seed"),
    ("harvest path a file", lambda e: harvest(e["m"], CORPUS, H, path=e["afile"],
                                              context_size=16), "is a file"),
    ("harvest path unwritable", lambda e: harvest(e["m"], CORPUS, H, path="/proc/npb_x/y",
                                                  context_size=16), "cannot be created"),
    ("harvest path None", lambda e: harvest(e["m"], CORPUS, H, path=None, context_size=16),
     "path must be a path"),
    ("harvest float ids", _harvest(corpus=[[1.5] * 40]), "must hold integer token ids"),
    ("harvest oov ids", _harvest(corpus=[[999] * 40]), "out of range"),
    ("harvest strings on native", _harvest(corpus=["some text"]), "not strings"),
    ("harvest empty corpus", _harvest(corpus=[]), "fewer than context_size"),
    ("contexts n_tokens -1", lambda e: corpus_contexts(e["m"], CORPUS, n_tokens=-1,
                                                       context_size=16), "n_tokens"),
    ("contexts context_size 0", lambda e: corpus_contexts(e["m"], CORPUS, n_tokens=None,
                                                          context_size=0), "context_size"),
    ("contexts text_column int", lambda e: corpus_contexts(e["m"], CORPUS, n_tokens=None,
                                                           context_size=16, text_column=1),
     "text_column"),
    # ---- training ----
    ("train d_sae 0", _tsos(d_sae=0), "d_sae"),
    ("train d_sae 2.5", _tsos(d_sae=2.5), "d_sae"),
    ("train k 0", _tsos(k=0), "k must be"),
    ("train k 2.5", _tsos(k=2.5), "k must be"),
    ("train k str", _tsos(k="4"), "k must be"),
    ("train k > d_sae", _tsos(k=40), "larger than d_sae"),
    ("train l1_coefficient -1", _tsos(architecture="l1", l1_coefficient=-1), "l1_coefficient"),
    ("train l1_coefficient nan", _tsos(architecture="l1", l1_coefficient=float("nan")),
     "l1_coefficient"),
    ("train lr 0", _tsos(lr=0), "lr must be"),
    ("train lr -1", _tsos(lr=-1), "lr must be"),
    ("train lr nan", _tsos(lr=float("nan")), "lr must be"),
    ("train lr str", _tsos(lr="1e-3"), "lr must be"),
    ("train n_steps 0", _tsos(n_steps=0), "n_steps"),
    ("train n_steps -3", _tsos(n_steps=-3), "n_steps"),
    ("train n_steps 2.5", _tsos(n_steps=2.5), "n_steps"),
    ("train batch_size 0", _tsos(batch_size=0), "batch_size"),
    ("train batch_size -5", _tsos(batch_size=-5), "batch_size"),
    ("train batch_size 64.5", _tsos(batch_size=64.5), "batch_size"),
    ("train batch_size > rows", _tsos(batch_size=1000), "fewer than one batch"),
    ("train hook unknown", _tsos(hook="x"), "not in this activation store"),
    ("train hook list", _tsos(hook=[H]), "hook must be one hook name"),
    ("train architecture", _tsos(architecture="TopK"), "architecture"),
    ("train resample_at float", _tsos(architecture="l1", resample_at=0.5), "resample_at"),
    ("train resample_at 2", _tsos(architecture="l1", resample_at=(2,)), "resample_at"),
    ("train train_tokens reversed", _tsos(train_tokens=(200, 100)), "train_tokens"),
    ("train train_tokens too big", _tsos(train_tokens=(0, 10**4)), "train_tokens"),
    ("train train_tokens negative", _tsos(train_tokens=(-100, 300)), "train_tokens"),
    ("train train_tokens 3", _tsos(train_tokens=(0, 1, 2)), "train_tokens must be a pair"),
    ("train seed -1", _tsos(seed=-1), "seed"),
    ("train device", _tsos(device="gpu"), "device"),
    ("train checkpoint_dir a file", lambda e: train_sae_on_store(
        e["st"], hook=H, d_sae=32, k=4, batch_size=64, n_steps=2, checkpoint_dir=e["afile"]),
     "checkpoint_dir"),
    ("train checkpoint_dir unwritable", _tsos(checkpoint_dir="/proc/npb_x"), "checkpoint_dir"),
    ("train checkpoint_every 0", _tsos(checkpoint_every=0), "checkpoint_every"),
    ("train progress str", _tsos(progress="yes"), "progress"),
    ("train callback int", _tsos(callback=5), "callback must be a callable"),
    ("train callback signature", _tsos(callback=lambda: None), "callback must accept 2"),
    ("train not a store", lambda e: train_sae_on_store("x", hook=H, d_sae=32, k=4),
     "store must be an ActivationStore"),
    ("train_sae no corpus", lambda e: train_sae(e["m"], hook=H, d_sae=32, k=4), "corpus"),
    ("train_sae misspelt kw", lambda e: train_sae(e["m"], CORPUS, hook=H, d_sae=32, k=4,
                                                  context_size=16, n_step=3), "n_steps"),
    ("train_sae hook unknown", lambda e: train_sae(e["m"], CORPUS, hook="blocks.7.hook_x",
                                                   d_sae=32, k=4, context_size=16),
     "hook: unknown hook"),
    ("train_sae d_sae 0 before harvest", lambda e: train_sae(e["m"], CORPUS, hook=H, d_sae=0,
                                                             k=4, context_size=16), "d_sae"),
    ("train_sae store_dir a file", lambda e: train_sae(e["m"], CORPUS, hook=H, d_sae=32, k=4,
                                                       context_size=16, store_dir=e["afile"]),
     "store_dir"),
    # ---- evaluation (an SAE of the wrong width for the hook included) ----
    ("eval wrong width", _eval(sae=SAE(8, 16, "topk", k=2, hook_name=H)), "d_in=8"),
    ("eval no hook", _eval(sae=SAE(16, 32, "topk", k=2)), "no hook_name"),
    ("eval not an SAE", _eval(sae="x"), "needs an SAE"),
    ("eval hook unknown", _eval(hook="blocks.9.hook_resid_post"), "hook: unknown hook"),
    ("eval n_tokens 0", _eval(n_tokens=0), "n_tokens"),
    ("eval n_tokens -5", _eval(n_tokens=-5), "n_tokens"),
    ("eval ce_tokens 0", _eval(ce_tokens=0), "ce_tokens"),
    ("eval context_size 1", _eval(context_size=1), "context_size"),
    ("eval batch_size 0", _eval(batch_size=0), "batch_size"),
    ("eval dense_threshold -1", _eval(dense_threshold=-1), "dense_threshold"),
    ("eval skip_contexts -1", _eval(skip_contexts=-1), "skip_contexts"),
    ("eval skip_contexts 2.5", _eval(skip_contexts=2.5), "skip_contexts"),
    ("eval exclude_first int", _eval(exclude_first=1), "exclude_first"),
    ("spliced ragged", lambda e: spliced_losses(e["m"], [[1, 2, 3], [1, 2]], H, {}),
     "one length"),
    ("spliced float ids", lambda e: spliced_losses(e["m"], [[1.5, 2, 3, 4]], H, {}),
     "must hold integer token ids"),
    ("spliced oov ids", lambda e: spliced_losses(e["m"], [[1, 2, 3, 999]], H, {}),
     "out of range"),
    ("spliced replacement int", lambda e: spliced_losses(e["m"], [[1, 2, 3, 4]], H, {"x": 5}),
     "must be a callable"),
    ("spliced replacements list", lambda e: spliced_losses(e["m"], [[1, 2, 3, 4]], H,
                                                           [lambda x: x]), "must be a dict"),
    ("spliced wrong output shape", lambda e: spliced_losses(
        e["m"], [[1, 2, 3, 4]], H, {"x": lambda x: x[:, :3]}), "must return a tensor"),
    ("spliced hook unknown", lambda e: spliced_losses(e["m"], [[1, 2, 3, 4]], "nope", {}),
     "hook: unknown hook"),
    ("spliced batch_size 0", lambda e: spliced_losses(e["m"], [[1, 2, 3, 4]], H, {},
                                                      batch_size=0), "batch_size"),
    ("spliced first_position -1", lambda e: spliced_losses(e["m"], [[1, 2, 3, 4]], H, {},
                                                           first_position=-1), "first_position"),
    # ---- bases and dashboards ----
    ("bases unknown", _cb(bases=("svd",)), "unknown"),
    ("bases duplicate", _cb(bases=("pca", "pca")), "repeats"),
    ("bases n_units 0", _cb(n_units=0), "n_units"),
    ("bases n_units 2.5", _cb(n_units=2.5), "n_units"),
    ("bases n_top 0", _cb(n_top=0), "n_top"),
    ("bases n_random 0", _cb(n_random=0), "n_random"),
    ("bases n_boot 0", _cb(n_boot=0), "n_boot"),
    ("bases sae wrong width", _cb(bases=("sae",), sae=SAE(8, 16, "topk", k=2, hook_name=H)),
     "d_in=8"),
    ("bases sae missing", _cb(bases=("sae",)), "needs sae"),
    ("bases hook unknown", _cb(hook="nope"), "hook: unknown hook"),
    ("bases context_size > n_ctx", _cb(context_size=128), "n_ctx"),
    ("dash features float", _fd(features=[1.5]), "integer feature numbers"),
    ("dash features out of range", _fd(features=[99]), "out of range"),
    ("dash features empty", _fd(features=[]), "features is empty"),
    ("dash n_features 0", _fd(features=None, n_features=0), "n_features"),
    ("dash n_top 0", _fd(n_top=0), "n_top"),
    ("dash n_logits 0", _fd(n_logits=0), "n_logits"),
    ("dash n_logits > vocab", _fd(n_logits=999), "n_logits"),
    ("dash window 0", _fd(window=0), "window"),
    ("dash mae str", _fd(mae="no"), "mae must be True or False"),
    ("dash wrong width", _fd(sae=SAE(8, 16, "topk", k=2, hook_name=H)), "d_in=8"),
    ("dash no hook", _fd(sae=SAE(16, 32, "topk", k=2)), "no hook_name"),
    ("dash not an SAE", _fd(sae="x"), "sae must be an SAE"),
    ("dash save to a file", lambda e: _fd()(e).save(e["afile"]), "is a file"),
    ("features subset float", lambda e: e["sae"].features([0, 1]).subset([1.5]),
     "integer positions"),
    ("features subset out of range", lambda e: e["sae"].features([0, 1]).subset([5]),
     "out of range"),
    ("harvest model int", lambda e: harvest(5, CORPUS, H, path=e["d"] / "m5", context_size=16),
     "model must be a language model"),
    ("train_sae model str", lambda e: train_sae("nope", CORPUS, hook=H, d_sae=32, k=4,
                                                context_size=16), "model must be a language"),
    ("eval model int", lambda e: evaluate_sae(e["sae"], 5, CORPUS), "model must be a language"),
    ("bases model int", lambda e: compare_bases(5, CORPUS, hook=H), "model must be a language"),
    ("dash model int", lambda e: feature_dashboard(5, e["sae"], CORPUS), "model must be a lang"),
    ("bases sae all dead", _cb(bases=("sae",), sae=_dead_sae()), "none of the SAE's"),
    ("shakespeare edition", lambda e: load_shakespeare_corpus("folio"), "edition"),
    ("shakespeare chunk_chars 0", lambda e: load_shakespeare_corpus(chunk_chars=0),
     "chunk_chars"),
    ("shakespeare chunk_chars -5", lambda e: load_shakespeare_corpus(chunk_chars=-5),
     "chunk_chars"),
    ("bible chunk_chars 0", lambda e: load_bible_corpus(chunk_chars=0), "chunk_chars"),
    ("bible chunk_chars str", lambda e: load_bible_corpus(chunk_chars="4000"), "chunk_chars"),
    ("bible translation unknown", lambda e: load_bible_corpus(("web", "kjv")),
     r"translations=\('web', 'kjv'\); expected .*\['bbe', 'web'\]"),
    ("bible translations empty", lambda e: load_bible_corpus(()), "translations=()"),
    ("bible translations twice", lambda e: load_bible_corpus(["bbe", "bbe"]), "distinct"),
    ("bible translations int", lambda e: load_bible_corpus(3), "translations=3"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_by_name(env, call, match):
    with pytest.raises(NeuroprobeError, match=match):
        call(env)


# ---- NaN activations in a store, NaN weights, dead features --------------------------------
def test_nan_activations_warn_in_the_store_and_are_refused_by_training(tmp_path):
    x = torch.randn(300, 16)
    x[7, 3] = float("nan")
    with pytest.warns(NeuroprobeWarning, match="NaN or inf"):
        st = ActivationStore.from_arrays(tmp_path / "nan", {H: x})
    with pytest.raises(NeuroprobeError, match="NaN or inf in 1 of the first 300"):
        train_sae_on_store(st, hook=H, d_sae=32, k=4, batch_size=64, n_steps=2)


def test_float16_overflow_in_the_store_warns(tmp_path):
    with pytest.warns(NeuroprobeWarning, match="beyond the float16 range"):
        ActivationStore.from_arrays(tmp_path / "big", {H: torch.full((10, 3), 1e6)})


def test_harvest_of_nan_weights_warns(tmp_path):
    m = npb.load_model(CFG)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "mlp" in n:
                p.fill_(float("nan"))
    with pytest.warns(NeuroprobeWarning, match="NaN or inf"):
        harvest(m, CORPUS, H, path=tmp_path / "h", context_size=16)


def test_all_zero_store_is_refused(tmp_path):
    st = ActivationStore.from_arrays(tmp_path / "z", {H: torch.zeros(300, 16)})
    with pytest.raises(NeuroprobeError, match="all zeros"):
        train_sae_on_store(st, hook=H, d_sae=32, k=4, batch_size=64, n_steps=2)


def test_nan_sae_weights_warn_in_evaluation(env):
    sae = SAE(16, 32, "topk", k=4, hook_name=H)
    with torch.no_grad():
        sae.W_dec.fill_(float("nan"))
    with pytest.warns(NeuroprobeWarning, match="W_dec contains"):
        evaluate_sae(sae, env["m"], CORPUS, n_tokens=100, context_size=16)


def test_loading_nan_weights_warns(tmp_path):
    sae = SAE(16, 32, "topk", k=4, hook_name=H)
    with torch.no_grad():
        sae.W_enc.fill_(float("nan"))
    save_sae(sae, tmp_path / "nan")
    with pytest.warns(NeuroprobeWarning, match="W_enc contains"):
        load_sae(tmp_path / "nan")


def test_dashboard_of_dead_sae_warns(env):
    sae = SAE(16, 32, "topk", k=4, hook_name=H)
    with torch.no_grad():
        sae.b_enc.fill_(-1e6)
    with pytest.warns(NeuroprobeWarning, match="none of the SAE's 32 features fires"):
        dash = feature_dashboard(env["m"], sae, CORPUS, n_tokens=100, context_size=16,
                                 mae=False)
    assert dash.cards == ()


def test_valid_calls_still_work(env, tmp_path):
    sae = env["sae"]
    assert sae.features(np.array([0, 3])).features == (0, 3)
    assert sae.features(torch.tensor([1, 2])).features == (1, 2)
    save_sae(sae, tmp_path / "sub" / "dir")  # parents are created
    assert load_sae(str(tmp_path / "sub" / "dir"), dtype=torch.float16).W_enc.dtype == \
        torch.float16
    st = harvest(env["m"], CORPUS, (H,), path=tmp_path / "st", context_size=16,
                 n_tokens=np.int64(100))
    assert st.n_tokens >= 100 and os.path.exists(tmp_path / "st" / "store.json")
    out = train_sae_on_store(st, hook=H, d_sae=np.int64(32), k=4, batch_size=64, n_steps=2,
                             train_tokens=(np.int64(0), st.n_tokens), callback=lambda s, v: None)
    assert out.d_sae == 32
