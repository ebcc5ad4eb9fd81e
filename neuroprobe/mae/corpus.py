"""Text corpora for max-activating examples: the default offline corpus and user corpora.

The default corpus (``neuroprobe/data/corpus_default.jsonl``) is 89 paragraphs (about 5,200
words, 32 kB) of plain English prose written for this project and shipped under the
project's licence: encyclopedia-style paragraphs on science, history, geography, animals,
food, sport and technology, plus a letter, a weather forecast, a short story scene, advice
and a chess game, so that units with very different tastes (dates, numbers, names, verbs,
punctuation, quotes) find examples.  Every record is ``{"id", "text"}``.  It ships with the
package, so everything runs offline; it is small, so pass a real corpus -- a list of strings,
a ``datasets.Dataset``, or a local ``.txt``/``.jsonl`` file -- for real work.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import check_bool, check_int, read_text_file

__all__ = ["load_default_corpus", "iter_texts", "DEFAULT_CORPUS_PATH"]

#: where the default corpus lives inside the package
DEFAULT_CORPUS_PATH = Path(__file__).resolve().parents[1] / "data" / "corpus_default.jsonl"


def load_default_corpus(n: int | None = None, *, with_meta: bool = False) -> list:
    """The default offline corpus: a list of texts (89 paragraphs of English prose).

    Parameters
    ----------
    n : int, optional
        Return only the first ``n`` texts (all by default).
    with_meta : bool
        Return the raw records (dicts with ``id`` and ``text``) instead of the texts.

    Returns
    -------
    list[str] (or list[dict] with ``with_meta=True``)

    Examples
    --------
    >>> from neuroprobe.mae.corpus import load_default_corpus
    >>> texts = load_default_corpus(3)
    >>> len(texts), all(isinstance(t, str) and t for t in texts)
    (3, True)
    """
    if n is not None:
        n = check_int(n, "n", minimum=1)
    with_meta = check_bool(with_meta, "with_meta")
    if not DEFAULT_CORPUS_PATH.exists():
        raise NeuroprobeError(
            f"the default corpus file {DEFAULT_CORPUS_PATH} is missing; reinstall neuroprobe "
            "or pass your own corpus (a list of strings or a .txt/.jsonl file)."
        )
    recs = []
    with open(DEFAULT_CORPUS_PATH, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                if r.get("text", "").strip():
                    recs.append(r)
    if n is not None:
        recs = recs[:n]
    return recs if with_meta else [r["text"] for r in recs]


def iter_texts(corpus, text_column: str = "text") -> Iterator[str]:
    """Iterate over the texts of a corpus given in any supported form.

    Parameters
    ----------
    corpus : iterable of str, datasets.Dataset, str or Path
        A list/iterable of strings; a ``datasets.Dataset`` (its ``text_column``); a local
        ``.jsonl`` file (field ``text_column`` of each line); a local text file (one text
        per paragraph, paragraphs separated by blank lines); or ``"default"`` for
        :func:`load_default_corpus`.
    text_column : str
        Column / JSON field holding the text.

    Examples
    --------
    >>> from neuroprobe.mae.corpus import iter_texts
    >>> list(iter_texts(["a b", "", "c"]))
    ['a b', 'c']
    """
    if not isinstance(text_column, str):
        raise NeuroprobeError(
            f"text_column must be a column / field name (str); got {text_column!r}."
        )
    if isinstance(corpus, str) and corpus == "default":
        yield from load_default_corpus()
        return
    if isinstance(corpus, (str, Path)):
        p = Path(corpus)
        if not p.exists():
            raise NeuroprobeError(
                f"corpus={str(corpus)[:80]!r} is a string but not an existing file; pass a "
                "list of texts (wrap a single text: [text]), a datasets.Dataset, a .txt/.jsonl "
                "path, or 'default'."
            )
        if p.is_dir():
            raise NeuroprobeError(
                f"corpus={str(corpus)!r} is a directory; pass a .txt/.jsonl file, or a list "
                "of texts (e.g. [p.read_text() for p in folder.glob('*.txt')])."
            )
        yield from _read_file(p, text_column)
        return
    if hasattr(corpus, "column_names") and hasattr(corpus, "__getitem__"):
        if text_column not in corpus.column_names:
            raise NeuroprobeError(
                f"the dataset has no column {text_column!r}; columns are "
                f"{corpus.column_names}. Pass text_column=..."
            )
        for t in corpus[text_column]:
            if isinstance(t, str) and t.strip():
                yield t
        return
    if not isinstance(corpus, Iterable):
        raise NeuroprobeError(
            f"corpus must be an iterable of strings, a datasets.Dataset or a file path; got "
            f"{type(corpus).__name__}."
        )
    for i, t in enumerate(corpus):
        if isinstance(t, dict):
            t = t.get(text_column)
        if not isinstance(t, str):
            raise NeuroprobeError(
                f"corpus item {i} is {type(t).__name__}, not a string; pass texts."
            )
        if t.strip():
            yield t


def _read_file(p: Path, text_column: str) -> Iterator[str]:
    if p.suffix in (".jsonl", ".json"):
        lines = read_text_file(p, "corpus", what="a .jsonl corpus").splitlines()
        for k, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise NeuroprobeError(
                    f"{p} line {k + 1} is not valid JSON ({e.msg}); a .jsonl corpus needs "
                    "one JSON object per line."
                ) from None
            t = r.get(text_column) if isinstance(r, dict) else r
            if not isinstance(t, str):
                raise NeuroprobeError(
                    f"{p} line {k + 1} has no string field {text_column!r}; pass "
                    "text_column=... naming the field that holds the text."
                )
            if t.strip():
                yield t
        return
    text = read_text_file(p, "corpus", what="a text corpus")
    for para in text.split("\n\n"):
        if para.strip():
            yield para.strip()
