"""Private: a rule-based English sentence splitter that returns character spans.

Used by :mod:`neuroprobe.mae.prune` to find the anchor token's sentence.  It works on the text
itself (not on tokens) and returns ``(start, end)`` character spans that tile the text, so
sentences map back to token ids through the tokenizer's offsets without re-tokenizing.

Rules (the usual Punkt-style heuristics, without a trained model):

* a sentence ends after ``.``, ``!``, ``?`` or ``...`` (optionally followed by closing quotes
  or brackets) when whitespace and then an upper-case letter, a digit, an opening quote or
  bracket follows -- or the text ends;
* a period after a known abbreviation (``Dr.``, ``e.g.``, ``U.S.`` ...) or a single capital
  letter (an initial, ``J. Smith``) does not end a sentence;
* a blank line always ends a sentence, and so does a line break before a list item.
"""

from __future__ import annotations

import re

__all__ = ["split_sentences"]

_ABBREV = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e",
    "cf", "fig", "figs", "no", "nos", "vol", "p", "pp", "ch", "sec", "approx", "dept", "est",
    "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "u.s", "u.k", "u.n", "a.m", "p.m", "ph.d", "gen", "gov", "sen", "rep",
    "rev", "capt", "col", "lt", "sgt", "al",
}

# a candidate end: terminal punctuation, closing quotes/brackets, then whitespace
_END = re.compile(r"(\.\.\.|[.!?]+)([\"'\u201d\u2019)\]]*)(\s+)")
_NEXT_OK = re.compile(r"[A-Z0-9\"'\u201c\u2018(\[*\-\u2022#]")
_BLANK = re.compile(r"\n[ \t]*\n\s*|\n(?=[ \t]*(?:[-*\u2022]|\d+[.)])\s)")


def _word_before(text: str, i: int) -> str:
    j = i
    while j > 0 and not text[j - 1].isspace() and text[j - 1] not in "([\"'":
        j -= 1
    return text[j:i]


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``, tiling it.

    Trailing whitespace belongs to the sentence before it, so ``text[s:e].strip()`` is the
    sentence and the spans cover every character exactly once.

    Examples
    --------
    >>> t = "Dr. Smith paid $3.50 for tea. Was it good? Yes!"
    >>> [t[s:e].strip() for s, e in split_sentences(t)]
    ['Dr. Smith paid $3.50 for tea.', 'Was it good?', 'Yes!']
    """
    if not text:
        return []
    cuts: set[int] = set()
    for m in _BLANK.finditer(text):
        cuts.add(m.end())
    for m in _END.finditer(text):
        punct, cut = m.group(1), m.end()
        if cut >= len(text):
            continue
        if not _NEXT_OK.match(text[cut]):
            continue
        if punct == ".":
            word = _word_before(text, m.start()).lower().rstrip(".")
            if word in _ABBREV or (len(word) == 1 and word.isalpha()):
                continue
            # an abbreviation with inner periods (e.g. "U.S.") followed by a lowercase word
        cuts.add(cut)
    bounds = [0] + sorted(c for c in cuts if 0 < c < len(text)) + [len(text)]
    spans = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=False) if b > a]
    # merge spans that hold only whitespace into the previous one
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and not text[a:b].strip():
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
