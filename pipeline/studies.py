"""Contrast studies as stored runs: stream both sets (:mod:`pipeline.contrast`), store the
study, optionally label its top neurons and score those labels causally
(:mod:`pipeline.causal`). :func:`run_contrast_job` is the worker's runner of ``contrast`` jobs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import Any, Callable, Iterable, Mapping, Sequence

from neurolabel.core.errors import ConfigError
from neurolabel.core.studies import ContrastStudy
from neurolabel.core.types import Explanation, NeuronId
from neurolabel.pipeline.contrast import ContrastSpec, contrast, label_top

log = logging.getLogger(__name__)

MAX_LABEL_TEXTS = 2000
"""Texts per side recorded for labelling the top neurons."""


@dataclass
class StudyRun:
    """What :func:`run_contrast_study` did."""

    study_id: int
    study: ContrastStudy
    labelled: list[NeuronId] = field(default_factory=list)
    """Neurons labelled (``spec.label``)."""
    causal_scores: int = 0
    """Causal scores stored."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Time per stage: load, contrast, store, label, causal."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (a job's result)."""
        return {"study_id": self.study_id, "name": self.study.name, "model": self.study.model,
                "n_tested": self.study.n_tested, "n_kept": len(self.study.neurons),
                "labelled": [str(n) for n in self.labelled], "causal_scores": self.causal_scores,
                "seconds": self.seconds}


def causal_scores_for(lm: Any, *, database_url: str, model: str, neurons: Sequence[NeuronId],
                      scorer: Any | None = None) -> int:
    """Score every stored explanation of ``neurons`` by intervention (one shared base pass) and
    store the scores; returns how many were stored."""
    from neurolabel.core.errors import ScoringError
    from neurolabel.pipeline.causal import InterventionScorer
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.studies import neuron_explanations, save_causal_scores

    scorer = scorer or InterventionScorer.from_defaults()
    expl: list[tuple[int, Explanation]] = []
    with session_scope(database_url) as session:
        for n in neurons:
            for e in neuron_explanations(session=session, model=model, neuron=n):
                expl.append((e["id"], Explanation(model=model, neuron=n, explainer=e["explainer"],
                                                  explainer_version=e["explainer_version"], text=e["text"],
                                                  structured=e["structured"], rank=e["rank"])))
    if not expl:
        return 0
    from neurolabel.pipeline.causal import base_run, causal_score

    base = base_run(lm, scorer.prompts, sorted({e.neuron for _, e in expl}))
    out = []
    for eid, e in expl:
        try:
            out.append((eid, causal_score(lm, e, base=base, mode=scorer.mode, value=scorer.value,
                                          n_random=scorer.n_random, seed=scorer.seed)))
        except ScoringError as exc:
            log.warning("causal score of %s %r: %s", e.neuron, e.text, exc)
    with session_scope(database_url) as session:
        return save_causal_scores(session=session, scores=out)


def run_contrast_study(spec: ContrastSpec, set_a: Iterable[str], set_b: Iterable[str], *, database_url: str,
                       names: tuple[str, str] = ("a", "b"), causal: bool = False,
                       on_progress: Callable[[Mapping[str, Any]], None] | None = None,
                       should_stop: Callable[[], bool] | None = None) -> StudyRun:
    """Run, store and (``spec.label``) label a contrast study; ``causal`` also scores the labels
    of the labelled neurons by intervention. ``set_a``/``set_b`` must be re-iterable when
    labelling (a :class:`activations.corpus.Corpus` or a list)."""
    from neurolabel.storage.db import normalize_url, session_scope, upgrade
    from neurolabel.storage.queries import upsert_model
    from neurolabel.storage.studies import save_study

    spec.check()
    if causal and not spec.label:
        raise ConfigError("causal scores need labels: set label to the number of top neurons to label")
    if spec.label:
        from neurolabel.pipeline.simulators import resolve_simulators

        resolve_simulators(list(spec.explainers))  # unknown explainer tags fail before the model loads
    url = normalize_url(database_url)
    upgrade(url)
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    if causal:
        from neurolabel.pipeline.intervene import load_lm

        lm = load_lm(spec.model)
        target = lm.target
    else:
        from neurolabel.activations.models import load_target

        lm, target = None, load_target(spec.model)
    secs["load"] = time.perf_counter() - t0

    def on_batch(side: str, n: int) -> None:
        if on_progress is not None:
            on_progress({"stage": "contrast", "side": side, "examples": n})

    t0 = time.perf_counter()
    study = contrast(target, set_a, set_b, spec=spec, names=names, on_batch=on_batch, should_stop=should_stop)
    secs["contrast"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with session_scope(url) as session:
        upsert_model(session=session, name=target.name, architecture=target.architecture, source=target.source,
                     unit_map=target.unit_map, n_layers=target.n_layers, n_units=target.n_units)
        study_id = save_study(session=session, study=study)
    secs["store"] = time.perf_counter() - t0
    run = StudyRun(study_id=study_id, study=study, seconds=secs)
    if spec.label and study.neurons:
        if on_progress is not None:
            on_progress({"stage": "label", "neurons": min(spec.label, len(study.neurons))})
        t0 = time.perf_counter()
        texts = list(islice(iter(set_a), MAX_LABEL_TEXTS)) + list(islice(iter(set_b), MAX_LABEL_TEXTS))
        run.labelled = label_top(target, study, texts, n=spec.label, explainers=spec.explainers,
                                 database_url=url, model_spec=spec.model)
        secs["label"] = time.perf_counter() - t0
        if causal:
            t0 = time.perf_counter()
            run.causal_scores = causal_scores_for(lm, database_url=url, model=study.model, neurons=run.labelled)
            secs["causal"] = time.perf_counter() - t0
    return run


_SPEC_FIELDS = {f.name for f in fields(ContrastSpec)}


def spec_from_dict(d: Mapping[str, Any]) -> ContrastSpec:
    """A :class:`ContrastSpec` from a job spec's fields (others ignored); ConfigError when bad."""
    kw = {k: v for k, v in d.items() if k in _SPEC_FIELDS and v is not None}
    for key in ("layers", "explainers"):
        if key in kw:
            kw[key] = tuple(kw[key])
    spec = ContrastSpec(**kw)
    spec.check()
    return spec


def run_contrast_job(spec: Mapping[str, Any], *, database_url: str, should_stop: Callable[[], bool],
                     on_progress: Callable[..., None]) -> dict[str, Any]:
    """Worker runner of a ``contrast`` job: ``spec`` holds :class:`ContrastSpec` fields, the
    texts ``a`` and ``b`` and optionally ``causal``. Returns the run's summary."""
    a, b = list(spec.get("a") or []), list(spec.get("b") or [])
    total = max(1, len(a) + len(b))

    def progress(detail: Mapping[str, Any]) -> None:
        done = detail.get("examples", 0) + (len(a) if detail.get("side") == "b" else 0)
        if detail.get("stage") == "label":
            done = total
        on_progress(min(done, total), total, dict(detail))

    run = run_contrast_study(spec_from_dict(spec), a, b, database_url=database_url, names=("a", "b"),
                             causal=bool(spec.get("causal")), on_progress=progress, should_stop=should_stop)
    return run.as_dict()
