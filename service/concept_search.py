"""Search labels by ontology class: explanations whose class expression falls under class X.

Concept-induction explanations keep the IRIs of the named classes of their class expression in
``structured["iris"]``. An expression falls under X when it is subsumed by X in the ontology's
hierarchy: for a conjunction (the usual form, ``A and (r some B)``) it is enough that one named
top-level class is X or below X; for a union (the Manchester text contains `` or ``) every named
class must be. Role fillers are treated like top-level classes (a conservative approximation:
the IRIs list does not say which class sits under a role).
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from neurolabel.core.errors import OntologyError
from neurolabel.ontology.identity import content_hash


def falls_under(iris: Iterable[str], target: int, ontology: Any, *, union: bool = False) -> bool:
    """Whether the class expression over ``iris`` is subsumed by class ``target``."""
    hits = []
    for iri in iris:
        try:
            c = ontology.find(iri)
        except OntologyError:
            hits.append(False)
            continue
        hits.append(bool(c == target or target in set(ontology.ancestors(c).tolist())))
    if not hits:
        return False
    return all(hits) if union else any(hits)


def labels_under(
    *,
    session: Session,
    ontology: Any,
    cls: str,
    model: str | None = None,
    min_score: float | None = None,
    limit: int = 20,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Explanations (best score first) whose ``structured["iris"]`` expression falls under the
    ontology class named ``cls`` (IRI, local name or label). Raises ``LookupError`` when the
    ontology has no such class."""
    from neurolabel.storage.models import ExplanationRow, Model, Neuron

    try:
        target = ontology.find(cls)
    except OntologyError as exc:
        raise LookupError(str(exc)) from None
    q = (
        select(
            ExplanationRow.id, ExplanationRow.text, ExplanationRow.structured,
            ExplanationRow.explainer, ExplanationRow.explainer_version, ExplanationRow.score,
            ExplanationRow.accepted, Neuron.layer, Neuron.index, Model.name,
        )
        .join(Neuron, ExplanationRow.neuron_id == Neuron.id)
        .join(Model, Neuron.model_id == Model.id)
        .order_by(ExplanationRow.score.desc().nulls_last(), ExplanationRow.id)
    )
    if model is not None:
        q = q.where(Model.name == model)
    if min_score is not None:
        q = q.where(ExplanationRow.score >= min_score)
    # only labels written over this ontology (or recording none): another ontology's IRIs mean other things
    q = q.where(or_(ExplanationRow.ontology_hash.is_(None), ExplanationRow.ontology_hash == content_hash(ontology)))
    out: list[dict[str, Any]] = []
    skipped = 0
    for row in session.execute(q):
        structured = row.structured or {}
        iris = structured.get("iris") if isinstance(structured, dict) else None
        if not iris:
            continue
        union = " or " in str(structured.get("manchester", ""))
        if not falls_under(iris, target, ontology, union=union):
            continue
        if skipped < offset:
            skipped += 1
            continue
        out.append({
            "explanation_id": row.id,
            "model": row.name,
            "layer": row.layer,
            "index": row.index,
            "explainer": row.explainer,
            "explainer_version": row.explainer_version,
            "text": row.text,
            "structured": structured,
            "score": row.score,
            "accepted": row.accepted,
            "under": ontology.iri(target),
        })
        if len(out) >= limit:
            break
    return out
