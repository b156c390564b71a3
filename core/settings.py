"""All settings in one pydantic-settings class (environment variables ``NEUROLABEL_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """neurolabel's settings. Every field can be set by ``NEUROLABEL_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NEUROLABEL_", extra="ignore")

    cache_dir: Path = Field(default=Path.home() / ".cache" / "neurolabel")
    """Where converted models, the built ontology and annotations are cached."""
    index_dir: Path | None = None
    """Where the label vector indexes of server databases (PostgreSQL) are kept (default
    ``<cache_dir>/label-index``); a SQLite database keeps its index beside its file."""
    database_url: str = "sqlite:///neurolabel.db"
    """SQLAlchemy URL of the label database (``postgresql+psycopg://…`` in production)."""
    device: str = "auto"
    """Torch device for local models: ``auto``, ``cpu``, ``cuda``…"""
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("NEUROLABEL_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    """Base URL of an OpenAI-compatible endpoint; unset = use the local backend."""
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("NEUROLABEL_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    """API key for that endpoint."""
    openai_model: str = "gpt-4o-mini"
    """Model name sent to the endpoint."""
    llm_timeout_s: float = 60.0
    """Timeout of one LLM request."""
    llm_max_retries: int = 4
    """Retries on 429/5xx/connection errors, with exponential backoff."""
    llm_concurrency: int = 8
    """At most this many LLM requests in flight."""
    score_threshold: float = 0.3
    """An explanation is accepted when its score reaches this."""
    window_tokens: int = 64
    """Tokens per corpus window."""
    ray_address: str | None = None
    """Ray cluster labelling runs use when their spec names none (``auto``, ``host:port``,
    ``ray://host:10001``, ``local``); unset = run in this process. Needs the ``ray`` extra."""
    ray_addresses: str = ""
    """Further Ray clusters a queued or nightly job may name, comma-separated (besides
    :attr:`ray_address`); a job naming any other is refused: a driver unpickles what the cluster
    sends back, so only clusters the operator trusts may be named."""
    callback_hosts: str = "127.0.0.1,localhost,::1"
    """Hosts a job's ``callback_url`` may name, comma-separated (default: loopback only); the
    service and the worker refuse any other, so a job cannot make the server reach anything the
    operator did not allow."""
    callback_retries: int = Field(default=5, ge=0, le=100)
    """Retries of a job callback the receiver did not take (after the first attempt)."""
    callback_backoff_s: float = Field(default=1.0, ge=0.0, le=3600.0)
    """Wait before a callback's first retry (seconds), doubled before each further one."""
    callback_timeout_s: float = Field(default=10.0, gt=0.0, le=600.0)
    """Timeout of one callback request (httpx's, per connect, write and read)."""
    label_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Precision label texts are embedded at (:func:`lm.embeddings.label_precision`): ``auto``
    takes bfloat16 where the CPU has AMX tiles, or AVX-512 BF16 and bfloat16 measured at least
    1.25x float32's speed there (once per process, ~0.4 s), else float32."""
    record_memory_mb: int | None = Field(default=None, ge=1)
    """Memory a labelling run's recording state may take per corpus pass (MB): it records as many
    layers in one pass as fit (:func:`pipeline.run.record_passes`; at least one). ``None``: a third of
    the memory available when the run starts (``MemAvailable``), 4,096 where that cannot be read."""
    neuron_delay_s: float = Field(default=0.0, ge=0.0, le=3600.0)
    """Pause after each neuron a labelling run explains (seconds): throttles a run on a shared
    machine; the crash-recovery tests use it so that a kill lands mid-job."""

    def ray_address_list(self) -> tuple[str, ...]:
        """The Ray clusters jobs may name: :attr:`ray_address` and :attr:`ray_addresses`."""
        extra = [a.strip() for a in self.ray_addresses.split(",") if a.strip()]
        return tuple(dict.fromkeys(([self.ray_address] if self.ray_address else []) + extra))

    def callback_host_list(self) -> tuple[str, ...]:
        """:attr:`callback_hosts` as a tuple of host names."""
        return tuple(h.strip() for h in self.callback_hosts.split(",") if h.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
