"""A labelling run whose simulator is an OpenAI-compatible endpoint (the project's test server over
real HTTP): one request per scored window (the causal prompt-scoring one), however many neurons
run at once."""

from __future__ import annotations

import pytest

from neurolabel.pipeline.run import run
from neurolabel.pipeline.spec import RunSpec

CLASSES = ("animal.n.01", "food.n.02", "person.n.01")


@pytest.fixture()
def endpoint(monkeypatch, tmp_path):
    """The test server over a rule-based backend, configured as the settings' endpoint."""
    from neurolabel.core.settings import get_settings
    from neurolabel.lm.testserver import KeywordBackend, serve_backend
    from neurolabel.pipeline.plugins import clear

    with serve_backend(KeywordBackend(latency_s=0.01)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("NEUROLABEL_OPENAI_MODEL", server.model_name)
        from neurolabel.lm.cache import ResponseCache

        # a fresh response cache: every answer comes from the server
        monkeypatch.setattr(ResponseCache, "default", classmethod(lambda cls: cls(tmp_path / "responses.sqlite")))
        get_settings.cache_clear()
        clear()
        try:
            yield server
        finally:
            get_settings.cache_clear()
            clear()


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 4])
def test_requests_per_neuron_equal_scored_windows(sqlite_url, endpoint, concurrency):
    from bench.planted import planted_records

    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.queries import get_neuron, save_neuron_records

    records = planted_records(CLASSES, n_top=4, n_random=3, n_windows=300, window_tokens=24)
    upgrade(sqlite_url)
    with session_scope(sqlite_url) as session:
        save_neuron_records(session=session, records=records)
    spec = RunSpec.parse({"model": "planted", "layers": [0], "units": [0, 1, 2], "explainers": ["tokens"],
                          "simulators": "llm", "concurrency": concurrency})
    before = endpoint.faults.requests
    summary = run(spec, database_url=sqlite_url, progress=False)
    requests = endpoint.faults.requests - before
    windows = [len(r.windows("top", "score")) + len(r.windows("random", "score")) for r in records]
    assert summary.processed == 3 and summary.explanations == 3 and not summary.errors, summary.errors
    assert requests == sum(windows)  # one request per scored window: 7 per neuron, not one per token
    assert requests < sum(len(w.tokens) for r in records for w in r.windows("top", "score"))
    with session_scope(sqlite_url) as session:
        for i in range(3):
            [score] = get_neuron(session=session, model="planted", layer=0, index=i)["explanations"][0]["scores"]
            assert score["simulator"] == "llm" and score["method"] == "prompt-logprobs" and score["score"] is not None
