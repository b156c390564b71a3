"""``/v1/models/{model}/neurons``: neurons, their records, explanations, scores and best label."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from neurolabel.service.answers import page
from neurolabel.service.deps import SessionDep
from neurolabel.service.errors import responses
from neurolabel.service.etag import ETAG_HEADERS, NOT_MODIFIED, json_with_etag
from neurolabel.service.schemas import MAX_LIST, ModelPath, Page, Tag

router = APIRouter(tags=["neurons"])

Layer = Annotated[int, Path(ge=0, le=100_000)]
Index = Annotated[int, Path(ge=0, le=100_000_000)]


@router.get("/models/{model}/neurons", summary="List neurons", response_model=Page,
            responses=responses(422, 503))
def list_neurons(
    model: ModelPath,
    session: SessionDep,
    layer: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    explainer: Annotated[Tag | None, Query()] = None,
    min_score: Annotated[float | None, Query(ge=-1.0, le=1.0)] = None,
    labelled: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response | dict[str, Any]:
    """Neurons of a model, filtered by layer, explainer, score and whether labelled."""
    from neurolabel.storage.queries import list_neurons as q

    items = q(session=session, model=model, layer=layer, explainer=explainer,
              min_score=min_score, labelled=labelled, limit=limit, offset=offset)
    return page(items, limit, offset)


@router.get("/models/{model}/neurons/{layer}/{index}", summary="One neuron",
            responses={200: {"headers": ETAG_HEADERS}, **NOT_MODIFIED, **responses(404, 422, 503)})
def get_neuron(model: ModelPath, layer: Layer, index: Index, session: SessionDep, request: Request) -> Response:
    """Statistics, examples, explanations with scores, and the best label. Answers carry an
    ``ETag``; with ``If-None-Match`` naming it, 304 while nothing changed."""
    from neurolabel.storage.queries import get_neuron as q

    out = q(session=session, model=model, layer=layer, index=index, raw_examples=True)  # windows as stored
    if out is None:
        raise HTTPException(404, detail=f"neuron {model} {layer}:{index} not found")
    return json_with_etag(request, out)


@router.get("/models/{model}/neurons/{layer}/{index}/label", summary="Best label of a neuron",
            responses={200: {"headers": ETAG_HEADERS}, **NOT_MODIFIED, **responses(404, 422, 503)})
def best_label(model: ModelPath, layer: Layer, index: Index, session: SessionDep, request: Request) -> Response:
    """The neuron's label: its selected accepted explanation (``selected``: within one standard
    error of the highest score, the one fitted on the most explain-split tokens; see README), with
    an ``ETag``; 304 for a matching ``If-None-Match``."""
    from neurolabel.storage.queries import best_label as q

    out = q(session=session, model=model, layer=layer, index=index)
    if out is None:
        raise HTTPException(404, detail=f"neuron {model} {layer}:{index} has no label")
    return json_with_etag(request, out)
