"""API keys: created/revoked by the CLI, stored hashed; every write endpoint refuses missing,
wrong and revoked keys (real HTTP against uvicorn, SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from neurolabel.service.app import create_app
from neurolabel.service.auth import hash_key
from neurolabel.service.cli import app as cli_app
from neurolabel.storage.db import make_engine, session_factory, upgrade
from tests.service.live import client, live_server

RECORD = {
    "neuron_id": {"layer_index": 0, "neuron_index": 1},
    "random_sample": [{"tokens": ["a", "b"], "activations": [0.0, 1.0]}],
    "most_positive_activation_records": [{"tokens": ["a", "b"], "activations": [0.0, 1.0]}],
}
WRITES = [
    ("POST", "/v1/jobs", {"model": "default", "layers": [0], "explainers": ["pmi"]}),
    ("DELETE", "/v1/jobs/1", None),
    ("POST", "/v1/explain", {"records": [RECORD], "explainers": ["pmi"]}),
    ("POST", "/v1/score", {"records": [RECORD], "explanation": {"text": "b"}}),
]


def _cli(*args: str) -> str:
    res = CliRunner().invoke(cli_app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


@pytest.fixture
def served(db_url):
    upgrade(db_url)
    app = create_app(db_url)
    with live_server(app) as base:
        yield base, db_url
    app.state.engine.dispose()


def test_keys_are_stored_hashed_and_every_write_endpoint_checks_them(served):
    base, url = served
    secret = _cli("keys", "create", "--name", "ci", "--db", url).strip().splitlines()[0]
    assert secret.startswith("nl_") and len(secret) > 30
    from neurolabel.storage.models import ApiKey

    engine = make_engine(url)
    with session_factory(engine)() as s:
        row = s.scalars(select(ApiKey)).one()
        assert row.key_hash == hash_key(secret) and secret not in (row.key_hash, row.prefix)
    engine.dispose()

    def call(c, method, path, body):
        return c.request(method, path, json=body) if body is not None else c.request(method, path)

    with client(base) as anon, client(base, "nl_wrong") as wrong, client(base, secret) as good:
        for method, path, body in WRITES:
            r = call(anon, method, path, body)
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers.get("www-authenticate") == "Bearer"
            r = anon.request(method, path, headers={"Authorization": f"Basic {secret}"},
                             **({"json": body} if body is not None else {}))
            assert r.status_code == 401, (method, path, r.text)
            assert call(wrong, method, path, body).status_code == 401, (method, path)
        # a good key passes: the job is created and can be cancelled
        r = good.post("/v1/jobs", json=WRITES[0][2])
        assert r.status_code == 202, r.text
        assert good.delete(f"/v1/jobs/{r.json()['id']}").json()["status"] == "cancelled"
        # explain/score with a good key and a malformed body reach validation (422), not auth
        assert good.post("/v1/explain", json={"records": [], "explainers": ["pmi"]}).status_code == 422
        assert good.post("/v1/score", json={"records": [RECORD]}).status_code == 422

        assert "revoked 1 key(s)" in _cli("keys", "revoke", secret[:10], "--db", url)
        for method, path, body in WRITES:
            r = call(good, method, path, body)
            assert r.status_code == 403, (method, path, r.text)
            assert "revoked" in r.json()["detail"]
        # reads stay open without a key; a revoked key is refused there too (it decides what is shown)
        assert anon.get("/v1/jobs").status_code == 200
        assert good.get("/v1/jobs").status_code == 403


def test_revoking_unknown_key_fails_clearly(sqlite_url):
    upgrade(sqlite_url)
    res = CliRunner().invoke(cli_app, ["keys", "revoke", "nl_nothing", "--db", sqlite_url])
    assert res.exit_code != 0
    assert "no live API key" in str(res.exception) + res.output
