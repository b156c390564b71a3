"""Query embeddings under concurrency: one encode per text however many requests ask at once,
concurrent texts batched, failures handed to the requests that waited, an LRU cache; and the
real MiniLM path gives the same vectors as ``embed``."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from neurolabel.storage.query_embedder import QueryEmbedder
from tests.storage.factories import hash_embedder


class _Gate:
    """A real embedder (``hash_embedder``) whose first call waits until released, recording
    the batches it was given."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, texts):
        self.batches.append(list(texts))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(30)
        return hash_embedder(texts)


def _ask(embedder: QueryEmbedder, texts: list[str]) -> tuple[list[threading.Thread], dict[int, np.ndarray]]:
    out: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i, t=t: out.__setitem__(i, embedder(t))) for i, t in enumerate(texts)]
    for t in threads:
        t.start()
    return threads, out


def _wait_until(cond) -> None:
    for _ in range(3000):  # a condition, not a sleep guess: waiting threads show in the embedder's state
        if cond():
            return
        threading.Event().wait(0.01)
    raise AssertionError("condition not reached")


def test_concurrent_requests_share_one_encode_and_batch_the_rest() -> None:
    gate = _Gate()
    qe = QueryEmbedder(gate)
    first, out1 = _ask(qe, ["dogs"])
    assert gate.entered.wait(30)  # "dogs" is being encoded
    more, out2 = _ask(qe, ["dogs"] * 8 + ["cats", "cars", "cats"])
    _wait_until(lambda: set(qe._waiting) == {"cats", "cars"})
    gate.release.set()
    for t in first + more:
        t.join(30)
    assert gate.batches == [["dogs"], ["cats", "cars"]] or gate.batches == [["dogs"], ["cars", "cats"]]
    assert qe.calls == 2
    want = {t: hash_embedder([t])[0] for t in ("dogs", "cats", "cars")}
    assert np.allclose(out1[0], want["dogs"])
    texts = ["dogs"] * 8 + ["cats", "cars", "cats"]
    assert all(np.allclose(out2[i], want[t]) for i, t in enumerate(texts))
    assert qe("cats") is out2[8]  # cached, read-only
    assert not qe("cats").flags.writeable
    assert qe.calls == 2


def test_a_failed_encode_fails_its_batch_and_is_retried() -> None:
    calls: list[list[str]] = []

    def flaky(texts):
        calls.append(list(texts))
        if len(calls) == 1:
            raise RuntimeError("embedder not ready")
        return hash_embedder(texts)

    qe = QueryEmbedder(flaky)
    with pytest.raises(RuntimeError, match="not ready"):
        qe("rivers")
    assert np.allclose(qe("rivers"), hash_embedder(["rivers"])[0])
    assert calls == [["rivers"], ["rivers"]]


def test_wrong_number_of_vectors_is_an_error() -> None:
    qe = QueryEmbedder(lambda texts: np.zeros((0, 384), dtype=np.float32))
    with pytest.raises(ValueError, match="0 vectors for 1 texts"):
        qe("b")


def test_cache_keeps_the_most_recently_used() -> None:
    seen: list[str] = []

    def counting(texts):
        seen.extend(texts)
        return hash_embedder(texts)

    qe = QueryEmbedder(counting, cache_size=2)
    qe("a"), qe("b"), qe("a"), qe("c")  # "b" is the least recently used
    qe("a"), qe("c")
    assert seen == ["a", "b", "c"]
    qe("b")
    assert seen == ["a", "b", "c", "b"]


@pytest.mark.slow
def test_minilm_vectors_match_embed() -> None:
    from neurolabel.lm.embeddings import embed

    qe = QueryEmbedder(embed)
    texts = ["a feline pet", "streams and ponds", "programming languages"]
    threads, out = _ask(qe, texts)
    for t in threads:
        t.join(120)
    want = embed(texts)
    for i in range(len(texts)):
        assert np.allclose(out[i], want[i], atol=1e-5)
