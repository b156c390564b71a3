"""Reads under load: neuron lookup, best label and neuron lists run a fixed number of SQL
statements per request however many neurons, explanations and scores they return (no N+1),
counted on the server's engine with an SQLAlchemy event listener over real HTTP."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from neurolabel.core.types import NeuronId
from neurolabel.service.app import create_app
from neurolabel.storage import db
from neurolabel.storage import queries as q
from tests.service.live import client, live_server
from tests.storage.factories import explanation, hash_embedder, record


def _grow(url: str, layer: int, n_neurons: int, per_neuron: int) -> None:
    with db.session_scope(url) as s:
        q.save_neuron_records(session=s, records=[record(layer, i, model="m") for i in range(n_neurons)])
        q.save_explanations(session=s, embedder=hash_embedder, threshold=0.3, explanations=[
            explanation(layer, i, f"label {layer} {i} {r}", 0.3 + 0.05 * r, model="m", rank=r)
            for i in range(n_neurons) for r in range(per_neuron)])
        q.record_failures(session=s, model="m", failures=[
            (NeuronId(layer, i), "llm_summary", "1", "unparseable") for i in range(n_neurons)])


@pytest.mark.postgres
def test_reads_run_a_bounded_number_of_statements(pg_url: str) -> None:
    url = db.normalize_url(pg_url)
    db.upgrade(url)
    _grow(url, 0, 2, 1)  # small: layer 0, one explanation per neuron
    _grow(url, 1, 40, 8)  # large: layer 1, eight per neuron
    app = create_app(url)
    statements: list[str] = []
    event.listen(app.state.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, params, context, many: statements.append(sql))

    def count(http, path: str, **params) -> tuple[int, dict]:
        statements.clear()
        r = http.get(path, params=params)
        assert r.status_code == 200, r.text
        return len(statements), r.json()

    try:
        with live_server(app) as base, client(base) as http:
            small, body = count(http, "/v1/models/m/neurons/0/0")
            large, big = count(http, "/v1/models/m/neurons/1/0")
            assert len(body["explanations"]) == 1 and len(big["explanations"]) == 8
            assert len(big["examples"]) == len(body["examples"]) > 0 and big["failures"]
            assert small == large <= 5, statements
            small, _ = count(http, "/v1/models/m/neurons/0/0/label")
            large, _ = count(http, "/v1/models/m/neurons/1/7/label")
            assert small == large <= 3
            small, page = count(http, "/v1/models/m/neurons", layer=0)
            large, big = count(http, "/v1/models/m/neurons", layer=1, limit=40)
            assert len(page["items"]) == 2 and len(big["items"]) == 40
            assert all(i["n_explanations"] == 8 and i["label"] for i in big["items"])
            filtered, _ = count(http, "/v1/models/m/neurons", min_score=0.5, explainer="pmi", labelled=True)
            assert small == large == filtered <= 2, statements
    finally:
        app.state.engine.dispose()
