"""OWL class expressions over an :class:`~ontology.model.Ontology`: atomic classes, their
conjunctions (``and``) and disjunctions (``or``), nested freely, and existential restrictions
over the ``follows`` role (``follows some Noun``: the token right before is a noun).

Renderings: Manchester syntax with full IRIs (``<…#dog.n.01> or <…#cat.n.01>``,
``<…#Preposition> and (<…#follows> some <…#Noun>)``), a JSON-able tree (``{"or": [{"class": iri},
…]}``, ``{"some": {"property": iri, "filler": tree}}``) and English from the labels
(``"a preposition (with, of) right after a noun"``). :func:`parse_manchester` reads the Manchester
form back (property by IRI or by its local name ``follows``); :meth:`ClassExpression.satisfied_by`
evaluates the expression on the set of classes (ancestors included) a token has and, for role
restrictions, the set of the token before it. A restriction's filler is a class expression
without restrictions (the search only looks one token back).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

from neurolabel.core.errors import OntologyError
from neurolabel.ontology.lexical import FOLLOWS_IRI, LEXICAL_BASE
from neurolabel.ontology.model import Ontology, local_name

Op = Literal["class", "and", "or", "some"]
ROLES = (FOLLOWS_IRI,)
"""The object properties expressions may restrict."""


@dataclass(frozen=True)
class ClassExpression:
    """An atomic class (``op == "class"``), an ``and``/``or`` of sub-expressions, or an
    existential restriction ``role some filler`` (``op == "some"``)."""

    op: Op
    """``"class"``, ``"and"``, ``"or"`` or ``"some"``."""
    cls: int = -1
    """Class id, for atomic expressions."""
    args: tuple["ClassExpression", ...] = ()
    """Operands, for ``and``/``or``; the one filler, for ``some``."""
    role: str = ""
    """Property IRI, for ``some`` (only :data:`ontology.lexical.FOLLOWS_IRI` is known)."""

    @staticmethod
    def atom(cls: int) -> "ClassExpression":
        """The atomic expression for class id ``cls``."""
        return ClassExpression("class", int(cls))

    @staticmethod
    def some(filler: "ClassExpression", role: str = FOLLOWS_IRI) -> "ClassExpression":
        """``role some filler`` (by default: the token right before is a ``filler``)."""
        if role not in ROLES:
            raise OntologyError(f"unknown property {role!r}; known: {', '.join(ROLES)}")
        if filler.has_role():
            raise OntologyError("a restriction's filler cannot itself contain a restriction")
        return ClassExpression("some", -1, (filler,), role)

    def has_role(self) -> bool:
        """Whether a ``some`` restriction occurs in the expression."""
        return self.op == "some" or any(a.has_role() for a in self.args)

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
        if self.op == "some":  # the restriction counts 1, plus its filler
            return 1 + self.args[0].length
        return sum(a.length for a in self.args) + len(self.args) - 1

    def classes(self) -> list[int]:
        """Class ids mentioned, in order of appearance."""
        if self.op == "class":
            return [self.cls]
        out: list[int] = []
        for a in self.args:
            out.extend(a.classes())
        return out

    def satisfied_by(self, token_classes: frozenset[int] | set[int],
                     previous: frozenset[int] | set[int] | None = None) -> bool:
        """Whether a token whose classes (with ancestors) are ``token_classes`` is an instance;
        ``previous``: the classes of the token before it (``None``: none, e.g. the first token
        of a window — no ``follows some …`` holds then)."""
        if self.op == "class":
            return self.cls in token_classes
        if self.op == "some":
            return previous is not None and self.args[0].satisfied_by(previous)
        if self.op == "and":
            return all(a.satisfied_by(token_classes, previous) for a in self.args)
        return any(a.satisfied_by(token_classes, previous) for a in self.args)

    def parts(self) -> tuple["ClassExpression", ...]:
        """The disjuncts of a top-level ``or``, else the expression itself (what graded
        simulation weights)."""
        return self.args if self.op == "or" else (self,)

    # ---- renderings -------------------------------------------------------------------------
    def manchester(self, onto: Ontology, *, top: bool = True) -> str:
        """Manchester syntax with full IRIs in angle brackets."""
        if self.op == "class":
            return f"<{onto.iri(self.cls)}>"
        if self.op == "some":
            inner = f"<{self.role}> some {self.args[0].manchester(onto, top=False)}"
            return inner if top else f"({inner})"
        inner = f" {self.op} ".join(a.manchester(onto, top=False) for a in self.args)
        return inner if top else f"({inner})"

    def manchester_labels(self, onto: Ontology, *, top: bool = True) -> str:
        """Manchester-like rendering with labels instead of IRIs (for display)."""
        if self.op == "class":
            return onto.label(self.cls)
        if self.op == "some":
            inner = f"{local_name(self.role)} some {self.args[0].manchester_labels(onto, top=False)}"
            return inner if top else f"({inner})"
        inner = f" {self.op} ".join(a.manchester_labels(onto, top=False) for a in self.args)
        return inner if top else f"({inner})"

    def to_json(self, onto: Ontology) -> dict[str, Any]:
        """JSON-able tree: ``{"class": iri}`` or ``{"and"|"or": [subtrees]}``."""
        if self.op == "class":
            return {"class": onto.iri(self.cls)}
        if self.op == "some":
            return {"some": {"property": self.role, "filler": self.args[0].to_json(onto)}}
        return {self.op: [a.to_json(onto) for a in self.args]}

    @staticmethod
    def from_json(tree: Mapping[str, Any], onto: Ontology) -> "ClassExpression":
        """Inverse of :meth:`to_json`; :class:`OntologyError` on unknown IRIs or bad trees."""
        if not isinstance(tree, Mapping) or len(tree) != 1:
            raise OntologyError(f"bad class-expression tree: {tree!r}")
        (op, val), = tree.items()
        if op == "class":
            return ClassExpression.atom(onto.find(str(val)))
        if op == "some" and isinstance(val, Mapping) and set(val) == {"property", "filler"}:
            return ClassExpression.some(ClassExpression.from_json(val["filler"], onto), _role(str(val["property"])))
        if op in ("and", "or") and isinstance(val, Sequence) and val:
            return ClassExpression.join(op, (ClassExpression.from_json(v, onto) for v in val))
        raise OntologyError(f"bad class-expression tree: {tree!r}")

    def english(self, onto: Ontology, examples: Mapping[int, Sequence[str]] | None = None) -> str:
        """English from the labels, e.g. ``"mentions of a kind of animal (dog, horse, cat)"``,
        ``"mentions of a preposition (with, of) right after a noun"``.

        ``examples`` maps class ids of atoms to example words shown in parentheses."""
        return "mentions of " + self._english(onto, examples or {})

    def _english(self, onto: Ontology, examples: Mapping[int, Sequence[str]]) -> str:
        if self.op == "class":
            lab = onto.label(self.cls)
            lexical = onto.iri(self.cls).startswith(LEXICAL_BASE)
            if lexical and lab.startswith('"'):
                kind = f"the token {lab}"
            elif lexical:
                kind = f"a {lab}" if lab[:1] not in "aeiou" else f"an {lab}"
            else:
                kind = f"a kind of {lab}" if len(onto.children(self.cls)) else lab
            ex = [w for w in examples.get(self.cls, ()) if w.lower() != lab.lower().strip('"')][:4]
            return f"{kind} ({', '.join(ex)})" if ex else kind
        if self.op == "some":
            return "a token right after " + self.args[0]._english(onto, {})
        if self.op == "or":
            parts = [a._english(onto, examples) for a in self.args]
            return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 2 else " or ".join(parts)
        parts = [a._english(onto, examples) if a.op != "some" else "right after " + a.args[0]._english(onto, {})
                 for a in self.args]
        plain = [p for a, p in zip(self.args, parts) if a.op != "some"]
        after = [p for a, p in zip(self.args, parts) if a.op == "some"]
        head = plain[0] if len(plain) == 1 else ("something that is " + " and ".join(plain) if plain else "a token")
        return " ".join([head] + [" and ".join(after)] if after else [head])


_TOKEN = re.compile(r"\s*(<[^>]*>|\(|\)|and\b|or\b|some\b|[^\s()<>]+)", re.IGNORECASE)


def _role(name: str) -> str:
    for r in ROLES:
        if name in (r, local_name(r)):
            return r
    raise OntologyError(f"unknown property {name!r} in class expression; known: {', '.join(ROLES)}")


def parse_manchester(text: str, onto: Ontology) -> ClassExpression:
    """Parse ``and``/``or``/parentheses over ``<IRI>`` or bare names (local names or labels
    without spaces), and restrictions ``<property> some <filler>`` (``follows some Noun``).
    ``some`` binds tighter than ``and``, ``and`` tighter than ``or``. :class:`OntologyError` on
    bad input."""
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
        if t.lower() in ("and", "or", "some", ")"):
            raise OntologyError(f"class expression {text!r}: unexpected {t!r}")
        name = t[1:-1] if t.startswith("<") else t
        if (peek() or "").lower() == "some":
            take()
            return ClassExpression.some(parse_atom(), _role(name))
        return ClassExpression.atom(onto.find(name))

    expr = parse_or()
    if i != len(toks):
        raise OntologyError(f"class expression {text!r}: unexpected {toks[i]!r}")
    return expr
