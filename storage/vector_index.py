"""The approximate-nearest-neighbour index of label embeddings (faiss HNSW, inner product on
normalised MiniLM vectors), kept in memory and persisted beside the database.

On disk (see :func:`index_location`) a folder holds

- a **base snapshot** ``base-<generation>/`` (``index.faiss`` + ``meta.npz``: per position the
  label id, its ``updated_at`` stamp, model id, layer, explainer hash and score), named by the
  file ``CURRENT`` (switched by an atomic rename) and stamped with a *watermark*: the database
  time before the snapshot was read;
- an append-only **log** ``log.bin`` of fixed-size :data:`RECORD` rows that writers append
  after their transaction commits (:func:`append_records`, under an exclusive ``flock``).

The database stays the truth. Readers load base + log, then fetch from the database every label
whose ``updated_at`` is at or after the watermark (minus :data:`OVERLAP`) and whose stamp the
index does not have; afterwards they read the log's new records before each search
(:func:`read_log_since`: one ``stat`` when there are none) and check the database every few
seconds (:class:`storage.search.SemanticIndex`). A writer killed between its commit and its log
append (a crash) therefore leaves labels that every reader still finds (a running one within a
few seconds), that :func:`check_index` reports and that ``neurolabel db reindex``
(:func:`reindex`) writes back. Filters (model, layer, explainer,
minimum score) are a bitmap that faiss applies while it walks the graph; a filter that keeps
few labels (:data:`EXACT_ROWS`) is answered exactly over the kept vectors.

faiss was chosen by measurement (``bench/ann_libraries.py``, 10⁵ MiniLM-like labels, this
2-core machine under load): faiss HNSW (M 32, ef 128) built in 24 s with recall@10 0.958 and a
0.36 ms median query; usearch (f16, connectivity 16, ef 128) took 105 s to build for recall@10
0.973 and a 0.52 ms median. faiss is also the one whose Python API filters during the graph
walk (``IDSelectorBitmap``) instead of after a truncated candidate list (usearch 2.26 has no
filter predicate in Python), and it exposes its stored vectors for the exact fallback.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from neurolabel.core.errors import StorageError

log = logging.getLogger(__name__)

DIM = 384
"""Dimension of the label embeddings (all-MiniLM-L6-v2)."""
M = 32
"""HNSW graph degree."""
EF_CONSTRUCTION = 64
EF_SEARCH = 1024
"""Candidates kept while searching without a filter. Measured on MiniLM-like labels
(``bench/storage.py``, 10⁶ labels, PostgreSQL, this 2-core machine): ef 128 gave recall@10 0.884,
ef 512 0.938 at a 2.6 ms median / 3.4 ms p99 ranking; at 2·10⁵, ef 128 / 256 / 512 / 1024 gave
0.895 / 0.944 / 0.972 / 0.987."""
EF_MAX = 4096
EXACT_ROWS = 50_000
"""A search whose filters keep at most this many labels is answered exactly (a dot product over
just those vectors): cheaper than a graph walk that must skip almost every node."""
OVERLAP = timedelta(seconds=60)
"""Writes stamped this long before a watermark are re-checked (a transaction commits a little
after it stamps ``updated_at``)."""

RECORD = np.dtype([
    ("id", "<i8"),
    ("stamp", "<f8"),
    ("model_id", "<i4"),
    ("layer", "<i4"),
    ("explainer", "<u4"),
    ("score", "<f4"),
    ("deleted", "u1"),
    ("vec", "<f4", (DIM,)),
])
"""One label in the log and in memory: id, ``updated_at`` as a UTC timestamp, model id, layer,
:func:`explainer_code`, score (NaN = unscored), deleted flag, normalised embedding."""

before_log_append: Callable[[], None] | None = None
"""Called between a writer's commit and its log append (a hook point for the crash test)."""


def explainer_code(tag: str) -> int:
    """A 32-bit hash of an explainer tag (the SQL that fetches the results re-checks the tag)."""
    return zlib.crc32(tag.encode())


def index_location(url: str, root: Path | None = None) -> Path | None:
    """Folder of the persisted index of the database ``url``: beside a SQLite file
    (``<file>.labels-index``), under ``root`` (default ``NEUROLABEL_INDEX_DIR``, else
    ``NEUROLABEL_CACHE_DIR/label-index``)
    for a server database; ``None`` for an in-memory SQLite database (nothing persisted)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:" or "mode=memory" in str(u):
            return None
        return Path(u.database).resolve().with_name(Path(u.database).name + ".labels-index")
    if root is None:
        from neurolabel.core.settings import get_settings

        settings = get_settings()
        root = settings.index_dir or settings.cache_dir / "label-index"
    key = f"{u.get_backend_name()}://{u.username or ''}@{u.host or ''}:{u.port or ''}/{u.database or ''}"
    return root / hashlib.sha256(key.encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------- on disk


class _Locked:
    """An exclusive ``flock`` on ``<folder>/lock`` (writers append, reindex rewrites)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> _Locked:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def append_records(folder: Path, records: np.ndarray) -> None:
    """Append label records to the log of the index at ``folder`` (after their commit)."""
    if len(records) == 0:
        return
    if before_log_append is not None:
        before_log_append()
    with _Locked(folder):
        with open(folder / "log.bin", "ab") as f:
            torn = os.fstat(f.fileno()).st_size % RECORD.itemsize
            if torn:  # a writer killed mid-append: cut its partial record, or every later one is misread
                log.warning("label index %s: dropping a torn record at the end of the log", folder)
                f.truncate(os.fstat(f.fileno()).st_size - torn)
            f.write(np.ascontiguousarray(records, dtype=RECORD).tobytes())
            f.flush()


def read_log(folder: Path) -> np.ndarray:
    """The log's records (a torn record at the end, from a writer killed mid-append, is dropped)."""
    records, _ = read_log_since(folder, None)
    return records


@dataclass(frozen=True)
class LogPosition:
    """How far a reader has read the log: the file (device, inode) and the bytes consumed."""

    dev: int
    ino: int
    offset: int
    """Bytes of whole records read (a partial record at the end, still being appended or torn,
    is read again next time)."""


def read_log_since(folder: Path, position: LogPosition | None) -> tuple[np.ndarray, LogPosition | None]:
    """The log records appended after ``position`` (all of them when ``None`` or when the log was
    replaced since: ``reindex`` writes a new file), and the position after them (``None``: no log).
    When nothing was appended this is one ``stat`` call: readers call it before every search."""
    path = folder / "log.bin"
    empty = np.zeros(0, dtype=RECORD)

    def resume(st: os.stat_result) -> int:
        same = position is not None and (position.dev, position.ino) == (st.st_dev, st.st_ino)
        return position.offset if same and position.offset <= st.st_size else 0

    try:
        st = os.stat(path)
        if st.st_size - resume(st) < RECORD.itemsize:  # nothing new: the common case, one stat call
            return empty, LogPosition(st.st_dev, st.st_ino, resume(st))
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())  # the file opened (a rename since the stat gives another one)
            start = resume(st)
            f.seek(start)
            data = f.read(st.st_size - start)
    except FileNotFoundError:
        return empty, None
    whole = len(data) - len(data) % RECORD.itemsize
    if whole != len(data) and position is None:
        log.warning("label index %s: ignoring a partial record at the end of the log", folder)
    return np.frombuffer(data[:whole], dtype=RECORD), LogPosition(st.st_dev, st.st_ino, start + whole)


def log_end(folder: Path) -> LogPosition | None:
    """The position after the last whole record of the log (``None``: no log yet)."""
    try:
        st = os.stat(folder / "log.bin")
    except FileNotFoundError:
        return None
    return LogPosition(st.st_dev, st.st_ino, st.st_size - st.st_size % RECORD.itemsize)


@dataclass(frozen=True)
class Snapshot:
    """What a folder holds: the base index with its metadata and watermark, and the log."""

    index: LabelIndex
    watermark: float | None
    """UTC timestamp before which the base snapshot had read every label (``None``: no base)."""
    generation: str | None
    log_position: LogPosition | None = None
    """Where the log was read to (``with_log``): :func:`read_log_since` goes on from there."""


def load(folder: Path, *, with_log: bool = True) -> Snapshot:
    """The persisted index at ``folder`` (an empty one when nothing was saved yet)."""
    import faiss

    current = folder / "CURRENT"
    index = LabelIndex()
    watermark = generation = None
    if current.exists():
        generation = current.read_text().strip()
        base = folder / f"base-{generation}"
        try:
            meta = np.load(base / "meta.npz")
            hnsw = faiss.read_index(str(base / "index.faiss"))
        except (OSError, RuntimeError, ValueError) as exc:
            raise StorageError(f"label index {base} cannot be read ({exc}): run `neurolabel db reindex --full`") from None
        records = meta["records"]
        if hnsw.ntotal != len(records) or hnsw.d != DIM:
            raise StorageError(f"label index {base}: {hnsw.ntotal} vectors for {len(records)} labels: "
                               "run `neurolabel db reindex --full`")
        index._adopt(hnsw, records)
        watermark = float(meta["watermark"])
    position = None
    if with_log:
        records, position = read_log_since(folder, None)
        index.apply(records)
    return Snapshot(index=index, watermark=watermark, generation=generation, log_position=position)


def save(folder: Path, index: LabelIndex, *, watermark: float) -> str:
    """Write ``index`` as the new base snapshot (atomically) and drop the log records it
    already holds; returns the new generation."""
    import faiss

    folder.mkdir(parents=True, exist_ok=True)
    generation = uuid.uuid4().hex[:12]
    base = folder / f"base-{generation}"
    base.mkdir()
    with index._lock:
        faiss.write_index(index._hnsw, str(base / "index.faiss"))
        meta = index._meta[: index._n].copy()
        meta["deleted"] = ~index._alive[: index._n]  # replaced and deleted positions stay masked
        np.savez(base / "meta.npz", records=meta, watermark=np.float64(watermark))
    with _Locked(folder):
        old = (folder / "CURRENT").read_text().strip() if (folder / "CURRENT").exists() else None
        tmp = folder / "CURRENT.tmp"
        tmp.write_text(generation)
        os.replace(tmp, folder / "CURRENT")
        kept = read_log(folder)
        kept = kept[kept["stamp"] >= watermark - OVERLAP.total_seconds()]
        tmp_log = folder / "log.bin.tmp"
        tmp_log.write_bytes(kept.tobytes())
        os.replace(tmp_log, folder / "log.bin")
    if old and old != generation:
        shutil.rmtree(folder / f"base-{old}", ignore_errors=True)
    return generation


# ------------------------------------------------------------------------------- in memory


class LabelIndex:
    """An HNSW graph over label embeddings with per-position metadata for filtering.

    A label written again (new ``updated_at``) gets a new position; its old one, and the
    position of a deleted label, stay in the graph but are masked out of every search (a
    rebuild, ``neurolabel db reindex --full``, drops them)."""

    def __init__(self) -> None:
        import faiss

        faiss.omp_set_num_threads(1)  # one query per request thread; build() uses every core
        self._lock = threading.RLock()
        self._hnsw = faiss.IndexHNSWFlat(DIM, M, faiss.METRIC_INNER_PRODUCT)
        self._hnsw.hnsw.efConstruction = EF_CONSTRUCTION
        self._meta = np.zeros(0, dtype=_META)
        self._alive = np.zeros(0, dtype=bool)
        self._n = 0
        self._pos: dict[int, int] = {}
        self._gone: dict[int, float] = {}
        """Stamp of the deletion of each deleted label (an older record does not bring it back)."""

    def __len__(self) -> int:
        """Live labels."""
        return len(self._pos)

    @property
    def dead(self) -> int:
        """Positions held by replaced or deleted labels."""
        return self._n - len(self._pos)

    def stamps(self) -> dict[int, float]:
        """``{label id: updated_at stamp}`` of every live label."""
        with self._lock:
            return {i: float(self._meta["stamp"][p]) for i, p in self._pos.items()}

    def stamp(self, label_id: int) -> float | None:
        p = self._pos.get(label_id)
        return None if p is None else float(self._meta["stamp"][p])

    def _grow(self, need: int) -> None:
        if need <= len(self._meta):
            return
        cap = max(need, 2 * len(self._meta), 1024)
        meta = np.zeros(cap, dtype=_META)
        meta[: self._n] = self._meta[: self._n]
        alive = np.zeros(cap, dtype=bool)
        alive[: self._n] = self._alive[: self._n]
        self._meta, self._alive = meta, alive

    def _adopt(self, hnsw, records: np.ndarray) -> None:
        self._hnsw = hnsw
        self._n = 0
        self._meta = np.zeros(0, dtype=_META)
        self._alive = np.zeros(0, dtype=bool)
        self._grow(len(records))
        for name in _META.names:
            self._meta[name][: len(records)] = records[name]
        self._n = len(records)
        self._pos = {}
        for p, (i, deleted) in enumerate(zip(records["id"].tolist(), records["deleted"].tolist())):
            if not deleted:
                old = self._pos.get(i)
                if old is not None:
                    self._alive[old] = False
                self._pos[i] = p
                self._alive[p] = True

    def apply(self, records: np.ndarray) -> int:
        """Add, replace or delete labels (a record older than what the index holds for its
        label is ignored); returns how many changed the index."""
        if len(records) == 0:
            return 0
        with self._lock:
            latest: dict[int, int] = {}
            for j, (i, s) in enumerate(zip(records["id"].tolist(), records["stamp"].tolist())):
                k = latest.get(i)
                if k is None or records["stamp"][k] <= s:
                    latest[i] = j
            add: list[int] = []
            changed = 0
            for i, j in latest.items():
                have = self._pos.get(i)
                s = float(records["stamp"][j])
                if self._gone.get(i, -np.inf) >= s:
                    continue
                if have is not None and self._meta["stamp"][have] >= s and not (
                        records["deleted"][j] and self._meta["stamp"][have] == s):
                    continue
                if have is not None:
                    self._alive[have] = False
                    del self._pos[i]
                if records["deleted"][j]:
                    self._gone[i] = s
                    changed += have is not None
                    continue
                add.append(j)
            if add:
                rec = records[add]
                vecs = np.ascontiguousarray(rec["vec"], dtype=np.float32)
                norms = np.linalg.norm(vecs, axis=1)
                if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1) > 1e-3):
                    bad = int(rec["id"][np.argmax(~np.isfinite(norms) | (np.abs(norms - 1) > 1e-3))])
                    raise StorageError(f"label {bad}: embedding is not a normalised finite vector")
                start = self._n
                self._grow(start + len(add))
                for name in _META.names:
                    self._meta[name][start: start + len(add)] = rec[name]
                self._alive[start: start + len(add)] = True
                self._hnsw.add(vecs)
                self._n += len(add)
                for p, i in enumerate(rec["id"].tolist(), start):
                    self._pos[i] = p
                changed += len(add)
            return changed

    def _vectors(self):
        import faiss

        xb = faiss.downcast_index(self._hnsw.storage).get_xb()
        return faiss.rev_swig_ptr(xb, self._n * DIM).reshape(self._n, DIM)

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        model_id: int | None = None,
        layer: int | None = None,
        explainer: str | None = None,
        min_score: float | None = None,
        exact: bool = False,
    ) -> list[tuple[int, float]]:
        """``(label id, cosine)`` of the ``k`` nearest live labels that pass every filter, best
        first; approximate unless ``exact`` or the filters keep at most :data:`EXACT_ROWS`."""
        import faiss

        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, DIM))
        with self._lock:
            n = self._n
            if n == 0 or k <= 0:
                return []
            mask = self._alive[:n].copy()
            meta = self._meta[:n]
            if model_id is not None:
                mask &= meta["model_id"] == model_id
            if layer is not None:
                mask &= meta["layer"] == layer
            if explainer is not None:
                mask &= meta["explainer"] == explainer_code(explainer)
            if min_score is not None:
                with np.errstate(invalid="ignore"):
                    mask &= meta["score"] >= min_score
            kept = int(mask.sum())
            if kept == 0:
                return []
            if exact or kept <= max(EXACT_ROWS, k):
                rows = np.flatnonzero(mask)
                # einsum, not BLAS: a multi-threaded BLAS matrix-vector product per request thread
                # was 20x slower on a loaded 2-core machine (threads fighting over the cores)
                if kept > n // 4:  # one pass over every vector beats copying most of them
                    sims = np.einsum("ij,j->i", self._vectors(), q[0])[rows]
                else:
                    sims = np.einsum("ij,j->i", self._vectors()[rows], q[0])
                k = min(k, len(rows))
                top = np.argpartition(-sims, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
                top = top[np.argsort(-sims[top], kind="stable")]
                return [(int(meta["id"][rows[t]]), float(sims[t])) for t in top]
            frac = kept / n
            ef = int(min(EF_MAX, max(EF_SEARCH / frac ** 0.5, k * 2)))
            bits = np.packbits(mask, bitorder="little")
            params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits)), efSearch=ef)
            dist, pos = self._hnsw.search(q, min(k, kept), params=params)
            return [(int(meta["id"][p]), float(d)) for d, p in zip(dist[0], pos[0]) if p >= 0]


_META = np.dtype([(name, RECORD.fields[name][0]) for name in RECORD.names if name != "vec"])


def records(rows: Iterable) -> np.ndarray:
    """:data:`RECORD` rows from ``(id, stamp, model_id, layer, explainer, score, embedding
    bytes)`` tuples."""
    rows = list(rows)
    out = np.zeros(len(rows), dtype=RECORD)
    if not rows:
        return out
    cols = list(zip(*rows))
    size = DIM * 4
    for i, emb in zip(cols[0], cols[6]):
        if emb is None or len(emb) != size:
            raise StorageError(f"label {i}: stored embedding has {0 if emb is None else len(emb)} bytes, "
                               f"expected {size}")
    out["id"] = cols[0]
    out["stamp"] = cols[1]
    out["model_id"] = cols[2]
    out["layer"] = cols[3]
    out["explainer"] = [explainer_code(e) for e in cols[4]]
    out["score"] = [np.nan if s is None else s for s in cols[5]]
    out["vec"] = np.frombuffer(b"".join(cols[6]), dtype="<f4").reshape(len(rows), DIM)
    return out
