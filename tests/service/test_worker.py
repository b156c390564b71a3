"""The job worker as a real subprocess running the real pipeline (tiny random Llama model,
small corpus, concept-induction explainer + symbolic simulator):

- SIGKILL mid-job, start another worker: the job is requeued (stale heartbeat) and completes,
  no duplicate rows, nothing committed before the kill is lost or redone;
- SIGTERM: the worker stops after the current neuron and requeues the job;
- DELETE /v1/jobs/{id} over HTTP cancels a running job: the worker stops early.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from neurolabel.service import jobs
from neurolabel.service.app import create_app
from neurolabel.storage.db import make_engine, session_factory, upgrade
from tests.service.live import client, live_server, make_key

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
UNITS = list(range(8))
LAYERS = [0, 1]


def _spec(assets) -> dict:
    model, corpus = assets
    return {"model": model, "layers": LAYERS, "units": UNITS, "explainers": ["concept_induction"],
            "simulators": {"concept_induction": "symbolic"}, "corpus": corpus, "max_tokens": 2000,
            "top_k": 5, "n_random": 4, "store_every": 2}


def _roots(assets) -> str:
    """The folder of the test assets, as the workers' allowed data root."""
    return str(Path(assets[0]).parent)


def _worker(url: str, *extra: str, delay: float = 0.0, roots: str = "") -> subprocess.Popen:
    """A real worker process allowed paths under ``roots`` (NEUROLABEL_DATA_DIRS). ``delay``
    (NEUROLABEL_NEURON_DELAY_S) paces it so that a signal sent after its first progress lands
    mid-job: on this tiny model the whole job takes less than the 0.2 s between the test's
    polls, so a kill raced the job's end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "NEUROLABEL_NEURON_DELAY_S": str(delay), "NEUROLABEL_DATA_DIRS": roots}
    return subprocess.Popen(
        [sys.executable, "-m", "neurolabel.service.cli", "worker", "--db", url, "--once", "--heartbeat", "0.3", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited early ({proc.returncode}) waiting for {what}:\n{proc.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _rows(factory):
    from neurolabel.storage.models import Example, ExplanationRow, Neuron, Score

    with factory() as s:
        expl = {
            (r.layer, r.index, r.explainer, r.explainer_version, r.rank): (r.id, r.text, r.score)
            for r in s.execute(
                select(Neuron.layer, Neuron.index, ExplanationRow.explainer, ExplanationRow.explainer_version,
                       ExplanationRow.rank, ExplanationRow.id, ExplanationRow.text, ExplanationRow.score)
                .join(Neuron, Neuron.id == ExplanationRow.neuron_id))
        }
        counts = {
            "explanations": s.scalar(select(func.count(ExplanationRow.id))),
            "scores": s.scalar(select(func.count(Score.id))),
            "score_keys": s.scalar(select(func.count()).select_from(
                select(Score.explanation_id, Score.scorer, Score.simulator, Score.split).distinct().subquery())),
            "examples": s.scalar(select(func.count(Example.id))),
            "example_keys": s.scalar(select(func.count()).select_from(
                select(Example.neuron_id, Example.kind, Example.position).distinct().subquery())),
            "neurons": s.scalar(select(func.count(Neuron.id))),
        }
    return expl, counts


def test_sigkilled_worker_job_is_resumed_without_duplicates_or_loss(pg_url, assets):
    """On PostgreSQL (SKIP LOCKED claims); SIGKILL on SQLite is exercised by test_nightly."""
    db_url = pg_url
    upgrade(db_url)
    engine = make_engine(db_url)
    factory = session_factory(engine)
    with factory() as s:
        job_id = jobs.enqueue(session=s, spec=_spec(assets))
        s.commit()

    def job():
        with factory() as s:
            return jobs.get_job(session=s, job_id=job_id)

    first = _worker(db_url, delay=0.3, roots=_roots(assets))
    try:
        # wait until some explanations are committed (every 2 neurons), then kill mid-job
        _wait(lambda: (job()["progress_detail"] or {}).get("explanations", 0) > 0, 240, "a commit", first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    killed = job()
    assert killed["status"] == "running" and killed["attempts"] == 1  # nobody finished it
    before, counts_before = _rows(factory)
    assert len(before) >= 1 and killed["progress_detail"]["done"] < len(UNITS) * len(LAYERS)

    time.sleep(2.5)  # let its heartbeat go stale
    second = _worker(db_url, "--stale-after", "2", roots=_roots(assets))
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    final = job()
    assert final["status"] == "done", (final, out)
    assert final["attempts"] == 2 and final["worker"] != killed["worker"]
    summary = final["result"]
    assert summary["neurons"] == len(UNITS) * len(LAYERS)
    assert summary["recorded"] == 0  # the recordings committed before the kill were kept
    # neurons fully explained before the kill were skipped, not redone
    done_before = {(k[0], k[1]) for k in before}
    assert summary["skipped"] >= len(done_before) - 1

    after, counts = _rows(factory)
    for key, (row_id, text, score) in before.items():  # nothing committed is lost or rewritten
        assert after[key] == (row_id, text, score), key
    assert counts["explanations"] == len(after)
    assert counts["scores"] == counts["score_keys"] == counts["explanations"]
    assert counts["examples"] == counts["example_keys"] == counts_before["examples"]
    assert counts["neurons"] == len(UNITS) * len(LAYERS) == counts_before["neurons"]
    explained = {(k[0], k[1]) for k in after}
    assert len(explained) + summary["n_errors"] >= len(UNITS) * len(LAYERS) - 1
    # the job's result keeps the run spec it ran: running it again is the same run, with nothing left to do
    from neurolabel.pipeline.run import run
    from neurolabel.pipeline.spec import RunSpec

    spec = RunSpec.parse(summary["spec"])
    assert list(spec.layers) == LAYERS and list(spec.units) == UNITS and spec.explainer_tags == _spec(assets)["explainers"]
    again = run(spec, database_url=db_url, progress=False)
    assert again.spec == summary["spec"] and again.explanations == 0 and again.processed == 0
    assert _rows(factory)[0] == after
    engine.dispose()


def test_sigterm_requeues_and_cancel_over_http_stops_a_running_worker(sqlite_url, assets):
    """Here the job names the model and corpus by names the operator registered (no paths)."""
    upgrade(sqlite_url)
    key = make_key(sqlite_url)
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.sources import add_source

    with session_scope(sqlite_url) as s:
        add_source(session=s, kind="model", name="tiny-llama", path=assets[0])
        add_source(session=s, kind="corpus", name="small", path=assets[1])
    app = create_app(sqlite_url)

    def done(c, job_id):
        return (c.get(f"/v1/jobs/{job_id}").json()["progress_detail"] or {}).get("done", 0)

    with live_server(app) as base, client(base, key) as c:
        spec = {**_spec(assets), "units": list(range(16)), "model": "tiny-llama", "corpus": "small"}
        job_id = c.post("/v1/jobs", json=spec).json()["id"]
        # SIGTERM: the worker stops after the current neuron and puts the job back in the queue
        first = _worker(sqlite_url, delay=0.3)
        try:
            _wait(lambda: done(c, job_id) >= 1, 240, "first neuron", first)
            first.send_signal(signal.SIGTERM)
            out, _ = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 0, out
        job = c.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "queued" and job["worker"] is None and job["attempts"] == 1, job
        # another worker resumes it; DELETE cancels it while it runs
        second = _worker(sqlite_url, delay=0.3)
        try:
            _wait(lambda: c.get(f"/v1/jobs/{job_id}").json()["attempts"] == 2 and done(c, job_id) >= 1,
                  240, "resumed job progressing", second)
            assert c.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
            out, _ = second.communicate(timeout=60)
        finally:
            if second.poll() is None:
                second.kill()
        assert second.returncode == 0, out
        job = c.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled"
        assert job["progress_detail"]["done"] < 32  # stopped early
        assert f"job {job_id}: cancelled" in out
    app.state.engine.dispose()
