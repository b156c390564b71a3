"""Small builders of core objects for the storage tests, and a deterministic embedder for
subprocess writers (where loading MiniLM in every process would only cost time)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from sqlalchemy import func, select

from neurolabel.core.types import ActivationRecord, Explanation, NeuronId, NeuronRecord, NeuronStats, ScoreResult, split_of_window
from neurolabel.storage.models import Example, ExplanationRow, Model, Neuron, Score


def window(kind: str, wid: int, peak: float, *, quantile: int | None = None, n: int = 6) -> ActivationRecord:
    """A window of ``n`` tokens whose activation peaks at token 2."""
    tokens = tuple(f" w{wid}_{i}" for i in range(n))
    acts = tuple(peak if i == 2 else 0.01 * i for i in range(n))
    return ActivationRecord(tokens=tokens, activations=acts, window_id=wid, split=split_of_window(wid),
                            kind=kind, quantile=quantile)  # type: ignore[arg-type]


def record(layer: int, index: int, *, model: str = "tiny", scale: float = 1.0, n_top: int = 3) -> NeuronRecord:
    """A recorded neuron with top, random and quantile windows and statistics."""
    top = tuple(window("top", 100 * index + j, scale * (10 - j)) for j in range(n_top))
    rnd = tuple(window("random", 1000 + j, 0.1 * j) for j in range(2))
    qua = tuple(window("quantile", 2000 + j, 0.5 * j, quantile=j) for j in range(2))
    return NeuronRecord(model=model, neuron=NeuronId(layer, index), top=top, random=rnd, quantile=qua,
                        stats=NeuronStats(count=500, mean=0.1 * scale, std=0.3, max=10.0 * scale, min=-0.2,
                                          frac_active=0.25))


def explanation(layer: int, index: int, text: str, score: float | None, *, model: str = "tiny",
                explainer: str = "pmi", version: str = "1", rank: int = 0) -> Explanation:
    """An explanation, scored when ``score`` is not None."""
    result = None
    if score is not None:
        result = ScoreResult(score=score, scorer="correlation", simulator="embedding",
                             parts={"top_only": score / 2, "random_only": None}, n_tokens=120, method="json")
    return Explanation(model=model, neuron=NeuronId(layer, index), explainer=explainer, explainer_version=version,
                       text=text, structured={"iris": ["http://x/#a"], "precision": 0.5},
                       params={"top_k": 5}, rank=rank, score=result)


def hash_embedder(texts: Sequence[str]) -> np.ndarray:
    """Deterministic unit vectors keyed by the text (not semantic)."""
    out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=384) for t in texts])
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def counts(session) -> dict[str, int]:
    """Row count of every data table."""
    return {
        t.__tablename__: session.execute(select(func.count()).select_from(t)).scalar_one()
        for t in (Model, Neuron, Example, ExplanationRow, Score)
    }
