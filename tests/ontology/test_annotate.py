"""Token annotation: subword joining, lemmatisation and part of speech, phrases, function words,
the lexical layer, cache."""

from __future__ import annotations

import re

import pytest

from neurolabel.ontology.annotate import Annotator
from neurolabel.ontology.build import default_ontology
from neurolabel.ontology.lexical import LEXICAL_BASE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ann() -> Annotator:
    return Annotator(default_ontology())


def names(ann, tokens):
    """WordNet synsets named by each token (lexical-layer classes left out)."""
    onto = ann.ontology
    return [sorted(n for n in (onto.iri(c).rsplit("#", 1)[1] for c in s) if re.search(r"\.[nvasr]\.\d\d$", n))
            for s in ann.annotate(tokens, ancestors=False)]


def lexical(ann, tokens):
    """Lexical-layer labels of each token."""
    onto = ann.ontology
    return [{onto.label(c) for c in s if onto.iri(c).startswith(LEXICAL_BASE)}
            for s in ann.annotate(tokens, ancestors=False)]


def test_joins_leading_space_subwords_and_lemmatises(ann):
    toks = ["The", " eleph", "ants", " and", " two", " women", " visited", " the", " churches", "."]
    got = names(ann, toks)
    assert got[1] == got[2] == ["elephant.n.01"]
    assert got[5] == ["woman.n.01"]  # irregular plural via noun.exc
    assert got[8] == ["church.n.01"]  # -ches rule
    assert got[0] == got[3] == got[4] == got[7] == got[9] == []  # function words / punctuation
    assert got[6] == ["visit.v.01"]  # a verb form, read as a verb


def test_part_of_speech_by_tag_counts(ann):
    got = names(ann, [" saw", " dogs", " ran", " better", " building", " quickly"])
    assert got == [["see.v.01"], ["dog.n.01"], ["run.v.01"], ["good.a.01"], ["construct.v.01"], ["quickly.r.01"]]
    assert ann.pos_lemma("saw") == ("v", "see") and ann.pos_lemma("dogs") == ("n", "dog")


def test_every_token_gets_lexical_classes(ann):
    toks = ["The", " eleph", "ants", " walk", "ed", " with", " a", " (", "big", ")", " dog", "'s", " 42", "\n"]
    lex = lexical(ann, toks)
    assert {"capitalised word", "article", '"the"'} <= lex[0]
    assert "word-initial piece" in lex[1] and "suffix -ed" in lex[4]
    assert {"preposition", '"with"', "whole word (one token)"} <= lex[5]
    assert "opening bracket" in lex[7] and "closing bracket" in lex[9] and "apostrophe" in lex[11]
    assert "number (digits)" in lex[12] and lex[13] == {"line break"}
    assert all(lex)


def test_joins_byte_level_G_tokens_the_same_way(ann):
    plain = ["The", " eleph", "ants", " ran", "."]
    bpe = ["The", "Ġeleph", "ants", "Ġran", "."]
    assert names(ann, plain) == names(ann, bpe)


def test_multiword_entries_and_special_tokens(ann):
    toks = ["<|im_start|>", "We", " ate", " ice", "-", "cream", " in", " New", " York", "."]
    got = names(ann, toks)
    assert got[0] == []
    assert got[3] == got[5] == ["ice_cream.n.01"]
    assert got[7] == got[8] == ["new_york.n.01"]


def test_ancestors_included_by_default(ann):
    onto = ann.ontology
    got = ann.annotate([" dogs"])
    assert onto.find("animal.n.01") in got[0] and onto.find("dog.n.01") in got[0]


def test_senses_parameter_keeps_more_senses(ann):
    more = Annotator(ann.ontology, senses=3)
    assert len(names(more, [" bank"])[0]) == 3
    assert len(names(ann, [" bank"])[0]) == 1


def test_window_cache_is_reused_and_persists(ann, tmp_path):
    toks = (" cats", " sleep")
    first = ann.direct_classes(toks)
    assert ann.direct_classes(list(toks)) is first
    path = tmp_path / "ann.pkl"
    ann.save_cache(path)
    fresh = Annotator(ann.ontology)
    assert fresh.load_cache(path) == ann.cache_size
    assert fresh.direct_classes(toks) == first


def test_mentions_give_the_matched_word_or_phrase(ann):
    toks = ["We", " saw", " eleph", "ants", " in", " New", " York", "."]
    assert ann.mentions(toks) == ["", "saw", "elephants", "elephants", "", "New York", "New York", ""]
