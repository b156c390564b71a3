"""The ``/v1`` REST routes, one module per resource."""

from __future__ import annotations

from fastapi import APIRouter

from neurolabel.service.api import explain, jobs, labels, models, neurons, search


def router() -> APIRouter:
    """All ``/v1`` routes."""
    r = APIRouter(prefix="/v1")
    for mod in (models, neurons, labels, search, explain, jobs):
        r.include_router(mod.router)
    return r
