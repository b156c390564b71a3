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
