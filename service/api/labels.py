"""``GET /v1/models/{model}/labels``: every neuron's best label, streamed.

JSON Lines (default, ``application/x-ndjson``), CSV (``text/csv``) or Neuronpedia-style JSON
(``application/json``: a list of explanation objects as ``neurolabel export -f neuronpedia``
writes them), chosen by ``format`` or else by ``Accept``. Rows come in (layer, index) order, a
keyset page at a time, each page read in its own short transaction: the server holds one page,
never the whole answer, and a long download blocks no writer. Every row carries a ``cursor``;
``?cursor=<the last row's cursor>`` resumes after it. The answer's ``ETag`` changes whenever a
label of the model (or the query) changes; ``If-None-Match`` with it answers 304."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any, Callable, Iterator, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from neurolabel.service.errors import invalid, responses
from neurolabel.service.etag import CACHE_CONTROL, ETAG_HEADERS, NOT_MODIFIED, etag_of, matches, not_modified
from neurolabel.service.schemas import ModelPath, Tag

router = APIRouter(tags=["neurons"])

PAGE = 2000
"""Neurons read per transaction while streaming."""
MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8", "neuronpedia": "application/json"}
"""Media type of each format."""
LabelFormat = Literal["jsonl", "csv", "neuronpedia"]


def choose_format(format: str | None, accept: str | None) -> str:
    """The format named by ``format``, else the first of ``Accept`` that names one, else JSON Lines."""
    if format is not None:
        return format
    for part in (accept or "").split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/ndjson"):
            return "jsonl"
        if kind == "text/csv":
            return "csv"
        if kind == "application/json":
            return "neuronpedia"
    return "jsonl"


def _pages(factory: Callable[[], Any], query: dict[str, Any], after: tuple[int, int] | None,
           limit: int | None) -> Iterator[list[dict[str, Any]]]:
    from neurolabel.storage.labels import best_labels_page

    left = limit
    while left is None or left > 0:
        with factory() as session:
            page = best_labels_page(session=session, after=after, limit=PAGE, **query)
            session.rollback()
        if page is None:
            return
        rows = page.rows if left is None else page.rows[:left]
        if rows:
            yield rows
        if left is not None:
            left -= len(rows)
        if page.after is None:
            return
        after = page.after


def _render(pages: Iterator[list[dict[str, Any]]], fmt: str) -> Iterator[str]:
    from neurolabel.storage.labels import LABEL_FIELDS
    from neurolabel.storage.transfer import neuronpedia_item

    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(LABEL_FIELDS)
    if fmt == "neuronpedia":
        yield "["
    first = True
    for page in pages:
        if fmt == "jsonl":
            yield "".join(json.dumps(r) + "\n" for r in page)
        elif fmt == "csv":
            for r in page:
                writer.writerow(["" if r[k] is None else r[k] for k in LABEL_FIELDS])
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
        else:
            items = []
            for r in page:
                item = neuronpedia_item({**r, "accepted": True, "scores": [
                    {"score": r["score"], "scorer": r["scorer"], "simulator": r["simulator"],
                     "n_tokens": r["n_tokens"]}] if r["scorer"] else []})
                item.update(updatedAt=r["updated_at"], cursor=r["cursor"])
                items.append(json.dumps(item))
            yield ("" if first else ",") + "\n" + ",\n".join(items)
        first = False
    if fmt == "neuronpedia":
        yield "\n]\n"


_CONTENT = {
    "application/x-ndjson": {"schema": {"type": "string"},
                             "example": '{"model": "smollm2-135m", "layer": 3, "index": 17, "text": "animals", '
                                        '"score": 0.61, "cursor": "3:17", "...": "..."}\n'},
    "text/csv": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
}


@router.get("/models/{model}/labels", summary="Every neuron's best label (streamed)", response_class=Response,
            responses={200: {"description": "The labels, in (layer, index) order: one JSON object a line, "
                             "CSV rows, or a Neuronpedia-style JSON list.", "content": _CONTENT,
                             "headers": ETAG_HEADERS},
                       **NOT_MODIFIED, **responses(404, 422, 503)})
def stream_labels(
    model: ModelPath,
    request: Request,
    format: Annotated[LabelFormat | None, Query(description="jsonl | csv | neuronpedia (default: from "
                                                "Accept, else jsonl)")] = None,
    layer: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    explainer: Annotated[Tag | None, Query(description="Best label among this explainer's")] = None,
    min_score: Annotated[float | None, Query(ge=-1.0, le=1.0)] = None,
    updated_since: Annotated[datetime | None, Query(description="Only neurons with an explanation written "
                                                    "at or after this time (RFC 3339; UTC when no zone)")] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,9}:[0-9]{1,12}$", description="Resume after this "
                                        "row (the `cursor` field of the last row received: `<layer>:<index>`)")] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000_000, description="At most this many rows "
                                       "(default: all)")] = None,
) -> Response:
    """Every neuron's best label (its selected accepted explanation, as ``…/label``) and score, streamed
    in (layer, index) order with flat server memory; filters: layer, explainer, minimum score,
    ``updated_since``. Resume with ``cursor``. ``ETag`` / ``If-None-Match`` (304)."""
    from neurolabel.storage.labels import labels_version, parse_cursor

    after = None
    if cursor is not None:
        try:
            after = parse_cursor(cursor)
        except ValueError as exc:
            raise invalid(["query", "cursor"], str(exc)) from None
    fmt = choose_format(format, request.headers.get("accept"))
    factory = request.app.state.session_factory
    with factory() as session:
        version = labels_version(session=session, model=model)
        session.rollback()
    if version is None:
        raise HTTPException(404, detail=f"model {model!r} not found")
    query = {"model": model, "layer": layer, "explainer": explainer, "min_score": min_score,
             "updated_since": updated_since}
    etag = etag_of([version, fmt, {**query, "updated_since": str(updated_since)}, cursor, limit])
    if matches(request, etag):
        return not_modified(etag)
    return StreamingResponse(_render(_pages(factory, query, after, limit), fmt), media_type=MEDIA[fmt],
                             headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
