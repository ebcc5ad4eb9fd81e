"""Harvest, training (deterministic, resumable), evaluation (spliced CE vs a hand splice)."""

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.dictionary import (
    SAE,
    ActivationStore,
    evaluate_sae,
    harvest,
    spliced_losses,
    train_sae_on_store,
)

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 100, size=200).tolist() for _ in range(12)]


def test_harvest_matches_record_and_is_shuffled(native_model, corpus, tmp_path):
    hooks = [HOOK, "blocks.1.hook_mlp_out"]
    st = harvest(native_model, corpus, hooks, path=tmp_path, context_size=16)
    ctxs = npb.dictionary.corpus_contexts(native_model, corpus, n_tokens=None, context_size=16)
    rec = npb.record(native_model, ctxs, hooks=hooks, positions=slice(1, None))
    assert st.n_tokens == rec.acts.shape[0] == len(ctxs) * 15  # position 0 left out
    assert (rec.position > 0).all()
    perm = np.random.default_rng(0).permutation(st.n_tokens)
    for j, h in enumerate(hooks):
        got = st.rows(h, 0, st.n_tokens)
        want = rec.acts[:, 32 * j:32 * (j + 1)].half().float()
        torch.testing.assert_close(got[perm], want)
    again = ActivationStore.open(tmp_path)
    assert again.hooks == tuple(hooks) and again.n_tokens == st.n_tokens
    bf = harvest(native_model, corpus, HOOK, path=tmp_path / "bf", context_size=16,
                 dtype="bfloat16", exclude_first=False)
    assert bf.n_tokens == len(ctxs) * 16 and bf.rows(HOOK, 0, 3).dtype == torch.float32


def test_unknown_hook_and_hook_that_does_not_fire(native_model, corpus, tmp_path):
    with pytest.raises(NeuroprobeError, match="blocks.7.hook_resid_post"):
        harvest(native_model, corpus, "blocks.7.hook_resid_post", path=tmp_path,
                context_size=16)

    class Silent(torch.nn.Module):  # a model whose forward never reaches the hook
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def hooks(self, fwd_hooks):
            import contextlib

            return contextlib.nullcontext()

        def forward(self, ids):
            return torch.zeros(*ids.shape, 5)

    with pytest.raises(NeuroprobeError, match="hook 'h' did not fire"):
        spliced_losses(Silent(), [[1, 2, 3, 4]], "h", {"sae": lambda x: x})


def _store(tmp_path, n=3000, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ActivationStore.from_arrays(tmp_path, {"h": torch.randn(n, d, generator=g) * 3})


@pytest.mark.parametrize("arch,lr_decay", [("topk", 0.0), ("l1", 0.0), ("l1", 0.4)])
def test_training_is_deterministic_and_resumes_exactly(tmp_path, arch, lr_decay):
    st = _store(tmp_path / "s")
    kw = dict(hook="h", d_sae=24, architecture=arch, k=3, batch_size=256, n_steps=14,
              resample_at=(0.5,), seed=3, lr_decay=lr_decay)
    a = train_sae_on_store(st, **kw)
    b = train_sae_on_store(st, **kw)
    assert all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("W_enc", "W_dec", "b_enc"))

    class Interrupt(Exception):
        pass

    def stop_at_9(step, loss):
        if step == 9:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_sae_on_store(st, **kw, checkpoint_dir=tmp_path / "ck", checkpoint_every=5,
                           callback=stop_at_9)
    c = train_sae_on_store(st, **kw, checkpoint_dir=tmp_path / "ck", checkpoint_every=5)
    for n in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(a, n), getattr(c, n)), n
    with pytest.raises(NeuroprobeError, match="other settings"):
        train_sae_on_store(st, **{**kw, "d_sae": 30}, checkpoint_dir=tmp_path / "ck")
    # the recipe too: another learning rate (or lambda, k, resampling, rows) is not resumed
    with pytest.raises(NeuroprobeError, match=r"other settings \{'lr': \(0\.\d+, 0\.002\)\}"):
        train_sae_on_store(st, **{**kw, "lr": 2e-3}, checkpoint_dir=tmp_path / "ck")
    # a checkpoint from before the recipe was saved (no 'lr' etc.) still resumes
    ck = tmp_path / "ck" / "checkpoint.pt"
    saved = torch.load(ck, weights_only=False)
    for key in ("lr", "k", "l1_coefficient", "resample_at", "train_tokens"):
        del saved["settings"][key]
    torch.save(saved, ck)
    d = train_sae_on_store(st, **kw, checkpoint_dir=tmp_path / "ck")
    assert torch.equal(d.W_dec, c.W_dec)


def test_lr_decay_is_linear_to_zero_over_the_final_steps(tmp_path, monkeypatch):
    st = _store(tmp_path)
    seen = []
    step = torch.optim.Adam.step

    def record(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    sae = train_sae_on_store(st, hook="h", d_sae=24, architecture="l1", batch_size=256,
                             n_steps=10, lr=0.01, lr_decay=0.4)
    # 4 decay steps: steps 0..6 at lr (step 6 at 4/4), then 3/4, 2/4, 1/4 (linear decay)
    assert seen == pytest.approx([0.01] * 7 + [0.0075, 0.005, 0.0025])
    assert sae.metadata["training"]["lr_decay"] == 0.4
    with pytest.raises(NeuroprobeError, match="lr_decay"):
        train_sae_on_store(st, hook="h", d_sae=24, k=3, batch_size=256, lr_decay=1.5)


def test_training_bad_input(tmp_path):
    st = _store(tmp_path, n=100)
    with pytest.raises(NeuroprobeError, match="100 training tokens, fewer than one batch"):
        train_sae_on_store(st, hook="h", d_sae=24, k=3, batch_size=256)
    with pytest.raises(NeuroprobeError, match=r"k=40\) is larger than d_sae=24"):
        train_sae_on_store(st, hook="h", d_sae=24, k=40, batch_size=10)
    with pytest.raises(NeuroprobeError, match="not in this activation store"):
        train_sae_on_store(st, hook="x", d_sae=24, k=3, batch_size=10)


def _hand_ce(model, ids, fn):
    """Next-token CE of predictions at positions 1..L-2 with ``fn`` applied at 1.. ."""
    def hook(act, hook):
        out = act.clone()
        out[:, 1:] = fn(act[:, 1:])
        return out

    with torch.no_grad():
        logits = model.run_with_hooks(ids, fwd_hooks=[(HOOK, hook)]) if fn else model(ids)
    lp = torch.log_softmax(logits[:, 1:-1].double(), -1)
    return float(-lp.gather(-1, ids[:, 2:, None]).mean()), lp


def test_spliced_ce_equals_hand_written_splice(native_model, corpus):
    sae = SAE(32, 64, "topk", k=6, hook_name=HOOK, seed=2)
    ctxs = npb.dictionary.corpus_contexts(native_model, corpus, n_tokens=None, context_size=20)
    ids = torch.tensor(ctxs)
    out = spliced_losses(native_model, ctxs, HOOK, {"sae": sae, "zero": torch.zeros_like},
                         batch_size=4)
    clean, lpc = _hand_ce(native_model, ids, None)
    ce_sae, lps = _hand_ce(native_model, ids, lambda x: sae(x))
    ce_zero, _ = _hand_ce(native_model, ids, torch.zeros_like)
    assert out["n_tokens"] == ids.shape[0] * 18
    assert out["ce"]["clean"] == pytest.approx(clean, rel=1e-6)
    assert out["ce"]["sae"] == pytest.approx(ce_sae, rel=1e-6)
    assert out["ce"]["zero"] == pytest.approx(ce_zero, rel=1e-6)
    kl = float((lpc.exp() * (lpc - lps)).sum(-1).mean())
    assert out["kl"]["sae"] == pytest.approx(kl, rel=1e-5)


def test_spliced_kl_of_near_copies_equals_float64_to_1e_8_nats(corpus):
    """The float32 log-sum-exp with a float64 max and log: CE to 1e-7 relative and KL to
    1e-8 nats per token of the float64 log-softmax, also for replacements so close to the
    clean activations that KL is ~5e-6, with a 49,152-way vocabulary and logits as large as a
    real LM's (~50): a plain float32 log-sum-exp is then off by ~4e-8 nats, which this test
    catches."""
    from tests.conftest import NATIVE_CFG

    model = npb.load_model(dict(NATIVE_CFG, d_vocab=49152))
    head = dict(model.named_parameters())["head._original_component.weight"]
    with torch.no_grad():
        head.mul_(12.0)
    ctxs = npb.dictionary.corpus_contexts(model, corpus, n_tokens=None, context_size=20)
    ids = torch.tensor(ctxs)
    reps = {f"scale {e}": (lambda x, e=e: x * (1 + e)) for e in (1e-1, 1e-2, 1e-3)}
    out = spliced_losses(model, ctxs, HOOK, reps, batch_size=4)
    _, lpc = _hand_ce(model, ids, None)
    assert lpc.exp().max() > 0.5  # peaked distributions, as a trained LM's
    for name, fn in reps.items():
        ce, lp = _hand_ce(model, ids, fn)
        kl = float((lpc.exp() * (lpc - lp)).sum(-1).mean())
        assert out["ce"][name] == pytest.approx(ce, rel=1e-7)
        assert out["kl"][name] == pytest.approx(kl, rel=1e-3, abs=1e-8)
    assert out["kl"]["scale 0.001"] < 1e-4  # the near-copy case is really near


def test_evaluate_metrics_against_direct_computation(native_model, corpus):
    sae = SAE(32, 64, "l1", hook_name=HOOK, seed=4)
    with torch.no_grad():
        sae.b_enc.fill_(-0.05)
    ev = evaluate_sae(sae, native_model, corpus, n_tokens=600, context_size=16, batch_size=8)
    ctxs = npb.dictionary.corpus_contexts(native_model, corpus, n_tokens=600, context_size=16)
    x = npb.record(native_model, ctxs, hooks=[HOOK], positions=slice(1, None)).acts.double()
    with torch.no_grad():
        f, xh = sae.encode(x.float()), sae(x.float()).double()
    assert ev.n_tokens == x.shape[0]
    fvu = float(((xh - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert ev.fvu == pytest.approx(fvu, rel=1e-5)
    assert ev.l0 == pytest.approx(float((f > 0).float().sum(1).mean()), rel=1e-6)
    assert ev.dead_fraction == pytest.approx(float(((f > 0).sum(0) == 0).float().mean()))
    ev_pca = np.linalg.eigvalsh(np.cov(x.numpy().T))[::-1]
    m = ev.pca_components
    assert ev.pca_fvu == pytest.approx(1 - ev_pca[:m].sum() / ev_pca.sum(), rel=1e-5)
    # any other number of components (the fixed PCA-32 baseline; here 5 and 20)
    for c in (5, 20):
        assert ev.pca_fvu_with(c) == pytest.approx(1 - ev_pca[:c].sum() / ev_pca.sum(),
                                                   rel=1e-5)
    assert ev.pca_fvu_with(m) == ev.pca_fvu
    with pytest.raises(NeuroprobeError, match="n_components"):
        ev.pca_fvu_with(33)
    assert "pca_eigenvalues" not in ev.to_dict()
    assert set(ev.to_dataframe().index) >= {"l0", "fvu", "ce_loss_recovered", "kl"}
    counts, _ = ev.log10_density_histogram()
    assert counts.sum() == int((ev.feature_density > 0).sum())
    assert 0 <= ev.dead_fraction <= 1 and np.isfinite(ev.ce_loss_recovered)
    ev.plot()


def test_spliced_losses_resume_after_the_hook_and_equal_whole_passes(native_model, corpus,
                                                                     monkeypatch):
    """At ``blocks.0.hook_resid_post`` the replaced passes start at block 1 (block 0 runs
    only in the clean pass), and give the numbers of whole spliced passes."""
    from neuroprobe.dictionary import evaluate as ev_mod

    sae = SAE(32, 64, "topk", k=6, hook_name=HOOK, seed=2)
    ctxs = npb.dictionary.corpus_contexts(native_model, corpus, n_tokens=None, context_size=20)
    reps = {"sae": sae, "zero": torch.zeros_like}
    calls = {"n": 0}

    def count(mod, inp, out):
        calls["n"] += 1

    h = native_model.blocks[0].register_forward_hook(count)
    try:
        resumed = spliced_losses(native_model, ctxs, HOOK, reps, batch_size=4)
    finally:
        h.remove()
    n_batches = -(-len(ctxs) // 4)
    assert calls["n"] == n_batches  # block 0: the clean pass only
    monkeypatch.setattr(ev_mod, "_resume_block", lambda model, hook: None)
    whole = spliced_losses(native_model, ctxs, HOOK, reps, batch_size=4)
    for key in ("ce", "kl"):
        for name in ("clean", "sae", "zero"):
            assert resumed[key][name] == pytest.approx(whole[key][name], rel=1e-6, abs=1e-9)
    assert len(native_model.blocks) == 2


def test_resume_block_only_for_residual_hooks(native_model):
    from neuroprobe.dictionary.evaluate import _resume_block

    assert _resume_block(native_model, "blocks.0.hook_resid_post") == 1
    assert _resume_block(native_model, "blocks.1.hook_resid_pre") == 1
    assert _resume_block(native_model, "blocks.1.hook_resid_post") is None  # last block
    assert _resume_block(native_model, "blocks.0.hook_mlp_out") is None
    assert _resume_block(native_model, "blocks.0.hook_resid_pre") is None
