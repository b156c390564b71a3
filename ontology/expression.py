"""OWL class expressions over an :class:`~ontology.model.Ontology`: atomic classes, their
conjunctions (``and``) and disjunctions (``or``), nested freely.

Renderings: Manchester syntax with full IRIs (``<…#dog.n.01> or <…#cat.n.01>``), a JSON-able
tree (``{"or": [{"class": iri}, …]}``) and English from the labels. :func:`parse_manchester` reads
the Manchester form back; :meth:`ClassExpression.satisfied_by` evaluates the expression on the
set of classes (ancestors included) a token has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

from neurolabel.core.errors import OntologyError
from neurolabel.ontology.model import Ontology

Op = Literal["class", "and", "or"]


@dataclass(frozen=True)
class ClassExpression:
    """An atomic class (``op == "class"``) or an ``and``/``or`` of sub-expressions."""

    op: Op
    """``"class"``, ``"and"`` or ``"or"``."""
    cls: int = -1
    """Class id, for atomic expressions."""
    args: tuple["ClassExpression", ...] = ()
    """Operands, for ``and``/``or``."""

    @staticmethod
    def atom(cls: int) -> "ClassExpression":
        """The atomic expression for class id ``cls``."""
        return ClassExpression("class", int(cls))

    @staticmethod
    def join(op: Literal["and", "or"], parts: Iterable["ClassExpression"]) -> "ClassExpression":
        """``op`` over ``parts``, flattening nested operands of the same ``op``."""
        flat: list[ClassExpression] = []
        for p in parts:
            flat.extend(p.args if p.op == op else (p,))
        if len(flat) == 1:
            return flat[0]
        return ClassExpression(op, -1, tuple(flat))

    @property
    def length(self) -> int:
        """Length as CELOE counts it: classes plus binary operators (``A or B`` = 3)."""
        if self.op == "class":
            return 1
        return sum(a.length for a in self.args) + len(self.args) - 1

    def classes(self) -> list[int]:
        """Class ids mentioned, in order of appearance."""
        if self.op == "class":
            return [self.cls]
        out: list[int] = []
        for a in self.args:
            out.extend(a.classes())
        return out

    def satisfied_by(self, token_classes: frozenset[int] | set[int]) -> bool:
        """Whether a token whose classes (with ancestors) are ``token_classes`` is an instance."""
        if self.op == "class":
            return self.cls in token_classes
        if self.op == "and":
            return all(a.satisfied_by(token_classes) for a in self.args)
        return any(a.satisfied_by(token_classes) for a in self.args)

    # ---- renderings -------------------------------------------------------------------------
    def manchester(self, onto: Ontology, *, top: bool = True) -> str:
        """Manchester syntax with full IRIs in angle brackets."""
        if self.op == "class":
            return f"<{onto.iri(self.cls)}>"
        inner = f" {self.op} ".join(a.manchester(onto, top=False) for a in self.args)
        return inner if top else f"({inner})"

    def manchester_labels(self, onto: Ontology, *, top: bool = True) -> str:
        """Manchester-like rendering with labels instead of IRIs (for display)."""
        if self.op == "class":
            return onto.label(self.cls)
        inner = f" {self.op} ".join(a.manchester_labels(onto, top=False) for a in self.args)
        return inner if top else f"({inner})"

    def to_json(self, onto: Ontology) -> dict[str, Any]:
        """JSON-able tree: ``{"class": iri}`` or ``{"and"|"or": [subtrees]}``."""
        if self.op == "class":
            return {"class": onto.iri(self.cls)}
        return {self.op: [a.to_json(onto) for a in self.args]}

    @staticmethod
    def from_json(tree: Mapping[str, Any], onto: Ontology) -> "ClassExpression":
        """Inverse of :meth:`to_json`; :class:`OntologyError` on unknown IRIs or bad trees."""
        if not isinstance(tree, Mapping) or len(tree) != 1:
            raise OntologyError(f"bad class-expression tree: {tree!r}")
        (op, val), = tree.items()
        if op == "class":
            return ClassExpression.atom(onto.find(str(val)))
        if op in ("and", "or") and isinstance(val, Sequence) and val:
            return ClassExpression.join(op, (ClassExpression.from_json(v, onto) for v in val))
        raise OntologyError(f"bad class-expression tree: {tree!r}")

    def english(self, onto: Ontology, examples: Mapping[int, Sequence[str]] | None = None) -> str:
        """English from the labels, e.g. ``"mentions of a kind of animal (dog, horse, cat)"``.

        ``examples`` maps class ids of atoms to example words shown in parentheses."""
        return "mentions of " + self._english(onto, examples or {})

    def _english(self, onto: Ontology, examples: Mapping[int, Sequence[str]]) -> str:
        if self.op == "class":
            lab = onto.label(self.cls)
            kind = f"a kind of {lab}" if len(onto.children(self.cls)) else lab
            ex = [w for w in examples.get(self.cls, ()) if w.lower() != lab.lower()][:4]
            return f"{kind} ({', '.join(ex)})" if ex else kind
        parts = [a._english(onto, examples) for a in self.args]
        if self.op == "or":
            return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 2 else " or ".join(parts)
        return "something that is " + " and ".join(parts)


_TOKEN = re.compile(r"\s*(<[^>]*>|\(|\)|and\b|or\b|[^\s()<>]+)", re.IGNORECASE)


def parse_manchester(text: str, onto: Ontology) -> ClassExpression:
    """Parse ``and``/``or``/parentheses over ``<IRI>`` or bare names (local names or labels
    without spaces). ``and`` binds tighter than ``or``. :class:`OntologyError` on bad input."""
    toks = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise OntologyError(f"cannot parse class expression {text!r} at position {pos}")
        toks.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if not toks:
        raise OntologyError("empty class expression")
    i = 0

    def peek() -> str | None:
        return toks[i] if i < len(toks) else None

    def take() -> str:
        nonlocal i
        if i >= len(toks):
            raise OntologyError(f"class expression {text!r} ends too early")
        i += 1
        return toks[i - 1]

    def parse_or() -> ClassExpression:
        parts = [parse_and()]
        while (peek() or "").lower() == "or":
            take()
            parts.append(parse_and())
        return ClassExpression.join("or", parts)

    def parse_and() -> ClassExpression:
        parts = [parse_atom()]
        while (peek() or "").lower() == "and":
            take()
            parts.append(parse_atom())
        return ClassExpression.join("and", parts)

    def parse_atom() -> ClassExpression:
        t = take()
        if t == "(":
            e = parse_or()
            if take() != ")":
                raise OntologyError(f"class expression {text!r}: missing ')'")
            return e
        if t.lower() in ("and", "or", ")"):
            raise OntologyError(f"class expression {text!r}: unexpected {t!r}")
        name = t[1:-1] if t.startswith("<") else t
        return ClassExpression.atom(onto.find(name))

    expr = parse_or()
    if i != len(toks):
        raise OntologyError(f"class expression {text!r}: unexpected {toks[i]!r}")
    return expr
