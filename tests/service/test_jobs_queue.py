"""The database job queue on SQLite and PostgreSQL: exclusive claims under concurrency,
heartbeats, stale-worker requeue, cancellation."""

from __future__ import annotations

import threading
import time

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
