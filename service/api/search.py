"""``/v1/search``: label search by text, by meaning, and by ontology class."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from neurolabel.core.errors import OntologyError
from neurolabel.service.answers import page
from neurolabel.service.deps import SessionDep
from neurolabel.service.errors import responses
from neurolabel.service.sources import redact_paths
from neurolabel.service.schemas import MAX_LIST, TEXT_PATTERN, Name, Page, Tag

router = APIRouter(tags=["search"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIST)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
MinScore = Annotated[float | None, Query(ge=-1.0, le=1.0)]


@router.get("/search", summary="Search labels", response_model=Page, responses=responses(422, 503))
def search(
    session: SessionDep,
    q: Annotated[str, Query(min_length=1, max_length=500, pattern=TEXT_PATTERN, description="search text")],
    mode: Literal["text", "semantic"] = "text",
    model: Annotated[Name | None, Query()] = None,
    layer: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    explainer: Annotated[Tag | None, Query()] = None,
    min_score: MinScore = None,
    limit: Limit = 20,
    offset: Offset = 0,
    exact: Annotated[bool, Query(description="semantic: rank every label exactly instead of by the index")] = False,
) -> Response | dict[str, Any]:
    """Labels matching ``q`` in full text, or nearest in meaning (``mode=semantic``), filtered
    by model, layer, explainer and minimum score before ranking."""
    from neurolabel.storage.queries import search_labels

    items = search_labels(session=session, query=q, mode=mode, model=model, layer=layer, explainer=explainer,
                          min_score=min_score, limit=limit, offset=offset, exact=exact)
    return page(items, limit, offset)


@router.get("/search/concept", summary="Labels under an ontology class", response_model=Page,
            responses=responses(404, 422, 503))
def search_concept(
    request: Request,
    session: SessionDep,
    cls: Annotated[str, Query(min_length=1, max_length=500, pattern=TEXT_PATTERN,
                              description="class IRI (or its label) in the ontology")],
    model: Annotated[Name | None, Query()] = None,
    min_score: MinScore = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Explanations whose class expression falls under the ontology class ``cls``."""
    from neurolabel.service.concept_search import labels_under

    try:
        items = labels_under(session=session, ontology=request.app.state.ontology(), cls=cls,
                             model=model, min_score=min_score, limit=limit, offset=offset)
    except LookupError as exc:
        raise HTTPException(404, detail=str(exc.args[0]) if exc.args else str(exc)) from None
    except OntologyError as exc:
        raise HTTPException(503, detail=f"ontology unavailable: {redact_paths(str(exc))}",
                            headers={"Retry-After": "30"}) from None
    return {"items": items, "limit": limit, "offset": offset}
