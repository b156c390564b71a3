"""Bulk label reads: every neuron's best label, a keyset page at a time.

A page is ordered by (layer, index) and starts after a cursor neuron, so a reader that pages
through a model (``GET /v1/models/{m}/labels`` streams page after page, each in its own short
transaction) never holds a transaction open across pages, keeps only one page in memory, and
can resume after the last neuron it received. The best label of a neuron is its selected
accepted explanation (as :func:`storage.reads.best_label`); filtered by explainer, that
explainer's selected one, else its highest-scoring accepted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, literal, select, tuple_
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


def _aware(dt: datetime) -> datetime:
    """``dt`` as an aware UTC time (SQLite returns naive UTC times)."""
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


@dataclass(frozen=True)
class LabelPage:
    """One keyset page of best labels."""

    rows: list[dict[str, Any]]
    """The labels of the page's neurons that pass the filters, in (layer, index) order."""
    after: tuple[int, int] | None
    """The last neuron the page looked at (resume after it), ``None`` when no neuron is left."""


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
) -> LabelPage | None:
    """The best labels among the next ``limit`` neurons of ``model`` after neuron ``after``
    (ordered by layer, index); ``None`` for an unknown model. Filters: one ``layer``, one
    ``explainer``, a best score of at least ``min_score``, and neurons any of whose explanations
    was written at or after ``updated_since`` (what changed since a reader's last sync). Two
    indexed queries whatever the database's statistics: a range of the (model, layer, index)
    index, then the explanations of those neurons by neuron id; a page may hold fewer rows than
    neurons (those without a label, or filtered out) — go on while ``after`` is not ``None``."""
    model_id = session.scalar(select(Model.id).where(Model.name == model))
    if model_id is None:
        return None
    q = select(Neuron.id, Neuron.layer, Neuron.index).where(Neuron.model_id == model_id)
    if layer is not None:
        q = q.where(Neuron.layer == layer)
    if after is not None:
        q = q.where(tuple_(Neuron.layer, Neuron.index) > tuple_(literal(after[0]), literal(after[1])))
    neurons = session.execute(q.order_by(Neuron.layer, Neuron.index).limit(limit)).all()
    if not neurons:
        return LabelPage([], None)
    since = None if updated_since is None else _aware(updated_since)
    best: dict[int, Any] = {}
    changed: set[int] = set()
    for e in session.execute(
        select(ExplanationRow.id, ExplanationRow.neuron_id, ExplanationRow.explainer,
               ExplanationRow.explainer_version, ExplanationRow.text, ExplanationRow.score,
               ExplanationRow.accepted, ExplanationRow.updated_at)
        .where(ExplanationRow.neuron_id.in_([n.id for n in neurons]))
        .order_by(ExplanationRow.neuron_id, ExplanationRow.selected.desc(), ExplanationRow.score.desc().nulls_last(),
                  ExplanationRow.id)
    ).all():
        if since is not None and e.updated_at is not None and _aware(e.updated_at) >= since:
            changed.add(e.neuron_id)
        if e.accepted and (explainer is None or e.explainer == explainer):
            best.setdefault(e.neuron_id, e)
    keep = [n for n in neurons if n.id in best and (min_score is None or (
        best[n.id].score is not None and best[n.id].score >= min_score)) and (since is None or n.id in changed)]
    scores: dict[int, Any] = {}
    if keep:
        for s in session.execute(
            select(Score.explanation_id, Score.scorer, Score.simulator, Score.n_tokens)
            .where(Score.explanation_id.in_([best[n.id].id for n in keep]))
            .order_by(Score.explanation_id, Score.id)
        ).all():
            scores.setdefault(s.explanation_id, s)
    rows = []
    for n in keep:
        e = best[n.id]
        s = scores.get(e.id)
        updated = _aware(e.updated_at)
        rows.append({
            "model": model, "layer": n.layer, "index": n.index, "explainer": e.explainer,
            "explainer_version": e.explainer_version, "text": e.text, "score": e.score,
            "scorer": s.scorer if s else None, "simulator": s.simulator if s else None,
            "n_tokens": s.n_tokens if s else None, "updated_at": updated.isoformat(),
            "cursor": cursor_of(n.layer, n.index),
        })
    last = neurons[-1]
    return LabelPage(rows, (last.layer, last.index) if len(neurons) == limit else None)


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
