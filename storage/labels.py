"""Bulk label reads: every neuron's best label, a keyset page at a time.

A page is ordered by (layer, index) and starts after a cursor neuron, so a reader that pages
through a model (``GET /v1/models/{m}/labels`` streams page after page, each in its own short
transaction) never holds a transaction open across pages, keeps only one page in memory, and
can resume after the last neuron it received. The best label of a neuron is its highest-scoring
accepted explanation (as :func:`storage.reads.best_label`), among one explainer's when filtered.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from neurolabel.storage.models import ExplanationRow, Model, Neuron, Score

LABEL_FIELDS = ("model", "layer", "index", "explainer", "explainer_version", "text", "score", "scorer",
                "simulator", "n_tokens", "updated_at", "cursor")
"""The fields of one label row, in order (also the CSV columns)."""


def cursor_of(layer: int, index: int) -> str:
    """The cursor that resumes after neuron ``layer:index``."""
    return f"{layer}:{index}"


def parse_cursor(cursor: str) -> tuple[int, int]:
    """``"layer:index"`` -> ``(layer, index)``; ValueError naming the expected form."""
    layer, sep, index = cursor.partition(":")
    if not sep or not layer.isdigit() or not index.isdigit() or len(layer) > 9 or len(index) > 12:
        raise ValueError(f"cursor {cursor[:40]!r} is not of the form '<layer>:<index>' (a row's 'cursor' field)")
    return int(layer), int(index)


def _utc(dt: datetime, dialect: str) -> datetime:
    """``dt`` in UTC as the database compares it (SQLite stores naive UTC times)."""
    dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    return dt.replace(tzinfo=None) if dialect == "sqlite" else dt


def best_labels_page(
    *,
    session: Session,
    model: str,
    layer: int | None = None,
    explainer: str | None = None,
    min_score: float | None = None,
    updated_since: datetime | None = None,
    after: tuple[int, int] | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]] | None:
    """The best labels of up to ``limit`` neurons of ``model`` after neuron ``after`` (ordered by
    layer, index); ``None`` for an unknown model. Filters: one ``layer``, one ``explainer``, a
    best score of at least ``min_score``, and neurons any of whose explanations was written at or
    after ``updated_since`` (what changed since a reader's last sync). Three indexed queries."""
    model_id = session.scalar(select(Model.id).where(Model.name == model))
    if model_id is None:
        return None
    cond = [ExplanationRow.neuron_id == Neuron.id, ExplanationRow.accepted]
    if explainer is not None:
        cond.append(ExplanationRow.explainer == explainer)
    q = select(Neuron.id, Neuron.layer, Neuron.index).where(Neuron.model_id == model_id)
    if layer is not None:
        q = q.where(Neuron.layer == layer)
    if after is not None:
        q = q.where(or_(Neuron.layer > after[0], and_(Neuron.layer == after[0], Neuron.index > after[1])))
    have = exists().where(*cond) if min_score is None else exists().where(*cond, ExplanationRow.score >= min_score)
    q = q.where(have)
    if updated_since is not None:
        since = _utc(updated_since, session.get_bind().dialect.name)
        q = q.where(exists().where(ExplanationRow.neuron_id == Neuron.id, ExplanationRow.updated_at >= since))
    neurons = session.execute(q.order_by(Neuron.layer, Neuron.index).limit(limit)).all()
    if not neurons:
        return []
    where = {n.id: (n.layer, n.index) for n in neurons}
    e_cond = [ExplanationRow.neuron_id.in_(list(where)), ExplanationRow.accepted]
    if explainer is not None:
        e_cond.append(ExplanationRow.explainer == explainer)
    best: dict[int, Any] = {}
    for e in session.execute(
        select(ExplanationRow.id, ExplanationRow.neuron_id, ExplanationRow.explainer,
               ExplanationRow.explainer_version, ExplanationRow.text, ExplanationRow.score,
               ExplanationRow.updated_at)
        .where(*e_cond)
        .order_by(ExplanationRow.neuron_id, ExplanationRow.score.desc().nulls_last(), ExplanationRow.id)
    ).all():
        best.setdefault(e.neuron_id, e)
    scores: dict[int, Any] = {}
    for s in session.execute(
        select(Score.explanation_id, Score.scorer, Score.simulator, Score.n_tokens)
        .where(Score.explanation_id.in_([e.id for e in best.values()]))
        .order_by(Score.explanation_id, Score.id)
    ).all():
        scores.setdefault(s.explanation_id, s)
    out = []
    for n in neurons:
        e = best.get(n.id)
        if e is None:  # its label was removed between the two queries
            continue
        s = scores.get(e.id)
        updated = e.updated_at.replace(tzinfo=timezone.utc) if e.updated_at.tzinfo is None else e.updated_at
        out.append({
            "model": model, "layer": n.layer, "index": n.index, "explainer": e.explainer,
            "explainer_version": e.explainer_version, "text": e.text, "score": e.score,
            "scorer": s.scorer if s else None, "simulator": s.simulator if s else None,
            "n_tokens": s.n_tokens if s else None, "updated_at": updated.isoformat(),
            "cursor": cursor_of(n.layer, n.index),
        })
    return out


def labels_version(*, session: Session, model: str) -> tuple[int, int, str] | None:
    """What changes whenever any label of ``model`` changes: (explanations, largest explanation
    id, latest write time); ``None`` for an unknown model. Bulk reads derive their ETag from it."""
    model_id = session.scalar(select(Model.id).where(Model.name == model))
    if model_id is None:
        return None
    n, top, latest = session.execute(
        select(func.count(ExplanationRow.id), func.max(ExplanationRow.id), func.max(ExplanationRow.updated_at))
        .join(Neuron, Neuron.id == ExplanationRow.neuron_id)
        .where(Neuron.model_id == model_id)
    ).one()
    return int(n or 0), int(top or 0), str(latest)
