"""Keyword-only query functions of contrast studies, and the causal (intervention) scores of
explanations stored beside their correlation scores. Sessions are not committed here."""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neurolabel.core.errors import StorageError
from neurolabel.core.studies import ContrastStudy
from neurolabel.core.types import NeuronId, ScoreResult
from neurolabel.storage.models import ExplanationRow, Model, Neuron, Score, Study, StudyNeuron, StudySet
from neurolabel.storage.writes import dialect_insert, ensure_models, ensure_neurons

StudyOrder = Literal["rank", "auroc", "smd", "q", "causal"]
"""How :func:`get_study` orders its neurons: the study's own ranking, AUROC (most separating
first, either direction), ``|d|``, q-value, or the best causal score of the neuron's labels."""

CAUSAL_SCORER = "intervention"


def _num(value: Any, where: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise StorageError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(f):
        raise StorageError(f"{where}: value {f!r} is not finite")
    return f


def save_study(*, session: Session, study: ContrastStudy) -> int:
    """Store ``study`` (its model and neurons are created when unknown); returns its id.
    Every value is checked before anything is written (StorageError naming the field)."""
    if not study.name.strip():
        raise StorageError("study name is empty")
    rows = []
    for c in study.neurons:
        w = f"study {study.name!r} neuron {c.neuron}"
        rows.append({
            "key": (c.neuron.layer, c.neuron.index), "rank": int(c.rank),
            "auroc": _num(c.auroc, f"{w}: auroc"), "p_value": _num(c.p_value, f"{w}: p_value"),
            "q_value": _num(c.q_value, f"{w}: q_value"), "smd": _num(c.smd, f"{w}: smd", optional=True),
            "smd_other": _num(c.smd_other, f"{w}: smd_other", optional=True),
            "mean_a": _num(c.mean_a, f"{w}: mean_a"), "mean_b": _num(c.mean_b, f"{w}: mean_b"),
            "std_a": _num(c.std_a, f"{w}: std_a"), "std_b": _num(c.std_b, f"{w}: std_b"),
            "sample_a": [_num(v, f"{w}: sample_a") for v in c.sample_a],
            "sample_b": [_num(v, f"{w}: sample_b") for v in c.sample_b],
        })
    if len({r["key"] for r in rows}) != len(rows):
        raise StorageError(f"study {study.name!r} lists a neuron twice")
    model_id = ensure_models(session=session, names=[study.model])[study.model]
    row = Study(model_id=model_id, kind="contrast", name=study.name, score=study.score, test=study.test,
                layers=list(study.layers), n_tested=int(study.n_tested), params=dict(study.params))
    session.add(row)
    session.flush()
    for side, fp in (("a", study.set_a), ("b", study.set_b)):
        session.add(StudySet(study_id=row.id, side=side, name=fp.name, sha256=fp.sha256,
                             n_examples=int(fp.n_examples), n_tokens=int(fp.n_tokens)))
    ids = ensure_neurons(session=session, model_id=model_id, keys=[r["key"] for r in rows])
    for r in rows:
        key = r.pop("key")
        session.add(StudyNeuron(study_id=row.id, neuron_id=ids[key], **r))
    session.flush()
    return row.id


def _study_head(session: Session, study_id: int) -> dict[str, Any] | None:
    row = session.execute(
        select(Study, Model.name).join(Model, Model.id == Study.model_id).where(Study.id == study_id)
    ).one_or_none()
    if row is None:
        return None
    st, model = row
    sets = {s.side: {"name": s.name, "sha256": s.sha256, "n_examples": s.n_examples, "n_tokens": s.n_tokens}
            for s in session.scalars(select(StudySet).where(StudySet.study_id == study_id))}
    n_kept = session.scalar(select(func.count()).select_from(StudyNeuron).where(StudyNeuron.study_id == study_id))
    return {"id": st.id, "kind": st.kind, "name": st.name, "model": model, "score": st.score, "test": st.test,
            "layers": list(st.layers or []), "n_tested": st.n_tested, "n_kept": int(n_kept or 0),
            "params": dict(st.params or {}), "created_at": st.created_at, "set_a": sets.get("a"), "set_b": sets.get("b")}


def list_studies(*, session: Session, model: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Studies, newest first (without their neurons)."""
    q = select(Study.id).join(Model, Model.id == Study.model_id).order_by(Study.id.desc()).limit(limit).offset(offset)
    if model is not None:
        q = q.where(Model.name == model)
    return [_study_head(session, i) for i in session.scalars(q).all()]


def get_study(*, session: Session, study_id: int, order: StudyOrder = "rank", layer: int | None = None,
              min_auroc_effect: float = 0.0, direction: Literal["a", "b"] | None = None,
              limit: int = 100, offset: int = 0, samples: bool = False) -> dict[str, Any] | None:
    """A study with its neurons (filtered: one ``layer``, ``|AUROC - 0.5| >= min_auroc_effect``,
    ``direction`` ``a`` = fires more on A, ``b`` = on B), each with its best label (the
    selected one, else the highest-scoring explanation, accepted or not) and its best causal score; ``samples`` adds
    the per-example scores for distribution plots. ``None`` when there is no such study."""
    head = _study_head(session, study_id)
    if head is None:
        return None
    causal = (
        select(ExplanationRow.neuron_id.label("nid"), func.max(Score.score).label("causal"))
        .join(Score, Score.explanation_id == ExplanationRow.id)
        .where(Score.scorer == CAUSAL_SCORER)
        .group_by(ExplanationRow.neuron_id)
        .subquery()
    )
    cols = [StudyNeuron, Neuron.layer, Neuron.index, causal.c.causal]
    q = (select(*cols).join(Neuron, Neuron.id == StudyNeuron.neuron_id)
         .outerjoin(causal, causal.c.nid == StudyNeuron.neuron_id)
         .where(StudyNeuron.study_id == study_id))
    if layer is not None:
        q = q.where(Neuron.layer == layer)
    if min_auroc_effect > 0:
        q = q.where(func.abs(StudyNeuron.auroc - 0.5) >= min_auroc_effect)
    if direction == "a":
        q = q.where(StudyNeuron.auroc > 0.5)
    elif direction == "b":
        q = q.where(StudyNeuron.auroc < 0.5)
    orders = {
        "rank": (StudyNeuron.rank,),
        "auroc": (func.abs(StudyNeuron.auroc - 0.5).desc(), StudyNeuron.rank),
        "smd": (func.abs(func.coalesce(StudyNeuron.smd, 0.0)).desc(), StudyNeuron.rank),
        "q": (StudyNeuron.q_value, StudyNeuron.rank),
        "causal": (causal.c.causal.desc().nulls_last(), StudyNeuron.rank),
    }
    if order not in orders:
        raise StorageError(f"order {order!r} is not one of {', '.join(orders)}")
    rows = session.execute(q.order_by(*orders[order]).limit(limit).offset(offset)).all()
    labels = _best_labels(session, [r[0].neuron_id for r in rows])
    neurons = []
    for sn, lay, idx, best_causal in rows:
        d = {"layer": lay, "index": idx, "rank": sn.rank, "auroc": sn.auroc, "p_value": sn.p_value,
             "q_value": sn.q_value, "smd": sn.smd, "smd_other": sn.smd_other, "mean_a": sn.mean_a,
             "mean_b": sn.mean_b, "std_a": sn.std_a, "std_b": sn.std_b, "causal_score": best_causal,
             "label": labels.get(sn.neuron_id)}
        if samples:
            d["sample_a"], d["sample_b"] = list(sn.sample_a or []), list(sn.sample_b or [])
        neurons.append(d)
    head["neurons"] = neurons
    return head


def _best_labels(session: Session, neuron_ids: list[int]) -> dict[int, dict[str, Any]]:
    if not neuron_ids:
        return {}
    out: dict[int, dict[str, Any]] = {}
    rows = session.execute(
        select(ExplanationRow.neuron_id, ExplanationRow.id, ExplanationRow.text, ExplanationRow.explainer,
               ExplanationRow.score, ExplanationRow.accepted)
        .where(ExplanationRow.neuron_id.in_(neuron_ids))
        .order_by(ExplanationRow.selected.desc(), ExplanationRow.score.desc().nulls_last(), ExplanationRow.id)
    ).all()
    for r in rows:
        out.setdefault(r.neuron_id, {"id": r.id, "text": r.text, "explainer": r.explainer, "score": r.score,
                                     "accepted": bool(r.accepted)})
    return out


def study_neurons(*, session: Session, study_id: int, limit: int) -> list[NeuronId]:
    """The first ``limit`` neurons of a study's ranking."""
    rows = session.execute(
        select(Neuron.layer, Neuron.index).join(StudyNeuron, StudyNeuron.neuron_id == Neuron.id)
        .where(StudyNeuron.study_id == study_id).order_by(StudyNeuron.rank).limit(limit)
    ).all()
    return [NeuronId(r.layer, r.index) for r in rows]


def neuron_explanations(*, session: Session, model: str, neuron: NeuronId) -> list[dict[str, Any]]:
    """The stored explanations of a neuron: ``{"id", "explainer", "explainer_version", "text", "structured"}``."""
    rows = session.execute(
        select(ExplanationRow.id, ExplanationRow.explainer, ExplanationRow.explainer_version, ExplanationRow.text,
               ExplanationRow.structured, ExplanationRow.rank)
        .join(Neuron, Neuron.id == ExplanationRow.neuron_id).join(Model, Model.id == Neuron.model_id)
        .where(Model.name == model, Neuron.layer == neuron.layer, Neuron.index == neuron.index)
        .order_by(ExplanationRow.score.desc().nulls_last(), ExplanationRow.id)
    ).all()
    return [{"id": r.id, "explainer": r.explainer, "explainer_version": r.explainer_version, "text": r.text,
             "structured": dict(r.structured or {}), "rank": r.rank} for r in rows]


def save_causal_scores(*, session: Session, scores: Iterable[tuple[int, ScoreResult]]) -> int:
    """Store causal scores ``(explanation id, result)`` beside the explanations' other scores
    (upsert on explanation, scorer, simulator and split; the explanation's main score is left
    as it is). Returns how many were written; StorageError for an unknown explanation or a
    result that is not an intervention score."""
    items = list(scores)
    if not items:
        return 0
    known = set(session.scalars(select(ExplanationRow.id).where(ExplanationRow.id.in_([i for i, _ in items]))))
    rows = []
    for eid, res in items:
        if eid not in known:
            raise StorageError(f"explanation {eid} does not exist")
        if res.scorer != CAUSAL_SCORER:
            raise StorageError(f"explanation {eid}: scorer {res.scorer!r} is not {CAUSAL_SCORER!r}")
        parts = {k: _num(v, f"explanation {eid}: parts.{k}", optional=True) for k, v in res.parts.items()}
        rows.append({"explanation_id": eid, "scorer": res.scorer, "simulator": res.simulator, "split": res.split,
                     "score": _num(res.score, f"explanation {eid}: score", optional=True), "parts": parts,
                     "n_tokens": int(res.n_tokens), "method": res.method})
    rows.sort(key=lambda r: (r["explanation_id"], r["simulator"]))
    stmt = dialect_insert(session, Score)
    stmt = stmt.on_conflict_do_update(
        index_elements=["explanation_id", "scorer", "simulator", "split"],
        set_={k: stmt.excluded[k] for k in ("score", "parts", "n_tokens", "method", "created_at")},
    )
    from neurolabel.storage.models import utcnow

    now = utcnow()
    session.execute(stmt, [{**r, "created_at": now} for r in rows])
    return len(rows)
