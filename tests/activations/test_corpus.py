"""Corpora: text, JSONL, folders, the default WordNet corpus, windows, and bad inputs."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from neurolabel.activations.corpus import Corpus, iter_windows, load_corpus
from neurolabel.core.assets import smollm2_dir
from neurolabel.core.errors import CorpusError


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(smollm2_dir())


def test_text_file_one_text_per_line(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("first line\n\n  second line  \n")
    c = load_corpus(str(p))
    assert c.name == "a.txt"
    assert list(c) == ["first line", "second line"]
    assert list(c) == ["first line", "second line"]  # re-iterable


def test_jsonl_with_configurable_field(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text("\n".join(json.dumps({"body": f"text {i}", "id": i}) for i in range(3)) + "\n")
    assert list(load_corpus(str(p), text_field="body")) == ["text 0", "text 1", "text 2"]
    with pytest.raises(CorpusError, match=r"b\.jsonl: line 1: no 'text' field"):
        list(load_corpus(str(p)))


def test_folder_of_files_sorted(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.txt").write_text("zeta\n")
    (tmp_path / "a.txt").write_text("alpha\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "beta"}) + "\n")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    assert list(load_corpus(str(tmp_path))) == ["alpha", "beta", "zeta"]


@pytest.mark.parametrize("content", [b"", b"\n\n   \n"])
def test_empty_file_is_an_error(tmp_path, content):
    p = tmp_path / "empty.txt"
    p.write_bytes(content)
    with pytest.raises(CorpusError, match="empty.txt.*empty"):
        load_corpus(str(p))


def test_binary_file_is_an_error(tmp_path):
    p = tmp_path / "blob.txt"
    p.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CorpusError, match="blob.txt: not a text file"):
        load_corpus(str(p))
    q = tmp_path / "latin.txt"
    q.write_bytes("caf\xe9 ol\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="latin.txt: not a UTF-8 text file"):
        load_corpus(str(q))


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(CorpusError, match="nope.txt.*does not exist"):
        load_corpus(str(tmp_path / "nope.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty.*holds no"):
        load_corpus(str(tmp_path / "empty"))


def test_windows_are_packed_fixed_length(tok):
    texts = [f"sentence number {i} about dogs and cats" for i in range(50)]
    wins = list(iter_windows(tok, texts, window_tokens=16))
    assert [w.window_id for w in wins] == list(range(len(wins)))
    assert all(len(w.token_ids) == 16 and len(w.tokens) == 16 for w in wins)
    # the packed stream: texts without special tokens, joined by the newline token
    stream: list[int] = []
    for t in texts:
        if stream:
            stream.append(tok("\n", add_special_tokens=False)["input_ids"][0])
        stream.extend(tok(t, add_special_tokens=False)["input_ids"])
    assert len(wins) == len(stream) // 16
    assert [i for w in wins for i in w.token_ids] == stream[: 16 * len(wins)]
    assert "".join(wins[0].tokens).startswith("sentence number 0 about dogs")
    assert len(list(iter_windows(tok, texts, window_tokens=16, max_windows=3))) == 3


def test_short_corpus_gives_one_partial_window(tok):
    wins = list(iter_windows(tok, ["just a few words"], window_tokens=64))
    assert len(wins) == 1 and 0 < len(wins[0].token_ids) < 64


def test_no_tokens_is_an_error(tok):
    with pytest.raises(CorpusError, match="empty"):
        list(iter_windows(tok, Corpus.from_texts([], name="nothing"), window_tokens=8))


def test_interleave_balances_characters():
    from neurolabel.activations.corpus import interleave

    # the source furthest behind in characters gives the next text; ties go to the earlier source
    assert interleave(["aaaa", "aa"], ["b", "b", "b"], []) == ["aaaa", "b", "b", "b", "aa"]
    assert interleave(["x"], ["yy", "y"]) == ["x", "yy", "y"]
    assert interleave() == [] and interleave([], []) == []


def test_python_docs_are_prose_paragraphs():
    from neurolabel.activations.corpus import python_docs_passages

    docs = python_docs_passages()
    assert docs == python_docs_passages()  # a fixed order
    assert sum(len(t) for t in docs) > 100_000
    assert any(t.startswith('The "if" statement is used for conditional execution') for t in docs)
    assert not any("if_stmt ::=" in t for t in docs)  # grammar and code blocks left out
    assert not any(set(t) <= set("*=-^~") for t in docs)  # headings' underlines too
    assert all(len(t.split()) >= 4 and "\n" not in t for t in docs)


@pytest.mark.slow
def test_default_corpus_mixes_running_text_wordnet_and_modern_prose():
    from neurolabel.activations.corpus import python_docs_passages, shakespeare_passages

    c = load_corpus("default")
    assert c.name.startswith("wordnet-3.0+shakespeare+python-") and c.name.endswith("-docs")
    plays, docs = set(shakespeare_passages()), set(python_docs_passages())
    head = [t for t, _ in zip(c, range(3000))]
    chars_all = sum(len(t) for t in head)
    for source in (plays, docs):  # about a third of any prefix is each source (while the docs last)
        assert 0.30 <= sum(len(t) for t in head if t in source) / chars_all <= 0.36
    assert not any("ELECTRONIC VERSION" in t or "Project Gutenberg" in t for t in plays)  # notices removed
    assert any("To be, or not to be" in t for t in plays)
    assert len(set(load_corpus("shakespeare"))) == len(plays)
    assert len(set(load_corpus("python-docs"))) == len(docs)


@pytest.mark.slow
def test_wordnet_corpus_is_deterministic():
    c = load_corpus("wordnet")
    assert c.name == "wordnet-3.0"
    first = []
    for i, t in enumerate(c):
        first.append(t)
        if i >= 2000:
            break
    assert first == [t for t, _ in zip(load_corpus("wordnet"), range(2001))]
    assert all(t.strip() for t in first)
    from neurolabel.ontology.wordnet import load_wordnet

    wn = load_wordnet()
    dog = wn.synset("dog.n.01")
    everything = set(load_corpus("wordnet"))
    assert dog.definition() in everything
    assert dog.examples()[0] in everything
    assert len(everything) > 150_000
