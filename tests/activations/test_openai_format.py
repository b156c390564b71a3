"""OpenAI neuron-explainer NeuronRecord JSON: export, import, files."""

from __future__ import annotations

import json

import pytest

from neurolabel.activations.openai_format import RecordFileError, from_openai_json, read_records, to_openai_json, write_records
from neurolabel.core.types import ActivationRecord, NeuronId, NeuronRecord, NeuronStats


def _record() -> NeuronRecord:
    def rec(wid, split, kind, acts, q=None):
        return ActivationRecord(tokens=("a", " b", "c"), activations=acts, window_id=wid, split=split, kind=kind,
                                quantile=q)

    return NeuronRecord(
        model="m",
        neuron=NeuronId(3, 17),
        top=(rec(5, "score", "top", (0.0, 2.5, 1.0)), rec(9, "explain", "top", (1.5, 0.0, -0.5))),
        random=(rec(1, "explain", "random", (0.1, 0.2, 0.3)),),
        quantile=(rec(1, "explain", "quantile", (0.1, 0.2, 0.3), 0), rec(7, "score", "quantile", (0.4, 0.9, 0.0), 1)),
        stats=NeuronStats(count=300, mean=0.1, std=0.5, max=2.5, min=-0.5, frac_active=0.4),
    )


def test_export_has_openai_fields():
    d = to_openai_json(_record())
    assert d["neuron_id"] == {"dataclass_name": "NeuronId", "layer_index": 3, "neuron_index": 17}
    assert d["most_positive_activation_records"][0] == {
        "dataclass_name": "ActivationRecord", "tokens": ["a", " b", "c"], "activations": [0.0, 2.5, 1.0]}
    assert len(d["random_sample"]) == 1
    assert [len(b) for b in d["random_sample_by_quantile"]] == [1, 1]
    assert d["mean"] == 0.1 and d["variance"] == pytest.approx(0.25)
    json.dumps(d)  # JSON-able
    assert "neurolabel" not in to_openai_json(_record(), include_neurolabel=False)


def test_round_trip_is_lossless():
    r = _record()
    assert from_openai_json(json.loads(json.dumps(to_openai_json(r)))) == r


def test_plain_openai_import_interleaves_splits():
    d = to_openai_json(_record(), include_neurolabel=False)
    with pytest.raises(RecordFileError, match="no model name"):
        from_openai_json(d)
    r = from_openai_json(d, model="gpt2-xl")
    assert r.model == "gpt2-xl" and r.neuron == NeuronId(3, 17)
    assert [w.split for w in r.top] == ["explain", "score"]
    assert all(w.window_id == -1 for w in r.top + r.random + r.quantile)
    assert [w.quantile for w in r.quantile] == [0, 1]
    assert r.stats is None


def test_read_records_json_list_and_jsonl(tmp_path):
    r = _record()
    one = tmp_path / "one.json"
    one.write_text(json.dumps(to_openai_json(r)))
    many = tmp_path / "many.json"
    many.write_text(json.dumps([to_openai_json(r), to_openai_json(r)]))
    lines = tmp_path / "r.jsonl"
    assert write_records(lines, [r, r, r]) == 3
    assert read_records(one) == [r]
    assert read_records(many) == [r, r]
    assert read_records(lines) == [r, r, r]


def test_bad_record_files(tmp_path):
    with pytest.raises(RecordFileError, match="does not exist"):
        read_records(tmp_path / "nope.json")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(to_openai_json(_record())) + "\n{not json\n")
    with pytest.raises(RecordFileError, match="bad.jsonl: line 2: not JSON"):
        read_records(bad)
    d = to_openai_json(_record())
    d["most_positive_activation_records"][1]["activations"] = [1.0]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(d))
    with pytest.raises(RecordFileError, match=r"most_positive_activation_records\[1\].*3 tokens but 1 activations"):
        read_records(broken)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(RecordFileError, match="holds no records"):
        read_records(empty)
