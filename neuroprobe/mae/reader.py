"""The unit reader behind :mod:`neuroprobe.mae.prune` and :mod:`neuroprobe.mae.substitute`.

A :class:`UnitReader` evaluates one unit (a neuron ``(hook, index)`` or a direction, resolved
by :func:`resolve_unit`) on many token sequences at once.  The forward passes themselves are
the core engine's (:mod:`neuroprobe.core.engine`): left padding with an attention mask built
from the sequence lengths, the pass stopped right after the unit's hook, hooks removed on
exit.  What is the MAE's own is on top: sequences batched by length under a token budget
(candidates of one text differ only in length), one unit's activation kept per position, the
next-token log-probabilities when a search needs them, and a count of the passes so results
can report them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from neuroprobe.core.engine import (
    hook_width,
    hooked,
    is_language_model,
    pad_left,
    pad_token_id,
    resolve_hooks,
    stop_layer,
)
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.units import Directions

__all__ = ["UnitSpec", "UnitReader", "resolve_unit"]


@dataclass(frozen=True)
class UnitSpec:
    """A unit resolved against a model."""

    hook: str  # name as given by the user
    canonical: str  # the model's canonical hook point
    index: int | None  # neuron index, or None for a direction
    vector: Tensor | None  # direction [d], or None for a neuron
    label: str  # "hook[index]" or "hook@name[k]"
    width: int  # width of the hook's output
    stop: int | None  # stop_at_layer value (None = run the whole model)
    direction: Directions | None = None  # one-row set whose project() gives the activation

    @property
    def key(self) -> tuple[str, int]:
        """``(hook, index)`` for neurons, ``("hook@name", k)`` for directions."""
        if self.index is not None:
            return (self.hook, self.index)
        name, k = self.label.rsplit("[", 1)
        return (name, int(k.rstrip("]")))


def resolve_unit(model, unit) -> UnitSpec:
    """Resolve ``(hook, index)``, a one-row :class:`Directions`, or ``(Directions, k)``."""
    direction: Directions | None = None
    k = 0
    if isinstance(unit, Directions):
        if unit.n_directions != 1:
            raise NeuroprobeError(
                f"unit is a Directions set with {unit.n_directions} directions; pass one of "
                f"them as (directions, k) with k in 0..{unit.n_directions - 1}, or a one-row "
                "Directions."
            )
        direction = unit
    elif (isinstance(unit, (tuple, list)) and len(unit) == 2
          and isinstance(unit[0], Directions)):
        direction, k = unit[0], unit[1]
        if not isinstance(k, (int, np.integer)) or not 0 <= int(k) < direction.n_directions:
            raise NeuroprobeError(
                f"unit=(directions, {k!r}): the direction number must be an int in "
                f"0..{direction.n_directions - 1}."
            )
        k = int(k)
    elif not (isinstance(unit, (tuple, list)) and len(unit) == 2 and isinstance(unit[0], str)
              and isinstance(unit[1], (int, np.integer)) and not isinstance(unit[1], bool)):
        raise NeuroprobeError(
            "unit must be a neuron (hook_name, index) like ('blocks.3.mlp.hook_post', 17), a "
            f"one-row Directions, or (Directions, k); got {unit!r}."
        )
    hook = direction.hook if direction is not None else unit[0]
    req = resolve_hooks(model, [hook], argname="unit")
    if len(req) != 1:
        raise NeuroprobeError(f"unit hook {hook!r} must name exactly one hook point.")
    req = req[0]
    if not is_language_model(model):
        raise NeuroprobeError(
            "minimal activating examples need a language model with tokens (a "
            "TransformerBridge); got a model without to_tokens/cfg."
        )
    width = hook_width(model, req.canonical)
    stop = stop_layer(model, [req.canonical])
    if direction is not None:
        if direction.width != width:
            raise NeuroprobeError(
                f"Directions at {hook!r} have width {direction.width}, but the hook's output "
                f"has width {width}; build the directions with that width."
            )
        vec = direction.vectors[k].detach().clone().float()
        return UnitSpec(hook, req.canonical, None, vec, f"{hook}@{direction.name}[{k}]", width,
                        stop, direction.subset([k]))
    idx = int(unit[1])
    if not 0 <= idx < width:
        raise NeuroprobeError(
            f"unit index {idx} is out of range for hook {hook!r}, whose valid indices are "
            f"0..{width - 1}."
        )
    return UnitSpec(hook, req.canonical, idx, None, f"{hook}[{idx}]", width, stop)


class UnitReader:
    """Evaluate a unit's activation on many token sequences in batched forward passes."""

    def __init__(self, model, spec: UnitSpec | None, *, batch_size: int = 64,
                 max_tokens: int = 4096) -> None:
        self.model = model
        self.spec = spec
        self.batch_size = int(batch_size)
        self.max_tokens = int(max_tokens)  # cap on batch_rows * padded_length
        self.n_forward = 0
        self.n_sequences = 0
        self.pad_id = pad_token_id(model)

    def _chunks(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped into batches, sorted by length to keep padding small."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        out, cur, cur_max = [], [], 0
        for i in order:
            m = max(cur_max, lengths[i])
            if cur and (len(cur) + 1 > self.batch_size or (len(cur) + 1) * m > self.max_tokens):
                out.append(cur)
                cur, m = [], lengths[i]
            cur.append(i)
            cur_max = m
        if cur:
            out.append(cur)
        return out

    def run(self, seqs: Sequence[Sequence[int]], *, logprobs: bool = False
            ) -> tuple[list[Float[Tensor, " pos"]], list[Float[Tensor, " pos_1"]] | None]:
        """Activations ``[len(seq)]`` (float32, CPU) of the unit for every sequence.

        With ``logprobs=True`` the whole model runs and the log-probability of each token
        given the ones before it is returned too (``[len(seq) - 1]`` per sequence).
        """
        seqs = [torch.as_tensor(list(s), dtype=torch.long) for s in seqs]
        acts: list[Tensor | None] = [None] * len(seqs)
        lps: list[Tensor | None] = [None] * len(seqs)
        if not seqs:
            return [], ([] if logprobs else None)
        spec = self.spec
        grabbed: dict[str, Tensor] = {}

        def hook_fn(act: Tensor, hook) -> None:
            if spec.index is not None:
                grabbed["a"] = act[:, :, spec.index].detach()
            else:
                grabbed["a"] = spec.direction.unit_activations(act)[..., 0].detach()
            return None

        fwd_hooks = [] if spec is None else [(spec.canonical, hook_fn)]
        with hooked(self.model, fwd_hooks) as fwd:
            for idx in self._chunks([s.numel() for s in seqs]):
                ids, mask = pad_left([seqs[i] for i in idx], self.pad_id)
                if logprobs:
                    out = fwd.run(ids, attention_mask=mask)
                else:  # stops right after the unit's hook
                    fwd.run_until_fired(ids, attention_mask=mask,
                                        stop_at_layer=None if spec is None else spec.stop)
                self.n_forward += 1
                self.n_sequences += len(idx)
                a = grabbed.pop("a").float().cpu() if spec is not None else None
                S = ids.shape[1]
                if logprobs:
                    lp = torch.log_softmax(out.float(), dim=-1)[:, :-1]
                    tgt = ids[:, 1:].to(lp.device)
                    tok_lp = lp.gather(-1, tgt[..., None])[..., 0].cpu()
                for r, i in enumerate(idx):
                    L = seqs[i].numel()
                    if a is not None:
                        acts[i] = a[r, S - L:].clone()
                    if logprobs:
                        lps[i] = tok_lp[r, S - L:].clone()
        return acts, (lps if logprobs else None)  # type: ignore[return-value]
