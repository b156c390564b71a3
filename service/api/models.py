"""``/v1/models``: the recorded models and their overview."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from neurolabel.service.deps import SessionDep

router = APIRouter(tags=["models"])


@router.get("/models", summary="Recorded models")
def list_models(session: SessionDep) -> list[dict[str, Any]]:
    """Every model in the label database with its size."""
    from neurolabel.storage.queries import list_models as q

    return q(session=session)


@router.get("/models/{model}", summary="Model overview")
def model_overview(model: str, session: SessionDep) -> dict[str, Any]:
    """Labelled fraction and score distribution per layer."""
    from neurolabel.storage.queries import model_overview as q

    out = q(session=session, model=model)
    if out is None:
        raise HTTPException(404, detail=f"model {model!r} not found")
    return out
