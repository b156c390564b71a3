"""A labelling run records the missing layers in as few corpus passes as its memory budget allows, and
each layer's stored records are the same as from a pass over that layer alone."""

from __future__ import annotations

import pytest

from neurolabel.core.types import NeuronId
from tests.activations.tiny import tiny_gpt2_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from neurolabel.activations.models import load_target

    path = tiny_gpt2_dir(tmp_path_factory.mktemp("models"))
    return path, load_target(str(path))


def test_passes_group_layers_with_the_same_units_within_the_budget(gpt2):
    from neurolabel.activations.record import layer_state_bytes
    from neurolabel.pipeline.run import record_passes

    _, target = gpt2
    units = list(range(128))
    per_layer_mb = layer_state_bytes(128, vocab_size=len(target.tokenizer)) / 2**20
    every = {0: units, 1: units, 2: units}
    assert record_passes(every, target=target, options={}, budget_mb=3 * per_layer_mb) == [([0, 1, 2], units)]
    assert record_passes(every, target=target, options={}, budget_mb=2.5 * per_layer_mb) == [([0, 1], units),
                                                                                            ([2], units)]
    # less than one layer's state: one layer per pass all the same
    assert record_passes(every, target=target, options={}, budget_mb=1.0) == [([0], units), ([1], units),
                                                                              ([2], units)]
    mixed = {2: [5], 0: [0, 1], 1: [0, 1]}
    assert record_passes(mixed, target=target, options={}, budget_mb=10_000) == [([0, 1], [0, 1]), ([2], [5])]
    # larger windows and more top windows take more memory per layer: fewer layers per pass
    big = layer_state_bytes(128, vocab_size=len(target.tokenizer), top_k=40, window_tokens=128)
    assert big > per_layer_mb * 2**20
    assert len(record_passes(every, target=target, options={"top_k": 40, "window_tokens": 128},
                             budget_mb=3 * per_layer_mb)) == 2
    # the corpus's explain-split types known: the token sums take a row per type the corpus holds, not per id
    from neurolabel.pipeline.run import _explain_types

    types = _explain_types(target, "default", {"max_tokens": 1024})
    small = layer_state_bytes(128, vocab_size=len(target.tokenizer), explain_types=types)
    assert 3 * small < per_layer_mb * 2**20
    assert record_passes(every, target=target, options={}, budget_mb=3 * small / 2**20,
                         explain_types=types) == [([0, 1, 2], units)]
    assert len(record_passes(every, target=target, options={}, budget_mb=3 * small / 2**20)) == 3
    # the model recorded elsewhere (a Ray run's driver): its config's vocabulary sizes the token sums
    from neurolabel.activations.models import describe_target

    info = describe_target(str(gpt2[0]))
    assert info.vocab_size > 0 and abs(info.vocab_size - len(target.tokenizer)) < 100
    assert record_passes(every, target=info, options={}, budget_mb=2.5 * per_layer_mb) == [([0, 1], units),
                                                                                          ([2], units)]


def test_layer_state_bytes_is_the_recording_state_per_layer(gpt2):
    """The estimate a run plans its passes with equals what a recording holds (token counts and types
    aside) when it knows the corpus's explain-split types, and bounds it from above when it does not."""
    from neurolabel.activations.corpus import iter_windows, load_corpus
    from neurolabel.activations.record import explain_token_types, layer_state_bytes, record_activations

    _, target = gpt2
    V = len(target.tokenizer)
    types = explain_token_types(iter_windows(target.tokenizer, load_corpus("default"), window_tokens=64,
                                             max_windows=1024 // 64), V)
    assert 0 < len(types) < V // 10  # the sums' rows: far fewer than the vocabulary
    for layers in ([1], [0, 1, 2]):
        rec = record_activations(target, "default", layers=layers, units=None, max_tokens=1024, progress=False,
                                 token_stats_mb=256.0 * len(layers))
        assert sorted(rec.state.tok_types.tolist()[1:]) == types
        shared = sum(t.untyped_storage().nbytes() for t in (rec.state.tok_count, rec.state.tok_types))
        exact = layer_state_bytes(128, vocab_size=V, explain_types=types)
        assert rec.state_bytes() - shared == len(layers) * exact
        assert exact * 5 < layer_state_bytes(128, vocab_size=V)  # without the types: a row per id


def test_one_pass_stores_the_records_of_a_pass_per_layer(gpt2, tmp_path, monkeypatch):
    """Recorded in one pass over three layers (a large budget) or in three passes (a budget under one
    layer's state), every stored record is the same; the run makes one or three corpus passes."""
    from neurolabel.core.settings import get_settings
    from neurolabel.pipeline.run import LabelSummary, _LocalRecorder, model_name, record_missing
    from neurolabel.pipeline.spec import RunSpec
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.reads import load_neuron_record

    import neurolabel.pipeline.run as run_mod
    from neurolabel.activations.record import token_types_tracked

    path, target = gpt2
    # each layer's token sums bounded to 1 MB: fewer types than the vocabulary, so a pass over three layers
    # tracks as many as a pass over one only when it is given three layers' budget
    monkeypatch.setattr(run_mod, "TOKEN_STATS_MB", 1.0)
    tracked = token_types_tracked(len(target.tokenizer), 12, 1.0)
    assert tracked < len(target.tokenizer)
    passes: list[list[int]] = []

    class Counting(_LocalRecorder):
        def record(self, corpus, **kwargs):
            passes.append(list(kwargs["layers"]))
            return super().record(corpus, **kwargs)

    spec = RunSpec.parse({"model": str(path), "layers": [0, 1, 2], "units": list(range(12)),
                          "record": {"max_tokens": 2048}})
    stored = {}
    for budget in ("10000", "1"):
        monkeypatch.setenv("NEUROLABEL_RECORD_MEMORY_MB", budget)
        get_settings.cache_clear()
        try:
            passes.clear()
            url = f"sqlite:///{tmp_path}/budget-{budget}.db"
            upgrade(url)
            summary = LabelSummary(model=model_name(spec.model))
            record_missing(spec, database_url=url, progress=False, summary=summary,
                           recorder=lambda: Counting(target))
            assert summary.recorded == 36
            stored[budget] = passes[:]
            with session_scope(url) as session:
                stored[budget, "records"] = [load_neuron_record(session=session, model=summary.model,
                                                                neuron=NeuronId(layer, unit))
                                             for layer in range(3) for unit in range(12)]
        finally:
            monkeypatch.delenv("NEUROLABEL_RECORD_MEMORY_MB")
            get_settings.cache_clear()
    assert stored["10000"] == [[0, 1, 2]] and stored["1"] == [[0], [1], [2]]
    one, three = stored["10000", "records"], stored["1", "records"]
    assert all(r is not None for r in one) and one == three
    assert all(r.token_stats is not None and r.token_stats.tokens and r.token_stats.tracked_types == tracked
               for r in one)


_FORKED_TORCH = """
import sys
import torch
from neurolabel.pipeline import run as run_mod

torch.set_num_threads(2)
x = torch.randn(256, 64, 384)
for _ in range(10):  # the parent's parallel regions, as a run that records its neurons first runs them
    torch.nn.functional.layer_norm(x, (384,))


def in_worker(neuron, todo):  # what the embedding simulator's MiniLM does in a worker
    y = torch.randn(256, 64, 384)
    for _ in range(3):
        torch.nn.functional.layer_norm(y, (384,))
    return torch.get_num_threads()


run_mod._in_process = in_worker
plugins = run_mod.Plugins(explainers={}, simulators={}, scorer=None, ontology=None, versions={}, ontologies={})
work = run_mod._Work(plugins=plugins, model="m", database_url="sqlite://")
with run_mod._ProcessPool(2, work) as pool:
    print("threads", [pool.submit(work, None, []).result() for _ in range(4)])
"""


def test_worker_processes_run_torch_after_the_parent_did(tmp_path):
    """A run's worker processes are forked after the run recorded in its own process (torch's parallel
    regions on two threads): torch work in a worker (the embedding simulator) must finish, not wait for
    OpenMP threads the fork did not copy (a whole-model run hung so). Run in a subprocess: a hang fails
    it at the timeout instead of stopping the suite."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "forked_torch.py"
    script.write_text(_FORKED_TORCH)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a hang is killed with its workers
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the worker processes hung in torch's layer_norm")
    assert proc.returncode == 0, err[-2000:]
    assert "threads [1, 1, 1, 1]" in out


def _records(url, model, layers, units):
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.reads import load_neuron_record

    with session_scope(url) as session:
        return [load_neuron_record(session=session, model=model, neuron=NeuronId(layer, unit))
                for layer in layers for unit in units]


def test_run_labels_each_layer_once_a_process_of_its_own_stored_its_records(gpt2, tmp_path, monkeypatch):
    """A run stores its recording's layers in a forked process while it labels the layers already
    stored: the records are the ones record_missing stores, every neuron is labelled (none loaded
    before its record was there); a failure storing a layer fails the run naming it, keeps the
    layers stored before, and a rerun records and labels the rest."""
    import neurolabel.storage.queries as queries
    from neurolabel.core.errors import StorageError
    from neurolabel.pipeline.run import LabelSummary, model_name, record_missing, run
    from neurolabel.pipeline.spec import RunSpec
    from neurolabel.storage.db import upgrade

    path, _ = gpt2
    units = list(range(8))
    spec = RunSpec.parse({"model": str(path), "layers": [0, 1, 2], "units": units, "explainers": ["tokens"],
                          "processes": 2, "record": {"max_tokens": 2048}})
    name = model_name(spec.model)
    ref = f"sqlite:///{tmp_path}/ref.db"
    upgrade(ref)
    record_missing(spec, database_url=ref, progress=False, summary=LabelSummary(model=name))
    want = _records(ref, name, [0, 1, 2], units)

    url = f"sqlite:///{tmp_path}/run.db"
    summary = run(spec, database_url=url, progress=False)
    assert (summary.recorded, summary.processed, summary.errors) == (24, 24, [])
    assert summary.explanations > 0
    assert _records(url, name, [0, 1, 2], units) == want

    # the storing process fails on layer 1: the run fails naming it, layer 0 stays stored and labelled
    real = queries.save_neuron_records

    def failing(*, session, records, **kw):
        records = list(records)
        if records and records[0].neuron.layer == 1:
            raise StorageError("disk full (planted)")
        return real(session=session, records=records, **kw)

    monkeypatch.setattr(queries, "save_neuron_records", failing)
    url = f"sqlite:///{tmp_path}/fail.db"
    with pytest.raises(StorageError, match=r"disk full \(planted\)"):
        run(spec, database_url=url, progress=False)
    got = _records(url, name, [0, 1, 2], units)
    assert got[:8] == want[:8] and got[8:] == [None] * 16
    monkeypatch.setattr(queries, "save_neuron_records", real)
    summary = run(spec, database_url=url, progress=False)
    # (the failed run's neurons of layer 0 still in flight when it failed are labelled now)
    assert (summary.recorded, summary.processed + summary.skipped, summary.errors) == (16, 24, [])
    assert _records(url, name, [0, 1, 2], units) == want
