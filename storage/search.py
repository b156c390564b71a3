"""Label search: full text (SQLite FTS5 / PostgreSQL ``tsvector``) and by meaning (cosine
similarity of all-MiniLM-L6-v2 embeddings stored with each label).

Semantic search ranks by an HNSW index of the label embeddings (:mod:`storage.vector_index`,
persisted beside the database and kept in step with it by :class:`SemanticIndex`); filters
apply while the graph is walked, and a filter that keeps few labels is ranked exactly. No
database connection is held while ranking.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, TextClause, bindparam, select, text
from sqlalchemy.orm import Session

from neurolabel.core.errors import StorageError
from neurolabel.storage import label_index
from neurolabel.storage import vector_index as vi
from neurolabel.storage.query_embedder import QueryEmbedder
from neurolabel.storage.models import Model
from neurolabel.storage.vector_index import LabelIndex

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


@dataclass(frozen=True)
class _Filter:
    """What a search keeps: labels of one model, one layer, one explainer, scoring at least."""

    model: str | None = None
    layer: int | None = None
    explainer: str | None = None
    min_score: float | None = None

    def sql(self, params: dict[str, Any]) -> str:
        """``AND …`` conditions over ``e`` (explanations), ``n`` (neurons), ``m`` (models)."""
        sql = ""
        if self.model is not None:
            sql += " AND m.name = :model"
            params["model"] = self.model
        if self.layer is not None:
            sql += " AND n.layer = :layer"
            params["layer"] = int(self.layer)
        if self.explainer is not None:
            sql += " AND e.explainer = :explainer"
            params["explainer"] = self.explainer
        if self.min_score is not None:
            sql += " AND e.score >= :min_score"
            params["min_score"] = float(self.min_score)
        return sql


_MODEL_ID = select(Model.id).where(Model.name == bindparam("name"))


@lru_cache(maxsize=256)
def _statement(sql: str, expanding: str | None = None) -> TextClause:
    """The statement of a search's SQL text, made once per text (a search's text depends on its
    filters and the database only), run on the session's connection; before, each search parsed
    its text for parameters (one per hit id in a semantic search) and ran it through the ORM
    session. Per search on PostgreSQL, one thread, two alternations (loaded): text 0.59-0.60 ->
    0.48-0.60 ms CPU, semantic 0.99-1.13 -> 0.85-0.89, semantic within a model 1.96-2.21 ->
    1.29-1.38. ``expanding``: the parameter that takes a list (``IN :ids``)."""
    statement = text(sql)
    return statement.bindparams(bindparam(expanding, expanding=True)) if expanding else statement


def _connection(session: Session) -> Connection:
    """The session's connection, after flushing what the session holds unflushed (as
    ``session.execute`` would)."""
    if session.new or session.dirty or session.deleted:
        session.flush()
    return session.connection()


def _text_search(session: Session, query: str, f: _Filter, limit: int, offset: int) -> list[dict[str, Any]]:
    words = _WORD.findall(query.lower())
    if not words:
        return []
    dialect = session.get_bind().dialect.name
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    where = f.sql(params)
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
            "JOIN neurons n ON n.id = e.neuron_id JOIN models m ON m.id = n.model_id "
            if f.model is not None or f.layer is not None else ""
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
    return [_row_dict(r, r.relevance) for r in _connection(session).execute(_statement(sql), params).all()]


class SemanticIndex:
    """The label vector index of one database in this process, kept in step with the database.

    The first refresh loads the persisted index (:func:`storage.vector_index.index_location`)
    and compares every label's ``updated_at`` with the database (reading only what differs), or
    builds the index from the database when none was persisted (and persists it when it holds
    at least :attr:`PERSIST_MIN` labels).

    Afterwards, with a persisted index, every refresh reads the records that writers appended to
    the index log since the last one (one ``stat`` call when there are none), and at most every
    :attr:`RECHECK_S` seconds one request also checks the database: the ``(id, updated_at)`` of
    the rows stamped since shortly before the previous check (wall clock minus
    :data:`storage.vector_index.OVERLAP`), fetching embeddings only for new or changed rows. That
    check finds what the log lacks (a writer killed between its commit and its log append, a
    writer that keeps its index elsewhere) within :attr:`RECHECK_S` seconds; meanwhile other
    requests search the index as it is instead of waiting for it. Without a persisted index (an
    in-memory database) the database is checked on every refresh (at most every
    :attr:`MIN_INTERVAL_S` seconds), and waited for. Every :attr:`RECONCILE_S` seconds the whole
    list is compared, which also drops deleted labels."""

    MIN_INTERVAL_S = 0.0
    RECHECK_S = 5.0
    RECONCILE_S = 600.0
    PERSIST_MIN = 10_000

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        """Held while loading and while checking the database."""
        self._log_lock = threading.Lock()
        """Held while reading the log's new records."""
        self.index: LabelIndex | None = None
        self._since: float | None = None
        self._checked = 0.0
        self._reconciled = 0.0
        self._log_at: vi.LogPosition | None = None

    def __len__(self) -> int:
        return 0 if self.index is None else len(self.index)

    def _load(self, session: Session) -> None:
        try:
            snap = vi.load(self.folder) if self.folder is not None else None
        except StorageError as exc:  # searches go on from the database; reindex --full mends the files
            log.error("%s", exc)
            snap = None
        if snap is not None and snap.watermark is not None:
            self.index, self._log_at = snap.index, snap.log_position
            read, gone = label_index.sync(self.index, session, since=None)
            if read or gone:
                log.warning("label index %s: %d label(s) missing or stale, %d deleted in the database: "
                            "read from the database (`neurolabel db reindex` writes them back)",
                            self.folder, read, gone)
            return
        if self.folder is not None:  # the log's end before the database is read: later records are new
            self._log_at = vi.log_end(self.folder)
        watermark = datetime.now(timezone.utc).timestamp()
        index = label_index.build(session)
        if self.folder is not None and len(index) >= self.PERSIST_MIN:
            vi.save(self.folder, index, watermark=watermark)
        self.index = index

    def refresh(self, session: Session, *, force: bool = False) -> int:
        """Bring the index up to date (see the class docstring); returns how many labels were
        (re)read. ``force``: check the database now, waiting for a check under way."""
        if self.index is None or self.folder is None or force:
            return self._check(session, wait=True, force=force)
        read = self._read_log()
        if time.monotonic() - self._checked >= self.RECHECK_S:
            read += self._check(session, wait=False, force=False)
        return read

    def _read_log(self) -> int:
        """Apply the records appended to the persisted log since the last read."""
        with self._log_lock:
            records, self._log_at = vi.read_log_since(self.folder, self._log_at)
            return self.index.apply(records) if len(records) else 0

    def _check(self, session: Session, *, wait: bool, force: bool) -> int:
        """Load the index, or compare it with the database (``wait=False``: not when another
        request is doing so)."""
        if not self._lock.acquire(blocking=wait):
            return 0
        try:
            now = time.monotonic()
            interval = self.MIN_INTERVAL_S if self.folder is None else self.RECHECK_S
            if not force and self.index is not None and now - self._checked < interval:
                return 0
            started = datetime.now(timezone.utc).timestamp()
            read = 0
            if self.index is None:
                self._load(session)
                self._reconciled = now
                read = len(self.index)
            else:
                if self.folder is not None:
                    read += self._read_log()
                full = now - self._reconciled >= self.RECONCILE_S
                read += label_index.sync(self.index, session, since=None if full else self._since)[0]
                if full:
                    self._reconciled = now
            self._since = started
            self._checked = now
            if read:
                log.debug("semantic index: %d label(s) read, %d in total", read, len(self.index))
            return read
        finally:
            self._lock.release()

    def top(
        self, query_vec: np.ndarray, k: int, *, model_id: int | None = None, layer: int | None = None,
        explainer: str | None = None, min_score: float | None = None, exact: bool = False,
    ) -> list[tuple[int, float]]:
        """``(explanation id, cosine)`` of the ``k`` most similar labels passing the filters."""
        if self.index is None:
            return []
        return self.index.search(query_vec, k, model_id=model_id, layer=layer, explainer=explainer,
                                 min_score=min_score, exact=exact)


_indexes: dict[str, SemanticIndex] = {}
_indexes_lock = threading.Lock()


def semantic_index(session: Session) -> SemanticIndex:
    """The process-wide semantic index of the session's database, refreshed."""
    url = session.get_bind().url.render_as_string(hide_password=False)
    with _indexes_lock:
        index = _indexes.get(url)
        if index is None:
            index = _indexes[url] = SemanticIndex(vi.index_location(url))
    index.refresh(session)
    return index


def _embed(texts: list[str]) -> np.ndarray:
    """Queries in float32: for one short text, bfloat16 autocast costs more than it saves (its
    weight copies are made per call: 20 vs 14 ms CPU on one thread); the vectors match labels
    embedded in bfloat16 to cosine >= 0.9999 (:mod:`lm.embeddings`)."""
    from neurolabel.lm.embeddings import embed

    return embed(texts)


_query_embedder = QueryEmbedder(_embed)


def _query_vector(query: str) -> np.ndarray:
    """MiniLM embedding of a search query: cached (paging through results re-uses it), computed
    once however many requests ask for it at once, batched across concurrent requests."""
    return _query_embedder(query)


def _release(session: Session) -> None:
    """End the session's read transaction so that its connection goes back to the pool (not
    when the caller has unflushed changes or a savepoint open)."""
    if not (session.new or session.dirty or session.deleted or session.in_nested_transaction()):
        session.commit()


def _semantic_search(session: Session, query: str, f: _Filter, limit: int, offset: int,
                     exact: bool) -> list[dict[str, Any]]:
    vec = _query_vector(query)  # before touching the database: the first call loads MiniLM
    index = semantic_index(session)
    model_id = None
    if f.model is not None:
        model_id = _connection(session).execute(_MODEL_ID, {"name": f.model}).scalar_one_or_none()
        if model_id is None:
            return []
    _release(session)  # no connection is held while ranking
    hits = index.top(vec, limit + offset, model_id=model_id, layer=f.layer, explainer=f.explainer,
                     min_score=f.min_score, exact=exact)
    if not hits:
        return []
    sims = dict(hits)
    params: dict[str, Any] = {"ids": list(sims)}
    where = f.sql(params)
    sql = (
        f"SELECT {_RESULT_COLUMNS} FROM explanations e "
        "JOIN neurons n ON n.id = e.neuron_id JOIN models m ON m.id = n.model_id "
        f"WHERE e.id IN :ids{where}"
    )
    rows = [_row_dict(r, sims[r.explanation_id])
            for r in _connection(session).execute(_statement(sql, expanding="ids"), params).all()]
    rows.sort(key=lambda d: (-d["relevance"], d["explanation_id"]))
    return rows[offset : offset + limit]


def search_labels(
    *,
    session: Session,
    query: str,
    mode: Literal["text", "semantic"] = "text",
    model: str | None = None,
    layer: int | None = None,
    explainer: str | None = None,
    min_score: float | None = None,
    limit: int = 20,
    offset: int = 0,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """Labels matching ``query``, most relevant first, paginated; filtered (before ranking) by
    model, layer, explainer and minimum score.

    ``mode="text"``: full-text match of every query word (stemmed), ranked by BM25 (SQLite) or
    ``ts_rank_cd`` (PostgreSQL). ``mode="semantic"``: cosine similarity of MiniLM embeddings,
    from the HNSW index (approximate; ``exact=True`` ranks every label that passes the filters).
    Each row: explanation_id, model, layer, index, text, explainer, explainer_version, score,
    accepted, relevance."""
    if limit < 0 or offset < 0:
        raise StorageError(f"limit ({limit}) and offset ({offset}) must be >= 0")
    if not query or not query.strip():
        return []
    f = _Filter(model=model, layer=layer, explainer=explainer, min_score=min_score)
    if mode == "text":
        return _text_search(session, query, f, limit, offset)
    if mode == "semantic":
        return _semantic_search(session, query, f, limit, offset, exact)
    raise StorageError(f"search mode {mode!r} is not one of 'text', 'semantic'")
