"""The service's security settings: which data a client may name, and per-key quotas.

Read at the edges (``create_app``, the worker, the nightly runner, the CLI) from
``NEUROLABEL_*`` environment variables and passed down as arguments."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceLimits(BaseSettings):
    """Data roots and per-key quotas. Every field can be set by ``NEUROLABEL_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NEUROLABEL_", extra="ignore")

    data_dirs: str = ""
    """Folders (``os.pathsep``-separated) under which a job may name corpus and model paths;
    empty = only registered names and the built-in defaults."""
    max_queued_jobs: int = Field(default=20, ge=1)
    """Jobs one key may have queued or running at once (429 beyond)."""
    max_neurons_per_job: int = Field(default=46_080, ge=1)
    """Neurons (layers × units) one job may label: by default the whole SmolLM2-135M (429 beyond)."""
    writes_per_minute: int = Field(default=60, ge=1)
    """Requests per minute one key may make to the write endpoints (429 beyond)."""
    max_corpus_text_chars: int = Field(default=1_000_000, ge=1)
    """Longest ``corpus_text`` a job may carry in its body."""

    def roots(self) -> tuple[str, ...]:
        """The data roots as a tuple of non-empty strings."""
        return tuple(p for p in self.data_dirs.split(os.pathsep) if p.strip())


@lru_cache(maxsize=1)
def get_limits() -> ServiceLimits:
    """The process-wide limits (read once from the environment)."""
    return ServiceLimits()


class QuotaExceeded(Exception):
    """A key went over one of its quotas: the service answers 429 with ``Retry-After``."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
