"""The symbolic simulator: a class expression predicts each token's activation — 1 where the
token's classes (its annotation with all superclasses) satisfy the expression, else 0 — so
concept-induction labels are validated by the same simulate-and-correlate metric as every
other explainer.

It reads the expression from ``Explanation.structured["expression"]`` (the JSON tree written by
the concept-induction explainer) or, failing that, parses ``structured["manchester"]``, or takes
the one named class of ``structured["iris"]`` (e.g. a PMI class description). An explanation
without any of these (e.g. a free-text LLM label) raises :class:`core.errors.ScoringError`.
"""

from __future__ import annotations

import logging
from typing import Sequence

from neurolabel.core.errors import OntologyError, ScoringError
from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import Explanation, SequenceSimulation
from neurolabel.ontology.annotate import Annotator
from neurolabel.ontology.expression import ClassExpression, parse_manchester

log = logging.getLogger(__name__)


@SIMULATORS.register("symbolic")
class SymbolicSimulator:
    """1/0 prediction per token from a class expression."""

    kind = "symbolic"

    def __init__(self, annotator: Annotator | None = None, *, on_value: float = 1.0) -> None:
        self.annotator = annotator
        """Annotator over the ontology the expressions use; ``None`` = default WordNet one, loaded
        on first use."""
        self.on_value = on_value
        """Predicted activation where the expression holds (0 elsewhere)."""
        self._parsed: dict[object, ClassExpression] = {}

    @classmethod
    def from_defaults(cls) -> "SymbolicSimulator":
        """Over the default WordNet ontology (loaded now)."""
        return cls(Annotator.from_defaults())

    def _annotator(self) -> Annotator:
        if self.annotator is None:
            self.annotator = Annotator.from_defaults()
        return self.annotator

    def expression(self, explanation: Explanation) -> ClassExpression:
        """The class expression an explanation carries (parsed once per explanation text)."""
        st = explanation.structured or {}
        tree, manchester = st.get("expression"), st.get("manchester")
        key = (repr(tree), manchester, repr(st.get("iris")))
        got = self._parsed.get(key)
        if got is not None:
            return got
        onto = self._annotator().ontology
        try:
            if tree:
                got = ClassExpression.from_json(tree, onto)
            elif manchester:
                got = parse_manchester(str(manchester), onto)
            elif len(st.get("iris") or ()) == 1:  # one named class (e.g. a PMI class description)
                got = ClassExpression.atom(onto.find(str(st["iris"][0])))
            else:
                raise ScoringError(
                    f"explanation of neuron {explanation.neuron} by {explanation.explainer!r} has no class "
                    "expression (structured['expression'] or ['manchester']); the symbolic simulator "
                    "only scores concept-induction explanations"
                )
        except OntologyError as exc:
            raise ScoringError(f"explanation of neuron {explanation.neuron}: {exc}") from exc
        self._parsed[key] = got
        return got

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """1 (``on_value``) where the token satisfies the expression, else 0."""
        expr = self.expression(explanation)
        closures = self._annotator().annotate(tokens)
        values = tuple(self.on_value if expr.satisfied_by(c) else 0.0 for c in closures)
        return SequenceSimulation(tokens=tuple(tokens), expected_activations=values, method="symbolic")

    def simulate_many(self, explanation: Explanation, token_lists: Sequence[Sequence[str]]) -> list[SequenceSimulation]:
        """:meth:`simulate` for several windows."""
        return [self.simulate(explanation, toks) for toks in token_lists]
