"""The facets simulator: a faceted label (``explainers/facets.py``) predicts a neuron as the graded
union of its facets — at every token, ``max_f weight_f × p_f`` where ``p_f`` is facet ``f``'s own
label simulated by the facet's simulator (scaled to [0, 1]: divided by the largest value of the
simulator's distribution when it reports one, e.g. 10 for the LLM simulator, then clipped) and
``weight_f`` is the facet's activation level relative to the strongest facet.

:func:`score_facets` then scores each facet alone on the same held-out windows, so every facet
carries its own score.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import Explanation, NeuronRecord, SequenceSimulation


def facet_explanation(explanation: Explanation, facet: Mapping[str, Any]) -> Explanation:
    """One facet as an explanation of its own (its sub-explainer's text and structure)."""
    return Explanation(model=explanation.model, neuron=explanation.neuron, explainer=str(facet["explainer"]),
                       explainer_version=str(facet.get("explainer_version", "")), text=str(facet["label"]),
                       structured=dict(facet.get("structured") or {}))


def _facets(explanation: Explanation) -> list[Mapping[str, Any]]:
    facets = (explanation.structured or {}).get("facets")
    if not facets:
        raise ScoringError(
            f"explanation of neuron {explanation.neuron} by {explanation.explainer!r} has no facets "
            "(structured['facets']); the facets simulator only scores faceted labels"
        )
    return list(facets)


@SIMULATORS.register("facets")
class FacetSimulator:
    """Graded union of the facets' own simulations."""

    kind = "facets"

    def __init__(self, simulators: Mapping[str, Any] | None = None) -> None:
        self.simulators = dict(simulators or {})
        """Simulators by tag; tags a facet names that are missing are built from the registry on first use."""

    @classmethod
    def from_defaults(cls) -> "FacetSimulator":
        """Facet simulators are built from the registry on first use."""
        return cls()

    def applies(self, explanation: Explanation) -> bool:
        """Only faceted labels."""
        return bool((explanation.structured or {}).get("facets"))

    def _sim(self, tag: str) -> Any:
        if tag not in self.simulators:
            factory = SIMULATORS[tag]
            make = getattr(factory, "from_defaults", None)
            self.simulators[tag] = make() if make is not None else factory()
        return self.simulators[tag]

    def score_details(self, explanation: Explanation, record: NeuronRecord, scorer: Any = None) -> Explanation:
        """Each facet's own held-out score (:func:`score_facets`); the pipeline calls it after
        scoring a faceted label with this simulator."""
        return score_facets(explanation, record, simulator=self, scorer=scorer)

    def facet_predictions(self, explanation: Explanation, facet: Mapping[str, Any],
                          token_lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Facet ``facet``'s predictions per window, scaled to [0, 1]."""
        sim = self._sim(str(facet["simulator"]))
        sub = facet_explanation(explanation, facet)
        many = getattr(sim, "simulate_many", None)
        sims = list(many(sub, token_lists)) if many is not None else [sim.simulate(sub, t) for t in token_lists]
        out = []
        for s in sims:
            v = np.asarray(s.expected_activations, dtype=float)
            top = max(s.distribution_values) if s.distribution_values else 1.0
            out.append(np.clip(v / (top if top > 0 else 1.0), 0.0, 1.0))
        return out

    def simulate_many(self, explanation: Explanation, token_lists: Sequence[Sequence[str]]) -> list[SequenceSimulation]:
        """:meth:`simulate` for several windows (each facet's simulator called once for all)."""
        facets = _facets(explanation)
        union = [np.zeros(len(t)) for t in token_lists]
        for f in facets:
            w = float(f.get("weight", 1.0))
            for i, p in enumerate(self.facet_predictions(explanation, f, token_lists)):
                union[i] = np.maximum(union[i], w * p)
        return [SequenceSimulation(tokens=tuple(t), expected_activations=tuple(float(x) for x in u), method="facets")
                for t, u in zip(token_lists, union)]

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """``max_f weight_f × p_f`` at each token."""
        return self.simulate_many(explanation, [tokens])[0]


def score_facets(explanation: Explanation, record: NeuronRecord, *, simulator: FacetSimulator | None = None,
                 scorer: Any = None) -> Explanation:
    """``explanation`` with each facet's ``score`` (its own label alone, scored on the record's
    held-out windows like any label) filled into ``structured["facets"]``; the explanation's own
    score is left as it is."""
    from neurolabel.scoring.scorers import CorrelationScorer
    from neurolabel.scoring.validate import scored_windows

    simulator = simulator or FacetSimulator()
    scorer = scorer or CorrelationScorer()
    windows = scored_windows(record)
    if not windows:
        raise ScoringError(f"neuron {record.neuron} of {record.model} has no score-split windows to score facets on")
    tokens = [w.tokens for w in windows]
    facets = []
    for f in _facets(explanation):
        preds = simulator.facet_predictions(explanation, f, tokens)
        sims = [SequenceSimulation(tokens=tuple(t), expected_activations=tuple(float(x) for x in p))
                for t, p in zip(tokens, preds)]
        result = scorer.score(sims, windows, simulator=str(f["simulator"]))
        facets.append({**f, "score": None if result.score is None else round(result.score, 6)})
    return replace(explanation, structured={**explanation.structured, "facets": facets})
