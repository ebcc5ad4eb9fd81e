"""Ablation: the context manager equals hand-made hooks, hooks always go, batched masks equal
one-at-a-time ablation, nulls are matched, dissociation, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe.core.engine import block_list

HOOK = "blocks.0.mlp.hook_post"
TEXTS = [[1, 5, 9, 13, 17, 21], [2, 4, 6, 8, 10, 12], [3, 7, 11, 15, 19, 23],
         [30, 31, 32, 33, 34, 35], [40, 41, 42, 43, 44, 45]]


def _ce(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(ids)
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             ids[:, 1:].reshape(-1), reduction="none").view(
        ids.shape[0], -1).mean(1)


def _no_hooks_left(model) -> bool:
    return all(len(hp.fwd_hooks) == 0 for hp in model.hook_dict.values())


def _planted_unit(model, ids) -> int:
    """The MLP neuron of layer 0 whose zero-ablation changes the loss most."""
    base = _ce(model, ids).sum()
    best, unit = -1.0, 0
    for u in range(model.cfg.d_mlp):
        with npb.ablate(model, {HOOK: [u]}, spare_bos=False):
            d = float((_ce(model, ids).sum() - base).abs())
        if d > best:
            best, unit = d, u
    return unit


def test_planted_unit_ablation_equals_hand_made_hook(native_model):
    ids = torch.tensor(TEXTS)
    u = _planted_unit(native_model, ids)
    canon = npb.core.hooks.resolve_hooks(native_model, HOOK)[0].canonical
    ref = npb.ablation_reference(native_model, HOOK, [t[::-1] for t in TEXTS])
    mean_u = float(ref.mean[HOOK][u])
    base = _ce(native_model, ids)
    for mode, value, spare in (("zero", 0.0, False), ("zero", 0.0, True),
                               ("mean", mean_u, True)):
        def hand(act, hook, value=value, spare=spare):
            act = act.clone()
            act[:, 1 if spare else 0:, u] = value
            return act

        with native_model.hooks(fwd_hooks=[(canon, hand)]):
            want = _ce(native_model, ids)
        net = npb.FunctionalNetwork(torch.arange(128) == u,
                                    npb.UnitIndex.from_hooks({HOOK: 64,
                                                              "blocks.1.mlp.hook_post": 64}))
        with npb.ablate(native_model, net, mode=mode, reference=ref, spare_bos=spare):
            got = _ce(native_model, ids)
        assert torch.equal(got, want), mode
        assert not torch.equal(got, base)
    assert _no_hooks_left(native_model)


def test_hooks_removed_after_exception(native_model):
    ids = torch.tensor(TEXTS[:2])
    before = _ce(native_model, ids)
    with pytest.raises(RuntimeError, match="boom"):
        with npb.ablate(native_model, {HOOK: [0, 1, 2]}):
            assert _ce(native_model, ids).ne(before).any()
            raise RuntimeError("boom")
    assert _no_hooks_left(native_model)
    assert torch.equal(_ce(native_model, ids), before)
    # an error raised inside the hook (a unit index from a wider model) also cleans up
    with pytest.raises(npb.NeuroprobeError, match="another model's unit index"):
        with npb.ablate(native_model, {HOOK: [500]}):
            _ce(native_model, ids)
    assert _no_hooks_left(native_model)


def test_directions_and_residual_coordinates(native_model):
    ids = torch.tensor(TEXTS)
    h = "blocks.0.hook_resid_post"
    with npb.ablate(native_model, {h: [0, 3]}):
        coords = _ce(native_model, ids)
    d = npb.Directions(h, torch.eye(32)[[0, 3]] * 2.0, name="axes")  # span, not scale, matters
    with npb.ablate(native_model, d):
        dirs = _ce(native_model, ids)
    torch.testing.assert_close(coords, dirs, rtol=1e-5, atol=1e-6)
    # a network over direction units, with its Directions object
    rec = npb.record(native_model, TEXTS[:2], hooks=d)
    net = npb.FunctionalNetwork(torch.tensor([True, True]), rec.units)
    with npb.ablate(native_model, net, directions=[d]):
        torch.testing.assert_close(_ce(native_model, ids), coords, rtol=1e-5, atol=1e-6)
    with pytest.raises(npb.NeuroprobeError, match="pass the Directions object"):
        with npb.ablate(native_model, net):
            pass
    # mean-ablation of a direction sets its coefficient to the reference mean
    ref = npb.ablation_reference(native_model, h, TEXTS)
    with npb.ablate(native_model, d, mode="mean", reference=ref):
        rd = npb.record(native_model, TEXTS[:1], hooks=h)
    mu = ref.mean[h]
    np.testing.assert_allclose(rd.acts[1:, [0, 3]].numpy(),
                               np.broadcast_to(mu[[0, 3]].numpy(), (5, 2)), rtol=1e-5,
                               atol=1e-6)


def test_resample_draws_reference_rows(native_model):
    ref = npb.ablation_reference(native_model, HOOK, TEXTS[:3], max_rows=50)
    assert ref.samples[HOOK].shape == (18, 64)  # no BOS on token-id prompts of this model
    with npb.ablate(native_model, {HOOK: [4, 9]}, mode="resample", reference=ref, seed=1):
        rec = npb.record(native_model, TEXTS[3:], hooks=HOOK)
    pool = {tuple(np.round(r, 5)) for r in ref.samples[HOOK][:, [4, 9]].numpy()}
    got = [tuple(np.round(r, 5)) for r in rec.acts.numpy()[:, [4, 9]]]
    assert all(g in pool for i, g in enumerate(got) if i % 6 != 0)  # position 0 spared


def test_batched_masks_equal_one_at_a_time(native_model):
    ui = npb.UnitIndex.from_hooks({HOOK: 64, "blocks.1.mlp.hook_post": 64})
    net = npb.FunctionalNetwork(torch.arange(128) % 9 == 0, ui, task="x")
    ref = npb.ablation_reference(native_model, net, TEXTS)
    texts = TEXTS + [[5, 6, 7], [8, 9, 10], [50, 51, 52, 53]]
    e = npb.causal_effect(native_model, net, texts, mode="mean", reference=ref, n_random=6,
                          seed=3, max_per_forward=7)
    rnd = npb.random_networks(net, 6, seed=3)
    var = npb.random_networks(net, 6, match="variance", variance=ref.unit_variance(ui), seed=4)
    base = np.array([float(_ce(native_model, torch.tensor([t]))) for t in texts])

    def slow(n):
        with npb.ablate(native_model, n, mode="mean", reference=ref):
            return np.array([float(_ce(native_model, torch.tensor([t]))) for t in texts]) - base

    np.testing.assert_allclose(e.per_text_delta_ce, slow(net), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e.null_delta_ce, [slow(n).mean() for n in rnd], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(e.variance_null_delta_ce, [slow(n).mean() for n in var],
                               rtol=1e-5, atol=1e-6)
    assert e.ci_low <= e.delta_ce <= e.ci_high
    assert 0 <= e.percentile <= 100 and len(e.to_dataframe()) == 13
    assert set(e.summary()) >= {"delta_ce", "random_delta_ce_p95", "effect_percentile"}
    assert _no_hooks_left(native_model)


def test_random_networks_are_matched():
    ui = npb.UnitIndex.from_hooks({"blocks.0.hook_resid_post": 50,
                                   "blocks.1.hook_resid_post": 50})
    m = torch.zeros(100, dtype=torch.bool)
    m[[1, 2, 3, 60, 61]] = True
    net = npb.FunctionalNetwork(m, ui)
    var = np.r_[np.arange(50.0), np.arange(50.0)]
    for r in npb.random_networks(net, 5, seed=0):
        assert int(r.mask[:50].sum()) == 3 and int(r.mask[50:].sum()) == 2
        assert not bool((r.mask & m).any())
    for r in npb.random_networks(net, 5, match="variance", variance=var, seed=0):
        cols = r.columns
        assert sorted(np.minimum(cols % 50 // 5, 9).tolist()) == [0, 0, 0, 2, 2]
    with pytest.raises(npb.NeuroprobeError, match="needs variance"):
        npb.random_networks(net, 2, match="variance")


def test_dissociation_matrix_and_plot(native_model):
    import matplotlib.pyplot as plt

    ui = npb.UnitIndex.from_hooks({HOOK: 64})
    nets = {"a": npb.FunctionalNetwork(torch.arange(64) < 20, ui),
            "b": npb.FunctionalNetwork(torch.arange(64) >= 44, ui)}
    conds = {"a": TEXTS[:2], "b": TEXTS[2:]}
    d = npb.dissociation(native_model, nets, conds, mode="zero", max_per_forward=3)
    ids = torch.tensor(TEXTS[2:])
    with npb.ablate(native_model, nets["a"]):
        want = (_ce(native_model, ids) - _ce(native_model, ids)).mean()
    with npb.ablate(native_model, nets["a"]):
        abl = _ce(native_model, ids)
    want = float((abl - _ce(native_model, ids)).mean())
    assert d.delta_ce[0, 1] == pytest.approx(want, rel=1e-5, abs=1e-6)
    df = d.to_dataframe()
    assert len(df) == 4 and set(df.columns) >= {"network", "condition", "delta_ce"}
    assert d.diagonal_wins in (0, 1, 2)
    fig = d.plot()
    plt.close(fig)
    from neuroprobe.viz.localizers import dissociation_html

    assert "<img" in dissociation_html(d)


def test_bad_input(native_model):
    ui = npb.UnitIndex.from_hooks({HOOK: 64})
    net = npb.FunctionalNetwork(torch.arange(64) < 3, ui)
    with pytest.raises(npb.NeuroprobeError, match="mode must be one of"):
        with npb.ablate(native_model, net, mode="noise"):
            pass
    with pytest.raises(npb.NeuroprobeError, match="needs reference statistics"):
        with npb.ablate(native_model, net, mode="mean"):
            pass
    with pytest.raises(npb.NeuroprobeError, match="which this model lacks"):
        with npb.ablate(native_model, {"blocks.7.mlp.hook_post": [1]}):
            pass
    other = npb.FunctionalNetwork(torch.arange(64) < 3,
                                  npb.UnitIndex.from_hooks({"blocks.9.hook_resid_post": 64}))
    with pytest.raises(npb.NeuroprobeError, match="another model's unit index"):
        npb.causal_effect(native_model, other, TEXTS, mode="zero", n_random=2)
    with pytest.raises(npb.NeuroprobeError, match="has no unit index"):
        with npb.ablate(native_model, npb.FunctionalNetwork(torch.arange(64) < 3)):
            pass
    with pytest.raises(npb.NeuroprobeError, match="is empty"):
        npb.causal_effect(native_model, npb.FunctionalNetwork(torch.zeros(64).bool(), ui),
                          TEXTS, mode="zero")
    with pytest.warns(npb.NeuroprobeWarning, match="1 of the 5 held-out texts are also"):
        npb.causal_effect(native_model, net, TEXTS, mode="zero", n_random=2,
                          variance_null=False, localizer=TEXTS[:1])
    assert _no_hooks_left(native_model)


def test_resumed_batched_passes_equal_whole_passes(native_model, monkeypatch):
    """A network in layer 1 only: the ablated passes resume at block 1 from the intact
    pass's residual (block 0 never runs again) and give the same losses as whole passes
    with one mask at a time."""
    import neuroprobe.networks.ablation as ab

    ui = npb.UnitIndex.from_hooks({HOOK: 64, "blocks.1.mlp.hook_post": 64})
    net = npb.FunctionalNetwork((torch.arange(128) % 7 == 0) & (torch.arange(128) >= 64), ui)
    ref = npb.ablation_reference(native_model, ui.hooks, TEXTS)
    texts = TEXTS + [[5, 6, 7], [8, 9, 10, 11]]
    tm = ab._hook_masks(native_model, [net.mask], ui)
    assert ab._start_layer(native_model, tm) == 1
    prep = ab._prepare(native_model, texts, 1, max_per_forward=4)
    assert prep.start == 1 and prep.resid is not None
    fired = []
    canon0 = npb.core.hooks.resolve_hooks(native_model, "blocks.0.hook_resid_post")[0].canonical
    native_model.add_hook(canon0, lambda act, hook: fired.append(1))
    try:
        e = npb.causal_effect(native_model, net, texts, mode="mean", reference=ref,
                              n_random=5, seed=2, max_per_forward=4)
        n_fired = len(fired)
    finally:
        native_model.reset_hooks()
    # block 0 ran only in the intact pass (one forward per chunk) and the reference pass
    assert n_fired <= len(list(ab._chunks(native_model, prep.groups, 4))) + 1
    base = np.array([float(_ce(native_model, torch.tensor([t]))) for t in texts])

    def slow(n):
        with npb.ablate(native_model, n, mode="mean", reference=ref):
            return np.array([float(_ce(native_model, torch.tensor([t]))) for t in texts]) - base

    np.testing.assert_allclose(e.per_text_delta_ce, slow(net), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e.null_delta_ce,
                               [slow(r).mean() for r in npb.random_networks(net, 5, seed=2)],
                               rtol=1e-5, atol=1e-6)
    # the same numbers when every pass runs the whole model
    monkeypatch.setattr(ab, "_start_layer", lambda model, tm: 0)
    whole = npb.causal_effect(native_model, net, texts, mode="mean", reference=ref,
                              n_random=5, seed=2, max_per_forward=4)
    np.testing.assert_allclose(e.null_delta_ce, whole.null_delta_ce, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e.variance_null_delta_ce, whole.variance_null_delta_ce,
                               rtol=1e-5, atol=1e-6)
    assert _no_hooks_left(native_model)


def test_resumed_passes_on_smollm2(smollm2, monkeypatch):
    """SmolLM2 (a TransformerBridge over HF Llama): resuming at the first ablated block
    equals whole passes, and ablating one mask at a time."""
    import neuroprobe.networks.ablation as ab

    hooks = {f"blocks.{i}.mlp.hook_post": 1536 for i in (10, 20)}
    ui = npb.UnitIndex.from_hooks(hooks)
    g = torch.Generator().manual_seed(0)
    net = npb.FunctionalNetwork(torch.rand(len(ui), generator=g) < 0.01, ui)
    texts = ["The cat sat on the mat today.", "A quiet river ran past the old mill.",
             "She wrote three letters before noon.", "Rain fell on the dry hills."]
    ref = npb.ablation_reference(smollm2, net, texts[::-1], max_rows=0)
    tm = ab._hook_masks(smollm2, [net.mask], ui)
    assert ab._start_layer(smollm2, tm) == 10
    assert ab._prepare(smollm2, texts, 10).start == 10
    e = npb.causal_effect(smollm2, net, texts, mode="mean", reference=ref, n_random=3,
                          variance_null=False, seed=1)
    rnd = npb.random_networks(net, 3, seed=1)
    one = [npb.causal_effect(smollm2, r, texts, mode="mean", reference=ref, n_random=0,
                             variance_null=False).delta_ce for r in rnd]
    np.testing.assert_allclose(e.null_delta_ce, one, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(ab, "_start_layer", lambda model, tm: 0)
    whole = npb.causal_effect(smollm2, net, texts, mode="mean", reference=ref, n_random=3,
                              variance_null=False, seed=1)
    np.testing.assert_allclose(e.per_text_delta_ce, whole.per_text_delta_ce, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(e.null_delta_ce, whole.null_delta_ce, rtol=1e-4, atol=1e-5)
    assert all(len(hp.fwd_hooks) == 0 for hp in smollm2.hook_dict.values())
    assert len(block_list(smollm2)[0].layers) == 30
