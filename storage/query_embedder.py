"""Embeddings of search queries for a server: cached, computed once per text however many
requests ask for it at the same time, and batched across concurrent requests.

Under concurrent load a plain ``lru_cache`` around the embedder lets every request that misses
the cache embed the same text again (16 clients searching a new word: 16 encodes, one after the
other behind the model's lock). Here the first request for a text computes it; requests for the
same text wait for that result; texts asked for while an encode runs are encoded together, in
one batch, by the next request that finds the embedder idle."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

log = logging.getLogger(__name__)


class QueryEmbedder:
    """Cached, coalescing, batching embedding of query texts.

    ``embed`` maps a list of texts to an array of one vector per text; at most ``max_batch``
    texts go to one call; the ``cache_size`` most recently used vectors are kept. A failed call
    fails the requests of that batch (the next request for a text tries again)."""

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray], *, cache_size: int = 4096,
                 max_batch: int = 32) -> None:
        self.embed = embed
        self.cache_size = cache_size
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._waiting: OrderedDict[str, Future] = OrderedDict()
        """Texts asked for and not yet being encoded."""
        self._running: dict[str, Future] = {}
        """Texts of the batch being encoded."""
        self._busy = False
        self.calls = 0
        """Calls of ``embed`` so far."""

    def __call__(self, text: str) -> np.ndarray:
        """The (read-only) vector of ``text``."""
        with self._cond:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
            future = self._waiting.get(text) or self._running.get(text)
            if future is None:
                future = self._waiting[text] = Future()
            while not future.done() and self._busy:
                self._cond.wait()
            if future.done():
                return future.result()
            # idle embedder, our text still waiting: encode it with whatever else waits
            self._busy = True
            batch = [text] + [t for t in self._waiting if t != text][: self.max_batch - 1]
            self._running = {t: self._waiting.pop(t) for t in batch}
        try:
            vecs = np.asarray(self.embed(batch), dtype=np.float32)
            if vecs.shape[0] != len(batch):
                raise ValueError(f"embedder returned {vecs.shape[0]} vectors for {len(batch)} texts")
            error = None
        except BaseException as exc:  # handed to every request of the batch (none is left waiting)
            error = exc
        with self._cond:
            for i, t in enumerate(batch):
                f = self._running.pop(t)
                if error is not None:
                    f.set_exception(error)
                    continue
                vec = vecs[i].copy()
                vec.setflags(write=False)
                self._cache[t] = vec
                f.set_result(vec)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self.calls += 1
            self._busy = False
            self._cond.notify_all()
        return future.result()

    def clear(self) -> None:
        """Forget every cached vector."""
        with self._cond:
            self._cache.clear()
