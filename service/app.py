"""The FastAPI application: REST under ``/v1`` (OpenAPI at ``/openapi.json``, docs at ``/docs``)
and the web neuron browser, over one label database.

Two ASGI middlewares wrap every route, pages added later included: :class:`TextGuard` answers
422 for NUL, other control characters or invalid UTF-8 in the path or query string (before any
handler or database sees them), :class:`SecurityHeaders` adds CSP, frame and sniffing headers."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI

from neurolabel.service.body_limit import MAX_BODY_BYTES, BodySizeLimit
from neurolabel.service.errors import STATUS as _STATUS  # noqa: F401 - the status table, re-exported
from neurolabel.service.errors import install_handlers, validation_body
from neurolabel.service.limits import ServiceLimits, get_limits
from neurolabel.service.pool import check_when_idle

log = logging.getLogger(__name__)

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
"""Content-Security-Policy of every answer (inline styles allowed: token shading)."""
DOCS_CSP = ("default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")
"""The interactive API docs load Swagger UI / ReDoc from their CDN."""
_DOCS = ("/docs", "/redoc", "/docs/oauth2-redirect")
_PATH_BAD = {chr(c) for c in range(0x20)} | {"\x7f"}
_QUERY_BAD = _PATH_BAD - {"\t", "\n", "\r"}


class SecurityHeaders:
    """ASGI middleware: CSP, ``X-Frame-Options: DENY``, ``nosniff`` and ``no-referrer`` on
    every HTTP answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = (DOCS_CSP if scope.get("path") in _DOCS else CSP).encode()

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ())
                           if k.lower() not in (b"content-security-policy", b"x-frame-options")]
                headers += [(b"content-security-policy", csp), (b"x-frame-options", b"DENY"),
                            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _bad_text(scope: dict) -> list[dict[str, Any]]:
    """What is wrong with the path and query string of a request (empty when nothing)."""
    problems = []
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        path = None
    if path is None or any(c in _PATH_BAD for c in path):
        problems.append({"loc": ["path"], "msg": "the path holds a NUL, another control character or "
                         "invalid UTF-8", "type": "invalid_text"})
    for part in scope.get("query_string", b"").split(b"&"):
        if not part:
            continue
        name_raw, _, value_raw = part.partition(b"=")
        try:
            name = unquote_to_bytes(name_raw.replace(b"+", b" ")).decode("utf-8")
            value = unquote_to_bytes(value_raw.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            problems.append({"loc": ["query"], "msg": "a query parameter is not valid UTF-8",
                             "type": "invalid_text"})
            continue
        if any(c in _QUERY_BAD for c in name + value):
            problems.append({"loc": ["query", name if not any(c in _QUERY_BAD for c in name) else "?"],
                             "msg": "holds a NUL or another control character", "type": "invalid_text"})
    return problems


class TextGuard:
    """ASGI middleware: 422 for NUL, other control characters or invalid UTF-8 in the path or
    the query string, for every route (API and web pages), before a handler runs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            problems = _bad_text(scope)
            if problems:
                body = json.dumps(validation_body(problems)).encode()
                await send({"type": "http.response.start", "status": 422,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _lazy_default_ontology() -> Callable[[], Any]:
    lock = threading.Lock()
    box: list[Any] = []

    def get() -> Any:
        if box:
            return box[0]
        with lock:
            if not box:
                from neurolabel.ontology.build import default_ontology

                box.append(default_ontology())
            return box[0]

    return get


SERVER_CONNECTIONS = 40
"""Connections of a server process's pool, kept open once opened (as many as request threads)."""


def create_app(
    database_url: str | None = None,
    *,
    ontology: Callable[[], Any] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    limits: ServiceLimits | None = None,
    callback_hosts: tuple[str, ...] | None = None,
) -> FastAPI:
    """The app over the label database at ``database_url`` (settings' URL by default).

    ``ontology`` is a zero-argument callable returning the ontology used by concept search
    (default: the WordNet ontology, loaded on first use). ``limits``: data roots and per-key
    quotas (default: from ``NEUROLABEL_*`` environment variables). ``callback_hosts``: the hosts
    a job's callback URL may name (default: ``NEUROLABEL_CALLBACK_HOSTS``, loopback)."""
    from neurolabel.service.api import contrasts, router
    from neurolabel.service.ratelimit import RateLimiter
    from neurolabel.service.web import studies as study_pages
    from neurolabel.service.web.pages import mount_static
    from neurolabel.service.web.pages import router as pages_router
    from neurolabel.storage.db import make_engine, reader, session_factory

    app = FastAPI(
        title="neurolabel",
        version="1",
        description="Neuron labels of language models: browse, search, explain, score, label.",
    )
    # as many connections as request threads (anyio's default limit is 40): a burst of slow
    # requests (a model loading on first use) must not time out waiting for the pool. All of them
    # stay open once opened: with 10 kept and 30 more closed on return, 16 clients made the pool
    # close and open ~190 connections in 10 s of mixed reads (a PostgreSQL backend started for
    # ~6% of requests, its statements prepared anew)
    engine = make_engine(database_url, pool_size=SERVER_CONNECTIONS, max_overflow=0, pool_pre_ping=False)
    check_when_idle(engine)  # not a database round trip per request: see service.pool
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    # reads (GET, HEAD) on PostgreSQL run each statement on its own (autocommit): no BEGIN and
    # ROLLBACK round trips per request; under READ COMMITTED each statement of a transaction
    # took a snapshot of its own anyway; on SQLite they begin deferred (storage.db.reader): a WAL
    # snapshot, so concurrent reads neither queue behind each other nor behind a write
    postgres = engine.dialect.name == "postgresql"
    reads = engine.execution_options(isolation_level="AUTOCOMMIT") if postgres else reader(engine)
    app.state.read_session_factory = session_factory(reads)
    app.state.reads_autocommit = postgres
    """Read sessions run each statement on its own (nothing to roll back when they close)."""
    app.state.ontology = ontology or _lazy_default_ontology()
    app.state.limits = limits or get_limits()
    app.state.rate_limiter = RateLimiter(app.state.limits.writes_per_minute)
    if callback_hosts is None:
        from neurolabel.core.settings import get_settings

        callback_hosts = get_settings().callback_host_list()
    app.state.callback_hosts = tuple(callback_hosts)
    from neurolabel.core.settings import get_settings
    from neurolabel.service.callbacks import Notifier

    settings = get_settings()
    app.state.notifier = Notifier(database_url=engine.url.render_as_string(hide_password=False),
                                  allowed_hosts=app.state.callback_hosts, retries=settings.callback_retries,
                                  backoff_s=settings.callback_backoff_s, timeout_s=settings.callback_timeout_s)
    """Callbacks of jobs cancelled here (workers send the others); its thread and database
    connection start with the first."""
    app.include_router(router())
    app.include_router(contrasts.router, prefix="/v1")
    app.include_router(study_pages.router)
    app.include_router(pages_router)
    mount_static(app)
    install_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(TextGuard)
    app.add_middleware(SecurityHeaders)
    return app


def serving_app(database_url: str | None = None) -> FastAPI:
    """The app of a server process (``neurolabel serve``, each of its workers): :func:`create_app`
    with the server's garbage-collector policy (:mod:`service.heap`) installed and its start-up
    heap frozen."""
    from neurolabel.service import heap

    heap.freeze_after_slow_collections()
    app = create_app(database_url)
    heap.settle()
    return app
