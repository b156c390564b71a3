"""The database job queue on SQLite and PostgreSQL: exclusive claims under concurrency,
heartbeats, stale-worker requeue, cancellation; the callback deliveries kept in the same rows."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from neurolabel.service import jobs
from neurolabel.storage.db import make_engine, session_factory, upgrade


@pytest.fixture
def factory(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


def test_each_job_is_claimed_by_exactly_one_of_many_workers(factory):
    with factory() as s:
        ids = [jobs.enqueue(session=s, spec={"layers": [i]}) for i in range(12)]
        s.commit()
    claimed: dict[int, list[str]] = {}
    lock = threading.Lock()

    def work(name: str) -> None:
        while True:
            with factory() as s:
                job = jobs.claim(session=s, worker=name)
            if job is None:
                return
            with lock:
                claimed.setdefault(job["id"], []).append(name)
            with factory() as s:
                assert jobs.finish(session=s, job_id=job["id"], worker=name, status="done")

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == sorted(ids)
    assert all(len(v) == 1 for v in claimed.values()), claimed
    with factory() as s:
        assert {j["status"] for j in jobs.list_jobs(session=s, limit=100)} == {"done"}


def test_stale_running_job_is_requeued_and_old_worker_loses_it(factory):
    with factory() as s:
        jid = jobs.enqueue(session=s, spec={"layers": [0]})
        s.commit()
        assert jobs.claim(session=s, worker="dead")["worker"] == "dead"
        assert jobs.heartbeat(session=s, job_id=jid, worker="dead", progress=0.4, detail={"done": 2})
        assert jobs.requeue_stale(session=s, stale_after_s=3600) == []  # fresh heartbeat: kept
        time.sleep(0.05)
        assert jobs.requeue_stale(session=s, stale_after_s=0.01) == [jid]
        job = jobs.get_job(session=s, job_id=jid)
        assert job["status"] == "queued" and job["worker"] is None and job["progress"] == pytest.approx(0.4)
        assert jobs.claim(session=s, worker="alive")["attempts"] == 2
        # the dead worker, if it comes back, learns it lost the job and cannot finish it
        assert not jobs.heartbeat(session=s, job_id=jid, worker="dead")
        assert not jobs.finish(session=s, job_id=jid, worker="dead", status="done")
        assert jobs.finish(session=s, job_id=jid, worker="alive", status="done", result={"n": 1})
        assert jobs.get_job(session=s, job_id=jid)["result"] == {"n": 1}


def test_job_failed_after_max_attempts(factory):
    with factory() as s:
        jid = jobs.enqueue(session=s, spec={"layers": [0]})
        s.commit()
        for attempt in range(2):
            jobs.claim(session=s, worker=f"w{attempt}")
            time.sleep(0.02)
            jobs.requeue_stale(session=s, stale_after_s=0.01, max_attempts=2)
        job = jobs.get_job(session=s, job_id=jid)
        assert job["status"] == "failed" and "heartbeat" in job["error"]


def test_cancel_queued_and_running(factory):
    with factory() as s:
        a = jobs.enqueue(session=s, spec={"layers": [0]})
        b = jobs.enqueue(session=s, spec={"layers": [1]})
        s.commit()
        assert jobs.cancel(session=s, job_id=a)["status"] == "cancelled"
        got = jobs.claim(session=s, worker="w")
        assert got["id"] == b  # the cancelled job is never claimed
        assert jobs.cancel(session=s, job_id=b)["status"] == "cancelled"
        assert jobs.is_cancelled(session=s, job_id=b)
        assert not jobs.heartbeat(session=s, job_id=b, worker="w")  # worker must stop
        assert not jobs.finish(session=s, job_id=b, worker="w", status="done")
        assert jobs.get_job(session=s, job_id=b)["status"] == "cancelled"
        assert jobs.cancel(session=s, job_id=999) is None
        assert jobs.claim(session=s, worker="w") is None


def test_release_puts_a_running_job_back(factory):
    with factory() as s:
        jid = jobs.enqueue(session=s, spec={"layers": [0]})
        s.commit()
        jobs.claim(session=s, worker="w1")
        assert not jobs.release(session=s, job_id=jid, worker="other")
        assert jobs.release(session=s, job_id=jid, worker="w1")
        assert jobs.get_job(session=s, job_id=jid)["status"] == "queued"
        assert jobs.claim(session=s, worker="w2")["id"] == jid


def test_final_states_record_a_pending_callback_claimed_once_until_stale(factory):
    """done, cancelled and failed-by-requeue each make the callback pending in the UPDATE that
    makes the job final; a delivery is claimed by one notifier at a time, taken over only once
    its claim is stale, and keeps its id through every attempt."""
    spec = {"layers": [0], "callback_url": "http://127.0.0.1:9/hook"}
    with factory() as s:
        a, b, c = (jobs.enqueue(session=s, spec=spec) for _ in range(3))
        plain = jobs.enqueue(session=s, spec={"layers": [0]})
        s.commit()
        assert jobs.get_job(session=s, job_id=a)["callback"] is None  # not final yet
        jobs.claim(session=s, worker="w", job_id=a)
        assert jobs.finish(session=s, job_id=a, worker="w", status="done")
        assert jobs.cancel(session=s, job_id=b)["status"] == "cancelled"
        jobs.claim(session=s, worker="gone", job_id=c)
        time.sleep(0.02)
        assert jobs.requeue_stale(session=s, stale_after_s=0.01, max_attempts=1) == [c]
        jobs.claim(session=s, worker="w", job_id=plain)
        assert jobs.finish(session=s, job_id=plain, worker="w", status="failed", error="boom")
        assert jobs.get_job(session=s, job_id=plain)["callback"] is None  # no callback_url
        views = {j: jobs.get_job(session=s, job_id=j) for j in (a, b, c)}
        assert [v["status"] for v in views.values()] == ["done", "cancelled", "failed"]
        ids = {j: v["callback"]["delivery_id"] for j, v in views.items()}
        for v in views.values():
            cb = v["callback"]
            assert (cb["state"], cb["attempts"], cb["last_error"]) == ("pending", 0, None)
            assert len(cb["delivery_id"]) == 32 and cb["next_attempt_at"] is not None
        assert len(set(ids.values())) == 3

        got = [jobs.claim_callback(session=s, notifier="n1", stale_after_s=3600) for _ in range(3)]
        assert [g["id"] for g in got] == [a, b, c]  # due first, first
        assert all(g["callback"]["attempts"] == 1 for g in got)
        assert jobs.claim_callback(session=s, notifier="n2", stale_after_s=3600) is None  # all held
        assert jobs.next_callback_at(session=s, stale_after_s=3600) > datetime.now(timezone.utc)

        assert jobs.record_callback(session=s, job_id=a, delivery_id=ids[a], notifier="n1", ok=True) == "delivered"
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        assert jobs.record_callback(session=s, job_id=b, delivery_id=ids[b], notifier="n1", ok=False,
                                    error="HTTP 503", retry_at=later) == "pending"
        assert jobs.claim_callback(session=s, notifier="n2", stale_after_s=3600, job_id=b) is None  # not due
        assert jobs.aware(jobs.next_callback_at(session=s, stale_after_s=3600)) <= later

        # n1 holds c and goes silent: n2 takes it over once the claim is older than its stale_after_s
        assert jobs.claim_callback(session=s, notifier="n2", stale_after_s=3600, job_id=c) is None
        time.sleep(0.02)
        taken = jobs.claim_callback(session=s, notifier="n2", stale_after_s=0.01, job_id=c)
        assert taken["callback"]["attempts"] == 2 and taken["callback"]["delivery_id"] == ids[c]
        # the old holder's failure is no longer its to record; the new holder's is
        assert jobs.record_callback(session=s, job_id=c, delivery_id=ids[c], notifier="n1", ok=False,
                                    error="late") is None
        assert jobs.record_callback(session=s, job_id=c, delivery_id=ids[c], notifier="n2", ok=False,
                                    error="HTTP 500") == "failed"
        final = {j: jobs.get_job(session=s, job_id=j)["callback"] for j in (a, b, c)}
        assert final[a] == {"state": "delivered", "delivery_id": ids[a], "attempts": 1, "last_error": None,
                            "next_attempt_at": None}
        assert (final[b]["state"], final[b]["attempts"], final[b]["last_error"]) == ("pending", 1, "HTTP 503")
        assert final[c] == {"state": "failed", "delivery_id": ids[c], "attempts": 2, "last_error": "HTTP 500",
                            "next_attempt_at": None}
        assert jobs.cancel(session=s, job_id=a)["callback"] == final[a]  # a final job keeps its delivery
        # the owner sees the delivery; another key sees none of it
        assert jobs.public_view(jobs.get_job(session=s, job_id=c), key_id=None)["callback"] is None
        assert jobs.public_view(jobs.get_job(session=s, job_id=c), key_id=None, is_admin=True)["callback"] == final[c]
