"""The one forward engine: padding and masks, stop-at-layer, early exit, hook removal, hook
resolution, device and dtype, and the shape annotations of its public functions."""

import pytest
import torch
from beartype import beartype
from jaxtyping import jaxtyped
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.core import capture, engine
from neuroprobe.core.engine import (
    forward,
    frozen_copy,
    hook_shapes,
    hook_widths,
    hooked,
    match_hook_names,
    model_device,
    model_dtype,
    pad_left,
    pad_token_id,
    resolve_hooks,
    run_hooks,
    stop_layer,
)

SEQS = [[5, 17, 3, 9], [2, 8], [11, 12, 13, 14, 15, 16, 17], [40]]


def _grab(store: dict, name: str):
    def fn(act, hook):
        store[name] = act.detach().clone()

    return fn


def _no_hooks_left(model) -> bool:
    return all(not hp._forward_hooks for hp in model.hook_dict.values())


class _TwoLayer(HookedRootModule):
    """A plain HookedRootModule (no blocks, no tokens): inputs are tensors."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
        self.hook_a, self.hook_b = HookPoint(), HookPoint()
        self.setup()

    def forward(self, x):
        return self.b(torch.relu(self.hook_b(self.hook_a(self.a(x)))))


# ---- padding and masks ------------------------------------------------------------------------
def test_left_padding_with_mask_equals_one_sequence_at_a_time(native_model):
    name = "blocks.1.hook_resid_post"
    ids, mask = pad_left([torch.tensor(s) for s in SEQS], pad_id=0)
    assert mask.sum(1).tolist() == [len(s) for s in SEQS]  # from the counts
    assert ids[1, -2:].tolist() == [2, 8] and mask[1].tolist() == [0] * 5 + [1, 1]
    got: dict = {}
    with hooked(native_model, [(name, _grab(got, name))]) as fwd:
        logits = fwd.run(ids, attention_mask=mask)
    batched = got[name]
    S = ids.shape[1]
    for i, s in enumerate(SEQS):
        one: dict = {}
        with hooked(native_model, [(name, _grab(one, name))]) as fwd:
            logits_one = fwd.run(torch.tensor([s]))
        torch.testing.assert_close(batched[i, S - len(s):], one[name][0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits[i, S - len(s):], logits_one[0], rtol=1e-4, atol=1e-4)


def test_mask_is_built_from_counts_not_pad_ids():
    # the pad id equals a real token (SmolLM2: pad = eos = 2): the mask must still be right
    ids, mask = pad_left([torch.tensor([2, 2, 7]), torch.tensor([2])], pad_id=2)
    assert ids.tolist() == [[2, 2, 7], [2, 2, 2]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_pad_token_id_is_zero_without_a_tokenizer(native_model):
    assert pad_token_id(native_model) == 0


@pytest.mark.smollm2
def test_pad_token_id_from_the_tokenizer(smollm2):
    assert pad_token_id(smollm2) == smollm2.tokenizer.pad_token_id == 2


# ---- stop at layer, early exit ----------------------------------------------------------------
def test_stop_at_layer_chosen_automatically(native_model):
    assert stop_layer(native_model, resolve_hooks(native_model, "blocks.0.mlp.hook_post")) == 1
    assert stop_layer(native_model, resolve_hooks(native_model, "blocks.1.hook_resid_post")) \
        is None
    assert stop_layer(native_model, resolve_hooks(native_model, "ln_final.hook_out")) is None


def test_stop_layer_embeddings_names_and_plain_modules(native_model):
    assert stop_layer(native_model, ["hook_embed", "hook_pos_embed"]) == 0
    assert stop_layer(native_model, ["hook_embed", "blocks.0.hook_out"]) == 1
    assert stop_layer(native_model, ["blocks.0.hook_out", "unembed.hook_out"]) is None
    assert stop_layer(_TwoLayer(), ["hook_a"]) is None


@pytest.mark.parametrize("hook", ["hook_embed", "blocks.0.mlp.hook_post",
                                  "blocks.0.hook_resid_post"])
def test_stopped_and_early_exit_passes_see_what_a_whole_pass_sees(native_model, hook):
    x = torch.tensor([SEQS[0]])
    full: dict = {}
    with hooked(native_model, [(hook, _grab(full, hook))]) as fwd:
        fwd.run(x)
    for stop in (stop_layer(native_model, [hook]), None):
        part: dict = {}
        with hooked(native_model, [(hook, _grab(part, hook))]) as fwd:
            fwd.run_until_fired(x, stop_at_layer=stop)
        torch.testing.assert_close(part[hook], full[hook], rtol=0, atol=0)


def test_run_until_fired_skips_the_rest_of_the_pass(native_model):
    calls = {"unembed": 0}

    def count(act, hook):
        calls["unembed"] += 1

    x = torch.tensor([SEQS[2]])
    with hooked(native_model, [("unembed.hook_in", count)]):  # an outer observer
        with hooked(native_model, [("blocks.0.hook_out", lambda a, h: None)]) as fwd:
            assert fwd.run_until_fired(x) is None
            assert calls["unembed"] == 0  # stopped once blocks.0 fired
            out = fwd.run(x)
            assert calls["unembed"] == 1 and out.shape == (1, len(SEQS[2]), 100)
            assert fwd.n_forward == 2


def test_hook_shapes_and_widths(native_model):
    one = torch.zeros((1, 1), dtype=torch.long)
    shapes = hook_shapes(native_model, ["blocks.0.mlp.hook_post", "blocks.0.attn.hook_z"], one)
    assert shapes == {"blocks.0.mlp.hook_post": (1, 1, 64), "blocks.0.attn.hook_z": (1, 1, 4, 8)}
    reqs, widths = hook_widths(native_model, resolve_hooks(native_model, "blocks.0.attn.*"),
                               torch.tensor([3, 4]))
    assert all(widths[r.canonical] > 0 for r in reqs)
    assert widths[resolve_hooks(native_model, "blocks.0.attn.hook_z")[0].canonical] == 32
    with pytest.raises(NeuroprobeError, match="not \\[batch, pos, ...\\]"):
        hook_widths(native_model, resolve_hooks(native_model, "blocks.0.attn.hook_pattern"),
                    torch.tensor([3, 4]))


# ---- hooks are removed ------------------------------------------------------------------------
def test_hooks_removed_after_an_exception_in_a_hook(native_model):
    x = torch.tensor([SEQS[0]])
    before = forward(native_model, x)

    def boom(act, hook):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        with hooked(native_model, [("blocks.0.hook_out", boom),
                                   ("blocks.1.mlp.hook_post", lambda a, h: a * 0)]) as fwd:
            fwd.run(x)
    assert _no_hooks_left(native_model)
    torch.testing.assert_close(forward(native_model, x), before, rtol=0, atol=0)


def test_hooks_removed_after_an_exception_in_the_block(native_model):
    x = torch.tensor([SEQS[0]])
    before = forward(native_model, x)
    with pytest.raises(KeyError):
        with hooked(native_model, [("blocks.0.hook_out", lambda a, h: a * 0)]) as fwd:
            fwd.run_until_fired(x)
            assert not torch.is_grad_enabled()
            raise KeyError("caller failed")
    assert _no_hooks_left(native_model) and torch.is_grad_enabled()
    torch.testing.assert_close(forward(native_model, x), before, rtol=0, atol=0)


def test_hooks_removed_when_record_fails_inside_a_probe(native_model):
    class Bad:
        hooks = ("blocks.0.hook_resid_post",)

        def update(self, acts, meta):
            raise ValueError("probe failed")

    with pytest.raises(ValueError, match="probe failed"):
        npb.stream(native_model, SEQS, [Bad()])
    assert _no_hooks_left(native_model)


def test_a_replacing_hook_changes_the_output_only_inside_the_block(native_model):
    x = torch.tensor([SEQS[1]])
    before = forward(native_model, x)
    with hooked(native_model, [("blocks.1.mlp.hook_post", lambda a, h: a * 0)]) as fwd:
        ablated = fwd.run(x)
    assert not torch.allclose(ablated, before)
    torch.testing.assert_close(forward(native_model, x), before, rtol=0, atol=0)


# ---- hook names -------------------------------------------------------------------------------
def test_glob_resolution_in_model_order_without_alias_duplicates(native_model):
    reqs = resolve_hooks(native_model, ["blocks.*.hook_resid_post", "blocks.0.hook_out"])
    assert [r.name for r in reqs] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert all(r.optional for r in reqs)
    assert [r.name for r in resolve_hooks(native_model, lambda n: n.endswith("mlp.hook_post"))] \
        == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    with pytest.raises(NeuroprobeError, match="pattern 'blocks.\\*.hook_nope' matches no hook"):
        resolve_hooks(native_model, "blocks.*.hook_nope")


def test_hooked_takes_exact_names_only(native_model):
    with pytest.raises(NeuroprobeError, match="hooked\\(\\) takes exact hook names"):
        with hooked(native_model, [(lambda n: True, lambda a, h: None)]):
            pass
    assert _no_hooks_left(native_model)


def test_match_hook_names_pattern_by_pattern():
    names = ["blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post", "blocks.1.mlp.hook_pre"]
    assert match_hook_names(names, "blocks.*.mlp.hook_pre") == [names[0], names[2]]
    assert match_hook_names(names, ["blocks.1.*", "blocks.*.hook_pre", names[1]]) \
        == [names[2], names[0], names[1]]
    with pytest.raises(NeuroprobeError, match="hooks: pattern 'blocks.2.\\*' matches no hook"):
        match_hook_names(names, ["blocks.0.*", "blocks.2.*"])


# ---- device and dtype -------------------------------------------------------------------------
def test_device_and_dtype_lookup():
    m = _TwoLayer()
    assert model_device(m) == torch.device("cpu") and model_dtype(m) == torch.float32
    assert model_dtype(m.double()) == torch.float64
    empty = torch.nn.Module()
    assert model_device(empty) == torch.device("cpu") and model_dtype(empty) == torch.float32
    # the first *floating* parameter decides, not an integer buffer-like parameter
    mixed = torch.nn.Module()
    mixed.i = torch.nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)
    mixed.w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    assert model_dtype(mixed) == torch.float64


def test_frozen_copy_leaves_the_model_alone():
    m = _TwoLayer()
    c = frozen_copy(m, torch.float64)
    assert model_dtype(c) == torch.float64 and model_dtype(m) == torch.float32
    assert not any(p.requires_grad for p in c.parameters())
    assert all(p.requires_grad for p in m.parameters())


def test_run_hooks_casts_floating_inputs_and_batches():
    m = _TwoLayer().double()
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))  # float32 inputs
    out = run_hooks(m, x, ["hook_a", "hook_b"], batch_size=3)
    with torch.no_grad():
        ref = m.a(x.double())
    assert out["hook_a"].dtype == torch.float32 and out["hook_a"].shape == (7, 4)
    torch.testing.assert_close(out["hook_a"], ref.float())
    assert _no_hooks_left(m)


def test_forward_moves_inputs_to_the_model_device(native_model):
    out = forward(native_model, torch.tensor([SEQS[0]]))
    assert out.device == model_device(native_model)
    assert not out.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_record_on_gpu_equals_cpu():
    cfg = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=100, n_ctx=64,
               act_fn="relu", normalization_type="LN", seed=0)
    cpu = npb.load_model(dict(cfg))
    gpu = npb.load_model(dict(cfg), device="cuda")
    assert model_device(gpu).type == "cuda"
    hooks = ["blocks.*.hook_resid_post", "blocks.*.mlp.hook_post"]
    a = npb.record(cpu, SEQS, hooks=hooks, batch_size=3)
    b = npb.record(gpu, SEQS, hooks=hooks, batch_size=3)
    assert b.acts.device.type == "cpu"
    torch.testing.assert_close(a.acts, b.acts, rtol=1e-3, atol=1e-3)


# ---- shapes in the annotations, checked at run time -------------------------------------------
def _checked(fn):
    return jaxtyped(typechecker=beartype)(fn)


def test_engine_annotations_hold_at_run_time(native_model):
    ids, mask = _checked(engine.pad_left)([torch.tensor(s) for s in SEQS], 0)
    assert ids.shape == mask.shape == (4, 7)
    with pytest.raises(Exception, match="pad_left|tokens|Type"):
        _checked(engine.pad_left)([torch.zeros(2, 2, dtype=torch.long)], 0)
    out = _checked(engine.forward)(native_model, ids, attention_mask=mask)
    assert out.shape == (4, 7, 100)
    shapes = _checked(engine.hook_shapes)(native_model, ["blocks.0.hook_out"],
                                          torch.zeros((1, 1), dtype=torch.long))
    assert shapes["blocks.0.hook_out"] == (1, 1, 32)


def test_capture_annotations_hold_at_run_time(native_model):
    toks = _checked(capture.tokenize_prompts)(native_model, SEQS)
    assert [t.numel() for t in toks] == [len(s) for s in SEQS]
    rec = _checked(capture.record)(native_model, SEQS, hooks="blocks.0.hook_resid_post")
    assert rec.acts.shape == (sum(map(len, SEQS)), 32)
    rec2 = _checked(capture.record)(native_model, torch.tensor([[1, 2, 3], [4, 5, 6]]),
                                    hooks="blocks.0.hook_resid_post")
    assert rec2.acts.shape == (6, 32)
