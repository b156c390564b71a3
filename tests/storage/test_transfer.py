"""Export -> import round trips, OpenAI files, bad input (clear error, database unchanged), CLI."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from neurolabel.activations.openai_format import to_openai_json
from neurolabel.core.errors import StorageError
from neurolabel.core.types import NeuronId
from neurolabel.service.cli import app
from neurolabel.storage import db
from neurolabel.storage import queries as q
from neurolabel.storage.models import Example, ExplanationRow, Model, Neuron, Score
from neurolabel.storage.transfer import export_file, export_string, import_file
from tests.storage.factories import counts, explanation, hash_embedder, record


HASH = "0123456789abcdef" * 4
"""An ontology's content hash (a SHA-256 in hex) that one explanation names."""


def _fill(url: str) -> None:
    with db.session_scope(url) as s:
        q.upsert_model(session=s, name="tiny", architecture="LlamaForCausalLM", source="unit test",
                       unit_map={"mlp": "layers.{layer}.mlp"}, n_layers=3, n_units=16)
        q.save_neuron_records(session=s, records=[record(0, i) for i in range(3)] + [record(2, 5, model="other")])
        q.save_explanations(
            session=s,
            explanations=[
                replace(explanation(0, 0, "cats, kittens", 0.8), ontology="wordnet-mini", ontology_hash=HASH),
                explanation(0, 0, "cats", 0.5, version="2"),
                explanation(0, 1, 'quotes "and, commas"\nnewline', 0.1, explainer="llm_summary"),
                explanation(1, 9, "label only, never recorded", None),
                explanation(2, 5, "other model", 0.7, model="other"),
            ],
            threshold=0.3,
            embedder=hash_embedder,
        )


def _dump(url: str) -> dict[str, list]:
    """Every data row by natural keys (no surrogate ids)."""
    with db.session_scope(url) as s:
        names = dict(s.execute(select(Model.id, Model.name)).all())
        neurons = {n.id: (names[n.model_id], n.layer, n.index) for n in s.execute(select(Neuron)).scalars()}
        expl = {e.id: (*neurons[e.neuron_id], e.explainer, e.explainer_version, e.rank)
                for e in s.execute(select(ExplanationRow)).scalars()}
        out = {
            "models": sorted((m.name, m.architecture, m.source, json.dumps(m.unit_map, sort_keys=True), m.n_layers,
                              m.n_units) for m in s.execute(select(Model)).scalars()),
            "neurons": sorted((*neurons[n.id], json.dumps(n.stats, sort_keys=True), n.recorded_at)
                              for n in s.execute(select(Neuron)).scalars()),
            "examples": sorted((*neurons[x.neuron_id], x.kind, x.position, x.split, x.window_id, x.quantile,
                                tuple(x.tokens), tuple(x.activations), x.max_activation)
                               for x in s.execute(select(Example)).scalars()),
            "explanations": sorted((*expl[e.id], e.text, json.dumps(e.structured, sort_keys=True),
                                    json.dumps(e.params, sort_keys=True), e.score, e.accepted, e.embedding, e.created_at,
                                    e.ontology, e.ontology_hash, e.score_se, e.fit_tokens, e.selected)
                                   for e in s.execute(select(ExplanationRow)).scalars()),
            "scores": sorted((*expl[x.explanation_id], x.scorer, x.simulator, x.split, x.score,
                              json.dumps(x.parts, sort_keys=True), x.n_tokens, x.method)
                             for x in s.execute(select(Score)).scalars()),
        }
    return out


def test_export_import_round_trip(db_url: str, sqlite_url: str, tmp_path: Path) -> None:
    db.upgrade(db_url)
    _fill(db_url)
    path = tmp_path / "export.jsonl"
    with db.session_scope(db_url) as s:
        n = export_file(session=s, path=path, format="neurolabel")
    assert n > 0 and path.read_text().splitlines()[0] == '{"format": "neurolabel-export", "version": 1}'
    # into an empty database of the same engine: identical rows
    target = db_url + "_copy" if not db.is_sqlite(db_url) else str(tmp_path / "copy.db")
    if db.is_sqlite(db_url):
        target = f"sqlite:///{target}"
    else:
        import psycopg

        from tests.conftest import PG_ADMIN_URL

        name = db_url.rsplit("/", 1)[1] + "_copy"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        target = db_url.rsplit("/", 1)[0] + "/" + name
    try:
        db.upgrade(target)
        with db.session_scope(target) as s:
            summary = import_file(session=s, path=path)
        assert summary.models == 2 and summary.records == 4 and summary.explanations == 5
        assert _dump(target) == _dump(db_url)
        # importing again changes nothing (idempotent)
        with db.session_scope(target) as s:
            import_file(session=s, path=path)
        assert _dump(target) == _dump(db_url)
        with db.session_scope(target) as s:
            assert export_string(session=s) == path.read_text()
            hits = q.search_labels(session=s, query="kittens")
            assert [h["text"] for h in hits] == ["cats, kittens"]
            # the label still names the ontology it was induced over (concept search, causal scoring check it)
            row = s.execute(select(ExplanationRow).where(ExplanationRow.text == "cats, kittens")).scalar_one()
            assert (row.ontology, row.ontology_hash) == ("wordnet-mini", HASH)
    finally:
        db.dispose_engines()
        if not db.is_sqlite(db_url):
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_openai_export_import_and_other_formats(sqlite_migrated: str, sqlite_url: str, tmp_path: Path) -> None:
    _fill(sqlite_migrated)
    with db.session_scope(sqlite_migrated) as s:
        lines = export_string(session=s, format="openai", model="tiny").splitlines()
        assert len(lines) == 3  # recorded neurons of that model only
        first = json.loads(lines[0])
        assert first["neuron_id"] == {"dataclass_name": "NeuronId", "layer_index": 0, "neuron_index": 0}
        rows = list(csv.DictReader(io.StringIO(export_string(session=s, format="csv"))))
        assert len(rows) == 5 and {r["text"] for r in rows} >= {'quotes "and, commas"\nnewline'}
        np_items = json.loads(export_string(session=s, format="neuronpedia"))
        assert {(i["modelId"], i["layer"], i["index"], i["description"]) for i in np_items} >= {
            ("tiny", "0-mlp", "0", "cats, kittens")}
        with pytest.raises(StorageError, match="export format"):
            export_string(session=s, format="xml")  # type: ignore[arg-type]
        with pytest.raises(StorageError, match="not in the database"):
            export_string(session=s, format="csv", model="nope")
    # a plain OpenAI file (no neurolabel key), one object and a list
    plain = to_openai_json(record(4, 2), include_neurolabel=False)
    (tmp_path / "one.json").write_text(json.dumps(plain))
    (tmp_path / "many.json").write_text(json.dumps([plain, to_openai_json(record(4, 3), include_neurolabel=False)]))
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    db.upgrade(fresh)
    with db.session_scope(fresh) as s:
        # one rule with the API: a record that names no model, imported without --model, is 'external'
        assert import_file(session=s, path=tmp_path / "one.json").records == 1
        assert q.load_neuron_record(session=s, model="external", neuron=NeuronId(4, 2)) is not None
    with db.session_scope(fresh) as s:
        assert import_file(session=s, path=tmp_path / "many.json", model="gpt2").records == 2
        got = q.load_neuron_record(session=s, model="gpt2", neuron=NeuronId(4, 3))
        assert got.top[0].activations == record(4, 3).top[0].activations
        assert got.top[0].window_id == -1  # unknown in a plain OpenAI file


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    rec = to_openai_json(record(0, 7))
    nan = json.dumps(rec).replace('"activations": [0.0, 0.01, 10.0', '"activations": [0.0, NaN, 10.0', 1)
    short = dict(rec)
    short["most_positive_activation_records"] = [{"tokens": ["a", "b", "c"], "activations": [1.0]}]
    good_then_bad = (tmp_path / "export.jsonl").read_text().rstrip("\n") + '\n{"type": "explanation", "model": "tiny"}\n'
    files = {
        "missing": (tmp_path / "nope.json", "does not exist"),
        "binary": (tmp_path / "bin.json", "UTF-8"),
        "garbage": (tmp_path / "garbage.json", "not JSON"),
        "empty": (tmp_path / "empty.json", "empty"),
        "nan": (tmp_path / "nan.jsonl", "finite"),
        "lengths": (tmp_path / "short.json", "3 tokens but 1 activations"),
        "partial": (tmp_path / "partial.jsonl", "missing field 'text'"),
        "ontology hash": (tmp_path / "hash.jsonl", "ontology.hash must be a SHA-256"),
        "ontology": (tmp_path / "onto.jsonl", "ontology must be an object"),
    }
    files["binary"][0].write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    files["garbage"][0].write_text("{this is not json\nnor this")
    files["empty"][0].write_text("\n")
    files["nan"][0].write_text(json.dumps(to_openai_json(record(0, 8))) + "\n" + nan + "\n")
    files["lengths"][0].write_text(json.dumps(short))
    files["partial"][0].write_text(good_then_bad)
    good = (tmp_path / "export.jsonl").read_text()
    assert good.count(HASH) == 1
    files["ontology hash"][0].write_text(good.replace(HASH, HASH[:-1] + "X"))
    files["ontology"][0].write_text(good.replace('"ontology": {"name": "wordnet-mini", "hash": "' + HASH + '"}',
                                                 '"ontology": "wordnet-mini"'))
    return files


def test_bad_input_is_a_clear_error_and_changes_nothing(db_url: str, tmp_path: Path) -> None:
    db.upgrade(db_url)
    _fill(db_url)
    with db.session_scope(db_url) as s:
        export_file(session=s, path=tmp_path / "export.jsonl")
        q.save_explanations(session=s, explanations=[explanation(0, 2, "extra", 0.9)], embedder=hash_embedder)
    before = _dump(db_url)
    for name, (path, message) in _bad_files(tmp_path).items():
        with pytest.raises(StorageError, match=message):
            with db.session_scope(db_url) as s:
                import_file(session=s, path=path, model="tiny")
        assert _dump(db_url) == before, name


def test_cli_show_search_export_import(sqlite_migrated: str, tmp_path: Path) -> None:
    _fill(sqlite_migrated)
    runner = CliRunner()
    url = sqlite_migrated

    res = runner.invoke(app, ["show", "tiny", "0", "0", "--db", url])
    assert res.exit_code == 0, res.output
    assert "cats, kittens" in res.output and "Top examples" in res.output
    res = runner.invoke(app, ["show", "tiny", "0", "0", "--json", "--db", url])
    data = json.loads(res.output)
    assert data["best_label"]["text"] == "cats, kittens" and len(data["explanations"]) == 2

    res = runner.invoke(app, ["search", "kittens", "--db", url])
    assert res.exit_code == 0 and "cats, kittens" in res.output
    res = runner.invoke(app, ["search", "cats", "--json", "--min-score", "0.6", "--model", "tiny", "--db", url])
    assert [(r["layer"], r["index"], r["text"]) for r in json.loads(res.output)] == [(0, 0, "cats, kittens")]

    out = tmp_path / "cli.jsonl"
    res = runner.invoke(app, ["export", "--format", "neurolabel", "--out", str(out), "--db", url])
    assert res.exit_code == 0, res.output
    copy = f"sqlite:///{tmp_path / 'cli_copy.db'}"  # not migrated: import migrates it
    res = runner.invoke(app, ["import", str(out), "--db", copy])
    assert res.exit_code == 0, res.output
    assert "2 model(s), 4 record(s), 5 explanation(s)" in res.output
    assert _dump(copy) == _dump(url)
    res = runner.invoke(app, ["export", "--format", "csv", "--db", url])
    assert res.exit_code == 0 and res.output.startswith("model,layer,index")

    with db.session_scope(url) as s:
        before = counts(s)
    res = runner.invoke(app, ["import", str(tmp_path / "missing.json"), "--db", url])
    assert res.exit_code != 0 and isinstance(res.exception, StorageError)
    with db.session_scope(url) as s:
        assert counts(s) == before
    res = runner.invoke(app, ["show", "tiny", "9", "9", "--db", url])
    assert isinstance(res.exception, StorageError) and "tiny 9:9" in str(res.exception)


def test_export_reads_neurons_a_batch_at_a_time_in_order(sqlite_migrated: str) -> None:
    """Keyset batches (any size) give every neuron once, in (model, layer, index) order, across models."""
    from neurolabel.storage.transfer import _neuron_batches

    _fill(sqlite_migrated)
    with db.session_scope(sqlite_migrated) as s:
        whole = [(name, n.layer, n.index) for b in _neuron_batches(s, None) for n, name in b]
        assert len(whole) >= 4 and len({m for m, _, _ in whole}) == 2 and whole == sorted(whole)
        for size in (1, 2, 3):
            batches = list(_neuron_batches(s, None, batch=size))
            assert all(len(b) <= size for b in batches)
            assert [(name, n.layer, n.index) for b in batches for n, name in b] == whole
