"""``/v1/jobs``: enqueue, inspect and cancel labelling jobs.

Jobs belong to the key that created them: only it (or an admin key) sees a job's spec, error,
result and worker, and may cancel it. Each key has quotas (jobs queued, neurons per job)."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request

from neurolabel.service import jobs as queue
from neurolabel.service.deps import CallerDep, LimitsDep, OptionalCallerDep, SessionDep
from neurolabel.service.errors import responses
from neurolabel.service.schemas import MAX_LIST, JobOut, JobSpec

log = logging.getLogger(__name__)
router = APIRouter(tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2**31 - 1)]  # a 32-bit primary key
OPTIONAL_KEY = {"security": [{}]}
"""OpenAPI: added to the bearer scheme, the key becomes optional (it decides what is shown)."""


@router.post("/jobs", status_code=202, response_model=JobOut, summary="Enqueue a labelling job",
             responses=responses(401, 403, 413, 422, 429, 503))
def create_job(spec: JobSpec, session: SessionDep, caller: CallerDep, limits: LimitsDep,
               request: Request) -> dict[str, Any]:
    """Queue a job; a ``neurolabel worker`` runs it. Refused here (422), not later in the
    worker: unknown explainer or simulator tags, a model or corpus the server does not allow, a
    ``callback_url`` on a host the server does not allow (the worker POSTs the job's final
    state there, signed: ``X-Neurolabel-Signature``).
    Over a quota (jobs queued, neurons per job): 429 with ``Retry-After``. Needs an API key."""
    from neurolabel.service.admission import admit_job

    checked = admit_job(session=session, spec=spec, caller=caller, limits=limits,
                        callback_hosts=request.app.state.callback_hosts)
    job_id = queue.enqueue(session=session, spec=checked, owner_key_id=caller.key_id)
    session.commit()
    return queue.public_view(queue.get_job(session=session, job_id=job_id), key_id=caller.key_id)


@router.get("/jobs", response_model=list[JobOut], summary="List jobs",
            responses=responses(401, 403, 422, 503), openapi_extra=OPTIONAL_KEY)
def list_jobs(
    session: SessionDep,
    caller: OptionalCallerDep,
    status: Literal["queued", "running", "done", "failed", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[dict[str, Any]]:
    """Jobs, newest first. Specs, errors and workers only of the caller's own jobs (every job's
    for an admin key); without a key, none."""
    key_id, admin = (caller.key_id, caller.is_admin) if caller else (None, False)
    return [queue.public_view(j, key_id=key_id, is_admin=admin)
            for j in queue.list_jobs(session=session, status=status, limit=limit, offset=offset)]


@router.get("/jobs/{job_id}", response_model=JobOut, summary="Job status and progress",
            responses=responses(401, 403, 404, 422, 503), openapi_extra=OPTIONAL_KEY)
def get_job(job_id: JobId, session: SessionDep, caller: OptionalCallerDep) -> dict[str, Any]:
    """Status and progress of one job; its spec, error and result only for its own key (or an
    admin key)."""
    job = queue.get_job(session=session, job_id=job_id)
    if job is None:
        raise HTTPException(404, detail=f"job {job_id} not found")
    key_id, admin = (caller.key_id, caller.is_admin) if caller else (None, False)
    return queue.public_view(job, key_id=key_id, is_admin=admin)


@router.delete("/jobs/{job_id}", response_model=JobOut, summary="Cancel a job",
               responses=responses(401, 403, 404, 409, 422, 429, 503))
def cancel_job(job_id: JobId, session: SessionDep, caller: CallerDep, request: Request) -> dict[str, Any]:
    """Cancel a queued or running job of the caller's key (any job, for an admin key): 403 for
    another key's job, 409 for a job that already finished. Needs an API key."""
    job = queue.get_job(session=session, job_id=job_id)
    if job is None:
        raise HTTPException(404, detail=f"job {job_id} not found")
    if not caller.is_admin and job["owner_key_id"] != caller.key_id:
        raise HTTPException(403, detail=f"job {job_id} belongs to another API key")
    if job["status"] in queue.FINAL:
        raise HTTPException(409, detail=f"job {job_id} is already {job['status']}; nothing to cancel")
    job = queue.cancel(session=session, job_id=job_id)  # its callback pending in the same UPDATE
    if job["status"] == "cancelled" and job["callback"] is not None:
        _notify_cancelled(request, job["id"])
    return queue.public_view(job, key_id=caller.key_id, is_admin=caller.is_admin)


def _notify_cancelled(request: Request, job_id: int) -> None:
    """Deliver the callback of a job cancelled here now (a queued job's: no worker will run it;
    a running job's worker may race this one for it: a claim decides). Should this process die
    first, a worker's poll delivers it."""
    try:
        request.app.state.notifier.send(job_id)
    except Exception as exc:  # noqa: BLE001 - the cancel stands; the delivery stays pending
        log.warning("job %s: callback left to the workers: %s", job_id, exc)
