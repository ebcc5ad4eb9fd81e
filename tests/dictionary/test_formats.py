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
