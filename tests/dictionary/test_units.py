"""SAE features as units: recorded activations equal encoding the recorded hook output, and
every analysis that takes Directions takes them."""

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.dictionary import SAE, SAEFeatures

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def sae(native_model):
    s = SAE(32, 48, "topk", k=5, hook_name=HOOK, seed=1)
    with torch.no_grad():
        s.b_enc.normal_(0, 0.05)
    return s


@pytest.fixture(scope="module")
def texts():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 100, size=int(rng.integers(5, 20))).tolist() for _ in range(12)]


def test_is_a_directions(sae):
    f = sae.features()
    assert isinstance(f, npb.Directions) and isinstance(f, SAEFeatures)
    assert f.n_directions == 48 and f.width == 32


def test_recorded_features_equal_encoded_hook_output(native_model, sae, texts):
    feats = sae.features()
    rec = npb.record(native_model, texts, hooks=[HOOK, feats], batch_size=5)
    assert rec.units.hooks == [HOOK, f"{HOOK}@sae"]
    raw, got = rec.acts[:, :32], rec.acts[:, 32:]
    torch.testing.assert_close(got, sae.encode(raw), atol=1e-5, rtol=1e-5)
    assert int((got != 0).sum(1).max()) <= 5  # TopK over all features, inside the hook
    sub = npb.record(native_model, texts, hooks=[sae.features([3, 7])], batch_size=5)
    torch.testing.assert_close(sub.acts, sae.encode(raw)[:, [3, 7]], atol=1e-5, rtol=1e-5)


def test_stream_probes_and_glm_and_spectrum_take_features(native_model, sae, texts):
    feats = sae.features([0, 1, 2, 3, 4, 5])
    cov, top = npb.stream(native_model, texts, [npb.RunningCovariance(feats),
                                                npb.TopK(feats, k=3)])
    rec = npb.record(native_model, texts, hooks=[feats])
    torch.testing.assert_close(cov.covariance, torch.cov(rec.acts.double().T), atol=1e-6,
                               rtol=1e-5)
    torch.testing.assert_close(top.values[:, 0].float(),
                               rec.acts.sort(0, descending=True).values[:3, 0], atol=1e-5,
                               rtol=1e-5)
    # the same analyses on encode() of the recorded hook output (more in
    # test_features_everywhere.py)
    raw = npb.record(native_model, texts, hooks=[HOOK]).acts
    with torch.no_grad():
        enc = sae.encode(raw)[:, :6]
    X = np.random.default_rng(0).normal(size=(rec.acts.shape[0], 2))
    res = npb.fit_glm(rec, X)
    assert res.beta.shape == (2, 6)
    torch.testing.assert_close(res.beta.double(), npb.fit_glm(enc.double(), X).beta.double(),
                               atol=1e-5, rtol=1e-4)
    got = np.asarray(npb.eigenspectrum(rec, max_components=4).eigenvalues)
    ref = np.asarray(npb.eigenspectrum(enc.double(), max_components=4).eigenvalues)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-8)
    assert ref[0] > 0


def test_mae_takes_features(native_model, sae, texts):
    feats = sae.features()
    k = int(sae.encode(npb.record(native_model, texts, hooks=[HOOK]).acts).sum(0).argmax())
    ex = npb.max_activating_examples(native_model, [(feats, k)], texts, k=3)
    rec = npb.record(native_model, texts, hooks=[feats.subset([k])])
    pi = rec.prompt_index.numpy()
    best = np.array([rec.acts[pi == p, 0].max().item() for p in range(len(texts))])
    got = ex.for_unit(ex.units[0]).activation.to_numpy()
    np.testing.assert_allclose(got, np.sort(best)[::-1][:3], atol=1e-5)
    text = texts[int(np.argmax(best))]
    mae = npb.prune_to_mae(native_model, (feats, k), text)
    assert mae.original_activation == pytest.approx(float(best.max()), abs=1e-5)
    found = npb.local_search(native_model, (feats, k), mae,
                             substituter=lambda left, s, r, n: [[20], [21]], spans=(1,))
    assert len(found.table) >= 1
    for ids, anchor, act in zip(found.table.token_ids, found.table.anchor,
                                found.table.activation, strict=True):
        raw = npb.record(native_model, [list(ids)], hooks=[HOOK]).acts
        with torch.no_grad():
            assert act == pytest.approx(float(sae.encode(raw)[int(anchor), k]), abs=1e-5)


def test_d_in_mismatch_names_both(native_model, texts):
    bad = SAE(16, 20, "l1", hook_name=HOOK)
    with pytest.raises(NeuroprobeError, match=r"width 16, but the hook's output has width 32"):
        npb.record(native_model, texts, hooks=[bad.features()])


def test_features_need_a_hook():
    with pytest.raises(NeuroprobeError, match="no hook_name"):
        SAE(4, 8, "l1").features()
    with pytest.raises(NeuroprobeError, match="feature numbers in 0..7"):
        SAE(4, 8, "l1", hook_name="h").features([9])
