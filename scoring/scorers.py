"""Scorers: turn simulations and true activations into a :class:`core.ScoreResult`."""

from __future__ import annotations

from typing import Any, Sequence

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SCORERS
from neurolabel.core.types import ActivationRecord, ScoreResult, SequenceSimulation
from neurolabel.scoring import metrics


def _balanced(simulations: Sequence[SequenceSimulation], records: Sequence[ActivationRecord]
              ) -> tuple[list[float], list[float]]:
    """Tokens of as many top as random windows (``n = min`` of the two counts: the first ``n``
    of each, top windows highest first), as OpenAI's scoring uses equal numbers of each."""
    top = [(s, r) for s, r in zip(simulations, records) if r.kind == "top"]
    rnd = [(s, r) for s, r in zip(simulations, records) if r.kind == "random"]
    top.sort(key=lambda sr: -sr[1].max_activation)
    n = min(len(top), len(rnd))
    pairs = top[:n] + rnd[:n]
    return _flatten([s for s, _ in pairs], [r for _, r in pairs])


def _flatten(simulations: Sequence[SequenceSimulation], records: Sequence[ActivationRecord],
             kinds: tuple[str, ...] | None = None) -> tuple[list[float], list[float]]:
    pred: list[float] = []
    true: list[float] = []
    for sim, rec in zip(simulations, records):
        if kinds is None or rec.kind in kinds:
            pred.extend(sim.expected_activations)
            true.extend(rec.activations)
    return pred, true


@SCORERS.register("correlation")
class CorrelationScorer:
    """OpenAI's neuron-explainer score: Pearson correlation over all tokens of all scored
    windows concatenated (top and random windows together, raw true activations).

    Parts: ``top_and_random`` (= the score), ``random_only``, ``top_only``,
    ``openai_comparable`` (the same correlation over as many top as random windows, as OpenAI's
    scoring uses equal numbers of each; ``None`` without random windows),
    ``predicted_active_share`` (share of scored tokens predicted active: 0 means the
    explanation is empty on the held-out windows), and the
    detection-style ``balanced_accuracy``, ``auprc`` and ``f1`` of predicted vs true
    active tokens (true active: >= ``active_fraction`` of the largest scored activation;
    predicted active: above the midpoint of the prediction range; AUPRC ranks tokens by
    the raw predictions)."""

    kind = "correlation"

    def __init__(self, active_fraction: float = metrics.DEFAULT_ACTIVE_FRACTION) -> None:
        self.active_fraction = active_fraction

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "CorrelationScorer":
        """The scorer with its default settings."""
        return cls(**kwargs)

    def score(self, simulations: Sequence[SequenceSimulation], records: Sequence[ActivationRecord],
              *, simulator: str) -> ScoreResult:
        """Score ``simulations`` against ``records`` (same order, same token counts)."""
        if len(simulations) != len(records):
            raise ScoringError(f"{len(simulations)} simulations for {len(records)} windows")
        for i, (sim, rec) in enumerate(zip(simulations, records)):
            if len(sim.expected_activations) != len(rec.activations):
                raise ScoringError(
                    f"window {rec.window_id} (#{i}): {len(sim.expected_activations)} predictions "
                    f"for {len(rec.activations)} tokens"
                )
        pred, true = _flatten(simulations, records)
        if not pred:
            raise ScoringError("no tokens to score")
        main = metrics.correlation(pred, true)
        actual = metrics.true_active(true, fraction=self.active_fraction)
        guessed = metrics.predicted_active(pred)
        parts: dict[str, float | None] = {
            "top_and_random": main,
            "random_only": metrics.correlation(*_flatten(simulations, records, ("random",))),
            "top_only": metrics.correlation(*_flatten(simulations, records, ("top",))),
            "openai_comparable": metrics.correlation(*_balanced(simulations, records)),
            "predicted_active_share": float(guessed.mean()) if len(guessed) else 0.0,
            "balanced_accuracy": metrics.balanced_accuracy(guessed, actual),
            "auprc": metrics.auprc(pred, actual) if main is not None else None,
            "f1": metrics.f1(guessed, actual),
        }
        methods = sorted({s.method for s in simulations if s.method})
        return ScoreResult(
            score=main,
            scorer=self.kind,
            simulator=simulator,
            parts=parts,
            n_tokens=len(pred),
            split="score",
            method="+".join(methods),
        )
