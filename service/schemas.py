"""Pydantic schemas of the REST API (the edge: core dataclasses inside, these outside)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import field_validator, BaseModel, ConfigDict, Field, StringConstraints

from neurolabel.core.types import Explanation, ScoreResult
from neurolabel.pipeline.spec import PluginConfig

MAX_RECORDS = 64
"""Most neuron records one explain/score request may carry."""
MAX_LIST = 500
"""Largest page a list endpoint returns."""

Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
"""A plugin tag (explainer, simulator, scorer)."""
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
"""A model name / spec / corpus name (no NUL or other control characters)."""
ModelPath = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$",
                                description="model name")]
"""A model name in a URL path."""
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
"""Free text in a query parameter: no NUL or control characters other than tab and newlines."""
MAX_CORPUS_TEXT = 1_000_000
"""Longest ``corpus_text`` (characters) the schema admits; ``NEUROLABEL_MAX_CORPUS_TEXT_CHARS``
may lower it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobSpec(_Strict):
    """A labelling job: which model and units, which explainers and simulators."""

    model: Name = "default"
    """Target model: ``default``, a name the operator registered (``neurolabel models add``) or a
    path under the server's data directories (``NEUROLABEL_DATA_DIRS``)."""
    layers: list[Annotated[int, Field(ge=0, le=10_000)]] = Field(min_length=1, max_length=256)
    """Layers to label."""
    units: list[Annotated[int, Field(ge=0, le=1_000_000)]] | None = Field(default=None, max_length=100_000)
    """Unit indices within each layer; ``None`` = every unit."""
    explainers: list[Tag | PluginConfig] = Field(min_length=1, max_length=16)
    """Explainers: tags, e.g. ``["concept_induction", "pmi"]``, or tagged configurations such as
    ``{"kind": "pmi", "lam": 0.8}``."""
    simulators: dict[Tag, Tag | PluginConfig] | None = None
    """Simulator (tag or configuration) per explainer tag, ``"*"`` for all others (``None`` = each
    explainer's declared default)."""
    scorer: Tag | PluginConfig = "correlation"
    """Scorer (tag or configuration)."""
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    """Score an explanation needs to be accepted (``None`` = the storage default)."""
    ontology: Name = "default"
    """Ontology the explainers and the symbolic simulator share: ``default`` (WordNet) or a name
    the operator registered (``neurolabel ontologies add``) or a path under the server's data
    directories."""
    concurrency: int = Field(default=8, ge=1, le=64)
    """Neurons explained and scored at once (LLM requests in flight to an endpoint)."""
    ray_address: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = None
    """Ray cluster to run the job on (``None`` = in the worker process)."""
    corpus: Name = "default"
    """Corpus used to record activations when missing: ``default``, a registered name
    (``neurolabel corpora add``) or a path under the server's data directories."""
    corpus_text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CORPUS_TEXT)] | None = None
    """The corpus itself, as text in the request (one text a line), instead of ``corpus``."""
    max_tokens: int = Field(default=100_000, ge=1, le=100_000_000)
    """Tokens of the corpus to record over (when recording is needed)."""
    top_k: int | None = Field(default=None, ge=1, le=1000)
    """Top windows kept per split when recording (``None`` = the recorder's default)."""
    n_random: int | None = Field(default=None, ge=0, le=1000)
    """Random windows kept when recording (``None`` = the recorder's default)."""
    store_every: int | None = Field(default=None, ge=1, le=10_000)
    """Commit explanations every this many neurons (``None`` = the pipeline's default); a killed
    worker loses at most three times this many neurons' work (two batches handed to the run's
    writer, one being gathered)."""
    retry_failed: bool = False
    """Retry neurons an explainer version failed to explain before (stored failures are skipped
    by default)."""
    embed: Literal["best", "accepted", "all", "none"] = "best"
    """Which stored labels get a vector for semantic search (``RunSpec.embed``): ``best`` = each
    explainer's best-scored candidate, ``accepted`` = its top-ranked and best-scored candidate and
    the accepted ones, ``all``, ``none``."""
    callback_url: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None
    """Where the worker POSTs the job's final state (signed: see ``X-Neurolabel-Signature`` in
    the README); only hosts the operator allows (``NEUROLABEL_CALLBACK_HOSTS``, default loopback)."""


class CallbackOut(BaseModel):
    """The delivery of a job's callback (kept in the database: it survives a worker's crash)."""

    state: Literal["pending", "delivered", "failed"]
    """``pending`` (being delivered or retried), ``delivered`` (the receiver answered 2xx) or
    ``failed`` (its retries ran out, or its host is no longer allowed: see ``last_error``)."""
    delivery_id: str
    """The ``X-Neurolabel-Delivery`` header of every attempt (a receiver drops repeats by it)."""
    attempts: int = 0
    """Attempts made so far."""
    last_error: str | None = None
    """Why the last attempt failed (``HTTP 503``, ``ConnectError: …``)."""
    next_attempt_at: datetime | None = None
    """When a pending delivery is tried next."""

    @field_validator("next_attempt_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        """Times are UTC; SQLite returns them without a zone."""
        return v.replace(tzinfo=timezone.utc) if v is not None and v.tzinfo is None else v


class JobOut(BaseModel):
    """A job's state."""

    id: int
    spec: dict[str, Any] | None = None
    """The job's spec: shown only to the key that created the job and to admin keys."""
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float = 0.0
    progress_detail: dict[str, Any] | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None

    @field_validator("created_at", "started_at", "finished_at", "heartbeat_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        """Times are UTC; SQLite returns them without a zone, so say so (RFC 3339 needs one)."""
        return v.replace(tzinfo=timezone.utc) if v is not None and v.tzinfo is None else v
    worker: str | None = None
    attempts: int = 0
    mine: bool = False
    """Whether the caller's key owns the job (or is an admin key): then spec, error, result,
    worker and callback are shown."""
    callback: CallbackOut | None = None
    """The delivery of the job's callback (its spec's ``callback_url``), once the job is final;
    shown only to the key that created the job and to admin keys."""


class ValidationItem(BaseModel):
    """One thing wrong with a request."""

    loc: list[str | int]
    """Where: ``["body", "layers"]``, ``["query", "limit"]``, ``["path", "model"]``…"""
    msg: str
    """What is wrong, and what is allowed."""
    type: str
    """Machine-readable kind (``missing``, ``string_pattern_mismatch``, ``config_error``…)."""


class ValidationErrorOut(BaseModel):
    """The body of every 422 answer."""

    detail: list[ValidationItem]
    message: str
    """All problems in one line."""


class ErrorOut(BaseModel):
    """The body of every other error answer (401, 403, 404, 409, 413, 429, 503)."""

    detail: str


class ScoreOut(BaseModel):
    """A validation score and its parts."""

    score: float | None
    scorer: str
    simulator: str
    parts: dict[str, float | None] = {}
    n_tokens: int = 0
    split: str = "score"
    method: str = ""

    @classmethod
    def of(cls, s: ScoreResult) -> "ScoreOut":
        """From the core dataclass (non-finite numbers become ``None``)."""
        return cls(
            score=_finite(s.score),
            scorer=s.scorer,
            simulator=s.simulator,
            parts={k: _finite(v) for k, v in dict(s.parts).items()},
            n_tokens=s.n_tokens,
            split=s.split,
            method=s.method,
        )


class ExplanationOut(BaseModel):
    """One explanation, with its score when scored."""

    model: str
    layer: int
    index: int
    explainer: str
    explainer_version: str
    text: str
    structured: dict[str, Any] = {}
    rank: int = 0
    score: ScoreOut | None = None

    @classmethod
    def of(cls, e: Explanation) -> "ExplanationOut":
        """From the core dataclass."""
        return cls(
            model=e.model,
            layer=e.neuron.layer,
            index=e.neuron.index,
            explainer=e.explainer,
            explainer_version=e.explainer_version,
            text=e.text,
            structured=dict(e.structured),
            rank=e.rank,
            score=ScoreOut.of(e.score) if e.score is not None else None,
        )


class ExplainRequest(_Strict):
    """Ad-hoc explanation of neurons recorded elsewhere."""

    records: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_RECORDS)
    """Neuron records in OpenAI neuron-explainer ``NeuronRecord`` JSON."""
    model: Name | None = None
    """Model name of the records (default: each record's ``neurolabel.model``, else ``external``)."""
    explainers: list[Tag | PluginConfig] = Field(min_length=1, max_length=8)
    """Explainers to run: tags or tagged configurations (``{"kind": "pmi", "lam": 0.8}``)."""
    simulators: dict[Tag, Tag | PluginConfig] | None = None
    """Simulator (tag or configuration) per explainer tag, ``"*"`` for all others (``None`` = each
    explainer's declared default)."""
    ontology: Name = "default"
    """Ontology the explainers and the symbolic simulator share: ``default`` (WordNet), a name the
    operator registered (``neurolabel ontologies add``) or a path under the server's data
    directories."""
    store: bool = False
    """Also store the records and the scored explanations (needs a model name)."""


class ExplanationIn(_Strict):
    """An explanation given by the caller, to be scored."""

    text: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    explainer: Tag = "user"
    explainer_version: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "1"
    structured: dict[str, Any] = {}


class ScoreRequest(_Strict):
    """Score one explanation on given neuron records."""

    records: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_RECORDS)
    """Neuron records in OpenAI ``NeuronRecord`` JSON (scored on their score-split windows)."""
    model: Name | None = None
    explanation: ExplanationIn
    simulator: Tag = "embedding"
    """Simulator tag (``embedding``, ``symbolic``, ``llm``…)."""


class ItemError(BaseModel):
    """What failed for one record of an explain or score request (and for which explainer): the
    error object of a partial answer (status 207)."""

    record: int
    """Position of the record in the request's ``records``."""
    stage: Literal["parse", "explain", "score"]
    """``parse``: the record is not a valid NeuronRecord; ``explain``: the explainer could not
    explain it; ``score``: an explanation could not be scored."""
    type: str
    """Machine-readable kind: the error class (``ExplanationError``, ``ScoringError``,
    ``LMError``) or ``invalid_record``."""
    msg: str
    """What went wrong."""
    explainer: str | None = None
    """The explainer tag (``None`` for ``parse`` failures and for ``POST /v1/score``)."""
    model: str | None = None
    layer: int | None = None
    index: int | None = None
    """The record's neuron, when the record could be read."""


class ExplanationsOut(BaseModel):
    """Scored explanations, the ids of stored rows when stored, and what failed.

    Status 200: everything asked for succeeded (``failures`` empty). Status 207 (Multi-Status):
    some records or explainers failed — ``partial`` is true and ``failures`` says which and why;
    ``explanations`` hold what succeeded. When nothing succeeds the answer is a 422 naming every
    failure instead."""

    explanations: list[ExplanationOut]
    stored_ids: list[int] = []
    partial: bool = False
    """Whether something asked for failed (see ``failures``)."""
    failures: list[ItemError] = []
    """One entry per record (and explainer) that failed, in request order."""


class Page(BaseModel):
    """A page of items from a list endpoint."""

    items: list[dict[str, Any]]
    limit: int
    offset: int


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)

