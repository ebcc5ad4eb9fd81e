"""Token generation that no library's cache internals can silently break.

Generated tokens come from our own batched, left-padded decoding loop.  Where the model's
KV cache is verified on this very model (one tiny check per model: cached logits must equal
a full forward pass, padding included) the loop uses it; where it is not -- transformers
5.24 renamed the cache argument and TransformerLens's attention bridges stopped seeing it,
so every step saw no context -- the loop re-runs the full sequence each step, which is
slower but exact on every version.  Activations are never taken from this loop: callers
record the generated positions in one teacher-forced pass (exact for causal models).

Sampling is seeded per row (``seeds[i]`` drives row ``i``'s own generator), so a prompt's
sampled continuation does not depend on which other prompts share its batch.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from neuroprobe.core.engine import forward, model_device, pad_left, pad_token_id
from neuroprobe.core.errors import NeuroprobeError, NeuroprobeWarning

__all__ = ["generate_tokens", "eos_token_id"]

# per model: does its KV cache give the logits of a full forward pass?
_CACHE_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def eos_token_id(model) -> int | None:
    """The model's end-of-sequence id, from its tokenizer or config (None if it has none)."""
    tok = getattr(model, "tokenizer", None)
    eos = getattr(tok, "eos_token_id", None) if tok is not None else None
    if eos is None:
        eos = getattr(getattr(model, "cfg", None), "eos_token_id", None)
    return None if eos is None else int(eos)


class _FullForward:
    """Each step re-runs the whole (left-padded) sequence: exact on every library version."""

    def __init__(self, model, ids: Tensor, mask: Tensor):
        self.model, self.ids, self.mask = model, ids, mask

    def first(self) -> Tensor:
        return forward(self.model, self.ids, attention_mask=self.mask)[:, -1]

    def next(self, tok: Tensor) -> Tensor:
        self.ids = torch.cat([self.ids, tok[:, None]], 1)
        self.mask = torch.cat([self.mask, torch.ones_like(tok)[:, None]], 1)
        return forward(self.model, self.ids, attention_mask=self.mask)[:, -1]


class _Cached:
    """Incremental decoding through the bridge's own KV-cache entry point (the one forward
    call outside :mod:`neuroprobe.core.engine`: it needs the bridge's cache arguments)."""

    def __init__(self, model, ids: Tensor, mask: Tensor):
        self.model, self.ids, self.mask, self.cache = model, ids, mask, None

    def first(self) -> Tensor:
        logits, self.cache = self.model(self.ids, attention_mask=self.mask,
                                        return_type="logits_and_cache")
        return logits[:, -1]

    def next(self, tok: Tensor) -> Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(tok)[:, None]], 1)
        logits, self.cache = self.model(tok[:, None], attention_mask=self.mask,
                                        past_key_values=self.cache,
                                        return_type="logits_and_cache")
        return logits[:, -1]


def _cache_is_exact(model) -> bool:
    """Two left-padded prompts, two cached steps, against full forward passes per prompt."""
    if model in _CACHE_OK:
        return _CACHE_OK[model]
    ok, mismatch = False, False
    d_vocab = int(getattr(model.cfg, "d_vocab", 2))
    prompts = [torch.tensor([1, 2, 3]) % d_vocab, torch.tensor([4]) % d_vocab]
    steps = torch.tensor([[5, 6], [7, 8]]) % d_vocab
    dev = model_device(model)
    try:
        with torch.no_grad():
            ids, mask = pad_left(prompts, pad_token_id(model))
            dec = _Cached(model, ids.to(dev), mask.to(dev))
            got = [dec.first()]
            for k in range(steps.shape[1]):
                got.append(dec.next(steps[:, k].to(dev)))
            got_t = torch.stack(got, 1).float()
            refs = [forward(model, torch.cat([p, steps[i]])[None])[0, p.numel() - 1:].float()
                    for i, p in enumerate(prompts)]
    except Exception:  # noqa: BLE001 -- no usable cache path (e.g. a native model)
        got_t = None
    if got_t is not None:
        errs = [float((got_t[i] - r).abs().max()) / (float(r.abs().max()) + 1e-6)
                for i, r in enumerate(refs)]
        ok = max(errs) < 1e-3
        mismatch = not ok
    if mismatch:
        warnings.warn(
            "this model's KV cache does not reproduce a full forward pass (a known "
            "TransformerLens / transformers 5.24 incompatibility); generating by re-running "
            "the full sequence each step instead: exact, but slower. The locked environment "
            "(requirements/lock.txt) has a working cache.",
            NeuroprobeWarning, stacklevel=4,
        )
    _CACHE_OK[model] = ok
    return ok


def _choose(logits: Tensor, do_sample: bool, temperature: float, top_k: int | None,
            gens: list[torch.Generator] | None) -> Tensor:
    logits = logits.float()
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1).cpu()
    out = [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(gens)]
    return torch.cat(out).to(logits.device)


def generate_tokens(
    model,
    prompts: Sequence[Tensor],
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seeds: Sequence[int] | None = None,
    eos_id: int | None = None,
    batch_size: int = 16,
    progress=None,
) -> list[Tensor]:
    """The new tokens of each prompt (1-D LongTensors, each ending at its first ``eos_id``).

    ``prompts`` are 1-D token-id tensors; ``seeds[i]`` seeds row ``i``'s sampler.  Arguments
    are assumed valid (``record_generation`` checks them).
    """
    dev = model_device(model)
    pad = pad_token_id(model)
    decoder = _Cached if _cache_is_exact(model) else _FullForward
    out: list[Tensor] = []
    starts = list(range(0, len(prompts), batch_size))
    it = starts if progress is None else progress(starts)
    with torch.no_grad():
        for s in it:
            batch = list(prompts[s:s + batch_size])
            gens = None
            if do_sample:
                gens = [torch.Generator().manual_seed(int(seeds[s + i]))
                        for i in range(len(batch))]
            ids, mask = pad_left(batch, pad)
            dec = decoder(model, ids.to(dev), mask.to(dev))
            done = torch.zeros(len(batch), dtype=torch.bool)
            steps: list[Tensor] = []
            logits = dec.first()
            for k in range(max_new_tokens):
                tok = _choose(logits, do_sample, temperature, top_k, gens)
                steps.append(tok.cpu())
                if eos_id is not None:
                    done |= steps[-1] == eos_id
                    if bool(done.all()):
                        break
                if k + 1 < max_new_tokens:
                    logits = dec.next(tok)
            new = torch.stack(steps, 1)
            for row in new:
                if eos_id is not None and bool((row == eos_id).any()):
                    row = row[: int((row == eos_id).nonzero()[0]) + 1]
                out.append(row.clone())
    return out


def check_sampling(do_sample: bool, temperature, top_k, d_vocab: int) -> int | None:
    """Validate sampling arguments; returns ``top_k`` as an int (or None)."""
    import numbers

    import numpy as np

    if not isinstance(do_sample, (bool, np.bool_)):
        raise NeuroprobeError(f"do_sample must be True or False; got {do_sample!r}.")
    if isinstance(temperature, (bool, np.bool_)) \
            or not isinstance(temperature, numbers.Real) \
            or not temperature == temperature or not temperature > 0 \
            or temperature == float("inf"):
        raise NeuroprobeError(
            f"temperature must be a finite number > 0; got {temperature!r}. For greedy "
            "decoding pass do_sample=False (temperature is then ignored)."
        )
    if top_k is None:
        return None
    if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)) \
            or top_k < 1:
        raise NeuroprobeError(
            f"top_k must be None (sample from all tokens) or an int >= 1; got {top_k!r}."
        )
    if top_k > d_vocab:
        raise NeuroprobeError(
            f"top_k={top_k} is larger than the vocabulary ({d_vocab} tokens); pass "
            f"top_k=None to sample from all of them."
        )
    return int(top_k)
