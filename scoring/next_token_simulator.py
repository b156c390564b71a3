"""The next-token simulator for output-side labels (``explainers/output_tokens.py``).

An output-side label lists the tokens a neuron promotes when it fires. Read as a prediction of
its activation, it says: the neuron fires where the model should predict one of those tokens.
The simulator sees the window, so at position ``t`` it predicts the promoted weight of the token
that actually comes next (``tokens[t + 1]``, compared stripped and lower-cased), normalised by the
largest promoted weight so values lie in [0, 1]; 0 at the last position and where the next token
is not promoted. It applies only to explanations with ``structured["promoted"]``.
"""

from __future__ import annotations

from typing import Any, Sequence

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import Explanation, SequenceSimulation


def _key(token: str) -> str:
    return token.strip().lower()


@SIMULATORS.register("next_token")
class NextTokenSimulator:
    """Predicts activation from whether the next token is one the neuron promotes."""

    kind = "next_token"

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "NextTokenSimulator":
        """Nothing to load."""
        return cls(**kwargs)

    def applies(self, explanation: Explanation) -> bool:
        """Only explanations that list promoted tokens."""
        return bool((explanation.structured or {}).get("promoted"))

    def table(self, explanation: Explanation) -> dict[str, float]:
        """Normalised weight (0–1] of each promoted token key."""
        promoted = (explanation.structured or {}).get("promoted") or ()
        if not promoted:
            raise ScoringError(
                f"explanation of neuron {explanation.neuron} by {explanation.explainer!r} lists no promoted "
                "tokens (structured['promoted']); the next_token simulator only scores output-side labels"
            )
        top = max(float(p["weight"]) for p in promoted)
        out: dict[str, float] = {}
        for p in promoted:
            k, w = _key(str(p["token"])), float(p["weight"])
            if k and w > 0 and top > 0:
                out[k] = max(out.get(k, 0.0), w / top)
        return out

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """At each position, the normalised promoted weight of the following token."""
        table = self.table(explanation)
        values = [table.get(_key(nxt), 0.0) for nxt in tokens[1:]] + ([0.0] if tokens else [])
        return SequenceSimulation(tokens=tuple(tokens), expected_activations=tuple(values), method="next_token")
