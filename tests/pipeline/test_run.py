"""The labelling run (:mod:`pipeline.run`) on real parts: planted-concept records in a real
database (SQLite and PostgreSQL), the real concept-induction explainer and symbolic/embedding
simulators; and one run that records the real SmolLM2 first."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from neurolabel.core.errors import ConfigError
from neurolabel.core.types import NeuronId
from neurolabel.pipeline.run import explain_and_score, run
from neurolabel.pipeline.simulators import resolve_simulators
from neurolabel.pipeline.spec import RunSpec

CLASSES = ("animal.n.01", "food.n.01", "person.n.01")


@pytest.fixture(scope="module")
def planted_records():
    from bench.planted import planted_records as make

    return make(CLASSES, n_top=6, n_random=4, n_windows=400, window_tokens=32)


def label_neurons(*, model_spec, database_url, progress=False, should_stop=None, on_progress=None,
                  record_options=None, **fields):
    """One run of the spec these fields describe."""
    spec = RunSpec.parse({"model": model_spec, "record": record_options or {}, **fields})
    return run(spec, database_url=database_url, progress=progress, should_stop=should_stop,
               on_progress=on_progress)


def _store(url, records):
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.queries import save_neuron_records

    upgrade(url)
    with session_scope(url) as session:
        save_neuron_records(session=session, records=records)


def _counts(url):
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.models import ExplanationRow, Score

    with session_scope(url) as session:
        return (session.execute(select(func.count()).select_from(ExplanationRow)).scalar_one(),
                session.execute(select(func.count()).select_from(Score)).scalar_one())


def test_resolve_simulators():
    assert resolve_simulators(["concept_induction", "llm_summary"]) == {
        "concept_induction": "symbolic", "llm_summary": "llm"}
    assert resolve_simulators(["concept_induction"], "embedding") == {"concept_induction": "embedding"}
    assert resolve_simulators(["concept_induction", "llm_summary"], {"llm_summary": "embedding"}) == {
        "concept_induction": "symbolic", "llm_summary": "embedding"}
    with pytest.raises(ConfigError, match="unknown simulator 'nope'"):
        resolve_simulators(["concept_induction"], "nope")
    with pytest.raises(ConfigError, match="unknown explainer"):
        resolve_simulators(["nope"])
    with pytest.raises(ConfigError, match="not chosen"):
        resolve_simulators(["concept_induction"], {"llm_summary": "llm"})


@pytest.mark.slow
def test_label_stops_resumes_and_never_duplicates(db_url, planted_records):
    from neurolabel.storage.db import dispose_engines, session_scope
    from neurolabel.storage.queries import best_label, get_neuron

    _store(db_url, planted_records)
    calls = []
    first = label_neurons(model_spec="planted", layers=[0], units=[0, 1, 2], explainers=["concept_induction"],
                          concurrency=1,  # one neuron at a time: the stop lands exactly after the first
                          database_url=db_url, progress=False, should_stop=lambda: len(calls) >= 1,
                          on_progress=lambda done, total, detail: calls.append((done, total)))
    assert first.stopped and first.processed == 1 and first.recorded == 0 and calls == [(1, 3)]
    n_expl, n_scores = _counts(db_url)
    assert n_expl == first.explanations > 0 and n_scores == n_expl

    second = label_neurons(model_spec="planted", layers=[0], units=[0, 1, 2], explainers=["concept_induction"],
                           database_url=db_url, progress=False)
    assert not second.stopped and second.skipped == 1 and second.processed == 2
    # the run's wall time: its labelling loop, the last write after it, and what it pays once
    assert second.loop_s > 0 and second.final_write_s > 0 and second.loop_s + second.final_write_s <= second.elapsed_s
    assert second.as_dict()["loop_s"] == second.loop_s
    third = label_neurons(model_spec="planted", layers=[0], units=[0, 1, 2], explainers=["concept_induction"],
                          database_url=db_url, progress=False)
    assert third.skipped == 3 and third.processed == 0 and third.explanations == 0
    assert _counts(db_url) == (first.explanations + second.explanations,) * 2

    with session_scope(db_url) as session:
        for i, cls in enumerate(CLASSES):
            info = get_neuron(session=session, model="planted", layer=0, index=i)
            scores = info["explanations"][0]["scores"]
            assert scores[0]["simulator"] == "symbolic" and scores[0]["method"] == "symbolic"
            assert set(scores[0]["parts"]) >= {"random_only", "top_only", "balanced_accuracy", "auprc", "f1"}
            best = best_label(session=session, model="planted", layer=0, index=i)
            assert best is not None and best["score"] > 0.5, (cls, info["explanations"][:2])
            assert cls.split(".")[0] in best["text"].lower(), (cls, best["text"])
    dispose_engines()


@pytest.mark.slow
def test_rejected_explanations_are_stored_with_scores(sqlite_url, planted_records):
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import get_neuron

    _store(sqlite_url, planted_records[:1])
    s = label_neurons(model_spec="planted", layers=[0], units=[0], explainers=["concept_induction"],
                      simulators="embedding", database_url=sqlite_url, threshold=1.01, progress=False)
    assert s.explanations > 0 and s.accepted == 0
    times = s.times.as_dict()  # storing is timed in the background; what the run waited for too
    assert times["store_s"] >= times["embed_s"] >= 0 and times["store_wait_s"] >= 0
    with session_scope(sqlite_url) as session:
        info = get_neuron(session=session, model="planted", layer=0, index=0)
    assert info["best_label"] is None
    assert all(not e["accepted"] and e["scores"][0]["simulator"] == "embedding" for e in info["explanations"])
    assert any(e["score"] is not None for e in info["explanations"])


@pytest.mark.slow
def test_explain_and_score_without_storage_any_simulator(planted_records):
    out = explain_and_score(planted_records[:2], RunSpec.parse({"explainers": ["concept_induction"], "simulators": "embedding"}))
    assert out and all(e.score is not None and e.score.simulator == "embedding" for e in out)
    assert {e.neuron for e in out} == {NeuronId(0, 0), NeuronId(0, 1)}


@pytest.mark.slow
def test_records_missing_neurons_from_the_real_model(sqlite_url):
    opts = {"max_tokens": 1024, "window_tokens": 32, "top_k": 4, "n_random": 4}
    s = label_neurons(model_spec="default", layers=[10], units=[0, 1], explainers=["concept_induction"],
                      database_url=sqlite_url, record_options=opts, progress=False)
    assert s.model == "smollm2-135m" and s.recorded == 2 and s.processed + len(s.errors) >= 2
    again = label_neurons(model_spec="default", layers=[10], units=[0, 1], explainers=["concept_induction"],
                          database_url=sqlite_url, record_options=opts, progress=False)
    assert again.recorded == 0 and again.processed <= len(s.errors)


@pytest.mark.slow
def test_cli_label_prints_labels_and_resumes(sqlite_url, planted_records):
    from typer.testing import CliRunner

    from neurolabel.service.cli import app

    _store(sqlite_url, planted_records[:2])
    args = ["label", "--model", "planted", "--layers", "0", "--units", "0-1", "--explainers", "concept_induction,pmi",
            "--db", sqlite_url, "--show", "--no-progress"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 explained, 0 already done" in first.output
    assert "neuron planted 0:0" in first.output and "concept_induction" in first.output and "pmi" in first.output
    assert "=> label:" in first.output and "animal" in first.output.lower()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 explained, 2 already done" in again.output and "0 explanations stored" in again.output
    bad = CliRunner().invoke(app, ["label", "--layers", "0", "--explainers", "nope", "--db", sqlite_url])
    assert bad.exit_code != 0 and "unknown explainer 'nope'" in str(bad.exception or bad.output)
    # --embed all on a third neuron: every candidate of it gets a vector (the first two: the best ones)
    _store(sqlite_url, planted_records[2:3])
    every = CliRunner().invoke(app, [*args[:6], "2", *args[7:], "--embed", "all"])
    assert every.exit_code == 0, every.output
    vectors = _vector_rows(sqlite_url)
    assert all(has for key, (_, _, has) in vectors.items() if key[1] == 2)
    assert {k for k, (_, _, has) in vectors.items() if has and k[1] < 2} == _policy_best(
        {k: v for k, v in vectors.items() if k[1] < 2})
    wrong = CliRunner().invoke(app, [*args, "--embed", "some"])
    assert wrong.exit_code != 0 and "embed" in str(wrong.exception or wrong.output)


def _dead(record, index):
    """A copy of ``record`` as unit ``index`` that never activates (every activation 0)."""
    import dataclasses

    def zero(ws):
        return tuple(dataclasses.replace(w, activations=(0.0,) * len(w.activations)) for w in ws)

    return dataclasses.replace(record, neuron=NeuronId(0, index), top=zero(record.top),
                               random=zero(record.random), quantile=zero(record.quantile))


def _failures(url):
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.models import ExplanationFailure

    with session_scope(url) as session:
        return [(r.explainer, r.attempts, r.error) for r in session.execute(select(ExplanationFailure)).scalars()]


@pytest.mark.slow
def test_explainer_failures_are_stored_and_not_retried(db_url, planted_records):
    """A neuron the explainer cannot explain is remembered with its error: reruns skip it,
    --retry-failed tries again (attempts grow), and a later success removes the failure."""
    import dataclasses

    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import failed_neurons

    _store(db_url, [planted_records[0], _dead(planted_records[1], 3)])
    kw = dict(model_spec="planted", layers=[0], units=[0, 3], explainers=["concept_induction"],
              database_url=db_url, progress=False)
    first = label_neurons(**kw)
    assert first.processed == 2 and len(first.errors) == 1 and "no positive activation" in first.errors[0]
    assert [(t, a) for t, a, _ in _failures(db_url)] == [("concept_induction", 1)]
    assert "no positive activation" in _failures(db_url)[0][2]
    with session_scope(db_url) as session:
        from neurolabel.core.registry import EXPLAINERS

        version = str(EXPLAINERS["concept_induction"].version)
        assert set(failed_neurons(session=session, model="planted", explainer="concept_induction",
                                  version=version)) == {NeuronId(0, 3)}

    again = label_neurons(**kw)
    assert again.processed == 0 and again.skipped == 2 and again.failed_before == 1 and not again.errors
    assert [(t, a) for t, a, _ in _failures(db_url)] == [("concept_induction", 1)]

    retried = label_neurons(**kw, retry_failed=True)
    assert retried.processed == 1 and len(retried.errors) == 1
    assert [(t, a) for t, a, _ in _failures(db_url)] == [("concept_induction", 2)]
    with session_scope(db_url) as session:
        from neurolabel.storage.queries import get_neuron

        shown = get_neuron(session=session, model="planted", layer=0, index=3)["failures"]
        assert [(f["explainer"], f["attempts"]) for f in shown] == [("concept_induction", 2)]
        assert "no positive activation" in shown[0]["error"]
        assert get_neuron(session=session, model="planted", layer=0, index=0)["failures"] == []
    from typer.testing import CliRunner

    from neurolabel.service.cli import app

    shown = CliRunner().invoke(app, ["show", "planted", "0", "3", "--db", db_url], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "failed concept_induction" in shown.output and "2 attempt(s)" in shown.output

    # the unit now records real activity: a retry explains it and forgets the failure
    _store(db_url, [dataclasses.replace(planted_records[1], neuron=NeuronId(0, 3))])
    fixed = label_neurons(**kw, retry_failed=True)
    assert fixed.processed == 1 and not fixed.errors and fixed.explanations > 0
    assert _failures(db_url) == []


@pytest.mark.slow
def test_tokens_labels_are_stored_and_extra_simulators_scored(sqlite_url, planted_records, monkeypatch):
    from neurolabel.explainers.tokens import TokenExplainer
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import best_label, get_neuron

    assert resolve_simulators(["tokens"]) == {"tokens": "tokens"}  # the explainer declares its simulator
    monkeypatch.setattr(TokenExplainer, "extra_simulators", ("embedding", "symbolic"), raising=False)
    got = explain_and_score(planted_records[:1], RunSpec.parse({"explainers": ["tokens"]}))
    assert [e.explainer for e in got] == ["tokens"]
    parts = got[0].score.parts
    assert isinstance(parts["score_by_embedding"], float)  # the second simulator's score is kept beside
    assert parts["score_by_symbolic"] is None  # a simulator that does not apply adds None
    assert got[0].score.simulator == "tokens" and got[0].score.score > 0.2  # words of one class: held-out words differ

    _store(sqlite_url, planted_records[:2])
    s = label_neurons(model_spec="planted", layers=[0], units=[0, 1], explainers=["tokens"], database_url=sqlite_url,
                      progress=False)
    assert s.explanations == 2
    with session_scope(sqlite_url) as session:
        info = get_neuron(session=session, model="planted", layer=0, index=0)
        stored = info["explanations"][0]
        assert stored["structured"]["tokens"] and "score_by_embedding" in stored["scores"][0]["parts"]
        assert best_label(session=session, model="planted", layer=0, index=0)["explainer"] == "tokens"


def _stored(url, model, n_units):
    """Everything stored of each neuron's explanations but row ids and timestamps."""
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import get_neuron

    with session_scope(url) as session:
        return [[{k: v for k, v in e.items() if k not in ("id", "created_at", "updated_at")}
                 for e in get_neuron(session=session, model=model, layer=0, index=i)["explanations"]]
                for i in range(n_units)]


def _embeddings(url):
    """Each label's stored embedding, by (layer, index, explainer, rank)."""
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.models import ExplanationRow, Neuron

    with session_scope(url) as session:
        rows = session.execute(select(Neuron.layer, Neuron.index, ExplanationRow.explainer, ExplanationRow.rank,
                                      ExplanationRow.embedding).join(Neuron, Neuron.id == ExplanationRow.neuron_id))
        return {tuple(r[:4]): None if r[4] is None else bytes(r[4]) for r in rows}


@pytest.mark.slow
def test_worker_processes_store_what_one_process_stores(tmp_path, db_url, planted_records):
    """``processes=2``: the neurons are explained and scored, and their labels embedded, in two
    forked worker processes (alive while the run reports progress; each opens its own database
    connections), stopped after the first neuron and resumed, and the database (SQLite or
    PostgreSQL) then holds exactly what a run in threads of one process stores in SQLite, label
    vectors included."""
    import multiprocessing

    from neurolabel.storage.db import dispose_engines
    from neurolabel.storage.writes import label_embedder

    serial_url, procs_url = f"sqlite:///{tmp_path}/serial.db", db_url
    fields = dict(model_spec="planted", layers=[0], units=[0, 1, 2], explainers=["concept_induction", "pmi", "tokens"],
                  progress=False, store_every=1)
    _store(serial_url, planted_records)
    _store(procs_url, planted_records)
    # both runs embed every text themselves, in the same batches (one write per neuron): a text's
    # bfloat16 vector moves in its last bits with the batch it is padded in
    label_embedder().clear()
    serial = label_neurons(database_url=serial_url, **fields)
    children, calls = [], []

    def seen(done, total, detail):
        calls.append(done)
        children.append(len(multiprocessing.active_children()))

    label_embedder().clear()  # the worker processes embed every label again
    first = label_neurons(database_url=procs_url, processes=2, concurrency=1, should_stop=lambda: len(calls) >= 1,
                          on_progress=seen, **fields)
    assert first.stopped and first.processed == 1 and children and min(children) >= 2, children
    rest = label_neurons(database_url=procs_url, processes=2, on_progress=seen, **fields)
    assert rest.processed == 2 and rest.skipped == 1 and not rest.errors
    assert first.explanations + rest.explanations == serial.explanations > 0
    assert first.accepted + rest.accepted == serial.accepted
    assert _stored(procs_url, "planted", 3) == _stored(serial_url, "planted", 3)
    assert _embeddings(procs_url) == _embeddings(serial_url)  # embedded by a worker process, the same vectors
    assert first.times.embed_cpu_s > 0 and rest.times.embed_cpu_s > 0
    assert not multiprocessing.active_children()  # the pool is shut down with the run
    dispose_engines()


def _vector_rows(url):
    """Per stored label: (layer, index, explainer, rank) -> (score, accepted, has a vector)."""
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.models import ExplanationRow, Neuron

    with session_scope(url) as session:
        rows = session.execute(select(Neuron.layer, Neuron.index, ExplanationRow.explainer, ExplanationRow.rank,
                                      ExplanationRow.score, ExplanationRow.accepted,
                                      ExplanationRow.embedding.is_not(None))
                               .join(Neuron, Neuron.id == ExplanationRow.neuron_id))
        return {tuple(r[:4]): (r[4], bool(r[5]), bool(r[6])) for r in rows}


def _policy_best(rows, policy="best"):
    """The labels a policy embeds, from the stored rows: per neuron and explainer its best-scored
    candidate (highest score, then lowest rank); with ``accepted`` also its first candidate and
    every accepted one."""
    groups: dict[tuple, list] = {}
    for key, (score, accepted, _) in rows.items():
        groups.setdefault(key[:3], []).append((key, score, accepted))
    want = set()
    for members in groups.values():
        want.add(min(members, key=lambda m: (m[1] is None, -(m[1] or 0.0), m[0][3]))[0])
        if policy == "accepted":
            want.add(min(members, key=lambda m: m[0][3])[0])
            want.update(m[0] for m in members if m[2])
    return want


@pytest.mark.slow
def test_run_embeds_the_best_labels_by_default_and_all_on_request(tmp_path, db_url, planted_records):
    """The default ``embed="best"`` stores one vector per neuron and explainer: its best-scored
    candidate; ``embed="accepted"`` also the top-ranked and the accepted candidates (concept
    induction keeps several); ``embed="all"`` every candidate. All store the same labels."""
    fields = dict(model_spec="planted", layers=[0], units=[0, 1, 2], explainers=["concept_induction", "pmi"],
                  progress=False, threshold=0.73)  # some candidates of the planted neurons pass, some not
    acc_url, all_url = f"sqlite:///{tmp_path}/accepted.db", f"sqlite:///{tmp_path}/all.db"
    for url in (db_url, acc_url, all_url):
        _store(url, planted_records)
    best = label_neurons(database_url=db_url, **fields)
    acc = label_neurons(database_url=acc_url, embed="accepted", **fields)
    every = label_neurons(database_url=all_url, embed="all", **fields)
    assert best.explanations == acc.explanations == every.explanations > 0 and not best.errors
    rows, acc_rows, all_rows = _vector_rows(db_url), _vector_rows(acc_url), _vector_rows(all_url)
    assert rows.keys() == acc_rows.keys() == all_rows.keys()
    embedded = {k for k, (_, _, has) in rows.items() if has}
    assert embedded == _policy_best(rows)
    assert len(embedded) == len({k[:3] for k in rows})  # one per neuron and explainer
    acc_embedded = {k for k, (_, _, has) in acc_rows.items() if has}
    assert acc_embedded == _policy_best(acc_rows, "accepted")
    assert embedded < acc_embedded < set(rows) and any(a for _, a, _ in rows.values())
    assert all(has for _, _, has in all_rows.values())
    with pytest.raises(ConfigError):
        RunSpec.parse({"embed": "some"})

def test_explain_and_score_each_runs_with_one_blas_thread_and_settled_gc(planted_records, monkeypatch) -> None:
    """The explain path without storage (``POST /v1/explain``) runs its stages as a run does: one
    BLAS thread and the collector settled while they work, the process's own settings back after."""
    import gc

    from threadpoolctl import threadpool_info, threadpool_limits

    import neurolabel.pipeline.run as R

    seen = []
    inner = R.explain_and_score_one

    def spy(record, todo, plugins):
        threads = sorted({i["num_threads"] for i in threadpool_info()
                          if i["user_api"] == "blas" and i.get("threading_layer") == "pthreads"})
        seen.append((threads, gc.get_threshold()[0], gc.get_freeze_count() > 0))
        return inner(record, todo, plugins)

    monkeypatch.setattr(R, "explain_and_score_one", spy)
    thresholds = gc.get_threshold()
    with threadpool_limits(limits=2, user_api="blas"):
        results = R.explain_and_score_each(planted_records[:2], RunSpec(model="planted", explainers=("pmi",)))
        after = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert len(results) == 2 and all(r.explanations for r in results)
    assert seen and all(s == ([R.BLAS_THREADS], R.GC_YOUNG_THRESHOLD, True) for s in seen), seen
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0
    assert after == {2}


@pytest.mark.parametrize("processes", [1, 2])
def test_explaining_runs_with_one_blas_thread_and_settled_gc_and_both_are_restored(tmp_path, planted_records, monkeypatch,
                                                                                     processes):
    """While a run explains and scores, NumPy's BLAS uses BLAS_THREADS (1) threads, in the run's
    own threads and in its forked worker processes; the process's own limit is back afterwards.
    So are the garbage collector's settings (_settle_gc): the young threshold GC_YOUNG_THRESHOLD
    and the objects alive at the start frozen, in both places; none frozen and the thresholds back
    afterwards."""
    import gc
    import json
    import os

    from threadpoolctl import threadpool_info, threadpool_limits

    import neurolabel.pipeline.run as R

    url = f"sqlite:///{tmp_path}/blas.db"
    _store(url, planted_records)
    seen = tmp_path / "seen"
    seen.mkdir()
    inner = R.explain_and_score_one

    def spy(record, todo, plugins):  # runs where the stage runs (a forked worker inherits the patch)
        # process-wide (pthreads) BLAS libraries: NumPy's and SciPy's OpenBLAS, which the stages use. An
        # OpenMP-threaded one (faiss's, loaded once a test used the vector index) keeps its limit per OS
        # thread (OpenMP's ICVs) and reads its default in a thread the limit was not set in
        threads = sorted({i["num_threads"] for i in threadpool_info()
                          if i["user_api"] == "blas" and i.get("threading_layer") == "pthreads"})
        (seen / f"{os.getpid()}-{record.neuron.index}.json").write_text(
            json.dumps([threads, gc.get_threshold()[0], gc.get_freeze_count() > 0]))
        return inner(record, todo, plugins)

    monkeypatch.setattr(R, "explain_and_score_one", spy)
    thresholds = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with threadpool_limits(limits=2, user_api="blas"):  # a known limit other than the run's
        summary = label_neurons(model_spec="planted", database_url=url, layers=[0], units=[0, 1, 2],
                                explainers=["pmi"], processes=processes, concurrency=2)
        after = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert summary.processed == 3 and not summary.errors
    got = [json.loads(p.read_text()) for p in sorted(seen.iterdir())]
    assert len(got) == 3 and all(g == [[R.BLAS_THREADS], R.GC_YOUNG_THRESHOLD, True] for g in got), got
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0
    pids = {p.name.split("-")[0] for p in seen.iterdir()}
    assert (str(os.getpid()) in pids) == (processes == 1)
    assert after == {2}


def test_runs_in_threads_of_one_process_share_the_blas_limit():
    """The BLAS limit is per process: a run that ends while another still explains leaves it in place;
    the libraries' own limits come back when the last run ends."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import neurolabel.pipeline.run as R

    def blas() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):
        first = R._limit_blas()
        second = R._limit_blas()
        assert blas() == {R.BLAS_THREADS}
        first.restore_original_limits()
        assert blas() == {R.BLAS_THREADS}  # the second run still holds it
        first.restore_original_limits()  # letting go twice changes nothing
        assert blas() == {R.BLAS_THREADS}
        second.restore_original_limits()
        assert blas() == {2}


def test_runs_in_threads_of_one_process_share_the_settled_collector():
    """The collector is per process: a run that ends while another still explains leaves it settled;
    its own thresholds come back, and nothing stays frozen, when the last run ends (what a process
    froze before stays frozen)."""
    import gc

    import neurolabel.pipeline.run as R

    before = gc.get_threshold()
    first = R._settle_gc()
    kept = object(), []  # alive when the second run starts: frozen by it
    second = R._settle_gc()
    assert gc.get_threshold()[0] == R.GC_YOUNG_THRESHOLD and gc.get_freeze_count() > 0
    first.restore()
    assert gc.get_threshold()[0] == R.GC_YOUNG_THRESHOLD and gc.get_freeze_count() > 0  # the second still holds it
    first.restore()  # letting go twice changes nothing
    assert gc.get_threshold()[0] == R.GC_YOUNG_THRESHOLD
    second.restore()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0 and kept
    # a process that froze its heap itself (a server's settled heap) keeps it frozen
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        R._settle_gc().restore()
        assert gc.get_freeze_count() >= frozen > 0 and gc.get_threshold() == before
    finally:
        gc.unfreeze()


@pytest.mark.slow
def test_fast_concept_induction_is_a_version_of_its_own(db_url, planted_records):
    """A run with concept induction's FAST searches (``neurolabel label --fast``) stores one candidate per
    neuron under version ``6-fast``; a later run with the default searches does not count those neurons
    done and labels them again (both versions kept), and a FAST rerun skips them."""
    from sqlalchemy import select

    from neurolabel.explainers.concept_induction import FAST
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.models import ExplanationRow

    _store(db_url, planted_records[:2])
    kw = dict(model_spec="planted", layers=[0], units=[0, 1], database_url=db_url, progress=False)
    fast = label_neurons(explainers=[{"kind": "concept_induction", **FAST}], **kw)
    assert fast.processed == 2 and not fast.errors

    def versions() -> dict[str, int]:
        with session_scope(db_url) as session:
            got: dict[str, int] = {}
            for v in session.execute(select(ExplanationRow.explainer_version)).scalars():
                got[v] = got.get(v, 0) + 1
            return got

    assert versions() == {"6-fast": 2}
    full = label_neurons(explainers=["concept_induction"], **kw)
    assert full.processed == 2 and full.skipped == 0
    got = versions()
    assert got["6-fast"] == 2 and got["6"] > 2
    again = label_neurons(explainers=[{"kind": "concept_induction", **FAST}], **kw)
    assert again.processed == 0 and again.skipped == 2
