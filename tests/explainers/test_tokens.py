"""The ``tokens`` explainer and the graded token simulator, on records built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from neurolabel.core.errors import ExplanationError, ScoringError
from neurolabel.core.types import ActivationRecord, Explanation, NeuronId, NeuronRecord, TokenStat, TokenStats
from neurolabel.explainers.tokens import TokenExplainer, token_table
from neurolabel.scoring.token_simulator import TokenSimulator
from neurolabel.scoring.validate import simulate_and_score

VOCAB = [" the", " cat", " with", ")", " sat", " a", " dog", ","]
FIRES = {" with": 3.0, ")": 2.0}


def _window(rng, wid: int, split: str, kind: str, fires=FIRES) -> ActivationRecord:
    toks = tuple(str(t) for t in rng.choice(VOCAB, size=12))
    return ActivationRecord(tokens=toks, activations=tuple(fires.get(t, 0.0) for t in toks), window_id=wid,
                            split=split, kind=kind)  # type: ignore[arg-type]


def _record(fires=FIRES, **kw) -> NeuronRecord:
    rng = np.random.default_rng(0)
    wins = [_window(rng, i, "explain" if i % 2 else "score", "top" if i < 12 else "random", fires) for i in range(24)]
    return NeuronRecord(model="toy", neuron=NeuronId(2, 5), top=tuple(w for w in wins if w.kind == "top"),
                        random=tuple(w for w in wins if w.kind == "random"), **kw)


def test_lists_the_tokens_the_neuron_fires_on_with_their_weights():
    [e] = TokenExplainer().explain(_record())
    tokens = {t: w for t, w, _ in e.structured["tokens"]}
    assert [t for t, _, _ in e.structured["tokens"][:2]] == [" with", ")"]  # the most important first
    assert {t: tokens[t] for t in FIRES} == pytest.approx(FIRES)
    assert all(w == 0.0 for t, w in tokens.items() if t not in FIRES)  # the silent ones, at their mean
    assert e.structured["source"] == "windows"
    assert e.text.startswith("fires on “with” 3, “)” 2")  # highest weight first, readable
    scored = simulate_and_score(e, _record(), simulator=TokenSimulator())
    assert scored.score.score == pytest.approx(1.0)  # a token-identity neuron is predicted exactly


def test_graded_weights_predict_strength():
    sim = TokenSimulator()
    e = Explanation(model="toy", neuron=NeuronId(2, 5), explainer="tokens", explainer_version="1", text="x",
                    structured={"tokens": [[" with", 3.0, 5], [")", 2.0, 4]], "baseline": 0.25})
    got = sim.simulate(e, (" the", " with", ")", " With"))
    assert got.expected_activations == (0.25, 3.0, 2.0, 0.25)  # exact token strings, leading space included
    assert sim.applies(e)
    bare = Explanation(model="toy", neuron=NeuronId(2, 5), explainer="pmi", explainer_version="1", text="dogs")
    assert not sim.applies(bare)
    with pytest.raises(ScoringError, match="no token list"):
        sim.simulate(bare, ("a",))


def test_token_statistics_of_the_whole_split_win_over_the_kept_windows():
    # the kept windows say " dog" fires weakly once; the whole explain split says it fires at 1.5 on average
    stats = TokenStats(count=5000, mean=0.05, tokens=(TokenStat(" with", 300, 3.0), TokenStat(" dog", 80, 1.5),
                                                      TokenStat(")", 200, 2.0)))
    rec = _record(token_stats=stats)
    table, overall, source = token_table(rec)
    assert source == "token_stats" and overall == 0.05 and table[" dog"] == (80, 1.5)
    [e] = TokenExplainer().explain(rec)
    tokens = {t: w for t, w, _ in e.structured["tokens"]}
    assert tokens[" with"] == 3.0 and tokens[")"] == 2.0
    # baseline: the mean of every other explain-split token of the corpus
    listed = sum(c for _, _, c in e.structured["tokens"])
    listed_sum = sum(w * c for _, w, c in e.structured["tokens"])
    assert e.structured["baseline"] == pytest.approx((0.05 * 5000 - listed_sum) / (5000 - listed))


def test_at_most_max_tokens_entries():
    fires = {t: float(i + 1) for i, t in enumerate(VOCAB)}
    [e] = TokenExplainer(max_tokens=3).explain(_record(fires))
    assert len(e.structured["tokens"]) == 3


def test_a_neuron_that_never_fires_is_an_error():
    with pytest.raises(ExplanationError, match="no positive activation"):
        TokenExplainer().explain(_record({}))
