"""record / stream / record_generation: equivalences, metadata, round trips, bad input."""

import numpy as np
import pytest
import torch
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

import neuroprobe as npb
from neuroprobe import Directions, NeuroprobeError
from neuroprobe.core.hooks import resolve_hooks

PROMPTS = [[5, 17, 3, 9], [2, 8], [11, 12, 13, 14, 15, 16, 17], [40]]
HOOKS = ["blocks.*.hook_resid_post", "blocks.*.mlp.hook_post"]


def test_batched_equals_one_at_a_time_native(native_model):
    rec = npb.record(native_model, PROMPTS, hooks=HOOKS, batch_size=3)
    one = torch.cat([npb.record(native_model, [p], hooks=HOOKS).acts for p in PROMPTS])
    torch.testing.assert_close(rec.acts, one, rtol=1e-4, atol=1e-4)
    assert rec.acts.shape == (sum(map(len, PROMPTS)), 2 * 32 + 2 * 64)
    assert rec.prompt_index.tolist() == [0] * 4 + [1] * 2 + [2] * 7 + [3]
    assert rec.position.tolist()[:6] == [0, 1, 2, 3, 0, 1]
    assert rec.token_ids.tolist() == sum(PROMPTS, [])


def test_recording_matches_run_with_cache(native_model):
    rec = npb.record(native_model, [PROMPTS[2]], hooks="blocks.1.mlp.hook_post")
    _, cache = native_model.run_with_cache(torch.tensor([PROMPTS[2]]),
                                           names_filter=["blocks.1.mlp.hook_post"])
    torch.testing.assert_close(rec.acts, cache["blocks.1.mlp.hook_post"][0], rtol=0, atol=1e-6)


def test_alias_and_canonical_never_duplicate(native_model):
    reqs = resolve_hooks(native_model, ["blocks.0.hook_out", "blocks.0.hook_resid_post"])
    assert len(reqs) == 1
    rec = npb.record(native_model, PROMPTS[:1], hooks=["blocks.0.*"])
    hooks = rec.units.hooks
    assert len(hooks) == len(set(hooks))
    assert "blocks.0.hook_resid_post" in hooks and "blocks.0.hook_out" not in hooks
    rec2 = npb.record(native_model, PROMPTS[:1], hooks=lambda n: n.endswith("hook_resid_post"))
    assert rec2.units.hooks == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_positions_labels_and_units(native_model):
    last = npb.record(native_model, PROMPTS, hooks=HOOKS[0], positions="last",
                      labels=["a", "b", "c", "d"])
    full = npb.record(native_model, PROMPTS, hooks=HOOKS[0])
    ends = np.cumsum([len(p) for p in PROMPTS]) - 1
    torch.testing.assert_close(last.acts, full.acts[ends], rtol=1e-4, atol=1e-5)
    assert last.labels.tolist() == ["a", "b", "c", "d"]
    sl = npb.record(native_model, PROMPTS, hooks=HOOKS[0], positions=slice(1, 3))
    assert sl.position.tolist() == [1, 2, 1, 1, 2]
    fn = npb.record(native_model, PROMPTS, hooks=HOOKS[0], positions=lambda i, n: [0])
    assert fn.position.tolist() == [0, 0, 0, 0] and fn.n_prompts == 4
    sub = npb.record(native_model, PROMPTS, hooks=[("blocks.1.mlp.hook_post", [3, 60])])
    all_mlp = npb.record(native_model, PROMPTS, hooks="blocks.1.mlp.hook_post")
    torch.testing.assert_close(sub.acts, all_mlp.acts[:, [3, 60]])
    assert list(sub.units) == [("blocks.1.mlp.hook_post", 3), ("blocks.1.mlp.hook_post", 60)]


def test_direction_units_are_projections(native_model):
    v = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    d = Directions("blocks.1.hook_resid_post", v, name="rand")
    rec = npb.record(native_model, PROMPTS, hooks=[d, "blocks.1.hook_resid_post"])
    assert rec.units[0] == ("blocks.1.hook_resid_post@rand", 0)
    assert rec.units.to_dataframe()["kind"].tolist()[:4] == ["direction"] * 3 + ["neuron"]
    torch.testing.assert_close(rec.acts[:, :3], rec.acts[:, 3:] @ v.T, rtol=1e-4, atol=1e-4)


def test_save_load_roundtrip(native_model, tmp_path):
    rec = npb.record(native_model, PROMPTS, hooks=HOOKS, labels=[0, 1, 0, 1],
                     dtype=torch.float64)
    back = npb.Recording.load(rec.save(tmp_path / "r.pt"))
    assert torch.equal(back.acts, rec.acts) and back.acts.dtype == torch.float64
    assert back.units == rec.units
    for f in ("prompt_index", "position", "token_ids"):
        assert torch.equal(getattr(back, f), getattr(rec, f))
    assert back.prompt_labels == [0, 1, 0, 1] and back.n_prompts == 4
    assert "Recording" in rec._repr_html_() and repr(back) == repr(rec)
    sel = rec.select(layer=1)
    assert set(sel.units.layers.tolist()) == {1} and sel.n_units == 32 + 64
    with pytest.raises(NeuroprobeError, match="no file at"):
        npb.Recording.load(tmp_path / "missing.pt")


def test_memmap_when_over_budget(native_model, tmp_path):
    with pytest.warns(UserWarning, match="disk-backed memmap"):
        rec = npb.record(native_model, PROMPTS, hooks=HOOKS, memory_budget=100,
                         storage_dir=str(tmp_path))
    assert rec.storage is not None and rec.storage.startswith(str(tmp_path))
    ref = npb.record(native_model, PROMPTS, hooks=HOOKS)
    torch.testing.assert_close(rec.acts, ref.acts)


def _greedy_by_hand(model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding with a full forward pass per step: no cache, no batching."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def _check_generation(model, gen, prompts, hooks, n_new):
    """Rows equal ``record`` over prompt + generated tokens (float32 noise relative to each
    hook's scale) and the tokens equal greedy decoding by hand."""
    for i, prompt in enumerate(prompts):
        rows = gen.prompt_index == i
        generated = gen.token_ids[rows].tolist()[1:]
        hand = _greedy_by_hand(model, prompt, n_new)
        assert generated == hand[: n_new - 1]
        seq = prompt + hand[:-1]
        rerun = npb.record(model, [seq], hooks=hooks)
        assert gen.position[rows].tolist() == list(range(len(prompt) - 1, len(seq)))
        got, ref = gen.acts[rows], rerun.acts[gen.position[rows]]
        for hook in gen.units.hooks:
            cols = torch.as_tensor(gen.units.select(hook=hook))
            scale = float(ref[:, cols].abs().max())
            assert float((got[:, cols] - ref[:, cols]).abs().max()) < 1e-5 * scale


def test_record_generation_native_equals_rerun_and_hand_greedy(native_model):
    prompts = [[3, 4, 5], [7, 8], [9]]
    gen = npb.record_generation(native_model, prompts, max_new_tokens=5, hooks=HOOKS,
                                batch_size=2)
    assert gen.acts.shape[0] == 15 and gen.source.endswith("generated tokens")
    _check_generation(native_model, gen, prompts, HOOKS, 5)


def test_record_generation_defaults_work_without_a_tokenizer(native_model):
    gen = npb.record_generation(native_model, [[1, 2, 3]], max_new_tokens=3)
    assert gen.acts.shape[0] == 3 and gen.position.tolist() == [2, 3, 4]
    with pytest.raises(NeuroprobeError, match="stop_at_eos=True, but this model has no"):
        npb.record_generation(native_model, [[1, 2, 3]], max_new_tokens=3, stop_at_eos=True)


@pytest.mark.parametrize("kw, match", [
    (dict(do_sample=True, top_k=0), r"top_k must be None .* or an int >= 1; got 0"),
    (dict(do_sample=True, top_k=1000), r"top_k=1000 is larger than the vocabulary \(100"),
    (dict(do_sample=True, temperature=-1.0), r"temperature must be a finite number > 0; got -1"),
    (dict(temperature=0), r"temperature must be .* got 0"),
    (dict(do_sample="yes"), r"do_sample must be True or False"),
    (dict(max_new_tokens=0), r"max_new_tokens"),
    (dict(seed=1.5), r"seed must be an int"),
])
def test_record_generation_bad_arguments(native_model, kw, match):
    kw = {"max_new_tokens": 3, **kw}
    with pytest.raises(NeuroprobeError, match=match):
        npb.record_generation(native_model, [[1, 2, 3]], **kw)


def test_record_generation_sampling_is_seeded_per_prompt(native_model):
    prompts = [[3, 4], [5, 6, 7], [8]]
    kw = dict(max_new_tokens=6, hooks=HOOKS[0], do_sample=True, seed=3, top_k=20,
              temperature=1.5)
    a = npb.record_generation(native_model, prompts, batch_size=3, **kw)
    b = npb.record_generation(native_model, prompts, batch_size=3, **kw)
    assert torch.equal(a.token_ids, b.token_ids) and torch.equal(a.acts, b.acts)
    # prompt i draws from its own generator: the batch it shares does not matter
    alone = npb.record_generation(native_model, prompts[1:2], **{**kw, "seed": 4})
    assert alone.token_ids.tolist() == a.token_ids[a.prompt_index == 1].tolist()
    other = npb.record_generation(native_model, prompts, batch_size=3, **{**kw, "seed": 9})
    assert not torch.equal(other.token_ids, a.token_ids)


def test_broken_kv_cache_is_detected_and_bypassed(native_model, monkeypatch):
    """A cache that silently drops the context (what transformers 5.24 did to the bridge)
    must be caught by the per-model check: tokens and rows stay exact."""
    from neuroprobe.core import generation as _generate

    class DropsContext(_generate._Cached):
        def first(self):
            return self.model(self.ids, attention_mask=self.mask)[:, -1]

        def next(self, tok):  # sees only the new token
            return self.model(tok[:, None])[:, -1]

    monkeypatch.setattr(_generate, "_Cached", DropsContext)
    monkeypatch.setattr(_generate, "_CACHE_OK", _generate.weakref.WeakKeyDictionary())
    with pytest.warns(npb.NeuroprobeWarning, match="KV cache does not reproduce"):
        gen = npb.record_generation(native_model, [[3, 4, 5], [7, 8]], max_new_tokens=4,
                                    hooks=HOOKS[0])
    _check_generation(native_model, gen, [[3, 4, 5], [7, 8]], HOOKS[0], 4)


class TinyMLP(HookedRootModule):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()
        self.setup()

    def forward(self, x):
        return self.l2(self.hook_post(torch.relu(self.hook_pre(self.l1(x)))))


def test_any_hooked_root_module_records_inputs_as_time_points():
    torch.manual_seed(0)
    mlp = npb.load_model(TinyMLP())
    x = torch.randn(10, 4)
    rec = npb.record(mlp, x, hooks=["hook_pre", "hook_post"], batch_size=4)
    assert rec.acts.shape == (10, 16) and rec.token_ids is None
    torch.testing.assert_close(rec.acts[:, :8], mlp.l1(x))
    torch.testing.assert_close(rec.acts[:, 8:], torch.relu(mlp.l1(x)))


# ---- bad input -------------------------------------------------------------------------------
def test_bad_input_messages(native_model):
    with pytest.raises(NeuroprobeError, match="prompts is empty"):
        npb.record(native_model, [], hooks=HOOKS)
    with pytest.raises(NeuroprobeError, match=r"unknown hook 'blocks.0.hook_resid_pots'.*"
                       r"closest valid names: 'blocks.0.hook_resid_post'"):
        npb.record(native_model, PROMPTS, hooks="blocks.0.hook_resid_pots")
    with pytest.raises(NeuroprobeError, match="pattern 'blocks.\\*.hook_nothing' matches no"):
        npb.record(native_model, PROMPTS, hooks="blocks.*.hook_nothing")
    with pytest.raises(NeuroprobeError, match="hooks is empty"):
        npb.record(native_model, PROMPTS, hooks=[])
    with pytest.raises(NeuroprobeError, match=r"index 64 is out of range for hook "
                       r"'blocks.0.mlp.hook_post', whose valid indices are 0..63"):
        npb.record(native_model, PROMPTS, hooks=[("blocks.0.mlp.hook_post", [1, 64])])
    with pytest.raises(NeuroprobeError, match=r"prompts\[1\] has 70 tokens, longer than the "
                       r"model's context of 64"):
        npb.record(native_model, [[1, 2], list(range(1, 71))], hooks=HOOKS)
    trunc = npb.record(native_model, [list(range(1, 71))], hooks=HOOKS[0], truncate=True)
    assert trunc.n_time == 64
    with pytest.raises(NeuroprobeError, match="no tokenizer"):
        npb.record(native_model, ["text"], hooks=HOOKS)
    with pytest.raises(NeuroprobeError, match="labels has 1 entries for 4 prompts"):
        npb.record(native_model, PROMPTS, hooks=HOOKS, labels=["x"])
    with pytest.raises(NeuroprobeError, match="Wrap it"):
        npb.record(native_model, "a single string", hooks=HOOKS)
    with pytest.raises(NeuroprobeError, match=r"outside \[0, 100\)"):
        npb.record(native_model, [[1, 200]], hooks=HOOKS)
    with pytest.raises(NeuroprobeError, match="width 5, but the hook's output has width 32"):
        npb.record(native_model, PROMPTS, hooks=Directions("blocks.0.hook_resid_post",
                                                           torch.ones(1, 5)))


# ---- SmolLM2 ---------------------------------------------------------------------------------
TEXTS = ["The cat sat on the mat.", "Hello",
         "Magnetic resonance imaging shows the soft tissue of the brain in fine detail.",
         "Paleontologists dated the fossil to the late Cretaceous."]


@pytest.mark.smollm2
def test_smollm2_batched_equals_unbatched(smollm2):
    hooks = ["blocks.*.hook_resid_post", "blocks.*.mlp.hook_post"]
    rec = npb.record(smollm2, TEXTS, hooks=hooks, batch_size=4)
    one = torch.cat([npb.record(smollm2, [t], hooks=hooks).acts for t in TEXTS])
    # float32 rounding differs between padded and unpadded shapes; measure it on each hook's
    # own scale (RMS over non-BOS tokens, since BOS residuals reach ~2.5e4): rtol 1e-4 and
    # atol 1e-4 x that scale
    body = rec.position > 0
    for h in rec.units.hooks:
        cols = torch.as_tensor(rec.units.select(hook=h))
        ref = one[:, cols]
        scale = ref[body].pow(2).mean().sqrt()
        torch.testing.assert_close(rec.acts[:, cols], ref, rtol=1e-4, atol=1e-4 * float(scale))
    assert rec.n_units == 30 * (576 + 1536)
    assert rec.tokens[:3] == ["<|im_start|>", "The", " cat"]
    toks = smollm2.to_tokens(TEXTS[2])[0]
    assert rec.token_ids[rec.prompt_index == 2].tolist() == toks.tolist()


@pytest.mark.smollm2
def test_smollm2_skip_bos_gate_hook_and_dataset(smollm2):
    import datasets

    ds = datasets.Dataset.from_dict({"text": TEXTS[:2]})
    rec = npb.record(smollm2, ds, hooks="blocks.3.mlp.hook_pre", include_bos=False)
    assert rec.position.min() >= 1 and "<|im_start|>" not in rec.tokens
    # token-id prompts that start with BOS drop it too; ones that do not keep every token
    ids = [smollm2.to_tokens(t)[0] for t in TEXTS[:2]]
    rec_ids = npb.record(smollm2, ids, hooks="blocks.3.mlp.hook_pre", include_bos=False)
    torch.testing.assert_close(rec_ids.acts, rec.acts, rtol=1e-4, atol=1e-4)
    no_bos = npb.record(smollm2, [i[1:] for i in ids], hooks="blocks.3.mlp.hook_pre",
                        include_bos=False)
    assert no_bos.n_time == sum(len(i) - 1 for i in ids)
    # on SmolLM2's gated MLP, mlp.hook_pre is the gate pre-activation
    assert resolve_hooks(smollm2, "blocks.3.mlp.hook_pre")[0].canonical.endswith("gate.hook_out")
    with pytest.raises(NeuroprobeError, match=r"prompts\[1\] is an empty string"):
        npb.record(smollm2, ["ok", ""], hooks="blocks.0.hook_resid_post")


@pytest.mark.smollm2
def test_smollm2_generation_equals_rerun_and_hand_greedy(smollm2):
    texts = ["The capital of France is", "Once upon a time, there was a little"]
    gen = npb.record_generation(smollm2, texts, max_new_tokens=5,
                                hooks=["blocks.*.hook_resid_post", "blocks.3.mlp.hook_post"],
                                stop_at_eos=False)
    prompts = [smollm2.to_tokens(t)[0].tolist() for t in texts]
    _check_generation(smollm2, gen, prompts,
                      ["blocks.*.hook_resid_post", "blocks.3.mlp.hook_post"], 5)
    assert "Paris" in smollm2.tokenizer.decode(gen.token_ids[gen.prompt_index == 0])
