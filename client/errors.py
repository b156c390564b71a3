"""API errors as the exceptions the library raises (:mod:`core.errors`).

An error answer becomes an instance of the library's class for it, with the HTTP ``status``,
the answer's JSON ``body`` and, for 429/503, ``retry_after`` (seconds) set on it: a 422 the
server made from a library error (its ``type`` names the class: ``ExplanationError``,
``ScoringError``…) is that class, any other 422 and 401/403/413/429 a :class:`ConfigError`
(the request or the key is wrong), 404 and 503 a :class:`StorageError` (not in the label
database; database unavailable), 502 an :class:`LMError`, anything else a
:class:`NeurolabelError`. Transport failures stay ``httpx.TransportError``."""

from __future__ import annotations

from typing import Any

import httpx

from neurolabel.core import errors as core_errors
from neurolabel.core.errors import ConfigError, LMError, NeurolabelError, OntologyError, StorageError

BY_STATUS: dict[int, type[NeurolabelError]] = {
    401: ConfigError, 403: ConfigError, 404: StorageError, 413: ConfigError, 422: ConfigError,
    429: ConfigError, 502: LMError, 503: StorageError,
}
"""The library class of each error status (a 422 naming a library class is that class)."""


def _message(body: Any, response: httpx.Response) -> str:
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            return body["message"]
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return f"HTTP {response.status_code} from {response.request.method} {response.request.url.path}"


def error_for(response: httpx.Response) -> NeurolabelError:
    """The library exception an error ``response`` stands for (see the module docstring)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    cls = BY_STATUS.get(response.status_code, NeurolabelError)
    if response.status_code == 422 and isinstance(body, dict) and isinstance(body.get("detail"), list):
        kinds = {d.get("type") for d in body["detail"] if isinstance(d, dict)}
        named = [getattr(core_errors, k) for k in kinds if isinstance(k, str) and isinstance(
            getattr(core_errors, k, None), type) and issubclass(getattr(core_errors, k), NeurolabelError)]
        if len(named) == 1:
            cls = named[0]
    message = _message(body, response)
    if response.status_code == 503 and "ontology" in message.lower():
        cls = OntologyError
    exc = cls(message)
    exc.status = response.status_code  # type: ignore[attr-defined]
    exc.body = body  # type: ignore[attr-defined]
    retry = response.headers.get("retry-after")
    exc.retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None  # type: ignore[attr-defined]
    return exc


def raise_for(response: httpx.Response) -> httpx.Response:
    """``response`` when it is a success (2xx, or 304), else its library exception."""
    if response.is_success or response.status_code == 304:
        return response
    raise error_for(response)
