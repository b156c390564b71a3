"""``neurolabel decode``: weights-only labels of whole layers, stored, with input/output agreement."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from neurolabel.core.types import Explanation, NeuronId, ScoreResult
from neurolabel.service.cli import app as cli_app
from neurolabel.storage.db import session_scope, upgrade
from neurolabel.storage.queries import get_neuron, save_explanations
from tests.explainers.tiny_output import planted_output_llama


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_output_llama(tmp_path_factory.mktemp("dec"))


def _input_label(model: str, neuron: NeuronId, text: str) -> Explanation:
    return Explanation(model=model, neuron=neuron, explainer="pmi", explainer_version="1", text=text,
                       score=ScoreResult(score=0.8, scorer="correlation", simulator="lexical"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_decode_stores_every_neuron_with_agreement(planted, tmp_path, backend, request):
    d, tid = planted
    url = f"sqlite:///{tmp_path}/dec.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    name = d.resolve().name
    upgrade(url)
    with session_scope(url) as s:  # accepted input-side labels: one agrees with the output side, one does not
        save_explanations(session=s, explanations=[_input_label(name, NeuronId(1, 7), "dog"),
                                                   _input_label(name, NeuronId(1, 8), "dog")])
    r = CliRunner().invoke(cli_app, ["decode", "--model", str(d), "--layers", "0-1", "--db", url, "--show", "1"])
    assert r.exit_code == 0, r.output
    assert "decoded 80 neurons" in r.output and "2 have an accepted input-side label" in r.output
    with session_scope(url) as s:
        n7 = get_neuron(session=s, model=name, layer=1, index=7)
        n8 = get_neuron(session=s, model=name, layer=1, index=8)
        n0 = get_neuron(session=s, model=name, layer=0, index=0)
    out7 = next(e for e in n7["explanations"] if e["explainer"] == "output_tokens")
    assert out7["text"].startswith("promotes: dog") and out7["structured"]["promoted"][0]["id"] == tid
    assert not out7["accepted"] and out7["score"] is None  # agreement never makes it the label
    [agree] = out7["scores"]
    assert agree["scorer"] == "agreement" and agree["simulator"] == "lexical"
    assert agree["parts"]["top_token_inside"] == 1.0 and agree["parts"]["agreement"] > 0
    assert n7["best_label"]["text"] == "dog"
    out8 = next(e for e in n8["explanations"] if e["explainer"] == "output_tokens")
    assert out8["scores"][0]["parts"]["top_token_inside"] == 0.0  # it suppresses " dog"
    assert "suppresses: dog" in out8["text"]
    [plain] = [e for e in n0["explanations"] if e["explainer"] == "output_tokens"]
    assert plain["scores"] == []  # no input-side label, no agreement
    # idempotent: a second run adds no rows
    r = CliRunner().invoke(cli_app, ["decode", "--model", str(d), "--layers", "1", "--db", url, "--show", "0"])
    assert r.exit_code == 0, r.output
    with session_scope(url) as s:
        again = get_neuron(session=s, model=name, layer=1, index=7)
    assert len(again["explanations"]) == len(n7["explanations"]) == 2


def test_decode_bad_input_is_named_and_stores_nothing(planted, tmp_path):
    d, _ = planted
    url = f"sqlite:///{tmp_path}/bad.db"
    upgrade(url)
    name = d.resolve().name
    with session_scope(url) as s:
        save_explanations(session=s, explanations=[_input_label(name, NeuronId(1, 7), "dog")])
    for args, msg in ((["--layers", "5"], r"layer(s) [5] do not exist"),
                      (["--layers", "1", "--units", "40-41"], r"unit(s) [40, 41] do not exist"),
                      (["--layers", "x"], "--layers: cannot read 'x'"),
                      (["--top-k", "0"], "--top-k must be at least 1")):
        r = CliRunner().invoke(cli_app, ["decode", "--model", str(d), "--db", url, *args])
        assert r.exit_code != 0
        assert msg in str(r.exception), (args, r.exception)
    with session_scope(url) as s:
        n7 = get_neuron(session=s, model=name, layer=1, index=7)
    assert [e["explainer"] for e in n7["explanations"]] == ["pmi"]
