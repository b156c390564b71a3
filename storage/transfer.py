"""Export the label database to files and import files into it.

Formats written by :func:`export_rows`:

- ``neurolabel`` (default): JSON lines, full fidelity. Line 1 is the header
  ``{"format": "neurolabel-export", "version": 1}``; then ``{"type": "model", …}``,
  ``{"type": "neuron", "model", "layer", "index", "record": <OpenAI NeuronRecord JSON or null>}``
  and ``{"type": "explanation", …, "scores": […], "embedding": <base64 float32>}`` lines.
- ``openai``: JSON lines, one OpenAI neuron-explainer ``NeuronRecord`` per recorded neuron
  (with neurolabel's extra ``"neurolabel"`` key, see :mod:`activations.openai_format`).
- ``neuronpedia``: a JSON list of explanation objects in Neuronpedia's style (``modelId``,
  ``layer`` as ``"<layer>-mlp"``, ``index``, ``description``, ``explanationModelName``,
  ``typeName``, ``scores``).
- ``csv``: one row per explanation.

:func:`import_file` reads the ``neurolabel`` format, or OpenAI ``NeuronRecord`` JSON (one
object, a list, or JSON lines). The whole file is parsed and validated first and written in
the caller's transaction: a bad file raises :class:`StorageError` and changes nothing.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from neurolabel.core.errors import NeurolabelError, StorageError
from neurolabel.core.types import ActivationRecord, NeuronId, NeuronRecord, NeuronStats, token_stats_from_json
from neurolabel.storage.models import Example, ExplanationRow, Model, Neuron, Score
from neurolabel.storage.writes import (
    ExplanationInput,
    _clean_json,
    _optional_score,
    save_neuron_records,
    upsert_model,
    write_explanation_rows,
)

log = logging.getLogger(__name__)

ExportFormat = Literal["neurolabel", "openai", "neuronpedia", "csv"]
EXPORT_FORMATS: tuple[str, ...] = ("neurolabel", "openai", "neuronpedia", "csv")
HEADER = {"format": "neurolabel-export", "version": 1}

CSV_COLUMNS = (
    "model", "layer", "index", "explainer", "explainer_version", "rank", "text", "score",
    "accepted", "scorer", "simulator", "n_tokens", "created_at",
)


# ---------------------------------------------------------------- reading the database


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _neuron_batches(session: Session, model: str | None, batch: int = 500) -> Iterator[list[tuple[Neuron, str]]]:
    """The neurons (of ``model``, or all) in (model name, layer, index) order, ``batch`` at a time:
    one keyset query per batch, so an export holds one batch of neurons, never all of them."""
    from sqlalchemy import and_, or_

    after: tuple[str, int, int] | None = None
    while True:
        q = select(Neuron, Model.name).join(Model, Model.id == Neuron.model_id)
        if model is not None:
            q = q.where(Model.name == model)
        if after is not None:
            name, layer, index = after
            q = q.where(or_(Model.name > name, and_(Model.name == name, or_(
                Neuron.layer > layer, and_(Neuron.layer == layer, Neuron.index > index)))))
        rows = [(n, name) for n, name in session.execute(
            q.order_by(Model.name, Neuron.layer, Neuron.index).limit(batch)).all()]
        if not rows:
            return
        yield rows
        last, name = rows[-1]
        after = (name, last.layer, last.index)


def _records_of(session: Session, rows: list[tuple[Neuron, str]]) -> dict[int, NeuronRecord]:
    ids = [n.id for n, _ in rows if n.recorded_at is not None]
    by_neuron: dict[int, dict[str, list[ActivationRecord]]] = {i: {"top": [], "random": [], "quantile": []} for i in ids}
    if ids:
        for ex in session.execute(
            select(Example).where(Example.neuron_id.in_(ids)).order_by(Example.neuron_id, Example.kind, Example.position)
        ).scalars():
            by_neuron[ex.neuron_id][ex.kind].append(
                ActivationRecord(
                    tokens=tuple(ex.tokens), activations=tuple(float(a) for a in ex.activations),
                    window_id=ex.window_id, split=ex.split, kind=ex.kind, quantile=ex.quantile,  # type: ignore[arg-type]
                )
            )
    out = {}
    for n, name in rows:
        if n.id not in by_neuron:
            continue
        k = by_neuron[n.id]
        stats = NeuronStats(**n.stats) if n.stats else None
        out[n.id] = NeuronRecord(
            model=name, neuron=NeuronId(n.layer, n.index), top=tuple(k["top"]), random=tuple(k["random"]),
            quantile=tuple(k["quantile"]), stats=stats, token_stats=token_stats_from_json(n.token_stats),
            prefix=tuple(n.prefix or ()),
        )
    return out


def _explanations_of(session: Session, rows: list[tuple[Neuron, str]]) -> list[dict[str, Any]]:
    where = {n.id: (name, n.layer, n.index) for n, name in rows}
    expl = session.execute(
        select(ExplanationRow)
        .where(ExplanationRow.neuron_id.in_(list(where)))
        .order_by(ExplanationRow.neuron_id, ExplanationRow.explainer, ExplanationRow.explainer_version, ExplanationRow.rank)
    ).scalars().all()
    scores: dict[int, list[Score]] = {e.id: [] for e in expl}
    if expl:
        for s in session.execute(
            select(Score).where(Score.explanation_id.in_(list(scores))).order_by(Score.explanation_id, Score.id)
        ).scalars():
            scores[s.explanation_id].append(s)
    out = []
    for e in expl:
        model, layer, index = where[e.neuron_id]
        out.append(
            {
                "type": "explanation",
                "model": model,
                "layer": layer,
                "index": index,
                "explainer": e.explainer,
                "explainer_version": e.explainer_version,
                "rank": e.rank,
                "text": e.text,
                "structured": e.structured or {},
                "params": e.params or {},
                "score": e.score,
                "accepted": bool(e.accepted),
                "created_at": _iso(e.created_at),
                "embedding": base64.b64encode(e.embedding).decode("ascii") if e.embedding else None,
                # the ontology its class expressions refer to: without it an imported label could
                # not be told from one over another version of the ontology (concept search and
                # causal scoring check the hash)
                "ontology": {"name": e.ontology, "hash": e.ontology_hash} if e.ontology or e.ontology_hash else None,
                "scores": [
                    {
                        "scorer": s.scorer, "simulator": s.simulator, "split": s.split, "score": s.score,
                        "parts": s.parts or {}, "n_tokens": s.n_tokens, "method": s.method,
                    }
                    for s in scores[e.id]
                ],
            }
        )
    return out


def _model_lines(session: Session, model: str | None) -> list[dict[str, Any]]:
    q = select(Model).order_by(Model.name)
    if model is not None:
        q = q.where(Model.name == model)
    return [
        {
            "type": "model", "name": m.name, "architecture": m.architecture, "source": m.source,
            "unit_map": m.unit_map or {}, "n_layers": m.n_layers, "n_units": m.n_units,
        }
        for m in session.execute(q).scalars()
    ]


def neuronpedia_item(e: dict[str, Any]) -> dict[str, Any]:
    """One explanation in Neuronpedia's style, from a dict with model, layer, index, text,
    explainer, explainer_version, accepted, score and scores (each score, scorer, simulator,
    n_tokens)."""
    return {
        "modelId": e["model"],
        "layer": f"{e['layer']}-mlp",
        "index": str(e["index"]),
        "description": e["text"],
        "explanationModelName": f"{e['explainer']}@{e['explainer_version']}",
        "typeName": e["explainer"],
        "accepted": e["accepted"],
        "score": e["score"],
        "scores": [
            {"value": s["score"], "explanationScoreTypeName": s["scorer"], "simulator": s["simulator"],
             "nTokens": s["n_tokens"]}
            for s in e["scores"]
        ],
    }


def export_rows(
    *, session: Session, out: IO[str], format: ExportFormat = "neurolabel", model: str | None = None
) -> int:
    """Write the database (or one model) to the text stream ``out``; returns the number of
    items written (lines of JSONL formats, explanations of ``neuronpedia`` and ``csv``)."""
    from neurolabel.activations.openai_format import to_openai_json

    if format not in EXPORT_FORMATS:
        raise StorageError(f"export format {format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if model is not None and session.execute(select(Model.id).where(Model.name == model)).first() is None:
        raise StorageError(f"model {model!r} is not in the database")
    n = 0
    if format == "neurolabel":
        out.write(json.dumps(HEADER) + "\n")
        for line in _model_lines(session, model):
            out.write(json.dumps(line) + "\n")
            n += 1
    writer = None
    if format == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
    if format == "neuronpedia":
        out.write("[")
    for rows in _neuron_batches(session, model):
        if format in ("neurolabel", "openai"):
            records = _records_of(session, rows)
            for nrow, name in rows:
                rec = records.get(nrow.id)
                if format == "openai":
                    if rec is not None:
                        out.write(json.dumps(to_openai_json(rec)) + "\n")
                        n += 1
                    continue
                line = {
                    "type": "neuron", "model": name, "layer": nrow.layer, "index": nrow.index,
                    "recorded_at": _iso(nrow.recorded_at),
                    "record": to_openai_json(rec) if rec is not None else None,
                }
                out.write(json.dumps(line) + "\n")
                n += 1
        if format == "openai":
            continue
        for e in _explanations_of(session, rows):
            if format == "neurolabel":
                out.write(json.dumps(e) + "\n")
            elif format == "csv":
                first = e["scores"][0] if e["scores"] else {}
                writer.writerow(  # type: ignore[union-attr]
                    [e["model"], e["layer"], e["index"], e["explainer"], e["explainer_version"], e["rank"],
                     e["text"], "" if e["score"] is None else e["score"], int(e["accepted"]),
                     first.get("scorer", ""), first.get("simulator", ""), first.get("n_tokens", ""),
                     e["created_at"]]
                )
            else:
                out.write(("," if n else "") + "\n" + json.dumps(neuronpedia_item(e)))
            n += 1
    if format == "neuronpedia":
        out.write("\n]\n")
    return n


def export_file(*, session: Session, path: str | Path, format: ExportFormat = "neurolabel", model: str | None = None) -> int:
    """:func:`export_rows` into the file ``path`` (written atomically)."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            n = export_rows(session=session, out=f, format=format, model=model)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


# ---------------------------------------------------------------- importing


@dataclass
class ImportSummary:
    """What an import wrote."""

    format: str
    models: int = 0
    records: int = 0
    explanations: int = 0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"format": self.format, "models": self.models, "records": self.records,
                "explanations": self.explanations}


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise StorageError(f"import file {str(path)!r} does not exist or is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StorageError(f"{path}: not a UTF-8 text file (expected JSON or JSON lines)") from None
    except OSError as exc:
        raise StorageError(f"{path}: cannot be read: {exc}") from None


def _parse_lines(path: Path, text: str) -> list[tuple[int, Any]]:
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                items.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise StorageError(f"{path}: line {lineno}: not JSON ({exc.msg})") from None
    return items


def _first_json(text: str) -> Any:
    first = next((l for l in text.splitlines() if l.strip()), "")
    try:
        return json.loads(first)
    except json.JSONDecodeError:
        return None


def _field(d: dict, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise StorageError(f"{where}: missing field {key!r}")
    value = d[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StorageError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _parse_native(path: Path, items: list[tuple[int, Any]]):
    from neurolabel.activations.openai_format import from_openai_json

    models, records, explanations = [], [], []
    recorded_at: dict[tuple[str, int, int], datetime] = {}
    for lineno, d in items[1:]:
        where = f"{path}: line {lineno}"
        if not isinstance(d, dict) or "type" not in d:
            raise StorageError(f"{where}: expected an object with a 'type'")
        t = d["type"]
        if t == "model":
            _field(d, "name", where, str)
            models.append(d)
        elif t == "neuron":
            if d.get("record") is not None:
                try:
                    records.append(
                        from_openai_json(
                            d["record"], model=_field(d, "model", where, str),
                            neuron=NeuronId(_field(d, "layer", where, int), _field(d, "index", where, int)),
                            where=where,
                        )
                    )
                except NeurolabelError as exc:
                    raise StorageError(str(exc)) from None
                except (KeyError, TypeError, ValueError) as exc:
                    raise StorageError(f"{where}: bad record: {exc}") from None
                if d.get("recorded_at"):
                    try:
                        recorded_at[(d["model"], d["layer"], d["index"])] = datetime.fromisoformat(d["recorded_at"])
                    except (TypeError, ValueError):
                        raise StorageError(f"{where}: recorded_at {d['recorded_at']!r} is not an ISO date") from None
        elif t == "explanation":
            explanations.append(_explanation_input(d, where))
        else:
            raise StorageError(f"{where}: unknown line type {t!r}")
    return models, records, explanations, recorded_at


def _restore_recorded_at(session: Session, recorded_at: dict[tuple[str, int, int], datetime]) -> None:
    if not recorded_at:
        return
    model_ids = dict(session.execute(select(Model.name, Model.id)).all())
    stmt = (
        update(Neuron)
        .where(Neuron.model_id == bindparam("m_id"), Neuron.layer == bindparam("l"), Neuron.index == bindparam("i"))
        .values(recorded_at=bindparam("at"))
    )
    session.connection().execute(
        stmt, [{"m_id": model_ids[m], "l": l, "i": i, "at": at} for (m, l, i), at in sorted(recorded_at.items())]
    )


def _explanation_input(d: dict, where: str) -> ExplanationInput:
    text = _field(d, "text", where, str)
    if not text.strip():
        raise StorageError(f"{where}: text is empty")
    emb = d.get("embedding")
    embedding = None
    if emb is not None:
        try:
            embedding = base64.b64decode(emb, validate=True)
        except (ValueError, TypeError):
            raise StorageError(f"{where}: embedding is not base64") from None
        if len(embedding) != 384 * 4:
            raise StorageError(f"{where}: embedding has {len(embedding)} bytes, expected {384 * 4}")
    scores = []
    for i, s in enumerate(d.get("scores") or []):
        w = f"{where}: scores[{i}]"
        if not isinstance(s, dict):
            raise StorageError(f"{w}: expected an object")
        scores.append(
            {
                "scorer": _field(s, "scorer", w, str),
                "simulator": _field(s, "simulator", w, str),
                "split": s.get("split", "score"),
                "score": _optional_score(s.get("score"), f"{w}: score"),
                "parts": _clean_json(s.get("parts") or {}, f"{w}: parts"),
                "n_tokens": int(s.get("n_tokens") or 0),
                "method": str(s.get("method") or ""),
            }
        )
    ontology, ontology_hash = _ontology_of(d.get("ontology"), where)
    created = d.get("created_at")
    try:
        created_at = datetime.fromisoformat(created) if created else None
    except (TypeError, ValueError):
        raise StorageError(f"{where}: created_at {created!r} is not an ISO date") from None
    return ExplanationInput(
        model=_field(d, "model", where, str),
        layer=_field(d, "layer", where, int),
        index=_field(d, "index", where, int),
        explainer=_field(d, "explainer", where, str),
        explainer_version=_field(d, "explainer_version", where, str),
        rank=int(d.get("rank") or 0),
        text=text,
        structured=_clean_json(d.get("structured") or {}, f"{where}: structured"),
        params=_clean_json(d.get("params") or {}, f"{where}: params"),
        score=_optional_score(d.get("score"), f"{where}: score"),
        accepted=bool(d.get("accepted", False)),
        scores=scores,
        embedding=embedding,
        created_at=created_at,
        ontology=ontology,
        ontology_hash=ontology_hash,
    )


def _ontology_of(value: Any, where: str) -> tuple[str | None, str | None]:
    """``(name, hash)`` of an explanation's ``"ontology"`` (``{"name", "hash"}`` or null; exports
    made before it was written have none)."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise StorageError(f"{where}: ontology must be an object with name and hash, not {type(value).__name__}")
    name, digest = value.get("name"), value.get("hash")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise StorageError(f"{where}: ontology.name must be a string of at most 200 characters")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                   and all(c in "0123456789abcdef" for c in digest)):
        raise StorageError(f"{where}: ontology.hash must be a SHA-256 in 64 lowercase hex digits, not {digest!r}")
    return name, digest


def import_file(*, session: Session, path: str | Path, model: str | None = None) -> ImportSummary:
    """Import a ``neurolabel`` export or OpenAI ``NeuronRecord`` JSON into the session's database.

    ``model`` names the model of OpenAI records; without it a record's ``neurolabel.model``, else
    :data:`activations.openai_format.UNNAMED_MODEL` (``external``) — the rule the API follows
    for the records of ``POST /v1/explain``. Everything is
    parsed and validated before the first write; the caller's transaction makes it atomic
    (:func:`storage.db.session_scope` rolls back on error). Does not commit."""
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise StorageError(f"{path}: the file is empty")
    head = _first_json(text)
    if isinstance(head, dict) and head.get("format") == HEADER["format"]:
        if head.get("version") != HEADER["version"]:
            raise StorageError(f"{path}: export version {head.get('version')!r} is not supported (expected 1)")
        models, records, explanations, recorded_at = _parse_native(path, _parse_lines(path, text))
        summary = ImportSummary(format="neurolabel")
        for m in models:
            upsert_model(
                session=session, name=m["name"], architecture=m.get("architecture"), source=m.get("source"),
                unit_map=m.get("unit_map") or {}, n_layers=m.get("n_layers"), n_units=m.get("n_units"),
            )
        summary.models = len(models)
    else:
        from neurolabel.activations.openai_format import UNNAMED_MODEL, read_records

        try:
            records = read_records(path, model=model, unnamed=UNNAMED_MODEL)
        except NeurolabelError as exc:
            raise StorageError(f"cannot import {path}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"cannot import {path}: not an OpenAI NeuronRecord file ({exc})") from None
        explanations, recorded_at = [], {}
        summary = ImportSummary(format="openai")
        unnamed = sum(r.model == UNNAMED_MODEL for r in records) if model is None else 0
        if unnamed:
            summary.warnings.append(f"{unnamed} record(s) name no model and were stored as model "
                                    f"{UNNAMED_MODEL!r} (pass --model to name it)")
    summary.records = save_neuron_records(session=session, records=records, commit=False)
    _restore_recorded_at(session, recorded_at)
    summary.explanations = len(write_explanation_rows(session=session, rows=explanations))
    log.info("imported %s: %s", path, summary.as_dict())
    return summary


def export_string(*, session: Session, format: ExportFormat = "neurolabel", model: str | None = None) -> str:
    """:func:`export_rows` into a string (small databases, tests)."""
    buf = io.StringIO()
    export_rows(session=session, out=buf, format=format, model=model)
    return buf.getvalue()
