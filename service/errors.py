"""Error answers of the service: one JSON shape per kind, documented in the OpenAPI spec.

422 bodies are :class:`ValidationErrorOut` (``detail`` a list of ``{loc, msg, type}``, plus a
one-line ``message``); every other error is :class:`ErrorOut` (``detail`` a string). A database
that cannot be reached answers 503 (the pool reconnects by itself when it is back); a key over a
quota 429 with ``Retry-After``. Messages from the pipeline have server paths redacted."""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from neurolabel.core.errors import (
    ConfigError,
    ExplanationError,
    LMError,
    NeurolabelError,
    OntologyError,
    ScoringError,
    StorageError,
)
from neurolabel.service.limits import QuotaExceeded
from neurolabel.service.schemas import ErrorOut, ValidationErrorOut

log = logging.getLogger(__name__)

STATUS = (
    (ConfigError, 422),
    (StorageError, 422),
    (ExplanationError, 422),
    (ScoringError, 422),
    (OntologyError, 503),
    (LMError, 502),
)
"""The one table from neurolabel's errors to HTTP status codes."""

_DESCRIPTIONS = {
    401: "No, a malformed or an unknown API key (`Authorization: Bearer <key>`).",
    403: "The API key was revoked, or the job belongs to another key.",
    404: "No such model, neuron, job or ontology class.",
    409: "The job already finished.",
    413: "The request body is larger than the server accepts.",
    422: "The request is invalid: every problem named with where it is.",
    429: "The API key is over a quota (write requests per minute, jobs queued, neurons per job).",
    502: "The language-model backend failed.",
    503: "The database (or the ontology) is unavailable; retry later.",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error ``codes`` a route can answer."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": ValidationErrorOut if code == 422 else ErrorOut,
                                 "description": _DESCRIPTIONS[code]}
        if code in (429, 503):
            entry["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                                "schema": {"type": "integer"}}}
        out[code] = entry
    return out


def invalid(loc: Sequence[str | int], msg: str, kind: str = "value_error") -> HTTPException:
    """A 422 naming where (``loc``) and what is wrong."""
    return HTTPException(422, detail=[{"loc": list(loc), "msg": msg, "type": kind}])


def validation_body(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The 422 body for ``items`` (each ``{loc, msg, type}``)."""
    items = [{"loc": [p if isinstance(p, (str, int)) else str(p) for p in i.get("loc", ())],
              "msg": str(i.get("msg", "")), "type": str(i.get("type", "value_error"))} for i in items]
    message = "; ".join(f"{'.'.join(str(p) for p in i['loc']) or 'request'}: {i['msg']}" for i in items)
    return {"detail": items, "message": f"invalid: {message}"}


def _db_unavailable(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if "locked" in first:
        return "database is busy (locked by another writer); retry shortly"
    for hint in ("Connection refused", "timeout", "timed out", "terminating connection",
                 "server closed the connection", "could not connect", "connection is closed",
                 "the database system is", "QueuePool limit", "does not exist"):
        if hint.lower() in first.lower():
            return f"database unavailable ({hint.lower()}); retry shortly"
    return f"database unavailable ({type(orig).__name__}); retry shortly"


def install_handlers(app: FastAPI) -> None:
    """Register the error handlers on ``app``."""
    from sqlalchemy.exc import InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from neurolabel.service.sources import redact_paths

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content=validation_body(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 400 and str(exc.detail).startswith("There was an error parsing the body"):
            return JSONResponse(status_code=422, content=validation_body(
                [{"loc": ["body"], "msg": "the body is not valid JSON text (UTF-8)", "type": "json_invalid"}]))
        if exc.status_code == 422:
            items = exc.detail if isinstance(exc.detail, list) else [
                {"loc": ["request"], "msg": str(exc.detail), "type": "value_error"}]
            return JSONResponse(status_code=422, content=validation_body(items), headers=headers)
        return JSONResponse(status_code=exc.status_code, content={"detail": str(exc.detail)}, headers=headers)

    @app.exception_handler(QuotaExceeded)
    async def _quota(request: Request, exc: QuotaExceeded) -> JSONResponse:
        log.info("%s %s -> 429: %s", request.method, request.url.path, exc.message)
        return JSONResponse(status_code=429, content={"detail": exc.message},
                            headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})

    @app.exception_handler(NeurolabelError)
    async def _neurolabel_error(request: Request, exc: NeurolabelError) -> JSONResponse:
        status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
        log.warning("%s %s -> %s: %s", request.method, request.url.path, status, exc)
        message = redact_paths(str(exc))
        if status == 422:
            return JSONResponse(status_code=422, content=validation_body(
                [{"loc": ["body"], "msg": message, "type": type(exc).__name__}]))
        if status == 503:
            return JSONResponse(status_code=503, content={"detail": message}, headers={"Retry-After": "30"})
        return JSONResponse(status_code=status, content={"detail": message})

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        detail = _db_unavailable(exc)
        log.error("%s %s -> 503: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=503, content={"detail": detail}, headers={"Retry-After": "5"})

    for cls in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(cls, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s -> 500", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; the server log has the details"})
