"""`neurolabel record`: records reach the database and the JSONL file; bad input writes nothing."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from neurolabel.activations.openai_format import read_records
from neurolabel.core.errors import ConfigError, CorpusError, ModelError
from neurolabel.core.types import NeuronId
from neurolabel.service.cli import app
from neurolabel.service.cli_record import parse_int_list


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("corpus") / "c.txt"
    p.write_text("".join(f"the quick brown fox number {i} jumps over the lazy dog\n" for i in range(150)))
    return p


def test_parse_int_list():
    assert parse_int_list("0,10,29", what="layers") == [0, 10, 29]
    assert parse_int_list("0-3,7", what="units") == [0, 1, 2, 3, 7]
    assert parse_int_list("all", what="units") is None
    with pytest.raises(ConfigError, match="--layers: cannot read 'x'"):
        parse_int_list("1,x", what="layers")


def test_record_to_db_and_jsonl(gpt2_dir, corpus_file, db_url, tmp_path):
    out = tmp_path / "recs.jsonl"
    res = CliRunner().invoke(app, ["record", "--model", str(gpt2_dir), "--layers", "0,2", "--units", "0-9",
                                   "--corpus", str(corpus_file), "--max-tokens", "1024", "--top-k", "5",
                                   "--window-tokens", "32", "--db", db_url, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "recorded 20 neurons" in res.output
    recs = read_records(out)
    assert [r.neuron for r in recs] == [NeuronId(l, u) for l in (0, 2) for u in range(10)]
    assert all(len(r.windows("top", "explain")) <= 5 and r.top for r in recs)
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import load_neuron_record, recorded_neurons

    with session_scope(db_url) as s:
        assert len(recorded_neurons(session=s, model="tiny-gpt2")) == 20
        stored = load_neuron_record(session=s, model="tiny-gpt2", neuron=NeuronId(2, 7))
    assert stored.top == recs[17].top and stored.stats == recs[17].stats


@pytest.mark.parametrize(
    "args, error, message",
    [
        (["--layers", "0,3"], ModelError, r"layer\(s\) \[3\] do not exist"),
        (["--units", "0,128"], ModelError, r"unit\(s\) \[128\] do not exist"),
        (["--corpus", "EMPTY"], CorpusError, "is empty"),
        (["--corpus", "BINARY"], CorpusError, "not a text file"),
        (["--model", "/no/such/model"], ModelError, "does not exist"),
    ],
)
def test_bad_input_writes_nothing(gpt2_dir, corpus_file, tmp_path, args, error, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    args = [{"EMPTY": str(empty), "BINARY": str(binary)}.get(a, a) for a in args]
    base = {"--model": str(gpt2_dir), "--layers": "0", "--corpus": str(corpus_file), "--units": "all"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    db = tmp_path / "labels.db"
    out = tmp_path / "out.jsonl"
    cmd = ["record", *[x for kv in base.items() for x in kv], "--max-tokens", "512", "--db", f"sqlite:///{db}",
           "--out", str(out), "--no-progress"]
    res = CliRunner().invoke(app, cmd)
    assert res.exit_code != 0
    assert isinstance(res.exception, error) and __import__("re").search(message, str(res.exception))
    assert not db.exists() and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl")]
