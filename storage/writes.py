"""Idempotent, batched writes: models, recorded neurons with their examples, explanations with
their scores and label embeddings.

Every write is an upsert on the table's natural key (dialect ``INSERT … ON CONFLICT``), with rows
sorted by key so that concurrent writers take locks in the same order. A label's vector is computed
from its search text (:mod:`storage.search_text`: the label compacted, cut to 64 tokens), its stored text is
the whole label. Bad data raises
:class:`core.errors.StorageError` naming the record and the field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

import numpy as np
from sqlalchemy import (JSON, Column, Float, Integer, MetaData, String, Table, TypeDecorator, and_, case, delete,
                        func, or_, select, tuple_, update)
from sqlalchemy.orm import Session

from neurolabel.core.errors import StorageError
from neurolabel.core.settings import get_settings
from neurolabel.core.types import ActivationRecord, Explanation, NeuronId, NeuronRecord, NeuronStats, TokenStats, token_stats_to_json
from neurolabel.storage.models import Example, ExplanationFailure, ExplanationRow, Model, Neuron, Score, utcnow
from neurolabel.storage.search_text import search_text, search_texts

log = logging.getLogger(__name__)

try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - orjson is a dependency; the standard library writes the same values
    _orjson_dumps = None

Embedder = Callable[[Sequence[str]], np.ndarray]
"""Turns texts into normalised float32 vectors, shape ``(n, 384)``; the writes hand it labels'
search texts (:func:`storage.search_text.search_text`), so a stored vector is always
``embedder([search_text(text)])`` of its label, wherever it was computed."""
EMBEDDING_DIM = 384

_KINDS = ("top", "random", "quantile")
_SPLITS = ("explain", "score")


def dialect_insert(session: Session, table):
    """``INSERT`` with ``on_conflict_do_*`` for the session's dialect (SQLite or PostgreSQL)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise StorageError(f"database dialect {name!r} is not supported (use SQLite or PostgreSQL)")
    return insert(table)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _finite(value: Any, where: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise StorageError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(f):
        raise StorageError(f"{where}: value {f!r} is not finite")
    return f


def _record_name(model: str, layer: int, index: int) -> str:
    return f"record {model} {layer}:{index}"


def upsert_model(
    *,
    session: Session,
    name: str,
    architecture: str | None = None,
    source: str | None = None,
    unit_map: Mapping[str, Any] | None = None,
    n_layers: int | None = None,
    n_units: int | None = None,
) -> int:
    """Create or update the model ``name``; returns its id. Does not commit."""
    if not name:
        raise StorageError("model name is empty")
    values = {
        "name": name,
        "architecture": architecture,
        "source": source,
        "unit_map": dict(unit_map or {}),
        "n_layers": n_layers,
        "n_units": n_units,
        "created_at": utcnow(),
    }
    stmt = dialect_insert(session, Model).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={k: stmt.excluded[k] for k in ("architecture", "source", "unit_map", "n_layers", "n_units")},
    )
    session.execute(stmt)
    return session.execute(select(Model.id).where(Model.name == name)).scalar_one()


def ensure_models(*, session: Session, names: Iterable[str]) -> dict[str, int]:
    """Ids of the models ``names``, creating rows (name only) for unknown ones."""
    names = sorted(set(names))
    if not names:
        return {}
    for name in names:
        if not name:
            raise StorageError("model name is empty")
    stmt = dialect_insert(session, Model).on_conflict_do_nothing(index_elements=["name"])
    now = utcnow()
    existing = dict(session.execute(select(Model.name, Model.id).where(Model.name.in_(names))).all())
    missing = [n for n in names if n not in existing]
    if missing:
        session.execute(stmt, [{"name": n, "unit_map": {}, "created_at": now} for n in missing])
        existing = dict(session.execute(select(Model.name, Model.id).where(Model.name.in_(names))).all())
    return existing


def ensure_neurons(
    *, session: Session, model_id: int, keys: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], int]:
    """Ids of the neurons ``(layer, index)`` of one model, creating bare rows for unknown ones."""
    keys = sorted(set(keys))
    ids: dict[tuple[int, int], int] = {}
    for chunk in _batches(keys, 500):
        found = _neuron_ids(session, model_id, chunk)
        missing = [k for k in chunk if k not in found]
        if missing:
            stmt = dialect_insert(session, Neuron).on_conflict_do_nothing(
                index_elements=["model_id", "layer", "index"]
            )
            session.execute(stmt, [{"model_id": model_id, "layer": l, "index": i} for l, i in missing])
            found = _neuron_ids(session, model_id, chunk)
        ids.update(found)
    return ids


def _by_key(session: Session, *columns, keys: Sequence[tuple]) -> list:
    """Conditions selecting the rows whose ``columns`` equal one of ``keys`` (a row-value ``IN``).
    On SQLite an ``IN`` over the distinct values of the first column (or the first two, when the
    first is the same for all keys) comes first, which the table's unique index leads with: SQLite
    scans the whole index for a row-value ``IN`` alone (a labelling run's every write read every
    stored label, so its cost grew with the database). PostgreSQL looks row values up in the
    index already (there the extra ``IN`` only doubled the planning)."""
    keys = list(keys)
    out = [tuple_(*columns).in_(keys)]
    if session.get_bind().dialect.name != "sqlite":
        return out
    first = sorted({k[0] for k in keys})
    if len(first) == 1 and len(columns) > 1:
        out.insert(0, columns[1].in_(sorted({k[1] for k in keys})))
    out.insert(0, columns[0].in_(first))
    return out


def _neuron_ids(session: Session, model_id: int, keys: Sequence[tuple[int, int]]) -> dict:
    rows = session.execute(
        select(Neuron.layer, Neuron.index, Neuron.id).where(
            Neuron.model_id == model_id, *_by_key(session, Neuron.layer, Neuron.index, keys=keys)
        )
    ).all()
    return {(r.layer, r.index): r.id for r in rows}


# ---------------------------------------------------------------- neuron records


def stats_to_dict(stats: NeuronStats | None, where: str) -> dict[str, float] | None:
    """A validated JSON-able form of ``stats`` (``StorageError`` on non-finite values)."""
    if stats is None:
        return None
    out: dict[str, float] = {}
    for key in ("count", "mean", "std", "max", "min", "frac_active"):
        out[key] = _finite(getattr(stats, key), f"{where}: stats.{key}")
    out["count"] = int(out["count"])
    return out


def token_stats_to_dict(ts: TokenStats | None, where: str) -> dict[str, Any] | None:
    """A validated JSON-able form of ``ts`` (``StorageError`` on non-finite values)."""
    if ts is not None:
        _finite(ts.mean, f"{where}: token_stats.mean")
        for t in ts.tokens:
            _finite(t.mean, f"{where}: token_stats[{t.token!r}]")
    return token_stats_to_json(ts)


class _EncodedJSON(TypeDecorator):
    """A JSON column written with values already encoded as JSON text (:func:`_example_rows`
    encodes each window's tokens once per write and its activations with orjson): stored as given,
    read back as any JSON column (on PostgreSQL the bind still carries its ``::JSON`` cast)."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Any) -> None:
        return None


_EXAMPLES = Table(
    "examples", MetaData(),
    Column("id", Integer, primary_key=True), Column("neuron_id", Integer), Column("kind", String(16)),
    Column("position", Integer), Column("split", String(16)), Column("window_id", Integer),
    Column("quantile", Integer), Column("tokens", _EncodedJSON), Column("activations", _EncodedJSON),
    Column("max_activation", Float),
)
"""The ``examples`` table as :func:`save_neuron_records` writes it: ``storage.models.Example``'s
columns with ``tokens`` and ``activations`` bound as encoded JSON text."""


_TOKENS_MEMO_MAX = 100_000
"""Encoded windows :func:`save_neuron_records` keeps per call (a SmolLM2 layer's records share ~5,000)."""


def _dumps(value: list) -> str:
    """JSON text of a list of finite floats or of strings: orjson's (the shortest form that reads
    back to the same float, as ``json.dumps``), the standard library's for what orjson refuses
    (a lone surrogate in a token)."""
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(value).decode()
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json.dumps(value)


def _activations(window: ActivationRecord, where: str) -> tuple[str, float]:
    """The window's activations encoded as JSON, and their maximum (``StorageError`` naming the
    first value that is not a finite number)."""
    acts = window.activations
    try:
        if math.isfinite(sum(acts)) and _orjson_dumps is not None:  # one C loop: NaN or infinity make it non-finite
            return _orjson_dumps(acts).decode(), (max(acts) if acts else 0.0)
    except TypeError:  # not a number, or a number type orjson does not write (a NumPy float32)
        pass
    # name the bad value (a finite sum can also overflow: then every value passes)
    checked = [_finite(a, f"{where}: activation {i}") for i, a in enumerate(acts)]
    return _dumps(checked), (max(checked) if checked else 0.0)


def _example_rows(record: NeuronRecord, where: str, tokens_json: dict[tuple, str] | None = None
                  ) -> list[dict[str, Any]]:
    """The rows of ``record``'s windows with ``tokens`` and ``activations`` encoded as JSON text;
    ``tokens_json`` memoises a window's encoded tokens (the windows of a layer's neurons repeat)."""
    memo = {} if tokens_json is None else tokens_json
    rows = []
    for kind in _KINDS:
        for pos, window in enumerate(record.windows(kind)):
            w = f"{where}: {kind}[{pos}]"
            if not isinstance(window, ActivationRecord):
                raise StorageError(f"{w}: expected an ActivationRecord, got {type(window).__name__}")
            if len(window.tokens) != len(window.activations):
                raise StorageError(
                    f"{w}: {len(window.tokens)} tokens but {len(window.activations)} activations"
                )
            acts, top = _activations(window, w)
            if window.split not in _SPLITS:
                raise StorageError(f"{w}: split {window.split!r} is not one of {_SPLITS}")
            tokens = window.tokens
            try:
                encoded = memo.get(tokens) if isinstance(tokens, tuple) else None
            except TypeError:  # an unhashable token
                encoded = None
            if encoded is None:
                encoded = _dumps([str(t) for t in tokens])
                if isinstance(tokens, tuple):
                    if len(memo) >= _TOKENS_MEMO_MAX:
                        memo.clear()
                    try:
                        memo[tokens] = encoded
                    except TypeError:
                        pass
            rows.append(
                {
                    "kind": kind,
                    "position": pos,
                    "split": window.split,
                    "window_id": int(window.window_id),
                    "quantile": window.quantile,
                    "tokens": encoded,
                    "activations": acts,
                    "max_activation": top,
                }
            )
    return rows


def save_neuron_records(
    *,
    session: Session,
    records: Iterable[NeuronRecord],
    batch_size: int = 1000,
    commit: bool = True,
) -> int:
    """Store recorded neurons (statistics and kept windows); returns how many were written.

    Idempotent: a neuron recorded again replaces its statistics and windows. Unknown models get
    a bare row. Each batch of ``batch_size`` records is validated as a whole before any row of
    it is written; with ``commit=True`` (default) the session commits after every batch, so
    a large write never holds one long transaction. ``commit=False`` leaves committing to the
    caller (one transaction, e.g. an import)."""
    total = 0
    tokens_json: dict[tuple, str] = {}  # each window's tokens encoded once per call
    for batch in _batches(records, max(1, batch_size)):
        latest: dict[tuple[str, int, int], tuple[dict, list[dict]]] = {}
        for rec in batch:
            if not isinstance(rec, NeuronRecord):
                raise StorageError(f"expected a NeuronRecord, got {type(rec).__name__}")
            key = (rec.model, int(rec.neuron.layer), int(rec.neuron.index))
            where = _record_name(*key)
            if key[1] < 0 or key[2] < 0:
                raise StorageError(f"{where}: layer and index must be >= 0")
            latest[key] = (stats_to_dict(rec.stats, where), _example_rows(rec, where, tokens_json),
                           token_stats_to_dict(rec.token_stats, where), [str(t) for t in rec.prefix])
        model_ids = ensure_models(session=session, names={k[0] for k in latest})
        now = utcnow()
        neuron_rows = [
            {"model_id": model_ids[m], "layer": l, "index": i, "stats": latest[(m, l, i)][0],
             "token_stats": latest[(m, l, i)][2], "prefix": latest[(m, l, i)][3], "recorded_at": now}
            for (m, l, i) in sorted(latest)
        ]
        stmt = dialect_insert(session, Neuron)
        stmt = stmt.on_conflict_do_update(
            index_elements=["model_id", "layer", "index"],
            set_={"stats": stmt.excluded.stats, "token_stats": stmt.excluded.token_stats,
                  "prefix": stmt.excluded.prefix, "recorded_at": stmt.excluded.recorded_at},
        )
        session.execute(stmt, neuron_rows)
        ids: dict[tuple[str, int, int], int] = {}
        for model, mid in model_ids.items():
            keys = [(l, i) for (m, l, i) in latest if m == model]
            for chunk in _batches(keys, 500):
                for (l, i), nid in _neuron_ids(session, mid, chunk).items():
                    ids[(model, l, i)] = nid
        neuron_ids = sorted(ids.values())
        for chunk in _batches(neuron_ids, 500):
            session.execute(delete(Example).where(Example.neuron_id.in_(chunk)))
        example_rows = [
            {"neuron_id": ids[key], **row} for key in sorted(latest) for row in latest[key][1]
        ]
        if example_rows:
            ex = dialect_insert(session, _EXAMPLES)
            ex = ex.on_conflict_do_update(
                index_elements=["neuron_id", "kind", "position"],
                set_={
                    c: ex.excluded[c]
                    for c in ("split", "window_id", "quantile", "tokens", "activations", "max_activation")
                },
            )
            for chunk in _batches(example_rows, 2000):
                session.execute(ex, chunk)
        total += len(latest)
        if commit:
            session.commit()
        log.debug("stored %d neuron records (%d examples)", len(latest), len(example_rows))
    return total


# ---------------------------------------------------------------- explanations


@dataclass(frozen=True)
class ExplanationInput:
    """One explanation row as stored (used by :func:`save_explanations` and imports)."""

    model: str
    layer: int
    index: int
    explainer: str
    explainer_version: str
    rank: int
    text: str
    structured: Mapping[str, Any]
    params: Mapping[str, Any]
    score: float | None
    accepted: bool
    scores: Sequence[Mapping[str, Any]]
    """Score rows: scorer, simulator, split, score, parts, n_tokens, method."""
    embedding: bytes | None = None
    created_at: datetime | None = None
    ontology: str | None = None
    """Name of the ontology its class expressions refer to."""
    ontology_hash: str | None = None
    """Content hash of that ontology."""


class _Unclean(Exception):
    """Raised by :func:`_clean_fast` for what it leaves to :func:`_clean_slow`."""


def _clean_json(value: Any, where: str) -> Any:
    """JSON-able copy of ``value`` with non-finite floats refused (:class:`StorageError` naming
    where). Plain dicts, lists, tuples, strings, ints, bools, ``None`` and finite floats are copied
    by :func:`_clean_fast`; anything else (NumPy scalars, sets, other mappings, a non-finite float)
    sends the whole value through :func:`_clean_slow`, which copies it the same way or says where
    it fails. The same copy either way (test); on a labelling run's 915 explanations of 96 neurons
    the store stage's cleaning took ~60% of its CPU (the ABC ``isinstance`` checks and a location
    string per item) before the fast walk."""
    try:
        return _clean_fast(value)
    except _Unclean:
        return _clean_slow(value, where)


_PLAIN = frozenset({str, int, bool, type(None)})


def _clean_fast(value: Any) -> Any:
    t = type(value)
    if t in _PLAIN:
        return value
    if t is float or t is np.float64:
        f = float(value)
        if f - f != 0.0:  # inf or nan
            raise _Unclean
        return f
    if t is dict:
        return {k if type(k) is str else str(k): _clean_fast(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [_clean_fast(v) for v in value]
    raise _Unclean


def _clean_slow(value: Any, where: str) -> Any:
    """:func:`_clean_json`'s general walk, which names the place of what cannot be stored."""
    if isinstance(value, Mapping):
        return {str(k): _clean_slow(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_clean_slow(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float) or isinstance(value, np.floating):
        return _finite(value, where)
    if isinstance(value, np.integer):
        return int(value)
    raise StorageError(f"{where}: {type(value).__name__} value {value!r} cannot be stored as JSON")


def _optional_score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    f = float(value)
    if math.isnan(f):
        return None
    return _finite(f, where)


def explanation_input(explanation: Explanation, *, threshold: float) -> ExplanationInput:
    """Validate one :class:`core.Explanation` and turn it into a row to store."""
    where = (
        f"explanation {explanation.model} {explanation.neuron} "
        f"{explanation.explainer}@{explanation.explainer_version}#{explanation.rank}"
    )
    if not isinstance(explanation.text, str) or not explanation.text.strip():
        raise StorageError(f"{where}: text is empty")
    if not explanation.explainer or not explanation.explainer_version:
        raise StorageError(f"{where}: explainer and explainer_version must be set")
    scores: list[dict[str, Any]] = []
    score = None
    if explanation.score is not None:
        s = explanation.score
        score = _optional_score(s.score, f"{where}: score")
        scores.append(
            {
                "scorer": s.scorer,
                "simulator": s.simulator,
                "split": s.split,
                "score": score,
                "parts": _clean_json(
                    {k: (None if v is not None and math.isnan(float(v)) else v) for k, v in s.parts.items()},
                    f"{where}: parts",
                ),
                "n_tokens": int(s.n_tokens),
                "method": s.method or "",
            }
        )
    return ExplanationInput(
        model=explanation.model,
        layer=int(explanation.neuron.layer),
        index=int(explanation.neuron.index),
        explainer=explanation.explainer,
        explainer_version=str(explanation.explainer_version),
        rank=int(explanation.rank),
        text=explanation.text.strip(),
        structured=_clean_json(dict(explanation.structured), f"{where}: structured"),
        params=_clean_json(dict(explanation.params), f"{where}: params"),
        score=score,
        accepted=score is not None and score >= threshold,
        scores=scores,
        ontology=explanation.ontology,
        ontology_hash=explanation.ontology_hash,
    )


def _minilm(texts: Sequence[str]) -> np.ndarray:
    """MiniLM vectors of label texts (:func:`lm.embeddings.embed_labels`: bfloat16 where the CPU
    has it natively, batched by length, on one torch thread, beside the run's explaining). On 280
    labels of a run on a busy 2-core machine, batches by length on one thread spent 2.5 s of CPU
    where batches of 128 on two threads spent 13.2 s; bfloat16 in batches of 2,048 padded tokens
    then spent 2.5x less than float32 (see :mod:`lm.embeddings` for how close the vectors are)."""
    from neurolabel.lm.embeddings import embed_labels

    return embed_labels(texts)


class LabelEmbedder:
    """An :data:`Embedder` that computes each distinct label text once: vectors are kept by a
    hash of the text (at most ``max_items``, the oldest dropped first), and the texts it has not
    seen are embedded in one batch per call. Thread-safe; counts what it computed and reused
    and the seconds it spent embedding."""

    def __init__(self, embedder: Embedder = _minilm, *, max_items: int = 50_000) -> None:
        self.embedder = embedder
        self.max_items = max_items
        self.computed = 0
        self.reused = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        """CPU seconds of the embedding threads (``seconds`` is wall time: on a busy machine
        it counts the waits for a core too)."""
        self._vectors: dict[bytes, np.ndarray] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every vector and reset the counts (benchmarks that compare runs start cold)."""
        with self._lock:
            self._vectors.clear()
            self.computed = self.reused = 0
            self.seconds = self.cpu_seconds = 0.0

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_with(texts)

    def compute(self, texts: Sequence[str]) -> tuple[np.ndarray, float]:
        """``(vectors, CPU seconds)`` of ``texts`` by this embedder's model, nothing cached (what
        a labelling run's worker process does for the run's process: :meth:`embed_with`)."""
        c0 = time.thread_time()
        mat = np.asarray(self.embedder(texts), dtype=np.float32)
        return mat, time.thread_time() - c0

    def embed_with(self, texts: Sequence[str],
                   compute: Callable[[Sequence[str]], tuple[np.ndarray, float]] | None = None) -> np.ndarray:
        """Vectors of ``texts``, the ones not cached computed by ``compute`` (default
        :meth:`compute` in this thread), which returns them with the CPU seconds they took."""
        keys = [self._key(t) for t in texts]
        with self._lock:
            have = {k: self._vectors[k] for k in keys if k in self._vectors}
        need = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in have))
        if need:
            t0 = time.perf_counter()
            mat, cpu = (compute or self.compute)(need)
            mat = np.asarray(mat, dtype=np.float32)
            if mat.shape != (len(need), EMBEDDING_DIM):
                raise StorageError(f"embedder returned shape {mat.shape} for {len(need)} texts, "
                                   f"expected ({len(need)}, {EMBEDDING_DIM})")
            fresh = {self._key(t): v for t, v in zip(need, mat)}
            have.update(fresh)
            with self._lock:
                self.seconds += time.perf_counter() - t0
                self.cpu_seconds += cpu
                self.computed += len(need)
                self._vectors.update(fresh)
                while len(self._vectors) > self.max_items:
                    del self._vectors[next(iter(self._vectors))]
        with self._lock:
            self.reused += len(texts) - len(need)
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.stack([have[k] for k in keys])


_label_embedder: list[LabelEmbedder] = []
_label_embedder_lock = threading.Lock()


def label_embedder() -> LabelEmbedder:
    """The process-wide MiniLM :class:`LabelEmbedder` (the default of every write)."""
    with _label_embedder_lock:
        if not _label_embedder:
            _label_embedder.append(LabelEmbedder())
        return _label_embedder[0]


def embedding_bytes(vector: np.ndarray) -> bytes:
    """How a label embedding is stored: little-endian float32."""
    return np.asarray(vector, dtype="<f4").tobytes()


EMBED_POLICIES = ("best", "accepted", "all", "none")
"""Which stored labels get a vector (semantic search finds only those; full-text search finds all):

- ``best`` (default): per neuron and explainer version, one label: the explainer's best-scored
  candidate (highest score, then lowest rank; with no score at all, the first candidate), the
  label the neuron page shows for that explainer;
- ``accepted``: per neuron and explainer version, the first candidate (lowest rank), the
  best-scored one and every accepted one (the default before: more vectors, more embedding);
- ``all``: every label;
- ``none``: none at write time (``neurolabel db reindex`` gives the ``best`` ones theirs later).

A vector once stored is kept while the text stays the same (a label that stops being best keeps
it); a label that becomes best (or, with ``accepted``, accepted) later (re-scoring, a rerun) gets
its vector in the write that makes it so, or from ``neurolabel db reindex``."""


def check_embed_policy(embed: str) -> str:
    """``embed`` if it is one of :data:`EMBED_POLICIES` (``StorageError`` otherwise)."""
    if embed not in EMBED_POLICIES:
        raise StorageError(f"embed policy {embed!r} is not one of {', '.join(EMBED_POLICIES)}")
    return embed


def policy_rows(*conditions, embed: str = "best"):
    """(``SELECT id, text, missing, wanted``, its subquery, the ``wanted`` condition) over the
    explanation rows matching ``conditions``: ``missing`` = no vector stored, ``wanted`` = the
    policy ``embed`` gives it a vector (ranked within each (neuron, explainer, explainer version)
    by window functions, SQLite and PostgreSQL; ``none`` wants what ``best`` wants, as
    ``db reindex`` fills it in later)."""
    from sqlalchemy import literal

    check_embed_policy(embed)
    group = (ExplanationRow.neuron_id, ExplanationRow.explainer, ExplanationRow.explainer_version)
    by_rank = func.row_number().over(partition_by=group, order_by=(ExplanationRow.rank, ExplanationRow.id))
    by_score = func.row_number().over(
        partition_by=group,
        order_by=(case((ExplanationRow.score.is_(None), 1), else_=0), ExplanationRow.score.desc(),
                  ExplanationRow.rank, ExplanationRow.id))
    inner = select(ExplanationRow.id, ExplanationRow.text, ExplanationRow.accepted,
                   ExplanationRow.embedding.is_(None).label("missing"),
                   by_rank.label("by_rank"), by_score.label("by_score"))
    if conditions:
        inner = inner.where(*conditions)
    sub = inner.subquery()
    if embed == "all":
        wanted = literal(True)
    elif embed == "accepted":
        wanted = or_(sub.c.accepted, sub.c.by_rank == 1, sub.c.by_score == 1)
    else:
        wanted = sub.c.by_score == 1
    return select(sub.c.id, sub.c.text, sub.c.missing, wanted.label("wanted")), sub, wanted


def fill_vectors(*, session: Session, embed: str = "best", conditions: Sequence[Any] = (),
                 embedder: Embedder | None = None, when: datetime | None = None) -> list[int]:
    """Store the vectors that the policy ``embed`` wants and that are missing, among the rows
    matching ``conditions`` (their ``updated_at`` becomes ``when``, default now). Returns the
    ids given a vector. Does not commit."""
    check_embed_policy(embed)
    if embed == "none":
        return []
    q, sub, wanted = policy_rows(*conditions, embed=embed)
    q = q.where(sub.c.missing)
    if embed != "all":
        q = q.where(wanted)
    todo = [(r.id, r.text) for r in session.execute(q).all()]
    if not todo:
        return []
    when = when or utcnow()
    by_text: dict[str, list[int]] = {}  # search text -> ids
    for (i, _), said in zip(todo, search_texts([t for _, t in todo]), strict=True):
        by_text.setdefault(said, []).append(i)
    for texts in _batches(sorted(by_text), 4096):  # a whole database's worth in bounded batches
        mat = (embedder or label_embedder())(texts)
        if mat.shape[0] != len(texts):
            raise StorageError(f"embedder returned {mat.shape[0]} vectors for {len(texts)} texts")
        values = [{"id": i, "embedding": embedding_bytes(v), "updated_at": when}
                  for t, v in zip(texts, mat, strict=True) for i in by_text[t]]
        for chunk in _batches(sorted(values, key=lambda d: d["id"]), 1000):
            session.execute(update(ExplanationRow), chunk)
    return [i for i, _ in todo]


def recompute_vectors(*, session: Session, embedder: Embedder | None = None, when: datetime | None = None) -> int:
    """Recompute every stored label vector from its label's :func:`search_text` (vectors stored
    before the search-text rule were computed from the whole label); their ``updated_at`` becomes
    ``when`` (default now). Returns how many were rewritten. Does not commit."""
    rows = session.execute(select(ExplanationRow.id, ExplanationRow.text)
                           .where(ExplanationRow.embedding.is_not(None))).all()
    if not rows:
        return 0
    when = when or utcnow()
    by_text: dict[str, list[int]] = {}
    for (i, _), said in zip(rows, search_texts([t for _, t in rows]), strict=True):
        by_text.setdefault(said, []).append(i)
    for texts in _batches(sorted(by_text), 4096):
        mat = (embedder or label_embedder())(texts)
        if mat.shape[0] != len(texts):
            raise StorageError(f"embedder returned {mat.shape[0]} vectors for {len(texts)} texts")
        values = [{"id": i, "embedding": embedding_bytes(v), "updated_at": when}
                  for t, v in zip(texts, mat, strict=True) for i in by_text[t]]
        for chunk in _batches(sorted(values, key=lambda d: d["id"]), 1000):
            session.execute(update(ExplanationRow), chunk)
    return len(rows)


def save_explanations(
    *,
    session: Session,
    explanations: Sequence[Explanation],
    threshold: float | None = None,
    embedder: Embedder | None = None,
    embed: str = "best",
    late_embedder: Embedder | None = None,
) -> list[int]:
    """Store explanations with their scores and label embeddings; returns their ids in order.

    Idempotent on (neuron, explainer, explainer_version, rank): storing again replaces text,
    structure, parameters and score of the same key; a new explainer version adds rows and keeps
    the old ones. ``Explanation.score`` becomes a Score row (with its parts); ``accepted`` means
    score >= ``threshold`` (default ``settings.score_threshold``). Label vectors as the policy
    ``embed`` says (:data:`EMBED_POLICIES`). Missing models and neurons get bare rows. Does not
    commit."""
    if threshold is None:
        threshold = get_settings().score_threshold
    rows = [explanation_input(e, threshold=threshold) for e in explanations]
    return write_explanation_rows(session=session, rows=rows, embedder=embedder, embed=embed,
                                  late_embedder=late_embedder)


def write_explanation_rows(
    *, session: Session, rows: Sequence[ExplanationInput], embedder: Embedder | None = None, embed: str = "best",
    late_embedder: Embedder | None = None,
) -> list[int]:
    """Upsert validated explanation rows; rows without a given vector keep their stored one
    while their text is unchanged, and the vectors the policy ``embed`` wants among the written
    rows' (neuron, explainer, explainer version) groups are computed: those the written rows alone
    make best, before the first statement (by ``embedder``); those that only the rows already
    stored make best, e.g. an older candidate that is now the best-scored one, within the
    transaction (:func:`fill_vectors`, by ``late_embedder``, default ``embedder``: a labelling
    run with worker processes passes one that computes in this process, since its workers wait
    for a SQLite transaction). Does not commit."""
    check_embed_policy(embed)
    if not rows:
        return []
    # the vectors the policy wants within this write, computed before its first statement (a
    # SQLite transaction holds the write lock from its start; worker processes wait for it)
    rows = _embed_wanted(rows, embed, embedder)
    model_ids = ensure_models(session=session, names={r.model for r in rows})
    neuron_ids: dict[tuple[str, int, int], int] = {}
    for model, mid in model_ids.items():
        got = ensure_neurons(session=session, model_id=mid, keys=[(r.layer, r.index) for r in rows if r.model == model])
        neuron_ids.update({(model, l, i): nid for (l, i), nid in got.items()})

    def key(r: ExplanationInput) -> tuple:
        return (neuron_ids[(r.model, r.layer, r.index)], r.explainer, r.explainer_version, r.rank)

    latest = {key(r): r for r in rows}
    keys = sorted(latest)
    had_vector: set[tuple] = set()  # rows the index may hold: a new text without a vector leaves it
    for chunk in _batches(keys, 500):
        had_vector.update(tuple(f) for f in session.execute(
            select(ExplanationRow.neuron_id, ExplanationRow.explainer, ExplanationRow.explainer_version,
                   ExplanationRow.rank).where(
                ExplanationRow.embedding.is_not(None),
                *_by_key(session, ExplanationRow.neuron_id, ExplanationRow.explainer, ExplanationRow.explainer_version,
                         ExplanationRow.rank, keys=chunk))).all())
    now = utcnow()
    values = [
        {
            "neuron_id": k[0],
            "explainer": k[1],
            "explainer_version": k[2],
            "rank": k[3],
            "text": r.text,
            "structured": dict(r.structured),
            "params": dict(r.params),
            "score": r.score,
            "accepted": bool(r.accepted),
            "score_se": _score_se(r),
            "fit_tokens": _fit_tokens(r),
            "embedding": r.embedding,
            "ontology": r.ontology,
            "ontology_hash": r.ontology_hash,
            "created_at": r.created_at or now,
            "updated_at": now,
        }
        for k, r in sorted(latest.items())
    ]
    stmt = dialect_insert(session, ExplanationRow)
    table = ExplanationRow.__table__
    keep = and_(stmt.excluded.embedding.is_(None), table.c.text == stmt.excluded.text)
    stmt = stmt.on_conflict_do_update(
        index_elements=["neuron_id", "explainer", "explainer_version", "rank"],
        set_={
            **{c: stmt.excluded[c]
               for c in ("text", "structured", "params", "score", "accepted", "score_se", "fit_tokens", "ontology",
                         "ontology_hash", "updated_at")},
            "embedding": case((keep, table.c.embedding), else_=stmt.excluded.embedding),
        },
    )
    for chunk in _batches(values, 1000):
        session.execute(stmt, chunk)
    ids: dict[tuple, int] = {}
    for chunk in _batches(keys, 500):
        found = session.execute(
            select(
                ExplanationRow.neuron_id,
                ExplanationRow.explainer,
                ExplanationRow.explainer_version,
                ExplanationRow.rank,
                ExplanationRow.id,
            ).where(
                *_by_key(session, ExplanationRow.neuron_id, ExplanationRow.explainer, ExplanationRow.explainer_version,
                         ExplanationRow.rank, keys=chunk)
            )
        ).all()
        ids.update({tuple(f[:4]): f[4] for f in found})
    score_rows = []
    unscored = []
    for k, r in sorted(latest.items()):
        if not r.scores:
            unscored.append(ids[k])
        for s in r.scores:
            score_rows.append({"explanation_id": ids[k], "created_at": now, **dict(s)})
    for chunk in _batches(unscored, 500):
        session.execute(delete(Score).where(Score.explanation_id.in_(chunk)))
    if score_rows:
        sc = dialect_insert(session, Score)
        sc = sc.on_conflict_do_update(
            index_elements=["explanation_id", "scorer", "simulator", "split"],
            set_={c: sc.excluded[c] for c in ("score", "parts", "n_tokens", "method", "created_at")},
        )
        for chunk in _batches(score_rows, 1000):
            session.execute(sc, chunk)
    groups = sorted({k[:3] for k in latest})
    filled: list[int] = []
    for chunk in _batches(groups, 500):
        filled += fill_vectors(session=session, embed=embed, embedder=late_embedder or embedder, when=now, conditions=
                               _by_key(session, ExplanationRow.neuron_id, ExplanationRow.explainer,
                                       ExplanationRow.explainer_version, keys=chunk))
    _queue_for_index(session, sorted(set(ids.values()) | set(filled)), [ids[k] for k in had_vector], now)
    select_labels(session=session, neuron_ids=sorted({k[0] for k in latest}))
    # an explainer version that now explained a neuron has no failure to remember there
    done = sorted({k[:3] for k in latest})
    for chunk in _batches(done, 500):
        session.execute(delete(ExplanationFailure).where(
            *_by_key(session, ExplanationFailure.neuron_id, ExplanationFailure.explainer,
                     ExplanationFailure.explainer_version, keys=chunk)))
    return [ids[key(r)] for r in rows]


def _score_se(r: ExplanationInput) -> float | None:
    """The ``se`` part of the row's main score (the Score row whose score is the row's)."""
    main = next((s for s in r.scores if s.get("score") == r.score), r.scores[0] if r.scores else None)
    se = (main or {}).get("parts", {}).get("se") if main else None
    return None if se is None else _optional_score(se, "score se")


def _fit_tokens(r: ExplanationInput) -> int | None:
    fit = r.structured.get("fit_tokens") if isinstance(r.structured, Mapping) else None
    return int(fit) if isinstance(fit, (int, float)) and not isinstance(fit, bool) and fit >= 0 else None


def select_labels(*, session: Session, neuron_ids: Sequence[int]) -> int:
    """Mark each neuron's label (``ExplanationRow.selected``): of its accepted explanations, the
    one :func:`scoring.validate.choose_label` picks from the stored scores, standard errors and
    fitted token counts; every other row of the neuron unmarked. Only rows whose mark changes
    are written (``updated_at`` untouched: the write that caused the change already moved it).
    Returns how many rows changed. Does not commit."""
    from neurolabel.scoring.validate import LabelCandidate, choose_label

    changed = 0
    for chunk in _batches(list(neuron_ids), 500):
        rows = session.execute(
            select(ExplanationRow.id, ExplanationRow.neuron_id, ExplanationRow.explainer,
                   ExplanationRow.explainer_version, ExplanationRow.rank, ExplanationRow.score,
                   ExplanationRow.score_se, ExplanationRow.fit_tokens, ExplanationRow.accepted,
                   ExplanationRow.selected)
            .where(ExplanationRow.neuron_id.in_(chunk),
                   or_(ExplanationRow.selected, and_(ExplanationRow.accepted, ExplanationRow.score.is_not(None))))
            .order_by(ExplanationRow.neuron_id, ExplanationRow.id)
        ).all()
        by_neuron: dict[int, list] = {}
        for r in rows:
            by_neuron.setdefault(r.neuron_id, []).append(r)
        on: list[int] = []
        off: list[int] = []
        for members in by_neuron.values():
            pool = [r for r in members if r.accepted and r.score is not None]
            chosen_at = choose_label([LabelCandidate(r.score, r.score_se, r.fit_tokens,
                                                     (r.explainer, r.explainer_version), r.id) for r in pool])
            chosen = pool[chosen_at].id if chosen_at is not None else None
            for r in members:
                if r.id == chosen and not r.selected:
                    on.append(r.id)
                elif r.id != chosen and r.selected:
                    off.append(r.id)
        for ids, flag in ((off, False), (on, True)):
            for part in _batches(ids, 500):
                session.execute(update(ExplanationRow).where(ExplanationRow.id.in_(part)).values(selected=flag))
        changed += len(on) + len(off)
    return changed


def _wanted_in(rows: Sequence[ExplanationInput], embed: str = "best") -> set[int]:
    """Positions in ``rows`` that the policy ``embed`` (``best`` or ``accepted``) embeds, judged
    within ``rows`` alone (a writer stores all candidates of a neuron's explainer together;
    :func:`fill_vectors` then settles it against the database): per (neuron, explainer, version)
    the best score (then the lowest rank); with ``accepted`` also the lowest rank and every
    accepted row."""
    groups: dict[tuple, list[int]] = {}
    for j, r in enumerate(rows):
        groups.setdefault((r.model, r.layer, r.index, r.explainer, r.explainer_version), []).append(j)
    want: set[int] = set()
    for members in groups.values():
        want.add(min(members, key=lambda j: (rows[j].score is None, -(rows[j].score or 0.0), rows[j].rank)))
        if embed == "accepted":
            want.add(min(members, key=lambda j: rows[j].rank))
            want.update(j for j in members if rows[j].accepted)
    return want


def _embed_wanted(rows: Sequence[ExplanationInput], embed: str, embedder: Embedder | None) -> list[ExplanationInput]:
    """``rows`` with the vectors the policy ``embed`` wants among them (those given none)."""
    from dataclasses import replace

    if embed == "none":
        return list(rows)
    picked = range(len(rows)) if embed == "all" else _wanted_in(rows, embed)
    texts = sorted({rows[j].text for j in picked if rows[j].embedding is None})
    said = dict(zip(texts, search_texts(texts), strict=True))
    need = sorted(set(said.values()))
    if not need:
        return list(rows)
    mat = (embedder or label_embedder())(need)
    if mat.shape[0] != len(need):
        raise StorageError(f"embedder returned {mat.shape[0]} vectors for {len(need)} texts")
    by_search = {t: embedding_bytes(v) for t, v in zip(need, mat, strict=True)}
    vectors = {t: by_search[s] for t, s in said.items()}
    out = list(rows)
    for j in picked:
        if out[j].embedding is None:
            out[j] = replace(out[j], embedding=vectors[out[j].text])
    return out


def _queue_for_index(session: Session, ids: Sequence[int], had_vector: Sequence[int], now: datetime) -> None:
    """Hand the written labels ``ids`` to the persisted vector index (appended once the session
    commits): those with a vector as stored now, and a deletion for those of ``had_vector`` (a
    vector before the write) that have none now (a new text the policy leaves without one)."""
    from neurolabel.storage import label_index, vector_index

    folder = vector_index.index_location(session.get_bind().url.render_as_string(hide_password=False))
    if folder is None:
        return
    have = label_index.fetch_labels(session, list(ids))
    kept = set(have["id"].tolist())
    gone = label_index.tombstones(sorted(i for i in had_vector if i not in kept), label_index.stamp(now))
    label_index.queue_written(session, folder, np.concatenate([have, gone]))


def record_failures(*, session: Session, model: str, failures: Iterable[tuple[NeuronId, str, str, str]]) -> int:
    """Remember failed explanation attempts ``(neuron, explainer, explainer version, error)`` of
    ``model``: a new row, or the error replaced and ``attempts`` increased on a repeat. Does not
    commit. Returns how many were written."""
    latest = {(n.layer, n.index, tag, version): str(error)[:4000] for n, tag, version, error in failures}
    if not latest:
        return 0
    mid = ensure_models(session=session, names=[model])[model]
    nids = ensure_neurons(session=session, model_id=mid, keys=[(l, i) for l, i, _, _ in latest])
    now = utcnow()
    values = [
        {"neuron_id": nids[(l, i)], "explainer": tag, "explainer_version": version, "error": error,
         "attempts": 1, "first_at": now, "last_at": now}
        for (l, i, tag, version), error in sorted(latest.items())
    ]
    stmt = dialect_insert(session, ExplanationFailure)
    stmt = stmt.on_conflict_do_update(
        index_elements=["neuron_id", "explainer", "explainer_version"],
        set_={"error": stmt.excluded.error, "last_at": stmt.excluded.last_at,
              "attempts": ExplanationFailure.attempts + 1},
    )
    for chunk in _batches(values, 1000):
        session.execute(stmt, chunk)
    return len(values)
