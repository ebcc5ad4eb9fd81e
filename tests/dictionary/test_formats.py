"""SAELens and sparsify formats: round trips byte-identical, bad files named."""

import json

import pytest
import torch

from neuroprobe import NeuroprobeError
from neuroprobe.dictionary import SAE, load_sae


def _sae(arch="topk"):
    s = SAE(8, 24, arch, k=4 if arch == "topk" else None, hook_name="blocks.1.hook_resid_post",
            model_name="toy", seed=5, metadata={"context_size": 64, "prepend_bos": True})
    with torch.no_grad():
        s.b_enc.normal_()
        s.b_dec.normal_()
    return s


@pytest.mark.parametrize("arch,fmt", [("topk", "saelens"), ("l1", "saelens"),
                                      ("topk", "sparsify")])
def test_save_load_save_is_byte_identical(tmp_path, arch, fmt):
    s = _sae(arch)
    s.save(tmp_path / "a", format=fmt)
    t = load_sae(tmp_path / "a", hook_name=None if fmt == "saelens" else s.hook_name)
    t.save(tmp_path / "b", format=fmt)
    for f in (tmp_path / "a").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name
    x = torch.randn(10, 8)
    torch.testing.assert_close(t(x), s(x))
    torch.testing.assert_close(t.encode(x), s.encode(x))
    assert (t.architecture, t.k, t.hook_name) == (s.architecture, s.k, s.hook_name)


def test_saelens_cfg_fields_and_tensor_layout(tmp_path):
    from safetensors.torch import load_file

    _sae("l1").save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["d_in"] == 8 and cfg["d_sae"] == 24
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    assert {"dtype", "device", "apply_b_dec_to_input", "normalize_activations"} <= set(cfg)
    w = load_file(str(tmp_path / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (8, 24) and w["W_dec"].shape == (24, 8)


def test_sparsify_layout(tmp_path):
    from safetensors.torch import load_file

    _sae().save(tmp_path, format="sparsify")
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["num_latents"] == 24 and cfg["k"] == 4 and cfg["d_in"] == 8
    w = load_file(str(tmp_path / "sae.safetensors"))
    assert w["encoder.weight"].shape == (24, 8) and w["W_dec"].shape == (24, 8)
    with pytest.raises(NeuroprobeError, match="TopK SAEs only"):
        _sae("l1").save(tmp_path / "x", format="sparsify")


def test_missing_key_names_key_and_file(tmp_path):
    _sae().save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg["d_sae"]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(NeuroprobeError, match=r"cfg\.json has no key 'd_sae'"):
        load_sae(tmp_path)


def test_unknown_architecture(tmp_path):
    _sae().save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["architecture"] = "jumprelu_v9"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(NeuroprobeError, match=r"cfg\.json: architecture 'jumprelu_v9'"):
        load_sae(tmp_path)


def test_k_larger_than_d_sae_in_cfg(tmp_path):
    _sae().save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["k"] = 100
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(NeuroprobeError, match=r"k=100\) is larger than d_sae=24"):
        load_sae(tmp_path)


def test_corrupt_safetensors(tmp_path):
    _sae().save(tmp_path)
    f = tmp_path / "sae_weights.safetensors"
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(NeuroprobeError, match="not a readable safetensors file"):
        load_sae(tmp_path)


def test_not_a_folder(tmp_path):
    with pytest.raises(NeuroprobeError, match="expected a folder with cfg.json"):
        load_sae(tmp_path / "nope")


# ---- SAELens cfg flags that change the maths (hand-written cfg.json files) -------------------
def _saelens_reference(w, cfg, x):
    """SAELens 6's StandardSAE / TopKSAE encode and decode, transcribed from sae_lens/saes/
    sae.py (process_sae_in), standard_sae.py and topk_sae.py (TopKSAE.encode / decode /
    _act_times_W_dec, TopK.forward), in float64."""
    W_enc, W_dec, b_enc, b_dec = (w[n].double() for n in ("W_enc", "W_dec", "b_enc", "b_dec"))
    sae_in = x.double() - b_dec * cfg.get("apply_b_dec_to_input", True)
    hidden_pre = sae_in @ W_enc + b_enc
    rescale = cfg["architecture"] == "topk" and cfg.get("rescale_acts_by_decoder_norm", False)
    if rescale:
        hidden_pre = hidden_pre * W_dec.norm(dim=-1)
    if cfg["architecture"] == "topk":
        val, idx = torch.topk(hidden_pre, k=cfg["k"], dim=-1, sorted=False)
        f = torch.zeros_like(hidden_pre).scatter_(-1, idx, val.relu())
    else:
        f = hidden_pre.relu()
    fd = f * (1 / W_dec.norm(dim=-1)) if rescale else f
    return f, fd @ W_dec + b_dec


def _write_saelens(path, cfg, w):
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({n: t.contiguous() for n, t in w.items()}, str(path / "sae_weights.safetensors"))


def _weights(d_in=8, d_sae=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    # decoder rows of very different norms, so that ignoring the rescale flag picks other
    # features and gives other reconstructions
    W_dec = torch.randn(d_sae, d_in, generator=g) * torch.linspace(0.05, 5.0, d_sae)[:, None]
    return {"W_enc": torch.randn(d_in, d_sae, generator=g), "W_dec": W_dec,
            "b_enc": 0.3 * torch.randn(d_sae, generator=g),
            "b_dec": torch.randn(d_in, generator=g)}


def _cfg(arch="topk", **kw):
    cfg = {"architecture": arch, "d_in": 8, "d_sae": 24, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "reshape_activations": "none",
           "metadata": {"model_name": "toy", "hook_name": "blocks.0.hook_resid_post",
                        "sae_lens_version": "6.18.0"}}
    if arch == "topk":
        cfg["k"] = 4
    cfg.update(kw)
    return cfg


@pytest.mark.parametrize("arch,flags", [
    ("topk", dict(rescale_acts_by_decoder_norm=True)),
    ("topk", dict(rescale_acts_by_decoder_norm=True, apply_b_dec_to_input=False)),
    ("topk", dict(apply_b_dec_to_input=False)),
    ("topk", dict(rescale_acts_by_decoder_norm=False)),
    ("standard", dict(apply_b_dec_to_input=False)),
    # the standard config has no such field: SAELens drops it, and so does neuroprobe
    ("standard", dict(rescale_acts_by_decoder_norm=True)),
])
def test_saelens_flags_are_honoured_like_saelens(tmp_path, arch, flags):
    cfg, w = _cfg(arch, **flags), _weights()
    _write_saelens(tmp_path / "a", cfg, w)
    sae = load_sae(tmp_path / "a")
    x = 2.0 * torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    f_ref, x_ref = _saelens_reference(w, cfg, x)
    f = sae.encode(x)
    assert torch.equal(f != 0, f_ref != 0)  # the same features fire
    torch.testing.assert_close(f.double(), f_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).double(), x_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decode(f).double(), x_ref, rtol=1e-5, atol=1e-5)
    # re-saved, the folder says what the folded weights compute, and the next round trip
    # is byte-identical
    sae.save(tmp_path / "b")
    saved = json.loads((tmp_path / "b" / "cfg.json").read_text())
    assert saved["apply_b_dec_to_input"] is True
    assert saved.get("rescale_acts_by_decoder_norm", False) is False
    from safetensors.torch import load_file

    _, x_b = _saelens_reference(load_file(str(tmp_path / "b" / "sae_weights.safetensors")),
                                saved, x)
    torch.testing.assert_close(x_b, x_ref, rtol=1e-5, atol=1e-5)
    load_sae(tmp_path / "b").save(tmp_path / "c")
    for name in ("cfg.json", "sae_weights.safetensors"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()


def test_rescale_flag_changes_the_function_it_is_not_a_no_op(tmp_path):
    """The planted weights make the flag matter (so the test above can fail)."""
    w = _weights()
    x = 2.0 * torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    f_on, _ = _saelens_reference(w, _cfg(rescale_acts_by_decoder_norm=True), x)
    f_off, _ = _saelens_reference(w, _cfg(), x)
    assert not torch.equal(f_on != 0, f_off != 0)
    _, x1 = _saelens_reference(w, _cfg(apply_b_dec_to_input=False), x)
    _, x0 = _saelens_reference(w, _cfg(), x)
    assert not torch.allclose(x1, x0, atol=1e-3)


@pytest.mark.parametrize("kw,match", [
    (dict(normalize_activations="expected_average_only_in"),
     r"normalize_activations='expected_average_only_in' is not supported: .*norm-scaling "
     r"factor .*fold_activation_norm_scaling_factor"),
    (dict(normalize_activations="constant_norm_rescale"),
     r"normalize_activations='constant_norm_rescale' is not supported: .*decode\(f\) alone"),
    (dict(normalize_activations="layer_norm"),
     r"normalize_activations='layer_norm' is not supported: .*decode\(f\) alone"),
    (dict(normalize_activations=True),  # pre-6.0 spelling of expected_average_only_in
     r"normalize_activations=True is not supported: .*norm-scaling factor"),
    (dict(normalize_activations="l2"),
     r"normalize_activations='l2' is not supported: the value is unknown; SAELens 6 writes"),
    (dict(reshape_activations="hook_z"),
     r"reshape_activations='hook_z' is not supported: .*n_heads \* d_head"),
    (dict(reshape_activations="heads"), r"reshape_activations='heads' is not supported: the "
                                        r"value is unknown"),
    (dict(apply_b_dec_to_input="yes"),
     r"apply_b_dec_to_input='yes' is not supported: it must be true or false"),
    (dict(rescale_acts_by_decoder_norm=1),
     r"rescale_acts_by_decoder_norm=1 is not supported: it must be true or false"),
    (dict(metadata={"hook_name": "blocks.0.attn.hook_z", "hook_head_index": 3}),
     r"hook_head_index=3 is not supported: the SAE reads one attention head"),
    (dict(finetuning_scaling_factor=True),
     r"finetuning_scaling_factor=True is not supported"),
    (dict(architecture="standard", activation_fn_str="topk",
          activation_fn_kwargs={"k": 4}),
     r"activation_fn_str='topk' is not supported: a pre-6.0 SAELens activation"),
    (dict(activation_fn="tanh-relu"),
     r"activation_fn='tanh-relu' is not supported: a pre-6.0 SAELens activation"),
])
def test_saelens_flags_that_cannot_be_honoured_are_refused(tmp_path, kw, match):
    _write_saelens(tmp_path, _cfg(**kw), _weights())
    with pytest.raises(NeuroprobeError, match=r"cfg\.json: " + match):
        load_sae(tmp_path)


def test_saelens_pre_6_defaults_are_read_as_none(tmp_path):
    w = _weights()
    _write_saelens(tmp_path, _cfg(normalize_activations=None, activation_fn_str="topk"), w)
    x = torch.randn(16, 8)
    torch.testing.assert_close(load_sae(tmp_path)(x).double(), _saelens_reference(w, _cfg(), x)[1],
                               rtol=1e-5, atol=1e-5)
    load_sae(tmp_path).save(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "cfg.json").read_text())[
        "normalize_activations"] == "none"


def test_saelens_extra_tensors_are_refused(tmp_path):
    w = _weights()
    w["threshold"] = torch.zeros(24)  # a JumpReLU file relabelled as topk
    _write_saelens(tmp_path, _cfg(), w)
    with pytest.raises(NeuroprobeError, match=r"holds tensors \['threshold'\] besides W_enc"):
        load_sae(tmp_path)


def test_saelens_rescale_with_a_zero_decoder_row_is_named(tmp_path):
    w = _weights()
    w["W_dec"][5] = 0.0
    _write_saelens(tmp_path, _cfg(rescale_acts_by_decoder_norm=True), w)
    with pytest.raises(NeuroprobeError, match=r"sae_weights\.safetensors: rescale_acts_by_"
                                              r"decoder_norm=true, but decoder rows \[5\]"):
        load_sae(tmp_path)


@pytest.mark.parametrize("key", ["skip_connection", "transcode", "embed_skip", "gram_lookup"])
def test_sparsify_terms_outside_the_four_tensors_are_refused(tmp_path, key):
    _sae().save(tmp_path, format="sparsify")
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg[key] = True
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(NeuroprobeError, match=rf"cfg\.json: {key}=True is not supported"):
        load_sae(tmp_path, hook_name="blocks.1.hook_resid_post")
