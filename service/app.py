"""The FastAPI application: REST under ``/v1`` (OpenAPI at ``/openapi.json``, docs at ``/docs``)
and the web neuron browser, over one label database."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from neurolabel.core.errors import (
    ConfigError,
    ExplanationError,
    LMError,
    NeurolabelError,
    OntologyError,
    ScoringError,
    StorageError,
)
from neurolabel.service.body_limit import MAX_BODY_BYTES, BodySizeLimit

log = logging.getLogger(__name__)

_STATUS = (
    (ConfigError, 422),
    (StorageError, 422),
    (ExplanationError, 422),
    (ScoringError, 422),
    (OntologyError, 503),
    (LMError, 502),
)


def _lazy_default_ontology() -> Callable[[], Any]:
    lock = threading.Lock()
    box: list[Any] = []

    def get() -> Any:
        with lock:
            if not box:
                from neurolabel.ontology.build import default_ontology

                box.append(default_ontology())
            return box[0]

    return get


def create_app(
    database_url: str | None = None,
    *,
    ontology: Callable[[], Any] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The app over the label database at ``database_url`` (settings' URL by default).

    ``ontology`` is a zero-argument callable returning the ontology used by concept search
    (default: the WordNet ontology, loaded on first use)."""
    from neurolabel.service.api import contrasts, router
    from neurolabel.service.web import studies as study_pages
    from neurolabel.service.web.pages import mount_static
    from neurolabel.service.web.pages import router as pages_router
    from neurolabel.storage.db import make_engine, session_factory

    app = FastAPI(
        title="neurolabel",
        version="1",
        description="Neuron labels of language models: browse, search, explain, score, label.",
    )
    engine = make_engine(database_url)
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    app.state.ontology = ontology or _lazy_default_ontology()
    app.include_router(router())
    app.include_router(contrasts.router, prefix="/v1")
    app.include_router(study_pages.router)
    app.include_router(pages_router)
    mount_static(app)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
        return JSONResponse(status_code=422, content={"detail": errors, "message": f"invalid: {fields}"})

    @app.exception_handler(NeurolabelError)
    async def _neurolabel_error(request: Request, exc: NeurolabelError) -> JSONResponse:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
        log.warning("%s %s -> %s: %s", request.method, request.url.path, status, exc)
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app
