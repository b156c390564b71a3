"""Job notifications: a job submitted over HTTP with a callback URL, run by a real worker on the
real pipeline (tiny model), is POSTed to a real HTTP receiver on loopback — signed, retried when
the receiver fails, never holding the job up when the receiver is dead; hosts not allowed are
refused at submit time. Deliveries are kept in the database (both engines): a SIGKILLed worker's
is sent by the next worker with the same id, two polling workers send each once, one out of
retries is failed and shown to the job's owner."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import update

from neurolabel.service import jobs
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
from neurolabel.storage.db import dispose_engines, make_engine, session_factory, upgrade
from neurolabel.storage.models import Job
from tests.service.live import client, live_server, make_key

pytestmark = pytest.mark.slow


class Receiver:
    """A real HTTP server on loopback (on ``port``, default any free one) that records every POST
    and answers ``fail_status`` (500) to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0, *, fail_status: int = 500, port: int = 0) -> None:
        self.fail_first = fail_first
        self.calls: list[tuple[dict[str, str], bytes, int]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    status = fail_status if len(outer.calls) < outer.fail_first else 204
                    outer.calls.append((dict(self.headers), body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
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
    notifier = Notifier(database_url=url, allowed_hosts=["127.0.0.1"], retries=4, backoff_s=0.05, timeout_s=10)
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
    notifier = Notifier(database_url=url, allowed_hosts=["127.0.0.1"], retries=1, backoff_s=0.05, timeout_s=120)
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


# --- deliveries kept in the database: they outlive the worker that should send them ---------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(db_url, assets):
    """The API over a fresh database of each engine on a live server: (base URL, database URL,
    the owner's key, the allowed data root)."""
    upgrade(db_url)
    key = make_key(db_url)
    roots = str(Path(assets[0]).parent)
    app = create_app(db_url, limits=ServiceLimits(data_dirs=roots))
    with live_server(app) as base:
        yield base, db_url, key, roots
    app.state.engine.dispose()
    dispose_engines()


def _worker_process(url: str, roots: str, log: Path, *args: str) -> subprocess.Popen:
    """A real ``neurolabel worker`` process whose callbacks back off 1 s, 2 s, 4 s… (5 retries,
    2 s timeout: NEUROLABEL_CALLBACK_*); its output goes to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "NEUROLABEL_DATA_DIRS": roots, "NEUROLABEL_CALLBACK_BACKOFF_S": "1", "NEUROLABEL_CALLBACK_RETRIES": "5",
           "NEUROLABEL_CALLBACK_TIMEOUT_S": "2"}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "neurolabel.service.cli", "worker", "--db", url,
                                 "--heartbeat", "0.3", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _until(pred, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    """Poll ``pred`` until true; fail with the worker's output if it times out or ``proc`` exits."""
    end = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) waiting for {what}:\n{log.read_text()}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()}")
        time.sleep(0.2)


def test_a_sigkilled_workers_callback_is_delivered_by_the_next_worker_with_the_same_id(served, assets, tmp_path):
    """The job is done, its receiver is down (connection refused), the worker is in backoff: it
    is SIGKILLed. A new worker, started once the receiver is up, delivers it: one POST, the same
    delivery id, signed, the attempts counted on from the dead worker's."""
    base, url, key, roots = served
    down = socket.socket()
    down.bind(("127.0.0.1", 0))  # bound and not listening: connections are refused
    port = down.getsockname()[1]
    with client(base, key) as c:
        r = c.post("/v1/jobs", json=_spec(assets, f"http://127.0.0.1:{port}/hook"))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    engine = make_engine(url)
    factory = session_factory(engine)

    def job() -> dict:
        with factory() as s:
            return jobs.get_job(session=s, job_id=job_id)

    log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
    first = _worker_process(url, roots, log1, "--once")
    try:
        _until(lambda: job()["status"] == "done" and bool((job()["callback"] or {}).get("last_error")), 240,
               "the job done and its callback refused", first, log1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    killed = job()["callback"]
    assert killed["state"] == "pending" and killed["attempts"] >= 1, killed
    assert "ConnectError" in killed["last_error"], killed

    down.close()
    receiver = Receiver(port=port)  # the receiver is back, on the same address
    second = _worker_process(url, roots, log2, "--poll", "0.2", "--stale-after", "2")
    try:
        _until(lambda: job()["callback"]["state"] == "delivered", 120, "the delivery", second, log2)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, log2.read_text()
    finally:
        if second.poll() is None:
            second.kill()
        receiver.close()
        engine.dispose()
    ((headers, body, status),) = receiver.calls  # delivered once
    assert status == 204 and headers[DELIVERY_HEADER] == killed["delivery_id"]
    assert headers[EVENT_HEADER] == "job.done"
    assert verify_signature(key, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    payload = json.loads(body)
    assert (payload["id"], payload["status"]) == (job_id, "done") and "callback" not in payload
    with client(base, key) as c:
        shown = c.get(f"/v1/jobs/{job_id}").json()["callback"]
    assert shown == {"state": "delivered", "delivery_id": killed["delivery_id"], "attempts": killed["attempts"] + 1,
                     "last_error": None, "next_attempt_at": None}


def test_two_polling_workers_deliver_each_callback_once(db_url):
    """Two workers poll one database while twelve callbacks are due, the receiver failing the
    first six attempts, and one delivery held by a dead worker's claim: each delivery reaches
    the receiver once, every attempt is made by one worker, the dead one's is taken over once stale."""
    upgrade(db_url)
    engine = make_engine(db_url)
    factory = session_factory(engine)
    receiver = Receiver(fail_first=6)
    with factory() as s:
        ids = [jobs.enqueue(session=s, spec={"layers": [0], "callback_url": receiver.url}) for _ in range(12)]
        s.commit()
        for jid in ids:
            jobs.claim(session=s, worker="runner", job_id=jid)
            assert jobs.finish(session=s, job_id=jid, worker="runner", status="done")
        held = jobs.claim_callback(session=s, notifier="dead", stale_after_s=60, job_id=ids[0])
        assert held["callback"]["attempts"] == 1
        # ... by a worker that died ten minutes ago, mid-attempt
        s.execute(update(Job).where(Job.id == ids[0])
                  .values(callback_claimed_at=datetime.now(timezone.utc) - timedelta(minutes=10)))
        s.commit()

    def callbacks() -> list[dict]:
        with factory() as s:
            return [jobs.get_job(session=s, job_id=jid)["callback"] for jid in ids]

    notifiers = [Notifier(database_url=db_url, name=f"w{i}", allowed_hosts=["127.0.0.1"], retries=5,
                          backoff_s=0.05, timeout_s=10, poll_s=0.1, stale_after_s=60) for i in range(2)]
    workers = [Worker(database_url=db_url, name=n.name, poll_s=0.1, notifier=n) for n in notifiers]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run_forever, kwargs={"stop": stop}, daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: all(cb["state"] == "delivered" for cb in callbacks()), timeout_s=60), callbacks()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for w in workers:
            w.close(timeout_s=5)
        receiver.close()
    final = callbacks()
    ok = Counter(h[DELIVERY_HEADER] for h, _, status in receiver.calls if status == 204)
    assert sorted(ok) == sorted(cb["delivery_id"] for cb in final) and set(ok.values()) == {1}
    assert sum(status == 500 for _, _, status in receiver.calls) == 6
    # every counted attempt was made once: the dead worker's (never sent) and the receiver's calls
    assert sum(cb["attempts"] for cb in final) == len(receiver.calls) + 1
    assert final[0]["attempts"] >= 2
    finished = [d["id"] for n in notifiers for d in n.delivered]
    assert sorted(finished) == sorted(ok)  # each outcome recorded by one worker
    engine.dispose()


def test_a_delivery_out_of_retries_is_failed_and_shown_to_its_owner_only(served, assets):
    base, url, key, roots = served
    other, admin = make_key(url, "other"), make_key(url, "admin", admin=True)
    receiver = Receiver(fail_first=10**6, fail_status=503)
    notifier = Notifier(database_url=url, allowed_hosts=["127.0.0.1"], retries=2, backoff_s=0.05, timeout_s=10)
    try:
        with client(base, key) as c:
            job_id = c.post("/v1/jobs", json=_spec(assets, receiver.url)).json()["id"]
            assert c.get(f"/v1/jobs/{job_id}").json()["callback"] is None  # not final yet
            assert _worker(url, roots, notifier).run_one(job_id=job_id)["status"] == "done"
            assert notifier.close(30) == 0  # no longer pending
            view = c.get(f"/v1/jobs/{job_id}").json()
    finally:
        receiver.close()
    assert [status for _, _, status in receiver.calls] == [503, 503, 503]  # the first attempt and 2 retries
    (delivery,) = {h[DELIVERY_HEADER] for h, _, _ in receiver.calls}
    assert view["callback"] == {"state": "failed", "delivery_id": delivery, "attempts": 3, "last_error": "HTTP 503",
                                "next_attempt_at": None}
    assert notifier.delivered == [{"id": delivery, "url": receiver.url, "event": "job.done", "attempts": 3,
                                   "ok": False, "error": "HTTP 503"}]
    for who, sees in ((other, False), (None, False), (admin, True)):
        with client(base, who) as c:
            shown = c.get(f"/v1/jobs/{job_id}").json()
            (listed,) = [j for j in c.get("/v1/jobs").json() if j["id"] == job_id]
        assert shown["mine"] is sees and listed["mine"] is sees
        assert shown["callback"] == listed["callback"] == (view["callback"] if sees else None)


def test_a_host_no_longer_allowed_is_never_reached(setup, assets):
    """The host was allowed when the job was submitted, and removed from the worker's allow-list
    since: the delivery fails at once, naming the setting, without a request."""
    c, url, key, roots = setup
    receiver = Receiver()
    notifier = Notifier(database_url=url, allowed_hosts=["localhost"], retries=5, backoff_s=0.05, timeout_s=10)
    try:
        job_id = c.post("/v1/jobs", json=_spec(assets, receiver.url)).json()["id"]
        assert _worker(url, roots, notifier).run_one(job_id=job_id)["status"] == "done"
        assert notifier.close(30) == 0
        cb = c.get(f"/v1/jobs/{job_id}").json()["callback"]
    finally:
        receiver.close()
    assert receiver.calls == []
    assert cb["state"] == "failed" and cb["attempts"] == 1
    assert "'127.0.0.1' is not allowed" in cb["last_error"] and "NEUROLABEL_CALLBACK_HOSTS" in cb["last_error"]
