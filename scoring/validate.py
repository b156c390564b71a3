"""Simulate-and-score: validate an explanation on a neuron's held-out windows, and the
acceptance gate (an explanation is accepted when its score reaches the threshold)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Iterable, Sequence

from neurolabel.core.errors import ScoringError
from neurolabel.core.protocols import Scorer, Simulator
from neurolabel.core.settings import get_settings
from neurolabel.core.types import ActivationRecord, Explanation, NeuronRecord, SequenceSimulation
from neurolabel.scoring.scorers import FlatSimulations

log = logging.getLogger(__name__)


def scored_windows(record: NeuronRecord) -> tuple[ActivationRecord, ...]:
    """The held-out windows an explanation is scored on: score-split top windows, then
    score-split random windows."""
    return record.windows("top", "score") + record.windows("random", "score")


def simulate_windows(simulator: Simulator, explanation: Explanation,
                     windows: Sequence[ActivationRecord]) -> list[SequenceSimulation]:
    """One simulation per window; uses the simulator's batched ``simulate_many`` when it has one."""
    many = getattr(simulator, "simulate_many", None)
    token_lists = [w.tokens for w in windows]
    if many is not None:
        got = many(explanation, token_lists)
        sims = got if isinstance(got, (list, FlatSimulations)) else list(got)  # FlatSimulations: the scorer reads its array
    else:
        sims = [simulator.simulate(explanation, toks) for toks in token_lists]
    if len(sims) != len(windows):
        raise ScoringError(f"simulator {simulator.kind!r} returned {len(sims)} simulations for {len(windows)} windows")
    return sims


def simulate_and_score(explanation: Explanation, record: NeuronRecord, *, simulator: Simulator,
                       scorer: Scorer | None = None) -> Explanation:
    """``explanation`` with its :class:`core.ScoreResult` on ``record``'s held-out windows
    (score-split top and random windows only; explain-split windows are never used).

    Raises :class:`ScoringError` when the record has no score-split windows."""
    if scorer is None:
        from neurolabel.scoring.scorers import CorrelationScorer

        scorer = CorrelationScorer()
    if explanation.neuron != record.neuron:
        raise ScoringError(f"explanation of neuron {explanation.neuron} scored on record of {record.neuron}")
    windows = scored_windows(record)
    if not windows:
        raise ScoringError(
            f"neuron {record.neuron} of {record.model} has no score-split top or random windows to score on"
        )
    sims = simulate_windows(simulator, explanation, windows)
    result = scorer.score(sims, windows, simulator=simulator.kind)
    log.debug("%s %s %r: %s", record.neuron, explanation.explainer, explanation.text, result.score)
    return replace(explanation, score=result)


def is_accepted(explanation: Explanation, threshold: float | None = None) -> bool:
    """True when the explanation has a defined score >= ``threshold`` (default: settings.score_threshold)."""
    t = get_settings().score_threshold if threshold is None else threshold
    s = explanation.score
    return s is not None and s.score is not None and s.score >= t


def best_accepted(explanations: Iterable[Explanation], threshold: float | None = None) -> Explanation | None:
    """The neuron's label: its best accepted explanation, or ``None`` when none passes the gate."""
    ok = [e for e in explanations if is_accepted(e, threshold)]
    return max(ok, key=lambda e: e.score.score) if ok else None  # type: ignore[union-attr]
