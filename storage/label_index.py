"""The label vector index against the database: reading labels into it, keeping the persisted
index in step with committed writes, checking it and rebuilding it (``neurolabel db reindex``).

The storage of the index itself (faiss graph, log, snapshots) is :mod:`storage.vector_index`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from neurolabel.core.errors import StorageError
from neurolabel.storage import vector_index as vi
from neurolabel.storage.models import ExplanationRow, Neuron

log = logging.getLogger(__name__)

_PENDING = "label_index_pending"
"""``session.info`` key: (folder, records) written in the open transaction, appended to the
index log once it commits."""


def stamp(dt: datetime) -> float:
    """A comparable number for a stored ``updated_at`` (naive values are UTC, as SQLite keeps them)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def label_query():
    """Every label with an embedding, as :func:`vector_index.records` expects its rows."""
    return (
        select(ExplanationRow.id, ExplanationRow.updated_at, Neuron.model_id, Neuron.layer,
               ExplanationRow.explainer, ExplanationRow.score, ExplanationRow.embedding)
        .join(Neuron, Neuron.id == ExplanationRow.neuron_id)
        .where(ExplanationRow.embedding.is_not(None))
    )


def _to_records(rows) -> np.ndarray:
    return vi.records((r[0], stamp(r[1]), *r[2:]) for r in rows)


def stream_labels(session: Session, *, batch: int = 20_000) -> Iterator[np.ndarray]:
    """Every label of the database as record arrays of up to ``batch`` rows, in id order: pages
    of an id range each (memory stays flat; no server-side cursor, so a read session of the
    service, in autocommit, can build the index too)."""
    after = 0
    while True:
        rows = session.execute(
            label_query().where(ExplanationRow.id > after).order_by(ExplanationRow.id).limit(batch)).all()
        if not rows:
            return
        yield _to_records(rows)
        after = rows[-1][0]


def fetch_labels(session: Session, ids: list[int]) -> np.ndarray:
    """The labels ``ids`` (those that still exist and have an embedding)."""
    parts = [
        _to_records(session.execute(label_query().where(ExplanationRow.id.in_(ids[k: k + 1000]))).all())
        for k in range(0, len(ids), 1000)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=vi.RECORD)


def db_stamps(session: Session, *, since: float | None = None) -> dict[int, float]:
    """``{label id: updated_at stamp}`` of the labels with an embedding (only those stamped at
    or after ``since`` minus :data:`vector_index.OVERLAP`, when given)."""
    q = select(ExplanationRow.id, ExplanationRow.updated_at).where(ExplanationRow.embedding.is_not(None))
    if since is not None:
        edge = datetime.fromtimestamp(since, timezone.utc) - vi.OVERLAP
        q = q.where(ExplanationRow.updated_at >= edge)
    return {i: stamp(u) for i, u in session.execute(q).all()}


def tombstones(ids: list[int], at: float) -> np.ndarray:
    """Deletion records of the labels ``ids``."""
    out = np.zeros(len(ids), dtype=vi.RECORD)
    out["id"] = ids
    out["stamp"] = at
    out["deleted"] = 1
    return out


def sync(index: vi.LabelIndex, session: Session, *, since: float | None) -> tuple[int, int]:
    """Bring ``index`` up to the database: labels stamped since ``since`` (all, and deletions
    too, when ``None``) that the index lacks or holds with another stamp are read again.
    Returns (labels read, labels deleted)."""
    now = datetime.now(timezone.utc).timestamp()
    stamps = db_stamps(session, since=since)
    changed = [i for i, s in stamps.items() if index.stamp(i) != s]
    gone: list[int] = []
    if since is None:
        gone = [i for i in index.stamps() if i not in stamps]
        index.apply(tombstones(gone, now))
    fresh = fetch_labels(session, changed)
    index.apply(fresh)
    return len(fresh), len(gone)


def build(session: Session, *, progress: bool = False) -> vi.LabelIndex:
    """A new index of every label in the database (a progress bar with ``progress``)."""
    from tqdm.auto import tqdm

    total = session.execute(
        select(func.count(ExplanationRow.id)).where(ExplanationRow.embedding.is_not(None))).scalar_one()
    import faiss

    index = vi.LabelIndex()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        with tqdm(total=total, unit="label", desc="label index", disable=not progress) as bar:
            for part in stream_labels(session):
                index.apply(part)
                bar.update(len(part))
    finally:
        faiss.omp_set_num_threads(1)
    return index


# ------------------------------------------------------------------------- writes


def queue_written(session: Session, folder: Path | None, records: np.ndarray) -> None:
    """Remember labels written in the session's open transaction: they are appended to the
    persisted index at ``folder`` once (and only if) the transaction commits."""
    if folder is not None and len(records):
        session.info.setdefault(_PENDING, []).append((folder, records))


@event.listens_for(Session, "after_commit")
def _append_committed(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    for folder, records in pending or ():
        try:
            vi.append_records(folder, records)
        except OSError as exc:  # the database is the truth: readers fetch what the log lacks
            log.warning("label index %s: %d label(s) not appended (%s); `neurolabel db reindex` repairs it",
                        folder, len(records), exc)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


# ------------------------------------------------------------------------- check and repair


@dataclass(frozen=True)
class IndexReport:
    """How the persisted index of a database compares with the database."""

    folder: str
    labels: int
    """Labels with an embedding in the database."""
    indexed: int
    """Live labels in the persisted index (base snapshot + log)."""
    missing: int
    """In the database, not in the index (e.g. a writer killed after its commit)."""
    stale: int
    """In both, the index holding an older version."""
    extra: int
    """In the index, no longer in the database."""
    dead: int
    """Graph positions of replaced or deleted labels (a full rebuild drops them)."""
    unembedded: int = 0
    """Labels the checked policy (default ``best``: each explainer's best-scored candidate;
    :data:`storage.writes.EMBED_POLICIES`) gives a vector that have none (e.g. written with
    ``--embed none``); other labels without one are not counted."""
    rebuilt: bool = False
    repaired: int = 0
    embedded: int = 0
    """Vectors the repair computed (``unembedded`` ones, or every missing one with ``embed="all"``)."""
    revectored: int = 0
    """Stored vectors the repair recomputed from their labels' search texts (``revector``)."""

    @property
    def consistent(self) -> bool:
        return self.missing == 0 and self.stale == 0 and self.extra == 0 and self.unembedded == 0


def count_unembedded(session: Session, *, embed: str = "best") -> int:
    """Labels that the policy ``embed`` gives a vector and that have none (``none`` counts what
    ``best`` wants: ``db reindex`` fills those in)."""
    from neurolabel.storage.writes import policy_rows

    q, sub, wanted = policy_rows(embed=embed)
    return session.execute(select(func.count()).select_from(q.where(sub.c.missing, wanted).subquery())).scalar_one()


def check_index(*, session: Session, folder: Path, embed: str = "best") -> IndexReport:
    """Compare the persisted index at ``folder`` with the database (every label's stamp), and
    count the labels the policy ``embed`` wants that have no vector."""
    snap = vi.load(folder)
    have = snap.index.stamps()
    want = db_stamps(session)
    return IndexReport(
        folder=str(folder), labels=len(want), indexed=len(have),
        missing=sum(1 for i in want if i not in have),
        stale=sum(1 for i, s in want.items() if i in have and have[i] != s),
        extra=sum(1 for i in have if i not in want),
        dead=snap.index.dead, unembedded=count_unembedded(session, embed=embed),
    )


def reindex(*, session: Session, folder: Path, full: bool = False, progress: bool = False,
            embed: str = "best", embedder=None, revector: bool = False) -> IndexReport:
    """Repair the persisted index at ``folder``: first store the vectors the policy ``embed``
    wants and the database lacks (``best``: each explainer's best-scored label; ``accepted``: its
    top-ranked, best-scored and accepted ones; ``all``: every label; ``none``: no embedding), committed; then append what
    differs from the database to the index log, or (``full``, when no base snapshot exists, or
    when over a fifth of the graph is dead) rebuild it from the database and save it as the new
    base snapshot. ``revector``: first recompute every stored vector from its label's search text
    (:func:`storage.writes.recompute_vectors`), committed, then rebuild (implies ``full``)."""
    from neurolabel.storage.writes import fill_vectors, recompute_vectors

    revectored = 0
    if revector:
        revectored = recompute_vectors(session=session, embedder=embedder)
        session.commit()
        full = True
    embedded = len(fill_vectors(session=session, embed=embed, embedder=embedder))
    session.commit()
    report = _reindex(session=session, folder=folder, full=full, progress=progress, embed=embed)
    return IndexReport(**{**report.__dict__, "embedded": embedded, "revectored": revectored})


def _reindex(*, session: Session, folder: Path, full: bool, progress: bool, embed: str) -> IndexReport:
    try:
        before = check_index(session=session, folder=folder, embed=embed)
        based = vi.load(folder, with_log=False).watermark is not None
    except StorageError:  # an unreadable snapshot: only a full rebuild helps
        if not full:
            raise
        before, based = None, False
    if full or not based or before.dead > 0.2 * max(1, before.indexed + before.dead):
        watermark = datetime.now(timezone.utc).timestamp()
        index = build(session, progress=progress)
        vi.save(folder, index, watermark=watermark)
        log.info("label index %s rebuilt: %d labels", folder, len(index))
        if before is None:
            return IndexReport(folder=str(folder), labels=len(index), indexed=0, missing=len(index), stale=0,
                               extra=0, dead=0, rebuilt=True, repaired=len(index))
        return IndexReport(**{**before.__dict__, "rebuilt": True, "repaired": before.missing + before.stale + before.extra})
    current = vi.load(folder).index
    have = current.stamps()
    want = db_stamps(session)
    changed = [i for i, s in want.items() if have.get(i) != s]
    gone = [i for i in have if i not in want]
    repair = np.concatenate([fetch_labels(session, changed),
                             tombstones(gone, datetime.now(timezone.utc).timestamp())])
    vi.append_records(folder, repair)
    return IndexReport(**{**before.__dict__, "repaired": len(repair)})
