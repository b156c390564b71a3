"""``neurolabel ontology build|info``."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from neurolabel.service.cli import app


@pytest.mark.slow
def test_build_and_info_show_the_size():
    r = CliRunner().invoke(app, ["ontology", "build"])
    assert r.exit_code == 0, r.output
    assert "classes       121916" in r.output and "OWL store" in r.output
    r = CliRunner().invoke(app, ["ontology", "info", "--class", "dog.n.01"])
    assert r.exit_code == 0, r.output
    assert "parents       domestic animal, canine" in r.output
    assert "WordNet       82115 noun, 13767 verb, 18156 adjective, 3621 adverb synsets" in r.output
    assert "token forms" in r.output and "function-word classes" in r.output and "roles         follows" in r.output


def test_info_on_a_user_ontology_and_a_bad_one(tmp_path):
    p = tmp_path / "tiny.ttl"
    p.write_text("@prefix ex: <http://e.org/> .\n@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n"
                 "ex:Dog rdfs:subClassOf ex:Animal .\n")
    r = CliRunner().invoke(app, ["ontology", "info", str(p)])
    assert r.exit_code == 0, r.output
    assert "classes       2" in r.output
    bad = tmp_path / "bad.ttl"
    bad.write_text("@prefix ex <oops")
    r = CliRunner().invoke(app, ["ontology", "info", str(bad)])
    assert r.exit_code != 0
    assert "bad.ttl" in str(r.exception)
