"""schemathesis against the served OpenAPI spec (real uvicorn, seeded SQLite and PostgreSQL
databases, with a valid API key so write endpoints reach validation): never a 5xx.

Cases come from schemathesis' strategy of each operation, driven by Hypothesis directly (the
schemathesis pytest plugin does not load under pytest 9)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from neurolabel.service.app import create_app
from tests.service.live import fresh_database, live_server, make_key, seed, small_ontology

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25
"""Examples per operation (bounded to keep the suite fast)."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory):
    with fresh_database(request.param, tmp_path_factory.mktemp("st")) as url:
        seed(url)
        key = make_key(url)
        onto = small_ontology()
        app = create_app(url, ontology=lambda: onto, max_body_bytes=256 * 1024)
        with live_server(app) as base:
            yield base, key
        app.state.engine.dispose()


def test_no_server_errors(served):
    base, key = served
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"GET /v1/models/{model}/neurons/{layer}/{index}", "POST /v1/jobs", "DELETE /v1/jobs/{job_id}",
            "POST /v1/explain", "POST /v1/score", "GET /v1/search/concept"} <= labels
    failures: list[str] = []
    for op in operations:
        seen = {"n": 0}

        @given(case=op.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            seen["n"] += 1
            response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=120)
            if response.status_code >= 500:
                failures.append(f"{op.label} -> {response.status_code}: {response.text[:300]} "
                                f"(path {case.formatted_path}, query {case.query}, body {str(case.body)[:300]})")

        run()
        assert seen["n"] > 0, op.label
    assert not failures, "\n".join(failures)
