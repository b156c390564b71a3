"""The symbolic simulators: a class expression predicts each token's activation from the
token's classes (its annotation with all superclasses) and, for ``follows some C`` restrictions,
the classes of the token before it — so concept-induction labels are validated by the same
simulate-and-correlate metric as every other explainer.

- ``"symbolic"`` (:class:`SymbolicSimulator`) is **graded** when the explanation carries weights
  (``structured["weights"]``, one per top-level disjunct of the expression, fitted by the
  explainer on the explain split only, and ``structured["base"]``): a token covered by some
  disjuncts gets the largest of their weights, any other token ``base`` (0 when absent) plus,
  when the label has a back-off (``structured["kinds"]``: ``[[kind, delta], …]``), the deltas of
  the token's lexical kinds (:func:`ontology.lexical.backoff_kinds`), as the token simulator
  backs off. Without weights it is binary.
- ``"symbolic_binary"`` (:class:`BinarySymbolicSimulator`) always predicts 1 where the token
  satisfies the expression, else 0.

Both read the expression from ``Explanation.structured["expression"]`` (the JSON tree written by
the concept-induction explainer) or, failing that, parse ``structured["manchester"]``, or take
the one named class of ``structured["iris"]`` (e.g. a PMI class description). An explanation
without any of these (e.g. a free-text LLM label), or with weights that do not match its
disjuncts, raises :class:`core.errors.ScoringError`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from neurolabel.core.errors import OntologyError, ScoringError
from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import Explanation, SequenceSimulation
from neurolabel.ontology.annotate import Annotator
from neurolabel.ontology.expression import ClassExpression, parse_manchester
from neurolabel.ontology.identity import check_same, content_hash
from neurolabel.ontology.induction import ClosedExamples, close_windows, coverage_vectors, predict_graded
from neurolabel.scoring.scorers import FlatSimulations

log = logging.getLogger(__name__)

_CLOSED_ITEMS = 64
"""Window sets whose closed classes are kept (a neuron's held-out windows are simulated once per
candidate label and simulator: 11 times per neuron with concept induction and PMI)."""
_closed: "OrderedDict[tuple, ClosedExamples]" = OrderedDict()
_by_identity: "dict[tuple, tuple[tuple, ClosedExamples]]" = {}
_closed_lock = threading.Lock()

_PARSED_ITEMS = 4096
"""Parsed expressions kept (shared by the graded and the binary simulator, most recent first)."""
_parsed: "OrderedDict[tuple, ClassExpression]" = OrderedDict()
_PARSED_BY_IDENTITY = 256
"""Labels whose parsed expression is also found by the identity of their structured dict (a
neuron's ~10 labels, each read 4 times: two simulators' ``applies`` and ``simulate``)."""
_parsed_by_identity: "dict[int, tuple[tuple, ClassExpression]]" = {}


def _closed_windows(ann: Annotator, token_lists: Sequence[Sequence[str]]) -> ClosedExamples:
    """The tokens' classes with superclasses, and their previous tokens' (none for a window's
    first token), closed once per window set and ontology (each window's closure memoised,
    :func:`ontology.induction.close_windows`) and shared by both simulators."""
    # the same window objects again (a neuron's labels scored one after another): found by identity,
    # without hashing every token; else by content
    fast = (id(ann.ontology), *map(id, token_lists))
    with _closed_lock:
        hit = _by_identity.get(fast)
        if hit is not None and all(a is b for a, b in zip(hit[0], token_lists)):
            return hit[1]
    key = (id(ann.ontology), tuple(tuple(t) for t in token_lists))
    with _closed_lock:
        got = _closed.get(key)
        if got is not None:
            _closed.move_to_end(key)
    if got is None:
        got = close_windows(ann.ontology, [ann.direct_classes(toks) for toks in token_lists])
        with _closed_lock:
            _closed[key] = got
            while len(_closed) > _CLOSED_ITEMS:
                _closed.popitem(last=False)
    with _closed_lock:  # held: the token lists, so that their ids stay theirs while kept
        _by_identity[fast] = (tuple(token_lists), got)
        while len(_by_identity) > _CLOSED_ITEMS:
            _by_identity.pop(next(iter(_by_identity)))
    return got


_kinds: "OrderedDict[tuple, tuple[list[str], np.ndarray, np.ndarray]]" = OrderedDict()
_kinds_by_identity: "dict[tuple, tuple[tuple, tuple[list[str], np.ndarray, np.ndarray]]]" = {}


def _window_kinds(token_lists: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(names, U, ids)``: the lexical kinds (:func:`ontology.lexical.backoff_kinds`) of every token
    of the windows as the 0/1 matrix ``U[ids]`` (:func:`explainers.tokens.kind_rows`: ``U`` a row per
    distinct kind set, ``ids`` each token's), computed once per window set and found again as
    :func:`_closed_windows` finds its closures (by identity, else by content)."""
    fast = tuple(map(id, token_lists))
    with _closed_lock:
        hit = _kinds_by_identity.get(fast)
        if hit is not None and all(a is b for a, b in zip(hit[0], token_lists)):
            return hit[1]
    key = tuple(tuple(t) for t in token_lists)
    with _closed_lock:
        got = _kinds.get(key)
        if got is not None:
            _kinds.move_to_end(key)
    if got is None:
        from neurolabel.explainers.tokens import kind_rows
        from neurolabel.ontology.lexical import backoff_kinds

        got = kind_rows([ks for toks in token_lists for ks in backoff_kinds(toks)])
        with _closed_lock:
            _kinds[key] = got
            while len(_kinds) > _CLOSED_ITEMS:
                _kinds.popitem(last=False)
    with _closed_lock:  # held: the token lists, so that their ids stay theirs while kept
        _kinds_by_identity[fast] = (tuple(token_lists), got)
        while len(_kinds_by_identity) > _CLOSED_ITEMS:
            _kinds_by_identity.pop(next(iter(_kinds_by_identity)))
    return got


_COVERED_ITEMS = 32
_covered: "OrderedDict[tuple[int, int], tuple[ClassExpression, ClosedExamples, np.ndarray]]" = OrderedDict()
"""Which tokens a label's expression covers on a window set, as the graded simulator found them (any of its
parts), kept for the binary simulator, which scores the same label on the same windows next (a run scores
each concept-induction label with both): ``(id(expression), id(closed windows))`` → (both, held, and the
0/1 vector)."""


def _remember_covered(expr: ClassExpression, closed: ClosedExamples, covered: np.ndarray) -> None:
    with _closed_lock:
        _covered[(id(expr), id(closed))] = (expr, closed, covered)
        while len(_covered) > _COVERED_ITEMS:
            _covered.popitem(last=False)


def _known_covered(expr: ClassExpression, closed: ClosedExamples) -> np.ndarray | None:
    with _closed_lock:
        hit = _covered.get((id(expr), id(closed)))
    return hit[2] if hit is not None and hit[0] is expr and hit[1] is closed else None


@SIMULATORS.register("symbolic")
class SymbolicSimulator:
    """Graded prediction per token from a weighted class expression (binary without weights)."""

    kind = "symbolic"
    graded = True
    """Whether explanation weights are used (the binary subclass sets it False)."""

    def __init__(self, annotator: Annotator | None = None, *, on_value: float = 1.0) -> None:
        self.annotator = annotator
        """Annotator over the ontology the expressions use; ``None`` = the default one, loaded
        on first use."""
        self.on_value = on_value
        """Predicted activation where an unweighted expression holds (0 elsewhere)."""

    @classmethod
    def from_defaults(cls, annotator: Annotator | None = None, **kwargs: Any) -> "SymbolicSimulator":
        """Over ``annotator`` (the run's ontology), else the default ontology (loaded now)."""
        return cls(annotator or Annotator.from_defaults(), **kwargs)

    def applies(self, explanation: Explanation) -> bool:
        """Whether the explanation carries a class expression this simulator can read. A label
        written over another ontology applies (and :meth:`expression` refuses it, naming both),
        so that it is never scored by its words instead."""
        if explanation.ontology_hash and explanation.ontology_hash != content_hash(self._annotator().ontology):
            return True
        try:
            self.expression(explanation)
        except ScoringError:
            return False
        return True

    def _annotator(self) -> Annotator:
        if self.annotator is None:
            self.annotator = Annotator.from_defaults()
        return self.annotator

    def expression(self, explanation: Explanation) -> ClassExpression:
        """The class expression an explanation carries (parsed once per explanation text)."""
        check_same(explanation, self._annotator().ontology, what=f"{self.kind} simulator")
        st = explanation.structured or {}
        tree, manchester, iris = st.get("expression"), st.get("manchester"), st.get("iris")
        onto = self._annotator().ontology
        # the same label again (its simulators' applies() and simulate, every copy made by replace()
        # sharing its structured dict): found by identity, without writing out its tree
        seen = (st, tree, manchester, iris, onto)
        hit = _parsed_by_identity.get(id(st))
        if hit is not None and all(a is b for a, b in zip(hit[0], seen)):
            return hit[1]
        key = (id(onto), repr(tree), manchester, repr(iris))
        with _closed_lock:
            got = _parsed.get(key)
            if got is not None:
                _parsed.move_to_end(key)
        if got is not None:
            self._remember(seen, got)
            return got
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
        with _closed_lock:
            _parsed[key] = got
            while len(_parsed) > _PARSED_ITEMS:
                _parsed.popitem(last=False)
        self._remember(seen, got)
        return got

    @staticmethod
    def _remember(seen: tuple, expr: ClassExpression) -> None:
        """Keep ``expr`` for the structured dict (and the objects it held) in ``seen`` — held, so
        that their ids stay theirs while kept."""
        with _closed_lock:
            _parsed_by_identity[id(seen[0])] = (seen, expr)
            while len(_parsed_by_identity) > _PARSED_BY_IDENTITY:
                _parsed_by_identity.pop(next(iter(_parsed_by_identity)))

    def weights(self, explanation: Explanation, expr: ClassExpression) -> tuple[tuple[float, ...], float] | None:
        """``(weight per disjunct, base)`` when graded and the explanation has weights, else ``None``."""
        st = explanation.structured or {}
        w = st.get("weights")
        if not self.graded or not w:
            return None
        parts = expr.parts()
        try:
            weights = tuple(float(x) for x in w)
            base = float(st.get("base", 0.0) or 0.0)
        except (TypeError, ValueError) as exc:
            raise ScoringError(f"explanation of neuron {explanation.neuron}: weights {w!r} are not numbers") from exc
        if len(weights) != len(parts):
            raise ScoringError(
                f"explanation of neuron {explanation.neuron}: {len(weights)} weights for an expression with "
                f"{len(parts)} disjuncts; give one weight per top-level 'or' operand"
            )
        if not all(math.isfinite(x) for x in weights + (base,)):
            raise ScoringError(f"explanation of neuron {explanation.neuron}: weights must be finite, got {w!r}")
        return weights, base

    def kinds(self, explanation: Explanation) -> dict[str, float]:
        """The back-off of a graded label (``structured["kinds"]``: ``[[kind, delta], …]``): lexical
        kind (:func:`ontology.lexical.backoff_kinds`) → delta added to the base for the tokens no
        part covers; empty when the label has none."""
        got = (explanation.structured or {}).get("kinds") or ()
        try:
            out = {str(k): float(d) for k, d in got}
        except (TypeError, ValueError) as exc:
            raise ScoringError(f"explanation of neuron {explanation.neuron}: malformed kinds {got!r}: {exc}") from None
        if not all(math.isfinite(d) for d in out.values()):
            raise ScoringError(f"explanation of neuron {explanation.neuron}: kind deltas must be finite, got {got!r}")
        return out

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """Per token: the largest weight of the disjuncts it satisfies, else the base (graded);
        ``on_value`` / 0 without weights or in the binary simulator."""
        return self.simulate_many(explanation, [tokens])[0]

    def simulate_many(self, explanation: Explanation, token_lists: Sequence[Sequence[str]]
                      ) -> Sequence[SequenceSimulation]:
        """:meth:`simulate` for several windows (a :class:`scoring.scorers.FlatSimulations`), evaluated over all their tokens at once: the
        expression's classes are looked up in each token's classes (with superclasses) and, for
        ``follows some C``, in the previous token's of the same window (none for a window's first
        token), by :func:`ontology.induction.coverage_vectors` — the same evaluation the
        concept-induction explainer fits its weights with. The windows' classes are closed once
        per window set (:func:`_closed_windows`) for all the labels scored on them."""
        expr = self.expression(explanation)
        wb = self.weights(explanation, expr)
        ann = self._annotator()
        closed = _closed_windows(ann, token_lists)
        if wb is None:
            # a top-level disjunction covers a token where any of its parts does: what the graded
            # simulator found for the same label on the same windows, else the expression's own coverage
            covered = _known_covered(expr, closed)
            if covered is None:
                covered = coverage_vectors(ann.ontology, (expr,), None, closed=closed)[:, 0]
            values = np.where(covered, self.on_value, 0.0)
        else:
            cover = coverage_vectors(ann.ontology, expr.parts(), None, closed=closed)
            covered = cover.any(1)
            _remember_covered(expr, closed, covered)
            values = predict_graded(cover, wb[0], wb[1])
            kinds = self.kinds(explanation)
            if kinds:  # the back-off: tokens no part covers get the base plus their kinds' deltas
                names, U, ids = _window_kinds(token_lists)  # each distinct kind set's delta, then each token's
                deltas = (U @ np.array([kinds.get(k, 0.0) for k in names], dtype=np.float64))[ids]
                values = np.where(covered, values, values + deltas)
        # one simulation per window, made when read (the scorer reads the predictions from ``values``)
        return FlatSimulations(token_lists, values, "symbolic")


@SIMULATORS.register("symbolic_binary")
class BinarySymbolicSimulator(SymbolicSimulator):
    """1/0 prediction per token from a class expression (weights ignored)."""

    kind = "symbolic_binary"
    graded = False
