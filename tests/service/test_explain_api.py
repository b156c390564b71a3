"""POST /v1/explain and /v1/score over real HTTP with the real pipeline: a neuron planted on
WordNet's "animal" class (real sentences), sent as OpenAI NeuronRecord JSON."""

from __future__ import annotations

import pytest

from neurolabel.service.app import create_app
from neurolabel.storage.db import upgrade
from tests.service.live import client, live_server, make_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted():
    from neurolabel.activations.openai_format import to_openai_json
    from bench.planted import planted_records

    (rec,) = planted_records(["animal.n.01"], n_top=8, n_random=8, n_windows=400, layer=3)
    return to_openai_json(rec)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('explain')}/labels.db"
    upgrade(url)
    key = make_key(url)
    app = create_app(url)
    with live_server(app) as base, client(base, key) as c:
        yield c
    app.state.engine.dispose()


def test_explain_scores_and_stores(served, planted):
    r = served.post("/v1/explain", json={"records": [planted], "model": "ext-model",
                                         "explainers": ["concept_induction"], "store": True})
    assert r.status_code == 200, r.text
    out = r.json()
    best = out["explanations"][0]
    assert (best["model"], best["layer"], best["explainer"]) == ("ext-model", 3, "concept_induction")
    assert "animal" in best["structured"]["manchester"].lower()
    assert best["score"]["score"] > 0.5 and best["score"]["simulator"] == "symbolic"
    assert len(out["stored_ids"]) == len(out["explanations"])
    n = served.get(f"/v1/models/ext-model/neurons/3/{best['index']}").json()
    assert {e["id"] for e in n["explanations"]} == set(out["stored_ids"])
    assert len(n["examples"]) == 32  # the records were stored too
    # storing again is idempotent
    again = served.post("/v1/explain", json={"records": [planted], "model": "ext-model",
                                             "explainers": ["concept_induction"], "store": True}).json()
    assert again["stored_ids"] == out["stored_ids"]


def test_explain_without_store_and_bad_input(served, planted):
    r = served.post("/v1/explain", json={"records": [planted], "explainers": ["concept_induction"]})
    assert r.status_code == 200 and r.json()["stored_ids"] == []
    assert served.get("/v1/models/external/neurons/3/0").status_code == 404
    r = served.post("/v1/explain", json={"records": [planted], "explainers": ["no_such_explainer"]})
    assert r.status_code == 422 and "no_such_explainer" in r.text
    r = served.post("/v1/explain", json={"records": [planted, {"most_positive_activation_records": 5}],
                                         "explainers": ["concept_induction"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "records", 1]


def test_score_a_given_explanation(served, planted):
    def score(text):
        r = served.post("/v1/score", json={"records": [planted], "simulator": "embedding",
                                           "explanation": {"text": text}})
        assert r.status_code == 200, r.text
        (e,) = r.json()["explanations"]
        assert e["explainer"] == "user" and e["score"]["n_tokens"] > 0
        return e["score"]["score"]

    good, bad = score("animals such as dogs, birds and fish"), score("numbers and dates")
    assert good > bad + 0.1  # the embedding simulator is weak, but tells these apart
    r = served.post("/v1/score", json={"records": [planted], "simulator": "nope", "explanation": {"text": "x"}})
    assert r.status_code == 422 and "nope" in r.text


def test_stored_concept_labels_are_found_under_wordnet_classes(served, planted):
    served.post("/v1/explain", json={"records": [planted], "model": "ext-model",
                                     "explainers": ["concept_induction"], "store": True})
    n = served.get("/v1/models/ext-model/neurons/3/0").json()
    iris = n["explanations"][0]["structured"]["iris"]
    assert iris and all(i.startswith("http") for i in iris)
    # the default (WordNet) ontology: the planted animal label falls under organism and entity
    for cls in ("organism.n.01", "entity.n.01"):
        r = served.get("/v1/search/concept", params={"cls": cls, "model": "ext-model"})
        assert r.status_code == 200, r.text
        assert (3, 0) in {(i["layer"], i["index"]) for i in r.json()["items"]}, cls
    r = served.get("/v1/search/concept", params={"cls": "artifact.n.01", "model": "ext-model"})
    assert (3, 0) not in {(i["layer"], i["index"]) for i in r.json()["items"]}
