"""Token annotation: subword joining, lemmatisation, phrases, function words, cache."""

from __future__ import annotations

import pytest

from neurolabel.ontology.annotate import Annotator
from neurolabel.ontology.build import default_ontology

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ann() -> Annotator:
    return Annotator(default_ontology())


def names(ann, tokens):
    onto = ann.ontology
    return [sorted(onto.iri(c).rsplit("#", 1)[1] for c in s) for s in ann.annotate(tokens, ancestors=False)]


def test_joins_leading_space_subwords_and_lemmatises(ann):
    toks = ["The", " eleph", "ants", " and", " two", " women", " visited", " the", " churches", "."]
    got = names(ann, toks)
    assert got[1] == got[2] == ["elephant.n.01"]
    assert got[5] == ["woman.n.01"]  # irregular plural via noun.exc
    assert got[8] == ["church.n.01"]  # -ches rule
    assert got[0] == got[3] == got[4] == got[7] == got[9] == []  # function words / punctuation
    assert got[6] == []  # a verb form


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
    assert len(more.direct_classes([" bank"])[0]) == 3
    assert len(ann.direct_classes([" bank"])[0]) == 1


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
    assert ann.mentions(toks) == ["", "", "elephants", "elephants", "", "New York", "New York", ""]
