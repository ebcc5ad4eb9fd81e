"""Harvest, training (deterministic, resumable), evaluation (spliced CE vs a hand splice)."""

import math

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


def test_harvest_and_training_name_a_hook_that_does_not_fire(corpus, tmp_path):
    """Block 1's forward is skipped (its input passed through), so the hooks inside it
    exist but never fire: harvest and train_sae from a model + corpus name the hook and the
    fix before writing anything; the block's output hook still fires and harvests."""
    from neuroprobe.dictionary import train_sae
    from tests.conftest import NATIVE_CFG

    model = npb.load_model(dict(NATIVE_CFG))  # this test's own model: patched, not restored
    model.blocks[1].forward = lambda x, *a, **k: (x,)
    msg = (r"hook\(s\) \['blocks\.1\.hook_mlp_out'\] did not fire on a forward pass of this "
           r"model .* pass hooks that every forward pass reaches")
    with pytest.raises(NeuroprobeError, match=msg):
        harvest(model, corpus, [HOOK, "blocks.1.hook_mlp_out"], path=tmp_path / "a",
                context_size=16)
    assert not list((tmp_path / "a").glob("*"))  # nothing written
    with pytest.raises(NeuroprobeError, match=msg):
        train_sae(model, corpus, hook="blocks.1.hook_mlp_out", d_sae=8, k=2, n_tokens=None,
                  context_size=16, batch_size=8, n_steps=2, store_dir=tmp_path / "b")
    with pytest.raises(NeuroprobeError, match=r"\['blocks\.1\.mlp\.hook_post'\] did not fire"):
        harvest(model, corpus, "blocks.1.mlp.hook_post", path=tmp_path / "c", context_size=16)
    st = harvest(model, corpus, "blocks.1.hook_resid_post", path=tmp_path / "d",
                 context_size=16)
    assert st.n_tokens == len(corpus) * 200 // 16 * 15


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
    """Every metric of evaluate_sae against a plain numpy / torch computation on the
    recorded hook outputs (and hand-written splices for CE / KL), the SAE's and the PCA's."""
    sae = SAE(32, 64, "l1", hook_name=HOOK, seed=4)
    with torch.no_grad():
        sae.b_enc.fill_(-0.05)
    ctxs = npb.dictionary.corpus_contexts(native_model, corpus, n_tokens=600, context_size=16)
    x = npb.record(native_model, ctxs, hooks=[HOOK], positions=slice(1, None)).acts.double()
    with torch.no_grad():
        f, xh = sae.encode(x.float()), sae(x.float()).double()
    density = (f > 0).double().mean(0).numpy()
    thr = float(np.sort(density)[32])  # a feature's own density: "dense" is strictly above
    ev = evaluate_sae(sae, native_model, corpus, n_tokens=600, context_size=16, batch_size=8,
                      dense_threshold=thr)
    assert ev.n_tokens == x.shape[0]
    X, XH = x.numpy(), xh.numpy()
    n, d = X.shape
    fvu = float(((xh - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert ev.fvu == pytest.approx(fvu, rel=1e-5)
    assert ev.explained_variance == pytest.approx(1 - fvu, rel=1e-5)
    assert ev.l0 == pytest.approx(float((f > 0).float().sum(1).mean()), rel=1e-6)
    assert ev.dead_fraction == pytest.approx(float(((f > 0).sum(0) == 0).float().mean()))

    def cos_l2(A, B):  # mean cos(a_t, b_t) (0 for a zero row) and mean ||b_t|| / ||a_t||
        na, nb = np.linalg.norm(A, axis=1), np.linalg.norm(B, axis=1)
        den = na * nb
        cos = np.divide((A * B).sum(1), den, out=np.zeros(len(A)), where=den > 0)
        return float(np.mean(cos)), float(np.mean(nb / na))

    assert 0 < int((np.abs(XH).sum(1) == 0).sum()) < n  # some tokens fire no feature
    cos, l2 = cos_l2(X, XH)
    assert ev.mse == pytest.approx(float(((XH - X) ** 2).sum() / (n * d)), rel=1e-6)
    assert ev.cosine == pytest.approx(cos, rel=1e-6)
    assert ev.l2_ratio == pytest.approx(l2, rel=1e-6)
    np.testing.assert_allclose(ev.feature_density, density)
    dense = float((density > thr).mean())
    assert 0.2 < dense < 0.8 and ev.dense_fraction == pytest.approx(dense)
    assert dense < float((density >= thr).mean())  # the threshold itself is not dense

    ev_pca, vecs = np.linalg.eigh(np.cov(X.T))
    ev_pca, vecs = ev_pca[::-1], vecs[:, ::-1]
    m = ev.pca_components
    assert m == round(ev.l0)
    assert ev.pca_fvu == pytest.approx(1 - ev_pca[:m].sum() / ev_pca.sum(), rel=1e-5)
    np.testing.assert_allclose(ev.pca_eigenvalues, ev_pca, rtol=1e-6, atol=1e-9 * ev_pca[0])
    # any other number of components (the fixed PCA-32 baseline; here 5 and 20)
    for c in (5, 20):
        assert ev.pca_fvu_with(c) == pytest.approx(1 - ev_pca[:c].sum() / ev_pca.sum(),
                                                   rel=1e-5)
    assert ev.pca_fvu_with(m) == ev.pca_fvu
    with pytest.raises(NeuroprobeError, match="n_components"):
        ev.pca_fvu_with(33)
    mu, U = X.mean(0), vecs[:, :m]

    def pca(a):  # the top-m PCA reconstruction of rows, in float64
        return mu + (a - mu) @ U @ U.T

    XP = pca(X)
    cos_p, l2_p = cos_l2(X, XP)
    assert ev.pca_mse == pytest.approx(float(((XP - X) ** 2).sum() / (n * d)), rel=1e-4)
    assert ev.pca_cosine == pytest.approx(cos_p, rel=1e-5)
    assert ev.pca_l2_ratio == pytest.approx(l2_p, rel=1e-5)
    # the spliced losses: hand-written splices at positions 1.. of the same contexts
    ids = torch.tensor(ctxs)
    ce_clean, lpc = _hand_ce(native_model, ids, None)
    ce_sae, lps = _hand_ce(native_model, ids, lambda a: sae(a))
    ce_zero, _ = _hand_ce(native_model, ids, torch.zeros_like)
    ce_pca, lpp = _hand_ce(native_model, ids, lambda a: torch.as_tensor(
        pca(a.double().numpy()), dtype=a.dtype))
    assert ev.n_ce_tokens == ids.shape[0] * 14
    for got, want in ((ev.ce_clean, ce_clean), (ev.ce_sae, ce_sae), (ev.ce_zero, ce_zero),
                      (ev.ce_pca, ce_pca)):
        assert got == pytest.approx(want, rel=1e-6)
    assert ev.kl_sae == pytest.approx(float((lpc.exp() * (lpc - lps)).sum(-1).mean()), rel=1e-4)
    assert ev.kl_pca == pytest.approx(float((lpc.exp() * (lpc - lpp)).sum(-1).mean()), rel=1e-4)
    assert ev.ce_loss_recovered == pytest.approx((ce_zero - ce_sae) / (ce_zero - ce_clean),
                                                 rel=1e-5)
    assert ev.pca_ce_loss_recovered == pytest.approx(
        (ce_zero - ce_pca) / (ce_zero - ce_clean), rel=1e-5)
    # the table: every PCA number that exists, l2_ratio included; NaN only where PCA has none
    df = ev.to_dataframe()
    assert df.loc["l2_ratio", "pca"] == ev.pca_l2_ratio and np.isfinite(ev.pca_l2_ratio)
    assert df.loc["mse", "pca"] == ev.pca_mse and df.loc["kl", "pca"] == ev.kl_pca
    assert df.loc["dense_fraction", "sae"] == ev.dense_fraction
    assert sorted(df.index[df["pca"].isna()]) == ["dead_fraction", "dense_fraction"]
    assert "pca_eigenvalues" not in ev.to_dict()
    assert ev.to_dict()["pca_l2_ratio"] == ev.pca_l2_ratio
    assert set(df.index) >= {"l0", "fvu", "ce_loss_recovered", "kl"}
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


# ---- dead-feature resampling (Towards Monosemanticity) and the L1 loss -------------------------
def _planted_resample_setup(tmp_path):
    """A store of 200 rows c = (1, 1, 0, 0), 50 rows u1 = c + e2 and 50 rows u2 = c + 2 e3,
    and an L1 SAE (input scale 2) that reconstructs c exactly and u1, u2 by b_dec only:
    squared losses 0, 4 and 16.  Features 0..5 are live (cancelling pairs that fire on every
    row; decoder norms 0.5, 1, 2 -> mean 7/6; encoder norms 1, 2, 3 -> mean 2); features
    6.. never fire (b_enc = -100).  Adam has taken two steps, so every moment is non-zero."""
    c = torch.tensor([1.0, 1.0, 0.0, 0.0])
    rows = torch.cat([c.expand(200, 4), (c + torch.tensor([0, 0, 1.0, 0])).expand(50, 4),
                      (c + torch.tensor([0, 0, 0, 2.0])).expand(50, 4)])
    st = ActivationStore.from_arrays(tmp_path, {"h": rows})
    n_live, d_sae, scale = 6, 1006, 2.0
    sae = SAE(4, d_sae, "l1", seed=1)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        opt.zero_grad()
        sum((p * torch.randn(p.shape, generator=g)).sum() for p in sae.parameters()).backward()
        opt.step()
    with torch.no_grad():
        sae.b_dec.copy_(c * scale)
        sae.b_enc.fill_(-100.0)
        for k, (nd, ne) in enumerate([(0.5, 1.0), (1.0, 2.0), (2.0, 3.0)]):
            for sign, i in ((1.0, 2 * k), (-1.0, 2 * k + 1)):
                sae.W_dec[i] = torch.tensor([sign * nd, 0, 0, 0])
                sae.W_enc[:, i] = torch.tensor([ne, 0, 0, 0])
                sae.b_enc[i] = 0.5
    live = torch.zeros(d_sae, dtype=torch.bool)
    live[:n_live] = True
    x = st.rows("h", 0, st.n_tokens) * scale
    with torch.no_grad():
        f = sae.encode(x)
        err = (sae(x) - x).pow(2).sum(-1)
    assert bool((f[:, :n_live] > 0).all()) and not bool((f[:, n_live:] > 0).any())
    assert sorted(set(err.tolist())) == [0.0, 4.0, 16.0]  # the planted losses, exactly
    return st, sae, opt, live, scale


def test_resample_repoints_exactly_the_dead_features_towards_high_loss_inputs(tmp_path):
    from neuroprobe.dictionary.train import _resample

    st, sae, opt, live, scale = _planted_resample_setup(tmp_path)
    dead = ~live
    before = {n: p.detach().clone() for n, p in sae.named_parameters()}
    state = {n: {k: v.clone() for k, v in opt.state[p].items()}
             for n, p in sae.named_parameters()}
    assert all(bool((s[k] != 0).all()) for s in state.values() for k in ("exp_avg",
                                                                          "exp_avg_sq"))
    _resample(sae, opt, dead, st, "h", 0, st.n_tokens, scale, 5, 3, "cpu")

    # live features and b_dec: bit for bit
    assert torch.equal(sae.W_dec[live], before["W_dec"][live])
    assert torch.equal(sae.W_enc[:, live], before["W_enc"][:, live])
    assert torch.equal(sae.b_enc[live], before["b_enc"][live])
    assert torch.equal(sae.b_dec, before["b_dec"])
    # dead features: decoder row = normalised (x - b_dec) of a sampled input, at the live
    # rows' mean norm; encoder column = 0.2 * that direction * the live columns' mean norm
    W_dec, W_enc = sae.W_dec.detach()[dead], sae.W_enc.detach()[:, dead].T
    norms = W_dec.norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 7 / 6))
    dirs = W_dec / norms[:, None]
    e2, e3 = torch.eye(4)[2], torch.eye(4)[3]
    is_e2 = torch.isclose(dirs, e2.expand_as(dirs), atol=1e-6).all(1)
    is_e3 = torch.isclose(dirs, e3.expand_as(dirs), atol=1e-6).all(1)
    assert bool((is_e2 ^ is_e3).all())  # every one points at u1 or u2, never at a c row
    torch.testing.assert_close(W_enc, dirs * 0.2 * 2.0)
    assert bool((sae.b_enc[dead] == 0).all())
    # drawn with probability proportional to the squared loss: u2 with 50 * 16 / (50 * 4 +
    # 50 * 16) = 0.8 (proportional to the loss itself would give 2/3, uniform 1/6)
    assert float(is_e3.float().mean()) == pytest.approx(0.8, abs=0.04)
    # Adam: both moments of the resampled entries are zero, the rest untouched
    for n, p in sae.named_parameters():
        now, was = opt.state[p], state[n]
        assert torch.equal(now["step"], was["step"])
        for k in ("exp_avg", "exp_avg_sq"):
            if n == "W_enc":
                assert bool((now[k][:, dead] == 0).all()), (n, k)
                assert torch.equal(now[k][:, live], was[k][:, live]), (n, k)
            elif n in ("W_dec", "b_enc"):
                assert bool((now[k][dead] == 0).all()), (n, k)
                assert torch.equal(now[k][live], was[k][live]), (n, k)
            else:
                assert torch.equal(now[k], was[k]), (n, k)
    # nothing dead: nothing changes
    after = {n: p.detach().clone() for n, p in sae.named_parameters()}
    _resample(sae, opt, torch.zeros_like(dead), st, "h", 0, st.n_tokens, scale, 5, 4, "cpu")
    assert all(torch.equal(p, after[n]) for n, p in sae.named_parameters())


def test_training_resamples_the_features_that_did_not_fire_since_the_last_resampling(
        tmp_path, monkeypatch):
    """Through the training loop: features planted dead (b_enc = -1e4 at step 0, and another
    set right after the first resampling) are exactly the ones resampled at each step of
    ``resample_at``; live features are untouched by the resampling, bit for bit."""
    from neuroprobe.dictionary import train as tr

    st = _store(tmp_path)
    n_steps, d_sae = 12, 24
    resample_steps = [int(0.25 * n_steps), int(0.5 * n_steps)]  # 3, 6
    plant1, plant2 = [2, 5, 11, 17], []
    log = {"fired": [], "calls": []}
    real_loss, real_resample = tr._loss, tr._resample

    def spy_loss(sae, x, architecture, l1):
        step = len(log["fired"])
        with torch.no_grad():
            if step == 0:
                sae.b_enc[plant1] = -1e4
            if step == resample_steps[0]:  # after this step's resampling
                seen = torch.stack(log["fired"]).any(0)
                plant2[:] = [i for i in range(d_sae) if seen[i] and i not in plant1][:3]
                sae.b_enc[plant2] = -1e4
        loss, f = real_loss(sae, x, architecture, l1)
        log["fired"].append(f.any(0).detach().clone())
        return loss, f

    def spy_resample(sae, opt, dead, *args):
        before = {n: p.detach().clone() for n, p in sae.named_parameters()}
        real_resample(sae, opt, dead, *args)
        log["calls"].append((len(log["fired"]), dead.clone(), before,
                             {n: p.detach().clone() for n, p in sae.named_parameters()}))

    monkeypatch.setattr(tr, "_loss", spy_loss)
    monkeypatch.setattr(tr, "_resample", spy_resample)
    train_sae_on_store(st, hook="h", d_sae=d_sae, architecture="l1", batch_size=256,
                       n_steps=n_steps, resample_at=(0.25, 0.5), seed=0)
    assert [c[0] for c in log["calls"]] == resample_steps
    assert len(plant2) == 3
    starts = [0] + resample_steps
    for j, (step, dead, before, after) in enumerate(log["calls"]):
        fired = torch.stack(log["fired"][starts[j]:step]).any(0)
        assert torch.equal(dead, ~fired), j  # never fired since the last resampling
        planted = plant1 if j == 0 else plant2
        assert torch.nonzero(dead).flatten().tolist() == planted, j  # exactly the planted
        live = ~dead
        assert torch.equal(after["W_dec"][live], before["W_dec"][live])
        assert torch.equal(after["W_enc"][:, live], before["W_enc"][:, live])
        assert torch.equal(after["b_enc"][live], before["b_enc"][live])
        assert torch.equal(after["b_dec"], before["b_dec"])
        assert bool((after["b_enc"][dead] == 0).all())
        assert not bool((after["W_dec"][dead] == before["W_dec"][dead]).all(1).any())
    with pytest.raises(NeuroprobeError, match="resample_at must be a tuple"):
        train_sae_on_store(st, hook="h", d_sae=d_sae, architecture="l1", batch_size=256,
                           resample_at=0.5)


def _hand_l1_loss(x, W_enc, b_enc, W_dec, b_dec, lam):
    """The documented L1 loss, one token and one feature at a time, in float64."""
    x, W_enc, b_enc, W_dec, b_dec = (np.asarray(a, dtype=np.float64)
                                     for a in (x, W_enc, b_enc, W_dec, b_dec))
    total = 0.0
    for t in range(x.shape[0]):
        f = [max(0.0, float((x[t] - b_dec) @ W_enc[:, i] + b_enc[i]))
             for i in range(W_enc.shape[1])]
        x_hat = b_dec + sum(f[i] * W_dec[i] for i in range(len(f)))
        sq = sum((x_hat[d] - x[t, d]) ** 2 for d in range(x.shape[1]))
        l1 = sum(f[i] * math.sqrt(sum(w * w for w in W_dec[i])) for i in range(len(f)))
        total += sq + lam * l1
    return total / x.shape[0]  # summed over dimensions / features, averaged over tokens


def test_l1_training_loss_equals_a_hand_computation(tmp_path):
    from neuroprobe.dictionary.train import _loss

    g = torch.Generator().manual_seed(0)
    sae = SAE(4, 6, "l1", seed=3)
    with torch.no_grad():
        sae.W_dec.mul_(torch.tensor([0.5, 1, 2, 3, 4, 5.0])[:, None])  # unequal row norms
        sae.b_enc.copy_(torch.randn(6, generator=g) * 0.05)
        sae.b_dec.copy_(torch.randn(4, generator=g) * 0.1)
    x = torch.randn(3, 4, generator=g)
    loss, on = _loss(sae, x, "l1", 0.7)
    p = {n: v.detach().numpy() for n, v in sae.named_parameters()}
    want = _hand_l1_loss(x.numpy(), p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"], 0.7)
    assert float(loss.detach()) == pytest.approx(want, rel=1e-5)
    assert torch.equal(on, sae.encode(x) > 0) and 0 < int(on.sum()) < on.numel()
    # the training loop reports it on its first batch with lambda warmed up: 40 steps ->
    # lambda * min(1, 1 / (0.05 * 40)) = lambda / 2 at step 0
    st = _store(tmp_path)
    seen = []

    class Stop(Exception):
        pass

    def first(step, loss):
        seen.append(loss)
        raise Stop

    with pytest.raises(Stop):
        train_sae_on_store(st, hook="h", d_sae=6, architecture="l1", batch_size=256,
                           n_steps=40, l1_coefficient=3.0, seed=2, callback=first)
    sample = st.rows("h", 0, st.n_tokens).double()
    scale = math.sqrt(12) / float(sample.norm(dim=1).mean())
    init = SAE(12, 6, "l1", seed=2)
    b = int(np.random.default_rng([2, 0]).permutation(st.n_tokens // 256)[0])
    xb = st.rows("h", 256 * b, 256 * (b + 1)) * scale
    q = {n: v.detach().numpy() for n, v in init.named_parameters()}
    want = _hand_l1_loss(xb.numpy(), q["W_enc"], q["b_enc"], q["W_dec"],
                         (sample.mean(0) * scale).float().numpy(), 3.0 / 2)
    assert seen[0] == pytest.approx(want, rel=1e-5)
