"""Hostile inputs to the core slice (issue 16): every case is a NeuroprobeError naming the
argument, a NeuroprobeWarning, or a checked result -- never a raw torch/numpy/pandas error and
never a silent wrong answer.

``CASES`` is the sweep: one row per hostile input to a public core entry point
(load_model, record, record_generation, stream, hook_names, tokenize_prompts, Recording and
its selections / persistence, probes, UnitIndex, Directions, shards).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError, NeuroprobeWarning
from neuroprobe.core.engine import hooked, run_hooks
from neuroprobe.core.validation import check_float_dtype
from neuroprobe.testbeds import ReLUMLP

CFG = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50, n_ctx=16,
           act_fn="relu", seed=0)
H = "blocks.0.mlp.hook_post"
P = [[1, 2, 3], [4, 5]]


@pytest.fixture(scope="module")
def ctx():
    model = npb.load_model(dict(CFG))
    rec = npb.record(model, P, "blocks.*.mlp.hook_post")
    top = npb.stream(model, P, [npb.TopK(H, k=2)])[0]
    return dict(m=model, rec=rec, top=top)


def _lm(**kw):
    return lambda c: npb.load_model(dict(CFG, **kw))


def _rec(**kw):
    return lambda c: npb.record(c["m"], P, H, **kw)


def _pos(fn):
    return _rec(positions=fn)


def _mk_rec(**kw):
    base = dict(acts=torch.zeros(3, 2), units=npb.UnitIndex.from_hooks({"h": 2}),
                prompt_index=torch.tensor([0, 0, 1]), position=torch.tensor([0, 1, 0]))
    base.update(kw)
    return lambda c: npb.Recording(**base)


class _StrHooksProbe:
    hooks = 5

    def update(self, acts, meta):  # pragma: no cover
        pass


CASES = [
    # ---- load_model: unknown keys, invalid values, non-float dtypes -------------------------
    ("lm-misspelt-key", _lm(act_fun="gelu"), r"unknown key.*'act_fun'.*did you mean 'act_fn'"),
    ("lm-unknown-key", _lm(n_layer=3), r"unknown key.*'n_layer'"),
    ("lm-act-fn", _lm(act_fn="gelu2"), r"\['act_fn'\] must be one of"),
    ("lm-d_vocab-0", _lm(d_vocab=0), r"\['d_vocab'\] must be an integer in \[1"),
    ("lm-d_model-neg", _lm(d_model=-1), r"\['d_model'\] must be an integer"),
    ("lm-n_layers-0", _lm(n_layers=0), r"\['n_layers'\] must be an integer"),
    ("lm-n_layers-float", _lm(n_layers=1.5), r"\['n_layers'\] must be an integer"),
    ("lm-n_heads-str", _lm(n_heads="2"), r"\['n_heads'\] must be an integer"),
    ("lm-n_ctx-0", _lm(n_ctx=0), r"\['n_ctx'\] must be an integer"),
    ("lm-d_mlp-0", _lm(d_mlp=0), r"\['d_mlp'\] must be an integer"),
    ("lm-norm", _lm(normalization_type="layernorm"), r"\['normalization_type'\] must be one"),
    ("lm-posemb", _lm(positional_embedding_type="alibi"), r"positional_embedding_type"),
    ("lm-rotary-dim", _lm(positional_embedding_type="rotary", rotary_dim=32),
     r"\['rotary_dim'\]=32 is larger than d_head=8"),
    ("lm-experts", _lm(num_experts=2, experts_per_token=3), r"\['experts_per_token'\]=3"),
    ("lm-bool-str", _lm(attn_only="yes"), r"\['attn_only'\] must be True or False"),
    ("lm-eps-neg", _lm(eps=-1.0), r"\['eps'\] must be a finite number in \(0"),
    ("lm-seed-str", _lm(seed="a"), r"\['seed'\] must be an integer"),
    ("lm-missing", lambda c: npb.load_model({k: v for k, v in CFG.items() if k != "d_vocab"}),
     r"missing d_vocab"),
    ("lm-dtype-int", lambda c: npb.load_model(dict(CFG), dtype=torch.int32),
     r"dtype=torch.int32 is not a floating dtype"),
    ("lm-cfg-dtype-int", _lm(dtype=torch.int64), r"\['dtype'\]=torch.int64 is not a floating"),
    ("lm-dtype-bogus", lambda c: npb.load_model(dict(CFG), dtype="lots"),
     r"dtype='lots' is not a torch dtype"),
    # ---- record: hooks ----------------------------------------------------------------------
    ("rec-hooks-int", lambda c: npb.record(c["m"], P, 5), r"hooks must be a hook name.*got int"),
    ("rec-hooks-dict", lambda c: npb.record(c["m"], P, {H: 1}), r"hooks must be a hook name"),
    ("rec-hooks-empty", lambda c: npb.record(c["m"], P, []), r"hooks is empty"),
    ("rec-idx-float", lambda c: npb.record(c["m"], P, (H, [1.0, 2.5])),
     r"indices of \('blocks.0.mlp.hook_post'.*integer neurons; got 1.0"),
    ("rec-idx-empty", lambda c: npb.record(c["m"], P, (H, [])), r"indices of .* is empty"),
    ("rec-idx-dup", lambda c: npb.record(c["m"], P, (H, [1, 1])), r"repeats neurons \[1\]"),
    ("rec-idx-none", lambda c: npb.record(c["m"], P, (H, None)), r"indices of .*NoneType"),
    ("rec-idx-nested", lambda c: npb.record(c["m"], P, (H, [[1, 2]])), r"integer neurons"),
    ("rec-idx-float-tensor", lambda c: npb.record(c["m"], P, (H, torch.tensor([1.0]))),
     r"integer neurons; got dtype float32"),
    ("rec-unit-twice", lambda c: npb.record(c["m"], P, [H, (H, [3])]),
     r"neuron\(s\) \[3\] of 'blocks.0.mlp.hook_post' are requested twice"),
    ("rec-unit-twice-subsets", lambda c: npb.record(c["m"], P, [(H, [1, 2]), (H, [2, 5])]),
     r"neuron\(s\) \[2\] .* requested twice"),
    ("rec-idx-out", lambda c: npb.record(c["m"], P, (H, [99])), r"index 99 is out of range"),
    # ---- record: dtype, sizes, flags --------------------------------------------------------
    ("rec-dtype-int", _rec(dtype=torch.int32), r"dtype=torch.int32 is not a floating dtype"),
    ("rec-dtype-bool", _rec(dtype=torch.bool), r"dtype=torch.bool is not a floating dtype"),
    ("rec-dtype-long-str", _rec(dtype="int64"), r"dtype='int64' is not a floating dtype"),
    ("rec-dtype-junk", _rec(dtype="lots"), r"dtype='lots' is not a torch dtype"),
    ("rec-batch-0", _rec(batch_size=0), r"batch_size must be an int >= 1"),
    ("rec-include_bos-str", _rec(include_bos="no"), r"include_bos must be True or False"),
    ("rec-truncate-str", _rec(truncate="no"), r"truncate must be True or False"),
    ("rec-prepend_bos-int", _rec(prepend_bos=1), r"prepend_bos must be True or False"),
    ("rec-progress-str", _rec(progress="yes"), r"progress must be True or False"),
    ("rec-text_column-int", _rec(text_column=5), r"text_column must be a column name"),
    ("rec-labels-str", _rec(labels="ab"), r"labels must be a list.*got str 'ab'"),
    ("rec-labels-int", _rec(labels=3), r"labels must be a list.*got int"),
    ("rec-labels-short", _rec(labels=["a"]), r"labels has 1 entries for 2 prompts"),
    # ---- record: positions ------------------------------------------------------------------
    ("pos-floats", _pos(lambda i, n: [0.5, 1.0]), r"positions callable.*integer positions"),
    ("pos-dup", _pos(lambda i, n: [0, 0]), r"positions callable.*repeats positions \[0\]"),
    ("pos-unsorted", _pos(lambda i, n: [1, 0]), r"positions callable.*increasing order"),
    ("pos-none", _pos(lambda i, n: None), r"positions callable.*NoneType"),
    ("pos-str", _pos(lambda i, n: "ab"), r"positions callable.*got str"),
    ("pos-int", _pos(lambda i, n: 1), r"positions callable.*Wrap a single position"),
    ("pos-bools", _pos(lambda i, n: [True, False]), r"positions callable.*bool"),
    ("pos-float-tensor", _pos(lambda i, n: torch.tensor([0.0])), r"positions callable.*dtype"),
    ("pos-out", _pos(lambda i, n: [n]), r"positions callable.*out of range \[0, 3\)"),
    ("pos-signature", _pos(lambda i: [0]), r"positions: the callable .* \(prompt_index, n_tok"),
    ("pos-empty-slice", _pos(slice(10, 20)), r"positions=slice\(10, 20, None\).*selects no token"),
    ("pos-empty-callable", _pos(lambda i, n: []), r"selects no token in any of the 2 prompt"),
    ("pos-slice-step0", _pos(slice(None, None, 0)), r"positions=slice\(...\) has step 0"),
    ("pos-slice-reversed", _pos(slice(None, None, -1)), r"positions=slice\(...\) has step -1"),
    ("pos-slice-float", _pos(slice(0.5, 2)), r"positions=slice\(...\).start must be an integer"),
    ("pos-list", _pos([0, 1]), r"positions must be 'all', 'last', a slice or a callable"),
    ("pos-misspelt", _pos("Last"), r"positions='Last'"),
    # ---- record: storage --------------------------------------------------------------------
    ("mem-str", _rec(memory_budget="lots"), r"memory_budget must be an int >= 0"),
    ("mem-neg", _rec(memory_budget=-1), r"memory_budget must be an int >= 0"),
    ("mem-float", _rec(memory_budget=1.5), r"memory_budget must be an int >= 0"),
    ("storage-int", _rec(memory_budget=0, storage_dir=5), r"storage_dir must be a directory"),
    ("storage-uncreatable", _rec(memory_budget=0, storage_dir="/proc/npb-no/x"),
     r"storage_dir='/proc/npb-no/x' cannot be created"),
    ("storage-file", lambda c: npb.record(c["m"], P, H, memory_budget=0,
                                          storage_dir=__file__), r"storage_dir=.* is a file"),
    # ---- record: prompts and model ----------------------------------------------------------
    ("prompt-none-entry", lambda c: npb.record(c["m"], [None], H), r"prompts\[0\] must be a str"),
    ("prompt-int-entry", lambda c: npb.record(c["m"], [[1, 2], 5], H), r"prompts\[1\] must be"),
    ("prompt-bool-ids", lambda c: npb.record(c["m"], [[True, False]], H), r"prompts\[0\] holds"),
    ("prompt-float-ids", lambda c: npb.record(c["m"], [[1.0, 2.5]], H), r"prompts\[0\] must"),
    ("model-none", lambda c: npb.record(None, P, H), r"model must be a TransformerBridge"),
    ("model-str", lambda c: npb.record("smollm2-135m", P, H), r"Load it first"),
    ("hook_names-none", lambda c: npb.hook_names(None), r"model must be a TransformerBridge"),
    ("tokenize-prepend-str", lambda c: npb.tokenize_prompts(c["m"], [[1]], prepend_bos="x"),
     r"prepend_bos must be True or False"),
    ("tokenize-none", lambda c: npb.tokenize_prompts(c["m"], [None]), r"prompts\[0\] must be"),
    # ---- probes -----------------------------------------------------------------------------
    ("rec-probes-int", _rec(probes=5), r"probes must be a list of probes"),
    ("rec-probes-single", _rec(probes=npb.TopK(H)), r"got one TopK. Wrap it"),
    ("stream-probes-int", lambda c: npb.stream(c["m"], P, 5), r"probes must be a list"),
    ("stream-probes-str", lambda c: npb.stream(c["m"], P, "abc"), r"probes must be a list"),
    ("stream-probes-none", lambda c: npb.stream(c["m"], P, [None]), r"probes\[0\] must follow"),
    ("stream-probes-empty", lambda c: npb.stream(c["m"], P, []), r"probes=...\) is empty"),
    ("stream-progress", lambda c: npb.stream(c["m"], P, [npb.TopK(H)], progress=2),
     r"progress must be True or False"),
    ("probe-hooks-int", lambda c: npb.stream(c["m"], P, [_StrHooksProbe()]),
     r"_StrHooksProbe.hooks must be a hook name"),
    ("probe-unknown-hook", lambda c: npb.stream(c["m"], P, [npb.TopK("blocks.9.nope")]),
     r"TopK.hooks: unknown hook 'blocks.9.nope'"),
    ("topk-k-bool", lambda c: npb.TopK(H, k=True), r"TopK\(k=...\) must be a positive int"),
    ("topk-k-float", lambda c: npb.TopK(H, k=1.5), r"TopK\(k=...\) must be a positive int"),
    ("topk-idx-int", lambda c: npb.TopK(H, indices=3), r"TopK\(indices=...\) must be a list"),
    ("topk-idx-float", lambda c: npb.TopK(H, indices=[1.5]), r"TopK\(indices=...\) must hold"),
    ("topk-idx-empty", lambda c: npb.TopK(H, indices=[]), r"TopK\(indices=...\) is empty"),
    ("topk-idx-dup", lambda c: npb.TopK(H, indices=[1, 1]), r"TopK\(indices=...\) repeats"),
    ("topk-idx-out", lambda c: npb.stream(c["m"], P, [npb.TopK(H, indices=[999])]),
     r"TopK\(indices=...\) has \[999\] out of range.*32 neurons"),
    ("topk-idx-out-record", _rec(probes=[npb.TopK(H, indices=[32])]),
     r"TopK\(indices=...\) has \[32\] out of range"),
    ("topk-df-999", lambda c: c["top"].to_dataframe(999), r"to_dataframe\(unit=...\).*\[-32, 31\]"),
    ("topk-df-float", lambda c: c["top"].to_dataframe(1.5), r"to_dataframe\(unit=...\)"),
    ("topk-df-none", lambda c: c["top"].to_dataframe(None), r"to_dataframe\(unit=...\)"),
    ("topk-df-str", lambda c: c["top"].to_dataframe("a"), r"to_dataframe\(unit=...\)"),
    ("rc-target-int", lambda c: npb.RunningCovariance(5), r"probe target must be a hook name"),
    # ---- Recording.select / select_units / select_time -------------------------------------
    ("sel-layer-99", lambda c: c["rec"].select(layer=99), r"select\(layer=99\).*\[99\].*\[0, 1\]"),
    ("sel-layer-neg", lambda c: c["rec"].select(layer=-5), r"select\(layer=...\) must be an int"),
    ("sel-layer-float", lambda c: c["rec"].select(layer=1.5), r"select\(layer=...\) must be"),
    ("sel-layer-str", lambda c: c["rec"].select(layer="1"), r"select\(layer=...\) must be"),
    ("sel-layer-empty", lambda c: c["rec"].select(layer=[]), r"select\(layer=\[\]\)"),
    ("sel-hook-int", lambda c: c["rec"].select(hook=5), r"select\(hook=...\) must be"),
    ("sel-hook-layer-disjoint", lambda c: c["rec"].select(hook="blocks.0.*", layer=1),
     r"matches no unit: the hook\(s\) and layer\(s\) do not overlap"),
    ("units-out", lambda c: c["rec"].select_units([999]), r"select_units.*out of range \[0, 64\)"),
    ("units-neg", lambda c: c["rec"].select_units([-1]), r"select_units.*out of range"),
    ("units-float", lambda c: c["rec"].select_units([1.5]), r"select_units.*integer columns"),
    ("units-empty", lambda c: c["rec"].select_units([]), r"select_units.*is empty"),
    ("units-dup", lambda c: c["rec"].select_units([1, 1]), r"select_units.*repeats"),
    ("units-int", lambda c: c["rec"].select_units(3), r"select_units.*must be a list"),
    ("units-str", lambda c: c["rec"].select_units("ab"), r"select_units.*must be a list"),
    ("units-none", lambda c: c["rec"].select_units(None), r"select_units.*must be a list"),
    ("units-mask-short", lambda c: c["rec"].select_units([True, False]),
     r"select_units.*boolean mask must have one entry per column \(64\)"),
    ("units-mask-none", lambda c: c["rec"].select_units(np.zeros(64, bool)),
     r"select_units.*selects no column"),
    ("time-out", lambda c: c["rec"].select_time([99]), r"select_time.*out of range \[0, 5\)"),
    ("time-float", lambda c: c["rec"].select_time([1.5]), r"select_time.*integer rows"),
    ("time-empty", lambda c: c["rec"].select_time([]), r"select_time.*is empty"),
    ("time-dup", lambda c: c["rec"].select_time([0, 0]), r"select_time.*repeats rows"),
    ("time-int", lambda c: c["rec"].select_time(2), r"select_time.*must be a list"),
    ("time-none", lambda c: c["rec"].select_time(None), r"select_time.*must be a list"),
    ("time-mask-short", lambda c: c["rec"].select_time([True, False]),
     r"select_time.*boolean mask must have one entry per row \(5\); got shape \(2,\)"),
    ("time-mask-long", lambda c: c["rec"].select_time(torch.ones(9, dtype=torch.bool)),
     r"select_time.*boolean mask"),
    ("time-np-out", lambda c: c["rec"].select_time(np.array([7])), r"select_time.*\[7\]"),
    ("time-slice-empty", lambda c: c["rec"].select_time(slice(10, 20)), r"selects no row of 5"),
    ("units-np-dup", lambda c: c["rec"].select_units(np.array([1, 1])), r"repeats columns \[1\]"),
    ("units-np-2d", lambda c: c["rec"].select_units(np.zeros((2, 2), int)), r"must be 1-D"),
    ("units-tensor-float", lambda c: c["rec"].select_units(torch.tensor([1.0])),
     r"select_units.*dtype float32"),
    ("column_block-float", lambda c: c["rec"].column_block(0.5, 2), r"column_block\(start=..."),
    # ---- Recording constructor -------------------------------------------------------------
    ("Rec-pi-float", _mk_rec(prompt_index=torch.tensor([0.0, 0.0, 1.0])),
     r"Recording.prompt_index must hold integers.*float32"),
    ("Rec-pos-float", _mk_rec(position=torch.tensor([0.0, 1.0, 0.0])),
     r"Recording.position must hold integers"),
    ("Rec-tok-float", _mk_rec(token_ids=torch.zeros(3)), r"Recording.token_ids must hold int"),
    ("Rec-pi-list", _mk_rec(prompt_index=[0, 0, 1]), r"Recording.prompt_index must be a Long"),
    ("Rec-pi-neg", _mk_rec(prompt_index=torch.tensor([0, -1, 1])), r"prompt_index has negative"),
    ("Rec-pi-beyond", _mk_rec(n_prompts=1), r"prompt_index has 1, but n_prompts is 1"),
    ("Rec-acts-list", _mk_rec(acts=[[0.0, 0.0]] * 3), r"Recording.acts must be a torch.Tensor"),
    ("Rec-acts-int", _mk_rec(acts=torch.zeros(3, 2, dtype=torch.long)),
     r"Recording.acts must be floating point"),
    ("Rec-units-list", _mk_rec(units=[("h", 0), ("h", 1)]), r"Recording.units must be a UnitIn"),
    ("Rec-n_prompts-float", _mk_rec(n_prompts=2.5), r"Recording.n_prompts must be an integer"),
    ("Rec-labels-str", _mk_rec(prompt_labels="ab"), r"Recording.prompt_labels must be a list"),
    ("Rec-tokens-str", _mk_rec(tokens="abc"), r"Recording.tokens must be a list"),
    ("concat-int", lambda c: npb.Recording.concat(5), r"concat takes a list of recordings"),
    ("concat-entry", lambda c: npb.Recording.concat([c["rec"], 5]), r"entry 1 is a int"),
    # ---- persistence --------------------------------------------------------------------------
    ("save-dir", lambda c: c["rec"].save(Path(__file__).parent), r"is a directory"),
    ("save-uncreatable", lambda c: c["rec"].save("/proc/npb-no/x.pt"),
     r"its folder cannot be created"),
    ("save-int", lambda c: c["rec"].save(5), r"Recording.save\(path=...\) must be a path"),
    ("save-none", lambda c: c["rec"].save(None), r"Recording.save\(path=...\) must be a path"),
    ("load-int", lambda c: npb.Recording.load(5), r"Recording.load\(path=...\) must be a path"),
    # ---- UnitIndex, Directions ----------------------------------------------------------------
    ("ui-width-neg", lambda c: npb.UnitIndex.from_hooks({"h": -1}), r"the width of 'h'"),
    ("ui-width-float", lambda c: npb.UnitIndex.from_hooks({"h": 2.5}), r"the width of 'h'"),
    ("ui-widths-list", lambda c: npb.UnitIndex.from_hooks(["h"]), r"must be a dict"),
    ("ui-subset-out", lambda c: c["rec"].units.subset([99]), r"subset.*out of range"),
    ("ui-subset-float", lambda c: c["rec"].units.subset([0.5]), r"subset.*integer columns"),
    ("ui-from-units-dup", lambda c: npb.UnitIndex.from_units([("h", 1), ("h", 1)]),
     r"unit \('h', 1\) appears twice"),
    ("ui-from-units-neg", lambda c: npb.UnitIndex.from_units([("h", -1)]), r"negative index"),
    ("ui-from-units-str", lambda c: npb.UnitIndex.from_units("h"), r"must be a list of"),
    ("ui-getitem-str", lambda c: c["rec"].units["a"], r"UnitIndex\[...\] takes a column"),
    ("dirs-hook-int", lambda c: npb.Directions(5, torch.zeros(1, 3)), r"Directions\(hook=...\)"),
    ("dirs-name-int", lambda c: npb.Directions(H, torch.ones(1, 3), name=5),
     r"Directions\(name=...\)"),
    ("dirs-bool", lambda c: npb.Directions(H, torch.ones(1, 3, dtype=torch.bool)),
     r"must hold real numbers"),
    ("dirs-subset-out", lambda c: npb.Directions(H, torch.ones(2, 32)).subset([9]),
     r"Directions.subset.*out of range \[0, 2\)"),
    ("dirs-subset-float", lambda c: npb.Directions(H, torch.ones(2, 32)).subset([0.5]),
     r"Directions.subset.*integer directions"),
    # ---- record_generation ------------------------------------------------------------------
    ("gen-temp-neg", lambda c: npb.record_generation(c["m"], [[1, 2]], 2, H, do_sample=True,
                                                     temperature=-1), r"temperature must be"),
    ("gen-temp-nan", lambda c: npb.record_generation(c["m"], [[1, 2]], 2, H, do_sample=True,
                                                     temperature=float("nan")), r"temperature"),
    ("gen-hooks-int", lambda c: npb.record_generation(c["m"], [[1, 2]], 2, 5), r"hooks must be"),
    ("gen-dtype-int", lambda c: npb.record_generation(c["m"], [[1, 2]], 2, H, dtype=torch.int32),
     r"dtype=torch.int32 is not a floating dtype"),
    ("gen-labels-str", lambda c: npb.record_generation(c["m"], [[1, 2]], 2, H, labels="a"),
     r"labels must be a list"),
    ("gen-seed-float", lambda c: npb.record_generation(c["m"], [[1, 2]], 2, H, seed=1.5),
     r"seed must be an integer"),
    ("gen-stop-str", lambda c: npb.record_generation(c["m"], [[1, 2]], 2, H, stop_at_eos="no"),
     r"stop_at_eos must be True or False"),
    # ---- shards -------------------------------------------------------------------------------
    ("shards-n-float", lambda c: npb.shards(c["m"], P, 1.5), r"n must be an int >= 1"),
    ("shards-positions", lambda c: npb.shards(c["m"], P, 2, positions=lambda i, n: [1, 0]),
     r"increasing order"),
    ("shard-neg", lambda c: npb.Shard(-1), r"Shard\(first_prompt=...\)"),
    ("union_seen-int", lambda c: npb.union_seen(5, ()), r"union_seen\(a=...\) must be"),
    ("batchmeta-float", lambda c: npb.BatchMeta(torch.zeros(2), torch.arange(2), torch.arange(2)),
     r"BatchMeta.prompt_index must be a 1-D integer tensor"),
    ("batchmeta-lengths", lambda c: npb.BatchMeta(torch.arange(3), torch.arange(2),
                                                  torch.arange(2)), r"has 3 rows but time_index"),
    ("batchmeta-list", lambda c: npb.BatchMeta([0], [0], [0]), r"BatchMeta.time_index must be"),
    ("note_batch-int", lambda c: npb.note_batch((), 5), r"note_batch\(meta=...\) must be"),
    ("topk-update-missing", lambda c: npb.TopK(H).update({"x": torch.zeros(2, 3)},
                                                          npb.BatchMeta(*(torch.arange(2),) * 3)),
     r"TopK.update\(acts=...\) needs a dict with the key 'blocks.0.mlp.hook_post'"),
    ("rc-update-1d", lambda c: npb.RunningCovariance(H).update(
        {H: torch.zeros(3)}, npb.BatchMeta(*(torch.arange(3),) * 3)), r"must be a \[n, d\]"),
    ("topk-merge-indices", lambda c: npb.TopK(H, k=2, indices=[1]).merge(
        npb.TopK(H, k=2, indices=[2])), r"same units: indices=\[1\] vs indices=\[2\]"),
    ("hooks-callable-raises", lambda c: npb.record(c["m"], P, lambda n: 1 / 0),
     r"hooks: the callable .* raised ZeroDivisionError"),
    ("lm-cfg-device", _lm(device="gpu"), r"device='gpu' is not a device name"),
    # ---- plain HookedRootModule inputs --------------------------------------------------------
    ("mlp-wrong-width", lambda c: npb.record(ReLUMLP([4, 8, 3]), torch.zeros(5, 3), H),
     r"prompts: an input of shape \(3,\) could not be run through this ReLUMLP"),
    ("mlp-ragged", lambda c: npb.record(ReLUMLP([4, 8, 3]), [torch.zeros(4), torch.zeros(3)], H),
     r"prompts\[1\] has shape \(3,\)"),
    ("mlp-strings", lambda c: npb.record(ReLUMLP([4, 8, 3]), ["a", "b"], H),
     r"prompts\[0\] must be a numeric input tensor"),
    # ---- engine -------------------------------------------------------------------------------
    ("run_hooks-batch-0", lambda c: run_hooks(ReLUMLP([4, 8, 3]), torch.zeros(5, 4),
                                              ["blocks.0.mlp.hook_post"], batch_size=0),
     r"run_hooks\(batch_size=...\)"),
    ("run_hooks-inputs-list", lambda c: run_hooks(ReLUMLP([4, 8, 3]), [[0.0] * 4],
                                                  ["blocks.0.mlp.hook_post"]),
     r"run_hooks\(inputs=...\) must be a tensor"),
    ("hooked-str", lambda c: hooked(c["m"], "blocks.0.hook_out").__enter__(),
     r"hooked\(fwd_hooks=...\) must be a list of \(hook name, fn"),
    ("hooked-no-fn", lambda c: hooked(c["m"], [("blocks.0.hook_out", 5)]).__enter__(),
     r"hooked\(fwd_hooks=...\)"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_with_a_named_argument(ctx, call, match):
    with pytest.raises(NeuroprobeError, match=match):
        call(ctx)


def test_sweep_size():
    """The note of issue 16 quotes this count; keep it in step with CASES."""
    assert len(CASES) == len({c[0] for c in CASES}) >= 180


# ---- degenerate science: NaN/inf activations warn once per call, naming the hook ----------
@pytest.fixture(scope="module")
def nan_model():
    m = npb.load_model(dict(CFG))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("layers.0.") and ".mlp." in name:  # block 0's MLP weights
                p.fill_(float("nan"))
    return m


def _nonfinite_warnings(w):
    return [x for x in w if issubclass(x.category, NeuroprobeWarning) and "NaN or inf" in
            str(x.message)]


def test_nan_activations_warn_once_per_record_naming_the_hook(nan_model):
    hooks = ["blocks.0.mlp.hook_post", "blocks.1.hook_resid_post", "blocks.0.hook_resid_pre"]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rec = npb.record(nan_model, P * 4, hooks, batch_size=2)
    got = _nonfinite_warnings(w)
    assert len(got) == 1  # once per call, not once per batch
    msg = str(got[0].message)
    assert "blocks.1.hook_resid_post" in msg and "record" in msg
    assert "hook_resid_pre" not in msg  # the embeddings are finite
    assert rec.acts[:, rec.units.select(hook="blocks.1.hook_resid_post")].isnan().any()


def test_nan_activations_warn_in_stream_and_topk_ranks_nan_last(nan_model):
    with pytest.warns(NeuroprobeWarning, match=r"stream: hook\(s\) 'blocks.1.hook_resid_post'"):
        npb.stream(nan_model, P, [npb.TopK("blocks.1.hook_resid_post", k=2)])
    top = npb.TopK("h", k=2)
    x = torch.tensor([[float("nan"), 1.0], [3.0, float("nan")], [2.0, 5.0]])
    top.update({"h": x}, npb.BatchMeta(*(torch.arange(3),) * 3))
    assert top.values.T.tolist() == [[3.0, 2.0], [5.0, 1.0]]
    assert top.time_index.T.tolist() == [[1, 2], [2, 0]]


def test_nonfinite_flag_is_one_reduction_per_batch():
    from neuroprobe.core.capture import _note_finite

    flags: dict = {}
    _note_finite(flags, "a", torch.ones(3, 2))
    _note_finite(flags, "b", torch.tensor([[1.0, float("inf")], [float("-inf"), 0.0]]))
    _note_finite(flags, "c", torch.full((2, 2), 6e4, dtype=torch.float16))  # sum > fp16 max
    _note_finite(flags, "a", torch.tensor([[float("nan"), 0.0]]))
    _note_finite(flags, "c", torch.ones(1, 2, dtype=torch.float16))
    assert {k: bool(v) for k, v in flags.items()} == {"a": False, "b": False, "c": True}


def test_finite_model_does_not_warn(ctx):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeuroprobeWarning)
        npb.record(ctx["m"], P, H)


# ---- results that used to be silently wrong --------------------------------------------------
def test_positions_keep_order_of_a_valid_callable_on_dense_batches(ctx):
    """Equal-length prompts with every position kept take the no-copy path; a valid
    (sorted) callable gives exactly the rows of the full recording."""
    prompts = [[1, 2, 3], [4, 5, 6]]
    full = npb.record(ctx["m"], prompts, H)
    sub = npb.record(ctx["m"], prompts, H, positions=lambda i, n: [0, 2])
    assert sub.position.tolist() == [0, 2, 0, 2]
    assert torch.equal(sub.acts, full.acts[[0, 2, 3, 5]])


def test_a_prompt_with_no_selected_token_is_skipped_not_a_reshape_error(ctx):
    """A batch whose prompts contribute no row (4-D hooks such as attn.hook_z included)."""
    prompts = [[1, 2, 3], [4], [5, 6, 7]]
    rec = npb.record(ctx["m"], prompts, ["blocks.0.attn.hook_z", H], batch_size=1,
                     positions=slice(2, None))
    assert rec.prompt_index.tolist() == [0, 2] and rec.position.tolist() == [2, 2]
    (top,) = npb.stream(ctx["m"], prompts, [npb.TopK(H, k=1)], batch_size=1,
                        positions=slice(2, None))
    assert set(top.prompt_index.flatten().tolist()) <= {0, 2}


def test_select_time_mask_of_right_length_and_slices(ctx):
    rec = ctx["rec"]
    mask = torch.tensor([True, False, True, False, True])
    assert rec.select_time(mask).position.tolist() == rec.position[mask].tolist()
    assert rec.select_time(slice(1, 3)).n_time == 2
    assert rec.select_time(np.array([4, 0])).prompt_index.tolist() == [1, 0]


def test_select_layer_and_units_valid_forms(ctx):
    rec = ctx["rec"]
    assert rec.select(layer=1).n_units == 32
    assert rec.select(layer=np.int64(0)).n_units == 32
    assert rec.select(layer=range(2)).n_units == 64
    assert rec.select_units(torch.tensor([3, 1])).units[0] == ("blocks.0.mlp.hook_post", 3)
    assert rec.select_units(np.arange(64) < 2).n_units == 2


def test_valid_inputs_keep_working(ctx, tmp_path):
    m = ctx["m"]
    rec = npb.record(m, [torch.tensor([1, 2, 3]), np.array([4, 5])], (H, np.array([3, 1])),
                     positions=lambda i, n: range(n), dtype="float64", labels=("a", "b"))
    assert rec.acts.dtype == torch.float64 and rec.units[0] == (H, 3)
    assert npb.record(m, P, (H, np.int64(2))).units[0] == (H, 2)
    out = rec.save(tmp_path / "new" / "rec.pt")
    assert npb.Recording.load(out).n_time == rec.n_time
    with pytest.warns(UserWarning, match="memmap"):
        rec2 = npb.record(m, P, H, memory_budget=0, storage_dir=tmp_path / "mm")
    assert os.path.dirname(rec2.storage) == str(tmp_path / "mm")
    top = npb.stream(m, P, [npb.TopK(H, k=2, indices=np.array([0, 5]))])[0]
    assert top.values.shape == (2, 2) and top.to_dataframe(np.int64(1)).shape == (2, 6)
    assert npb.load_model(dict(CFG, act_fn="gelu", normalization_type=None)).cfg.act_fn == "gelu"
    assert npb.load_model(dict(CFG, normalization_type="rms")).cfg.normalization_type == "rms"
    assert check_float_dtype("bfloat16") is torch.bfloat16


def test_disjoint_subsets_and_directions_of_one_hook_record_together(ctx):
    d = npb.Directions(H, torch.eye(2, 32), name="axes")
    rec = npb.record(ctx["m"], P, [(H, [1, 2]), (H, [5]), d])
    assert rec.n_units == 5 and rec.units[4] == (H + "@axes", 1)


def test_numpy_scalars_are_accepted_by_record_generation(ctx):
    rec = npb.record_generation(ctx["m"], [[1, 2]], np.int64(2), H, do_sample=np.bool_(True),
                                temperature=np.float64(0.7), top_k=np.int64(5), seed=np.int64(3))
    assert rec.n_time == 2


def test_load_model_never_mutates_the_config():
    cfg = dict(CFG, act_fun="gelu")
    before = dict(cfg)
    with pytest.raises(NeuroprobeError):
        npb.load_model(cfg)
    assert cfg == before
