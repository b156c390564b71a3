"""A small OWL knowledge base of example tokens, for real reasoners and other learners.

The TBox is the part of the ontology the examples need (their classes and all superclasses,
with ``rdfs:subClassOf`` between them) and the ``follows`` object property; the ABox has one
named individual per example token, asserted to be of the classes its annotation names and, when
``previous`` is given, to ``follows`` the individual of the token before it. Written as RDF/XML,
which owlready2 (HermiT) and Ontolearn both read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape, quoteattr

from neurolabel.ontology.lexical import FOLLOWS_IRI
from neurolabel.ontology.model import Ontology

INDIVIDUAL_BASE = "https://w3id.org/neurolabel/examples#"
"""Namespace of the example individuals."""


def individual_iri(i: int, base: str = INDIVIDUAL_BASE) -> str:
    """IRI of example number ``i``."""
    return f"{base}t{i}"


def write_abox(
    path: Path,
    onto: Ontology,
    individuals: Sequence[Sequence[int]],
    *,
    base: str = INDIVIDUAL_BASE,
    ontology_iri: str = "https://w3id.org/neurolabel/examples",
    previous: Sequence[int | None] | None = None,
) -> list[str]:
    """Write the knowledge base to ``path``; returns the individuals' IRIs (by position).
    ``previous[i]``: the position of the individual that individual *i* ``follows`` (``None``:
    none)."""
    classes: set[int] = set()
    for d in individuals:
        for c in d:
            classes.update(onto.ancestors(int(c), include_self=True).tolist())
    out = [
        '<?xml version="1.0"?>',
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"',
        '         xmlns:rdfs="http://www.w3.org/2000/01/rdf-schema#"',
        '         xmlns:owl="http://www.w3.org/2002/07/owl#">',
        f"<owl:Ontology rdf:about={quoteattr(ontology_iri)}/>",
        f"<owl:ObjectProperty rdf:about={quoteattr(FOLLOWS_IRI)}/>",
    ]
    for c in sorted(classes):
        out.append(f"<owl:Class rdf:about={quoteattr(onto.iri(c))}>")
        out.append(f"  <rdfs:label>{escape(onto.label(c))}</rdfs:label>")
        for p in onto.parents(c):
            out.append(f"  <rdfs:subClassOf rdf:resource={quoteattr(onto.iri(int(p)))}/>")
        out.append("</owl:Class>")
    iris = []
    for i, d in enumerate(individuals):
        iri = individual_iri(i, base)
        iris.append(iri)
        out.append(f"<owl:NamedIndividual rdf:about={quoteattr(iri)}>")
        for c in sorted(set(int(x) for x in d)):
            out.append(f"  <rdf:type rdf:resource={quoteattr(onto.iri(c))}/>")
        if previous is not None and previous[i] is not None:
            out.append(f"  <follows xmlns={quoteattr(FOLLOWS_IRI.rsplit('#', 1)[0] + '#')} "
                       f"rdf:resource={quoteattr(individual_iri(int(previous[i]), base))}/>")
        out.append("</owl:NamedIndividual>")
    out.append("</rdf:RDF>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out), encoding="utf-8")
    return iris
