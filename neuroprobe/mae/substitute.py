"""Local search around an MAE by substitution, with pluggable substituters.

:func:`local_search` replaces, at every position of an MAE, a span of 1-3 tokens by
candidates from a *substituter*, runs every valid variant in batched forward passes and
classifies it by the drop of the anchor's activation relative to the MAE: *positive*
(drop < ``positive_max_drop``, 40 % in the paper), *negative* (drop > ``negative_min_drop``,
70 %), *neutral* in between.  Stop words are skipped (as in the paper) unless asked for.
Candidates are deduplicated (by the resulting token sequence), identity swaps are dropped,
sub-word artifacts (``##``) are dropped, and every candidate must round-trip through the
model's tokenizer (``tokenize(decode(ids)) == ids``), so the table shows exactly what ran.

In a causal model a token after the anchor cannot change the anchor's activation, so spans
after the anchor are skipped by default (``include_after_anchor=True`` keeps them).

Substituters
------------
A substituter is any object with ``propose(requests) -> list[list[str | list[int]]]``: for
each :class:`SpanRequest` (the text left of the span, the span, the text right of it, the
MAE's token ids and the span's token range), a list of replacement strings (or token-id
lists), best first.  A plain function ``f(left, span, right, top_n) -> list[str]`` works too
(wrapped by :func:`as_substituter`).  Two come built in:

* :class:`LMHeadSubstituter` (default, offline): the model's own LM head.  Candidates are the
  most likely next tokens given the prefix (one forward pass over the MAE gives them for every
  position), re-ranked by the log-likelihood of the whole resulting sentence (one batched
  pass).
* :class:`MaskedLMSubstituter`: a HuggingFace ``AutoModelForMaskedLM`` (e.g. BERT, as in the
  paper): the span is replaced by one mask token and the top whole-word predictions are
  returned (``##`` pieces are never returned).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np
import pandas as pd
import torch

from neuroprobe.core.engine import forward
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import (
    check_bool,
    check_callable,
    check_fraction,
    check_index_list,
    check_positive_int,
)
from neuroprobe.mae.prune import MAE
from neuroprobe.mae.reader import UnitReader, UnitSpec, resolve_unit
from neuroprobe.mae.tokens import bos_prefix, decode

__all__ = [
    "SpanRequest",
    "Substituter",
    "LMHeadSubstituter",
    "MaskedLMSubstituter",
    "as_substituter",
    "LocalSearch",
    "local_search",
]

Candidate = Union[str, Sequence[int]]  # noqa: UP007


@dataclass(frozen=True)
class SpanRequest:
    """What a substituter is asked: replacements for ``token_ids[start:end]``.

    ``left + span + right`` is the MAE's text; ``span`` keeps its leading space, so a
    replacement for a word should usually start with a space too.
    """

    left: str
    span: str
    right: str
    token_ids: tuple
    start: int
    end: int
    top_n: int


@runtime_checkable
class Substituter(Protocol):
    """The substituter protocol: ``propose(requests) -> one candidate list per request``."""

    def propose(self, requests: Sequence[SpanRequest]) -> list: ...


class _FunctionSubstituter:
    def __init__(self, fn) -> None:
        self.fn = fn

    def propose(self, requests: Sequence[SpanRequest]) -> list:
        return [self.fn(r.left, r.span, r.right, r.top_n) for r in requests]

    def __repr__(self) -> str:
        return f"FunctionSubstituter({getattr(self.fn, '__name__', self.fn)!r})"


def as_substituter(obj) -> Substituter:
    """A substituter from an object with ``propose`` or a function
    ``f(left, span, right, top_n) -> list[str]``.

    Examples
    --------
    >>> from neuroprobe.mae.substitute import as_substituter, SpanRequest
    >>> sub = as_substituter(lambda left, span, right, n: [" dog", " cow"][:n])
    >>> sub.propose([SpanRequest("The", " cat", " sat", (1, 2, 3), 1, 2, 1)])
    [[' dog']]
    """
    if hasattr(obj, "propose") and callable(obj.propose):
        check_callable(obj.propose, "substituter.propose", 1, expected="propose(requests)")
        return obj
    if callable(obj):
        check_callable(obj, "substituter", 4,
                       expected="f(left, span, right, top_n) -> list[str]")
        return _FunctionSubstituter(obj)
    raise NeuroprobeError(
        f"substituter must have a propose(requests) method or be a function "
        f"f(left, span, right, top_n) -> list[str]; got {type(obj).__name__}."
    )


class LMHeadSubstituter:
    """Candidates from the model's own next-token distribution, re-ranked by the
    log-likelihood of the whole resulting sentence.

    Parameters
    ----------
    model : TransformerBridge
        The language model (the same one whose units are studied, or another one with the
        same tokenizer).
    pool : float
        ``ceil(pool * top_n)`` next-token candidates are drawn per span and re-ranked; the
        best ``top_n`` are returned (``pool=1`` skips the re-ranking pass).
    rerank : bool
        Re-rank by the whole sentence's log-likelihood (default) or keep next-token order.
    batch_size : int
        Sequences per forward pass.

    Attributes
    ----------
    prepend_bos : bool or None
        BOS handling of :meth:`propose` (None: the model's default).  :func:`local_search`
        uses the MAE's own BOS setting instead and never changes this object.
    n_forward : int
        Forward passes made by :meth:`propose` calls.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> sub = npb.LMHeadSubstituter(model)
    >>> req = npb.SpanRequest("", "", "", (4, 5, 6), 1, 2, 3)
    >>> [len(c) for c in sub.propose([req])]
    [3]
    """

    def __init__(self, model, *, pool: float = 1.5, rerank: bool = True,
                 batch_size: int = 64) -> None:
        if (isinstance(pool, bool) or not isinstance(pool, (int, float, np.integer, np.floating))
                or not np.isfinite(pool) or pool < 1):
            raise NeuroprobeError(f"pool must be a finite number >= 1; got {pool!r}.")
        from neuroprobe.core.engine import is_language_model

        if not is_language_model(model):
            raise NeuroprobeError(
                "LMHeadSubstituter(model) needs a language model with tokens (a "
                f"TransformerBridge from npb.load_model); got {type(model).__name__}."
            )
        self.model = model
        self.pool = float(pool)
        self.rerank = check_bool(rerank, "rerank")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.n_forward = 0
        self.prepend_bos: bool | None = None

    def propose(self, requests: Sequence[SpanRequest]) -> list:
        """Replacement strings (token-id lists without a tokenizer) per request, best first."""
        out, _, n_forward = self._propose(requests, self.prepend_bos, None)
        self.n_forward += n_forward
        return out

    def _propose(self, requests: Sequence[SpanRequest], prepend_bos: bool | None,
                 watch: UnitSpec | None) -> tuple[list, dict, int]:
        """:meth:`propose` without touching ``self``: ``(candidates, watched, n_forward)``.

        With ``watch`` (a unit of this model) the re-ranking pass also reads that unit on
        every re-ranked sentence; ``watched`` maps each sentence's token ids (with the BOS
        prefix) to those activations, so :func:`local_search` needs no second pass for them.
        """
        requests = _check_requests(requests, self.model)
        tok = getattr(self.model, "tokenizer", None)
        special = set(getattr(tok, "all_special_ids", []) or []) if tok is not None else set()
        pre = bos_prefix(self.model, prepend_bos, tok is not None)
        reader = UnitReader(self.model, watch, batch_size=self.batch_size)
        watched: dict = {}
        out: list = [[] for _ in requests]
        groups: dict = {}
        for j, r in enumerate(requests):
            groups.setdefault(tuple(r.token_ids), []).append(j)
        for ids, js in groups.items():
            ids = list(ids)
            logits = forward(self.model, torch.as_tensor([pre + ids]))[0].float()
            reader.n_forward += 1
            logp = torch.log_softmax(logits, -1)
            cands: list = []  # (request j, token id, next-token logp)
            for j in js:
                r = requests[j]
                pos = len(pre) + r.start - 1
                if pos < 0:
                    continue
                n_pool = int(np.ceil(self.pool * r.top_n)) if self.rerank else r.top_n
                order = torch.argsort(logp[pos], descending=True)
                got = 0
                for t in order.tolist():
                    if t in special or (r.end - r.start == 1 and t == ids[r.start]):
                        continue
                    if tok is not None:
                        s = decode(tok, [t])
                        if not s.strip() or "##" in s or "\ufffd" in s:
                            continue
                    cands.append((j, t, float(logp[pos, t])))
                    got += 1
                    if got >= n_pool:
                        break
            if self.rerank and cands:
                seqs = [pre + ids[:requests[j].start] + [t] + ids[requests[j].end:]
                        for j, t, _ in cands]
                acts, lps = reader.run(seqs, logprobs=True)
                score = [float(lp.sum()) for lp in lps]
                if watch is not None:
                    watched.update({tuple(q): a for q, a in zip(seqs, acts, strict=True)})
            else:
                score = [lp for _, _, lp in cands]
            per: dict = {}
            for (j, t, _), sc in zip(cands, score, strict=False):
                per.setdefault(j, []).append((sc, t))
            for j, lst in per.items():
                lst.sort(key=lambda x: -x[0])
                top = [t for _, t in lst[: requests[j].top_n]]
                out[j] = [decode(tok, [t]) for t in top] if tok is not None else [[t]
                                                                                   for t in top]
        return out, watched, reader.n_forward

    def __repr__(self) -> str:
        return f"LMHeadSubstituter(pool={self.pool}, rerank={self.rerank})"


def _check_requests(requests, model=None, *, token_ids: bool = True) -> list:
    """``requests`` as a list of :class:`SpanRequest`; with ``token_ids`` their spans must lie
    inside their token ids (integers in the model's vocabulary)."""
    if isinstance(requests, (str, SpanRequest)) or not hasattr(requests, "__iter__"):
        raise NeuroprobeError(
            f"requests must be a list of SpanRequest; got {type(requests).__name__}. Wrap a "
            "single request in a list: [request]."
        )
    requests = list(requests)
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    for i, r in enumerate(requests):
        if not isinstance(r, SpanRequest):
            raise NeuroprobeError(
                f"requests[{i}] must be a SpanRequest; got {type(r).__name__} {r!r}."
            )
        check_positive_int(r.top_n, f"requests[{i}].top_n")
        if not token_ids:
            continue
        ids = check_index_list(r.token_ids, f"requests[{i}].token_ids", unique=False,
                               what="token id", size=None if d_vocab is None else int(d_vocab))
        for nm in ("start", "end", "top_n"):
            v = getattr(r, nm)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise NeuroprobeError(f"requests[{i}].{nm} must be an int; got {v!r}.")
        if not 0 <= r.start < r.end <= len(ids):
            raise NeuroprobeError(
                f"requests[{i}] spans tokens [{r.start}, {r.end}) but must satisfy 0 <= start "
                f"< end <= len(token_ids) = {len(ids)}."
            )
    return requests


class MaskedLMSubstituter:
    """Whole-word candidates from a HuggingFace masked language model (BERT as in the paper).

    The span is replaced by a single mask token (in the masked LM's own tokenization of
    ``left + [MASK] + right``) and the top predictions that are whole words are returned with
    the span's leading whitespace; word pieces (``##...``) and special tokens are never
    returned.

    Parameters
    ----------
    model : str or transformers model
        A local path / hub name for ``AutoModelForMaskedLM`` (hub names need internet), or
        a loaded masked LM.
    tokenizer : transformers tokenizer, optional
        Needed when ``model`` is a loaded model.
    device : str, optional
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, device: str | None = None,
                 batch_size: int = 32) -> None:
        from neuroprobe.core.validation import resolve_device

        batch_size = check_positive_int(batch_size, "batch_size")
        if device is not None:
            device = str(resolve_device(device))
        if isinstance(model, str):
            try:
                from transformers import AutoModelForMaskedLM, AutoTokenizer

                tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
                model = AutoModelForMaskedLM.from_pretrained(model)
            except Exception as e:  # noqa: BLE001 - hub/network errors come in many classes
                raise NeuroprobeError(
                    f"MaskedLMSubstituter({model!r}) could not load the masked LM ({e}); pass a "
                    "local path, or a loaded model and tokenizer. Offline, use the default "
                    "LMHeadSubstituter."
                ) from e
        if tokenizer is None or getattr(tokenizer, "mask_token_id", None) is None:
            raise NeuroprobeError(
                "MaskedLMSubstituter needs the masked LM's tokenizer with a mask token; pass "
                "tokenizer=AutoTokenizer.from_pretrained(...)."
            )
        self.mlm = model.eval()
        self.tok = tokenizer
        self.device = device
        if device is not None:
            self.mlm.to(device)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.n_forward = 0

    def propose(self, requests: Sequence[SpanRequest]) -> list:
        requests = _check_requests(requests, token_ids=False)
        tok = self.tok
        special = set(tok.all_special_ids)
        out: list = []
        for b in range(0, len(requests), self.batch_size):
            chunk = requests[b: b + self.batch_size]
            texts = [r.left.rstrip() + (" " if r.span[:1].isspace() else "") + tok.mask_token
                     + r.right for r in chunk]
            enc = tok(texts, return_tensors="pt", padding=True, truncation=True)
            if self.device is not None:
                enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.no_grad():
                logits = self.mlm(**enc).logits.float()
            self.n_forward += 1
            for r, row, ids in zip(chunk, logits, enc["input_ids"], strict=False):
                where = torch.nonzero(ids == tok.mask_token_id).flatten()
                if where.numel() == 0:
                    out.append([])
                    continue
                order = torch.argsort(row[int(where[0])], descending=True)
                lead = r.span[: len(r.span) - len(r.span.lstrip())]
                got: list = []
                for t in order[: 50 * r.top_n].tolist():
                    if t in special:
                        continue
                    w = tok.convert_ids_to_tokens(t)
                    if w is None or w.startswith("##") or w.startswith("[") or not w.strip():
                        continue
                    w = tok.convert_tokens_to_string([w]).strip()
                    if not w or "##" in w:
                        continue
                    got.append(lead + w)
                    if len(got) >= r.top_n:
                        break
                out.append(got)
        return out

    def __repr__(self) -> str:
        return f"MaskedLMSubstituter({type(self.mlm).__name__})"


# ---- local search ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalSearch:
    """The local-search table around one MAE.

    Attributes
    ----------
    table : DataFrame
        One row per variant: ``kind`` (positive/negative/neutral), ``text``, ``activation``,
        ``drop`` (``1 - activation / mae_activation``), ``position`` (first replaced token),
        ``span`` (tokens replaced), ``replaced``, ``replacement``, ``anchor`` (anchor index
        in the variant's tokens), ``token_ids``.
    unit, mae_text, mae_tokens, mae_anchor, mae_activation, mae_activations :
        The MAE searched around.
    positive_max_drop, negative_min_drop : float
    n_spans, n_proposed, n_forward : int
        Spans asked about, candidates returned by the substituter, forward passes
        (activations and substituter together).
    note : str
        Anything worth knowing (e.g. no candidate survived the filters).
    """

    unit: str
    table: pd.DataFrame = field(repr=False)
    mae_text: str
    mae_tokens: list
    mae_anchor: int
    mae_activation: float
    mae_activations: list
    positive_max_drop: float
    negative_min_drop: float
    n_spans: int
    n_proposed: int
    n_forward: int
    note: str = ""

    def _count(self, kind: str) -> int:
        return int((self.table["kind"] == kind).sum()) if len(self.table) else 0

    @property
    def n_positive(self) -> int:
        return self._count("positive")

    @property
    def n_negative(self) -> int:
        return self._count("negative")

    @property
    def n_neutral(self) -> int:
        return self._count("neutral")

    @property
    def positives(self) -> pd.DataFrame:
        return self.table[self.table["kind"] == "positive"].reset_index(drop=True)

    @property
    def negatives(self) -> pd.DataFrame:
        return self.table[self.table["kind"] == "negative"].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key):
        return self.table[key]

    def to_dataframe(self) -> pd.DataFrame:
        return self.table.copy()

    def to_json(self, path: str | None = None) -> str:
        d = {k: getattr(self, k) for k in ("unit", "mae_text", "mae_tokens", "mae_anchor",
                                            "mae_activation", "positive_max_drop",
                                            "negative_min_drop", "n_spans", "n_proposed",
                                            "n_forward", "note")}
        d["rows"] = json.loads(self.table.to_json(orient="records"))
        s = json.dumps(d, indent=1)
        if path is not None:
            from neuroprobe.core.validation import check_writable_path

            path = check_writable_path(path, "path")
            with open(path, "w", encoding="utf-8") as f:
                f.write(s)
        return s

    def __repr__(self) -> str:
        return (f"LocalSearch(unit={self.unit!r}, mae={self.mae_text!r}, rows={len(self.table)}:"
                f" {self.n_positive} positive, {self.n_negative} negative, "
                f"{self.n_neutral} neutral)")

    def _repr_html_(self) -> str:
        from neuroprobe.viz.mae import search_html

        return search_html(self)


def _stop_words() -> frozenset:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def _is_stop_span(text: str, stop: frozenset) -> bool:
    words = [w.strip(".,;:!?\"'()[]").lower() for w in text.split()]
    words = [w for w in words if w]
    return bool(words) and all(w in stop for w in words)


_COLUMNS = ["kind", "text", "activation", "drop", "position", "span", "replaced",
            "replacement", "anchor", "token_ids"]


def local_search(
    model,
    unit,
    mae: MAE,
    substituter=None,
    top_n: int = 10,
    positive_max_drop: float = 0.4,
    negative_min_drop: float = 0.7,
    spans: Sequence[int] = (1, 2, 3),
    *,
    include_stop_words: bool = False,
    include_after_anchor: bool = False,
    batch_size: int = 64,
) -> LocalSearch:
    """Search the input space around an MAE by substituting words and short spans.

    Parameters
    ----------
    model : TransformerBridge
    unit : (str, int) or Directions or (Directions, int)
        The unit the MAE was made for.
    mae : MAE
        From :func:`neuroprobe.prune_to_mae`.
    substituter : Substituter or function, optional
        Default: :class:`LMHeadSubstituter` on ``model``.
    top_n : int
        Candidates per span.
    positive_max_drop, negative_min_drop : float in (0, 1)
        A variant is positive when its drop is below ``positive_max_drop``, negative when it
        is above ``negative_min_drop``, neutral in between.
    spans : sequence of int
        Span lengths in tokens (1, 2, 3 by default).
    include_stop_words : bool
        Also substitute spans made only of stop words (skipped in the paper).
    include_after_anchor : bool
        Also substitute tokens after the anchor (no effect in a causal model).

    Returns
    -------
    LocalSearch

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> unit = ("blocks.0.mlp.hook_post", 3)
    >>> mae = npb.prune_to_mae(model, unit, [5, 9, 2, 7, 11, 4], window=2)
    >>> found = npb.local_search(model, unit, mae, top_n=3, spans=(1,))
    >>> set(found["kind"]) <= {"positive", "negative", "neutral"}
    True
    """
    spec, top_n, pmax, nmin, spans = _check_search(model, unit, mae, top_n, positive_max_drop,
                                                   negative_min_drop, spans)
    include_stop_words = check_bool(include_stop_words, "include_stop_words")
    include_after_anchor = check_bool(include_after_anchor, "include_after_anchor")
    batch_size = check_positive_int(batch_size, "batch_size")
    tok = getattr(model, "tokenizer", None)
    sub = as_substituter(LMHeadSubstituter(model, batch_size=batch_size)
                         if substituter is None else substituter)
    ids = list(mae.token_ids)
    reqs = _span_requests(tok, ids, mae.anchor, spans, top_n, include_stop_words,
                          include_after_anchor)
    props, watched, n_forward_sub = _propose(sub, reqs, model, spec, mae.bos)
    n_proposed = sum(len(p or []) for p in props)
    variants = _variants(tok, ids, mae.anchor, reqs, props)
    reader = UnitReader(model, spec, batch_size=batch_size)
    pre = bos_prefix(model, True, True) if mae.bos else []
    acts = _variant_activations(reader, pre, variants, watched)
    note = ""
    if not reqs:
        note = "no span to substitute (all spans are stop words or after the anchor)"
    elif not variants:
        note = (f"the substituter proposed {n_proposed} candidates but none survived the "
                "filters (identity, '##' artifacts, tokenizer round trip, duplicates)")
    return LocalSearch(
        unit=spec.label, table=_table(tok, variants, acts, len(pre), mae.activation, pmax, nmin),
        mae_text=mae.text, mae_tokens=list(mae.tokens), mae_anchor=mae.anchor,
        mae_activation=float(mae.activation), mae_activations=list(mae.activations),
        positive_max_drop=pmax, negative_min_drop=nmin, n_spans=len(reqs),
        n_proposed=n_proposed, n_forward=reader.n_forward + n_forward_sub, note=note,
    )


# ---- the steps of local search --------------------------------------------------------------
def _check_search(model, unit, mae, top_n, positive_max_drop, negative_min_drop, spans):
    """The arguments checked: ``(unit spec, top_n, positive_max_drop, negative_min_drop,
    sorted span lengths)``."""
    if not isinstance(mae, MAE):
        raise NeuroprobeError(
            f"mae must be an MAE from npb.prune_to_mae; got {type(mae).__name__}."
        )
    top_n = check_positive_int(top_n, "top_n")
    pmax = check_fraction(positive_max_drop, "positive_max_drop")
    nmin = check_fraction(negative_min_drop, "negative_min_drop")
    if pmax > nmin:
        raise NeuroprobeError(
            f"positive_max_drop ({pmax}) must not exceed negative_min_drop ({nmin}); e.g. "
            "0.4 and 0.7 as in the paper."
        )
    if isinstance(spans, str) or not hasattr(spans, "__iter__"):
        raise NeuroprobeError(
            f"spans must be a sequence of span lengths in tokens, e.g. (1, 2, 3) or (1,); got "
            f"{spans!r}."
        )
    spans = sorted({check_positive_int(s, "spans entry") for s in spans})
    if not spans:
        raise NeuroprobeError("spans is empty; pass span lengths such as (1, 2, 3).")
    if spans[0] > len(mae.token_ids):
        raise NeuroprobeError(
            f"spans {tuple(spans)} are all longer than the MAE's {len(mae.token_ids)} "
            f"token(s); pass span lengths of at most {len(mae.token_ids)}."
        )
    spec = resolve_unit(model, unit)
    from neuroprobe.mae.prune import check_mae_tokens

    check_mae_tokens(model, mae)
    if mae.unit != spec.label:
        raise NeuroprobeError(
            f"the MAE is for unit {mae.unit!r} but unit={spec.label!r}; pass the same unit."
        )
    if not mae.activation > 0:
        raise NeuroprobeError(
            f"the MAE's activation is {mae.activation:.4g} <= 0, so activation drops are "
            "undefined; local search needs an MAE on which the unit fires."
        )
    return spec, top_n, pmax, nmin, spans


def _span_requests(tok, ids: list, anchor: int, spans: list, top_n: int,
                   include_stop_words: bool, include_after_anchor: bool) -> list:
    """Step 1: a :class:`SpanRequest` for every span of every length, except spans after the
    anchor and spans made only of stop words (unless asked for)."""
    stop = frozenset() if include_stop_words else _stop_words()
    n = len(ids)
    reqs: list = []
    for L in spans:
        for i in range(0, n - L + 1):
            e = i + L
            if e - 1 > anchor and not include_after_anchor:
                continue
            span_txt = decode(tok, ids[i:e])
            if tok is not None and not include_stop_words and _is_stop_span(span_txt, stop):
                continue
            reqs.append(SpanRequest(decode(tok, ids[:i]) if i else "", span_txt,
                                    decode(tok, ids[e:]) if e < n else "", tuple(ids), i, e,
                                    top_n))
    return reqs


def _propose(sub, reqs: list, model, spec: UnitSpec, bos: bool) -> tuple[list, dict, int]:
    """Step 2: the substituter's candidates, checked: ``(candidate lists, watched
    activations, forward passes)``.  The built-in :class:`LMHeadSubstituter` runs with the
    MAE's BOS setting and, on the same model, reads the unit during its re-ranking pass
    (``watched``), all without changing the substituter."""
    if not reqs:
        props, watched, n_forward = [], {}, 0
    elif isinstance(sub, LMHeadSubstituter):
        props, watched, n_forward = sub._propose(reqs, bos, spec if sub.model is model else None)
    else:
        n0 = getattr(sub, "n_forward", 0)
        props, watched = sub.propose(reqs), {}
        n_forward = getattr(sub, "n_forward", 0) - n0
    if props is None or len(props) != len(reqs):
        raise NeuroprobeError(
            f"the substituter returned {None if props is None else len(props)} candidate "
            f"lists for {len(reqs)} spans; propose(requests) must return one list per request."
        )
    props = [_check_candidates(p, j, model) for j, p in enumerate(props)]
    if reqs and sum(len(p or []) for p in props) == 0:
        raise NeuroprobeError(
            f"the substituter {sub!r} returned no candidates for any of the {len(reqs)} spans; "
            "check it (it must return replacement strings), or use the default "
            "LMHeadSubstituter(model)."
        )
    return props, watched, n_forward


def _check_candidates(cands, j: int, model) -> list:
    """One request's candidates: a list of strings (needs a tokenizer) or of token-id lists
    (integers in the vocabulary); a bare string or int is refused, not iterated."""
    if cands is None:
        return []
    if isinstance(cands, (str, bytes)) or not hasattr(cands, "__iter__"):
        raise NeuroprobeError(
            f"the substituter returned {cands!r} for request {j}; it must return a list of "
            "candidates per request (strings, or token-id lists), e.g. [' dog', ' cow']."
        )
    cands = list(cands)
    tok = getattr(model, "tokenizer", None)
    d_vocab = getattr(model.cfg, "d_vocab", None)
    for c in cands:
        if isinstance(c, str):
            if tok is None:
                raise NeuroprobeError(
                    f"the substituter returned the string {c!r} (request {j}), but this model "
                    "has no tokenizer (a native model?) to turn it into tokens; return "
                    "token-id lists such as [[17], [4, 9]] instead."
                )
        else:
            check_index_list(c, f"substituter candidate {c!r} (request {j})", unique=False,
                             what="token id", size=None if d_vocab is None else int(d_vocab))
    return cands


@dataclass(frozen=True)
class _Variant:
    """One substitution that survived the filters: ``request``'s span replaced by ``rid``."""

    request: SpanRequest
    rid: list  # the replacement's token ids
    ids: list  # the variant's token ids
    anchor: int  # the anchor's index in ids
    text: str


def _variants(tok, ids: list, anchor: int, reqs: list, props: list) -> list:
    """Step 3: candidates to variants: no artifacts, no identity swaps, a tokenizer round
    trip, no duplicates; at most ``top_n`` per span; the anchor's new index."""
    seen = {tuple(ids)}
    out: list = []
    for r, cands in zip(reqs, props, strict=False):
        kept = 0
        for c in cands or []:
            if kept >= r.top_n:
                break
            if isinstance(c, str):
                if tok is None or "##" in c or not c.strip() or c.strip() == r.span.strip():
                    continue
                rid = tok(c, add_special_tokens=False)["input_ids"]
            else:
                rid = [int(t) for t in c]
            if not rid or rid == ids[r.start:r.end]:
                continue
            new = ids[:r.start] + rid + ids[r.end:]
            txt = decode(tok, new)
            if tok is not None and tok(txt, add_special_tokens=False)["input_ids"] != new:
                continue  # does not round-trip through the tokenizer
            if tuple(new) in seen:
                continue
            seen.add(tuple(new))
            kept += 1
            if r.end - 1 < anchor:
                na = anchor + len(rid) - (r.end - r.start)
            elif r.start <= anchor:
                na = r.start + len(rid) - 1
            else:
                na = anchor
            out.append(_Variant(r, rid, new, na, txt))
    return out


def _variant_activations(reader: UnitReader, pre: list, variants: list, watched: dict) -> list:
    """Step 4: the unit on every variant, in one batched evaluation of those the
    substituter's re-ranking pass did not already read."""
    todo = [j for j, v in enumerate(variants) if tuple(pre + v.ids) not in watched]
    fresh, _ = reader.run([pre + variants[j].ids for j in todo])
    got = dict(zip(todo, fresh, strict=True))
    return [got[j] if j in got else watched[tuple(pre + v.ids)] for j, v in enumerate(variants)]


def _table(tok, variants: list, acts: list, n_pre: int, mae_activation: float, pmax: float,
           nmin: float) -> pd.DataFrame:
    """Step 5: one row per variant, classified by its drop against the MAE's activation."""
    rows = []
    for v, o in zip(variants, acts, strict=False):
        act = float(o[n_pre + v.anchor])
        drop = 1.0 - act / mae_activation
        kind = "positive" if drop < pmax else ("negative" if drop > nmin else "neutral")
        r = v.request
        rows.append({
            "kind": kind, "text": v.text, "activation": act, "drop": drop, "position": r.start,
            "span": r.end - r.start, "replaced": r.span,
            "replacement": decode(tok, v.rid) if tok is not None else " ".join(map(str, v.rid)),
            "anchor": v.anchor, "token_ids": v.ids,
        })
    return pd.DataFrame(rows, columns=_COLUMNS)
