"""The load stage's JSON decoding of a window's tokens and activations: orjson where it reads the
text, the standard library where it does not, the same values either way."""

from __future__ import annotations

import json
import math
from dataclasses import replace

from neurolabel.core.types import ActivationRecord, NeuronId
from neurolabel.storage import db
from neurolabel.storage import queries as q
from neurolabel.storage import reads
from tests.storage.factories import record


def test_json_loads_reads_what_json_dumps_writes() -> None:
    values = [[0.1, -2.5e-7, 1e308, 5e-324, 0.30000000000000004, 12345678.9, 1.0, 0, 7],
              [" with", "é", "日本", "\u2028", "\t\"'\\", "<|im_start|>", ""], []]
    for v in values:
        text = json.dumps(v)
        got = reads._json_loads(text)
        assert got == v and json.dumps(got) == text
        assert [type(x) for x in got] == [type(x) for x in v]
    # what orjson refuses goes to the standard library: NaN, infinities, lone surrogates
    for v in ([float("nan"), 1.0], [float("inf")], ["\ud800x"]):
        got = reads._json_loads(json.dumps(v))
        assert json.dumps(got) == json.dumps(v)
    assert math.isnan(reads._json_loads("[NaN]")[0])


def test_window_tokens_and_activations_read_back_exactly(migrated_url: str) -> None:
    rec = record(0, 0)
    odd = ActivationRecord(tokens=(" naïve", "🙂", "日本", "\n", "\"q\"", " 0.1"),
                           activations=(0.1, 0.30000000000000004, -1e-300, 123456.789, 1 / 3, 2.5e-8),
                           window_id=4242, split=rec.top[0].split, kind="top")
    rec = replace(rec, top=(odd, *rec.top[1:]))
    with db.session_scope(migrated_url) as s:
        q.upsert_model(session=s, name="tiny", architecture="LlamaForCausalLM", source="test",
                       unit_map={"mlp": "model.layers.{layer}.mlp.act_fn"}, n_layers=2, n_units=8)
        q.save_neuron_records(session=s, records=[rec])
    with db.session_scope(migrated_url) as s:
        got = q.load_neuron_record(session=s, model="tiny", neuron=NeuronId(0, 0))
    assert got == rec
    assert got.top[0].tokens == odd.tokens and got.top[0].activations == odd.activations


def test_windows_written_as_encoded_json_read_back_exactly(migrated_url: str) -> None:
    """save_neuron_records encodes a window's tokens once per write and its activations with orjson,
    the standard library where orjson refuses (a lone surrogate): every value reads back as it was,
    finite values whose sum overflows included, and the same tokens shared by two windows."""
    import numpy as np

    rec = record(0, 0)
    split = rec.top[0].split
    tokens = ("\ud800", " x", "日本", "\u2028", "", "<|im_start|>")
    huge = ActivationRecord(tokens=tokens, activations=(1e308, 1e308, -0.0, 5e-324, 1, np.float64(0.25)),
                            window_id=7, split=split, kind="top")
    twin = ActivationRecord(tokens=tuple(tokens), activations=(0.5,) * 6, window_id=7, split=split, kind="top")
    rec = replace(rec, top=(huge, twin, *rec.top[2:]))
    with db.session_scope(migrated_url) as s:
        q.upsert_model(session=s, name="tiny", architecture="LlamaForCausalLM", source="test",
                       unit_map={"mlp": "model.layers.{layer}.mlp.act_fn"}, n_layers=2, n_units=8)
        q.save_neuron_records(session=s, records=[rec])
    with db.session_scope(migrated_url) as s:
        got = q.load_neuron_record(session=s, model="tiny", neuron=NeuronId(0, 0))
    assert got.top[0].tokens == tokens and got.top[1].tokens == tokens
    assert got.top[0].activations == (1e308, 1e308, -0.0, 5e-324, 1.0, 0.25)
    assert math.copysign(1.0, got.top[0].activations[2]) == -1.0
    assert got.top[1:] == rec.top[1:]
    assert max(got.top[0].activations) == 1e308


def test_loads_decode_a_shared_window_once_and_the_memo_is_bounded(migrated_url: str, monkeypatch) -> None:
    """Two records holding the same window read back equal, its tokens decoded once (the same tuple);
    the memo of decoded windows starts afresh when full, the records still read back exactly."""
    recs = [record(0, 0), record(0, 1)]
    assert recs[0].random[0].tokens == recs[1].random[0].tokens
    with db.session_scope(migrated_url) as s:
        q.upsert_model(session=s, name="tiny", architecture="LlamaForCausalLM", source="test",
                       unit_map={"mlp": "model.layers.{layer}.mlp.act_fn"}, n_layers=2, n_units=8)
        q.save_neuron_records(session=s, records=recs)
    reads._TOKENS_MEMO.clear()
    with db.session_scope(migrated_url) as s:
        got = [q.load_neuron_record(session=s, model="tiny", neuron=NeuronId(0, i)) for i in (0, 1)]
    assert got == recs and got[0].random[0].tokens is got[1].random[0].tokens
    monkeypatch.setattr(reads, "_TOKENS_MEMO_MAX", 2)
    reads._TOKENS_MEMO.clear()
    with db.session_scope(migrated_url) as s:
        again = [q.load_neuron_record(session=s, model="tiny", neuron=NeuronId(0, i)) for i in (0, 1)]
    assert again == recs and len(reads._TOKENS_MEMO) <= 2
