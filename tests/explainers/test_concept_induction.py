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
    assert ConceptInductionExplainer.extra_simulators == ("symbolic_binary",)


def test_docstring_names_the_default_quality():
    import neurolabel.explainers.concept_induction as mod
    from neurolabel.ontology.induction import InductionConfig

    assert InductionConfig().quality == "mcc" and "Matthews correlation (MCC)" in mod.__doc__
    assert "F1 with a length penalty" not in mod.__doc__


def _window(tokens, acts, wid, split="explain", kind="top"):
    return ActivationRecord(tuple(tokens), tuple(float(a) for a in acts), wid, split, kind)


def test_learns_weighted_function_word_after_a_noun(explainer):
    """A unit that fires on "with" right after a noun (strongly) and on ")" (weakly): the first
    explanation is a weighted disjunction whose weights order the two, fitted on explain windows."""
    texts = [
        ([" a", " dog", " with", " a", " bone", ")"], [0, 0, 8, 0, 0, 3]),
        ([" the", " man", " with", " the", " hat", ")"], [0, 0, 9, 0, 0, 3]),
        ([" she", " came", " with", " us", " (", "today", ")"], [0, 0, 1, 0, 0, 0, 4]),
        ([" a", " cat", " with", " a", " tail", "."], [0, 0, 8, 0, 0, 0]),
        ([" the", " house", " with", " a", " roof", ")"], [0, 0, 10, 0, 0, 2]),
        ([" we", " went", " with", " them", " (", "then", ")"], [0, 0, 0, 0, 0, 0, 3]),
        ([" a", " car", " with", " wheels", ")"], [0, 0, 9, 0, 3]),
    ]
    top = tuple(_window(t, a, i) for i, (t, a) in enumerate(texts))
    exps = explainer.explain(NeuronRecord("m", NeuronId(0, 0), top=top))
    best = exps[0]
    st = best.structured
    assert len(st["weights"]) == len(ClassExpression.from_json(st["expression"], default_ontology()).parts())
    assert st["weights"] == sorted(st["weights"], reverse=True) and st["weights"][0] > 5 > st["weights"][-1]
    assert "follows" in st["manchester"] and "right after" in best.text
    assert st["recall"] > 0 and st["explain_correlation"] > 0.9


def test_graded_alternatives_are_offered_after_the_first(explainer):
    """Beside the first graded disjunction, the explainer offers the further graded searches of
    ALTERNATIVES (one without role restrictions), each once; GRADED's comes first."""
    from neurolabel.explainers.concept_induction import ALTERNATIVES, GRADED

    assert not ALTERNATIVES[0].roles and GRADED.roles
    texts = [
        ([" a", " dog", " with", " a", " bone", ")"], [0, 0, 8, 0, 0, 3]),
        ([" the", " man", " with", " the", " hat", ")"], [0, 0, 9, 0, 0, 3]),
        ([" she", " came", " with", " us", " (", "today", ")"], [0, 0, 1, 0, 0, 0, 4]),
        ([" a", " cat", " with", " a", " tail", "."], [0, 0, 8, 0, 0, 0]),
        ([" the", " house", " with", " a", " roof", ")"], [0, 0, 10, 0, 0, 2]),
        ([" we", " went", " with", " them", " (", "then", ")"], [0, 0, 0, 0, 0, 0, 3]),
        ([" a", " car", " with", " wheels", ")"], [0, 0, 9, 0, 3]),
    ]
    rec = NeuronRecord("m", NeuronId(0, 0), top=tuple(_window(t, a, i) for i, (t, a) in enumerate(texts)))
    exps = explainer.explain(rec)
    only_first = ConceptInductionExplainer(explainer.annotator, alternatives=()).explain(rec)
    assert exps[0].structured == only_first[0].structured and "follows" in exps[0].structured["manchester"]
    manchester = [e.structured["manchester"] for e in exps]
    assert len(set(manchester)) == len(manchester) and len(exps) > len(only_first)
    assert any("follows" not in m and len(e.structured["weights"]) > 1 for m, e in zip(manchester, exps))
    assert exps[0].params["alternatives"][0]["roles"] is False


def test_fast_setting_runs_the_graded_search_alone(explainer):
    """``class_search=False`` with ``alternatives=[]`` (:data:`FAST`, as ``neurolabel label --set``
    gives them through the plugin builder): the first graded disjunction alone, the same as the full
    explainer's first, stored under version ``6-fast``; without either, the class search's expressions
    follow. Alternatives given as JSON mappings are graded settings; a mapping naming no setting is a
    configuration error."""
    from neurolabel.core.errors import ConfigError
    from neurolabel.explainers.concept_induction import FAST
    from neurolabel.pipeline.plugins import build

    texts = [
        ([" a", " dog", " with", " a", " bone", ")"], [0, 0, 8, 0, 0, 3]),
        ([" the", " man", " with", " the", " hat", ")"], [0, 0, 9, 0, 0, 3]),
        ([" she", " came", " with", " us", " (", "today", ")"], [0, 0, 1, 0, 0, 0, 4]),
        ([" a", " cat", " with", " a", " tail", "."], [0, 0, 8, 0, 0, 0]),
        ([" the", " house", " with", " a", " roof", ")"], [0, 0, 10, 0, 0, 2]),
    ]
    rec = NeuronRecord("m", NeuronId(0, 0), top=tuple(_window(t, a, i) for i, (t, a) in enumerate(texts)))
    full = explainer.explain(rec)
    fast = build("explainer", {"kind": "concept_induction", **FAST}).explain(rec)
    assert len(fast) == 1 and fast[0].structured == full[0].structured and fast[0].text == full[0].text
    assert fast[0].params["class_search"] is False and fast[0].params["alternatives"] == []
    assert "class_search" not in full[0].params
    # stored under their own version: a run with the default searches does not count FAST's neurons done
    fast_explainer = build("explainer", {"kind": "concept_induction", **FAST})
    assert (explainer.version, fast_explainer.version) == ("6", "6-fast") == (ConceptInductionExplainer.version,
                                                                              ConceptInductionExplainer.version + "-fast")
    other = ConceptInductionExplainer(explainer.annotator, alternatives=(), class_search=True).version
    assert other.startswith("6-") and other not in ("6", "6-fast")
    graded_and_class = ConceptInductionExplainer(explainer.annotator, alternatives=()).explain(rec)
    no_class = ConceptInductionExplainer(explainer.annotator, alternatives=(), class_search=False).explain(rec)
    assert len(no_class) == 1 < len(graded_and_class)
    roles_free = build("explainer", {"kind": "concept_induction", "alternatives": [{"roles": False}],
                                     "class_search": False}).explain(rec)
    assert [e.structured for e in roles_free] == [e.structured for e in full[:len(roles_free)]]
    with pytest.raises(ConfigError, match="concept_induction"):
        build("explainer", {"kind": "concept_induction", "alternatives": [{"no_such_setting": 1}]})


def test_first_choice_always_covers_a_positive(explainer):
    """Positives are rare words; every returned expression covers at least one of them."""
    top = (_window([" zebra", " and", " the", " giraffe", "."], [6, 0, 0, 0, 0], 1),
           _window([" okapi", " and", " the", " tapir", "."], [5, 0, 0, 0, 0], 2),
           _window([" the", " the", " and", " and", "."], [0, 0, 0, 0, 0], 3))
    exps = explainer.explain(NeuronRecord("m", NeuronId(0, 0), top=top))
    assert exps and all(e.structured["recall"] > 0 for e in exps)


def test_recovers_at_least_9_of_10_planted_classes(explainer, clean):
    onto = default_ontology()
    hits = [_recovered(onto, explainer.explain(r)[0], n) for n, r in zip(DEFAULT_CLASSES, clean)]
    assert sum(hits) >= 9, list(zip(DEFAULT_CLASSES, hits))


def test_ten_percent_noise_degrades_gracefully(explainer, clean):
    """With 10% random firing the planted class is still among the candidates for most units
    (the pipeline keeps the best-scoring candidate). The first choice alone — the graded
    disjunction — names it for fewer (5/10 at this seed; the noun-only version: 7/10)."""
    onto = default_ontology()
    noisy = planted_records(DEFAULT_CLASSES, noise=0.1, seed=1)
    hits, first, f1_clean, f1_noisy = 0, 0, [], []
    for name, c, n in zip(DEFAULT_CLASSES, clean, noisy):
        ec, ens = explainer.explain(c)[0], explainer.explain(n)
        hits += any(_recovered(onto, e, name) for e in ens)
        first += _recovered(onto, ens[0], name)
        f1_clean.append(ec.structured["f1"])
        f1_noisy.append(ens[0].structured["f1"])
    assert hits >= 7  # most concepts survive 10% random firing
    assert first >= 4
    assert sum(f1_noisy) < sum(f1_clean)  # and the reported quality drops with the noise


def test_explanation_fields(explainer, clean):
    onto = default_ontology()
    exps = explainer.explain(clean[0])  # animal
    assert [e.rank for e in exps] == list(range(len(exps))) and 1 <= len(exps) <= 3
    best = exps[0]
    s = best.structured
    assert s["manchester"] == f"<{onto.iri(onto.find('animal.n.01'))}>"
    assert s["iris"] == [onto.iri(onto.find("animal.n.01"))]
    # planted units read words as nouns; the explainer reads some of them as verbs (tag counts), so
    # it misses a few positives but covers no negative
    assert s["precision"] == 1.0 and s["recall"] > 0.8
    assert best.text.startswith("mentions of a kind of animal (")
    assert best.explainer == "concept_induction" and best.params["fraction"] == 0.3
    assert best.neuron == clean[0].neuron and best.model == clean[0].model


def test_back_off_for_tokens_no_part_covers(explainer, clean):
    """Each label carries lexical kinds' deltas for the tokens none of its parts covers, fitted on
    the explain-split random windows, with the base moved so that those tokens' mean prediction
    there stays the base without a back-off; without ``backoff`` the same expressions and weights."""
    import numpy as np

    from neurolabel.scoring.symbolic_simulator import SymbolicSimulator

    rec = clean[1]
    sim = SymbolicSimulator(explainer.annotator)
    plain = ConceptInductionExplainer(explainer.annotator, backoff=False).explain(rec)
    got = explainer.explain(rec)
    assert [e.structured["manchester"] for e in got] == [e.structured["manchester"] for e in plain]
    assert all("kinds" not in e.structured and "other tokens" not in e.text for e in plain)
    assert any(e.structured["kinds"] for e in got) and got[0].params["backoff"] is True
    windows = [w.tokens for w in rec.windows("random", "explain")]
    for e, p in zip(got, plain):
        assert e.structured["weights"] == p.structured["weights"]
        with_kinds = np.concatenate([s.expected_activations for s in sim.simulate_many(e, windows)])
        without = np.concatenate([s.expected_activations for s in sim.simulate_many(p, windows)])
        free = without == p.structured["base"]  # tokens no part covers
        assert free.any() and np.all(with_kinds[~free] == without[~free])
        assert abs(with_kinds[free].mean() - p.structured["base"]) < 1e-4
        if e.structured["kinds"]:
            assert "; other tokens: " in e.text and with_kinds[free].std() > 0


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
    w = ActivationRecord(("<|im_start|>", "<|im_end|>", " dog"), (5.0, 5.0, 0.0), 4, "explain", "top")
    with pytest.raises(ExplanationError, match="mentions a class"):
        explainer.explain(NeuronRecord("m", NeuronId(0, 0), top=(w,)))


def _owl(world, onto, e: ClassExpression):
    import owlready2

    if e.op == "class":
        return world[onto.iri(e.cls)]
    if e.op == "some":
        return world[e.role].some(_owl(world, onto, e.args[0]))
    parts = [_owl(world, onto, a) for a in e.args]
    return owlready2.And(parts) if e.op == "and" else owlready2.Or(parts)


def test_hermit_retrieves_exactly_the_bitset_coverage(explainer, tmp_path: Path):
    """A small ABox from real windows (planted vehicle and animal neurons, 10% noise so the
    search also returns disjunctions): every token an individual that ``follows`` the token
    before it; HermiT through owlready2, and the bitset coverage — also of role restrictions."""
    import owlready2

    from neurolabel.ontology.lexical import LEXICAL_BASE

    onto = default_ontology()
    ann = explainer.annotator
    recs = planted_records(("vehicle.n.01", "animal.n.01"), noise=0.1, seed=3)
    exprs: list[ClassExpression] = []
    examples: list[tuple[int, ...]] = []
    previous: list[int | None] = []
    for r in recs:
        exprs += [ClassExpression.from_json(e.structured["expression"], onto) for e in explainer.explain(r)]
        for w in r.windows("top", "explain")[:3]:
            start = len(examples)
            examples += list(ann.direct_classes(w.tokens))
            previous += [None] + list(range(start, len(examples) - 1))
    atom = lambda name: ClassExpression.atom(onto.find(name))  # noqa: E731
    exprs.append(ClassExpression.join("and", [atom("animal.n.01"), atom("organism.n.01")]))
    exprs.append(ClassExpression.join("and", [atom(LEXICAL_BASE + "Noun"),
                                              ClassExpression.some(atom(LEXICAL_BASE + "Article"))]))
    exprs.append(ClassExpression.join("or", [atom(LEXICAL_BASE + "Comma"),
                                             ClassExpression.some(atom(LEXICAL_BASE + "Preposition"))]))
    in_tbox = set(onto.closure(c for d in examples for c in d))
    exprs = [e for e in exprs if set(e.classes()) <= in_tbox]  # the ABox's TBox has only the examples' classes
    assert len(exprs) >= 5 and any(e.op == "or" for e in exprs) and sum(e.has_role() for e in exprs) >= 2
    prev_classes = [examples[p] if p is not None else None for p in previous]
    path = tmp_path / "abox.owl"
    iris = write_abox(path, onto, examples, previous=previous)
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
        by_bitsets = {iri for iri, hit in zip(iris, coverage_vector(onto, e, examples, prev_classes)) if hit}
        assert by_reasoner == by_bitsets, e.manchester_labels(onto)
        assert by_bitsets  # non-trivial
