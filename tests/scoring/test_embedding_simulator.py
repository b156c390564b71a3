"""Embedding simulator with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import pytest

from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import ActivationRecord, Explanation, NeuronId, NeuronRecord
from neurolabel.scoring.validate import simulate_and_score

pytestmark = pytest.mark.slow

TOKENS = ("The", " big", " dog", " ate", " red", " apples", " near", " the", " cat", ".", "\n")


@pytest.fixture(scope="module")
def sim():
    return SIMULATORS["embedding"].from_defaults()


def _expl(text):
    return Explanation(model="m", neuron=NeuronId(0, 0), explainer="x", explainer_version="1", text=text)


def test_concept_tokens_score_highest(sim):
    out = sim.simulate(_expl("animals"), TOKENS)
    acts = dict(zip(TOKENS, out.expected_activations))
    assert out.tokens == TOKENS and out.method == "embedding"
    assert max(acts, key=acts.get) == " dog"
    assert acts[" cat"] > acts[" near"] and acts[" cat"] > acts[" red"]
    assert acts["\n"] == 0.0
    colors = dict(zip(TOKENS, sim.simulate(_expl("colors"), TOKENS).expected_activations))
    assert max(colors, key=colors.get) == " red"


def test_batched_equals_single(sim):
    wins = [TOKENS, TOKENS[:4], (" apple", " pie")]
    many = sim.simulate_many(_expl("food"), wins)
    for w, m in zip(wins, many):
        assert m.expected_activations == pytest.approx(sim.simulate(_expl("food"), w).expected_activations, abs=1e-5)


def test_right_label_scores_above_wrong_label(sim):
    def win(toks, wid, kind):
        acts = tuple(5.0 if t.strip() in {"dog", "cat", "horse", "bird"} else 0.0 for t in toks)
        return ActivationRecord(tokens=toks, activations=acts, window_id=wid, split="score", kind=kind)

    rec = NeuronRecord(model="m", neuron=NeuronId(0, 0), top=(
        win(("A", " dog", " barked", " at", " the", " bird", "."), 1, "top"),
        win(("My", " horse", " likes", " green", " grass", "."), 2, "top")),
        random=(win(("The", " table", " is", " made", " of", " wood", "."), 3, "random"),
                win(("Her", " cat", " sleeps", " on", " a", " chair", "."), 4, "random")))
    good = simulate_and_score(_expl("animals"), rec, simulator=sim).score.score
    bad = simulate_and_score(_expl("furniture"), rec, simulator=sim).score.score
    assert good > 0.5 and good > bad + 0.3
