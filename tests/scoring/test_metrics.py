"""Hand-checked values of the pure metrics, and the correlation scorer's parts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurolabel.core.registry import SCORERS
from neurolabel.core.types import ActivationRecord, SequenceSimulation
from neurolabel.scoring import metrics


def test_correlation_hand_values():
    assert metrics.correlation([1, 0], [1, 0]) == 1.0
    assert metrics.correlation([1, 2, 3], [3, 2, 1]) == -1.0
    # centred vectors (.5,-.5,-.5,.5) and (.5,-.5,.5,-.5) are orthogonal: 0, defined
    assert metrics.correlation([1, 0, 0, 1], [1, 0, 1, 0]) == 0.0
    # 3.5 / sqrt(5 * 4.75)
    assert metrics.correlation([1, 2, 3, 4], [2, 4, 5, 4]) == pytest.approx(3.5 / math.sqrt(23.75))


def test_correlation_undefined_is_none_not_zero():
    assert metrics.correlation([2, 2, 2], [0, 1, 5]) is None  # constant predictions
    assert metrics.correlation([0, 1, 5], [0, 0, 0]) is None  # constant truth
    assert metrics.correlation([1], [1]) is None
    assert metrics.correlation([], []) is None
    with pytest.raises(ValueError):
        metrics.correlation([1, 2], [1, 2, 3])


def test_active_masks():
    assert metrics.true_active([0, 1, 4, 10]).tolist() == [False, False, False, True]
    assert metrics.true_active([0, 5, 6, 10]).tolist() == [False, True, True, True]
    assert metrics.true_active([-1, -2]).tolist() == [False, False]
    assert metrics.predicted_active([0, 2, 8, 10]).tolist() == [False, False, True, True]
    assert metrics.predicted_active([3, 3]).tolist() == [False, False]


def test_balanced_accuracy_and_f1_hand_values():
    pred, actual = [1, 1, 0, 0], [1, 0, 0, 0]
    assert metrics.balanced_accuracy(pred, actual) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.f1(pred, actual) == pytest.approx(2 / 3)  # TP=1 FP=1 FN=0
    assert metrics.f1([0, 0], [1, 0]) == 0.0  # defined: nothing predicted, one missed
    assert metrics.f1([0, 0], [0, 0]) is None
    assert metrics.balanced_accuracy([1, 0], [0, 0]) is None  # one class only


def test_auprc_hand_values_and_ties():
    # P=1 at R=.5, P=2/3 at R=1
    assert metrics.auprc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # tied top pair counts as one threshold: P=.5 at R=.5, P=2/3 at R=1
    assert metrics.auprc([1, 1, 0], [1, 0, 1]) == pytest.approx(0.25 + 1 / 3)
    assert metrics.auprc([1, 2], [0, 0]) is None


def test_auprc_matches_sklearn_average_precision():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 5, size=30).astype(float)
        a = rng.random(30) < 0.3
        if a.sum() == 0:
            continue
        assert metrics.auprc(s, a) == pytest.approx(sklearn_metrics.average_precision_score(a, s))


def _auprc_by_argsort(scores, actual):
    """The token-by-token form of average precision: tokens sorted by score, one threshold per
    group of tied scores."""
    s, a = np.asarray(scores, dtype=np.float64), np.asarray(actual, dtype=bool)
    order = np.argsort(-s, kind="mergesort")
    s, a = s[order], a[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(a)[last].astype(np.float64)
    recall = tp / a.sum()
    return float((np.diff(np.r_[0.0, recall]) * (tp / (last + 1))).sum())


def test_auprc_equals_the_token_by_token_form_exactly():
    rng = np.random.default_rng(3)
    for trial in range(600):
        n = int(rng.integers(1, 600))
        s = [rng.integers(0, 2, n).astype(float), rng.choice(rng.normal(size=int(rng.integers(1, 30))), n),
             rng.normal(size=n), rng.choice([0.0, -0.0, 1e-300, 5.0, np.nextafter(5.0, 6.0)], n)][trial % 4]
        a = rng.random(n) < rng.random()
        if a.any():
            assert metrics.auprc(s, a) == _auprc_by_argsort(s, a)  # the same float, not approximately
    s = np.array([np.inf, 1.0, 1.0, -np.inf, 0.5])  # infinite scores: the token-by-token form itself
    assert metrics.auprc(s, [1, 0, 1, 0, 1]) == pytest.approx(_auprc_by_argsort(s, [1, 0, 1, 0, 1]))


def _win(acts, kind, wid):
    return ActivationRecord(tokens=tuple(f"t{i}" for i in range(len(acts))), activations=tuple(acts),
                            window_id=wid, split="score", kind=kind)


def _sim(vals):
    return SequenceSimulation(tokens=tuple(f"t{i}" for i in range(len(vals))),
                              expected_activations=tuple(float(v) for v in vals), method="test")


def test_correlation_scorer_concatenates_top_and_random():
    scorer = SCORERS["correlation"]()
    recs = [_win([0, 5, 1], "top", 1), _win([0, 0, 2], "random", 2)]
    sims = [_sim([0, 9, 0]), _sim([0, 0, 1])]
    r = scorer.score(sims, recs, simulator="x")
    # pred (0,9,0,0,0,1) vs true (0,5,1,0,0,2), computed by hand
    p, t = np.array([0, 9, 0, 0, 0, 1.0]), np.array([0, 5, 1, 0, 0, 2.0])
    pc, tc = p - p.mean(), t - t.mean()
    assert r.score == pytest.approx(float(pc @ tc / np.sqrt((pc @ pc) * (tc @ tc))))
    assert r.parts["top_and_random"] == r.score
    assert r.parts["top_only"] == pytest.approx(metrics.correlation([0, 9, 0], [0, 5, 1]))
    assert r.parts["random_only"] == pytest.approx(1.0)
    # true active: >= 2.5 -> only the 5; predicted active: > 4.5 -> only the 9
    assert r.parts["balanced_accuracy"] == 1.0 and r.parts["f1"] == 1.0 and r.parts["auprc"] == 1.0
    assert r.n_tokens == 6 and r.simulator == "x" and r.scorer == "correlation" and r.method == "test"


def test_correlation_scorer_constant_predictions_undefined():
    scorer = SCORERS["correlation"]()
    r = scorer.score([_sim([1, 1, 1])], [_win([0, 5, 1], "top", 1)], simulator="x")
    assert r.score is None
    assert r.parts["top_and_random"] is None and r.parts["auprc"] is None
    assert r.parts["random_only"] is None  # no random window


def test_correlation_scorer_rejects_mismatched_lengths():
    from neurolabel.core.errors import ScoringError

    with pytest.raises(ScoringError, match="2 predictions for 3 tokens"):
        SCORERS["correlation"]().score([_sim([1, 2])], [_win([0, 5, 1], "top", 1)], simulator="x")


def test_openai_comparable_part_uses_as_many_top_as_random_windows():
    scorer = SCORERS["correlation"]()
    # three top windows (the weakest listed first) and one random window: the comparable part
    # keeps the strongest top window and the random one
    recs = [_win([0, 1, 0], "top", 1), _win([0, 5, 1], "top", 2), _win([2, 0, 0], "top", 3),
            _win([0, 0, 2], "random", 4)]
    sims = [_sim([3, 0, 0]), _sim([0, 9, 0]), _sim([0, 0, 7]), _sim([0, 0, 1])]
    r = scorer.score(sims, recs, simulator="x")
    assert r.parts["openai_comparable"] == pytest.approx(metrics.correlation([0, 9, 0, 0, 0, 1], [0, 5, 1, 0, 0, 2]))
    assert r.parts["openai_comparable"] != pytest.approx(r.score)
    assert r.parts["predicted_active_share"] == pytest.approx(2 / 12)  # the 9 and the 7 are above the midpoint 4.5
    none = scorer.score([_sim([1, 1, 1])], [_win([0, 5, 1], "top", 1)], simulator="x")
    assert none.parts["openai_comparable"] is None  # no random window
    assert none.parts["predicted_active_share"] == 0.0  # empty on the held-out windows


def test_correlation_with_a_centred_true_side_is_the_same_float():
    rng = np.random.default_rng(4)
    cases = [(rng.normal(size=n), rng.normal(size=n)) for n in (0, 1, 2, 3, 50, 2560)]
    cases += [(np.ones(5), rng.normal(size=5)), (rng.normal(size=5), np.full(5, 2.0)),
              (rng.integers(0, 2, 40).astype(float), rng.random(40))]
    for p, t in cases:
        assert metrics.correlation_centred(p, metrics.centred(t)) == metrics.correlation(p, t)
    with pytest.raises(ValueError, match="3 predictions for 2"):
        metrics.correlation_centred([1.0, 2.0, 3.0], metrics.centred([1.0, 2.0]))


def test_correlation_se_is_the_jackknife_over_windows():
    rng = np.random.default_rng(3)
    lengths = [5, 9, 3, 7, 12, 6]
    true = rng.normal(size=sum(lengths))
    pred = 0.6 * true + rng.normal(size=true.size)
    starts = np.cumsum([0] + lengths)
    loo = np.array([metrics.correlation(np.delete(pred, np.s_[starts[i]:starts[i + 1]]),
                                        np.delete(true, np.s_[starts[i]:starts[i + 1]])) for i in range(len(lengths))])
    w = len(lengths)
    expect = math.sqrt((w - 1) / w * float(((loo - loo.mean()) ** 2).sum()))
    assert metrics.correlation_se(pred, true, lengths) == pytest.approx(expect, rel=1e-9)
    # an empty window changes nothing; one window, or predictions constant without it: undefined
    assert metrics.correlation_se(pred, true, lengths[:2] + [0] + lengths[2:]) == pytest.approx(expect, rel=1e-9)
    assert metrics.correlation_se(pred[:5], true[:5], [5]) is None
    with pytest.raises(ValueError, match="tokens in the windows"):
        metrics.correlation_se(pred, true, [1, 2])


def test_correlation_scorer_reports_the_standard_error():
    scorer = SCORERS["correlation"]()
    recs = [_win([0, 5, 1], "top", 1), _win([0, 1, 2], "top", 3), _win([0, 0, 2], "random", 2)]
    sims = [_sim([0, 9, 0]), _sim([1, 0, 1]), _sim([0, 0, 1])]
    r = scorer.score(sims, recs, simulator="x")
    assert r.parts["se"] == pytest.approx(metrics.correlation_se([0, 9, 0, 1, 0, 1, 0, 0, 1], [0, 5, 1, 0, 1, 2, 0, 0, 2],
                                                                 [3, 3, 3]))
    assert r.parts["se"] > 0


def test_standard_error_from_the_true_side_made_once_is_the_same_float():
    rng = np.random.default_rng(6)
    for lengths in ([5, 9, 3, 7, 12, 6], [64] * 40, [0, 4, 0, 6], [8]):
        t = rng.normal(size=sum(lengths))
        sums = metrics.window_sums(t, lengths)
        for p in (0.5 * t + rng.normal(size=t.size), rng.choice([0.0, 1.0], t.size), np.ones(t.size)):
            assert metrics.correlation_se_windows(p, sums) == metrics.correlation_se(p, t, lengths)
    with pytest.raises(ValueError, match="3 predictions for 2"):
        metrics.correlation_se_windows([1.0, 2.0, 3.0], metrics.window_sums([1.0, 2.0], [1, 1]))
