"""The tables of the label database as SQLAlchemy 2.0 typed models.

Schema changes go through Alembic (``storage/migrations``); these classes describe the head
revision. Unique constraints make every write idempotent (see :mod:`storage.queries`). The
full-text index is not mapped here: SQLite keeps an FTS5 table ``explanations_fts`` in sync by
triggers, PostgreSQL a generated ``tsvector`` column ``text_tsv`` with a GIN index.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")
"""JSON everywhere, JSONB on PostgreSQL."""

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
"""The states a job goes through."""

CALLBACK_STATES = ("pending", "delivered", "failed")
"""The states of a job's callback delivery (``failed``: its retries ran out)."""


def utcnow() -> datetime:
    """Timezone-aware current UTC time."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (needed by migrations)."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Model(Base):
    """A target model whose units are labelled."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    """Short name used everywhere (e.g. ``smollm2-135m``)."""
    architecture: Mapped[str | None] = mapped_column(String(200))
    """Architecture tag (e.g. ``LlamaForCausalLM``)."""
    source: Mapped[str | None] = mapped_column(Text)
    """Where the weights came from (folder, package, hub id)."""
    unit_map: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """How (layer, index) map to modules of the model."""
    n_layers: Mapped[int | None] = mapped_column(Integer)
    n_units: Mapped[int | None] = mapped_column(Integer)
    """Units per layer."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    neurons: Mapped[list[Neuron]] = relationship(back_populates="model", passive_deletes=True)


class Neuron(Base):
    """One unit (layer, index) of a model with its activation statistics."""

    __tablename__ = "neurons"
    __table_args__ = (UniqueConstraint("model_id", "layer", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    layer: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """``core.NeuronStats`` as a dict (count, mean, std, max, min, frac_active)."""
    token_stats: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """``core.TokenStats`` as a dict: ``{"count", "mean", "tracked_types", "tokens": [[token, count, mean], …]}``."""
    prefix: Mapped[list[str] | None] = mapped_column(JSONType)
    """Tokens fed before every recorded window (``core.NeuronRecord.prefix``)."""
    recorded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When activations were last recorded (``None`` for neurons known only by a label)."""

    model: Mapped[Model] = relationship(back_populates="neurons")
    examples: Mapped[list[Example]] = relationship(
        back_populates="neuron", passive_deletes=True, order_by="(Example.kind, Example.position)"
    )
    explanations: Mapped[list[ExplanationRow]] = relationship(
        back_populates="neuron", passive_deletes=True
    )


class Example(Base):
    """One kept window of a neuron: tokens and the activation at each token."""

    __tablename__ = "examples"
    __table_args__ = (UniqueConstraint("neuron_id", "kind", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    neuron_id: Mapped[int] = mapped_column(ForeignKey("neurons.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    """``top`` | ``random`` | ``quantile``."""
    position: Mapped[int] = mapped_column(Integer)
    """Order within its kind (0 = first; top windows are highest first)."""
    split: Mapped[str] = mapped_column(String(16))
    """``explain`` | ``score``."""
    window_id: Mapped[int] = mapped_column(Integer, default=-1)
    quantile: Mapped[int | None] = mapped_column(Integer)
    tokens: Mapped[list[str]] = mapped_column(JSON)
    activations: Mapped[list[float]] = mapped_column(JSON)
    max_activation: Mapped[float] = mapped_column(Float)

    neuron: Mapped[Neuron] = relationship(back_populates="examples")


class ExplanationRow(Base):
    """One explanation (label) of a neuron by one explainer version."""

    __tablename__ = "explanations"
    __table_args__ = (
        UniqueConstraint("neuron_id", "explainer", "explainer_version", "rank"),
        Index("ix_explanations_updated_at", "updated_at"),
        Index("ix_explanations_score", "score"),
        Index("ix_explanations_neuron_id_accepted_score", "neuron_id", "accepted", "score"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    neuron_id: Mapped[int] = mapped_column(ForeignKey("neurons.id", ondelete="CASCADE"))
    explainer: Mapped[str] = mapped_column(String(100))
    explainer_version: Mapped[str] = mapped_column(String(100))
    rank: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str] = mapped_column(Text)
    structured: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    score: Mapped[float | None] = mapped_column(Float)
    """Main score of the explanation (copy of its Score row's score; ``None`` = unscored)."""
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    """Whether ``score`` reached the acceptance threshold when it was stored."""
    score_se: Mapped[float | None] = mapped_column(Float)
    """Jackknife standard error of ``score`` over the scored windows (its Score row's ``se`` part;
    ``None``: not known, e.g. stored before it was measured)."""
    fit_tokens: Mapped[int | None] = mapped_column(Integer)
    """Explain-split tokens the explanation was fitted on (``structured["fit_tokens"]``; ``None``: not said)."""
    selected: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Whether this is the neuron's label: of its accepted explanations, the one
    :func:`scoring.validate.choose_label` picks (at most one per neuron; kept by every write)."""
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    """all-MiniLM-L6-v2 embedding of ``text``: 384 little-endian float32, normalised."""
    ontology: Mapped[str | None] = mapped_column(String(200))
    """Name of the ontology the explanation's class expressions refer to (``None``: none)."""
    ontology_hash: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 of that ontology's content (:func:`ontology.identity.content_hash`)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    neuron: Mapped[Neuron] = relationship(back_populates="explanations")
    scores: Mapped[list[Score]] = relationship(back_populates="explanation", passive_deletes=True)


class Score(Base):
    """A validation result of an explanation by one scorer + simulator on one split."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("explanation_id", "scorer", "simulator", "split"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    explanation_id: Mapped[int] = mapped_column(ForeignKey("explanations.id", ondelete="CASCADE"))
    scorer: Mapped[str] = mapped_column(String(100))
    simulator: Mapped[str] = mapped_column(String(100))
    split: Mapped[str] = mapped_column(String(16), default="score")
    score: Mapped[float | None] = mapped_column(Float)
    parts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)
    method: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    explanation: Mapped[ExplanationRow] = relationship(back_populates="scores")


class ExplanationFailure(Base):
    """An explainer version that could not explain a neuron (``ExplanationError``): the error of
    its last attempt and how many attempts failed. Reruns skip these unless asked to retry; a
    later successful explanation by the same version removes the row."""

    __tablename__ = "explanation_failures"
    __table_args__ = (UniqueConstraint("neuron_id", "explainer", "explainer_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    neuron_id: Mapped[int] = mapped_column(ForeignKey("neurons.id", ondelete="CASCADE"))
    explainer: Mapped[str] = mapped_column(String(100))
    explainer_version: Mapped[str] = mapped_column(String(100))
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """A queued unit of work (labelling run) executed by ``neurolabel worker``."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_callback_pending", "callback_due_at", postgresql_where=text("callback_state = 'pending'"),
              sqlite_where=text("callback_state = 'pending'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(50), default="label")
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    """One of :data:`JOB_STATUSES`."""
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner_key_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """Id of the API key that created the job (``None`` for jobs queued by the CLI or nightly
    runner): only that key, or an admin key, sees the job's spec and may cancel it."""
    callback_id: Mapped[str | None] = mapped_column(String(32))
    """The id of the delivery of the job's callback (header ``X-Neurolabel-Delivery``, the same on
    every retry and after a worker's crash, so that a receiver can drop a second copy); set with the
    job's final state when its spec has a ``callback_url``."""
    callback_state: Mapped[str | None] = mapped_column(String(16))
    """One of :data:`CALLBACK_STATES`; ``None`` for a job without a callback (or one finished
    before revision 0010)."""
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Delivery attempts started (counted when claimed, so an attempt cut short by a crash counts)."""
    callback_error: Mapped[str | None] = mapped_column(Text)
    """Why the last attempt failed (``HTTP 503``, ``ConnectError: …``)."""
    callback_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the next attempt of a pending delivery is due (the backoff)."""
    callback_claimed_by: Mapped[str | None] = mapped_column(Text)
    """The notifier making an attempt right now (``None`` between attempts)."""
    callback_claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When it claimed it: a claim older than the notifier's ``stale_after_s`` is a dead process's."""


class ApiKey(Base):
    """An API key for the write endpoints; only its hash is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    prefix: Mapped[str] = mapped_column(String(32))
    """First characters of the key, shown to tell keys apart."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """An admin key sees and cancels every job (``neurolabel keys create --admin``)."""


DATA_SOURCE_KINDS = ("corpus", "model", "ontology")
"""What an operator can register by name."""


class DataSource(Base):
    """A corpus, model or ontology an operator registered by name (``neurolabel corpora|models add``):
    jobs, explain requests and nightly configs may name it; its path is never shown to clients."""

    __tablename__ = "data_sources"
    __table_args__ = (UniqueConstraint("kind", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """One of :data:`DATA_SOURCE_KINDS`."""
    name: Mapped[str] = mapped_column(String(200))
    """The name clients use."""
    path: Mapped[str] = mapped_column(Text)
    """Absolute path on the server (file or folder)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Study(Base):
    """A contrast study: which neurons of a model separate two sets of texts."""

    __tablename__ = "studies"
    __table_args__ = (Index("ix_studies_model_id_created_at", "model_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32), default="contrast")
    name: Mapped[str] = mapped_column(String(200))
    score: Mapped[str] = mapped_column(String(16))
    """Per-example score ranked on: ``max`` or ``mean`` over an example's tokens."""
    test: Mapped[str] = mapped_column(String(32))
    """``mannwhitney`` or ``permutation``."""
    layers: Mapped[list[int]] = mapped_column(JSONType, default=list)
    n_tested: Mapped[int] = mapped_column(Integer)
    """Neurons tested (the p-values are corrected for this many)."""
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    sets: Mapped[list[StudySet]] = relationship(passive_deletes=True, order_by="StudySet.side")


class StudySet(Base):
    """The fingerprint of one side (``a`` or ``b``) of a study."""

    __tablename__ = "study_sets"
    __table_args__ = (UniqueConstraint("study_id", "side"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    side: Mapped[str] = mapped_column(String(1))
    name: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    n_examples: Mapped[int] = mapped_column(Integer)
    n_tokens: Mapped[int] = mapped_column(Integer)


class StudyNeuron(Base):
    """Statistics of one neuron that passed a study's thresholds."""

    __tablename__ = "study_neurons"
    __table_args__ = (UniqueConstraint("study_id", "neuron_id"), Index("ix_study_neurons_study_id_rank", "study_id", "rank"))

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    neuron_id: Mapped[int] = mapped_column(ForeignKey("neurons.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    auroc: Mapped[float] = mapped_column(Float)
    p_value: Mapped[float] = mapped_column(Float)
    q_value: Mapped[float] = mapped_column(Float)
    smd: Mapped[float | None] = mapped_column(Float)
    smd_other: Mapped[float | None] = mapped_column(Float)
    mean_a: Mapped[float] = mapped_column(Float)
    mean_b: Mapped[float] = mapped_column(Float)
    std_a: Mapped[float] = mapped_column(Float)
    std_b: Mapped[float] = mapped_column(Float)
    sample_a: Mapped[list[float]] = mapped_column(JSON, default=list)
    """Per-example scores of (a uniform sample of) side A, for the distribution plot."""
    sample_b: Mapped[list[float]] = mapped_column(JSON, default=list)
