"""The end-to-end labelling pipeline: record (when missing) → explain → score → store.

:func:`label_neurons` streams neuron by neuron: one :class:`core.NeuronRecord` is loaded from
the database, explained by every chosen explainer, each explanation is scored by its
simulator (:func:`scoring.validate.simulate_and_score`), and the neuron's explanations are
stored and committed before the next neuron is read, so memory stays bounded and a rerun
resumes where the last one stopped (neurons already explained by the same explainer version
are skipped; storage writes are idempotent). :func:`explain_and_score` is the same without
storage.

Plugins are chosen by registry tag. Each explainer declares its default simulator
(``default_simulator``); any registered simulator can be named instead. Explainers,
simulators and the scorer are built once per process by their ``from_defaults`` factories.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from neurolabel.core.errors import ConfigError, ExplanationError, ScoringError
from neurolabel.core.registry import EXPLAINERS, SCORERS, SIMULATORS
from neurolabel.core.settings import get_settings
from neurolabel.core.types import Explanation, NeuronId, NeuronRecord

log = logging.getLogger(__name__)

FALLBACK_SIMULATOR = "embedding"
"""Simulator for explainers that declare no ``default_simulator`` (older third-party ones), and
the last resort for explanations the chosen simulator cannot simulate."""


def default_simulator(explainer: str) -> str:
    """The simulator tag explainer ``explainer`` declares (:class:`core.protocols.Explainer`)."""
    return str(getattr(EXPLAINERS[explainer], "default_simulator", "") or FALLBACK_SIMULATOR)

FALLBACK_CHAIN: tuple[str, ...] = ("lexical", FALLBACK_SIMULATOR)
"""Tried in order when the chosen simulator does not apply to an explanation (e.g. the
symbolic simulator given a PMI word label without a class): the cheap lexical simulator for
short word labels, else the embedding simulator."""

DEFAULT_SCORER = "correlation"

DEMO_RECORD_OPTIONS: dict[str, Any] = {"max_tokens": 8192, "window_tokens": 32, "top_k": 6, "n_random": 12}
"""Recording settings of ``neurolabel demo`` (a few minutes on 2 cores)."""

_plugins_lock = threading.Lock()
_plugins: dict[tuple[str, str], Any] = {}


def _build(registry: Any, tag: str) -> Any:
    factory = registry[tag]
    make = getattr(factory, "from_defaults", None)
    return make() if make is not None else factory()


def plugin(kind: str, tag: str) -> Any:
    """The process-wide instance of explainer/simulator/scorer ``tag`` (built once)."""
    registry = {"explainer": EXPLAINERS, "simulator": SIMULATORS, "scorer": SCORERS}[kind]
    key = (kind, tag)
    with _plugins_lock:
        if key not in _plugins:
            log.info("loading %s %r", kind, tag)
            _plugins[key] = _build(registry, tag)
        return _plugins[key]


def resolve_simulators(explainers: Sequence[str], simulators: Mapping[str, str] | str | None = None) -> dict[str, str]:
    """Simulator tag per explainer tag: ``simulators`` may be one tag for all, a mapping
    (``"*"`` = all others), or ``None`` for the defaults. Unknown tags raise ConfigError."""
    if isinstance(simulators, str):
        simulators = {"*": simulators}
    chosen = dict(simulators or {})
    unknown = set(chosen) - set(explainers) - {"*"}
    if unknown:
        raise ConfigError(f"simulators given for explainers not chosen: {', '.join(sorted(unknown))}")
    out = {}
    for e in explainers:
        if e not in EXPLAINERS:
            EXPLAINERS[e]  # raises ConfigError listing the known tags
        tag = chosen.get(e) or chosen.get("*") or default_simulator(e)
        if tag not in SIMULATORS:
            if e in chosen or "*" in chosen:
                SIMULATORS[tag]  # raises ConfigError
            log.warning("default simulator %r of %s is not installed; using %r", tag, e, FALLBACK_SIMULATOR)
            tag = FALLBACK_SIMULATOR
        out[e] = tag
    return out


def simulator_applies(simulator: Any, explanation: Explanation) -> bool:
    """Whether ``simulator`` can simulate ``explanation``: its ``applies()`` when it has one;
    for expression-based simulators (an ``expression()`` method, e.g. the symbolic one),
    whether the explanation carries a class expression it can read."""
    check = getattr(simulator, "applies", None)
    if check is not None:
        return bool(check(explanation))
    expression = getattr(simulator, "expression", None)
    if expression is not None:
        try:
            expression(explanation)
        except ScoringError:
            return False
    return True


def fallback_simulator(explanation: Explanation) -> tuple[str, Any]:
    """``(tag, simulator)``: the first of :data:`FALLBACK_CHAIN` that applies to ``explanation``."""
    for tag in FALLBACK_CHAIN:
        if tag in SIMULATORS:
            sim = plugin("simulator", tag)
            if simulator_applies(sim, explanation):
                return tag, sim
    return FALLBACK_SIMULATOR, plugin("simulator", FALLBACK_SIMULATOR)


@dataclass(frozen=True)
class ItemFailure:
    """One explainer that could not explain, or one explanation that could not be scored, on one
    neuron record (what :func:`explain_and_score_each` reports instead of raising)."""

    neuron: NeuronId
    """The record's neuron."""
    explainer: str
    """The explainer tag."""
    stage: str
    """``explain`` (the explainer raised) or ``score`` (its explanation could not be scored)."""
    kind: str
    """The error's class name (``ExplanationError``, ``ScoringError``, ``LMError``)."""
    message: str
    """What went wrong, as the error said it."""


@dataclass
class StageTimes:
    """Seconds spent per stage (for progress details and benchmarks)."""

    record_s: float = 0.0
    load_s: float = 0.0
    explain_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    score_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    store_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"record_s": self.record_s, "load_s": self.load_s, "explain_s": dict(self.explain_s),
                "score_s": dict(self.score_s), "store_s": self.store_s}


def _explain_and_score_one(record: NeuronRecord, explainers: Sequence[str], sims: Mapping[str, str],
                           scorer: Any, times: StageTimes, errors: list[str],
                           failures: list[tuple[NeuronId, str, str]] | None = None,
                           report: Callable[["ItemFailure"], None] | None = None) -> list[Explanation]:
    """Explain ``record`` with each explainer and score each explanation. Failures are logged,
    appended to ``errors``, explanation failures also to ``failures``; ``report`` (when given)
    receives every failure as an :class:`ItemFailure`."""
    from neurolabel.scoring.validate import simulate_and_score

    out: list[Explanation] = []
    for tag in explainers:
        explainer = plugin("explainer", tag)  # built once per process, not counted as explain time
        t0 = time.perf_counter()
        try:
            candidates = explainer.explain(record)
        except ExplanationError as exc:
            errors.append(f"{record.neuron} {tag}: {exc}")
            log.warning("%s %s: %s", record.neuron, tag, exc)
            if failures is not None:
                failures.append((record.neuron, tag, str(exc)))
            if report is not None:
                report(ItemFailure(record.neuron, tag, "explain", type(exc).__name__, str(exc)))
            continue
        finally:
            times.explain_s[tag] += time.perf_counter() - t0
        for expl in candidates:
            sim_tag = sims[tag]
            sim = plugin("simulator", sim_tag)
            if not simulator_applies(sim, expl):
                sim_tag, sim = fallback_simulator(expl)
            t0 = time.perf_counter()
            try:
                scored = simulate_and_score(expl, record, simulator=sim, scorer=scorer)
            except ScoringError as exc:
                errors.append(f"{record.neuron} {tag} via {sim_tag}: {exc}")
                log.warning("%s %s scored by %s: %s", record.neuron, tag, sim_tag, exc)
                if report is not None:
                    report(ItemFailure(record.neuron, tag, "score", type(exc).__name__, f"via {sim_tag}: {exc}"))
                continue
            finally:
                times.score_s[sim_tag] += time.perf_counter() - t0
            details = getattr(sim, "score_details", None)  # e.g. per-facet scores of a faceted label
            if details is not None:
                try:
                    scored = details(scored, record, scorer)
                except ScoringError as exc:
                    log.warning("%s %s details by %s: %s", record.neuron, tag, sim_tag, exc)
            out.append(_also_scored_by(scored, record, getattr(explainer, "extra_simulators", ()), scorer, times))
    return out


def _also_scored_by(explanation: Explanation, record: NeuronRecord, extra: Sequence[str], scorer: Any,
                    times: StageTimes) -> Explanation:
    """``explanation`` with the scores of an explainer's ``extra_simulators`` added to its score
    parts as ``score_by_<tag>`` (e.g. the binary form of a graded class expression), so both
    are stored; a simulator that does not apply or fails adds ``None``."""
    from neurolabel.scoring.validate import simulate_and_score

    if not extra or explanation.score is None:
        return explanation
    parts = dict(explanation.score.parts)
    for tag in extra:
        t0 = time.perf_counter()
        value = None
        if tag in SIMULATORS:
            sim = plugin("simulator", tag)
            if simulator_applies(sim, explanation):
                try:
                    value = simulate_and_score(explanation, record, simulator=sim, scorer=scorer).score.score  # type: ignore[union-attr]
                except ScoringError as exc:
                    log.warning("%s %s scored by %s: %s", record.neuron, explanation.explainer, tag, exc)
        parts[f"score_by_{tag}"] = value
        times.score_s[tag] += time.perf_counter() - t0
    return replace(explanation, score=replace(explanation.score, parts=parts))


def explain_and_score_each(records: Sequence[NeuronRecord], *, explainers: Sequence[str],
                           simulators: Mapping[str, str] | str | None = None,
                           scorer: str = DEFAULT_SCORER) -> tuple[list[list[Explanation]], list[list[ItemFailure]]]:
    """Explain every record with every explainer and score each explanation (no storage),
    per record: ``(explanations[i], failures[i])`` of ``records[i]``. An explainer that cannot
    explain (ExplanationError, or its language model failing: LMError), or an explanation that
    cannot be scored (ScoringError), becomes an :class:`ItemFailure`; the rest go on. Unknown
    plugin tags raise ConfigError before any work."""
    from neurolabel.core.errors import LMError

    sims = resolve_simulators(explainers, simulators)
    sc = plugin("scorer", scorer)
    explained: list[list[Explanation]] = []
    failed: list[list[ItemFailure]] = []
    for rec in records:
        got: list[Explanation] = []
        lost: list[ItemFailure] = []
        for tag in explainers:
            try:
                got.extend(_explain_and_score_one(rec, [tag], sims, sc, StageTimes(), [], report=lost.append))
            except LMError as exc:
                log.warning("%s %s: %s", rec.neuron, tag, exc)
                lost.append(ItemFailure(rec.neuron, tag, "explain", type(exc).__name__, str(exc)))
        explained.append(got)
        failed.append(lost)
    return explained, failed


def explain_and_score(records: Iterable[NeuronRecord], *, explainers: Sequence[str],
                      simulators: Mapping[str, str] | str | None = None,
                      scorer: str = DEFAULT_SCORER) -> list[Explanation]:
    """Explain every record with every explainer and score each explanation (no storage).

    Explanations an explainer cannot write (ExplanationError) or that cannot be scored
    (ScoringError) are left out; if nothing at all comes back, the first error is raised."""
    sims = resolve_simulators(explainers, simulators)
    sc = plugin("scorer", scorer)
    errors: list[str] = []
    out: list[Explanation] = []
    for rec in records:
        out.extend(_explain_and_score_one(rec, explainers, sims, sc, StageTimes(), errors))
    if not out and errors:
        raise ExplanationError(errors[0])
    return out


@dataclass
class LabelSummary:
    """What :func:`label_neurons` did."""

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

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (stored as job progress details)."""
        return {"model": self.model, "neurons": self.neurons, "recorded": self.recorded,
                "processed": self.processed, "skipped": self.skipped, "explanations": self.explanations,
                "accepted": self.accepted, "errors": self.errors[:50], "n_errors": len(self.errors),
                "failed_before": self.failed_before,
                "stopped": self.stopped, "simulators": self.simulators, "times": self.times.as_dict(),
                "elapsed_s": self.elapsed_s}


def model_name(model_spec: str) -> str:
    """The stored name of a target model spec (as :func:`activations.models.load_target` names it)."""
    from neurolabel.core.assets import SMOLLM2_NAME

    if model_spec in ("default", SMOLLM2_NAME):
        return SMOLLM2_NAME
    return Path(model_spec).expanduser().resolve().name


def _record_missing(url: str, model_spec: str, corpus: str,
                    layers: Sequence[int], units: Sequence[int] | None, options: Mapping[str, Any],
                    progress: bool, summary: LabelSummary) -> list[NeuronId]:
    """Record the neurons not yet in the database; returns every wanted neuron, sorted."""
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import recorded_neurons, save_neuron_records, upsert_model

    name = summary.model
    with session_scope(url) as session:
        have = {n for layer in layers for n in recorded_neurons(session=session, model=name, layer=layer)}
    target = None
    if units is None or any(NeuronId(l, u) not in have for l in layers for u in units):
        from neurolabel.activations.models import check_layers, check_units, load_target

        target = load_target(model_spec)
        check_layers(target, layers)
        check_units(target, units)
    all_units = list(units) if units is not None else list(range(target.n_units))
    wanted_ids = [NeuronId(l, u) for l in layers for u in all_units]
    missing_by_layer: dict[int, list[int]] = defaultdict(list)
    for n in wanted_ids:
        if n not in have:
            missing_by_layer[n.layer].append(n.index)
    if missing_by_layer:
        from neurolabel.activations.record import record_activations

        with session_scope(url) as session:
            upsert_model(session=session, name=target.name, architecture=target.architecture, source=target.source,
                         unit_map=target.unit_map, n_layers=target.n_layers, n_units=target.n_units)
        for layer, miss in sorted(missing_by_layer.items()):  # one corpus pass per layer: bounded memory
            t0 = time.perf_counter()
            recording = record_activations(target, corpus, layers=[layer], units=miss, progress=progress,
                                           **dict(options))
            with session_scope(url) as session:
                summary.recorded += save_neuron_records(session=session, records=recording.records([layer]))
            summary.times.record_s += time.perf_counter() - t0
            del recording
    return sorted(wanted_ids)


def label_neurons(
    *,
    model_spec: str = "default",
    layers: Sequence[int],
    units: Sequence[int] | None = None,
    explainers: Sequence[str],
    simulators: Mapping[str, str] | str | None = None,
    scorer: str = DEFAULT_SCORER,
    corpus: str = "default",
    database_url: str | None = None,
    record_options: Mapping[str, Any] | None = None,
    threshold: float | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int, Mapping[str, Any]], None] | None = None,
    store_every: int = 32,
    retry_failed: bool = False,
) -> LabelSummary:
    """Label ``units`` (all when ``None``) of ``layers`` of a model with ``explainers``.

    Records the neurons missing from the database (``record_options`` go to
    :func:`activations.record.record_activations`, e.g. ``max_tokens``, ``top_k``), then per
    neuron: explain → score → store. Explanations are stored and committed every
    ``store_every`` neurons (label embeddings are computed in one batch per write), at a stop
    and at the end, so an interrupted run loses at most that many neurons' work. Neurons
    already explained by an explainer's current version are skipped for that explainer, and so
    are neurons that version failed to explain before (``ExplanationError``, stored with its
    error) unless ``retry_failed``. ``NEUROLABEL_NEURON_DELAY_S`` pauses after each explained
    neuron (throttling).
    ``should_stop()`` is checked between neurons; ``on_progress(done, total, details)`` is
    called after each one."""
    from tqdm.auto import tqdm

    from neurolabel.storage.db import normalize_url, session_scope, upgrade
    from neurolabel.storage.queries import (
        explained_neurons,
        failed_neurons,
        load_neuron_record,
        record_failures,
        save_explanations,
    )

    t_start = time.perf_counter()
    if not explainers:
        raise ConfigError("no explainer chosen")
    explainers = list(dict.fromkeys(explainers))
    sims = resolve_simulators(explainers, simulators)
    url = normalize_url(database_url)
    upgrade(url)
    summary = LabelSummary(model=model_name(model_spec), simulators=sims)
    wanted = _record_missing(url, model_spec, corpus, list(layers), units, record_options or {},
                             progress, summary)
    summary.neurons = len(wanted)
    versions = {tag: str(getattr(EXPLAINERS[tag], "version", "")) for tag in explainers}
    with session_scope(url) as session:
        done = {tag: explained_neurons(session=session, model=summary.model, explainer=tag, version=versions[tag])
                for tag in explainers}
        failed = {tag: set() if retry_failed else
                  set(failed_neurons(session=session, model=summary.model, explainer=tag, version=versions[tag]))
                  for tag in explainers}
    wanted_set = set(wanted)
    summary.failed_before = sum(len((failed[tag] - done[tag]) & wanted_set) for tag in explainers)
    sc = plugin("scorer", scorer)
    delay = get_settings().neuron_delay_s
    pending: list[Explanation] = []
    new_failures: list[tuple[NeuronId, str, str]] = []

    def flush() -> None:
        if not pending and not new_failures:
            return
        from neurolabel.scoring.validate import is_accepted

        t0 = time.perf_counter()
        with session_scope(url) as session:
            if pending:
                save_explanations(session=session, explanations=pending, threshold=threshold)
            record_failures(session=session, model=summary.model,
                            failures=[(n, tag, versions[tag], err) for n, tag, err in new_failures])
        new_failures.clear()
        summary.times.store_s += time.perf_counter() - t0
        summary.explanations += len(pending)
        summary.accepted += sum(is_accepted(e, threshold) for e in pending)
        pending.clear()

    n_pending = 0
    bar = tqdm(total=len(wanted), unit="neuron", desc=f"label {summary.model}", disable=not progress)
    for i, neuron in enumerate(wanted):
        if should_stop is not None and should_stop():
            summary.stopped = True
            break
        todo = [tag for tag in explainers if neuron not in done[tag] and neuron not in failed[tag]]
        if not todo:
            summary.skipped += 1
        else:
            t0 = time.perf_counter()
            with session_scope(url) as session:
                record = load_neuron_record(session=session, model=summary.model, neuron=neuron)
            summary.times.load_s += time.perf_counter() - t0
            if record is None:
                summary.errors.append(f"{neuron}: not recorded")
            else:
                pending.extend(_explain_and_score_one(record, todo, sims, sc, summary.times, summary.errors,
                                                      new_failures))
                if delay:
                    time.sleep(delay)
                n_pending += 1
                summary.processed += 1
                if n_pending >= max(1, store_every):
                    flush()
                    n_pending = 0
        bar.update(1)
        if on_progress is not None:
            on_progress(i + 1, len(wanted), {"neuron": str(neuron), "explanations": summary.explanations,
                                             "errors": len(summary.errors)})
    flush()
    bar.close()
    summary.elapsed_s = time.perf_counter() - t_start
    log.info("labelled %s: %s", summary.model, summary.as_dict())
    return summary


__all__ = [
    "default_simulator",
    "FALLBACK_SIMULATOR",
    "LabelSummary",
    "StageTimes",
    "explain_and_score",
    "explain_and_score_each",
    "ItemFailure",
    "fallback_simulator",
    "simulator_applies",
    "label_neurons",
    "model_name",
    "plugin",
    "resolve_simulators",
]
