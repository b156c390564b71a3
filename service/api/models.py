"""``/v1/models``: the recorded models and their overview."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from neurolabel.service.deps import SessionDep
from neurolabel.service.errors import responses
from neurolabel.service.schemas import ModelPath

router = APIRouter(tags=["models"])


@router.get("/models", summary="Recorded models", responses=responses(503))
def list_models(session: SessionDep) -> list[dict[str, Any]]:
    """Every model in the label database with its size (where its weights came from is the
    server's business and not shown)."""
    from neurolabel.storage.queries import list_models as q

    return [{k: v for k, v in m.items() if k != "source"} for m in q(session=session)]


@router.get("/models/{model}", summary="Model overview", responses=responses(404, 422, 503))
def model_overview(model: ModelPath, session: SessionDep) -> dict[str, Any]:
    """Labelled fraction and score distribution per layer."""
    from neurolabel.storage.queries import model_overview as q

    out = q(session=session, model=model)
    if out is None:
        raise HTTPException(404, detail=f"model {model!r} not found")
    return out
