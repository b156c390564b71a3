"""The default ontology: WordNet's four hierarchies, the lexical layer, IRIs, labels, caches."""

from __future__ import annotations

import threading
import time

import pytest

from neurolabel.ontology import build as build_mod
from neurolabel.ontology.build import WORDNET_BASE, build_default, default_ontology, owl_path
from neurolabel.ontology.lexical import FOLLOWS_IRI, LEXICAL_BASE, form_iri
from neurolabel.ontology.model import Ontology

pytestmark = pytest.mark.slow

N_SYNSETS = 117659  # WordNet 3.0: 82,115 nouns, 13,767 verbs, 18,156 adjectives, 3,621 adverbs


@pytest.fixture(scope="module")
def onto() -> Ontology:
    return default_ontology()


def labels_up(onto, cls):
    return {onto.label(int(a)) for a in onto.ancestors(cls)}


def test_one_class_per_synset_and_one_root(onto):
    pos = onto.lexical.class_pos
    assert [int((pos == p).sum()) for p in range(4)] == [82115, 13767, 18156, 3621]
    assert onto.find("dog.n.01") < 82115  # nouns keep their first ids
    assert len(onto.roots) == 1 and onto.label(int(onto.roots[0])) == "lexical class"
    dog = onto.find("dog.n.01")
    assert onto.iri(dog) == WORDNET_BASE + "dog.n.01"
    assert onto.labels[dog][:2] == ("dog", "domestic dog")


def test_hypernyms_and_instance_hypernyms_are_superclasses(onto):
    dog = onto.find("dog.n.01")
    assert {onto.label(int(p)) for p in onto.parents(dog)} == {"canine", "domestic animal"}
    anc = labels_up(onto, dog)
    assert {"animal", "organism", "entity", "noun", "part of speech"} <= anc and "dog" not in anc
    paris = onto.find("paris.n.01")  # an instance hypernym: national capital
    assert onto.find("national_capital.n.01") in onto.parents(paris).tolist()
    assert onto.find("dog.n.01") in onto.children(onto.find("canine.n.02")).tolist()


def test_verbs_adjectives_adverbs_have_their_hierarchies(onto):
    run = onto.find("run.v.01")
    assert onto.find("travel_rapidly.v.01") in onto.parents(run).tolist()
    assert {"travel", "motion verb", "verb"} <= labels_up(onto, run)
    quick = onto.find("quick.s.01")  # a satellite under its head
    assert onto.parents(quick).tolist() == [onto.find("fast.a.01")]
    assert {"descriptive adjective", "adjective"} <= labels_up(onto, quick)
    assert "adverb" in labels_up(onto, onto.find("quickly.r.01"))


def test_lexical_layer_hierarchy(onto):
    prep = onto.find(LEXICAL_BASE + "Preposition")
    assert labels_up(onto, prep) == {"function word", "part of speech", "lexical class"}
    with_ = onto.find(form_iri("with"))
    assert onto.label(with_) == '"with"'
    assert {"preposition", "token form"} <= {onto.label(int(p)) for p in onto.parents(with_)}
    close = onto.find(form_iri(")"))
    assert "closing bracket" in {onto.label(int(p)) for p in onto.parents(close)}
    ing = onto.find(LEXICAL_BASE + "suffix-ing")
    assert labels_up(onto, ing) >= {"suffix piece", "word-continuation piece", "piece of a word"}
    assert len(onto.lexical.forms) > 4000


def test_lexicon_lists_the_most_frequent_part_of_speech_first(onto):
    assert onto.lexicon["dog"][0] == onto.find("dog.n.01")
    assert onto.lexicon["run"][0] == onto.find("run.v.01")  # tagged far more often as a verb
    assert onto.lexicon["new york"][0] == onto.find("new_york.n.01")
    assert "the" in onto.blocked and "with" in onto.blocked and "dog" not in onto.blocked


def test_cached_load_is_fast_and_identical(onto, tmp_path):
    path = tmp_path / "o.pkl"
    onto.save(path)
    t = time.perf_counter()
    again = Ontology.load(path)
    assert time.perf_counter() - t < 10.0
    assert again.iris == onto.iris and (again.parent_idx == onto.parent_idx).all()
    assert again.lexical.forms == onto.lexical.forms


def test_owl_quadstore_holds_the_classes_and_the_role():
    import owlready2

    world = owlready2.World(filename=str(owl_path()))
    try:
        dog = world[WORDNET_BASE + "dog.n.01"]
        assert dog is not None
        assert world[WORDNET_BASE + "canine.n.02"] in dog.is_a
        assert "dog" in [str(x) for x in dog.label]
        assert world[LEXICAL_BASE + "FunctionWord"] in world[LEXICAL_BASE + "Preposition"].is_a
        assert isinstance(world[FOLLOWS_IRI], owlready2.ObjectPropertyClass)
    finally:
        world.close()


def test_build_default_reuses_cache():
    t = time.perf_counter()
    o = build_default()
    assert o.n_classes == default_ontology().n_classes
    assert time.perf_counter() - t < 20.0


def test_concurrent_first_use_loads_once(monkeypatch):
    """Eight threads ask at once on a cold process state: one loads, all get the same object."""
    from neurolabel.ontology.annotate import Annotator

    monkeypatch.setattr(build_mod, "_LOADED", [])
    calls = []
    real = build_mod._load_or_build

    def counting():
        calls.append(threading.get_ident())
        return real()

    monkeypatch.setattr(build_mod, "_load_or_build", counting)
    barrier = threading.Barrier(8)
    got: list[object] = []
    errors: list[BaseException] = []

    def worker(i):
        try:
            barrier.wait(timeout=60)
            got.append(default_ontology() if i % 2 else Annotator.from_defaults().ontology)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(got) == 8
    assert len(calls) == 1
    assert all(o is got[0] for o in got)
