"""Embedding simulator: predicts a token's activation from the cosine similarity of the
explanation's sentence embedding and the token in its context (all-MiniLM-L6-v2).

A token's vector mixes two MiniLM views: the token's own word (embedded alone; cached by
string) and its contextual embedding (one MiniLM pass per window; a target-model token's
contextual vector is the mean of the word pieces its characters cover). Measured on a
sentence with dog/apples/red, the word view separates concepts much more sharply than the
contextual one, so it gets the larger weight (``context_weight`` = 0.25). Tokens with no
word characters (whitespace) get 0. Both caches are bounded LRU dicts.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import Explanation, SequenceSimulation

log = logging.getLogger(__name__)


@SIMULATORS.register("embedding")
class EmbeddingSimulator:
    """Similarity of explanation and each token in its context, clipped at 0 and scaled to 0–10."""

    kind = "embedding"

    def __init__(self, embedder: Any, *, context_weight: float = 0.25, cache_size: int = 4096,
                 batch_size: int = 32) -> None:
        self.embedder = embedder
        self.context_weight = context_weight
        self.cache_size = cache_size
        self.batch_size = batch_size
        self._cache: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._words: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "EmbeddingSimulator":
        """With the process-wide all-MiniLM-L6-v2 (``lm.embeddings.load_embedder``)."""
        from neurolabel.lm.embeddings import load_embedder

        return cls(load_embedder(), **kwargs)

    # -- embeddings -------------------------------------------------------------------------
    def _sentence(self, text: str) -> np.ndarray:
        v = self.embedder.encode([text], normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)
        return np.asarray(v[0], dtype=np.float32)

    def _word_embeddings(self, tokens: Sequence[str], dim: int) -> np.ndarray:
        """Normalised embedding of each token's stripped text alone (zero when empty)."""
        words = [t.strip() for t in tokens]
        with self._lock:
            missing = sorted({w for w in words if w and w not in self._words})
        if missing:
            vecs = self.embedder.encode(missing, normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=False, batch_size=64)
            with self._lock:
                for w, v in zip(missing, vecs):
                    self._words[w] = np.asarray(v, dtype=np.float32)
                while len(self._words) > 16 * self.cache_size:
                    self._words.popitem(last=False)
        with self._lock:
            return np.stack([self._words[w] if w and w in self._words else np.zeros(dim, np.float32)
                             for w in words]) if words else np.zeros((0, dim), np.float32)

    def _token_embeddings(self, windows: Sequence[tuple[str, ...]]) -> list[np.ndarray]:
        """Normalised contextual embedding per target token, shape (n_tokens, dim), per window."""
        out: dict[int, np.ndarray] = {}
        todo = []
        with self._lock:
            for i, w in enumerate(windows):
                hit = self._cache.get(w)
                if hit is not None:
                    self._cache.move_to_end(w)
                    out[i] = hit
                else:
                    todo.append(i)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            for i, emb in zip(chunk, self._embed_windows([windows[i] for i in chunk])):
                out[i] = emb
                with self._lock:
                    self._cache[windows[i]] = emb
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return [out[i] for i in range(len(windows))]

    def _embed_windows(self, windows: Sequence[tuple[str, ...]]) -> list[np.ndarray]:
        import torch

        texts, spans = [], []
        for toks in windows:
            pos, sp = 0, []
            for t in toks:
                sp.append((pos, pos + len(t)))
                pos += len(t)
            texts.append("".join(toks))
            spans.append(sp)
        transformer = self.embedder[0]
        tok = self.embedder.tokenizer
        enc = tok(texts, return_offsets_mapping=True, padding=True, truncation=True,
                  max_length=transformer.max_seq_length, return_tensors="pt")
        offsets = enc.pop("offset_mapping").numpy()
        with torch.no_grad():
            hidden = transformer.auto_model(**{k: v for k, v in enc.items()
                                               if k in ("input_ids", "attention_mask", "token_type_ids")}
                                            ).last_hidden_state.numpy()
        result = []
        for b, sp in enumerate(spans):
            off = offsets[b]
            valid = off[:, 1] > off[:, 0]  # excludes [CLS], [SEP], padding
            emb = np.zeros((len(sp), hidden.shape[-1]), dtype=np.float32)
            for j, (s, e) in enumerate(sp):
                m = valid & (off[:, 0] < e) & (off[:, 1] > s)
                if m.any():
                    v = hidden[b, m].mean(axis=0)
                    n = float(np.linalg.norm(v))
                    if n > 0:
                        emb[j] = v / n
            result.append(emb)
        return result

    # -- simulator protocol -----------------------------------------------------------------
    def simulate_many(self, explanation: Explanation,
                      windows: Sequence[Sequence[str]]) -> list[SequenceSimulation]:
        """Simulations of several windows (batched through MiniLM)."""
        wins = [tuple(w) for w in windows]
        e = self._sentence(explanation.text)
        sims = []
        ctx = self._token_embeddings(wins) if self.context_weight > 0 else [None] * len(wins)
        for toks, cemb in zip(wins, ctx):
            sim = (1.0 - self.context_weight) * (self._word_embeddings(toks, e.size) @ e)
            if cemb is not None:
                sim = sim + self.context_weight * (cemb @ e)
            sim = np.clip(sim, 0.0, None) * 10.0
            sims.append(SequenceSimulation(tokens=toks, expected_activations=tuple(float(x) for x in sim),
                                           method="embedding"))
        return sims

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """Predicted activation of each token (0–10)."""
        return self.simulate_many(explanation, [tokens])[0]
