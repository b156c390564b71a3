"""OpenAI neuron-explainer NeuronRecord JSON: export, import, files."""

from __future__ import annotations

import json

import pytest

from neurolabel.activations.openai_format import RecordFileError, from_openai_json, read_records, to_openai_json, write_records
from neurolabel.core.types import ActivationRecord, NeuronId, NeuronRecord, NeuronStats, TokenStat, TokenStats


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
        token_stats=TokenStats(count=150, mean=0.2, tokens=(TokenStat(" b", 12, 1.5), TokenStat("c", 3, -0.25)),
                               tracked_types=49152),
        prefix=("<|im_start|>",),
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


def test_export_says_which_prefix_the_activations_follow():
    d = to_openai_json(_record())
    assert d["neurolabel"]["prefix"] == ["<|im_start|>"]
    assert d["neurolabel"]["token_stats"]["tokens"][0] == [" b", 12, 1.5]


def _plain(n_top: int, n_random: int) -> dict:
    """A record as OpenAI's files hold it: window k's activations are (k,) for top windows and
    (100 + k,) for random ones, so each imported window says which one it was."""
    def act(v):
        return {"dataclass_name": "ActivationRecord", "tokens": ["x"], "activations": [float(v)]}

    return {"dataclass_name": "NeuronRecord",
            "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 3, "neuron_index": 17},
            "most_positive_activation_records": [act(n_top - k) for k in range(n_top)],
            "random_sample": [act(100 + k) for k in range(n_random)],
            "random_sample_by_quantile": [[act(7)], [act(8)]]}


def test_plain_openai_import_slices_as_openai_does():
    d = _plain(20, 15)
    with pytest.raises(RecordFileError, match="no model name"):
        from_openai_json(d)
    r = from_openai_json(d, model="gpt2-xl")
    assert r.model == "gpt2-xl" and r.neuron == NeuronId(3, 17)
    top = [20 - int(w.activations[0]) for w in r.top]  # the position each kept top window had
    explain = [k for k, w in zip(top, r.top) if w.split == "explain"]
    score = [k for k, w in zip(top, r.top) if w.split == "score"]
    assert explain == [0, 4, 8, 12, 16]  # OpenAI's train records T0, T4, T8, …
    assert score == [2, 6, 10, 14, 18]  # their valid records T2, T6, …
    assert [int(w.activations[0]) - 100 for w in r.random] == [1, 4, 7, 10, 13]  # R1, R4, R7, …
    assert all(w.split == "score" for w in r.random)  # random records never explain
    assert r.quantile == () and r.stats is None and r.prefix == () and r.token_stats is None
    assert all(w.window_id == -1 for w in r.top + r.random)
    # as many random as top records are scored, as in OpenAI's scoring
    assert len(r.windows("top", "score")) == len(r.windows("random", "score"))


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
