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


def test_scorer_reuses_the_true_side_of_the_same_windows_only():
    """The scorer keeps the flattened true side of a window list; scoring other windows between
    two scorings of the same ones, or new window objects of the same ids' reuse, gives what the
    metrics give on the plain flattened lists."""
    import numpy as np

    from neurolabel.scoring import metrics, scorers

    rng = np.random.default_rng(0)

    def windows(seed):
        r = np.random.default_rng(seed)
        return [ActivationRecord(tokens=tuple("abcdef"[:n]), activations=tuple(r.normal(size=n).round(3).tolist()),
                                 window_id=i, split="score", kind=kind)
                for i, (n, kind) in enumerate([(6, "top"), (4, "random"), (5, "top"), (3, "random"), (2, "random")])]

    def expected(sims, recs):
        pred = [p for s in sims for p in s.expected_activations]
        true = [a for r in recs for a in r.activations]
        top = sorted([i for i, r in enumerate(recs) if r.kind == "top"], key=lambda i: -recs[i].max_activation)
        rnd = [i for i, r in enumerate(recs) if r.kind == "random"]
        bal = top[:2] + rnd[:2]
        sub = lambda idx: ([p for i in idx for p in sims[i].expected_activations],  # noqa: E731
                           [a for i in idx for a in recs[i].activations])
        return {"top_and_random": metrics.correlation(pred, true), "random_only": metrics.correlation(*sub(rnd)),
                "top_only": metrics.correlation(*sub(top)), "openai_comparable": metrics.correlation(*sub(bal)),
                "auprc": metrics.auprc(pred, metrics.true_active(true))}

    scorer = scorers.CorrelationScorer()
    a, b = windows(1), windows(2)
    for recs in (a, b, a, windows(3)):
        sims = [SequenceSimulation(tokens=r.tokens, expected_activations=tuple(rng.normal(size=len(r.tokens)).tolist()))
                for r in recs]
        got = scorer.score(sims, recs, simulator="x").parts
        for k, v in expected(sims, recs).items():
            assert got[k] == pytest.approx(v, abs=1e-12), k
    with pytest.raises(ScoringError):  # a simulation of the wrong length is still refused
        scorer.score([SequenceSimulation(tokens=("a",), expected_activations=(1.0,))] + sims[1:], recs, simulator="x")


def test_choose_label_one_standard_error_rule():
    from neurolabel.scoring.validate import LabelCandidate as C, choose_label

    ci = C(0.50, 0.05, 2000, ("ci", "6"), 0)
    tiers = C(0.46, 0.04, 50000, ("tiers", "2"), 1)
    assert choose_label([ci, tiers]) == 1  # within one SE of the best: the broader evidence
    assert choose_label([ci._replace(score=0.56), tiers]) == 0  # better by more than one SE
    assert choose_label([ci, tiers], se_margin=0.0) == 0  # margin 0: the highest score
    assert choose_label([ci._replace(se=None), tiers]) == 0  # no SE known: the highest score
    # only each explainer version's best-scored candidate competes: a lower one of the same
    # version, however broad, is not chosen
    low = C(0.47, 0.05, 90000, ("ci", "6"), 2)
    assert choose_label([ci, low]) == 0
    # equal evidence: the higher score, then the lower order
    assert choose_label([C(0.4, 0.1, 10, ("a", "1"), 5), C(0.45, 0.1, 10, ("b", "1"), 9)]) == 1
    assert choose_label([C(0.4, 0.1, 10, ("a", "1"), 5), C(0.4, 0.1, 10, ("b", "1"), 1)]) == 1
    assert choose_label([]) is None


def test_best_accepted_follows_choose_label():
    def scored(text, s, se, fit, explainer):
        return replace(EXPL, text=text, explainer=explainer, structured={"fit_tokens": fit},
                       score=ScoreResult(score=s, scorer="correlation", simulator="word", parts={"se": se}))

    ci, tiers = scored("ci", 0.5, 0.05, 2000, "ci"), scored("tiers", 0.46, 0.04, 50000, "tiers")
    assert best_accepted([ci, tiers], 0.3) is tiers
    assert best_accepted([ci, tiers], 0.47) is ci  # the broader one is not accepted
