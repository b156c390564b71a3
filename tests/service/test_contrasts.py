"""Contrast studies through the edges: ``POST /v1/contrasts`` over real HTTP run by a real
worker, ``GET /v1/contrasts/{id}``, the study page, and the ``contrast`` / ``intervene`` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurolabel.service.app import create_app
from neurolabel.service.cli import app as cli_app
from tests.pipeline.conftest import make_sets
from tests.pipeline.planted import PLANTED, PUSH
from tests.service.live import client, live_server, make_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    from tests.pipeline.planted import planted_llama_dir

    return str(planted_llama_dir(tmp_path_factory.mktemp("planted-svc")))


def _jobs(c) -> list:
    return c.get("/v1/jobs").json()


def test_contrast_job_over_http(db_url, planted_dir):
    from neurolabel.service.limits import ServiceLimits
    from neurolabel.service.worker import Worker, run_spec
    from neurolabel.storage.db import dispose_engines, upgrade

    # the server and its worker allow models under the planted model's folder only
    roots = str(Path(planted_dir).parent)

    upgrade(db_url)
    key = make_key(db_url)
    a, b = make_sets(20)
    app = create_app(db_url, limits=ServiceLimits(data_dirs=roots))
    try:
        with live_server(app) as base, client(base, key) as c, client(base) as anon:
            body = {"name": "api", "model": planted_dir, "a": a, "b": b, "label": 1, "causal": True}
            assert anon.post("/v1/contrasts", json=body).status_code == 401
            bad = [({**body, "a": a[:1]}, "a"), ({**body, "explainers": ["nope"]}, "unknown explainer 'nope'"),
                   ({**body, "model": "/no/such/model"}, "model '/no/such/model' is not allowed"),
                   ({**body, "model": "/usr/share"}, "is not allowed"),  # a folder outside the data roots
                   ({**body, "label": 0}, "causal scores need labels"), ({**body, "b": ["x", "  "]}, "text 1 is blank"),
                   ({**body, "alpha": 0}, "alpha")]
            for wrong, says in bad:
                r = c.post("/v1/contrasts", json=wrong)
                assert r.status_code == 422 and says in r.text, (wrong.keys(), r.text)
            assert _jobs(c) == []  # refused requests queue nothing
            r = c.post("/v1/contrasts", json=body)
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            assert r.json()["job"]["status"] == "queued"
            done = Worker(database_url=db_url, heartbeat_s=0.5,
                          runner=lambda spec, **kw: run_spec(spec, data_dirs=(roots,), **kw)).run_one(job_id=job_id)
            assert done["status"] == "done", done["error"]
            job = c.get(f"/v1/jobs/{job_id}").json()
            sid = job["result"]["study_id"]
            assert job["result"]["labelled"] == [f"0:{PLANTED}"] and job["result"]["causal_scores"] >= 1
            st = c.get(f"/v1/contrasts/{sid}", params={"samples": True}).json()
            first = st["neurons"][0]
            assert (first["layer"], first["index"], first["auroc"]) == (0, PLANTED, 1.0)
            assert first["label"] is not None and first["causal_score"] is not None
            assert len(first["sample_a"]) == 20 and st["set_a"]["n_examples"] == 20
            assert all(n["auroc"] > 0.5 for n in c.get(f"/v1/contrasts/{sid}", params={"direction": "a"}).json()["neurons"])
            assert c.get(f"/v1/contrasts/{sid}", params={"order": "causal", "limit": 1}).json()["neurons"][0]["index"] == PLANTED
            assert c.get(f"/v1/contrasts/{sid + 1000}").status_code == 404
            assert c.get(f"/v1/contrasts/{sid}", params={"order": "nope"}).status_code == 422
            neuron = c.get(f"/v1/models/planted-llama/neurons/0/{PLANTED}").json()
            scorers = {s["scorer"] for e in neuron["explanations"] for s in e["scores"]}
            assert {"correlation", "intervention"} <= scorers
            page = c.get(f"/studies/{sid}")
            assert page.status_code == 200 and f"0:{PLANTED}" in page.text and "<svg" in page.text
            assert f"/studies/{sid}" in c.get("/studies").text
    finally:
        app.state.engine.dispose()
        dispose_engines()


def test_cli_contrast_and_intervene(tmp_path, planted_dir):
    a, b = make_sets(20)
    (tmp_path / "a.txt").write_text("\n".join(a) + "\n")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in b))
    url = f"sqlite:///{tmp_path}/cli.db"
    runner = CliRunner()
    r = runner.invoke(cli_app, ["contrast", "--model", planted_dir, "--a", str(tmp_path / "a.txt"),
                                "--b", str(tmp_path / "b.jsonl"), "--name", "cli", "--label", "1", "--top", "5",
                                "--db", url])
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.output.splitlines() if line.strip().startswith("0 ")]
    assert rows and rows[0][1] == f"0:{PLANTED}" and rows[0][2] == "1.000"
    assert rows[0][8] == "[pmi"  # the label cell names its explainer and score
    assert "stored as study 1" in r.output
    from neurolabel.service.cli_contrast import _label_cell

    long = {"text": "word " * 60, "explainer": "token_tiers", "score": 0.512}
    assert _label_cell(long, width=20) == "[token_tiers 0.51] word word word word…"
    assert _label_cell({**long, "score": None}, width=0).startswith("[token_tiers –] word word")
    assert _label_cell(None, width=20) == ""
    r = runner.invoke(cli_app, ["intervene", "--model", planted_dir, "--neuron", f"1:{PUSH}", "--clamp", "20",
                                "--tokens", "3", "--json", "--score-labels", "--db", url])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["intervention"] == f"clamp 1:{PUSH} to 20" and out["effects"][0]["kl"] > 0
    assert out["causal_scores_stored"] == 0  # 1:PUSH was not labelled


def test_cli_errors_are_one_clear_line(tmp_path, planted_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "neurolabel.service.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    r = run("intervene", "--model", planted_dir, "--neuron", "1:999", "--ablate")
    assert r.returncode == 2 and "unit(s) [999] do not exist" in r.stderr
    r = run("intervene", "--model", planted_dir, "--neuron", "1:2", "--ablate", "--clamp", "3")
    assert r.returncode == 2 and "exactly one of --ablate" in r.stderr
    r = run("contrast", "--example", "nope")
    assert r.returncode == 2 and "known: harmful_vs_harmless, languages, clinical" in r.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    r = run("contrast", "--model", planted_dir, "--a", str(empty), "--b", str(empty), "--db", f"sqlite:///{tmp_path}/e.db")
    assert r.returncode == 2 and "empty" in r.stderr


def test_worker_checks_a_contrast_jobs_model_again(db_url, planted_dir):
    """A contrast spec that reached the queue without the API's check is refused at run time,
    like a label job naming a model outside the server's data directories."""
    from neurolabel.core.errors import ConfigError
    from neurolabel.service.worker import run_spec
    from neurolabel.storage.db import upgrade

    upgrade(db_url)
    a, b = make_sets(4)
    spec = {"kind": "contrast", "name": "sneaky", "model": planted_dir, "a": a, "b": b}
    with pytest.raises(ConfigError, match="is not allowed"):
        run_spec(spec, database_url=db_url, should_stop=lambda: False, on_progress=lambda *a, **k: None,
                 data_dirs=())


def test_stopped_contrast_job_goes_back_to_the_queue_and_a_cancelled_one_stays_cancelled(db_url, planted_dir):
    """A worker shutting down mid-contrast puts the job back in the queue (another run completes
    it); a job cancelled mid-contrast ends cancelled, not failed. Both are triggered from the
    job's own progress callback, so the stop lands mid-stream without any timing guess."""
    from neurolabel.service import jobs
    from neurolabel.service.worker import Worker, run_spec
    from neurolabel.storage.db import dispose_engines, session_scope, upgrade

    upgrade(db_url)
    roots = str(Path(planted_dir).parent)
    a, b = make_sets(40)
    spec = {"kind": "contrast", "name": "stop-me", "model": planted_dir, "a": a, "b": b, "batch_size": 4}

    def worker(on_first_progress):
        w = Worker(database_url=db_url, heartbeat_s=0.2)
        seen = []

        def runner(spec, *, on_progress, **kw):
            def progress(*args, **kwargs):
                on_progress(*args, **kwargs)
                if not seen:
                    seen.append(args)
                    on_first_progress(w)
            return run_spec(spec, data_dirs=(roots,), on_progress=progress, **kw)

        w.runner = runner
        return w, seen

    try:
        with session_scope(db_url) as s:
            job_id = jobs.enqueue(session=s, spec=spec)
        w, seen = worker(lambda w: w.shutdown.set())
        state = w.run_one(job_id=job_id)
        assert seen and state["status"] == "queued" and state["worker"] is None, state
        state = Worker(database_url=db_url, runner=lambda spec, **kw: run_spec(spec, data_dirs=(roots,), **kw)
                       ).run_one(job_id=job_id)
        assert state["status"] == "done" and state["attempts"] == 2, state

        with session_scope(db_url) as s:
            job_id = jobs.enqueue(session=s, spec={**spec, "name": "cancel-me"})

        def cancel(w):
            with session_scope(db_url) as s:
                jobs.cancel(session=s, job_id=job_id)

        w, seen = worker(cancel)
        state = w.run_one(job_id=job_id)
        assert seen and state["status"] == "cancelled" and not state["error"], state
    finally:
        dispose_engines()
