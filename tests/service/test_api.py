"""The REST API over real HTTP (uvicorn on loopback), on SQLite and PostgreSQL: reads, search
(text, semantic, ontology class), list limits, body limit, validation errors, job lifecycle."""

from __future__ import annotations

import pytest

from neurolabel.service.app import create_app
from tests.service.live import ONTO, client, fresh_database, live_server, make_key, seed, small_ontology


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request, tmp_path_factory):
    """(base URL, key, db url) of a live server over a seeded database."""
    with fresh_database(request.param, tmp_path_factory.mktemp("api")) as url:
        seed(url)
        key = make_key(url)
        onto = small_ontology()
        app = create_app(url, ontology=lambda: onto, max_body_bytes=64 * 1024)
        with live_server(app) as base:
            yield base, key, url
        app.state.engine.dispose()


@pytest.fixture(scope="module")
def http(api):
    with client(api[0]) as c:
        yield c


def test_models_and_overview(http):
    models = http.get("/v1/models").json()
    assert [m["name"] for m in models] == ["tiny"]
    assert models[0]["n_labelled"] == 2
    ov = http.get("/v1/models/tiny").json()
    assert ov["n_neurons"] == 4 and ov["labelled_fraction"] == pytest.approx(0.5)
    assert [layer["layer"] for layer in ov["layers"]] == [0, 1]
    assert http.get("/v1/models/nope").status_code == 404


def test_neuron_with_stats_examples_explanations_scores(api, http):
    from neurolabel.storage import db
    from neurolabel.storage.queries import get_neuron

    n = http.get("/v1/models/tiny/neurons/0/1").json()
    with db.session_scope(api[2]) as s:  # the windows, written into the answer as stored, are the same
        assert n["examples"] == get_neuron(session=s, model="tiny", layer=0, index=1)["examples"]
    assert n["stats"]["max"] == 4.0
    assert {e["kind"] for e in n["examples"]} == {"top", "random"} and len(n["examples"]) == 8
    assert [e["text"] for e in n["explanations"]] == ["dogs and puppies", "the word dog"]
    assert n["explanations"][0]["scores"][0]["parts"]["top_only"] == pytest.approx(0.82)
    assert n["best_label"]["text"] == "dogs and puppies"
    label = http.get("/v1/models/tiny/neurons/0/1/label").json()
    assert label["text"] == "dogs and puppies" and label["score"] == pytest.approx(0.82)
    assert http.get("/v1/models/tiny/neurons/1/0/label").status_code == 404  # only a rejected label
    assert http.get("/v1/models/tiny/neurons/9/9").status_code == 404


def test_list_neurons_filters_and_pages(http):
    page = http.get("/v1/models/tiny/neurons", params={"limit": 2}).json()
    assert [(n["layer"], n["index"]) for n in page["items"]] == [(0, 1), (0, 2)]
    page2 = http.get("/v1/models/tiny/neurons", params={"limit": 2, "offset": 2}).json()
    assert [(n["layer"], n["index"]) for n in page2["items"]] == [(1, 0), (1, 3)]
    labelled = http.get("/v1/models/tiny/neurons", params={"labelled": "true"}).json()["items"]
    assert {(n["layer"], n["index"]) for n in labelled} == {(0, 1), (0, 2)}
    pmi = http.get("/v1/models/tiny/neurons", params={"explainer": "pmi"}).json()["items"]
    assert [(n["layer"], n["index"]) for n in pmi] == [(0, 1)]
    good = http.get("/v1/models/tiny/neurons", params={"min_score": 0.6, "layer": 0}).json()["items"]
    assert {(n["layer"], n["index"]) for n in good} == {(0, 1), (0, 2)}


def test_list_limits_and_validation_errors_name_the_field(http):
    r = http.get("/v1/models/tiny/neurons", params={"limit": 100000})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]
    assert "limit" in r.json()["message"]
    r = http.get("/v1/search", params={"q": "dog", "mode": "fuzzy"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "mode"]
    r = http.get("/v1/models/tiny/neurons/x/1")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "layer"]
    assert http.get("/v1/search").status_code == 422  # q is required


def test_text_search(http):
    items = http.get("/v1/search", params={"q": "dogs"}).json()["items"]
    assert {i["text"] for i in items} == {"dogs and puppies", "the word dog"}
    items = http.get("/v1/search", params={"q": "dog", "min_score": 0.6}).json()["items"]
    assert [i["text"] for i in items] == ["dogs and puppies"]
    assert http.get("/v1/search", params={"q": "dog", "model": "other"}).json()["items"] == []
    assert http.get("/v1/search", params={"q": "dogs", "layer": 1}).json()["items"] == []
    pmi = http.get("/v1/search", params={"q": "dogs", "layer": 0, "explainer": "pmi"}).json()["items"]
    assert pmi and all(i["explainer"] == "pmi" and i["layer"] == 0 for i in pmi)


@pytest.mark.slow
def test_semantic_search(http):
    items = http.get("/v1/search", params={"q": "automobiles", "mode": "semantic", "limit": 1}).json()["items"]
    assert items[0]["text"] == "cars" and (items[0]["layer"], items[0]["index"]) == (0, 2)
    for exact in ("false", "true"):
        items = http.get("/v1/search", params={"q": "automobiles", "mode": "semantic", "layer": 1,
                                               "exact": exact}).json()["items"]
        assert items and all(i["layer"] == 1 for i in items) and "cars" not in {i["text"] for i in items}


def test_concept_search_by_ontology_subsumption(http):
    def under(cls, **kw):
        r = http.get("/v1/search/concept", params={"cls": cls, **kw})
        assert r.status_code == 200, r.text
        return [(i["layer"], i["index"], i["text"]) for i in r.json()["items"]]

    assert under(ONTO + "animal") == [(0, 1, "dogs and puppies"), (1, 0, "cats")]  # best score first
    assert under("animal", min_score=0.3) == [(0, 1, "dogs and puppies")]
    assert under(ONTO + "vehicle") == [(0, 2, "cars")]
    assert under(ONTO + "dog") == [(0, 1, "dogs and puppies")]
    assert len(under(ONTO + "entity")) == 3
    assert under(ONTO + "entity", limit=1, offset=1) == [(0, 2, "cars")]
    r = http.get("/v1/search/concept", params={"cls": ONTO + "unicorn"})
    assert r.status_code == 404 and "unicorn" in r.json()["detail"]


def test_request_body_limit(api):
    base, key, _ = api
    with client(base, key) as c:
        big = {"records": [{"x": "a" * 70_000}], "explainers": ["pmi"]}
        r = c.post("/v1/explain", json=big)
        assert r.status_code == 413
        # chunked upload without Content-Length is cut off too
        r = c.post("/v1/jobs", content=iter([b"{" + b" " * 40_000, b" " * 40_000 + b"}"]),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_job_lifecycle_over_http(api):
    base, key, url = api
    with client(base, key) as c:
        spec = {"model": "default", "layers": [0, 3], "units": [1, 2], "explainers": ["pmi"]}
        r = c.post("/v1/jobs", json=spec)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "queued" and job["spec"]["layers"] == [0, 3]
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
        assert any(j["id"] == job["id"] for j in c.get("/v1/jobs", params={"status": "queued"}).json())
        r = c.delete(f"/v1/jobs/{job['id']}")
        assert r.json()["status"] == "cancelled"
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        assert c.get("/v1/jobs/99999").status_code == 404
        r = c.post("/v1/jobs", json={**spec, "layers": []})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "layers"]
        r = c.post("/v1/jobs", json={**spec, "explainers": ["bad tag!"]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "explainers"]
        r = c.post("/v1/jobs", json={**spec, "explainers": ["no_such_explainer"]})
        assert r.status_code == 422 and "no_such_explainer" in r.json()["message"]
        r = c.post("/v1/jobs", json={**spec, "simulators": {"pmi": "no_such_simulator"}})
        assert r.status_code == 422 and "no_such_simulator" in r.json()["message"]
        r = c.post("/v1/jobs", json={**spec, "colour": "red"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "colour"]


def test_openapi_served(http):
    spec = http.get("/openapi.json").json()
    assert "/v1/models/{model}/neurons/{layer}/{index}" in spec["paths"]
    assert "/v1/jobs" in spec["paths"] and "/v1/search/concept" in spec["paths"]
    assert http.get("/docs").status_code == 200
