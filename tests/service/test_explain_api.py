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
    # a bad record beside a good one: the good one is answered, the bad one named (207)
    r = served.post("/v1/explain", json={"records": [planted, {"most_positive_activation_records": 5}],
                                         "explainers": ["concept_induction"]})
    assert r.status_code == 207, r.text
    out = r.json()
    assert out["partial"] and out["explanations"] and {e["index"] for e in out["explanations"]} == {0}
    (f,) = out["failures"]
    assert (f["record"], f["stage"], f["type"], f["explainer"]) == (1, "parse", "invalid_record", None)
    # nothing valid: the whole request fails, naming the record
    r = served.post("/v1/explain", json={"records": [{"most_positive_activation_records": 5}],
                                         "explainers": ["concept_induction"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "records", 0]


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


def _record(fire, index: int = 0) -> dict:
    """OpenAI JSON of a unit that fires (5-6) on every third token, ``fire(rng)``, among function words."""
    import random

    from neurolabel.activations.openai_format import to_openai_json
    from neurolabel.core.types import ActivationRecord, NeuronId, NeuronRecord, split_of_window

    rng = random.Random(0)
    words = [" the", " year", " was", " and", " of", " a", " in", " to"]
    top, rnd = [], []
    for w in range(40):
        toks = [fire(rng) if j % 3 == 1 else rng.choice(words) for j in range(16)]
        acts = [5.0 + rng.random() if j % 3 == 1 else 0.0 for j in range(16)]
        kind = "top" if w < 24 else "random"
        (top if kind == "top" else rnd).append(ActivationRecord(tokens=tuple(toks), activations=tuple(acts),
                                                                window_id=w, split=split_of_window(w), kind=kind))
    return to_openai_json(NeuronRecord(model="x", neuron=NeuronId(0, index), top=tuple(top), random=tuple(rnd)),
                          include_neurolabel=True)


def test_partial_results_per_record_and_explainer(served):
    """The issue's example: concept_induction + pmi on a record whose activating tokens are digits
    is answered (both explain it now); a record on which PMI finds nothing (its activating tokens
    are empty strings) beside it gives concept induction's label and PMI's failure, with why."""
    digits, empty = _record(lambda r: f" {r.randint(0, 9999)}"), _record(lambda r: "", index=1)
    both = ["concept_induction", "pmi"]
    r = served.post("/v1/explain", json={"records": [digits], "explainers": both})
    assert r.status_code == 200, r.text
    assert {e["explainer"] for e in r.json()["explanations"]} == set(both) and not r.json()["partial"]

    r = served.post("/v1/explain", json={"records": [digits, empty], "model": "mixed", "explainers": both,
                                         "store": True})
    assert r.status_code == 207, r.text
    out = r.json()
    assert out["partial"] is True
    got = {(e["index"], e["explainer"]) for e in out["explanations"]}
    assert got >= {(0, "concept_induction"), (0, "pmi"), (1, "concept_induction")} and (1, "pmi") not in got
    (f,) = out["failures"]
    assert (f["record"], f["explainer"], f["stage"], f["type"]) == (1, "pmi", "explain", "ExplanationError")
    assert (f["model"], f["layer"], f["index"]) == ("mixed", 0, 1) and "activating tokens" in f["msg"]
    assert len(out["stored_ids"]) == len(out["explanations"])  # what succeeded is stored

    r = served.post("/v1/explain", json={"records": [empty], "explainers": ["pmi"]})
    assert r.status_code == 422  # nothing succeeded: fails whole, naming record and explainer
    assert r.json()["detail"][0]["loc"] == ["body", "records", 0, "pmi"]

    r = served.post("/v1/score", json={"records": [digits, {"random_sample": "x"}], "simulator": "embedding",
                                       "explanation": {"text": "numbers"}})
    assert r.status_code == 207 and r.json()["failures"][0]["record"] == 1
    spec = served.get("/openapi.json").json()
    assert "207" in spec["paths"]["/v1/explain"]["post"]["responses"]
    assert "ItemError" in spec["components"]["schemas"]


def test_explain_refuses_an_ontology_the_server_does_not_allow(served, planted):
    r = served.post("/v1/explain", json={"records": [planted], "explainers": ["concept_induction"],
                                         "ontology": "/etc/passwd"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "ontology"] and "not allowed" in r.text
    r = served.post("/v1/explain", json={"records": [planted], "explainers": [{"kind": "pmi", "lamda": 1}]})
    assert r.status_code == 422 and "allowed: alpha, lam" in r.text
