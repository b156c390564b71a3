"""Contract tests: every registered simulator and scorer, built by the registry from its tag as a
run builds it (:func:`pipeline.plugins.build`), on the recorded SmolLM2 neuron of the explainer
contract test.

Simulators get the explanations the cheap explainers write for that neuron (tokens, concept
induction, PMI) plus an output-side and a faceted label; each simulator must apply to at least one
of them, and on every score-split window it applies to it returns one finite prediction per token,
the same twice. Scorers must give a perfect simulation a perfect score (or refuse the protocol
with a ScoringError saying what to use instead) and refuse mismatched lengths."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SCORERS, SIMULATORS
from neurolabel.core.types import Explanation, NeuronRecord, ScoreResult, SequenceSimulation
from neurolabel.pipeline.plugins import build
from neurolabel.pipeline.simulators import applies

pytestmark = pytest.mark.slow

DATA = Path(__file__).parents[1] / "explainers" / "data" / "recorded_neuron.json"


@pytest.fixture(scope="module")
def record() -> NeuronRecord:
    from neurolabel.activations.openai_format import read_records

    [rec] = read_records(DATA)
    return rec


@pytest.fixture(scope="module")
def explanations(record) -> list[Explanation]:
    out: list[Explanation] = []
    for tag in ("tokens", "concept_induction", "pmi"):
        out.extend(build("explainer", tag).explain(record))
    top = record.windows("top", "explain")[0]
    peak = max(range(len(top.tokens)), key=lambda i: top.activations[i])
    word = top.tokens[peak]
    base = dict(model=record.model, neuron=record.neuron, explainer_version="1")
    out.append(Explanation(**base, explainer="output_tokens", text=f"promotes: {word.strip()}",
                           structured={"promoted": [{"id": 1, "token": word, "weight": 1.0}], "suppressed": []}))
    first = out[0]
    out.append(Explanation(**base, explainer="facets", text=f"{first.text} | {word.strip()}",
                           structured={"facets": [
                               {"label": first.text, "explainer": first.explainer, "simulator": "tokens",
                                "weight": 1.0, "share": 0.5, "structured": dict(first.structured)},
                               {"label": word.strip(), "explainer": "pmi", "simulator": "lexical", "weight": 0.5,
                                "share": 0.5, "structured": {}}]}))
    return out


@pytest.mark.parametrize("tag", SIMULATORS.tags())
def test_simulator_contract(tag: str, record: NeuronRecord, explanations: list[Explanation]):
    if tag == "llm":
        pytest.importorskip("transformers")
    sim = build("simulator", tag)
    assert sim.kind == tag
    usable = [e for e in explanations if applies(sim, e)]
    assert usable, f"simulator {tag!r} applies to none of {[e.explainer for e in explanations]}"
    windows = record.windows("top", "score")[:1] + record.windows("random", "score")[:1]
    for e in usable[:1]:
        singles = []
        for w in windows:
            got = sim.simulate(e, w.tokens)
            assert isinstance(got, SequenceSimulation)
            assert tuple(got.tokens) == tuple(w.tokens)
            assert len(got.expected_activations) == len(w.tokens)
            assert all(isinstance(v, float) and math.isfinite(v) for v in got.expected_activations), got
            singles.append(got.expected_activations)
        assert sim.simulate(e, windows[0].tokens).expected_activations == singles[0]  # deterministic
        many = getattr(sim, "simulate_many", None)
        if many is not None:  # the batched form agrees with one window at a time
            batched = many(e, [w.tokens for w in windows])
            assert len(batched) == len(windows)
            for s, single in zip(batched, singles):
                assert s.expected_activations == pytest.approx(single, abs=1e-3)


@pytest.mark.parametrize("tag", SCORERS.tags())
def test_scorer_contract(tag: str, record: NeuronRecord):
    scorer = build("scorer", tag)
    assert scorer.kind == tag
    windows = record.windows("top", "score") + record.windows("random", "score")
    perfect = [SequenceSimulation(tokens=w.tokens, expected_activations=tuple(float(a) for a in w.activations))
               for w in windows]
    try:
        got = scorer.score(perfect, windows, simulator="truth")
    except ScoringError as exc:  # a scorer that does not correlate simulations must say what to use
        assert "use" in str(exc), exc
        return
    assert isinstance(got, ScoreResult)
    assert got.scorer == tag and got.simulator == "truth" and got.n_tokens == sum(len(w.tokens) for w in windows)
    assert got.score == pytest.approx(1.0)
    assert all(v is None or isinstance(v, float) for v in dict(got.parts).values())
    with pytest.raises(ScoringError):
        scorer.score(perfect[:-1], windows, simulator="truth")
    short = [SequenceSimulation(tokens=s.tokens[:-1], expected_activations=s.expected_activations[:-1])
             for s in perfect]
    with pytest.raises(ScoringError):
        scorer.score(short, windows, simulator="truth")
