"""Ontologies: the default WordNet OWL ontology, user OWL/RDF ontologies, token annotation."""
