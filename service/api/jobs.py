"""``/v1/jobs``: enqueue, inspect and cancel labelling jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query

from neurolabel.service import jobs as queue
from neurolabel.service.deps import ApiKeyDep, SessionDep
from neurolabel.service.schemas import MAX_LIST, JobOut, JobSpec

router = APIRouter(tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2**31 - 1)]  # a 32-bit primary key


@router.post("/jobs", status_code=202, response_model=JobOut, summary="Enqueue a labelling job")
def create_job(spec: JobSpec, session: SessionDep, _key: ApiKeyDep) -> dict[str, Any]:
    """Queue a job; a ``neurolabel worker`` runs it. Unknown explainer or simulator tags are
    refused here (422), not later in the worker. Needs an API key."""
    from neurolabel.service.pipeline import resolve_simulators

    resolve_simulators(spec.explainers, spec.simulators)  # ConfigError -> 422
    job_id = queue.enqueue(session=session, spec=spec.model_dump())
    session.commit()
    return queue.get_job(session=session, job_id=job_id)


@router.get("/jobs", response_model=list[JobOut], summary="List jobs")
def list_jobs(
    session: SessionDep,
    status: Literal["queued", "running", "done", "failed", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[dict[str, Any]]:
    """Jobs, newest first."""
    return queue.list_jobs(session=session, status=status, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobOut, summary="Job status and progress")
def get_job(job_id: JobId, session: SessionDep) -> dict[str, Any]:
    """Status, progress and error of one job."""
    job = queue.get_job(session=session, job_id=job_id)
    if job is None:
        raise HTTPException(404, detail=f"job {job_id} not found")
    return job


@router.delete("/jobs/{job_id}", response_model=JobOut, summary="Cancel a job")
def cancel_job(job_id: JobId, session: SessionDep, _key: ApiKeyDep) -> dict[str, Any]:
    """Cancel a queued or running job (finished jobs keep their state). Needs an API key."""
    job = queue.cancel(session=session, job_id=job_id)
    if job is None:
        raise HTTPException(404, detail=f"job {job_id} not found")
    return job
