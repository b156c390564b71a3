"""The run spec: one frozen, typed description of a labelling run.

Every edge converts into it once — the CLI (``neurolabel label``), a queued job
(:class:`service.schemas.JobSpec`, through :func:`service.worker.run_spec`), the nightly TOML (its
``[[models]]`` tables are job specs) and ``POST /v1/explain`` — and :func:`pipeline.run.run`
executes it. A run's summary carries the spec it ran (``LabelSummary.spec``, stored as the job's
result), so a job can be re-run exactly: ``RunSpec.model_validate(job["result"]["spec"])``.

Plugins are tagged configurations, as JSON: ``{"kind": "pmi", "lam": 0.8}`` (a bare tag
``"pmi"`` is the same as ``{"kind": "pmi"}``). The registry builds them
(:func:`pipeline.plugins.build`), refusing a parameter the plugin does not take.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from neurolabel.core.errors import ConfigError

DEFAULT_SCORER = "correlation"
DEFAULT_ONTOLOGY = "default"
"""The WordNet ontology with its lexical layer (:func:`ontology.build.default_ontology`)."""
DEFAULT_CONCURRENCY = 8
"""Neurons explained and scored at the same time (LLM requests in flight to an endpoint)."""


class PluginConfig(BaseModel):
    """A plugin named by its registry tag, with its constructor parameters:
    ``{"kind": "pmi", "lam": 0.8}``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    """Registry tag (``EXPLAINERS``, ``SIMULATORS`` or ``SCORERS``)."""

    @model_validator(mode="before")
    @classmethod
    def _from_tag(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"kind": value}
        return value

    @property
    def params(self) -> dict[str, Any]:
        """The constructor parameters (everything but ``kind``)."""
        return dict(self.model_extra or {})

    def key(self) -> tuple[str, str]:
        """Hashable identity (tag, canonical JSON of the parameters), for caches."""
        import json

        return self.kind, json.dumps(self.params, sort_keys=True, default=str)

    def as_json(self) -> dict[str, Any]:
        """``{"kind": …, **params}``."""
        return {"kind": self.kind, **self.params}


def plugin_config(value: str | Mapping[str, Any] | PluginConfig) -> PluginConfig:
    """A :class:`PluginConfig` from a tag, a tagged mapping or a config; :class:`ConfigError`
    naming what is wrong."""
    if isinstance(value, PluginConfig):
        return value
    if isinstance(value, Mapping) and "kind" not in value:
        raise ConfigError(f"plugin configuration {dict(value)!r} has no 'kind' (the plugin's tag)")
    try:
        return PluginConfig.model_validate(value)
    except Exception as exc:  # pydantic.ValidationError: say it in one line
        raise ConfigError(f"plugin configuration {value!r}: {' '.join(str(exc).split())[:300]}") from None


class RecordOptions(BaseModel):
    """How missing neurons are recorded (:func:`activations.record.record_activations`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=100_000, ge=1)
    """Corpus tokens streamed."""
    top_k: int | None = Field(default=None, ge=1)
    """Top windows kept per unit and split (``None``: the recorder's default)."""
    n_random: int | None = Field(default=None, ge=0)
    """Random windows kept per unit (``None``: the recorder's default)."""
    window_tokens: int | None = Field(default=None, ge=2)
    """Tokens per window (``None``: the recorder's default)."""

    def kwargs(self) -> dict[str, int]:
        """Keyword arguments for ``record_activations`` (only those set)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class RunSpec(BaseModel):
    """One labelling run: which neurons, how to record them, which plugins, how to store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "default"
    """Target model as the loader takes it: ``default`` or a model folder."""
    layers: tuple[int, ...] = ()
    """Layers to label (empty only for runs over given records, e.g. ``POST /v1/explain``)."""
    units: tuple[int, ...] | None = None
    """Units of each layer; ``None`` = every unit."""
    corpus: str = "default"
    """Corpus to record missing neurons on (a built-in name or a path)."""
    record: RecordOptions = RecordOptions()
    """Recording options."""
    explainers: tuple[PluginConfig, ...] = ()
    """Explainers, in order (tags are unique)."""
    simulators: dict[str, PluginConfig] = Field(default_factory=dict)
    """Simulator per explainer tag (``"*"``: every explainer not named); the rest use each
    explainer's declared default (:func:`pipeline.simulators.resolve`)."""
    scorer: PluginConfig = PluginConfig(kind=DEFAULT_SCORER)
    """Turns simulations and true activations into a score."""
    threshold: float | None = None
    """Score an explanation needs to be accepted (``None``: the storage default)."""
    embed: Literal["best", "accepted", "all", "none"] = "best"
    """Which stored labels get a vector for semantic search (:data:`storage.writes.EMBED_POLICIES`):
    ``best`` = per neuron and explainer its best-scored candidate (the label its page shows);
    ``accepted`` = the top-ranked and the best-scored candidate plus every accepted one;
    ``all`` = every candidate; ``none`` = none now (``neurolabel db reindex`` embeds
    the ``best`` ones later). Labels without a vector are stored all the same (full-text search)."""
    store_every: int = Field(default=128, ge=1)
    """Explanations are committed every this many neurons (and at the end or a stop). Each write
    embeds its new label texts in one batch, and bigger batches pad less (texts of similar length
    batch together): 480 neurons of layer 10 (``bench/pipeline.py --store-every``, 2 worker
    processes, float32, 2-core machine) took 25.2-26.4 ms of label-embedding CPU per neuron in
    writes of 128 neurons against 36.4-37.6 in writes of 32 (the run's CPU 136-138 vs 152-160 ms
    per neuron, the same labels and vectors' texts). A killed run loses at most the neurons not yet
    written (it resumes from the stored ones)."""
    retry_failed: bool = False
    """Retry neurons an explainer version failed to explain before (stored failures are skipped
    otherwise): the run's retry policy for explainer failures; LLM requests are retried by the
    backend (``NEUROLABEL_LLM_MAX_RETRIES``)."""
    ontology: str = DEFAULT_ONTOLOGY
    """Ontology the explainers and the symbolic simulators of the run share: ``default`` or an
    ontology file (OWL/RDF/Turtle), resolved by the edge (registered name or allowed path)."""
    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=256)
    """Neurons explained and scored at once (one bound for all LLM work of the run)."""
    processes: int = Field(default=1, ge=1, le=64)
    """Processes the load, explain and score stages run in: 1 = threads of this process; more =
    that many worker processes forked from this one once its plugins are built (the ontology is
    loaded once and shared), for CPU-bound explainers such as the symbolic ones, whose Python
    holds the GIL (1, 2 or 8 threads ran at the same speed). The label texts of each write are
    embedded by a worker process too; writing to the database stays in this process. Results,
    label vectors included, are the same as with one process. ``neurolabel label --processes auto``
    (its default) picks a number by :func:`pipeline.run.auto_processes`; jobs keep 1."""
    ray_address: str | None = None
    """Ray cluster to run on (``auto`` or ``host:port``); ``None`` = this process."""

    @field_validator("explainers", mode="before")
    @classmethod
    def _explainers(cls, value: Any) -> Any:
        if isinstance(value, (str, Mapping)):
            value = [value]
        out = [plugin_config(v) for v in value]
        tags = [c.kind for c in out]
        dup = sorted({t for t in tags if tags.count(t) > 1})
        if dup:
            raise ValueError(f"explainer(s) named twice: {', '.join(dup)}")
        return tuple(out)

    @field_validator("simulators", mode="before")
    @classmethod
    def _simulators(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, (str, PluginConfig)) or (isinstance(value, Mapping) and "kind" in value):
            return {"*": plugin_config(value)}
        return {str(k): plugin_config(v) for k, v in dict(value).items()}

    @field_validator("scorer", mode="before")
    @classmethod
    def _scorer(cls, value: Any) -> Any:
        return plugin_config(value)

    @field_validator("layers", "units", mode="before")
    @classmethod
    def _ints(cls, value: Any) -> Any:
        if value is None or isinstance(value, (list, tuple)):
            return value
        raise ValueError("must be a list of integers")

    @property
    def explainer_tags(self) -> list[str]:
        """The explainers' tags, in order."""
        return [c.kind for c in self.explainers]

    def as_json(self) -> dict[str, Any]:
        """JSON form (plugin configs flat: ``{"kind": …, **params}``); ``RunSpec.model_validate``
        reads it back into an equal spec."""
        d = self.model_dump(mode="json", exclude={"explainers", "simulators", "scorer"})
        d["explainers"] = [c.as_json() for c in self.explainers]
        d["simulators"] = {k: c.as_json() for k, c in self.simulators.items()}
        d["scorer"] = self.scorer.as_json()
        return d

    @classmethod
    def parse(cls, value: Mapping[str, Any], *, where: str = "run spec") -> "RunSpec":
        """Validate ``value``; :class:`ConfigError` naming the bad field."""
        try:
            return cls.model_validate(dict(value))
        except ConfigError:
            raise
        except Exception as exc:  # pydantic.ValidationError
            errors = getattr(exc, "errors", None)
            if callable(errors):
                msg = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '-'}: {e['msg']}" for e in errors())
            else:
                msg = str(exc)
            raise ConfigError(f"{where}: {msg}") from None


__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_ONTOLOGY", "DEFAULT_SCORER", "PluginConfig", "RecordOptions", "RunSpec",
           "plugin_config"]
