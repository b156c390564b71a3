"""Plugin contracts. Constructors only store their arguments; heavy resources
(models, clients, ontologies) are created by factories and passed in."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from neurolabel.core.types import ActivationRecord, Explanation, NeuronRecord, ScoreResult, SequenceSimulation


@runtime_checkable
class Explainer(Protocol):
    """Turns a neuron's explain-split windows into candidate explanations."""

    kind: str
    """Registry tag."""
    version: str
    """Bumped when the explainer's output may change."""
    default_simulator: str
    """Registry tag of the simulator its explanations are scored with unless the run names
    another (e.g. ``"symbolic"`` for class expressions, ``"llm"`` for free text)."""

    def explain(self, record: NeuronRecord) -> list[Explanation]:
        """Explanations of ``record``'s neuron, best first. Uses only explain-split windows.
        Raises :class:`core.errors.ExplanationError` when it cannot explain."""
        ...


@runtime_checkable
class Simulator(Protocol):
    """Predicts one activation per token from an explanation alone."""

    kind: str

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """Predicted activation for each of ``tokens``."""
        ...

    # Optional capabilities, used when present: ``applies(explanation) -> bool`` (which
    # explanations it can simulate), ``simulate_many(explanation, token_lists)`` (batched), and
    # ``score_details(explanation, record, scorer) -> Explanation`` (scores of an explanation's
    # parts, e.g. each facet's, added after the pipeline scored it).


@runtime_checkable
class Scorer(Protocol):
    """Turns simulations and true activations into a :class:`ScoreResult`."""

    kind: str

    def score(
        self,
        simulations: Sequence[SequenceSimulation],
        records: Sequence[ActivationRecord],
        *,
        simulator: str,
    ) -> ScoreResult:
        """Score ``simulations`` against the true activations of ``records`` (same order)."""
        ...
