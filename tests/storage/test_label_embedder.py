"""Label embeddings are computed once per distinct text, in one batch per write."""

from __future__ import annotations

import numpy as np
import pytest

from neurolabel.core.errors import StorageError
from neurolabel.storage import db
from neurolabel.storage import queries as q
from neurolabel.storage.writes import LabelEmbedder
from tests.storage.factories import explanation, hash_embedder


class Counting:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return hash_embedder(texts)


def test_each_distinct_text_embedded_once_across_writes(sqlite_migrated: str) -> None:
    inner = Counting()
    emb = LabelEmbedder(inner)
    shared = ["the word ' the'", "commas", "the word ' the'"]
    with db.session_scope(sqlite_migrated) as s:
        q.save_explanations(session=s, embedder=emb, explanations=[
            explanation(0, i, shared[i % 3], 0.5) for i in range(6)])
    with db.session_scope(sqlite_migrated) as s:
        q.save_explanations(session=s, embedder=emb, explanations=[
            explanation(1, i, t, 0.5) for i, t in enumerate(["commas", "numbers", "the word ' the'"])])
    assert inner.calls == [["commas", "the word ' the'"], ["numbers"]]  # one batch per write, nothing twice
    assert (emb.computed, emb.reused) == (3, 2) and emb.seconds >= 0
    assert np.allclose(emb(["numbers"]), hash_embedder(["numbers"]))


def test_bounded_and_checked() -> None:
    emb = LabelEmbedder(hash_embedder, max_items=2)
    emb(["a", "b", "c"])
    assert len(emb._vectors) == 2 and emb(["a"]).shape == (1, 384) and emb.computed == 4
    with pytest.raises(StorageError, match="shape"):
        LabelEmbedder(lambda texts: np.zeros((len(texts), 3)))(["x"])
    assert emb([]).shape == (0, 384)
