"""PMI search: hand-checked scores on tiny records, planted concepts on real sentences."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from neurolabel.core.errors import ExplanationError
from neurolabel.core.types import ActivationRecord, NeuronId, NeuronRecord
from neurolabel.explainers.pmi import PMIExplainer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _rec(windows: list[list[tuple[str, float]]], split: str = "explain") -> NeuronRecord:
    recs = tuple(
        ActivationRecord(tokens=tuple(t for t, _ in w), activations=tuple(a for _, a in w), window_id=i, split=split)
        for i, w in enumerate(windows)
    )
    return NeuronRecord(model="toy", neuron=NeuronId(0, 1), top=recs)


def test_word_level_scores_hand_checked():
    # "apple" fires 3 of 3 times; 8 tokens in all, 3 of them active
    rec = _rec(
        [
            [(" an", 0.0), (" apple", 4.0), (" fell", 0.0), (" down", 0.0)],
            [(" apple", 2.0), (" apple", 3.0), (" tree", 0.0), (" grows", 0.0)],
        ]
    )
    e = PMIExplainer(None, lam=1.0, alpha=0.5, threshold=0.5, min_support=2, phrases=False)
    [best] = e.explain(rec)[:1]
    assert best.text == "apple" and best.structured["kind"] == "word"
    # p(d|act) = (3+.5)/(3+1); p(d) = (3+.5)/(8+1)
    assert best.structured["score"] == pytest.approx(math.log(3.5 / 4) - math.log(3.5 / 9))
    assert best.structured["support"] == 3 and best.structured["count"] == 3
    assert best.explainer == "pmi" and best.rank == 0 and best.params["lam"] == 1.0


def test_min_support_filters_and_threshold():
    rec = _rec([[(" apple", 10.0), (" pear", 1.0), (" plum", 0.0)], [(" apple", 9.0), (" kiwi", 0.0)]])
    e = PMIExplainer(None, min_support=2, threshold=0.5, phrases=False)
    texts = [x.text for x in e.explain(rec)]
    assert texts == ["apple"]  # pear is below the threshold, nothing else has support 2
    e_low = PMIExplainer(None, min_support=1, threshold=0.05, phrases=False)
    assert set(x.text for x in e_low.explain(rec)) >= {"apple", "pear"}


def test_score_split_is_never_used():
    rec_score_only = _rec([[(" apple", 4.0), (" tree", 0.0)]], split="score")
    with pytest.raises(ExplanationError, match="0:1 of toy"):
        PMIExplainer(None).explain(rec_score_only)


def test_no_positive_activation_is_an_error():
    with pytest.raises(ExplanationError, match="no positive activation"):
        PMIExplainer(None).explain(_rec([[(" a", 0.0), (" b", -1.0)]]))


def test_phrases_are_candidates():
    rec = _rec([[(" ice", 5.0), (" cream", 5.0), (" melts", 0.0)], [(" ice", 5.0), (" cream", 4.0), (" is", 0.0), (" cold", 0.0)],
                [(" ice", 0.0), (" storms", 0.0), (" hit", 0.0)]])
    e = PMIExplainer(None, min_support=2, phrases=True)  # lam < 1: covering more activating tokens wins
    got = e.explain(rec)
    assert got[0].text == "ice cream" and got[0].structured["kind"] == "phrase"


@pytest.fixture(scope="module")
def planted():
    from bench.planted import DEFAULT_CLASSES, planted_records

    return DEFAULT_CLASSES, planted_records(DEFAULT_CLASSES)


@pytest.fixture(scope="module")
def pmi():
    return PMIExplainer.from_defaults()


@pytest.mark.slow
def test_planted_concepts_found(planted, pmi):
    from neurolabel.ontology.build import default_ontology

    onto = default_ontology()
    names, records = planted
    hits = []
    for name, rec in zip(names, records):
        top = pmi.explain(rec)[0]
        cls = onto.find(name)
        hits.append(top.structured.get("iris") == [onto.iri(cls)])
        assert top.structured["alternatives"] and top.structured["score"] > 0
    assert sum(hits) >= 8, list(zip(names, hits))


@pytest.mark.slow
def test_planted_noise_degrades_gracefully(pmi):
    from bench.planted import DEFAULT_CLASSES, planted_records
    from neurolabel.ontology.build import default_ontology

    onto = default_ontology()
    clean_scores, noisy_hits, noisy_scores = [], 0, []
    for noise in (0.0, 0.1):
        for name, rec in zip(DEFAULT_CLASSES, planted_records(DEFAULT_CLASSES, noise=noise)):
            top = pmi.explain(rec)[0]
            if noise == 0:
                clean_scores.append(top.structured["score"])
            else:
                noisy_scores.append(top.structured["score"])
                noisy_hits += top.structured.get("iris") == [onto.iri(onto.find(name))]
    # noise lowers the evidence but the explainer still answers for every neuron
    assert sum(noisy_scores) < sum(clean_scores)
    assert len(noisy_scores) == len(DEFAULT_CLASSES)
    assert noisy_hits >= 2
