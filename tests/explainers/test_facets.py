"""Facets: planted polysemantic units come back as one facet per concept; monosemantic ones as one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from neurolabel.core.errors import ConfigError, ExplanationError, ScoringError
from neurolabel.core.registry import EXPLAINERS, SIMULATORS
from neurolabel.core.types import ActivationRecord, Explanation, NeuronId, NeuronRecord
from neurolabel.explainers.facets import FacetsExplainer, find_events, kmeans_facets
from neurolabel.scoring.facet_simulator import FacetSimulator, score_facets
from neurolabel.scoring.lexical_simulator import LexicalSimulator
from neurolabel.scoring.validate import simulate_and_score


def test_registered_with_its_simulator():
    assert EXPLAINERS["facets"].default_simulator == "facets" and "facets" in SIMULATORS


def test_events_are_window_peaks_and_strong_tokens():
    ws = [ActivationRecord(tokens=("a", "b", "c"), activations=(0.0, 4.0, 3.0), window_id=1),
          ActivationRecord(tokens=("d", "e"), activations=(1.0, 0.5), window_id=2),
          ActivationRecord(tokens=("f",), activations=(0.0,), window_id=3)]
    ev = find_events(ws, fraction=0.5, max_events=10)
    assert [(e.window, e.position, e.peak) for e in ev] == [(0, 1, True), (1, 0, True), (0, 2, False)]
    assert find_events(ws[2:], 0.5, 10) == []


def test_kmeans_criterion_separates_two_blobs_and_keeps_one():
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0, 0]) + 0.05 * rng.standard_normal((20, 3))
    b = np.array([0, 1.0, 0]) + 0.05 * rng.standard_normal((12, 3))
    two = kmeans_facets(np.vstack([a, b]), max_facets=4, min_silhouette=0.5, min_share=0.1)
    assert two.k == 2 and two.labels[:20] == (0,) * 20 and two.labels[20:] == (1,) * 12
    one = kmeans_facets(a, max_facets=4, min_silhouette=0.5, min_share=0.1)
    assert one.k == 1 and set(one.labels) == {0} and one.silhouette is None
    assert set(one.silhouettes) <= {2, 3, 4}


def _label(text: str, weight: float = 1.0) -> dict:
    return {"label": text, "explainer": "pmi", "explainer_version": "1", "structured": {}, "simulator": "lexical",
            "weight": weight, "share": 0.5}


def _faceted(*facets: dict) -> Explanation:
    return Explanation(model="m", neuron=NeuronId(0, 0), explainer="facets", explainer_version="1",
                       text="; ".join(f["label"] for f in facets), structured={"facets": list(facets)})


def test_union_simulator_is_the_graded_max_of_facets():
    sim = FacetSimulator({"lexical": LexicalSimulator()})
    e = _faceted(_label("dog", 1.0), _label("gun", 0.5))
    got = sim.simulate(e, [" the", " dog", " gun", " dogs"]).expected_activations
    assert got == (0.0, 1.0, 0.5, 1.0)
    with pytest.raises(ScoringError, match="has no facets"):
        sim.simulate(replace(e, structured={}), ["a"])
    assert sim.applies(e) and not sim.applies(replace(e, structured={}))


def test_each_facet_is_scored_on_held_out_windows():
    def w(tokens, acts, wid, split="score", kind="top"):
        return ActivationRecord(tokens=tokens, activations=acts, window_id=wid, split=split, kind=kind)

    rec = NeuronRecord(model="m", neuron=NeuronId(0, 0),
                       top=(w((" dog", " ran"), (1.0, 0.0), 1), w((" gun", " shot"), (0.5, 0.0), 2)),
                       random=(w((" a", " cat"), (0.0, 0.0), 3, kind="random"),))
    e = _faceted(_label("dog", 1.0), _label("gun", 0.5))
    sim = FacetSimulator({"lexical": LexicalSimulator()})
    scored = score_facets(simulate_and_score(e, rec, simulator=sim), rec, simulator=sim)
    assert scored.score.score == pytest.approx(1.0)  # the union predicts 1, 0, .5, 0, 0, 0 exactly
    dog, gun = scored.structured["facets"]
    assert 0 < dog["score"] < 1 and 0 < gun["score"] < dog["score"]
    assert "score" not in e.structured["facets"][0]  # the input explanation is not mutated
    with pytest.raises(ScoringError, match="no score-split windows"):
        score_facets(e, replace(rec, top=(), random=()), simulator=sim)


def test_bad_representation_is_named():
    ex = FacetsExplainer({}, {"lexical": LexicalSimulator()}, representation="classes+vibes")
    rec = NeuronRecord(model="m", neuron=NeuronId(0, 0), top=tuple(
        ActivationRecord(tokens=(f" w{i}", " x"), activations=(1.0 + i, 0.0), window_id=i) for i in range(10)))
    with pytest.raises(ConfigError, match=r"unknown block\(s\) \['vibes'\]"):
        ex.explain(rec)
    with pytest.raises(ExplanationError, match="no positive activation"):
        ex.explain(NeuronRecord(model="m", neuron=NeuronId(0, 0)))


@pytest.fixture(scope="module")
def planted():
    from bench.planted import planted_records

    return planted_records([("bird.n.01", "weapon.n.01"), "bird.n.01"], n_windows=1500, window_tokens=32,
                           n_top=20, n_random=20)


@pytest.fixture(scope="module")
def explainer():
    return FacetsExplainer.from_defaults()


@pytest.mark.slow
def test_planted_birds_and_weapons_come_back_as_two_facets(planted, explainer):
    from neurolabel.ontology.build import default_ontology

    onto = default_ontology()
    [e] = explainer.explain(planted[0])
    facets = e.structured["facets"]
    assert len(facets) == 2, e.text
    named = {tuple(f["structured"]["iris"]) for f in facets}
    assert named == {(onto.iri(onto.find("bird.n.01")),), (onto.iri(onto.find("weapon.n.01")),)}, e.text
    assert e.text.startswith("2 facets: ") and "bird" in e.text and "weapon" in e.text
    for f in facets:
        assert f["examples"] and f["score"] is None and 0 < f["weight"] <= 1 and f["share"] > 0.1
        word = "bird" if "bird" in f["label"] else "weapon"
        assert all(ex["token"].strip() for ex in f["examples"]), f
        assert word in f["label"]
    scored = score_facets(simulate_and_score(e, planted[0], simulator=FacetSimulator()), planted[0])
    assert scored.score.score > 0.9
    assert all(f["score"] > 0.3 for f in scored.structured["facets"])
    # score-split windows never reach the explainer
    explain_only = replace(planted[0], top=planted[0].windows("top", "explain"),
                           random=planted[0].windows("random", "explain"))
    assert explainer.explain(explain_only)[0].text == e.text


@pytest.mark.slow
def test_planted_one_concept_unit_is_one_facet(planted, explainer):
    from neurolabel.ontology.build import default_ontology

    onto = default_ontology()
    [e] = explainer.explain(planted[1])
    [facet] = e.structured["facets"]
    assert facet["structured"]["iris"] == [onto.iri(onto.find("bird.n.01"))], e.text
    assert not e.text.startswith("1 facets") and "bird" in e.text
