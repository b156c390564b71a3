"""Loading user ontologies in every supported format, and the errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurolabel.core.errors import OntologyError
from neurolabel.ontology.annotate import Annotator
from neurolabel.ontology.load import load_ontology

EX = "http://example.org/zoo#"

OWL_XML = f"""<?xml version="1.0"?>
<Ontology xmlns="http://www.w3.org/2002/07/owl#" xml:base="http://example.org/zoo"
     xmlns:rdfs="http://www.w3.org/2000/01/rdf-schema#"
     ontologyIRI="http://example.org/zoo">
    <Prefix name="rdfs" IRI="http://www.w3.org/2000/01/rdf-schema#"/>
    <Declaration><Class IRI="{EX}Animal"/></Declaration>
    <Declaration><Class IRI="{EX}Dog"/></Declaration>
    <Declaration><Class IRI="{EX}Cat"/></Declaration>
    <Declaration><Class IRI="{EX}Vehicle"/></Declaration>
    <Declaration><Class IRI="{EX}SportsCar"/></Declaration>
    <SubClassOf><Class IRI="{EX}Dog"/><Class IRI="{EX}Animal"/></SubClassOf>
    <SubClassOf><Class IRI="{EX}Cat"/><Class IRI="{EX}Animal"/></SubClassOf>
    <SubClassOf><Class IRI="{EX}SportsCar"/><Class IRI="{EX}Vehicle"/></SubClassOf>
    <AnnotationAssertion>
        <AnnotationProperty abbreviatedIRI="rdfs:label"/>
        <IRI>{EX}Dog</IRI>
        <Literal xml:lang="en">dog</Literal>
    </AnnotationAssertion>
    <AnnotationAssertion>
        <AnnotationProperty IRI="http://www.w3.org/2004/02/skos/core#altLabel"/>
        <IRI>{EX}Dog</IRI>
        <Literal xml:lang="en">hound</Literal>
    </AnnotationAssertion>
    <AnnotationAssertion>
        <AnnotationProperty IRI="http://www.w3.org/2004/02/skos/core#prefLabel"/>
        <IRI>{EX}Cat</IRI>
        <Literal xml:lang="en">cat</Literal>
    </AnnotationAssertion>
</Ontology>
"""


def _graph():
    from rdflib import OWL, RDF, RDFS, Graph, Literal, URIRef
    from rdflib.namespace import SKOS

    g = Graph()
    c = {n: URIRef(EX + n) for n in ("Animal", "Dog", "Cat", "Vehicle", "SportsCar")}
    for u in c.values():
        g.add((u, RDF.type, OWL.Class))
    g.add((c["Dog"], RDFS.subClassOf, c["Animal"]))
    g.add((c["Cat"], RDFS.subClassOf, c["Animal"]))
    g.add((c["SportsCar"], RDFS.subClassOf, c["Vehicle"]))
    g.add((c["Dog"], RDFS.label, Literal("dog", lang="en")))
    g.add((c["Dog"], SKOS.altLabel, Literal("hound", lang="en")))
    g.add((c["Cat"], SKOS.prefLabel, Literal("cat", lang="en")))
    return g


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onto")
    g = _graph()
    out = {}
    for fmt, name in (("xml", "zoo.owl"), ("turtle", "zoo.ttl"), ("nt", "zoo.nt")):
        p = d / name
        g.serialize(destination=str(p), format=fmt, encoding="utf-8")
        out[fmt] = p
    p = d / "zoo.owx"
    p.write_text(OWL_XML)
    out["owlxml"] = p
    return out


@pytest.mark.parametrize("fmt", ["xml", "owlxml", "turtle", "nt"])
def test_every_format_gives_the_same_hierarchy(files, fmt):
    onto = load_ontology(files[fmt])
    assert onto.n_classes == 5
    dog, animal, cat = onto.find(EX + "Dog"), onto.find(EX + "Animal"), onto.find(EX + "Cat")
    assert list(onto.parents(dog)) == [animal]
    assert set(onto.children(animal).tolist()) == {dog, cat}
    assert onto.label(dog) == "dog"
    assert "hound" in onto.labels[dog]
    assert onto.label(cat) == "cat"  # skos:prefLabel
    assert onto.label(onto.find(EX + "SportsCar")) == "sports car"  # from the local name


def test_annotating_with_a_user_ontology_uses_labels_and_alt_labels(files):
    onto = load_ontology(files["turtle"])
    ann = Annotator(onto)
    toks = ["The", " hounds", " chased", " two", " sports", " cars", " and", " a", " cat", "."]
    got = ann.annotate(toks, ancestors=False)
    names = [sorted(onto.label(c) for c in s) for s in got]
    assert names[1] == ["dog"]
    assert names[4] == names[5] == ["sports car"]
    assert names[8] == ["cat"]
    assert names[0] == names[2] == names[3] == []
    with_anc = ann.annotate(toks)
    assert onto.find(EX + "Animal") in with_anc[1]


def test_missing_file(tmp_path):
    with pytest.raises(OntologyError, match="not found"):
        load_ontology(tmp_path / "nope.owl")


@pytest.mark.parametrize("name", ["empty.ttl", "empty.owl", "empty.nt"])
def test_empty_file_names_the_file(tmp_path, name):
    p = tmp_path / name
    p.write_text("  \n")
    with pytest.raises(OntologyError, match=rf"{name}.*empty"):
        load_ontology(p)


@pytest.mark.parametrize(
    "name, text, what",
    [
        ("bad.ttl", "@prefix ex: <http://e.org/> .\nex:A a ex:B ;;; ex:\n", "malformed Turtle"),
        ("bad.owl", "<?xml version='1.0'?><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'><rdf:Description></rdf:RDF>", "malformed RDF/XML"),
        ("bad.nt", "<http://e.org/a> <http://e.org/b> .\n", "malformed N-Triples"),
        ("bad.owx", "<?xml version='1.0'?><Ontology xmlns='http://www.w3.org/2002/07/owl#'><Declaration><Class IRI=", "malformed OWL/XML"),
        ("noclass.ttl", "@prefix ex: <http://e.org/> .\nex:a ex:knows ex:b .\n", "no classes"),
    ],
)
def test_malformed_file_names_the_file_and_problem(tmp_path, name, text, what):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(OntologyError) as err:
        load_ontology(p)
    assert name in str(err.value)
    assert what in str(err.value)
