"""Max-activating examples and minimal activating examples (MAE), exact and batched.

The method (Foote, "Investigating neuron behaviour via dataset example pruning and local
search", 2022) as written:

1. :func:`max_activating_examples` scans a corpus in batches and keeps, for every unit, the
   ``k`` texts on which it is most active (the best token of each text, with a context
   window).  Several units share one pass.
2. :func:`prune_to_mae` prunes one text to a *minimal activating example*.  The anchor is the
   text's token with the highest activation (a prepended BOS is never the anchor).  The
   anchor's sentence is found by a sentence splitter on the text and mapped to token ids
   through the tokenizer's character offsets (no re-tokenization).  Every candidate is a
   token-id slice of that sentence, run with the same BOS handling as the full text; it
   *passes* when its activation at the anchor is ``>= (1 - max_drop) * original``.  First the
   shortest end-truncation that passes is chosen, then from it the shortest start-truncation
   that passes; ``window`` tokens each side of the anchor are never removed.  All candidates
   of a phase run in batched forward passes (left padding + attention mask, forward stopped
   after the unit's layer), and the activation is read at the anchor position only.
3. :func:`token_importance` and :func:`activation_trajectory` are the per-token diagnostics.

Texts longer than the model's context are cut into consecutive windows of ``n_ctx`` tokens
(minus the BOS); the anchor is the best token over all windows and its window stands in for
the text (``MAE.reason`` says so).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.shards import note_batch
from neuroprobe.core.validation import (
    check_bool,
    check_fraction,
    check_index_list,
    check_int,
    check_positive_int,
    warn_degenerate,
)
from neuroprobe.mae.reader import UnitReader, UnitSpec, resolve_unit
from neuroprobe.mae.tokens import (
    Doc,
    as_doc,
    bos_prefix,
    decode,
    sentence_of_tokens,
    sentence_ranges,
    token_strs,
)

__all__ = [
    "MAE",
    "MaxActivatingExamples",
    "TokenImportance",
    "Trajectory",
    "max_activating_examples",
    "prune_to_mae",
    "token_importance",
    "activation_trajectory",
]


# ---- results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class MAE:
    """A minimal activating example of one unit, verified by a forward pass.

    Attributes
    ----------
    unit : str
        The unit's label (``"blocks.3.mlp.hook_post[17]"`` or ``"hook@name[k]"``).
    text : str
        The MAE as text (decoded from :attr:`token_ids`).
    token_ids, tokens : list
        Token ids of the MAE (no BOS) and their strings.
    anchor : int
        Index of the anchor token in :attr:`token_ids`.
    activation, original_activation : float
        The unit's activation at the anchor in the MAE and in the original text.
    passed : bool
        ``activation >= (1 - max_drop) * original_activation`` (and the unit fired at all).
    reason : str
        How the result came about: which context was pruned, or why nothing passed.
    original_text, original_token_ids, original_anchor :
        The text that was pruned (the context window for over-long texts), its token ids
        (no BOS) and its anchor index.
    start, end : int
        The MAE is ``original_token_ids[start:end]``.
    activations, original_activations : list[float]
        The unit's activation at every token of the MAE and of the original text.
    context : str
        Where token pruning started: ``"sentence"`` (the method), ``"sentences"`` (sentence-level
        pruning first, the paper's proposed fix) or ``"text"`` (the full text).
    max_drop, window : float, int
        The settings used.
    bos : bool
        Whether a BOS token was prepended to every candidate.
    n_forward, n_candidates : int
        Forward passes and candidate sequences evaluated.
    """

    unit: str
    text: str
    token_ids: list
    tokens: list
    anchor: int
    activation: float
    original_activation: float
    passed: bool
    reason: str
    original_text: str
    original_token_ids: list
    original_tokens: list
    original_anchor: int
    start: int
    end: int
    activations: list
    original_activations: list
    context: str
    max_drop: float
    window: int
    bos: bool
    n_forward: int
    n_candidates: int

    @property
    def drop(self) -> float:
        """Relative activation drop ``1 - activation / original_activation``."""
        if self.original_activation == 0:
            return float("nan")
        return 1.0 - self.activation / self.original_activation

    @property
    def anchor_token(self) -> str:
        return self.tokens[self.anchor] if self.tokens else ""

    def to_dataframe(self) -> pd.DataFrame:
        """One row per MAE token: ``position``, ``token``, ``token_id``, ``activation``,
        ``is_anchor``."""
        n = len(self.token_ids)
        return pd.DataFrame({
            "position": np.arange(n),
            "token": self.tokens,
            "token_id": self.token_ids,
            "activation": self.activations,
            "is_anchor": np.arange(n) == self.anchor,
        })

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        d = asdict(self)
        d["drop"] = self.drop
        return d

    def to_json(self, path: str | None = None) -> str:
        """JSON text of :meth:`to_dict` (also written to ``path`` if given)."""
        s = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            from neuroprobe.core.validation import check_writable_path

            path = check_writable_path(path, "path")
            with open(path, "w", encoding="utf-8") as f:
                f.write(s)
        return s

    def __repr__(self) -> str:
        return (
            f"MAE(unit={self.unit!r}, text={self.text!r}, anchor={self.anchor} "
            f"({self.anchor_token!r}), activation={self.activation:.4g}, "
            f"original_activation={self.original_activation:.4g}, passed={self.passed}, "
            f"tokens {len(self.token_ids)}/{len(self.original_token_ids)})"
        )

    def _repr_html_(self) -> str:
        from neuroprobe.viz.mae import mae_html

        return mae_html(self)


@dataclass(frozen=True)
class MaxActivatingExamples:
    """The top-``k`` texts of every unit over a corpus.

    Attributes
    ----------
    units : list[str]
        Unit labels, in the order asked for.
    examples : DataFrame
        One row per (unit, rank): ``unit``, ``rank``, ``activation``, ``text_index``,
        ``position`` (token position in the text, BOS = 0 when prepended), ``token``,
        ``token_id``, ``context`` (the text around the anchor, the anchor in ``[[ ]]``) and
        ``text`` (the whole corpus text, ready for :func:`prune_to_mae`).
    n_texts, n_tokens : int
        Size of the scanned corpus.
    """

    units: list
    examples: pd.DataFrame = field(repr=False)
    n_texts: int
    n_tokens: int

    def for_unit(self, unit) -> pd.DataFrame:
        """The rows of one unit (its label, its ``(hook, index)``, or its position)."""
        label = self._label(unit)
        return self.examples[self.examples["unit"] == label].reset_index(drop=True)

    def texts(self, unit) -> list:
        """The top texts of one unit, best first."""
        return self.for_unit(unit)["text"].tolist()

    def _label(self, unit) -> str:
        if isinstance(unit, (int, np.integer)) and not isinstance(unit, (bool, np.bool_)):
            if not 0 <= int(unit) < len(self.units):
                raise NeuroprobeError(
                    f"unit position {int(unit)} is out of range; these examples have "
                    f"{len(self.units)} unit(s), positions 0..{len(self.units) - 1}."
                )
            return self.units[int(unit)]
        if isinstance(unit, str) and unit in self.units:
            return unit
        if (isinstance(unit, (tuple, list)) and len(unit) == 2
                and isinstance(unit[1], (int, np.integer)) and not isinstance(unit[1], bool)):
            lab = f"{unit[0]}[{int(unit[1])}]"
            if lab in self.units:
                return lab
        raise NeuroprobeError(f"unit {unit!r} is not among these examples' units: {self.units}")

    def to_dataframe(self) -> pd.DataFrame:
        return self.examples.copy()

    def __repr__(self) -> str:
        return (f"MaxActivatingExamples(units={len(self.units)}, k<={self._k()}, "
                f"n_texts={self.n_texts}, n_tokens={self.n_tokens})")

    def _k(self) -> int:
        if not len(self.examples):
            return 0
        return int(self.examples.groupby("unit").size().max())

    def _repr_html_(self) -> str:
        from neuroprobe.viz.mae import examples_html

        return examples_html(self)


@dataclass(frozen=True)
class TokenImportance:
    """Per-token importance for the anchor's activation (one ablation per token).

    ``importance[i] = activation - ablated[i]``: how much the anchor's activation falls when
    token ``i`` is ablated (``method``: ``"mask"`` deletes the token, ``"mean"`` replaces its
    embedding by the mean token embedding, ``"resample"`` replaces it by random tokens and
    averages).  ``"mask"`` cannot delete the anchor itself: its entry is NaN.
    """

    unit: str
    tokens: list
    token_ids: list
    anchor: int
    activation: float
    ablated: list
    importance: list
    method: str
    n_forward: int

    def to_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame({
            "position": np.arange(len(self.tokens)), "token": self.tokens,
            "token_id": self.token_ids, "ablated_activation": self.ablated,
            "importance": self.importance,
            "is_anchor": np.arange(len(self.tokens)) == self.anchor,
        })

    def __repr__(self) -> str:
        return (f"TokenImportance(unit={self.unit!r}, method={self.method!r}, "
                f"tokens={len(self.tokens)}, activation={self.activation:.4g})")

    def _repr_html_(self) -> str:
        from neuroprobe.viz.mae import importance_html

        return importance_html(self)


@dataclass(frozen=True)
class Trajectory:
    """The anchor's activation as context is removed token by token (the N2G diagnostic).

    ``from_start[j]`` is the activation with the first ``j`` tokens removed, ``from_end[j]``
    with the last ``j`` tokens removed (the anchor is never removed, so the lists stop there).
    """

    unit: str
    tokens: list
    anchor: int
    from_start: list
    from_end: list
    n_forward: int

    def to_dataframe(self) -> pd.DataFrame:
        rows = [("start", j, a) for j, a in enumerate(self.from_start)]
        rows += [("end", j, a) for j, a in enumerate(self.from_end)]
        return pd.DataFrame(rows, columns=["side", "n_removed", "activation"])

    def __repr__(self) -> str:
        return (f"Trajectory(unit={self.unit!r}, tokens={len(self.tokens)}, "
                f"from_start={len(self.from_start)}, from_end={len(self.from_end)})")


# ---- pruning ------------------------------------------------------------------------------
def _check_prune_args(max_drop, window, fallback) -> tuple[float, int]:
    md = check_fraction(max_drop, "max_drop")
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or window < 0:
        raise NeuroprobeError(f"window must be an int >= 0 (tokens kept each side of the "
                              f"anchor); got {window!r}.")
    if not isinstance(fallback, str) or fallback not in ("none", "text", "sentences"):
        raise NeuroprobeError(
            f"fallback must be 'none', 'text' or 'sentences'; got {fallback!r}. 'sentences' "
            "prunes whole sentences before tokens (the paper's proposed fix)."
        )
    return md, int(window)


def _doc_windows(model, doc: Doc) -> list:
    n_ctx = int(getattr(model.cfg, "n_ctx", 1 << 30))
    w = max(1, n_ctx - len(doc.prefix))
    return [(s, min(len(doc.ids), s + w)) for s in range(0, len(doc.ids), w)]


def _slice_doc(doc: Doc, s: int, e: int) -> Doc:
    if s == 0 and e == len(doc.ids):
        return doc
    if doc.spans is None:
        return Doc(doc.text, doc.ids[s:e], None, doc.prefix)
    c0, c1 = doc.spans[s][0], doc.spans[e - 1][1]
    spans = [(a - c0, b - c0) for a, b in doc.spans[s:e]]
    return Doc(doc.text[c0:c1], doc.ids[s:e], spans, doc.prefix)


def prune_to_mae(
    model,
    unit,
    text,
    max_drop: float = 0.6,
    window: int = 0,
    *,
    fallback: Literal["none", "text", "sentences"] = "none",
    prepend_bos: bool | None = None,
    batch_size: int = 64,
) -> MAE:
    """Prune a text to its minimal activating example for one unit.

    Parameters
    ----------
    model : TransformerBridge
        A language model (``npb.load_model(...)``).
    unit : (str, int) or Directions or (Directions, int)
        A neuron ``(hook_name, index)`` or a direction unit.
    text : str or sequence of int
        The text (tokenized exactly as ``model.to_tokens``), or token ids (no BOS).
    max_drop : float in (0, 1)
        A candidate passes when its anchor activation is ``>= (1 - max_drop) * original``.
    window : int
        Tokens on each side of the anchor that are never removed.
    fallback : {"none", "text", "sentences"}
        What to do when the anchor's sentence alone fails: ``"none"`` returns
        ``passed=False`` with the reason; ``"text"`` prunes tokens from the full text;
        ``"sentences"`` first prunes whole sentences (shortest end-, then start-truncation
        that passes) and then tokens from that block.
    prepend_bos : bool, optional
        Override the model's BOS default (by default a BOS is prepended to strings, as
        ``model.to_tokens`` does, and not to token ids).
    batch_size : int
        Candidates per forward pass.

    Returns
    -------
    MAE
        Always a verified result: ``passed`` tells whether the MAE keeps the activation.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> mae = npb.prune_to_mae(model, ("blocks.0.mlp.hook_post", 3), [5, 9, 2, 7, 11, 4])
    >>> mae.passed, len(mae.token_ids) <= 6, mae.token_ids[mae.anchor] in [5, 9, 2, 7, 11, 4]
    (True, True, True)
    """
    md, window = _check_prune_args(max_drop, window, fallback)
    batch_size = check_positive_int(batch_size, "batch_size")
    spec = resolve_unit(model, unit)
    doc = as_doc(model, text, prepend_bos)
    reader = UnitReader(model, spec, batch_size=batch_size)
    return _prune(model, spec, reader, doc, md, window, fallback)


def _prune(model, spec: UnitSpec, reader: UnitReader, doc: Doc, md: float, window: int,
           fallback: str) -> MAE:
    """The method's steps: find the anchor, prune its sentence, else fall back to a larger
    context (the whole text, or the sentences around the anchor's that pass)."""
    p = _find_anchor(model, spec, reader, doc, md, window)
    n = len(p.ids)
    if not bool(torch.isfinite(p.acts).all()):
        warn_degenerate(f"prune_to_mae: unit {spec.label} has NaN or inf activations on this "
                        "text (e.g. NaN weights); nothing can be pruned.", stacklevel=4)
        return p.mae(0, n, p.activation, p.acts.tolist(), False,
                     "the unit's activations are NaN or inf on this text (NaN weights?); "
                     "nothing was pruned", "text")
    if not p.activation > 0:
        return p.mae(0, n, p.activation, p.acts.tolist(), False,
                     f"the unit never exceeds 0 on this text (max activation {p.activation:.4g}); "
                     "there is nothing to keep", "text")
    ranges = sentence_ranges(sentence_of_tokens(p.doc))
    k = next(j for j, (s, e) in enumerate(ranges) if s <= p.anchor < e)
    s0, e0 = ranges[k]
    found = p.prune_tokens(s0, e0)
    if found is not None:
        return p.mae(*found, True, "pruned from the anchor's sentence", "sentence")
    sent_act, sent_acts = p.evaluate([(s0, e0)])[0]
    why = (f"the anchor's sentence alone (tokens {s0}..{e0 - 1}) keeps activation "
           f"{sent_act:.4g} < {p.threshold:.4g} = (1 - max_drop) x original")
    if fallback == "none":
        return p.mae(s0, e0, sent_act, sent_acts.tolist(), False,
                     why + "; pass fallback='sentences' or 'text' to prune from a larger "
                     "context", "sentence")
    if fallback == "text":
        (bs, be), context = (0, n), "text"
    else:
        (bs, be), context = p.sentence_block(ranges, k), "sentences"
    found = p.prune_tokens(bs, be)
    if found is None:  # cannot happen for the full text up to float noise; report honestly
        act, acts = p.evaluate([(bs, be)])[0]
        return p.mae(bs, be, act, acts.tolist(), False,
                     why + "; the larger context fails too when re-run", context)
    return p.mae(*found, True,
                 why + f"; pruned from {'the full text' if context == 'text' else 'sentences'} "
                 f"{bs}..{be - 1} instead", context)


def _find_anchor(model, spec: UnitSpec, reader: UnitReader, doc: Doc, md: float,
                 window: int) -> _Pruning:
    """Step 1: the unit on the full text (windows of ``n_ctx`` when it is too long); the
    window with the highest activation stands in for the text, its best token is the anchor."""
    pre = doc.prefix
    notes = []
    wins = _doc_windows(model, doc)
    acts_w, _ = reader.run([pre + doc.ids[s:e] for s, e in wins])
    best_w = int(np.argmax([float(a[len(pre):].max()) for a in acts_w]))
    if len(wins) > 1:
        s, e = wins[best_w]
        notes.append(f"the text has {len(doc.ids)} tokens, more than the context; the anchor's "
                     f"window of tokens {s}..{e - 1} stands in for it")
        doc = _slice_doc(doc, s, e)
    acts = acts_w[best_w][len(pre):]
    return _Pruning(spec=spec, reader=reader, tok=getattr(model, "tokenizer", None), doc=doc,
                    acts=acts, anchor=int(torch.argmax(acts)), notes=tuple(notes),
                    max_drop=md, window=window,
                    causal=getattr(model.cfg, "attention_dir", "causal") == "causal")


@dataclass(frozen=True)
class _Pruning:
    """One text being pruned for one unit: the text (the anchor's window), the unit's
    activations on it, the anchor, and the reader that runs candidate slices ``ids[s:e]``."""

    spec: UnitSpec
    reader: UnitReader
    tok: object
    doc: Doc
    acts: Tensor  # the unit at every token of doc (no BOS)
    anchor: int
    notes: tuple
    max_drop: float
    window: int
    causal: bool

    @property
    def ids(self) -> list:
        return self.doc.ids

    @property
    def prefix(self) -> list:
        return self.doc.prefix

    @property
    def activation(self) -> float:
        """The anchor's activation in the text (the original activation)."""
        return float(self.acts[self.anchor])

    @property
    def threshold(self) -> float:
        """A candidate passes when its anchor activation is at least this."""
        return (1.0 - self.max_drop) * self.activation

    def evaluate(self, cands: list) -> list:
        """``(anchor activation, activations [e - s])`` of every candidate ``(s, e)``, batched."""
        pre, a = self.prefix, self.anchor
        outs, _ = self.reader.run([pre + self.ids[s:e] for s, e in cands])
        return [(float(o[len(pre) + a - s]), o[len(pre):])
                for (s, _e), o in zip(cands, outs, strict=True)]

    def prune_tokens(self, s0: int, e0: int) -> tuple | None:
        """End- then start-truncation inside [s0, e0): ``(s, e, activation, activations)`` of
        the shortest passing slice, None if [s0, e0) itself fails."""
        a, thr = self.anchor, self.threshold
        lo_keep, hi_keep = max(0, a - self.window), min(len(self.ids), a + 1 + self.window)
        e_lo = max(min(hi_keep, e0), a + 1)
        s_hi = min(max(lo_keep, s0), a)
        starts = list(range(s0, s_hi + 1))
        if self.causal:
            # In a causal model the anchor's activation cannot depend on tokens after it, so
            # every end-truncation [s0, e) (e > anchor) has the anchor activation of [s0, e0):
            # the shortest passing end is e_lo exactly when [s0, e0) passes.  One batched pass
            # over the start-truncations of [s0, e_lo) then decides both phases (its first
            # candidate is [s0, e_lo), whose anchor activation is that of [s0, e0)).
            e_best = e_lo
            res2 = self.evaluate([(s, e_best) for s in starts])
            if res2[0][0] < thr:
                return None
        else:
            ends = list(range(e_lo, e0 + 1))
            res = self.evaluate([(s0, e) for e in ends])
            if res[-1][0] < thr:
                return None
            e_best = next(e for e, (v, _) in zip(ends, res, strict=True) if v >= thr)
            res2 = self.evaluate([(s, e_best) for s in starts])
        j = max(i for i, (v, _) in enumerate(res2) if v >= thr)
        return starts[j], e_best, res2[j][0], res2[j][1].tolist()

    def sentence_block(self, ranges: list, k: int) -> tuple[int, int]:
        """The ``fallback="sentences"`` context: whole sentences around sentence ``k``, the
        shortest end-truncation that passes, then the shortest start-truncation of it."""
        thr, n = self.threshold, len(self.ids)
        ends = [ranges[j][1] for j in range(k, len(ranges))]
        res = self.evaluate([(0, e) for e in ends])
        be = next((e for e, (v, _) in zip(ends, res, strict=False) if v >= thr), n)
        starts = [ranges[j][0] for j in range(0, k + 1)]
        res2 = self.evaluate([(s, be) for s in starts])
        ok = [i for i, (v, _) in enumerate(res2) if v >= thr]
        return (starts[max(ok)] if ok else 0), be

    def mae(self, s: int, e: int, act: float, acts: list, passed: bool, reason: str,
            context: str) -> MAE:
        """The result for the slice ``[s, e)`` of the text."""
        ids, a = self.ids, self.anchor
        strs = token_strs(self.tok, ids)
        return MAE(
            unit=self.spec.label, text=decode(self.tok, ids[s:e]), token_ids=list(ids[s:e]),
            tokens=strs[s:e], anchor=a - s, activation=float(act),
            original_activation=self.activation, passed=bool(passed),
            reason="; ".join([*self.notes, reason]), original_text=self.doc.text,
            original_token_ids=list(ids), original_tokens=strs, original_anchor=a, start=s,
            end=e, activations=[float(v) for v in acts], original_activations=self.acts.tolist(),
            context=context, max_drop=self.max_drop, window=self.window, bos=bool(self.prefix),
            n_forward=self.reader.n_forward, n_candidates=self.reader.n_sequences,
        )


# ---- max-activating examples ----------------------------------------------------------------
class _TopPerText:
    """A streaming probe: per unit, the ``k`` texts with the highest activation (the best
    token of each text).  Exact and mergeable (a ``TopK`` over per-text maxima)."""

    def __init__(self, target, k: int, indices=None) -> None:
        from neuroprobe.core.probes import TopK

        self.top = TopK(target, k, indices)
        self.hooks = self.top.hooks

    def update(self, acts: dict, meta) -> None:
        x = self.top.activations(acts)
        pi = meta.prompt_index.cpu()
        rows = []
        for p in torch.unique(pi).tolist():
            r = torch.nonzero(pi == p).flatten()
            best = r[torch.argmax(x[r], dim=0)]  # [d] row of the max per unit
            rows.append(best)
        if not rows:
            return
        best = torch.stack(rows)  # [n_prompts_in_batch, d]
        vals = torch.gather(x, 0, best)
        col = lambda t: t.cpu().long()[best]  # noqa: E731
        tok = meta.token_ids if meta.token_ids is not None else torch.full_like(pi, -1)
        self.top.seen = note_batch(self.top.seen, meta, repr(self.top))
        self.top.absorb(vals, col(meta.prompt_index), col(meta.position),
                        col(meta.time_index), col(tok))

    def merge(self, other):
        out = _TopPerText(self.top.target, self.top.k, self.top.indices)
        out.top = self.top.merge(other.top)
        return out


def max_activating_examples(
    model,
    units,
    corpus="default",
    k: int = 20,
    *,
    context_tokens: int = 12,
    per_text: bool = True,
    batch_size: int = 16,
    max_texts: int | None = None,
    text_column: str = "text",
    progress: bool | None = None,
    client=None,
) -> MaxActivatingExamples:
    """The ``k`` most activating texts of one or several units over a corpus, in one pass.

    Parameters
    ----------
    model : TransformerBridge, or a model name / config dict / factory with ``client``
    units : unit or list of units
        Neurons ``(hook, index)``, one-row ``Directions`` or ``(Directions, k)``.
    corpus : iterable of str, datasets.Dataset, path, or "default"
        See :func:`neuroprobe.mae.corpus.iter_texts`; ``"default"`` is the shipped corpus.
    k : int
        Examples per unit.
    context_tokens : int
        Tokens shown before the anchor in the ``context`` column (and 4 after it).
    per_text : bool
        Keep at most one example (the best token) per text (default), else the top-k tokens
        wherever they are.
    batch_size : int
        Texts per forward pass.
    max_texts : int, optional
        Scan only the first ``max_texts`` texts.
    progress : bool, optional
        A progress bar (default: on in a terminal for long runs).
    client : dask.distributed.Client, DaskBackend or SerialBackend, optional
        Run the pass as shards on workers (:func:`neuroprobe.distributed.stream`): ``model``
        is then what each worker loads (a name, a config dict or a picklable factory) and
        the merged examples equal the serial run's (TopK merges are exact).

    Returns
    -------
    MaxActivatingExamples

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> ex = npb.max_activating_examples(model, [("blocks.0.mlp.hook_post", 1)],
    ...                                  [[1, 2, 3], [4, 5, 6, 7], [8, 9]], k=2)
    >>> len(ex.for_unit(("blocks.0.mlp.hook_post", 1)))
    2
    """
    from neuroprobe.core.capture import stream, tokenize_prompts
    from neuroprobe.distributed import local_model
    from neuroprobe.distributed import stream as stream_on
    from neuroprobe.mae.corpus import iter_texts

    spec = model
    if client is not None:  # the driver tokenizes and decodes; workers run the pass
        model = local_model(spec)

    k = check_positive_int(k, "k")
    context_tokens = check_int(context_tokens, "context_tokens", minimum=0)
    per_text = check_bool(per_text, "per_text")
    batch_size = check_positive_int(batch_size, "batch_size")
    if max_texts is not None:
        max_texts = check_int(max_texts, "max_texts", minimum=1)
    if progress is not None:
        progress = check_bool(progress, "progress")
    if _is_single_unit(units):
        units = [units]
    if isinstance(units, str) or not hasattr(units, "__iter__"):
        raise NeuroprobeError(
            f"units must be a unit (hook, index) or a list of units; got {units!r}. E.g. "
            "[('blocks.0.mlp.hook_post', 3)]."
        )
    units = list(units)
    if not units:
        raise NeuroprobeError(
            "units is empty; pass at least one unit, e.g. [('blocks.0.mlp.hook_post', 3)]."
        )
    specs = [resolve_unit(model, u) for u in units]
    labels = [sp.label for sp in specs]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise NeuroprobeError(f"units repeats {dup}; pass each unit once.")
    if isinstance(corpus, (list, tuple)) and corpus and not isinstance(corpus[0], (str, dict)):
        d_vocab = getattr(model.cfg, "d_vocab", None)
        texts = [check_index_list(t, f"corpus[{i}]", unique=False, what="token id",
                                  size=None if d_vocab is None else int(d_vocab))
                 for i, t in enumerate(corpus)]  # token-id sequences
    else:
        texts = list(iter_texts(corpus, text_column))
        if texts and getattr(model, "tokenizer", None) is None:
            raise NeuroprobeError(
                "corpus holds strings but this model has no tokenizer (a native model?); pass "
                "token-id sequences instead, e.g. [[1, 5, 9], [2, 7]]."
            )
    if not texts:
        raise NeuroprobeError(
            "corpus has no non-empty text; pass at least one text (a list of strings, "
            "token-id sequences, a .txt/.jsonl path or 'default')."
        )
    if max_texts is not None:
        texts = texts[:max_texts]
    # one probe per hook (neurons) or per direction unit
    probes, where = [], []
    by_hook: dict = {}
    for j, sp in enumerate(specs):
        if sp.index is not None:
            by_hook.setdefault(sp.hook, []).append((j, sp.index))
        else:
            from neuroprobe.core.units import Directions

            d = sp.direction if sp.direction is not None else Directions(
                sp.hook, sp.vector[None], name="unit")
            probes.append(_TopPerText(d, k) if per_text else _topk(d, k))
            where.append([(j, 0)])
    for hook, lst in by_hook.items():
        idx = [i for _, i in lst]
        probes.append(_TopPerText(hook, k, idx) if per_text else _topk(hook, k, idx))
        where.append([(j, c) for c, (j, _) in enumerate(lst)])
    if client is None:
        stream(model, texts, probes, batch_size=batch_size, include_bos=False, truncate=True,
               progress=progress)
    else:
        probes = stream_on(spec, texts, probes, client=client, batch_size=batch_size,
                           include_bos=False, truncate=True)
    toks = tokenize_prompts(model, texts, truncate=True)
    tok = getattr(model, "tokenizer", None)
    rows = []
    for p, wl in zip(probes, where, strict=False):
        top = p.top if per_text else p
        for j, c in wl:
            vals = top.values[:, c]
            for r in range(vals.shape[0]):
                ti, pos = int(top.prompt_index[r, c]), int(top.position[r, c])
                ids = toks[ti].tolist()
                lo = max(0, pos - context_tokens)
                bos_skip = 1 if (tok is not None and ids and lo == 0 and
                                 ids[0] == getattr(tok, "bos_token_id", None)) else 0
                ctx = (decode(tok, ids[lo + bos_skip:pos]) + "[[" + decode(tok, [ids[pos]])
                       + "]]" + decode(tok, ids[pos + 1: pos + 5]))
                rows.append({
                    "unit": specs[j].label, "rank": r, "activation": float(vals[r]),
                    "text_index": ti, "position": pos,
                    "token": decode(tok, [ids[pos]]), "token_id": ids[pos], "context": ctx,
                    "text": texts[ti] if isinstance(texts[ti], str) else list(texts[ti]),
                })
    _warn_dead_units(rows, specs, len(texts))
    df = pd.DataFrame(rows, columns=["unit", "rank", "activation", "text_index", "position",
                                     "token", "token_id", "context", "text"])
    order = {sp.label: i for i, sp in enumerate(specs)}
    df = df.sort_values(["unit", "rank"], key=lambda s: s.map(order) if s.name == "unit" else s,
                        kind="stable").reset_index(drop=True)
    return MaxActivatingExamples([sp.label for sp in specs], df, len(texts),
                                 int(sum(t.numel() for t in toks)))


def _warn_dead_units(rows: list, specs: list, n_texts: int) -> None:
    """Warn when a unit's best activation over the corpus is <= 0 (a dead unit: its "top"
    examples are ties at its floor, not texts it prefers) or not finite."""
    best: dict = {}
    for r in rows:
        a = r["activation"]
        best[r["unit"]] = max(best.get(r["unit"], -np.inf), a) if np.isfinite(a) else np.nan
    nan = [sp.label for sp in specs if sp.label in best and not np.isfinite(best[sp.label])]
    dead = [sp.label for sp in specs if sp.label in best and np.isfinite(best[sp.label])
            and best[sp.label] <= 0]
    if nan:
        warn_degenerate(
            f"max_activating_examples: {len(nan)} unit(s) have NaN or inf activations on this "
            f"corpus (e.g. NaN weights), first: {nan[:5]}; their ranking is not meaningful.",
            stacklevel=4)
    if dead:
        warn_degenerate(
            f"max_activating_examples: {len(dead)} unit(s) never exceed 0 on the {n_texts} "
            f"text(s) (dead units), first: {dead[:5]}; their 'top' examples are ties at the "
            "unit's floor, not texts it prefers. Use a larger corpus or other units.",
            stacklevel=4)


def _is_single_unit(u) -> bool:
    from neuroprobe.core.units import Directions

    if isinstance(u, Directions):
        return True
    return (isinstance(u, tuple) and len(u) == 2 and isinstance(u[0], (str, Directions))
            and isinstance(u[1], (int, np.integer)))


def _topk(target, k, indices=None):
    from neuroprobe.core.probes import TopK

    return TopK(target, k, indices)


# ---- diagnostics ---------------------------------------------------------------------------
def check_mae_tokens(model, mae: MAE) -> None:
    """An MAE's token ids must be in ``model``'s vocabulary (an MAE of another model is
    refused, not run on the wrong tokens)."""
    d_vocab = getattr(model.cfg, "d_vocab", None)
    try:
        check_index_list(mae.token_ids, "mae.token_ids", unique=False, what="token id",
                         size=None if d_vocab is None else int(d_vocab))
    except NeuroprobeError as e:
        raise NeuroprobeError(
            f"{e} Is the MAE from another model? Prune it again with this model."
        ) from None

def _mae_or_text(model, unit, x, prepend_bos):
    """(spec, ids, prefix, anchor) from an MAE or a text."""
    spec = resolve_unit(model, unit)
    if isinstance(x, MAE):
        if x.unit != spec.label:
            raise NeuroprobeError(
                f"the MAE is for unit {x.unit!r} but unit={spec.label!r}; pass the same unit."
            )
        pre = bos_prefix(model, x.bos, False) if x.bos else []
        check_mae_tokens(model, x)
        return spec, list(x.token_ids), pre, x.anchor, None
    doc = as_doc(model, x, prepend_bos)
    return spec, doc.ids, doc.prefix, None, doc


def _warn_not_firing(fn: str, spec, acts: Tensor, act: float) -> None:
    """Warn when the anchor's activation is NaN/inf or the unit never exceeds 0 on the text:
    drops measured from such an anchor say nothing about what drives the unit."""
    if not bool(torch.isfinite(acts).all()):
        warn_degenerate(f"{fn}: unit {spec.label} has NaN or inf activations on this text "
                        "(e.g. NaN weights); the result is not meaningful.", stacklevel=4)
    elif not float(acts.max()) > 0:
        warn_degenerate(
            f"{fn}: unit {spec.label} never exceeds 0 on this text (max activation "
            f"{float(acts.max()):.4g}, anchor {act:.4g}); it does not fire here, so the "
            "result describes a dead anchor. Pick a text on which the unit fires.",
            stacklevel=4)


def token_importance(
    model, unit, mae, *, method: Literal["mask", "mean", "resample"] = "mask",
    n_samples: int = 8, seed: int = 0, prepend_bos: bool | None = None,
    batch_size: int = 64,
) -> TokenImportance:
    """Importance of every token for the anchor's activation, in one batched pass.

    Parameters
    ----------
    mae : MAE or str or token ids
        An MAE (its anchor is used) or a text (its highest-activation token is the anchor).
    method : {"mask", "mean", "resample"}
        ``"mask"``: delete the token; ``"mean"``: replace its input embedding by the mean
        embedding of the vocabulary; ``"resample"``: replace it by ``n_samples`` random
        tokens (seeded) and average.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> imp = npb.token_importance(model, ("blocks.0.mlp.hook_post", 1), [5, 9, 2, 7])
    >>> len(imp.importance)
    4
    """
    if not isinstance(method, str) or method not in ("mask", "mean", "resample"):
        raise NeuroprobeError(f"method must be 'mask', 'mean' or 'resample'; got {method!r}.")
    n_samples = check_positive_int(n_samples, "n_samples")
    seed = check_int(seed, "seed")
    batch_size = check_positive_int(batch_size, "batch_size")
    spec, ids, pre, anchor, _ = _mae_or_text(model, unit, mae, prepend_bos)
    reader = UnitReader(model, spec, batch_size=batch_size)
    base, _ = reader.run([pre + ids])
    base = base[0][len(pre):]
    if anchor is None:
        anchor = int(torch.argmax(base))
    act = float(base[anchor])
    _warn_not_firing("token_importance", spec, base, act)
    n = len(ids)
    ablated: list = []
    if method == "mask":
        seqs, keep = [], []
        for i in range(n):
            if i == anchor:
                continue
            seqs.append(pre + ids[:i] + ids[i + 1:])
            keep.append(i)
        outs, _ = reader.run(seqs)
        vals = dict.fromkeys(range(n), float("nan"))
        for i, o in zip(keep, outs, strict=False):
            vals[i] = float(o[len(pre) + anchor - (1 if i < anchor else 0)])
        ablated = [vals[i] for i in range(n)]
    elif method == "resample":
        g = torch.Generator().manual_seed(seed)
        d_vocab = int(model.cfg.d_vocab)
        seqs = []
        for i in range(n):
            for r in torch.randint(0, d_vocab, (n_samples,), generator=g).tolist():
                s = list(ids)
                s[i] = int(r)
                seqs.append(pre + s)
        outs, _ = reader.run(seqs)
        v = np.array([float(o[len(pre) + anchor]) for o in outs]).reshape(n, n_samples)
        ablated = v.mean(1).tolist()
    else:
        ablated = _mean_embedding_ablation(model, reader, pre, ids, anchor)
    imp = [act - v for v in ablated]
    return TokenImportance(spec.label, token_strs(getattr(model, "tokenizer", None), ids),
                           list(ids), anchor, act, ablated, imp, method, reader.n_forward)


def _mean_embedding_ablation(model, reader: UnitReader, pre: list, ids: list,
                             anchor: int) -> list:
    """Row ``i`` of the batch has the embedding of token ``i`` replaced by the mean one."""
    from neuroprobe.core.engine import hooked, resolve_hooks

    W_E = getattr(model, "W_E", None)
    if W_E is None:
        raise NeuroprobeError("method='mean' needs the model's embedding matrix W_E.")
    emb_hook = resolve_hooks(model, ["hook_embed"], argname="embedding hook")[0].canonical
    mean = W_E.detach().float().mean(0)
    n, P = len(ids), len(pre)
    per = max(1, min(reader.batch_size, reader.max_tokens // (P + n)))
    state: dict = {}

    def fn(x: Tensor, hook) -> Tensor:
        x = x.clone()
        rows = torch.arange(x.shape[0], device=x.device)
        cols = torch.as_tensor(state["pos"], device=x.device)  # equal lengths: no padding
        x[rows, cols] = mean.to(device=x.device, dtype=x.dtype)
        return x

    out: list = []
    for s in range(0, n, per):
        idx = list(range(s, min(n, s + per)))
        state["pos"] = [P + i for i in idx]
        with hooked(model, [(emb_hook, fn)]):  # stays on for the reader's passes
            acts, _ = reader.run([pre + ids for _ in idx])
        out += [float(a[P + anchor]) for a in acts]
    return out


def activation_trajectory(
    model, unit, mae, *, prepend_bos: bool | None = None, batch_size: int = 64
) -> Trajectory:
    """The anchor's activation as tokens are removed one by one from the start and from the
    end (never the anchor), all in batched passes.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> tr = npb.activation_trajectory(model, ("blocks.0.mlp.hook_post", 1), [5, 9, 2, 7])
    >>> len(tr.from_start) + len(tr.from_end) == 4 + 1
    True
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    spec, ids, pre, anchor, _ = _mae_or_text(model, unit, mae, prepend_bos)
    reader = UnitReader(model, spec, batch_size=batch_size)
    if anchor is None:
        base, _ = reader.run([pre + ids])
        base = base[0][len(pre):]
        anchor = int(torch.argmax(base))
    else:  # an MAE: its own activations, no extra pass
        base = torch.as_tensor(mae.activations, dtype=torch.float32)
    _warn_not_firing("activation_trajectory", spec, base, float(base[anchor]))
    n = len(ids)
    cands = [(j, n) for j in range(anchor + 1)] + [(0, n - j) for j in range(1, n - anchor)]
    outs, _ = reader.run([pre + ids[s:e] for s, e in cands])
    vals = [float(o[len(pre) + anchor - s]) for (s, e), o in zip(cands, outs, strict=False)]
    return Trajectory(spec.label, token_strs(getattr(model, "tokenizer", None), ids), anchor,
                      vals[: anchor + 1], [vals[0]] + vals[anchor + 1:], reader.n_forward)


