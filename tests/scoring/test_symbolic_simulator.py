"""The symbolic simulators: graded (weights per disjunct) and binary (1 where a token's classes
satisfy the expression, else 0)."""

from __future__ import annotations

import pytest

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import Explanation, NeuronId
from neurolabel.ontology.annotate import Annotator
from neurolabel.ontology.build import WORDNET_BASE
from neurolabel.ontology.lexical import FOLLOWS_IRI, LEXICAL_BASE
from neurolabel.scoring.symbolic_simulator import BinarySymbolicSimulator, SymbolicSimulator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim() -> SymbolicSimulator:
    return SymbolicSimulator(Annotator.from_defaults())


def _exp(**structured) -> Explanation:
    return Explanation("m", NeuronId(0, 1), "concept_induction", "1", "x", structured=structured)


def test_registered():
    assert SIMULATORS["symbolic"] is SymbolicSimulator
    assert SIMULATORS["symbolic_binary"] is BinarySymbolicSimulator
    assert SymbolicSimulator().annotator is None


def test_graded_weights_per_disjunct_and_binary(sim):
    e = _exp(manchester=f"<{WORDNET_BASE}animal.n.01> or <{WORDNET_BASE}vehicle.n.01> or <{WORDNET_BASE}dog.n.01>",
             weights=[9.0, 4.0, 2.0], base=0.5)
    toks = [" dogs", " a", " car", " cat"]
    assert sim.simulate(e, toks).expected_activations == (9.0, 0.5, 4.0, 9.0)  # dog: max(animal, dog)
    assert sim.simulate(e, toks).method == "symbolic"
    binary = BinarySymbolicSimulator(sim.annotator)
    assert binary.simulate(e, toks).expected_activations == (1.0, 0.0, 1.0, 1.0)
    unweighted = _exp(manchester=e.structured["manchester"])
    assert sim.simulate(unweighted, toks).expected_activations == (1.0, 0.0, 1.0, 1.0)


def test_back_off_adds_kind_deltas_to_uncovered_tokens_only(sim):
    """A graded label's ``kinds``: the tokens no part covers get the base plus their lexical kinds'
    deltas; covered tokens keep their part's weight; the binary simulator ignores the back-off."""
    e = _exp(manchester=f"<{WORDNET_BASE}animal.n.01> or <{WORDNET_BASE}vehicle.n.01>", weights=[9.0, 4.0], base=0.5,
             kinds=[["Preposition", 2.0], ["Comma", -1.0], ["WholeWord", 0.25]])
    toks = [" dogs", " with", " car", ",", " the"]
    assert sim.simulate(e, toks).expected_activations == (9.0, 2.75, 4.0, -0.5, 0.75)
    assert sim.simulate_many(e, [toks[:2], toks[2:]])[1].expected_activations == (4.0, -0.5, 0.75)
    binary = BinarySymbolicSimulator(sim.annotator)
    assert binary.simulate(e, toks).expected_activations == (1.0, 0.0, 1.0, 0.0, 0.0)
    m = e.structured["manchester"]
    with pytest.raises(ScoringError, match="malformed kinds"):
        sim.simulate(_exp(manchester=m, weights=[1.0, 2.0], kinds=[["Comma"]]), [" dog"])
    with pytest.raises(ScoringError, match="finite"):
        sim.simulate(_exp(manchester=m, weights=[1.0, 2.0], kinds=[["Comma", float("inf")]]), [" dog"])


def test_role_restriction_uses_the_previous_token(sim):
    e = _exp(manchester=f"<{LEXICAL_BASE}Preposition> and (<{FOLLOWS_IRI}> some <{LEXICAL_BASE}Noun>)")
    toks = [" with", " a", " dog", " with", " bones", " of", " with"]
    assert sim.simulate(e, toks).expected_activations == (0, 0, 0, 1, 0, 1, 0)


def test_windows_at_once_agree_with_the_expression_token_by_token(sim):
    """simulate_many evaluates every window's tokens in one pass; each value is what the
    expression's own ``satisfied_by`` says of the token (and its previous token in the same window)."""
    m = (f"(<{LEXICAL_BASE}Preposition> and (<{FOLLOWS_IRI}> some (<{LEXICAL_BASE}Noun> or <{WORDNET_BASE}animal.n.01>)))"
         f" or <{WORDNET_BASE}vehicle.n.01> or (<{FOLLOWS_IRI}> some <{LEXICAL_BASE}Preposition>)")
    e = _exp(manchester=m, weights=[3.0, 5.0, 7.0], base=-1.0)
    windows = [[" with", " a", " dog", " with", " bones", " of", " with"], [" car", " with"], [], [" of"]]
    expr = sim.expression(e)
    binary = BinarySymbolicSimulator(sim.annotator)
    got, got_binary = sim.simulate_many(e, windows), binary.simulate_many(e, windows)
    for toks, g, b in zip(windows, got, got_binary):
        closures = sim.annotator.annotate(toks)
        prevs = [None] + closures[:-1]
        want = tuple(max((w for part, w in zip(expr.parts(), [3.0, 5.0, 7.0]) if part.satisfied_by(c, p)), default=-1.0)
                     for c, p in zip(closures, prevs))
        assert g.tokens == tuple(toks) and g.expected_activations == want
        assert b.expected_activations == tuple(1.0 if expr.satisfied_by(c, p) else 0.0 for c, p in zip(closures, prevs))
    assert got[0].expected_activations[3] == 3.0 and got[1].expected_activations[0] == 5.0


def test_bad_weights_are_refused(sim):
    m = f"<{WORDNET_BASE}animal.n.01> or <{WORDNET_BASE}vehicle.n.01>"
    with pytest.raises(ScoringError, match="2 disjuncts"):
        sim.simulate(_exp(manchester=m, weights=[1.0]), [" dog"])
    with pytest.raises(ScoringError, match="not numbers"):
        sim.simulate(_exp(manchester=m, weights=["x", 1]), [" dog"])
    with pytest.raises(ScoringError, match="finite"):
        sim.simulate(_exp(manchester=m, weights=[float("nan"), 1]), [" dog"])


def test_manchester_disjunction(sim):
    e = _exp(manchester=f"<{WORDNET_BASE}animal.n.01> or <{WORDNET_BASE}vehicle.n.01>")
    toks = ["The", " dogs", " chased", " a", " car", " past", " the", " church", "."]
    got = sim.simulate(e, toks)
    assert got.tokens == tuple(toks)
    assert got.expected_activations == (0, 1, 0, 0, 1, 0, 0, 0, 0)
    assert got.method == "symbolic"


def test_json_tree_conjunction(sim):
    e = _exp(expression={"and": [{"class": WORDNET_BASE + "animal.n.01"}, {"class": WORDNET_BASE + "canine.n.02"}]})
    assert sim.simulate(e, [" dogs", " cats"]).expected_activations == (1.0, 0.0)
    assert [s.expected_activations for s in sim.simulate_many(e, [[" wolf"], [" car"]])] == [(1.0,), (0.0,)]


def test_single_iri_explanation(sim):
    e = _exp(iris=[WORDNET_BASE + "animal.n.01"])
    assert sim.simulate(e, [" cats", " cars"]).expected_activations == (1.0, 0.0)


def test_free_text_explanation_is_refused(sim):
    with pytest.raises(ScoringError, match="no class expression"):
        sim.simulate(_exp(), [" dog"])
    with pytest.raises(ScoringError, match="no class named"):
        sim.simulate(_exp(manchester="<http://nowhere#x>"), [" dog"])


def test_scores_planted_concept_induction_labels_highly(sim):
    from bench.planted import planted_records
    from neurolabel.explainers.concept_induction import ConceptInductionExplainer
    from neurolabel.scoring.validate import simulate_and_score

    explainer = ConceptInductionExplainer(sim.annotator)
    rec = planted_records(("vehicle.n.01",))[0]
    best = explainer.explain(rec)[0]
    scored = simulate_and_score(best, rec, simulator=sim)
    assert scored.score.simulator == "symbolic"
    assert scored.score.score > 0.9  # held-out score-split windows
    wrong = _exp(manchester=f"<{WORDNET_BASE}person.n.01>")
    wrong = Explanation(rec.model, rec.neuron, "concept_induction", "1", "x", structured=dict(wrong.structured))
    assert simulate_and_score(wrong, rec, simulator=sim).score.score < 0.2


def test_window_classes_closed_once_give_what_each_call_computes(sim):
    """Both simulators share the windows' closed classes across labels (closed once per window
    set); every label's coverage is what a fresh evaluation over the windows' classes gives."""
    import numpy as np

    from neurolabel.ontology.induction import coverage_vectors
    from neurolabel.scoring import symbolic_simulator as ss

    windows = [[" with", " a", " dog", " with", " bones", " of", " with"], [" car", " with"], [" of"]]
    labels = [_exp(manchester=f"<{LEXICAL_BASE}Preposition> and (<{FOLLOWS_IRI}> some <{LEXICAL_BASE}Noun>)"),
              _exp(manchester=f"<{WORDNET_BASE}animal.n.01> or <{WORDNET_BASE}vehicle.n.01>", weights=[2.0, 3.0]),
              _exp(manchester=f"<{FOLLOWS_IRI}> some <{LEXICAL_BASE}Preposition>")]
    ss._closed.clear()
    binary = BinarySymbolicSimulator(sim.annotator)
    examples = [d for w in windows for d in sim.annotator.direct_classes(w)]
    previous = [p for w in windows for p in [None, *sim.annotator.direct_classes(w)[:-1]]]
    for e in labels:
        for s in (sim, binary):
            got = [v for x in s.simulate_many(e, windows) for v in x.expected_activations]
            expr = s.expression(e)
            wb = s.weights(e, expr)
            cover = coverage_vectors(sim.annotator.ontology, expr.parts() if wb else (expr,), examples, previous)
            want = ss.predict_graded(cover, *wb) if wb else np.where(cover[:, 0], 1.0, 0.0)
            assert got == want.tolist(), (e.structured, s.kind)
    assert len(ss._closed) == 1  # one window set, closed once for 3 labels x 2 simulators


def test_flat_predictions_score_as_the_windows_do(sim):
    """``simulate_many`` hands the scorer its predictions in one array (:class:`FlatSimulations`):
    the same values as the windows', and the same score as from a plain list of the windows."""
    from neurolabel.core.types import ActivationRecord
    from neurolabel.scoring.scorers import CorrelationScorer, FlatSimulations

    e = _exp(manchester=f"<{WORDNET_BASE}animal.n.01> or <{WORDNET_BASE}vehicle.n.01>", weights=[9.0, 4.0], base=0.5,
             kinds=[["Preposition", 2.0], ["Comma", -1.0]])
    wins = [ActivationRecord((" dogs", " with", " car"), (3.0, 0.5, 1.0), window_id=1, split="score", kind="top"),
            ActivationRecord((",", " the", " cat"), (0.0, 0.2, 2.0), window_id=2, split="score", kind="random")]
    sims = sim.simulate_many(e, [w.tokens for w in wins])
    assert isinstance(sims, FlatSimulations) and not sims.values.flags.writeable
    scorer = CorrelationScorer()
    got = scorer.score(sims, wins, simulator="symbolic")
    assert sims._items is None  # the scorer read the array: no per-window objects made
    assert len(sims) == 2 and sims.lengths == (3, 3) and sims.method == "symbolic"
    assert sims.values.tolist() == [v for s in sims for v in s.expected_activations]
    assert sims[1].tokens == wins[1].tokens and sims[1].method == "symbolic" and list(sims) == sims
    assert got == scorer.score(list(sims), wins, simulator="symbolic")


def test_a_label_read_again_is_found_by_identity_and_a_changed_one_is_not(sim):
    from dataclasses import replace

    from neurolabel.scoring import symbolic_simulator as S

    e = _exp(manchester=f"<{WORDNET_BASE}animal.n.01> or <{WORDNET_BASE}vehicle.n.01>")
    first = sim.expression(e)
    assert id(e.structured) in S._parsed_by_identity
    assert sim.expression(replace(e, text="y")) is first  # a copy sharing the structured dict
    S._parsed.clear()  # only the identity memo can answer now
    assert sim.expression(e) is first
    e.structured["manchester"] = f"<{WORDNET_BASE}dog.n.01>"  # the dict's entry replaced: parsed afresh
    assert sim.expression(e).classes() == [sim.annotator.ontology.find(f"{WORDNET_BASE}dog.n.01")]


def test_the_binary_simulator_reads_the_graded_ones_coverage_of_the_same_label(sim, monkeypatch):
    """A run scores each concept-induction label with the graded simulator, then the binary one, on the
    same windows: the binary one takes the tokens any part covered (no second evaluation) and predicts
    what its own evaluation of the whole expression gives."""
    from neurolabel.scoring import symbolic_simulator as ss

    windows = [[" with", " a", " dog", " with", " bones", " of", " with"], [" car", " with", " cats"], [" of"]]
    labels = [_exp(manchester=f"<{WORDNET_BASE}animal.n.01> or <{WORDNET_BASE}vehicle.n.01> or "
                              f"(<{LEXICAL_BASE}Preposition> and (<{FOLLOWS_IRI}> some <{LEXICAL_BASE}Noun>))",
                   weights=[2.0, 3.0, 1.5], base=0.1, kinds=[["Preposition", 0.5]]),
              _exp(manchester=f"<{FOLLOWS_IRI}> some <{LEXICAL_BASE}Preposition>", weights=[4.0], base=0.0)]
    binary = BinarySymbolicSimulator(sim.annotator)
    fresh = []
    for e in labels:  # the binary simulator alone: its own evaluation
        ss._covered.clear()
        fresh.append([v for x in binary.simulate_many(e, windows) for v in x.expected_activations])
    calls = []
    inner = ss.coverage_vectors
    monkeypatch.setattr(ss, "coverage_vectors", lambda *a, **k: calls.append(1) or inner(*a, **k))
    for e, want in zip(labels, fresh):
        calls.clear()
        sim.simulate_many(e, windows)
        got = [v for x in binary.simulate_many(e, windows) for v in x.expected_activations]
        assert got == want and sum(got) > 0
        assert len(calls) == 1  # the graded simulator's evaluation only
    changed = _exp(manchester=f"<{WORDNET_BASE}vehicle.n.01>")  # another label: evaluated afresh
    calls.clear()
    assert [v for x in binary.simulate_many(changed, windows) for v in x.expected_activations].count(1.0) == 1
    assert len(calls) == 1
