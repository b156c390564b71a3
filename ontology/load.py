"""Loading a user ontology (RDF/XML, OWL/XML, Turtle or N-Triples) into an
:class:`~ontology.model.Ontology`.

rdflib parses RDF/XML, Turtle and N-Triples; owlready2 parses OWL/XML (which rdflib cannot)
and hands its triples over as an rdflib graph. Classes are the named ``owl:Class`` /
``rdfs:Class`` resources and every named resource in an ``rdfs:subClassOf`` triple; parents are
the named superclasses; labels come from ``skos:prefLabel``, ``rdfs:label`` and
``skos:altLabel`` (in that order; English or untagged first), falling back to the IRI's local
name split into words (``HotDog`` → "hot dog"). A missing, empty or malformed file, or one
without classes, raises :class:`core.errors.OntologyError` naming the file and the problem.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from neurolabel.core.errors import OntologyError
from neurolabel.ontology.build import STOPWORDS
from neurolabel.ontology.model import Ontology, from_edges, local_name

log = logging.getLogger(__name__)

FORMATS = {
    ".ttl": "turtle",
    ".turtle": "turtle",
    ".n3": "turtle",
    ".nt": "nt",
    ".ntriples": "nt",
    ".owx": "owlxml",
    ".rdf": "xml",
    ".xml": "xml",
    ".owl": "xml",
}
"""File suffix → format guess (``.owl``/``.xml`` files are sniffed for OWL/XML)."""


def detect_format(path: Path, head: str) -> str:
    """``"xml"`` (RDF/XML), ``"owlxml"``, ``"turtle"`` or ``"nt"`` from the suffix and first bytes."""
    fmt = FORMATS.get(path.suffix.lower())
    stripped = head.lstrip()
    if fmt in ("xml", None) and stripped.startswith("<"):
        if re.search(r"<(\w+:)?Ontology[\s>]", head) and "rdf:RDF" not in head:
            return "owlxml"
        return "xml"
    if fmt is None:
        if stripped.startswith("@prefix") or stripped.startswith("PREFIX") or "@prefix" in head:
            return "turtle"
        return "nt" if re.match(r"^\s*<[^>]+>\s+<[^>]+>", head) else "turtle"
    return fmt


def load_ontology(path: str | Path) -> Ontology:
    """Load ``path`` (see the module docstring). Raises :class:`OntologyError`."""
    path = Path(path)
    if not path.is_file():
        raise OntologyError(f"{path}: ontology file not found")
    raw = path.read_bytes()
    if not raw.strip():
        raise OntologyError(f"{path}: ontology file is empty")
    head = raw[:4096].decode("utf-8", errors="replace")
    fmt = detect_format(path, head)
    graph = _parse(path, fmt)
    return ontology_from_graph(graph, name=path.stem, source=str(path))


def _parse(path: Path, fmt: str):
    import rdflib

    if fmt == "owlxml":
        import owlready2

        world = owlready2.World()
        try:
            world.get_ontology(path.resolve().as_uri()).load(format="owlxml")
        except Exception as exc:  # owlready2 raises assorted parser errors
            raise OntologyError(f"{path}: malformed OWL/XML: {exc}") from exc
        g = rdflib.Graph()
        for t in world.as_rdflib_graph():
            g.add(t)
        return g
    g = rdflib.Graph()
    try:
        g.parse(str(path), format=fmt)
    except Exception as exc:  # rdflib raises many parser-specific exception types
        name = {"xml": "RDF/XML", "turtle": "Turtle", "nt": "N-Triples"}[fmt]
        msg = " ".join(str(exc).split())
        raise OntologyError(f"{path}: malformed {name}: {msg[:400]}") from exc
    return g


def ontology_from_graph(graph, *, name: str, source: str) -> Ontology:
    """The class hierarchy of an rdflib graph."""
    from rdflib import OWL, RDF, RDFS, Literal, URIRef
    from rdflib.namespace import SKOS

    classes: dict[str, None] = {}
    skip = {str(OWL.Thing), str(OWL.Nothing), str(RDFS.Resource), str(OWL.Class), str(RDFS.Class)}
    for kind in (OWL.Class, RDFS.Class):
        for s in graph.subjects(RDF.type, kind):
            if isinstance(s, URIRef) and str(s) not in skip:
                classes.setdefault(str(s))
    for s, o in graph.subject_objects(RDFS.subClassOf):
        for x in (s, o):
            if isinstance(x, URIRef) and str(x) not in skip:
                classes.setdefault(str(x))
    if not classes:
        raise OntologyError(f"{source}: no classes found (no owl:Class, rdfs:Class or rdfs:subClassOf)")
    iris = list(classes)
    index = {iri: i for i, iri in enumerate(iris)}
    parents: list[list[int]] = [[] for _ in iris]
    for s, o in graph.subject_objects(RDFS.subClassOf):
        si, oi = index.get(str(s)), index.get(str(o))
        if si is not None and oi is not None and si != oi and oi not in parents[si]:
            parents[si].append(oi)
    labels: list[tuple[str, ...]] = []
    for iri in iris:
        ref = URIRef(iri)
        labs: list[str] = []
        for prop in (SKOS.prefLabel, RDFS.label, SKOS.altLabel):
            vals = [v for v in graph.objects(ref, prop) if isinstance(v, Literal)]
            vals.sort(key=lambda v: (v.language not in (None, "en") and not str(v.language).startswith("en"), str(v)))
            for v in vals:
                text = " ".join(str(v).split())
                if text and text not in labs:
                    labs.append(text)
        if not labs:
            labs.append(_words_of(local_name(iri)))
        labels.append(tuple(labs))
    log.info("loaded %d classes from %s", len(iris), source)
    return from_edges(name=name, source=source, iris=iris, labels=labels, parents=parents, blocked=STOPWORDS)


def _words_of(local: str) -> str:
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", local)
    return " ".join(text.replace("_", " ").replace("-", " ").split()).lower()
