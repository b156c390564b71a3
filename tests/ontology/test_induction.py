"""Class expressions and the bitset search on a tiny hand-made hierarchy (hand-checked numbers)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from neurolabel.core.errors import OntologyError
from neurolabel.ontology.expression import ClassExpression as CE
from neurolabel.ontology.expression import parse_manchester
from neurolabel.ontology.induction import InductionConfig, coverage_vector, f1_score, induce, mcc_score
from neurolabel.ontology.model import from_edges

B = "http://t.org/o#"
NAMES = ["Thing2", "Animal", "Dog", "Cat", "Vehicle", "Car", "Boat", "Plant"]
PARENTS = {"Animal": ["Thing2"], "Dog": ["Animal"], "Cat": ["Animal"], "Vehicle": ["Thing2"],
           "Car": ["Vehicle"], "Boat": ["Vehicle"], "Plant": ["Thing2"]}


@pytest.fixture(scope="module")
def onto():
    idx = {n: i for i, n in enumerate(NAMES)}
    return from_edges(name="toy", source="test", iris=[B + n for n in NAMES],
                      labels=[(n.lower(),) for n in NAMES],
                      parents=[[idx[p] for p in PARENTS.get(n, [])] for n in NAMES])


def ids(onto, *names):
    return tuple(onto.find(B + n) for n in names)


def test_metrics_hand_checked():
    assert f1_score(2, 0, 2) == 1.0
    assert f1_score(1, 1, 2) == pytest.approx(0.5)
    assert f1_score(0, 0, 0) == 0.0
    assert mcc_score(2, 0, 2, 2) == pytest.approx(1.0)
    assert mcc_score(0, 2, 2, 2) == pytest.approx(-1.0)
    assert mcc_score(1, 1, 2, 2) == pytest.approx(0.0)


def test_expression_renderings_round_trip(onto):
    e = CE.join("or", [CE.atom(onto.find(B + "Dog")), CE.join("and", [CE.atom(onto.find(B + "Vehicle")), CE.atom(onto.find(B + "Car"))])])
    m = e.manchester(onto)
    assert m == f"<{B}Dog> or (<{B}Vehicle> and <{B}Car>)"
    assert parse_manchester(m, onto) == e
    assert CE.from_json(e.to_json(onto), onto) == e
    assert e.length == 5
    assert CE.atom(onto.find(B + "Animal")).english(onto, {onto.find(B + "Animal"): ["dog", "cat"]}) == \
        "mentions of a kind of animal (dog, cat)"
    with pytest.raises(OntologyError):
        parse_manchester("<http://nope#X> or", onto)


def test_finds_the_separating_class(onto):
    pos = [ids(onto, "Dog"), ids(onto, "Cat"), ids(onto, "Dog")]
    neg = [ids(onto, "Car"), ids(onto, "Plant"), (), ids(onto, "Boat")]
    best = induce(onto, pos, neg)[0]
    assert best.expression == CE.atom(onto.find(B + "Animal"))
    assert (best.tp, best.fp, best.precision, best.recall, best.f1) == (3, 0, 1.0, 1.0, 1.0)


def test_finds_a_disjunction_when_needed(onto):
    pos = [ids(onto, "Dog"), ids(onto, "Dog"), ids(onto, "Car"), ids(onto, "Car")]
    neg = [ids(onto, "Cat"), ids(onto, "Boat"), ids(onto, "Plant"), ids(onto, "Cat")]
    best = induce(onto, pos, neg, InductionConfig(quality="f1"))[0]
    assert set(best.expression.classes()) == set(ids(onto, "Dog", "Car")) and best.expression.op == "or"
    assert best.f1 == 1.0 and best.quality == pytest.approx(1.0 - 0.02 * 2)
    atomic = induce(onto, pos, neg, InductionConfig(max_length=1))
    assert all(h.expression.op == "class" for h in atomic)


def test_bitset_coverage_equals_brute_force(onto):
    rng = np.random.default_rng(0)
    leaves = ids(onto, "Dog", "Cat", "Car", "Boat", "Plant")
    examples = [tuple(rng.choice(leaves, size=rng.integers(0, 3), replace=False).tolist()) for _ in range(60)]
    for a, b in itertools.combinations(range(len(NAMES)), 2):
        for op in ("and", "or"):
            e = CE.join(op, [CE.atom(a), CE.atom(b)])
            want = [e.satisfied_by(onto.closure(d)) for d in examples]
            assert coverage_vector(onto, e, examples).tolist() == want


# ---- the follows role --------------------------------------------------------------------------

def test_role_restriction_renderings_round_trip(onto):
    from neurolabel.ontology.lexical import FOLLOWS_IRI

    e = CE.join("and", [CE.atom(onto.find(B + "Dog")), CE.some(CE.atom(onto.find(B + "Car")))])
    m = e.manchester(onto)
    assert m == f"<{B}Dog> and (<{FOLLOWS_IRI}> some <{B}Car>)"
    assert parse_manchester(m, onto) == e
    assert parse_manchester(f"Dog and follows some Car", onto) == e
    assert CE.from_json(e.to_json(onto), onto) == e
    assert e.to_json(onto)["and"][1] == {"some": {"property": FOLLOWS_IRI, "filler": {"class": B + "Car"}}}
    assert e.length == 4 and e.manchester_labels(onto) == "dog and (follows some car)"
    assert e.english(onto) == "mentions of dog right after car"
    with pytest.raises(OntologyError, match="unknown property"):
        parse_manchester("likes some Car", onto)
    with pytest.raises(OntologyError, match="unknown property"):
        CE.from_json({"some": {"property": "http://x#likes", "filler": {"class": B + "Car"}}}, onto)
    with pytest.raises(OntologyError):
        parse_manchester("Dog and follows some", onto)


def test_role_satisfaction_uses_the_previous_token(onto):
    dog, car = onto.find(B + "Dog"), onto.find(B + "Car")
    e = CE.join("and", [CE.atom(dog), CE.some(CE.atom(onto.find(B + "Vehicle")))])
    assert e.satisfied_by(onto.closure([dog]), onto.closure([car]))
    assert not e.satisfied_by(onto.closure([dog]), onto.closure([dog]))
    assert not e.satisfied_by(onto.closure([dog]), None)  # first token of a window


def test_search_learns_an_existential_restriction(onto):
    """Dogs fire only right after a vehicle: no class alone separates them, ``Dog and (follows
    some Vehicle)`` does."""
    d, c, b, cat = ids(onto, "Dog"), ids(onto, "Car"), ids(onto, "Boat"), ids(onto, "Cat")
    pos, pos_prev = [d, d, d, d], [c, b, c, b]
    neg, neg_prev = [d, d, d, c, cat, b], [cat, None, d, d, c, cat]
    best = induce(onto, pos, neg, positives_prev=pos_prev, negatives_prev=neg_prev)[0]
    want = CE.join("and", [CE.atom(onto.find(B + "Dog")), CE.some(CE.atom(onto.find(B + "Vehicle")))])
    assert (best.tp, best.fp) == (4, 0)
    assert coverage_vector(onto, best.expression, pos + neg, pos_prev + neg_prev).tolist() == \
        coverage_vector(onto, want, pos + neg, pos_prev + neg_prev).tolist()
    assert best.expression.has_role()
    without = induce(onto, pos, neg)[0]  # no context: the best is imperfect
    assert without.fp > 0


def test_bitset_coverage_of_restrictions_equals_brute_force(onto):
    rng = np.random.default_rng(1)
    leaves = ids(onto, "Dog", "Cat", "Car", "Boat", "Plant")
    examples = [tuple(rng.choice(leaves, size=rng.integers(0, 3), replace=False).tolist()) for _ in range(60)]
    prev = [None] + examples[:-1]
    for a, b in itertools.permutations(range(len(NAMES)), 2):
        e = CE.join("and", [CE.atom(a), CE.some(CE.atom(b))])
        want = [e.satisfied_by(onto.closure(d), None if p is None else onto.closure(p)) for d, p in zip(examples, prev)]
        assert coverage_vector(onto, e, examples, prev).tolist() == want


def test_coverage_from_pairs_equals_coverage_matrices(onto):
    from neurolabel.ontology.induction import class_pairs, coverage_from_pairs, coverage_matrices

    rng = np.random.default_rng(2)
    leaves = ids(onto, "Dog", "Cat", "Car", "Boat", "Plant")
    examples = [tuple(rng.choice(leaves, size=rng.integers(0, 3), replace=False).tolist()) for _ in range(80)]
    prev = [None if i % 10 == 0 else examples[i - 1] for i in range(80)]
    pi, ni = np.flatnonzero(rng.random(80) < 0.3), np.flatnonzero(rng.random(80) < 0.5)
    want = coverage_matrices(onto, [examples[i] for i in pi], [examples[i] for i in ni],
                             [prev[i] for i in pi], [prev[i] for i in ni])
    got = coverage_from_pairs(onto, class_pairs(onto, examples, prev), 80, pi, ni)
    assert got.exprs == want.exprs and got.classes.tolist() == want.classes.tolist()
    assert np.array_equal(got.P, want.P) and np.array_equal(got.N, want.N)
    assert (got.n_pos, got.n_neg) == (want.n_pos, want.n_neg)


def _windows(onto, rng, n_windows=12):
    """Windows of random tokens' direct classes (some tokens without any, one window empty)."""
    leaves = ids(onto, "Dog", "Cat", "Car", "Boat", "Plant", "Animal")
    out = []
    for w in range(n_windows):
        n = 0 if w == 3 else int(rng.integers(1, 9))
        out.append(tuple(tuple(sorted(rng.choice(leaves, size=rng.integers(0, 3), replace=False).tolist()))
                         for _ in range(n)))
    return out


def test_close_windows_equals_close_examples_of_their_tokens(onto):
    from neurolabel.ontology.induction import close_examples, close_windows

    windows = _windows(onto, np.random.default_rng(5))
    examples = [t for w in windows for t in w]
    previous = [p for w in windows for p in ((None, *w[:-1]) if w else ())]
    want = close_examples(onto, examples, previous)
    copies = [tuple(tuple(t) for t in w) for w in windows]  # equal windows, other objects: found by content
    for ws in (windows, windows, copies):  # then from the per-window memo, by identity, by content
        got = close_windows(onto, ws)
        assert got.n == want.n == len(examples)
        for f in ("rows", "classes", "prev_rows", "prev_classes"):
            assert getattr(got, f).tolist() == getattr(want, f).tolist(), f


def test_closed_pairs_and_indexed_columns_equal_their_references(onto):
    from neurolabel.ontology.induction import class_pairs, close_windows, closed_pairs, coverage_vectors

    windows = _windows(onto, np.random.default_rng(6))
    examples = [t for w in windows for t in w]
    previous = [p for w in windows for p in ((None, *w[:-1]) if w else ())]
    closed = close_windows(onto, windows)
    got, want = closed_pairs(onto, closed), class_pairs(onto, examples, previous)
    assert all(np.array_equal(g, w) for g, w in zip(got[:3], want[:3])) and got[3] == want[3]
    exprs = [CE.atom(a) for a in range(len(NAMES))] + [CE.some(CE.atom(a)) for a in range(len(NAMES))]
    exprs += [CE.join("and", [CE.atom(a), CE.some(CE.atom(b))]) for a, b in itertools.permutations(range(4), 2)]
    want_cov = np.array([[e.satisfied_by(onto.closure(d), None if p is None else onto.closure(p)) for e in exprs]
                         for d, p in zip(examples, previous)])
    assert np.array_equal(coverage_vectors(onto, exprs, None, closed=closed), want_cov)
    # the index is built once and reused; expressions without roles read no previous tokens
    assert np.array_equal(coverage_vectors(onto, exprs[:4], None, closed=closed), want_cov[:, :4])


def test_predict_graded_equals_the_largest_covering_weight():
    from neurolabel.ontology.induction import predict_graded

    rng = np.random.default_rng(7)
    for trial in range(50):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 8))
        cover = rng.random((n, k)) < 0.3
        w = rng.choice([-1.0, 0.0, 0.5, 2.0, 3.0], size=k) if trial % 2 else rng.normal(size=k)
        if trial % 7 == 0:
            w[0] = np.nan
        want = np.where(cover, w[None, :], -np.inf).max(1)
        want = np.where(np.isfinite(want), want, 0.25)
        assert predict_graded(cover, w, 0.25).tolist() == want.tolist()


# ---- graded search -----------------------------------------------------------------------------

def test_part_weights_and_prediction_hand_checked():
    from neurolabel.ontology.induction import part_weights, predict_graded

    cover = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)
    acts = np.array([4.0, 6.0, 2.0, 0.0])
    w, base = part_weights(cover, acts, prior_count=0.0)
    assert w.tolist() == [5.0, 4.0] and base == 0.0
    w2, _ = part_weights(cover, acts, prior_count=2.0)  # shrunk towards the mean 3.0
    assert w2.tolist() == [4.0, 3.5]
    assert predict_graded(cover, [5.0, 4.0], 0.5).tolist() == [5.0, 5.0, 4.0, 0.5]  # max where both cover


def test_graded_search_weights_two_concepts(onto):
    """Dogs fire at 10, cars at 4, everything else 0: a weighted disjunction of both, dogs heavier."""
    from neurolabel.ontology.induction import GradedConfig, graded_search

    d, c, p, b = ids(onto, "Dog"), ids(onto, "Car"), ids(onto, "Plant"), ids(onto, "Boat")
    examples = [d, c, p, b] * 10
    acts = [10.0, 4.0, 0.0, 0.0] * 10
    pos = np.array(acts) > 3
    got = graded_search(onto, examples, [None] * len(examples), acts, pos, GradedConfig(prior_count=0.0))
    assert [onto.label(e.cls) for e in got.parts] == ["dog", "car"]
    assert got.weights == (10.0, 4.0) and got.base == 0.0 and got.correlation == pytest.approx(1.0)
    none = graded_search(onto, examples, [None] * len(examples), acts, np.zeros(len(acts), bool))
    assert none is None


def test_graded_search_learns_a_part_that_lowers_the_neuron(onto):
    """Dogs fire at 10, plants silence the unit (-6), the rest sits at 1: the disjunction holds a
    lowering part for plants, weighted below the base, though plants cover no positive; without
    ``lowering`` the search cannot say it."""
    from neurolabel.ontology.induction import GradedConfig, graded_search

    d, c, p, b = ids(onto, "Dog"), ids(onto, "Car"), ids(onto, "Plant"), ids(onto, "Boat")
    examples = [d, c, p, b] * 10
    acts = [10.0, 1.0, -6.0, 1.0] * 10
    pos = np.array(acts) > 3
    got = graded_search(onto, examples, [None] * len(examples), acts, pos, GradedConfig(prior_count=0.0))
    weights = dict(zip((onto.label(e.cls) for e in got.parts), got.weights))
    assert weights == {"dog": 10.0, "plant": -6.0} and got.base == 1.0
    assert got.correlation == pytest.approx(1.0)
    old = graded_search(onto, examples, [None] * len(examples), acts, pos,
                        GradedConfig(prior_count=0.0, lowering=False))
    assert [onto.label(e.cls) for e in old.parts] == ["dog"] and old.correlation < 0.9


def test_graded_search_without_roles_and_without_cross_validation(onto):
    """Dogs fire at 10 right after a car, at 2 elsewhere: with roles the search names the context
    (``Dog and follows some Car``); ``roles=False`` keeps to the token's own classes. Without
    cross-validation the parts are those of one greedy run on all tokens, of which the
    cross-validated search's parts are the first; shared candidates change nothing."""
    from neurolabel.ontology.induction import (CANDIDATE_SETTINGS, GradedConfig, graded_candidates, graded_parts,
                                               graded_search, held_fold)

    d, c, p, b = ids(onto, "Dog"), ids(onto, "Car"), ids(onto, "Plant"), ids(onto, "Boat")
    examples = [c, d, p, d, b, p] * 12
    previous = [None, c, d, p, d, b] * 12
    rng = np.random.default_rng(0)
    acts = (np.array([0.0, 10.0, 0.0, 2.0, 0.5, 0.0] * 12) + rng.normal(0, 0.3, 72)).tolist()
    groups = np.repeat(np.arange(12), 6)
    pos = np.array(acts) > 3
    cfg = GradedConfig(prior_count=0.0)
    with_roles = graded_search(onto, examples, previous, acts, pos, cfg, groups=groups)
    assert with_roles.parts[0].has_role() and with_roles.correlation > 0.95
    plain = graded_search(onto, examples, previous, acts, pos, GradedConfig(prior_count=0.0, roles=False),
                          groups=groups)
    assert plain is not None and not any(part.has_role() for part in plain.parts)
    assert [onto.label(part.cls) for part in plain.parts][0] == "dog" and plain.correlation < with_roles.correlation
    full = graded_search(onto, examples, previous, acts, pos, GradedConfig(prior_count=0.0, cross_validate=False),
                         groups=groups)
    assert full.parts[: len(with_roles.parts)] == with_roles.parts
    assert all(getattr(cfg, f) == getattr(GradedConfig(prior_count=0.0, cross_validate=False), f)
               for f in CANDIDATE_SETTINGS)
    shared = graded_candidates(onto, examples, previous, acts, pos, cfg, groups=groups)
    assert graded_search(onto, examples, previous, acts, pos, cfg, groups=groups, candidates=shared) == with_roles
    # the parts alone, and the held fold given: the same search
    searches = ((cfg, with_roles), (GradedConfig(prior_count=0.0, roles=False), plain),
                (GradedConfig(prior_count=0.0, cross_validate=False), full))
    for c, want in searches:
        assert graded_parts(onto, examples, previous, acts, pos, c, groups=groups) == want.parts
        assert graded_parts(onto, examples, previous, acts, pos, c, groups=groups, fold=held_fold(groups)) == want.parts
        assert graded_search(onto, examples, previous, acts, pos, c, groups=groups, fold=held_fold(groups)) == want
    assert any(e.has_role() for e in shared.exprs)
    assert any(e.op == "and" for e in shared.exprs)  # conjunctions too
    assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(shared.nonzero, np.nonzero(shared.X)))
    # searches with other support settings over the same pairs reuse what the pairs give (counts, windows,
    # depth order): the same candidates as built afresh
    from neurolabel.ontology import induction as I

    pairs = I.class_pairs(onto, examples, previous)
    strict = GradedConfig(prior_count=0.0, min_support=5, min_windows=4)
    for cfgs in ((cfg, strict), (strict, cfg)):
        I._pair_stats_last.clear()
        first = graded_candidates(onto, examples, previous, acts, pos, cfgs[0], groups=groups, pairs=pairs)
        again = graded_candidates(onto, examples, previous, acts, pos, cfgs[1], groups=groups, pairs=pairs)
        assert I._pair_stats_last and all(x is y for x, y in zip(I._pair_stats_last[0].held[1:4], pairs))
        I._pair_stats_last.clear()
        fresh = graded_candidates(onto, examples, previous, acts, pos, cfgs[1], groups=groups, pairs=pairs)
        assert again.exprs == fresh.exprs and np.array_equal(again.X, fresh.X) and first.exprs
        assert all(np.array_equal(x, y) for x, y in zip(again.nonzero, fresh.nonzero))
    own = graded_candidates(onto, examples, previous, acts, pos, GradedConfig(prior_count=0.0, roles=False),
                            groups=groups)
    derived = shared.without_roles()
    assert derived.exprs == own.exprs and np.array_equal(derived.X, own.X)
    assert all(np.array_equal(x, y) for x, y in zip(derived.nonzero, own.nonzero))
    # searches sharing one final greedy (in either order) find what each finds alone
    no_cv = GradedConfig(prior_count=0.0, cross_validate=False)
    for order in ((cfg, no_cv), (no_cv, cfg)):
        memo: dict = {}
        got = [graded_search(onto, examples, previous, acts, pos, c, groups=groups, candidates=shared,
                             greedy_memo=memo) for c in order]
        assert got == [with_roles if c is cfg else full for c in order] and len(memo) == 1


def test_ranking_tie_break_does_not_depend_on_the_hash_seed():
    """The last tie-break between equally good hypotheses is a canonical text with sorted parts,
    the same in every process (``repr`` of a frozenset of tuples holding strings was not)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from neurolabel.ontology.expression import ClassExpression as E\n"
        "from neurolabel.ontology.induction import _canon_str\n"
        "e = E.join('or', [E.atom(3), E.some(E.atom(5)), E.join('and', [E.atom(9), E.some(E.atom(2))]), E.atom(11)])\n"
        "print(_canon_str(e))\n"
    )
    root = Path(__file__).resolve().parents[2]
    outs = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout
            for seed in range(8)}
    assert len(outs) == 1, outs
