"""bench/planted.py: synthetic units that fire exactly on words under a WordNet class."""

from __future__ import annotations

import pytest

from bench.planted import planted_records
from neurolabel.core.errors import OntologyError
from neurolabel.ontology.annotate import Annotator
from neurolabel.ontology.build import default_ontology

pytestmark = pytest.mark.slow


def test_fires_exactly_on_words_under_the_class():
    onto = default_ontology()
    ann = Annotator(onto, parts_of_speech="n")  # planted units read words as nouns
    vehicle = onto.find("vehicle.n.01")
    (rec,) = planted_records(("vehicle.n.01",), n_top=5, n_random=5)
    assert rec.neuron.index == 0 and rec.model == "planted"
    assert len(rec.windows("top", "explain")) == 5 and len(rec.windows("top", "score")) == 5
    assert len(rec.windows("random", "explain")) == 5 and len(rec.windows("random", "score")) == 5
    fired = set()
    for w in rec.top + rec.random:
        for a, classes, tok in zip(w.activations, ann.annotate(w.tokens), w.tokens):
            assert (a > 0) == (vehicle in classes)
            if a > 0:
                assert 5.0 <= a <= 10.0
                fired.add(tok.strip().lower())
    assert {"car", "boat"} & fired
    assert all(w.max_activation > 0 for w in rec.top)


def test_noise_adds_random_firing_and_is_seeded():
    clean = planted_records(("vehicle.n.01",))[0]
    noisy = planted_records(("vehicle.n.01",), noise=0.1, seed=5)[0]
    again = planted_records(("vehicle.n.01",), noise=0.1, seed=5)[0]
    assert noisy == again
    assert 0.08 < noisy.stats.frac_active - clean.stats.frac_active < 0.12


def test_unknown_class():
    with pytest.raises(OntologyError, match="no class named"):
        planted_records(("nonexistent.n.99",))
