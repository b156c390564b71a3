"""The graded token simulator: a token-list label (``structured["tokens"]`` of the ``tokens``
explainer: ``[[token, weight, count], …]`` and ``structured["baseline"]``) predicts, for every
token of a window, the weight of its entry when it is listed and the baseline otherwise.

Tokens are compared as the tokenizer wrote them (the leading space of a word-initial token
included), so a label learnt on one model's records applies to that model's tokens.
"""

from __future__ import annotations

from typing import Any, Sequence

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import Explanation, SequenceSimulation


def token_weights(explanation: Explanation) -> tuple[dict[str, float], float]:
    """``(token → weight, baseline)`` of a token-list label; ScoringError when it has none."""
    st = explanation.structured or {}
    entries = st.get("tokens")
    if not entries:
        raise ScoringError(
            f"explanation of neuron {explanation.neuron} by {explanation.explainer!r} has no token list "
            "(structured['tokens']); the token simulator scores token-list labels"
        )
    try:
        weights = {str(e[0]): float(e[1]) for e in entries}
        baseline = float(st.get("baseline", 0.0))
    except (TypeError, ValueError, IndexError) as exc:
        raise ScoringError(f"explanation of neuron {explanation.neuron}: malformed token list: {exc}") from None
    return weights, baseline


@SIMULATORS.register("tokens")
class TokenSimulator:
    """Graded prediction from a weighted token list."""

    kind = "tokens"

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "TokenSimulator":
        """Nothing to load."""
        return cls(**kwargs)

    def applies(self, explanation: Explanation) -> bool:
        """Only explanations that carry a token list."""
        return bool((explanation.structured or {}).get("tokens"))

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """The listed weight of each token, the baseline for the others."""
        weights, baseline = token_weights(explanation)
        return SequenceSimulation(tokens=tuple(tokens),
                                  expected_activations=tuple(weights.get(t, baseline) for t in tokens),
                                  method="token-table")
