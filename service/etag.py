"""``ETag`` / ``If-None-Match`` on reads: a client that already holds what it asks for gets a
304 with no body. Tags are strong: a SHA-256 over the JSON answer (or over what identifies a
version of a bulk answer)."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder

CACHE_CONTROL = "no-cache"
"""Clients may keep answers but must revalidate them (with ``If-None-Match``) before use."""

ETAG_HEADERS = {"ETag": {"description": "Version of the answer; send it back in `If-None-Match` to get a 304 "
                         "when nothing changed.", "schema": {"type": "string"}}}
"""OpenAPI: the ``ETag`` header of a read answer."""
NOT_MODIFIED = {304: {"description": "Not Modified: the `If-None-Match` tag still matches; no body.",
                      "headers": ETAG_HEADERS}}
"""OpenAPI: the 304 answer of a read with ``ETag``."""


def _canonical(value: Any) -> bytes:
    """The canonical JSON bytes of a value (sorted keys, no spaces).

    Plain JSON types are written directly (a neuron with its 30 windows: ~2 ms, where
    ``jsonable_encoder`` first copied it for ~7 ms); :class:`storage.reads.RawJSON` values (JSON
    text from the database) are written as they are; anything else (datetimes, pydantic models)
    is written as ``jsonable_encoder`` writes it."""
    from neurolabel.storage.reads import RawJSON

    raw: list[str] = []
    marker = f"\x00raw-{uuid.uuid4().hex}-"

    def other(v: Any) -> Any:
        if isinstance(v, RawJSON):
            raw.append(v.text)
            return f"{marker}{len(raw) - 1}\x00"
        encoded = jsonable_encoder(v)
        return str(encoded) if type(encoded) is type(v) else encoded

    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=other, ensure_ascii=False)
    if raw:  # each marker string (NUL-delimited, unguessable) becomes its JSON text
        escaped = json.dumps(marker, ensure_ascii=False)[1:-1]
        parts = text.split(f'"{escaped}')
        text = parts[0] + "".join(raw[int(p[: p.index("\\u0000")])] + p[p.index('"') + 1:]
                                  for p in parts[1:])
    return text.encode("utf-8")


def _tag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_of(value: Any) -> str:
    """A strong ETag for a JSON-able value (its canonical JSON, hashed)."""
    return _tag(_canonical(value))


def matches(request: Request, etag: str) -> bool:
    """Whether the request's ``If-None-Match`` names ``etag`` (or is ``*``); weak tags compare
    by their value."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def not_modified(etag: str) -> Response:
    """The 304 answer for ``etag``."""
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})


def json_with_etag(request: Request, content: Any) -> Response:
    """``content`` as JSON with its ETag, or a 304 when the request already has that version."""
    body = _canonical(content)  # serialised once: the tag and the body
    etag = _tag(body)
    if matches(request, etag):
        return not_modified(etag)
    return Response(body, media_type="application/json", headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
