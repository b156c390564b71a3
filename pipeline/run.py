"""The labelling run: a :class:`pipeline.spec.RunSpec` executed as a short composition of stages,

    record missing → load → explain → score → store

:func:`record_missing` records the neurons the database lacks (as few corpus passes as memory
allows, :func:`record_passes`); the last pass's layers are stored by a process of their own
(:class:`_RecordStorer`) while the run labels each layer once it is stored. Then
every neuron still to do is **loaded** from the database, **explained** by each chosen explainer
and each explanation **scored** by its simulator, up to ``spec.concurrency`` neurons at a time
(one thread pool: the one bound on LLM work of the run, so an endpoint sees many requests in
flight; or ``spec.processes`` worker processes forked from this one, for CPU-bound explainers
whose Python holds the GIL); results come back in neuron order and are **stored** every ``spec.store_every`` neurons
(in a background thread, one write at a time, while the next neurons are explained: the run
goes on while up to :data:`WRITES_AHEAD` batches wait for or are in their write; label embeddings
are computed once per distinct text), at a stop and at the end, so an interrupted run loses at
most three times that many neurons' work (two batches handed to the writer and the one being
gathered) and a
rerun resumes (neurons already explained by an explainer's current version are skipped, and so
are those that version failed on before unless ``spec.retry_failed``; writes are idempotent).

Stages return new objects; nothing they receive is mutated. :func:`explain_and_score` is the
explain → score part over given records (no storage), as ``POST /v1/explain`` uses it.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from neurolabel.core.errors import ConfigError, ExplanationError, ScoringError, StorageError
from neurolabel.core.types import Explanation, NeuronId, NeuronRecord
from neurolabel.ontology.identity import identity
from neurolabel.pipeline.ontology import RunOntology, load_run_ontology
from neurolabel.pipeline.plugins import build
from neurolabel.pipeline.simulators import applies, fallback, resolve
from neurolabel.pipeline.spec import RunSpec

log = logging.getLogger(__name__)

DEMO_RECORD_OPTIONS: dict[str, Any] = {"max_tokens": 32768, "window_tokens": 64, "top_k": 10, "n_random": 20}
"""Recording settings of ``neurolabel demo`` (a few minutes on 2 cores)."""


WRITES_AHEAD = 2
"""Batches a labelling run hands to its writer before it waits for the oldest: the writer works
through them one at a time, in order (so each batch's labels and vectors are what one write at a
time gives), while the run explains the next neurons. A write that takes longer than gathering
the next batch (its label embeddings queue behind the neurons in flight at the worker processes)
then no longer stops the run from handing neurons out. With one batch ahead, one run of 96 neurons
of layer 10 in 2 worker processes (bench/pipeline.py, loaded) waited 4.6 ms/neuron for writes
inside its labelling loop, another none; six alternating runs with 1 and 2 ahead on a more loaded
machine (explaining slower than writing) waited for none either way: the difference shows where
explaining is fast beside the embeddings. The cost: a stopped or killed run may lose one batch more."""


@dataclass
class StageTimes:
    """Seconds spent per stage (summed over neurons; with concurrency, more than wall time)."""

    record_s: float = 0.0
    load_s: float = 0.0
    explain_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    score_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    store_s: float = 0.0
    """Writing explanations (in a background thread, beside the explain/score work)."""
    embed_s: float = 0.0
    """Part of ``store_s``: label embeddings (each distinct text once, in one batch per write)."""
    embed_cpu_s: float = 0.0
    """CPU seconds of those embeddings (in the run's process or, with worker processes, in one of them)."""
    store_wait_s: float = 0.0
    """How long the run waited for a write to finish (the part of storing on the critical path)."""

    def add(self, other: "StageTimes") -> None:
        """Add ``other``'s times (one neuron's) to these."""
        self.record_s += other.record_s
        self.load_s += other.load_s
        self.store_s += other.store_s
        self.embed_s += other.embed_s
        self.embed_cpu_s += other.embed_cpu_s
        self.store_wait_s += other.store_wait_s
        for k, v in other.explain_s.items():
            self.explain_s[k] += v
        for k, v in other.score_s.items():
            self.score_s[k] += v

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"record_s": self.record_s, "load_s": self.load_s, "explain_s": dict(self.explain_s),
                "score_s": dict(self.score_s), "store_s": self.store_s, "embed_s": self.embed_s,
                "embed_cpu_s": self.embed_cpu_s,
                "store_wait_s": self.store_wait_s}


@dataclass
class LabelSummary:
    """What :func:`run` did."""

    model: str
    neurons: int = 0
    """Neurons asked for."""
    recorded: int = 0
    """Neurons recorded in this run (missing before)."""
    processed: int = 0
    """Neurons explained and scored in this run."""
    skipped: int = 0
    """Neurons every chosen explainer had already explained, or failed on before (same version)."""
    explanations: int = 0
    """Explanations stored in this run."""
    accepted: int = 0
    """Of those, how many passed the score threshold."""
    errors: list[str] = field(default_factory=list)
    """Explainer/scoring failures of this run. A neuron an explainer could not explain
    (``ExplanationError``) is remembered in the database and not retried by later runs of the
    same explainer version unless they ask to (``retry_failed``); a scoring failure is retried."""
    failed_before: int = 0
    """(Neuron, explainer) pairs skipped because that explainer version failed on them before."""
    stopped: bool = False
    """True when ``should_stop`` ended the run early."""
    simulators: dict[str, str] = field(default_factory=dict)
    times: StageTimes = field(default_factory=StageTimes)
    elapsed_s: float = 0.0
    loop_s: float = 0.0
    """Of ``elapsed_s``, the labelling loop: from the first neuron handed out to the last result
    taken, the writes it waited for included (what grows with the neurons; the rest is building,
    recording, starting workers and the last write)."""
    final_write_s: float = 0.0
    """Of ``elapsed_s``, the wait for the last write after the loop (once per run)."""
    spec: dict[str, Any] = field(default_factory=dict)
    """The run spec that ran (:meth:`RunSpec.as_json`): ``RunSpec.model_validate`` of it re-runs it."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (stored as job progress details and result)."""
        return {"model": self.model, "neurons": self.neurons, "recorded": self.recorded,
                "processed": self.processed, "skipped": self.skipped, "explanations": self.explanations,
                "accepted": self.accepted, "errors": self.errors[:50], "n_errors": len(self.errors),
                "failed_before": self.failed_before,
                "stopped": self.stopped, "simulators": self.simulators, "times": self.times.as_dict(),
                "elapsed_s": self.elapsed_s, "loop_s": self.loop_s, "final_write_s": self.final_write_s,
                "spec": self.spec}


@dataclass(frozen=True)
class Plugins:
    """The plugins of one run, built from its spec."""

    explainers: Mapping[str, Any]
    """Explainer by tag, in the spec's order."""
    simulators: Mapping[str, tuple[str, Any]]
    """``(simulator tag, simulator)`` per explainer tag."""
    scorer: Any
    ontology: RunOntology
    versions: Mapping[str, str]
    """Version per explainer tag as stored: the explainer's own, with ``+<ontology>.<hash>`` added
    for explainers that read a user ontology (their labels and WordNet ones are kept apart)."""
    ontologies: Mapping[str, tuple[str, str]]
    """``(name, content hash)`` of the ontology each explainer that reads one uses."""

    @property
    def simulator_tags(self) -> dict[str, str]:
        """Simulator tag per explainer tag."""
        return {e: tag for e, (tag, _) in self.simulators.items()}


@dataclass(frozen=True)
class ItemFailure:
    """One explainer that could not explain a record, or one of its explanations that could not
    be scored."""

    neuron: NeuronId
    """The record's neuron."""
    explainer: str
    """The explainer tag."""
    stage: str
    """``explain`` (the explainer raised) or ``score`` (its explanation could not be scored)."""
    kind: str
    """The error's class name (``ExplanationError``, ``ScoringError``, ``LMError``)."""
    message: str
    """What went wrong."""


@dataclass(frozen=True)
class NeuronResult:
    """What the explain and score stages made of one neuron."""

    explanations: tuple[Explanation, ...] = ()
    errors: tuple[str, ...] = ()
    failures: tuple[tuple[NeuronId, str, str], ...] = ()
    """``(neuron, explainer, error)`` of explainers that could not explain it."""
    times: StageTimes = field(default_factory=StageTimes)
    problems: tuple[ItemFailure, ...] = ()
    """Every failure of the explain and score stages, per explainer and stage."""


def build_plugins(spec: RunSpec) -> Plugins:
    """Build (or reuse, per process) the spec's explainers, simulators and scorer over its ontology.
    Unknown tags or parameters raise :class:`ConfigError` before anything loads."""
    if not spec.explainers:
        raise ConfigError("no explainer chosen")
    sims = resolve(spec.explainers, spec.simulators)
    from neurolabel.pipeline.plugins import check

    for config in spec.explainers:
        check("explainer", config)
    check("scorer", spec.scorer)
    ontology = load_run_ontology(spec.ontology)
    explainers = {c.kind: build("explainer", c, ontology=ontology) for c in spec.explainers}
    simulators = {e: (c.kind, build("simulator", c, ontology=ontology)) for e, c in sims.items()}
    ontologies = {tag: identity(ex.annotator.ontology) for tag, ex in explainers.items()
                  if getattr(ex, "annotator", None) is not None}
    versions = {}
    for tag, ex in explainers.items():
        version = str(getattr(ex, "version", ""))
        if ontology.annotator is not None and tag in ontologies:
            name, digest = ontologies[tag]
            version = f"{version}+{name}.{digest[:12]}"
        versions[tag] = version
    return Plugins(explainers=explainers, simulators=simulators, scorer=build("scorer", spec.scorer),
                   ontology=ontology, versions=versions, ontologies=ontologies)


def model_name(model_spec: str) -> str:
    """The stored name of a target model spec (as :func:`activations.models.load_target` names it)."""
    from neurolabel.core.assets import SMOLLM2_NAME

    if model_spec in ("default", SMOLLM2_NAME):
        return SMOLLM2_NAME
    return Path(model_spec).expanduser().resolve().name


# ---- stage 1: record missing -------------------------------------------------------------------
def record_missing(spec: RunSpec, *, database_url: str, progress: bool, summary: LabelSummary,
                   recorder: Callable[[], Any] | None = None, deferred: list | None = None) -> list[NeuronId]:
    """Record the spec's neurons the database lacks; returns every wanted neuron, sorted.
    ``recorder()`` (optional) makes a context manager whose ``record(corpus, layers=, units=,
    progress=, **options)`` records one corpus pass elsewhere (:class:`pipeline.distributed.RecordingPool`
    on a Ray cluster); by default the target is recorded in this process. With ``deferred`` (a
    list), the last pass's recording is appended to it as ``(layers, recording, seconds)`` instead
    of being stored (:class:`_RecordStorer` stores it beside the labelling loop)."""
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import recorded_neurons, save_neuron_records, upsert_model

    name, layers, units = summary.model, list(spec.layers), spec.units
    with session_scope(database_url) as session:
        have = {n for layer in layers for n in recorded_neurons(session=session, model=name, layer=layer)}
    target = None
    if units is None or any(NeuronId(l, u) not in have for l in layers for u in units):
        from neurolabel.activations.models import check_layers, check_units, describe_target, load_target

        # recorded elsewhere (a Ray cluster's actors): this process needs the model's shape, not its weights
        target = describe_target(spec.model) if recorder is not None else load_target(spec.model)
        check_layers(target, layers)
        check_units(target, list(units) if units is not None else None)
    all_units = list(units) if units is not None else list(range(target.n_units))
    wanted = [NeuronId(l, u) for l in layers for u in all_units]
    missing: dict[int, list[int]] = defaultdict(list)
    for n in wanted:
        if n not in have:
            missing[n.layer].append(n.index)
    if missing:
        with session_scope(database_url) as session:
            upsert_model(session=session, name=target.name, architecture=target.architecture, source=target.source,
                         unit_map=target.unit_map, n_layers=target.n_layers, n_units=target.n_units)
        options = spec.record.kwargs()
        per_layer_mb = TOKEN_STATS_MB
        with (recorder() if recorder is not None else _LocalRecorder(target)) as rec:
            passes = record_passes(missing, target=target, options=options,
                                   explain_types=_explain_types(target, spec.corpus, options))
            for p, (group, miss) in enumerate(passes):
                t0 = time.perf_counter()
                # the token-type sums get each layer's budget: a layer's record is the same in any pass
                recording = rec.record(spec.corpus, layers=group, units=miss, progress=progress,
                                       token_stats_mb=per_layer_mb * len(group), **options)
                if deferred is not None and p == len(passes) - 1:
                    deferred.append((list(group), recording, time.perf_counter() - t0))
                    del recording
                    break
                for layer in group:  # stored layer by layer: a crash keeps the layers written
                    with session_scope(database_url) as session:
                        summary.recorded += save_neuron_records(session=session, records=recording.records([layer]))
                summary.times.record_s += time.perf_counter() - t0
                del recording
    return sorted(wanted)


TOKEN_STATS_MB = 256.0
"""Memory of each recorded layer's per-token-type sums (``record_activations``'s ``token_stats_mb`` for one layer)."""


def record_memory_mb() -> float:
    """The memory one corpus pass's recording state may take: ``settings.record_memory_mb``, else a
    third of ``MemAvailable`` (4,096 MB where it cannot be read)."""
    from neurolabel.core.settings import get_settings

    got = get_settings().record_memory_mb
    if got is not None:
        return float(got)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024 / 3
    except OSError:
        pass
    return 4096.0


def _explain_types(target: Any, corpus: str, options: Mapping[str, Any]) -> list[int] | None:
    """The distinct token ids of the corpus's explain-split windows as the recorder reads them
    (:func:`activations.record.explain_token_types`; ``None`` for a model recorded elsewhere, whose
    tokenizer this process does not hold): the rows of each layer's per-type sums. Reads the
    corpus once ahead (~1 s for 100,000 tokens)."""
    tokenizer = getattr(target, "tokenizer", None)
    if tokenizer is None:
        return None
    from neurolabel.activations.corpus import iter_windows, load_corpus
    from neurolabel.activations.record import explain_token_types

    import inspect

    from neurolabel.activations.record import record_activations

    defaults = inspect.signature(record_activations).parameters
    window_tokens = int(options.get("window_tokens", defaults["window_tokens"].default))
    max_tokens = int(options.get("max_tokens", defaults["max_tokens"].default))
    windows = iter_windows(tokenizer, load_corpus(corpus), window_tokens=window_tokens,
                           max_windows=max_tokens // window_tokens)
    return explain_token_types(windows, len(tokenizer))


def record_passes(missing: Mapping[int, Sequence[int]], *, target: Any, options: Mapping[str, Any],
                  budget_mb: float | None = None, explain_types: Sequence[int] | None = None
                  ) -> list[tuple[list[int], list[int]]]:
    """``(layers, units)`` of each corpus pass that records the ``missing`` units per layer: layers
    with the same missing units, in order, as many per pass as their recording state fits in
    ``budget_mb`` (default :func:`record_memory_mb`; at least one layer per pass). One pass per
    layer, as runs recorded before, forwards the corpus through the model up to each layer again:
    30 passes for SmolLM2's 30 layers took ~33 min where one pass over all of them takes ~2.
    ``explain_types`` (the corpus's explain-split token ids, when known) sizes the per-type sums by
    the types the corpus holds rather than the vocabulary (SmolLM2 over the default 100,000 tokens:
    8,467 types, 127 MB per layer instead of 287: one pass over all 30 layers where a third of this
    24 GB machine's memory took two)."""
    from neurolabel.activations.record import layer_state_bytes

    budget = (record_memory_mb() if budget_mb is None else budget_mb) * 2**20
    tokenizer = getattr(target, "tokenizer", None)  # a TargetInfo (the model recorded elsewhere) has its config's
    vocab = len(tokenizer) if tokenizer is not None else int(getattr(target, "vocab_size", 0))
    out: list[tuple[list[int], list[int]]] = []
    for layer, units in sorted(missing.items()):
        units = list(units)
        per_layer = layer_state_bytes(len(units), vocab_size=vocab, token_stats_mb=TOKEN_STATS_MB,
                                      explain_types=explain_types, **options)
        if out and out[-1][1] == units and (len(out[-1][0]) + 1) * per_layer <= budget:
            out[-1][0].append(layer)
        else:
            out.append(([layer], units))
    return out


class _LocalRecorder:
    """Records in this process (the default of :func:`record_missing`)."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def record(self, corpus: str, **kwargs: Any) -> Any:
        from neurolabel.activations.record import record_activations

        return record_activations(self.target, corpus, **kwargs)

    def __enter__(self) -> "_LocalRecorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class _RecordStorer:
    """Stores a recording's layers, in order, in a process forked from this one while the run labels
    the layers already stored: building the records and writing them is single-threaded Python
    (~4.8 ms per SmolLM2 neuron: ~3.7 min for the whole model), which a run that stored everything
    before labelling spent with one core idle. :meth:`wait_for` blocks until a layer is stored (it
    raises when storing failed); :meth:`close` asks the process to stop after the layer it is
    writing (a stopped run keeps the layers written; a rerun records the others again) and waits
    for it. Forked before the run's worker processes, so that they do not map the recording."""

    def __init__(self, recording: Any, layers: Sequence[int], database_url: str) -> None:
        import multiprocessing

        self.layers = list(layers)
        self.stored: set[int] = set()
        self.recorded = 0
        self.seconds = 0.0
        self._done = False
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_store_layers, args=(recording, self.layers, database_url, child),
                                 name="neurolabel-store-records", daemon=True)
        self._proc.start()
        child.close()

    def _take(self) -> None:
        """One message from the process: a layer stored, the end, or its error."""
        try:
            msg = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(timeout=5)
            self._done = True
            raise StorageError(f"storing the recorded layers {sorted(set(self.layers) - self.stored)} failed: "
                               f"the storing process ended (exit code {self._proc.exitcode})") from None
        if msg[0] == "stored":
            _, layer, n, seconds = msg
            self.stored.add(layer)
            self.recorded += n
            self.seconds += seconds
        elif msg[0] == "done":
            self._done = True
        else:
            self._done = True
            raise StorageError(f"storing the recorded layers failed: {msg[1]}")

    def wait_for(self, layer: int) -> None:
        """Block until ``layer`` is stored (raises :class:`StorageError` if storing failed)."""
        while layer in self.layers and layer not in self.stored:
            if self._done:
                raise StorageError(f"layer {layer} was not stored")
            self._take()

    def close(self) -> None:
        """Let the process finish the layer it is writing, then end it."""
        if self._proc.is_alive() and not self._done:
            try:
                self._conn.send("stop")
                while not self._done:
                    self._take()
            except (StorageError, OSError):
                pass
        self._proc.join()
        self._conn.close()


def _store_layers(recording: Any, layers: Sequence[int], database_url: str, conn: Any) -> None:
    """:class:`_RecordStorer`'s process: each layer's records stored in its own transactions."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run stops it between layers
    try:
        import torch

        torch.set_num_threads(1)  # a parallel region forked after the parent's would wait forever (see _worker_start)
        from neurolabel.storage.db import session_scope
        from neurolabel.storage.queries import save_neuron_records

        for layer in layers:
            if conn.poll():  # "stop"
                break
            t0 = time.perf_counter()
            with session_scope(database_url) as session:
                n = save_neuron_records(session=session, records=recording.records([layer]))
            conn.send(("stored", layer, n, time.perf_counter() - t0))
        conn.send(("done",))
    except BaseException as exc:  # noqa: BLE001 - reported to the run, which raises it
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        conn.close()


# ---- stage 2: load -----------------------------------------------------------------------------
def load(neuron: NeuronId, *, model: str, database_url: str) -> NeuronRecord | None:
    """The stored record of ``neuron`` (``None`` when it was never recorded), read in a read-only
    transaction (:func:`storage.db.read_scope`: on SQLite it does not wait for the run's writes)."""
    from neurolabel.storage.db import read_scope
    from neurolabel.storage.queries import load_neuron_record

    with read_scope(database_url) as session:
        return load_neuron_record(session=session, model=model, neuron=neuron)


# ---- stage 3: explain --------------------------------------------------------------------------
def explain(record: NeuronRecord, explainers: Sequence[str], plugins: Plugins, times: StageTimes
            ) -> tuple[list[Explanation], list[tuple[NeuronId, str, str]]]:
    """``(explanations, failures)``: every candidate of each explainer, stamped with the version it
    is stored under and the ontology (name, content hash) it refers to, and ``(neuron, explainer,
    error)`` for each explainer that could not explain the record (:class:`ExplanationError`)."""
    out: list[Explanation] = []
    failures: list[tuple[NeuronId, str, str]] = []
    for tag in explainers:
        t0 = time.perf_counter()
        try:
            got = plugins.explainers[tag].explain(record)
            onto = plugins.ontologies.get(tag)
            out.extend(replace(e, explainer_version=plugins.versions[tag],
                               ontology=onto[0] if onto else None, ontology_hash=onto[1] if onto else None)
                       for e in got)
        except ExplanationError as exc:
            log.warning("%s %s: %s", record.neuron, tag, exc)
            failures.append((record.neuron, tag, str(exc)))
        finally:
            times.explain_s[tag] += time.perf_counter() - t0
    return out, failures


# ---- stage 4: score ----------------------------------------------------------------------------
def score(record: NeuronRecord, explanations: Sequence[Explanation], plugins: Plugins, times: StageTimes,
          problems: list[ItemFailure] | None = None) -> tuple[list[Explanation], list[str]]:
    """``(scored, errors)``: each explanation scored by its explainer's simulator (the fallback
    chain where that one does not apply), with its simulator's score details and the scores of
    the explainer's ``extra_simulators``; explanations that cannot be scored are left out (and
    added to ``problems`` when given)."""
    from neurolabel.scoring.validate import simulate_and_score

    out: list[Explanation] = []
    errors: list[str] = []
    for expl in explanations:
        sim_tag, sim = plugins.simulators[expl.explainer]
        if not applies(sim, expl):
            sim_tag, sim = fallback(expl, ontology=plugins.ontology)
        t0 = time.perf_counter()
        try:
            scored = simulate_and_score(expl, record, simulator=sim, scorer=plugins.scorer)
        except ScoringError as exc:
            errors.append(f"{record.neuron} {expl.explainer} via {sim_tag}: {exc}")
            log.warning("%s %s scored by %s: %s", record.neuron, expl.explainer, sim_tag, exc)
            if problems is not None:
                problems.append(ItemFailure(record.neuron, expl.explainer, "score", type(exc).__name__,
                                            f"via {sim_tag}: {exc}"))
            continue
        finally:
            times.score_s[sim_tag] += time.perf_counter() - t0
        details = getattr(sim, "score_details", None)  # e.g. per-facet scores of a faceted label
        if details is not None:
            try:
                scored = details(scored, record, plugins.scorer)
            except ScoringError as exc:
                log.warning("%s %s details by %s: %s", record.neuron, expl.explainer, sim_tag, exc)
        extra = getattr(plugins.explainers[expl.explainer], "extra_simulators", ())
        out.append(_also_scored_by(scored, record, extra, plugins, times))
    return out, errors


def _also_scored_by(explanation: Explanation, record: NeuronRecord, extra: Sequence[str], plugins: Plugins,
                    times: StageTimes) -> Explanation:
    """``explanation`` with the scores of an explainer's ``extra_simulators`` added to its score
    parts as ``score_by_<tag>`` (e.g. the binary form of a graded class expression); a simulator
    that is not installed, does not apply or fails adds ``None``."""
    from neurolabel.core.registry import SIMULATORS
    from neurolabel.scoring.validate import simulate_and_score

    if not extra or explanation.score is None:
        return explanation
    parts = dict(explanation.score.parts)
    for tag in extra:
        t0 = time.perf_counter()
        value = None
        if tag in SIMULATORS:
            sim = build("simulator", tag, ontology=plugins.ontology)
            if applies(sim, explanation):
                try:
                    value = simulate_and_score(explanation, record, simulator=sim,
                                               scorer=plugins.scorer).score.score  # type: ignore[union-attr]
                except ScoringError as exc:
                    log.warning("%s %s scored by %s: %s", record.neuron, explanation.explainer, tag, exc)
        parts[f"score_by_{tag}"] = value
        times.score_s[tag] += time.perf_counter() - t0
    return replace(explanation, score=replace(explanation.score, parts=parts))


def explain_and_score_one(record: NeuronRecord, explainers: Sequence[str], plugins: Plugins) -> NeuronResult:
    """Stages 3 and 4 on one record."""
    times = StageTimes()
    candidates, failures = explain(record, explainers, plugins, times)
    problems = [ItemFailure(n, tag, "explain", "ExplanationError", err) for n, tag, err in failures]
    scored, errors = score(record, candidates, plugins, times, problems)
    errors = [f"{n} {tag}: {err}" for n, tag, err in failures] + errors
    return NeuronResult(explanations=tuple(scored), errors=tuple(errors), failures=tuple(failures), times=times,
                        problems=tuple(problems))


def explain_and_score_each(records: Sequence[NeuronRecord], spec: RunSpec) -> list[NeuronResult]:
    """Stages 3 and 4 on each record (no storage), ``spec.concurrency`` records at a time: one
    result per record, in order, with every failure in its ``problems`` — an explainer that
    cannot explain (including its language model failing: :class:`LMError`), an explanation that
    cannot be scored — while the rest goes on. Unknown tags raise ConfigError before any work.
    The stages run as a run's do: BLAS limited to :data:`BLAS_THREADS` threads and the garbage
    collector settled (:func:`_settle_gc`) while they work, both restored afterwards."""
    from neurolabel.core.errors import LMError

    plugins = build_plugins(spec)
    tags = spec.explainer_tags

    def each(record: NeuronRecord) -> NeuronResult:
        parts = []
        for tag in tags:
            try:
                parts.append(explain_and_score_one(record, [tag], plugins))
            except LMError as exc:
                log.warning("%s %s: %s", record.neuron, tag, exc)
                parts.append(NeuronResult(errors=(f"{record.neuron} {tag}: {exc}",), problems=(
                    ItemFailure(record.neuron, tag, "explain", type(exc).__name__, str(exc)),)))
        return NeuronResult(explanations=tuple(e for p in parts for e in p.explanations),
                            errors=tuple(e for p in parts for e in p.errors),
                            failures=tuple(f for p in parts for f in p.failures),
                            problems=tuple(f for p in parts for f in p.problems))

    records = list(records)
    # as a run's stages: one BLAS thread (see BLAS_THREADS) and the collector settled (see _settle_gc),
    # both restored when the last user lets go (a run or another request of the same process may hold them)
    blas = _limit_blas()
    collector = _settle_gc()
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(spec.concurrency, len(records) or 1)),
                                thread_name_prefix="explain") as pool:
            return list(pool.map(each, records))
    finally:
        blas.restore_original_limits()
        collector.restore()


# ---- stage 5: store ----------------------------------------------------------------------------
def store(explanations: Sequence[Explanation], failures: Sequence[tuple[NeuronId, str, str]], *,
          database_url: str, model: str, versions: Mapping[str, str], threshold: float | None,
          embedder: Callable[[Sequence[str]], Any] | None = None, embed: str = "best",
          late_embedder: Callable[[Sequence[str]], Any] | None = None) -> int:
    """Store scored explanations and explainer failures in one transaction; returns how many of
    the explanations passed the threshold. Label embeddings of the labels the policy ``embed``
    picks (:data:`storage.writes.EMBED_POLICIES`) come from ``embedder`` (default: the
    process-wide :class:`storage.writes.LabelEmbedder`, which embeds each distinct text once)."""
    from neurolabel.scoring.validate import is_accepted
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import record_failures, save_explanations

    with session_scope(database_url) as session:
        if explanations:
            save_explanations(session=session, explanations=list(explanations), threshold=threshold,
                              embedder=embedder, embed=embed, late_embedder=late_embedder)
        if failures:
            record_failures(session=session, model=model,
                            failures=[(n, tag, versions[tag], err) for n, tag, err in failures])
    return sum(is_accepted(e, threshold) for e in explanations)


# ---- the run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Work:
    """Stages 2–4 on one neuron: load its record, explain it with the explainers still to do,
    score the explanations (``None`` when the neuron was never recorded). Runs in a thread of
    this process or in a forked worker process (:func:`_worker_pool`)."""

    plugins: Plugins
    model: str
    database_url: str
    delay: float = 0.0

    def __call__(self, neuron: NeuronId, todo: list[str]) -> NeuronResult | None:
        times = StageTimes()
        t0 = time.perf_counter()
        record = load(neuron, model=self.model, database_url=self.database_url)
        times.load_s += time.perf_counter() - t0
        if record is None:
            return None
        result = explain_and_score_one(record, todo, self.plugins)
        result.times.add(times)
        if self.delay:
            time.sleep(self.delay)
        return result


_process_work: list[_Work] = []
"""The run's :class:`_Work` in a forked worker process (set by :func:`_worker_start`)."""


def _in_process(neuron: NeuronId, todo: list[str]) -> NeuronResult | None:
    return _process_work[0](neuron, todo)


def _embed_in_process(texts: list[str]) -> tuple[Any, float]:
    from neurolabel.storage.writes import label_embedder

    return label_embedder().compute(texts)


BLAS_THREADS = 1
"""BLAS threads (NumPy's OpenBLAS, SciPy's) per process while a run explains and scores. With
OpenBLAS's default (a thread per core) its idle threads spin after each of the stages' many small
matrix products: on 96 neurons of layer 10 (the recorder's defaults, 100k tokens, one process,
warm memos, idle 2-core machine) load + explain + score took 136.4 ms of process CPU per neuron
with the default against 63.2 with one thread (``OPENBLAS_NUM_THREADS=1``), the same outputs."""


_blas_lock = threading.Lock()
_blas_users = 0
"""Runs of this process that hold BLAS at :data:`BLAS_THREADS` (limits are per process: runs in
threads of one process, e.g. a server's jobs, share them)."""
_blas_first: Any = None
"""The limiter of the first of them: it knows the libraries' own limits."""


class _BlasHold:
    """One run's hold on the BLAS limit: the libraries' own limits come back when the last run
    that holds it lets go (one run ending does not lift the limit under another)."""

    def __init__(self) -> None:
        self._held = True

    def restore_original_limits(self) -> None:
        global _blas_users, _blas_first
        with _blas_lock:
            if not self._held:
                return
            self._held = False
            _blas_users -= 1
            if _blas_users == 0 and _blas_first is not None:
                _blas_first.restore_original_limits()
                _blas_first = None


def _limit_blas() -> _BlasHold:
    """BLAS libraries limited to :data:`BLAS_THREADS` threads until the returned hold's
    ``restore_original_limits()`` (see :class:`_BlasHold`). Every start limits every library loaded
    by then; a library first loaded while an earlier run held the limit keeps it afterwards."""
    import scipy.linalg  # noqa: F401  SciPy's own OpenBLAS, loaded now: a library loaded later keeps its default
    from threadpoolctl import threadpool_limits

    global _blas_users, _blas_first
    with _blas_lock:
        limiter = threadpool_limits(limits=BLAS_THREADS, user_api="blas")
        if _blas_users == 0:
            _blas_first = limiter
        _blas_users += 1
    return _BlasHold()


GC_YOUNG_THRESHOLD = 10_000
"""Net allocations of container objects between two young collections of the cyclic garbage
collector while a run explains and scores (Python's default: 700). See :func:`_settle_gc`."""


_gc_lock = threading.Lock()
_gc_users = 0
"""Runs of this process that hold the collector settled (:func:`_settle_gc`; the collector is per
process: runs in threads of one process share it)."""
_gc_thresholds: tuple[int, int, int] | None = None
"""The collector's thresholds before the first of them."""
_gc_was_frozen = False
"""Whether objects were frozen before the first of them (e.g. a server's settled heap,
:mod:`service.heap`): then they all stay frozen afterwards."""


class _GcHold:
    """One run's hold on the settled collector: its own thresholds come back, and the frozen
    objects return to its generations (unless some were frozen before the first run), when the
    last run that holds it lets go."""

    def __init__(self) -> None:
        self._held = True

    def restore(self) -> None:
        global _gc_users, _gc_thresholds
        with _gc_lock:
            if not self._held:
                return
            self._held = False
            _gc_users -= 1
            if _gc_users == 0 and _gc_thresholds is not None:
                if not _gc_was_frozen:
                    gc.unfreeze()
                gc.set_threshold(*_gc_thresholds)
                _gc_thresholds = None


def _settle_gc() -> _GcHold:
    """The cyclic garbage collector set for the explain and score stages until the returned hold's
    ``restore()`` (see :class:`_GcHold`): every object alive now — the run's plugins (ontology, annotator,
    lexicons), kept all the run — moved out of its generations after one collection
    (``gc.freeze``), so that a full collection scans only what the run makes since, and young
    collections every :data:`GC_YOUNG_THRESHOLD` net allocations. Forked worker processes inherit
    both (and their collections no longer write to the shared pages of the frozen objects). The
    stages allocate many short-lived tuples and arrays: on 75 real neurons (``bench/quality.py``'s,
    one process, warm memos, loaded 2-core machine) the collector took 2.9-3.0 ms of CPU per neuron
    (a full collection of ~234,000 objects, ~140 ms, about every 75 neurons) against 0.4-0.5 with
    these settings; load + explain + score 65.5-68.9 -> 56.4-58.8 ms per neuron, the same outputs."""
    global _gc_users, _gc_thresholds, _gc_was_frozen
    with _gc_lock:
        if _gc_users == 0:
            _gc_thresholds = gc.get_threshold()
            _gc_was_frozen = gc.get_freeze_count() > 0
        gc.collect()
        gc.freeze()  # a later run's plugins too
        gc.set_threshold(GC_YOUNG_THRESHOLD, *_gc_thresholds[1:])  # type: ignore[index]
        _gc_users += 1
    return _GcHold()


def _worker_start(work: _Work) -> None:
    """A worker process's start: its run's work (handed over by the fork, never pickled)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the run and shuts the pool down
    _limit_blas()  # as the parent set it before the fork; said again in case the library re-reads it
    if "torch" in sys.modules:
        # one torch thread per worker: a parallel region in a child forked after the parent ran its own
        # (a run that recorded its neurons first) waits for OpenMP threads the fork did not copy, forever
        # (the embedding simulator's MiniLM hung a whole-model run's workers); a worker is one core anyway
        import torch

        torch.set_num_threads(1)
    _process_work[:] = [work]


class _ProcessPool:
    """``spec.processes`` worker processes forked from this one (all at once, when it is made:
    before the run's store thread starts), each running :class:`_Work` with the plugins built
    here; ``submit(work, neuron, todo)`` as a thread pool takes it."""

    def __init__(self, processes: int, work: _Work) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from neurolabel.lm.embeddings import label_precision, load_embedder

        load_embedder()  # MiniLM too: the workers embed the run's labels (shared, not loaded twice)
        label_precision()  # measured here where it is measured (lm.embeddings.bf16_gain), not once per worker
        # every explainer's extra simulators are built before the fork, shared like the rest
        for tag in work.plugins.explainers:
            for extra in getattr(work.plugins.explainers[tag], "extra_simulators", ()):
                from neurolabel.core.registry import SIMULATORS

                if extra in SIMULATORS:
                    build("simulator", extra, ontology=work.plugins.ontology)
        self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("fork"),
                                         initializer=_worker_start, initargs=(work,))
        try:  # with "fork", the executor starts every worker at the first submit: do it now
            self._pool.submit(int).result()
        except BaseException:
            self._pool.shutdown(wait=True, cancel_futures=True)
            raise

    def submit(self, work: _Work, neuron: NeuronId, todo: list[str]) -> Future:
        return self._pool.submit(_in_process, neuron, todo)

    def embed(self, texts: Sequence[str]) -> tuple[Any, float]:
        """Label embeddings computed by a worker process (queued behind the neurons submitted
        before): the run's process only waits, and every core explains or embeds."""
        return self._pool.submit(_embed_in_process, list(texts)).result()

    def __enter__(self) -> "_ProcessPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _worker_pool(spec: RunSpec, work: _Work) -> Any:
    """Where the run's neurons are loaded, explained and scored: ``spec.concurrency`` threads of
    this process, or ``spec.processes`` forked worker processes (at most ``spec.concurrency``
    neurons in flight either way)."""
    if spec.processes > 1:
        return _ProcessPool(spec.processes, work)
    return ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix="label")


PROCESS_EXPLAINERS = frozenset({"concept_induction", "pmi", "tokens", "token_tiers"})
"""Explainers whose work is Python holding the GIL (no language model, no torch): worker
processes run them in parallel where threads of one process take turns."""
PROCESS_SIMULATORS = frozenset({"symbolic", "symbolic_binary", "lexical", "tokens"})
"""Simulators of the same kind (their explainers' defaults and extra simulators)."""
AUTO_PROCESSES_CAP = 8
"""At most this many worker processes by ``processes="auto"`` (each keeps its own caches)."""
AUTO_MIN_NEURONS_PER_PROCESS = 4
"""``processes="auto"`` forks only for at least this many neurons per worker process: starting
and shutting down a pool of 2 took ~0.1 s (54-73 ms and 41-71 ms on the 2-core machine under
load), one or two neurons' work."""


def cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPU cores this process may use: its affinity where the OS says (else ``os.cpu_count()``),
    at most its cgroup's CPU quota rounded up (``cpu.max`` of cgroup v2, ``cpu/cpu.cfs_quota_us``
    over ``cpu.cfs_period_us`` of v1) in a container that sets one."""
    import math
    import os

    try:
        n = len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = None
    try:
        q, period = (cgroup / "cpu.max").read_text().split()[:2]
        if q != "max":
            quota = int(q) / int(period)
    except (OSError, ValueError):
        try:
            q = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
            if q > 0:
                quota = q / int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError, ZeroDivisionError):
            pass
    except ZeroDivisionError:
        pass
    if quota is not None and quota > 0:
        n = min(n, max(1, math.ceil(quota)))
    return n


def auto_processes(spec: RunSpec, *, neurons: int | None, n_cores: int | None = None) -> tuple[int, str]:
    """``(processes, why)`` for ``processes="auto"``: the machine's cores (at most
    :data:`AUTO_PROCESSES_CAP` and ``spec.concurrency``) when every explainer and every
    simulator of the spec is GIL-bound Python (:data:`PROCESS_EXPLAINERS`,
    :data:`PROCESS_SIMULATORS`; e.g. concept induction and PMI with their symbolic simulators),
    there is more than one core and at least :data:`AUTO_MIN_NEURONS_PER_PROCESS` neurons per
    process (``neurons=None``: every unit of the layers, as many as that); else 1 (threads of
    this process: LLM work waits on a model or an endpoint, and a Ray run spreads itself)."""
    from neurolabel.core.registry import EXPLAINERS
    from neurolabel.pipeline.simulators import resolve

    n_cores = cores() if n_cores is None else n_cores
    if spec.ray_address:
        return 1, "a Ray run"
    tags = spec.explainer_tags
    other = [t for t in tags if t not in PROCESS_EXPLAINERS]
    if other:
        return 1, f"explainer(s) {', '.join(other)} not GIL-bound Python"
    sims = {c.kind for c in resolve(spec.explainers, spec.simulators).values()}
    sims |= {x for t in tags for x in getattr(EXPLAINERS[t], "extra_simulators", ())}
    other = sorted(sims - PROCESS_SIMULATORS)
    if other:
        return 1, f"simulator(s) {', '.join(other)} not GIL-bound Python"
    n = min(n_cores, AUTO_PROCESSES_CAP, spec.concurrency)
    if n < 2:
        return 1, "one core" if n_cores < 2 else f"concurrency {spec.concurrency}"
    if neurons is not None:
        n = min(n, neurons // AUTO_MIN_NEURONS_PER_PROCESS)
        if n < 2:
            return 1, f"{neurons} neuron(s): too few to fork for"
    return n, f"symbolic explainers on {n_cores} cores"


def explain_and_score(records: Iterable[NeuronRecord], spec: RunSpec) -> list[Explanation]:
    """Explain every record with the spec's explainers and score each explanation (no storage),
    ``spec.concurrency`` records at a time.

    Explanations an explainer cannot write or that cannot be scored are left out; if nothing at
    all comes back, the first error is raised as :class:`ExplanationError`."""
    plugins = build_plugins(spec)
    tags = spec.explainer_tags
    records = list(records)
    with ThreadPoolExecutor(max_workers=max(1, min(spec.concurrency, len(records) or 1)),
                            thread_name_prefix="explain") as pool:
        results = list(pool.map(lambda r: explain_and_score_one(r, tags, plugins), records))
    out = [e for r in results for e in r.explanations]
    errors = [e for r in results for e in r.errors]
    if not out and errors:
        raise ExplanationError(errors[0])
    return out


@dataclass
class Prepared:
    """A run up to its labelling loop (:func:`prepare`): shared by the local and the Ray executor."""

    plugins: Plugins
    summary: LabelSummary
    database_url: str
    wanted: list[NeuronId]
    """Every neuron of the spec, sorted (all recorded now)."""
    versions: dict[str, str]
    """Current version of each explainer."""
    done: dict[str, set[NeuronId]]
    failed: dict[str, set[NeuronId]]
    t_start: float
    deferred: list = field(default_factory=list)
    """The last recording pass, not stored yet (``prepare(..., defer_store=True)``): ``[(layers,
    recording, seconds)]`` or empty."""

    def todo(self, neuron: NeuronId) -> list[str]:
        """The explainers still to run on ``neuron`` (not done by their current version, not
        failed before unless the spec retries failures)."""
        return [tag for tag in self.versions if neuron not in self.done[tag] and neuron not in self.failed[tag]]


def prepare(spec: RunSpec, *, database_url: str | None, progress: bool,
            recorder: Callable[[], Any] | None = None, defer_store: bool = False) -> Prepared:
    """Check the spec and build its plugins (unknown tags or parameters fail before recording),
    migrate the database, record what is missing (``recorder``: see :func:`record_missing`; with
    ``defer_store`` the last pass is left in ``Prepared.deferred`` for the caller to store) and
    read what earlier runs did."""
    from neurolabel.storage.db import normalize_url, session_scope, upgrade
    from neurolabel.storage.queries import explained_neurons, failed_neurons

    t_start = time.perf_counter()
    if not spec.layers:
        raise ConfigError("no layer chosen")
    plugins = build_plugins(spec)
    tags = spec.explainer_tags
    url = normalize_url(database_url)
    upgrade(url)
    summary = LabelSummary(model=model_name(spec.model), simulators=plugins.simulator_tags, spec=spec.as_json())
    deferred: list = []
    wanted = record_missing(spec, database_url=url, progress=progress, summary=summary, recorder=recorder,
                            deferred=deferred if defer_store else None)
    summary.neurons = len(wanted)
    versions = dict(plugins.versions)
    with session_scope(url) as session:
        done = {tag: set(explained_neurons(session=session, model=summary.model, explainer=tag,
                                           version=versions[tag])) for tag in tags}
        failed = {tag: set() if spec.retry_failed else
                  set(failed_neurons(session=session, model=summary.model, explainer=tag, version=versions[tag]))
                  for tag in tags}
    wanted_set = set(wanted)
    summary.failed_before = sum(len((failed[tag] - done[tag]) & wanted_set) for tag in tags)
    return Prepared(plugins=plugins, summary=summary, database_url=url, wanted=wanted, versions=versions,
                    done=done, failed=failed, t_start=t_start, deferred=deferred)


def run(
    spec: RunSpec,
    *,
    database_url: str | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int, Mapping[str, Any]], None] | None = None,
) -> LabelSummary:
    """Run ``spec`` in this process (see the module docstring). ``should_stop()`` is checked
    before each neuron is started; ``on_progress(done, total, details)`` is called after each.
    ``NEUROLABEL_NEURON_DELAY_S`` pauses after each explained neuron (throttling)."""
    from tqdm.auto import tqdm

    from neurolabel.core.settings import get_settings

    if spec.ray_address:
        from neurolabel.pipeline.distributed import run_on_ray

        return run_on_ray(spec, database_url=database_url, progress=progress, should_stop=should_stop,
                          on_progress=on_progress)
    prepared = prepare(spec, database_url=database_url, progress=progress, defer_store=True)
    plugins, summary, url, wanted = prepared.plugins, prepared.summary, prepared.database_url, prepared.wanted
    records_storer: _RecordStorer | None = None
    if prepared.deferred:  # the last pass's layers stored beside the labelling loop, by a process of their own
        layers, recording, seconds = prepared.deferred.pop()
        summary.times.record_s += seconds
        records_storer = _RecordStorer(recording, layers, url)
        del recording  # the storing process holds it now; the worker processes fork without it
        gc.collect()
    versions, t_start = prepared.versions, prepared.t_start
    delay = get_settings().neuron_delay_s
    pending: list[Explanation] = []
    pending_failures: list[tuple[NeuronId, str, str]] = []
    n_pending = 0

    from neurolabel.storage.writes import label_embedder

    shared = label_embedder()
    embedder: Callable[[Sequence[str]], Any] = shared
    storer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
    writing: list[Future] = []  # at most WRITES_AHEAD writes handed over, done one at a time in order

    def write(explanations: list[Explanation], failures: list[tuple[NeuronId, str, str]]) -> tuple:
        t0, e0, c0 = time.perf_counter(), shared.seconds, shared.cpu_seconds
        accepted = store(explanations, failures, database_url=url, model=summary.model, versions=versions,
                         threshold=spec.threshold, embedder=embedder, embed=spec.embed,
                         late_embedder=shared)  # rare vectors wanted within the write: not by a worker
        return (accepted, len(explanations), time.perf_counter() - t0, shared.seconds - e0,
                shared.cpu_seconds - c0)

    def wait_written(keep: int = 0) -> None:  # the summary is only touched by the run's own thread
        t0 = time.perf_counter()
        while len(writing) > keep:  # the oldest first: writes finish in the order they were handed over
            accepted, n, store_s, embed_s, embed_cpu_s = writing.pop(0).result()
            summary.accepted += accepted
            summary.explanations += n
            summary.times.store_s += store_s
            summary.times.embed_s += embed_s
            summary.times.embed_cpu_s += embed_cpu_s
        summary.times.store_wait_s += time.perf_counter() - t0

    def flush() -> None:
        nonlocal n_pending
        if pending or pending_failures:
            wait_written(keep=WRITES_AHEAD - 1)  # the same batches, written in the same order, whatever the timing
            writing.append(storer.submit(write, list(pending), list(pending_failures)))
        pending.clear()
        pending_failures.clear()
        n_pending = 0

    # the explain / score stages' NumPy work is many small products: OpenBLAS's threads (one per core
    # by default, in every worker process) spin for them and took more CPU than the work (see
    # BLAS_THREADS); one thread each while the run explains, restored when it ends
    blas = _limit_blas()
    collector = _settle_gc()  # the plugins out of the collector's way (see GC_YOUNG_THRESHOLD), before the fork
    work = _Work(plugins=plugins, model=summary.model, database_url=url, delay=delay)
    try:
        pool = _worker_pool(spec, work)  # worker processes fork here, before the store thread and the bar start
    except BaseException:
        blas.restore_original_limits()
        collector.restore()
        if records_storer is not None:
            records_storer.close()
        raise
    if isinstance(pool, _ProcessPool):  # the labels' texts are embedded by the worker processes too
        embedder = partial(shared.embed_with, compute=pool.embed)

    bar = tqdm(total=len(wanted), unit="neuron", desc=f"label {summary.model}", disable=not progress)
    in_flight: list[tuple[NeuronId, Future | None]] = []

    def finish_one(done_count: int) -> None:
        nonlocal n_pending
        neuron, fut = in_flight.pop(0)
        if fut is None:
            summary.skipped += 1
        else:
            result = fut.result()
            if result is None:
                summary.errors.append(f"{neuron}: not recorded")
            else:
                summary.times.add(result.times)
                summary.errors.extend(result.errors)
                pending.extend(result.explanations)
                pending_failures.extend(result.failures)
                summary.processed += 1
                n_pending += 1
                if n_pending >= spec.store_every:
                    flush()
        bar.update(1)
        if on_progress is not None:
            on_progress(done_count, len(wanted), {"neuron": str(neuron), "explanations": summary.explanations,
                                                  "errors": len(summary.errors)})

    finished = 0
    t_loop = time.perf_counter()
    t_end = t_loop
    with pool:
        try:
            for neuron in wanted:
                # results are taken in neuron order; at most `concurrency` neurons are in flight
                while len(in_flight) >= spec.concurrency or (
                        in_flight and (in_flight[0][1] is None or in_flight[0][1].done())):
                    finished += 1
                    finish_one(finished)
                if should_stop is not None and should_stop():
                    summary.stopped = True
                    break
                todo = prepared.todo(neuron)
                if todo and records_storer is not None:
                    records_storer.wait_for(neuron.layer)  # its record stored (the first layer: a few seconds)
                in_flight.append((neuron, pool.submit(work, neuron, todo) if todo else None))
            while in_flight:
                finished += 1
                finish_one(finished)
        finally:
            t_end = time.perf_counter()
            for _, fut in in_flight:
                if fut is not None:
                    fut.cancel()
            flush()
            try:
                wait_written()
            finally:
                storer.shutdown()
                if records_storer is not None:
                    records_storer.close()
                    summary.recorded += records_storer.recorded
                    summary.times.record_s += records_storer.seconds
                summary.loop_s = t_end - t_loop
                summary.final_write_s = time.perf_counter() - t_end
            bar.close()
            blas.restore_original_limits()
            collector.restore()
    summary.elapsed_s = time.perf_counter() - t_start
    log.info("labelled %s: %s", summary.model, summary.as_dict())
    return summary


__all__ = ["AUTO_PROCESSES_CAP", "DEMO_RECORD_OPTIONS", "LabelSummary", "auto_processes", "cores", "NeuronResult", "Plugins", "StageTimes", "build_plugins",
           "explain", "explain_and_score", "explain_and_score_one", "load", "model_name", "prepare", "Prepared",
           "record_missing", "run",
           "score", "store"]
