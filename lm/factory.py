"""Building chat backends from the settings: an OpenAI-compatible endpoint when
``OPENAI_BASE_URL`` is set, else the local SmolLM2 model; both behind the response cache."""

from __future__ import annotations

import logging
import threading
from typing import Any

from neurolabel.lm.base import ChatBackend

log = logging.getLogger(__name__)

_local_lock = threading.Lock()
_local: dict[tuple[str | None, str], Any] = {}


def local_backend(path: str | None = None, device: str = "auto") -> Any:
    """The process-wide :class:`lm.local.LocalBackend` for ``path`` (loaded once, shared)."""
    from neurolabel.lm.local import LocalBackend

    key = (path, device)
    with _local_lock:
        if key not in _local:
            _local[key] = LocalBackend.load(path, device=device)
        return _local[key]


def backend_from_settings(settings: Any = None, *, cache: bool = True) -> ChatBackend:
    """The configured chat backend: OpenAI-compatible if ``openai_base_url`` is set, else local.

    ``cache=True`` wraps it in :class:`lm.cache.CachedBackend` over
    :meth:`lm.cache.ResponseCache.default`."""
    from neurolabel.core.settings import get_settings
    from neurolabel.lm.cache import CachedBackend, ResponseCache
    from neurolabel.lm.openai_backend import OpenAIBackend

    s = settings or get_settings()
    backend: ChatBackend
    if s.openai_base_url:
        backend = OpenAIBackend.from_settings(s)
    else:
        backend = local_backend(device=s.device)
    log.info("chat backend: %s", backend.name)
    return CachedBackend(backend, ResponseCache.default()) if cache else backend
