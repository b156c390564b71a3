"""Concept induction on planted concepts, with noise, and against a real OWL reasoner (HermiT)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from bench.planted import DEFAULT_CLASSES, planted_records
from neurolabel.core.errors import ExplanationError
from neurolabel.core.registry import EXPLAINERS
from neurolabel.core.types import ActivationRecord, NeuronId, NeuronRecord
from neurolabel.explainers.concept_induction import ConceptInductionExplainer
from neurolabel.ontology.abox import write_abox
from neurolabel.ontology.build import default_ontology
from neurolabel.ontology.expression import ClassExpression
from neurolabel.ontology.induction import coverage_vector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def explainer() -> ConceptInductionExplainer:
    return ConceptInductionExplainer.from_defaults()


@pytest.fixture(scope="module")
def clean():
    return planted_records(DEFAULT_CLASSES)


def _recovered(onto, explanation, name) -> bool:
    target = onto.find(name)
    iris = explanation.structured["iris"]
    if len(iris) != 1:
        return False
    got = onto.find(iris[0])
    return got == target or got in onto.parents(target).tolist() or got in onto.children(target).tolist()


def test_registered_and_constructor_only_stores():
    assert EXPLAINERS["concept_induction"] is ConceptInductionExplainer
    e = ConceptInductionExplainer(fraction=0.3)
    assert e.annotator is None and e.fraction == 0.3


def test_recovers_at_least_9_of_10_planted_classes(explainer, clean):
    onto = default_ontology()
    hits = [_recovered(onto, explainer.explain(r)[0], n) for n, r in zip(DEFAULT_CLASSES, clean)]
    assert sum(hits) >= 9, list(zip(DEFAULT_CLASSES, hits))


def test_ten_percent_noise_degrades_gracefully(explainer, clean):
    onto = default_ontology()
    noisy = planted_records(DEFAULT_CLASSES, noise=0.1, seed=1)
    hits, f1_clean, f1_noisy = 0, [], []
    for name, c, n in zip(DEFAULT_CLASSES, clean, noisy):
        ec, en = explainer.explain(c)[0], explainer.explain(n)[0]
        hits += _recovered(onto, en, name)
        f1_clean.append(ec.structured["f1"])
        f1_noisy.append(en.structured["f1"])
    assert hits >= 7  # most concepts survive 10% random firing
    assert sum(f1_noisy) < sum(f1_clean)  # and the reported quality drops with the noise


def test_explanation_fields(explainer, clean):
    onto = default_ontology()
    exps = explainer.explain(clean[0])  # animal
    assert [e.rank for e in exps] == list(range(len(exps))) and 1 <= len(exps) <= 3
    best = exps[0]
    s = best.structured
    assert s["manchester"] == f"<{onto.iri(onto.find('animal.n.01'))}>"
    assert s["iris"] == [onto.iri(onto.find("animal.n.01"))]
    assert s["precision"] == s["recall"] == s["f1"] == 1.0
    assert best.text.startswith("mentions of a kind of animal (")
    assert best.explainer == "concept_induction" and best.params["fraction"] == 0.3
    assert best.neuron == clean[0].neuron and best.model == clean[0].model


def test_only_explain_split_windows_are_used(explainer, clean):
    rec = clean[0]
    poisoned = tuple(
        ActivationRecord(w.tokens, tuple(10.0 if t.strip() == "the" else 0.0 for t in w.tokens), w.window_id, w.split, w.kind)
        if w.split == "score" else w
        for w in rec.top
    )
    from dataclasses import replace

    assert explainer.explain(replace(rec, top=poisoned))[0].structured["iris"] == explainer.explain(rec)[0].structured["iris"]


def test_never_active_neuron_raises(explainer):
    w = ActivationRecord((" the", " dog"), (0.0, 0.0), 4, "explain", "top")
    with pytest.raises(ExplanationError, match="no positive activation"):
        explainer.explain(NeuronRecord("m", NeuronId(0, 0), top=(w,)))


def test_no_annotated_positive_raises(explainer):
    w = ActivationRecord((" the", " of", " dog"), (5.0, 5.0, 0.0), 4, "explain", "top")
    with pytest.raises(ExplanationError, match="mentions a class"):
        explainer.explain(NeuronRecord("m", NeuronId(0, 0), top=(w,)))


def _owl(world, onto, e: ClassExpression):
    import owlready2

    if e.op == "class":
        return world[onto.iri(e.cls)]
    parts = [_owl(world, onto, a) for a in e.args]
    return owlready2.And(parts) if e.op == "and" else owlready2.Or(parts)


def test_hermit_retrieves_exactly_the_bitset_coverage(explainer, tmp_path: Path):
    """A small ABox from real examples (planted vehicle and animal neurons, 10% noise so the
    search also returns disjunctions), HermiT through owlready2, and the bitset coverage."""
    import owlready2

    onto = default_ontology()
    recs = planted_records(("vehicle.n.01", "animal.n.01"), noise=0.1, seed=3)
    exprs: list[ClassExpression] = []
    examples: list[tuple[int, ...]] = []
    for r in recs:
        hyps, pos, _ = explainer.hypotheses(r)
        _, neg, _ = explainer.examples(r)
        exprs += [h.expression for h in hyps]
        examples += [d for d in pos if d] + [d for d in neg if d][:60]
    exprs.append(ClassExpression.join("and", [ClassExpression.atom(onto.find("animal.n.01")),
                                              ClassExpression.atom(onto.find("organism.n.01"))]))
    assert any(e.op != "class" for e in exprs)
    path = tmp_path / "abox.owl"
    iris = write_abox(path, onto, examples)
    world = owlready2.World()
    kb = world.get_ontology(path.as_uri()).load()
    queries = []
    with kb:
        for k, e in enumerate(exprs):
            q = types.new_class(f"Query{k}", (owlready2.Thing,))
            q.equivalent_to = [_owl(world, onto, e)]
            queries.append(q)
    owlready2.sync_reasoner_hermit(world, infer_property_values=False, debug=0)
    for e, q in zip(exprs, queries):
        by_reasoner = {i.iri for i in q.instances()}
        by_bitsets = {iri for iri, hit in zip(iris, coverage_vector(onto, e, examples)) if hit}
        assert by_reasoner == by_bitsets, e.manchester_labels(onto)
        assert by_bitsets  # non-trivial
