"""Job notifications: a job submitted over HTTP with a callback URL, run by a real worker on the
real pipeline (tiny model), is POSTed to a real HTTP receiver on loopback — signed, retried when
the receiver fails, never holding the job up when the receiver is dead; hosts not allowed are
refused at submit time."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from neurolabel.service.app import create_app
from neurolabel.service.callbacks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notifier,
    verify_signature,
)
from neurolabel.service.limits import ServiceLimits
from neurolabel.service.worker import Worker, wait_for
from neurolabel.storage.db import upgrade
from tests.service.live import client, live_server, make_key

pytestmark = pytest.mark.slow


class Receiver:
    """A real HTTP server on loopback that records every POST and answers 500 to the first
    ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls: list[tuple[dict[str, str], bytes, int]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = 500 if len(outer.calls) < outer.fail_first else 204
                outer.calls.append((dict(self.headers), body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def setup(tmp_path, assets):
    url = f"sqlite:///{tmp_path}/labels.db"
    upgrade(url)
    key = make_key(url)
    roots = str(Path(assets[0]).parent)
    app = create_app(url, limits=ServiceLimits(data_dirs=roots))
    with live_server(app) as base, client(base, key) as c:
        yield c, url, key, roots
    app.state.engine.dispose()


def _spec(assets, callback: str) -> dict:
    model, corpus = assets
    return {"model": model, "layers": [0], "units": [0, 1], "explainers": ["concept_induction"],
            "simulators": {"concept_induction": "symbolic"}, "corpus": corpus, "max_tokens": 1000,
            "top_k": 4, "n_random": 4, "callback_url": callback}


def _worker(url: str, roots: str, notifier: Notifier) -> Worker:
    from neurolabel.service.worker import run_spec

    def runner(spec, **kw):
        return run_spec(spec, data_dirs=(roots,), **kw)

    return Worker(database_url=url, heartbeat_s=0.5, runner=runner, notifier=notifier)


def test_final_state_is_posted_signed_and_retried(setup, assets):
    c, url, key, roots = setup
    receiver = Receiver(fail_first=2)
    notifier = Notifier(allowed_hosts=["127.0.0.1"], retries=4, backoff_s=0.05, timeout_s=10)
    try:
        r = c.post("/v1/jobs", json=_spec(assets, receiver.url))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        state = _worker(url, roots, notifier).run_one(job_id=job_id)
        assert state["status"] == "done"
        assert wait_for(lambda: len(receiver.calls) >= 3, timeout_s=30), receiver.calls
        assert notifier.close(5) == 0
        assert [s for _, _, s in receiver.calls] == [500, 500, 204]  # retried until it answered
        headers, body, _ = receiver.calls[-1]
        assert len({h[DELIVERY_HEADER] for h, _, _ in receiver.calls}) == 1  # one delivery, retried
        assert headers[EVENT_HEADER] == "job.done"
        assert verify_signature(key, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
        assert not verify_signature("nl_someone_else", body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
        assert not verify_signature(key, body + b" ", headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
        payload = json.loads(body)
        assert (payload["id"], payload["status"], payload["progress"]) == (job_id, "done", 1.0)
        assert payload["result"]["processed"] == 2 and payload["spec"]["callback_url"] == receiver.url
        assert notifier.delivered == [{"id": headers[DELIVERY_HEADER], "url": receiver.url, "event": "job.done",
                                       "attempts": 3, "ok": True, "error": None}]
    finally:
        receiver.close()


def test_a_dead_receiver_never_delays_the_job(setup, assets):
    """The receiver accepts connections and never answers: the job is done and the worker free
    while the delivery is still waiting for it."""
    c, url, key, roots = setup
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(8)
    notifier = Notifier(allowed_hosts=["127.0.0.1"], retries=1, backoff_s=0.05, timeout_s=120)
    try:
        r = c.post("/v1/jobs", json=_spec(assets, f"http://127.0.0.1:{dead.getsockname()[1]}/hook"))
        job_id = r.json()["id"]
        state = _worker(url, roots, notifier).run_one(job_id=job_id)
        assert state["status"] == "done"
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "done"
        assert notifier.pending() == 1  # still waiting on the receiver: it did not hold the job
        assert notifier.delivered == []
    finally:
        assert notifier.close(0) == 1
        dead.close()


def test_cancelled_queued_job_is_notified_and_hosts_not_allowed_are_refused(setup, assets):
    c, url, key, roots = setup
    for bad, why in (("http://10.0.0.5/hook", "not allowed"), ("http://example.com/hook", "not allowed"),
                     ("ftp://127.0.0.1/x", "http"), ("http://user:pw@127.0.0.1/x", "user name"),
                     ("not a url", "http")):
        r = c.post("/v1/jobs", json=_spec(assets, bad))
        assert r.status_code == 422, (bad, r.text)
        (item,) = r.json()["detail"]
        assert item["loc"] == ["body", "callback_url"] and why in item["msg"], item
    receiver = Receiver()
    try:
        job_id = c.post("/v1/jobs", json=_spec(assets, receiver.url)).json()["id"]
        assert c.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert wait_for(lambda: len(receiver.calls) == 1, timeout_s=30)
        headers, body, _ = receiver.calls[0]
        assert headers[EVENT_HEADER] == "job.cancelled" and json.loads(body)["status"] == "cancelled"
        assert verify_signature(key, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    finally:
        receiver.close()


def test_signature_is_bounded_in_time():
    body, ts = b'{"id":1}', str(int(time.time()))
    from neurolabel.service.callbacks import sign, signing_key

    sig = sign(body, ts, signing_key("nl_key"))
    assert verify_signature("nl_key", body, ts, sig)
    assert not verify_signature("nl_key", body, ts, sig, now=time.time() + 3600)  # a replay an hour later
    assert verify_signature("nl_key", body, ts, sig, max_age_s=None, now=time.time() + 3600)


def test_a_ray_cluster_the_operator_does_not_allow_is_refused_at_submit(setup, assets, monkeypatch):
    """A job naming a Ray cluster is refused by the API (422 on ray_address), not only later by
    the worker: a Ray driver unpickles what the cluster sends back."""
    c, url, key, roots = setup
    monkeypatch.delenv("NEUROLABEL_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("NEUROLABEL_RAY_ADDRESSES", raising=False)
    spec = {k: v for k, v in _spec(assets, "http://127.0.0.1:9/x").items() if k != "callback_url"}
    r = c.post("/v1/jobs", json={**spec, "ray_address": "10.0.0.7:6379"})
    assert r.status_code == 422, r.text
    (item,) = r.json()["detail"]
    assert item["loc"] == ["body", "ray_address"] and "is not a Ray cluster this server allows" in item["msg"]
    assert c.get("/v1/jobs").json() == []  # nothing queued
