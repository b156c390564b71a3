"""Label search: full text (SQLite FTS5 / PostgreSQL ``tsvector``) and by meaning (cosine
similarity of all-MiniLM-L6-v2 embeddings stored with each label).

Semantic search keeps, per database, an in-memory matrix of every label embedding (float32,
normalised) with the model id and score of each label; a query is one matrix–vector product
plus a partial sort. The matrix is refreshed incrementally on every search from the rows whose
``updated_at`` moved (an index range scan, see :class:`SemanticIndex`), so it stays correct
while writers add labels. At 10⁶ labels the matrix takes 1.5 GB (first load: tens of seconds)
and a query is dominated by the matrix-vector product over it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from neurolabel.core.errors import StorageError
from neurolabel.storage.models import ExplanationRow, Model, Neuron

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+", re.UNICODE)

TEXT_CANDIDATES = 10_000
"""PostgreSQL full-text search ranks at most this many matching labels: a query word found in
more labels (a very common word) is ranked among the first this-many matches only, which keeps
its latency bounded at 10⁶ labels."""
EMBEDDING_DIM = 384

_RESULT_COLUMNS = (
    "e.id AS explanation_id, m.name AS model, n.layer AS layer, n.\"index\" AS idx, e.text AS text, "
    "e.explainer AS explainer, e.explainer_version AS explainer_version, e.score AS score, "
    "e.accepted AS accepted"
)


def _row_dict(r: Any, relevance: float) -> dict[str, Any]:
    return {
        "explanation_id": r.explanation_id,
        "model": r.model,
        "layer": r.layer,
        "index": r.idx,
        "text": r.text,
        "explainer": r.explainer,
        "explainer_version": r.explainer_version,
        "score": r.score,
        "accepted": bool(r.accepted),
        "relevance": float(relevance),
    }


def _filters(model: str | None, min_score: float | None, params: dict[str, Any]) -> str:
    sql = ""
    if model is not None:
        sql += " AND m.name = :model"
        params["model"] = model
    if min_score is not None:
        sql += " AND e.score >= :min_score"
        params["min_score"] = float(min_score)
    return sql


def _text_search(
    session: Session, query: str, model: str | None, min_score: float | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    words = _WORD.findall(query.lower())
    if not words:
        return []
    dialect = session.get_bind().dialect.name
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    where = _filters(model, min_score, params)
    if dialect == "sqlite":
        params["q"] = " ".join('"' + w.replace('"', "") + '"' for w in words)
        sql = (
            f"SELECT {_RESULT_COLUMNS}, -bm25(explanations_fts) AS relevance FROM explanations_fts "
            "JOIN explanations e ON e.id = explanations_fts.rowid "
            "JOIN neurons n ON n.id = e.neuron_id JOIN models m ON m.id = n.model_id "
            f"WHERE explanations_fts MATCH :q{where} "
            "ORDER BY relevance DESC, e.score DESC, e.id LIMIT :limit OFFSET :offset"
        )
    elif dialect == "postgresql":
        params["q"] = " ".join(words)
        params["cap"] = TEXT_CANDIDATES
        scope = (
            "JOIN neurons n ON n.id = e.neuron_id JOIN models m ON m.id = n.model_id " if model is not None else ""
        )
        sql = (
            "WITH hits AS (SELECT e.id, ts_rank_cd(e.text_tsv, q) AS relevance "
            f"FROM explanations e CROSS JOIN plainto_tsquery('english', :q) AS q {scope}"
            f"WHERE e.text_tsv @@ q{where} LIMIT :cap) "
            f"SELECT {_RESULT_COLUMNS}, hits.relevance FROM hits JOIN explanations e ON e.id = hits.id "
            "JOIN neurons n ON n.id = e.neuron_id JOIN models m ON m.id = n.model_id "
            "ORDER BY hits.relevance DESC, e.score DESC NULLS LAST, e.id LIMIT :limit OFFSET :offset"
        )
    else:
        raise StorageError(f"full-text search is not supported on {dialect!r}")
    return [_row_dict(r, r.relevance) for r in session.execute(text(sql), params).all()]


class SemanticIndex:
    """Every label embedding of one database in memory, refreshed incrementally.

    A refresh first reads only ``(id, updated_at)`` of the rows stamped since shortly before the
    previous refresh (wall clock minus :attr:`OVERLAP`, so writes that commit a little after
    they were stamped are not missed), then fetches embeddings only for new or changed rows.
    Every :attr:`RECONCILE_S` seconds the whole ``(id, updated_at)`` list is compared, which
    also drops deleted labels. Checks run at most every :attr:`MIN_INTERVAL_S` seconds (default: on every search)."""

    OVERLAP = timedelta(seconds=60)
    MIN_INTERVAL_S = 0.0
    RECONCILE_S = 600.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0
        self._ids = np.zeros(0, dtype=np.int64)
        self._vecs = np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        self._model_ids = np.zeros(0, dtype=np.int32)
        self._scores = np.zeros(0, dtype=np.float32)
        self._stamps = np.zeros(0, dtype=np.float64)
        self._pos: dict[int, int] = {}
        self._since: datetime | None = None
        self._checked = 0.0
        self._reconciled = 0.0

    def __len__(self) -> int:
        return self._n

    def _grow(self, need: int) -> None:
        cap = len(self._ids)
        if need <= cap:
            return
        new_cap = max(need, cap * 2, 1024)
        for name, shape in (("_ids", ()), ("_model_ids", ()), ("_scores", ()), ("_stamps", ()),
                            ("_vecs", (EMBEDDING_DIM,))):
            old = getattr(self, name)
            arr = np.zeros((new_cap, *shape), dtype=old.dtype)
            arr[: self._n] = old[: self._n]
            setattr(self, name, arr)

    def _full_query(self):
        return (
            select(
                ExplanationRow.id,
                Neuron.model_id,
                ExplanationRow.score,
                ExplanationRow.embedding,
                ExplanationRow.updated_at,
            )
            .join(Neuron, Neuron.id == ExplanationRow.neuron_id)
            .where(ExplanationRow.embedding.is_not(None))
        )

    def refresh(self, session: Session, *, force: bool = False, batch: int = 50_000) -> int:
        """Bring the matrix up to date; returns how many labels were (re)loaded."""
        with self._lock:
            now = time.monotonic()
            if not force and self._since is not None and now - self._checked < self.MIN_INTERVAL_S:
                return 0
            started = datetime.now(timezone.utc)
            if self._since is None:
                read = 0
                result = session.execute(self._full_query().execution_options(yield_per=batch))
                for part in result.partitions(batch):
                    self._apply(part)
                    read += len(part)
                self._reconciled = now
            else:
                full = now - self._reconciled >= self.RECONCILE_S
                q = select(ExplanationRow.id, ExplanationRow.updated_at).where(ExplanationRow.embedding.is_not(None))
                if not full:
                    q = q.where(ExplanationRow.updated_at >= self._since - self.OVERLAP)
                stamps = session.execute(q).all()
                changed = [
                    r.id for r in stamps
                    if (p := self._pos.get(r.id)) is None or self._stamps[p] != _stamp(r.updated_at)
                ]
                if full:
                    alive = {r.id for r in stamps}
                    gone = [p for i, p in self._pos.items() if i not in alive]
                    self._model_ids[gone] = -1  # masked out of every search
                    self._reconciled = now
                read = 0
                for k in range(0, len(changed), 1000):
                    part = session.execute(
                        self._full_query().where(ExplanationRow.id.in_(changed[k : k + 1000]))
                    ).all()
                    self._apply(part)
                    read += len(part)
            self._since = started
            self._checked = now
            if read:
                log.debug("semantic index: %d label(s) loaded, %d in total", read, self._n)
            return read

    def _apply(self, rows) -> None:
        if not rows:
            return
        size = EMBEDDING_DIM * 4
        for r in rows:
            if len(r.embedding) != size:
                raise StorageError(
                    f"explanation {r.id}: stored embedding has {len(r.embedding)} bytes, expected {size}"
                )
        new = sum(1 for r in rows if r.id not in self._pos)
        self._grow(self._n + new)
        positions = np.empty(len(rows), dtype=np.int64)
        for j, r in enumerate(rows):
            pos = self._pos.get(r.id)
            if pos is None:
                pos = self._pos[r.id] = self._n
                self._n += 1
            positions[j] = pos
        mat = np.frombuffer(b"".join(r.embedding for r in rows), dtype="<f4").reshape(len(rows), EMBEDDING_DIM)
        self._vecs[positions] = mat
        self._ids[positions] = [r.id for r in rows]
        self._model_ids[positions] = [r.model_id for r in rows]
        self._scores[positions] = [np.nan if r.score is None else r.score for r in rows]
        self._stamps[positions] = [_stamp(r.updated_at) for r in rows]

    def top(
        self, query_vec: np.ndarray, k: int, *, model_id: int | None = None, min_score: float | None = None
    ) -> list[tuple[int, float]]:
        """``(explanation id, cosine)`` of the ``k`` most similar labels passing the filters."""
        with self._lock:
            n = self._n
            if n == 0 or k <= 0:
                return []
            sims = self._vecs[:n] @ np.asarray(query_vec, dtype=np.float32)
            if model_id is not None:
                mask = self._model_ids[:n] == model_id
            else:
                mask = self._model_ids[:n] >= 0  # deleted labels are -1
            if min_score is not None:
                with np.errstate(invalid="ignore"):
                    mask &= self._scores[:n] >= min_score
            sims = np.where(mask, sims, -np.inf)
            k = min(k, n)
            cand = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
            cand = cand[np.argsort(-sims[cand], kind="stable")]
            return [(int(self._ids[i]), float(sims[i])) for i in cand if np.isfinite(sims[i])]


def _stamp(dt: datetime) -> float:
    """A comparable number for a stored ``updated_at`` (naive values are UTC, as SQLite keeps them)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


_indexes: dict[str, SemanticIndex] = {}
_indexes_lock = threading.Lock()


def semantic_index(session: Session) -> SemanticIndex:
    """The process-wide semantic index of the session's database, refreshed."""
    key = session.get_bind().url.render_as_string(hide_password=False)
    with _indexes_lock:
        index = _indexes.setdefault(key, SemanticIndex())
    index.refresh(session)
    return index


@lru_cache(maxsize=2048)
def _query_vector(query: str) -> np.ndarray:
    """MiniLM embedding of a search query (cached: paging through results re-uses it)."""
    from neurolabel.lm.embeddings import embed

    vec = embed([query])[0]
    vec.setflags(write=False)
    return vec


def _semantic_search(
    session: Session, query: str, model: str | None, min_score: float | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    index = semantic_index(session)
    model_id = None
    if model is not None:
        model_id = session.execute(select(Model.id).where(Model.name == model)).scalar_one_or_none()
        if model_id is None:
            return []
    want = limit + offset
    hits = index.top(_query_vector(query), want, model_id=model_id, min_score=min_score)
    if not hits:
        return []
    sims = dict(hits)
    params: dict[str, Any] = {}
    where = _filters(model, min_score, params)
    ids = list(sims)
    binds = ", ".join(f":id{i}" for i in range(len(ids)))
    params.update({f"id{i}": v for i, v in enumerate(ids)})
    sql = (
        f"SELECT {_RESULT_COLUMNS} FROM explanations e "
        "JOIN neurons n ON n.id = e.neuron_id JOIN models m ON m.id = n.model_id "
        f"WHERE e.id IN ({binds}){where}"
    )
    rows = [_row_dict(r, sims[r.explanation_id]) for r in session.execute(text(sql), params).all()]
    rows.sort(key=lambda d: (-d["relevance"], d["explanation_id"]))
    return rows[offset : offset + limit]


def search_labels(
    *,
    session: Session,
    query: str,
    mode: Literal["text", "semantic"] = "text",
    model: str | None = None,
    min_score: float | None = None,
    limit: int = 20,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Labels matching ``query``, most relevant first, paginated.

    ``mode="text"``: full-text match of every query word (stemmed), ranked by BM25 (SQLite) or
    ``ts_rank_cd`` (PostgreSQL). ``mode="semantic"``: cosine similarity of MiniLM embeddings.
    Each row: explanation_id, model, layer, index, text, explainer, explainer_version, score,
    accepted, relevance."""
    if limit < 0 or offset < 0:
        raise StorageError(f"limit ({limit}) and offset ({offset}) must be >= 0")
    if not query or not query.strip():
        return []
    if mode == "text":
        return _text_search(session, query, model, min_score, limit, offset)
    if mode == "semantic":
        return _semantic_search(session, query, model, min_score, limit, offset)
    raise StorageError(f"search mode {mode!r} is not one of 'text', 'semantic'")
