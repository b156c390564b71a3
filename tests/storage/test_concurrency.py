"""Two processes writing overlapping results at the same time: no duplicates, no lost rows."""

from __future__ import annotations

import multiprocessing as mp

import pytest
from sqlalchemy import func, select

from neurolabel.storage import db
from neurolabel.storage import queries as q
from neurolabel.storage.models import ExplanationRow, Neuron
from tests.storage.factories import counts, explanation, hash_embedder, record

N = 60
BATCH = 6


def _writer(url: str, name: str, reverse: bool, barrier, mine, other, spans) -> None:
    """Record every neuron and store a shared and an own explanation of each, batch by batch.

    Both writers start together (``barrier``) and, after its first batch is committed, each one
    waits until the other has committed its first batch too: the two write sessions overlap by
    construction, whatever the machine's load or the processes' start-up times."""
    import time

    barrier.wait(timeout=120)
    began = time.time()
    order = list(range(N))[::-1] if reverse else list(range(N))
    for b in range(0, N, BATCH):
        if b == BATCH:
            mine.set()
            assert other.wait(timeout=120), "the other writer never committed its first batch"
        idx = order[b : b + BATCH]
        with db.session_scope(url) as s:
            q.save_neuron_records(session=s, records=[record(0, i) for i in idx], batch_size=3)
            q.save_explanations(
                session=s,
                explanations=[explanation(0, i, f"shared label {i}", 0.5) for i in idx]
                + [explanation(0, i, f"label {i} by {name}", 0.1 * (i % 10), version=name) for i in idx],
                threshold=0.3,
                embedder=hash_embedder,
            )
    spans.put((began, time.time()))
    db.dispose_engines()


@pytest.mark.slow
def test_two_processes_overlapping_writes(migrated_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    done_first = {"a": ctx.Event(), "b": ctx.Event()}
    spans = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(migrated_url, name, rev, barrier, done_first[name],
                                               done_first["b" if name == "a" else "a"], spans))
             for name, rev in (("a", False), ("b", True))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    (a0, a1), (b0, b1) = spans.get(timeout=5), spans.get(timeout=5)
    assert max(a0, b0) < min(a1, b1), "the two writers did not overlap in time"
    with db.session_scope(migrated_url) as s:
        c = counts(s)
        assert c == {"models": 1, "neurons": N, "examples": N * 7, "explanations": 3 * N, "scores": 3 * N}
        per_version = dict(
            s.execute(select(ExplanationRow.explainer_version, func.count()).group_by(ExplanationRow.explainer_version)).all()
        )
        assert per_version == {"1": N, "a": N, "b": N}
        assert s.execute(select(func.count(func.distinct(Neuron.index)))).scalar_one() == N
        for i in (0, N // 2, N - 1):
            n = q.get_neuron(session=s, model="tiny", layer=0, index=i)
            assert n["best_label"]["text"] == f"shared label {i}" or n["best_label"]["score"] > 0.5
            assert len(n["examples"]) == 7
