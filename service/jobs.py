"""The job queue, kept in the database's ``jobs`` table.

Claiming is safe with many workers: on PostgreSQL the oldest queued row is locked with
``SELECT … FOR UPDATE SKIP LOCKED``; on SQLite (one writer at a time; storage's engines open
every transaction with ``BEGIN IMMEDIATE``) a compare-and-set
``UPDATE jobs SET status='running' … WHERE id=? AND status='queued'`` whose row count tells
whether this worker won (the same guard backs up the PostgreSQL path). A running job proves its worker alive by heartbeats; a job whose
heartbeat is older than ``stale_after_s`` is requeued (or failed after ``max_attempts``).

A job whose spec names a ``callback_url`` gets a pending callback delivery (a fresh delivery id,
due now) in the same UPDATE that makes it final (:func:`finish`, :func:`cancel`,
:func:`requeue_stale`): there is no moment when a job is final and its callback unrecorded. The
deliveries form a second queue in the same rows, claimed the same way (:func:`claim_callback`,
:func:`record_callback`): a claim is held only while an attempt is in flight, and one older than
the claimer's ``stale_after_s`` is a dead process's, taken over by the next notifier.

Every function is keyword-only, takes a session and commits nothing unless it says so.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

FINAL = ("done", "failed", "cancelled")
"""States a job never leaves."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def aware(t: datetime | None) -> datetime | None:
    """``t`` in UTC with its zone (SQLite returns stored times without one)."""
    return t.replace(tzinfo=timezone.utc) if t is not None and t.tzinfo is None else t


def _job_model():
    from neurolabel.storage.models import Job

    return Job


def job_dict(job: Any) -> dict[str, Any]:
    """A job row as a plain dict (the API's ``JobOut``)."""
    return {
        "id": job.id,
        "spec": dict(job.spec or {}),
        "status": job.status,
        "progress": float(job.progress or 0.0),
        "progress_detail": job.progress_detail,
        "error": job.error,
        "result": getattr(job, "result", None),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "heartbeat_at": job.heartbeat_at,
        "worker": job.worker,
        "attempts": int(job.attempts or 0),
        "owner_key_id": job.owner_key_id,
        "callback": _callback_view(job),
    }


def _callback_view(job: Any) -> dict[str, Any] | None:
    """The delivery state of a job's callback (the API's ``CallbackOut``); ``None`` without one."""
    if job.callback_state is None:
        return None
    return {"state": job.callback_state, "delivery_id": job.callback_id,
            "attempts": int(job.callback_attempts or 0), "last_error": job.callback_error,
            "next_attempt_at": job.callback_due_at if job.callback_state == "pending" else None}


def public_view(job: Mapping[str, Any], *, key_id: int | None, is_admin: bool = False) -> dict[str, Any]:
    """What a caller may see of a job: everything (paths in the error redacted) when its key
    created the job or is an admin key; else only its state and progress."""
    from neurolabel.service.sources import redact_paths

    mine = is_admin or (key_id is not None and job.get("owner_key_id") == key_id)
    out = {k: v for k, v in job.items() if k != "owner_key_id"}
    out["mine"] = mine
    if mine:
        if out.get("error"):
            out["error"] = redact_paths(out["error"])
        if out.get("callback") and out["callback"].get("last_error"):
            out["callback"] = {**out["callback"], "last_error": redact_paths(out["callback"]["last_error"])}
        return out
    out.update(spec=None, error=None, result=None, worker=None, progress_detail=None, callback=None)
    return out


def enqueue(*, session: Session, spec: Mapping[str, Any], owner_key_id: int | None = None) -> int:
    """Add a queued job with ``spec`` owned by the API key ``owner_key_id``; returns its id
    (caller commits)."""
    Job = _job_model()
    job = Job(spec=dict(spec), status="queued", progress=0.0, attempts=0, created_at=_now(),
              owner_key_id=owner_key_id)
    session.add(job)
    session.flush()
    log.info("enqueued job %s for key %s", job.id, owner_key_id)
    return job.id


def count_active(*, session: Session, owner_key_id: int) -> int:
    """Jobs of the key ``owner_key_id`` that are queued or running."""
    from sqlalchemy import func

    Job = _job_model()
    return int(session.scalar(
        select(func.count(Job.id)).where(Job.owner_key_id == owner_key_id, Job.status.in_(("queued", "running")))
    ) or 0)


def get_job(*, session: Session, job_id: int) -> dict[str, Any] | None:
    """The job's state, or ``None`` when there is no such job."""
    job = session.get(_job_model(), job_id)
    return job_dict(job) if job is not None else None


def list_jobs(
    *, session: Session, status: str | None = None, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    """Jobs, newest first, optionally of one status."""
    Job = _job_model()
    q = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
    if status is not None:
        q = q.where(Job.status == status)
    return [job_dict(j) for j in session.scalars(q)]


def claim(*, session: Session, worker: str, job_id: int | None = None) -> dict[str, Any] | None:
    """Take the oldest queued job (or job ``job_id`` if queued) for ``worker``; COMMITS.

    Returns the claimed job, or ``None`` when no queued job is left (or another worker won)."""
    Job = _job_model()
    now = _now()
    pick = select(Job.id).where(Job.status == "queued").order_by(Job.id).limit(1)
    if job_id is not None:
        pick = pick.where(Job.id == job_id)
    dialect = session.get_bind().dialect.name
    for _ in range(5):
        if dialect == "postgresql":
            jid = session.scalars(pick.with_for_update(skip_locked=True)).first()
        else:
            jid = session.scalars(pick).first()
        if jid is None:
            session.rollback()
            return None
        res = session.execute(
            update(Job)
            .where(Job.id == jid, Job.status == "queued")
            .values(
                status="running",
                worker=worker,
                started_at=now,
                heartbeat_at=now,
                attempts=Job.attempts + 1,
                error=None,
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if res.rowcount == 1:
            log.info("worker %s claimed job %s", worker, jid)
            return get_job(session=session, job_id=jid)
        # another worker took it between our SELECT and UPDATE: try the next one
    return None


def heartbeat(
    *,
    session: Session,
    job_id: int,
    worker: str,
    progress: float | None = None,
    detail: Mapping[str, Any] | None = None,
) -> bool:
    """Record that ``worker`` still runs ``job_id`` (and its progress); COMMITS.

    Returns ``False`` when the job is no longer this worker's running job (cancelled,
    or requeued and taken by someone else): the worker must stop."""
    Job = _job_model()
    values: dict[str, Any] = {"heartbeat_at": _now()}
    if progress is not None:
        values["progress"] = max(0.0, min(1.0, float(progress)))
    if detail is not None:
        values["progress_detail"] = dict(detail)
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return res.rowcount == 1


def finish(
    *,
    session: Session,
    job_id: int,
    worker: str,
    status: str,
    error: str | None = None,
    result: Mapping[str, Any] | None = None,
) -> bool:
    """Mark this worker's running job ``done`` or ``failed`` (its callback pending, when it has
    one); COMMITS. ``False`` when it was not (any more) this worker's running job — e.g. cancelled
    meanwhile: it then keeps its state."""
    if status not in ("done", "failed"):
        raise ValueError(f"finish: status must be 'done' or 'failed', not {status!r}")
    Job = _job_model()
    now = _now()
    spec = session.scalar(select(Job.spec).where(Job.id == job_id))  # never changes once queued
    values: dict[str, Any] = {"status": status, "finished_at": now, "error": error,
                              **callback_pending(spec, now=now)}
    if status == "done":
        values["progress"] = 1.0
    if result is not None:
        values["result"] = dict(result)
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return res.rowcount == 1


def release(*, session: Session, job_id: int, worker: str) -> bool:
    """Put this worker's running job back in the queue (the worker is shutting down before the
    job is complete; another worker resumes it); COMMITS. ``False`` when it was not this
    worker's running job."""
    Job = _job_model()
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
        .values(status="queued", worker=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return res.rowcount == 1


def cancel(*, session: Session, job_id: int) -> dict[str, Any] | None:
    """Cancel a queued or running job (a running job's worker stops at its next check); COMMITS.

    Finished jobs keep their state (and their callback's). Returns the job, or ``None`` when there
    is no such job."""
    Job = _job_model()
    now = _now()
    spec = session.scalar(select(Job.spec).where(Job.id == job_id))
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(("queued", "running")))
        .values(status="cancelled", finished_at=now, **callback_pending(spec, now=now))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return get_job(session=session, job_id=job_id)


def is_cancelled(*, session: Session, job_id: int) -> bool:
    """Whether the job was cancelled."""
    Job = _job_model()
    return session.scalar(select(Job.status).where(Job.id == job_id)) == "cancelled"


def requeue_stale(*, session: Session, stale_after_s: float, max_attempts: int = 3) -> list[int]:
    """Requeue running jobs whose heartbeat is older than ``stale_after_s`` (their worker died);
    jobs that already had ``max_attempts`` attempts are failed instead (their callbacks pending, as
    :func:`finish` leaves them). COMMITS; returns the ids touched."""
    Job = _job_model()
    cutoff = _now() - timedelta(seconds=stale_after_s)
    stale = session.scalars(
        select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff).order_by(Job.id)
    ).all()
    touched = []
    for job in stale:
        old_worker = job.worker
        if int(job.attempts or 0) >= max_attempts:
            now = _now()
            values = {
                "status": "failed",
                "finished_at": now,
                "error": f"worker {old_worker} stopped heartbeating {max_attempts} times",
                **callback_pending(job.spec, now=now),
            }
        else:
            values = {"status": "queued", "worker": None}
        res = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == "running", Job.worker == old_worker,
                   Job.heartbeat_at < cutoff)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount == 1:
            log.warning("job %s: worker %s is gone; %s", job.id, old_worker, values["status"])
            touched.append(job.id)
    session.commit()
    return touched


def callback_pending(spec: Mapping[str, Any] | None, *, now: datetime) -> dict[str, Any]:
    """The column values that make a job's callback a pending delivery due ``now`` (a fresh
    delivery id), to set in the UPDATE that makes the job final; ``{}`` when its spec names no
    ``callback_url``."""
    if not (spec or {}).get("callback_url"):
        return {}
    return {"callback_id": uuid.uuid4().hex, "callback_state": "pending", "callback_attempts": 0,
            "callback_error": None, "callback_due_at": now, "callback_claimed_by": None,
            "callback_claimed_at": None}


def _claimable(Job: Any, now: datetime, stale_after_s: float) -> Any:
    """Pending deliveries due by ``now`` that nobody holds, or whose holder went silent."""
    cutoff = now - timedelta(seconds=stale_after_s)
    return (Job.callback_state == "pending", Job.callback_due_at <= now,
            or_(Job.callback_claimed_by.is_(None), Job.callback_claimed_at < cutoff))


def claim_callback(*, session: Session, notifier: str, stale_after_s: float,
                   job_id: int | None = None) -> dict[str, Any] | None:
    """Take the pending callback delivery due first (of job ``job_id`` if given) that no live
    notifier holds, for ``notifier``, counting the attempt it is about to make; COMMITS.

    A delivery claimed more than ``stale_after_s`` ago is taken over (its holder died mid-attempt;
    that attempt stays counted). Returns the job (:func:`job_dict`, with ``callback``), or
    ``None`` when nothing is due or another notifier won."""
    Job = _job_model()
    now = _now()
    pick = select(Job.id).where(*_claimable(Job, now, stale_after_s)).order_by(Job.callback_due_at, Job.id).limit(1)
    if job_id is not None:
        pick = pick.where(Job.id == job_id)
    postgres = session.get_bind().dialect.name == "postgresql"
    for _ in range(5):
        jid = session.scalars(pick.with_for_update(skip_locked=True) if postgres else pick).first()
        if jid is None:
            session.rollback()
            return None
        res = session.execute(
            update(Job)
            .where(Job.id == jid, *_claimable(Job, now, stale_after_s))
            .values(callback_claimed_by=notifier, callback_claimed_at=now,
                    callback_attempts=Job.callback_attempts + 1)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if res.rowcount == 1:
            return get_job(session=session, job_id=jid)
    return None


def record_callback(*, session: Session, job_id: int, delivery_id: str, notifier: str, ok: bool,
                    error: str | None = None, retry_at: datetime | None = None) -> str | None:
    """Record the outcome of ``notifier``'s attempt at delivery ``delivery_id``; COMMITS.

    ``ok``: delivered (even when a notifier that thought this one dead took it over meanwhile:
    the receiver has it). Otherwise pending again, due at ``retry_at`` with ``error`` as its last
    error, or ``failed`` when ``retry_at`` is ``None`` (no retries left). Returns the new state, or
    ``None`` when the delivery was no longer this notifier's to record."""
    Job = _job_model()
    where = [Job.id == job_id, Job.callback_id == delivery_id, Job.callback_state == "pending"]
    if ok:
        values: dict[str, Any] = {"callback_state": "delivered", "callback_error": None}
    else:
        where.append(Job.callback_claimed_by == notifier)
        values = {"callback_state": "pending" if retry_at is not None else "failed", "callback_error": error}
        if retry_at is not None:
            values["callback_due_at"] = retry_at
    res = session.execute(
        update(Job).where(*where)
        .values(callback_claimed_by=None, callback_claimed_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return values["callback_state"] if res.rowcount == 1 else None


def next_callback_at(*, session: Session, stale_after_s: float) -> datetime | None:
    """When the next pending delivery can be claimed: the earliest due time of those nobody
    holds, or the earliest time a held one's claim goes stale; ``None`` when none is pending."""
    Job = _job_model()
    free, held = session.execute(
        select(func.min(Job.callback_due_at).filter(Job.callback_claimed_by.is_(None)),
               func.min(Job.callback_claimed_at).filter(Job.callback_claimed_by.is_not(None)))
        .where(Job.callback_state == "pending")
    ).one()
    session.rollback()
    times = [t for t in (aware(free), aware(held) and aware(held) + timedelta(seconds=stale_after_s)) if t]
    return min(times) if times else None


def callback_states(*, session: Session, job_ids: list[int]) -> dict[int, str | None]:
    """The callback delivery state of each of ``job_ids`` (those that exist)."""
    Job = _job_model()
    if not job_ids:
        return {}
    return dict(session.execute(select(Job.id, Job.callback_state).where(Job.id.in_(job_ids))).all())
