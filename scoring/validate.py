"""Simulate-and-score: validate an explanation on a neuron's held-out windows, and the
acceptance gate (an explanation is accepted when its score reaches the threshold)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Iterable, NamedTuple, Sequence

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


SELECTION_SE = 1.0
"""How many standard errors of the best score a candidate may fall short of it and still be
chosen for its broader evidence (:func:`choose_label`)."""


class LabelCandidate(NamedTuple):
    """What :func:`choose_label` reads of one accepted explanation."""

    score: float
    se: float | None
    """Jackknife standard error of ``score`` over the scored windows (``None``: not known)."""
    fit_tokens: int | None
    """Explain-split tokens the explanation was fitted on (``None``: not said)."""
    group: tuple = ()
    """Its explainer and version: only each group's best-scored candidate is considered."""
    order: int = 0
    """Final tie-break, lowest first (a stored id, a rank)."""


def choose_label(candidates: Sequence[LabelCandidate], se_margin: float = SELECTION_SE) -> int | None:
    """Index in ``candidates`` (accepted explanations of one neuron) of the neuron's label.

    A one-standard-error rule: of each explainer version's best-scored candidate, those whose score
    is within ``se_margin`` standard errors (the best one's ``se``) of the best score are taken as
    equally good on the held-out windows, and among them the one fitted on the most explain-split
    tokens wins (then the higher score, then ``order``). A label fitted on the statistics of the
    whole explain split (the token lists) is then preferred to one fitted on the kept windows
    (concept induction, PMI) unless the latter is better by more than the noise of the held-out
    windows. Chosen on units 25-49 of ``bench/quality.py``'s layers, reported on units 0-24: the
    label learnt on the default corpus holds better on other text (cross-corpus), at a small cost
    in-corpus (see README). Without standard errors it is the highest-scoring candidate."""
    if not candidates:
        return None
    best_of: dict[tuple, int] = {}
    for i, c in enumerate(candidates):
        j = best_of.get(c.group)
        if j is None or (c.score, -c.order) > (candidates[j].score, -candidates[j].order):
            best_of[c.group] = i
    pool = sorted(best_of.values())
    top = max(pool, key=lambda i: (candidates[i].score, -candidates[i].order))
    floor = candidates[top].score - se_margin * (candidates[top].se or 0.0)
    near = [i for i in pool if candidates[i].score >= floor]
    return max(near, key=lambda i: (candidates[i].fit_tokens or 0, candidates[i].score, -candidates[i].order))


def label_candidate(explanation: Explanation, order: int = 0) -> LabelCandidate:
    """The :class:`LabelCandidate` of a scored explanation."""
    s = explanation.score
    fit = (explanation.structured or {}).get("fit_tokens")
    return LabelCandidate(score=s.score, se=s.parts.get("se"), fit_tokens=int(fit) if fit is not None else None,
                          group=(explanation.explainer, explanation.explainer_version), order=order)


def best_accepted(explanations: Iterable[Explanation], threshold: float | None = None) -> Explanation | None:
    """The neuron's label: of its accepted explanations, the one :func:`choose_label` picks
    (``None`` when none passes the gate)."""
    ok = [e for e in explanations if is_accepted(e, threshold)]
    i = choose_label([label_candidate(e, k) for k, e in enumerate(ok)])
    return None if i is None else ok[i]
