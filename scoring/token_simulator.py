"""The graded token simulator: a token-list label (``structured["tokens"]`` of the ``tokens`` and
``token_tiers`` explainers: ``[[token, weight, count], …]`` and ``structured["baseline"]``)
predicts, for every token of a window:

1. the weight of its entry when the token is listed, compared as the tokenizer wrote it (the
   leading space of a word-initial token included);
2. else, when the label has ``structured["forms"]`` (``[[form, weight], …]``), the weight of the
   token's form — its text lower-cased without surrounding space (:func:`ontology.lexical.token_form`),
   so a label listing ``" With"`` also reads ``"with"`` and ``" WITH"`` on other text;
3. else the baseline plus, when the label has ``structured["kinds"]`` (``[[kind, delta], …]``), the
   deltas of the token's lexical kinds (:func:`ontology.lexical.backoff_kinds`: orthographic kinds
   such as ``WordContinuationPiece`` or ``ClosingBracket``, and function-word classes such as
   ``Preposition``), added up — the back-off for tokens the list does not name.

Labels without ``forms`` or ``kinds`` are read by step 1 and the baseline alone, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import Explanation, SequenceSimulation


@dataclass(frozen=True)
class TokenLabel:
    """The parts of a token-list label the simulator reads."""

    weights: Mapping[str, float]
    """Listed token → its weight."""
    baseline: float
    """Prediction for a token neither listed nor of a listed form, before its kinds' deltas."""
    forms: Mapping[str, float]
    """Token form → weight, for tokens not listed exactly (empty: no form matching)."""
    kinds: Mapping[str, float]
    """Lexical kind → delta added to the baseline for the other tokens of that kind (empty: none)."""

    def predict(self, tokens: Sequence[str]) -> list[float]:
        """The prediction for each token of one window (see the module docstring)."""
        from neurolabel.ontology.lexical import backoff_kinds, token_form

        kinds = backoff_kinds(tokens) if self.kinds else None
        out = []
        for i, t in enumerate(tokens):
            w = self.weights.get(t)
            if w is None and self.forms:
                w = self.forms.get(token_form(t))
            if w is None:
                w = self.baseline
                if kinds is not None:
                    w += sum(self.kinds.get(k, 0.0) for k in kinds[i])
            out.append(w)
        return out


def token_label(explanation: Explanation) -> TokenLabel:
    """The :class:`TokenLabel` of a token-list explanation; ScoringError when it has none or it
    is malformed."""
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
        forms = {str(f): float(w) for f, w in st.get("forms") or ()}
        kinds = {str(k): float(d) for k, d in st.get("kinds") or ()}
    except (TypeError, ValueError, IndexError) as exc:
        raise ScoringError(f"explanation of neuron {explanation.neuron}: malformed token list: {exc}") from None
    return TokenLabel(weights, baseline, forms, kinds)


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
        """The listed weight of each token, else its form's, else the baseline (plus its kinds' deltas)."""
        label = token_label(explanation)
        return SequenceSimulation(tokens=tuple(tokens), expected_activations=tuple(label.predict(tokens)),
                                  method="token-table")
