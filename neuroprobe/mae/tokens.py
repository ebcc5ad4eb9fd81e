"""Texts as token ids for the MAE methods: BOS handling, decoding, and tokens to sentences.

Shared by :mod:`neuroprobe.mae.prune` (pruning needs the anchor's sentence in token ids) and
:mod:`neuroprobe.mae.substitute` (local search decodes spans and re-tokenizes candidates).
A text becomes a :class:`Doc`: its token ids without BOS, the character span of every token
(from the tokenizer's offsets when they reproduce the ids, so sentences found on the text map
back to token ids without re-tokenizing) and the BOS prefix to run it with.  Native models
without a tokenizer work on token ids, which decode to their numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import check_bool, check_index_list
from neuroprobe.mae.sentences import split_sentences

__all__ = ["Doc", "as_doc", "bos_prefix", "decode", "token_strs", "sentence_of_tokens",
           "sentence_ranges"]


@dataclass
class Doc:
    """A text as token ids (no BOS), with character spans and the BOS prefix to use."""

    text: str
    ids: list  # token ids, no BOS
    spans: list | None  # (start, end) char span per token, None if unknown
    prefix: list  # [bos] or []


def bos_prefix(model, prepend_bos: bool | None, is_str: bool) -> list:
    """``[bos_id]`` or ``[]``: the prefix every candidate of a text runs with.

    ``prepend_bos=None`` follows ``model.to_tokens`` (a BOS before strings when the model's
    ``default_prepend_bos`` says so, none before token ids, ``is_str`` tells which).
    """
    if prepend_bos is not None:
        prepend_bos = check_bool(prepend_bos, "prepend_bos")
    tok = getattr(model, "tokenizer", None)
    default = bool(getattr(model.cfg, "default_prepend_bos", True))
    pb = (default and is_str) if prepend_bos is None else bool(prepend_bos)
    if not pb:
        return []
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    if bos is None:
        if prepend_bos:
            raise NeuroprobeError(
                "prepend_bos=True but the model has no tokenizer with a BOS token; pass "
                "prepend_bos=False or include the BOS id in the token ids yourself."
            )
        return []
    return [int(bos)]


def decode(tok, ids: Sequence[int]) -> str:
    """The text of ``ids`` exactly as tokenized (no clean-up); numbers without a tokenizer."""
    if tok is None:
        return " ".join(str(int(i)) for i in ids)
    return tok.decode(list(ids), clean_up_tokenization_spaces=False)


def token_strs(tok, ids: Sequence[int]) -> list:
    """The string of every token of ``ids`` (see :func:`decode`)."""
    if tok is None:
        return [str(int(i)) for i in ids]
    return [tok.decode([int(i)], clean_up_tokenization_spaces=False) for i in ids]


def _char_spans(tok, text: str, ids: list) -> list | None:
    """Character span of every token: from the tokenizer's offsets when they reproduce
    ``ids``; otherwise from cumulative decoding."""
    if tok is None:
        return None
    try:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc["input_ids"]) == list(ids):
            return [tuple(int(v) for v in o) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        pass
    spans, prev = [], 0
    for i in range(len(ids)):
        cur = len(decode(tok, ids[: i + 1]))
        spans.append((prev, max(prev, cur)))
        prev = max(prev, cur)
    return spans


def as_doc(model, text, prepend_bos: bool | None) -> Doc:
    """A text (string, tokenized as ``model.to_tokens`` does) or token ids (no BOS) as a
    :class:`Doc`, refusing empty texts and ids outside the vocabulary."""
    tok = getattr(model, "tokenizer", None)
    if isinstance(text, str):
        if not text.strip():
            raise NeuroprobeError(
                "text is empty (or only whitespace); pass a text with at least one token."
            )
        if tok is None:
            raise NeuroprobeError(
                "text is a string but this model has no tokenizer (a native model?); pass "
                "the text as token ids, e.g. [5, 17, 3]."
            )
        prefix = bos_prefix(model, prepend_bos, True)
        full = model.to_tokens(text, prepend_bos=bool(prefix), truncate=False)[0].tolist()
        ids = full[len(prefix):] if prefix and full[:1] == prefix else full
        if not ids:
            raise NeuroprobeError("text has no tokens besides BOS; pass a longer text.")
        return Doc(text, ids, _char_spans(tok, text, ids), prefix)
    if not hasattr(text, "__iter__") or isinstance(text, (bytes, dict)):
        raise NeuroprobeError(
            f"text must be a string or a sequence of token ids; got {type(text).__name__}."
        )
    d_vocab = getattr(model.cfg, "d_vocab", None)
    ids = check_index_list(text, "text", size=None if d_vocab is None else int(d_vocab),
                           unique=False, what="token id")
    prefix = bos_prefix(model, prepend_bos, False)
    dec = decode(tok, ids)
    return Doc(dec, ids, _char_spans(tok, dec, ids) if tok is not None else None, prefix)


def sentence_of_tokens(doc: Doc) -> list:
    """Sentence number of every token (tokens are assigned by their first non-space char)."""
    n = len(doc.ids)
    if doc.spans is None:
        return [0] * n
    sents = split_sentences(doc.text)
    if len(sents) <= 1:
        return [0] * n
    starts = np.array([s for s, _ in sents])
    out, prev = [], 0
    for s, e in doc.spans:
        seg = doc.text[s:e]
        off = len(seg) - len(seg.lstrip())
        c = s + off if e > s and off < len(seg) else None
        k = prev if c is None else int(np.searchsorted(starts, c, side="right") - 1)
        k = max(k, prev)  # monotone: byte pieces never jump back
        out.append(k)
        prev = k
    return out


def sentence_ranges(sent_of: list) -> list:
    """Token ranges ``[(start, end)]`` of each sentence that has tokens."""
    out: list = []
    for i, k in enumerate(sent_of):
        if out and sent_of[i - 1] == k:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out
