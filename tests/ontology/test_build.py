"""The default WordNet ontology: size, IRIs, hierarchy, labels, caches."""

from __future__ import annotations

import time

import pytest

from neurolabel.ontology.build import WORDNET_BASE, build_default, default_ontology, owl_path
from neurolabel.ontology.model import Ontology

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onto() -> Ontology:
    return default_ontology()


def test_one_class_per_noun_synset(onto):
    assert onto.n_classes == 82115  # WordNet 3.0 noun synsets
    assert len(onto.roots) == 1 and onto.label(int(onto.roots[0])) == "entity"
    dog = onto.find("dog.n.01")
    assert onto.iri(dog) == WORDNET_BASE + "dog.n.01"
    assert onto.labels[dog][:2] == ("dog", "domestic dog")


def test_hypernyms_and_instance_hypernyms_are_superclasses(onto):
    dog = onto.find("dog.n.01")
    assert {onto.label(int(p)) for p in onto.parents(dog)} == {"canine", "domestic animal"}
    anc = {onto.label(int(a)) for a in onto.ancestors(dog)}
    assert {"animal", "organism", "entity"} <= anc and "dog" not in anc
    paris = onto.find("paris.n.01")  # an instance hypernym: national capital
    assert onto.find("national_capital.n.01") in onto.parents(paris).tolist()
    assert onto.find("dog.n.01") in onto.children(onto.find("canine.n.02")).tolist()


def test_lexicon_lists_most_frequent_sense_first(onto):
    assert onto.lexicon["dog"][0] == onto.find("dog.n.01")
    assert onto.lexicon["new york"][0] == onto.find("new_york.n.01")
    assert "the" in onto.blocked and "dog" not in onto.blocked


def test_cached_load_is_fast_and_identical(onto, tmp_path):
    path = tmp_path / "o.pkl"
    onto.save(path)
    t = time.perf_counter()
    again = Ontology.load(path)
    assert time.perf_counter() - t < 5.0
    assert again.iris == onto.iris and (again.parent_idx == onto.parent_idx).all()


def test_owl_quadstore_holds_the_classes():
    import owlready2

    world = owlready2.World(filename=str(owl_path()))
    try:
        dog = world[WORDNET_BASE + "dog.n.01"]
        assert dog is not None
        assert world[WORDNET_BASE + "canine.n.02"] in dog.is_a
        assert "dog" in [str(x) for x in dog.label]
    finally:
        world.close()


def test_build_default_reuses_cache():
    t = time.perf_counter()
    o = build_default()
    assert o.n_classes == 82115
    assert time.perf_counter() - t < 10.0
