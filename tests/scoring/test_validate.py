"""simulate_and_score uses only held-out (score-split) top and random windows; the gate."""

from __future__ import annotations

from dataclasses import replace

import pytest

from neurolabel.core.errors import ScoringError
from neurolabel.core.types import ActivationRecord, Explanation, NeuronId, NeuronRecord, ScoreResult, SequenceSimulation
from neurolabel.scoring.validate import best_accepted, is_accepted, scored_windows, simulate_and_score


class WordSimulator:
    """A real (trivial) simulator: predicts 1 where the token equals the explanation text."""

    kind = "word"

    def __init__(self):
        self.seen: list[tuple[str, ...]] = []

    def simulate(self, explanation, tokens):
        self.seen.append(tuple(tokens))
        return SequenceSimulation(tokens=tuple(tokens),
                                  expected_activations=tuple(float(t == explanation.text) for t in tokens),
                                  method="exact")


def _w(tokens, acts, split, kind, wid):
    return ActivationRecord(tokens=tuple(tokens), activations=tuple(acts), window_id=wid, split=split, kind=kind)


N = NeuronId(3, 7)
RECORD = NeuronRecord(
    model="m", neuron=N,
    top=(_w(["a", "dog", "ran"], [0, 4, 0], "score", "top", 1),
         _w(["dog", "x", "y"], [3, 0, 0], "explain", "top", 2)),
    random=(_w(["the", "cat"], [0, 0.5], "score", "random", 3),
            _w(["cat"], [9], "explain", "random", 4)),
    quantile=(_w(["q"], [1], "score", "quantile", 5),),
)
EXPL = Explanation(model="m", neuron=N, explainer="e", explainer_version="1", text="dog")


def test_scored_windows_are_score_split_top_then_random():
    assert [w.window_id for w in scored_windows(RECORD)] == [1, 3]


def test_simulate_and_score_returns_new_scored_explanation():
    sim = WordSimulator()
    out = simulate_and_score(EXPL, RECORD, simulator=sim)
    assert EXPL.score is None and out.score is not None
    assert sim.seen == [("a", "dog", "ran"), ("the", "cat")]
    # pred (0,1,0,0,0) vs true (0,4,0,0,.5)
    assert out.score.score == pytest.approx(3.1 / (0.8 * 12.2) ** 0.5)  # by hand
    assert out.score.simulator == "word" and out.score.method == "exact" and out.score.n_tokens == 5


def test_constant_prediction_stays_undefined():
    out = simulate_and_score(replace(EXPL, text="zebra"), RECORD, simulator=WordSimulator())
    assert out.score.score is None
    assert not is_accepted(out, 0.0)


def test_no_score_windows_is_an_error():
    rec = replace(RECORD, top=RECORD.top[1:], random=RECORD.random[1:])
    with pytest.raises(ScoringError, match="no score-split"):
        simulate_and_score(EXPL, rec, simulator=WordSimulator())


def test_gate_and_best_label():
    def scored(text, s):
        return replace(EXPL, text=text, score=ScoreResult(score=s, scorer="correlation", simulator="word"))

    a, b, c = scored("a", 0.2), scored("b", 0.6), scored("c", None)
    assert not is_accepted(a, 0.3) and is_accepted(b, 0.3) and not is_accepted(c, 0.3)
    assert best_accepted([a, b, c], 0.3) is b
    assert best_accepted([a, c], 0.3) is None
    assert is_accepted(b)  # default threshold from settings (0.3)
