"""The ontology as a choice: planted units over clinical text, labelled by a run over the project's
clinical ontology (Turtle, SKOS synonyms) registered by the operator, get their classes back; the
stored labels record that ontology, and a label is never scored against another."""

from __future__ import annotations

import shutil

import pytest

from neurolabel.core.errors import ConfigError, ScoringError
from neurolabel.pipeline.run import run
from neurolabel.pipeline.spec import RunSpec
from tests.pipeline.clinical import CLINICAL_TTL, IRI, clinical_sentences

PLANTED = ("Analgesic", "Antibiotic", "SurgicalProcedure", "ImagingProcedure")
MODEL = "planted-clinical"


@pytest.fixture(scope="module")
def clinical():
    from neurolabel.ontology.load import load_ontology

    return load_ontology(CLINICAL_TTL)


@pytest.fixture(scope="module")
def records(clinical):
    from bench.planted import make_pool, plant
    from neurolabel.ontology.annotate import Annotator

    pool = make_pool(clinical_sentences(1500), Annotator(clinical), n_windows=400, window_tokens=32)
    return plant(pool, clinical, [IRI + c for c in PLANTED], n_top=10, n_random=8, model=MODEL)


@pytest.mark.slow
def test_planted_clinical_units_get_their_classes_back(sqlite_url, tmp_path, records, clinical):
    from neurolabel.ontology.identity import content_hash
    from neurolabel.service.sources import resolve_source
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.queries import best_label, get_neuron, save_neuron_records
    from neurolabel.storage.sources import add_source

    root = tmp_path / "data"
    root.mkdir()
    ttl = shutil.copy(CLINICAL_TTL, root / "clinical.ttl")
    upgrade(sqlite_url)
    with session_scope(sqlite_url) as session:
        save_neuron_records(session=session, records=records)
        add_source(session=session, kind="ontology", name="clinical", path=str(ttl))
    with session_scope(sqlite_url) as session:  # the operator registered it; a client names it
        ontology = resolve_source(session=session, kind="ontology", name="clinical", data_dirs=()).spec
        with pytest.raises(ConfigError, match="ontology '/etc/x.ttl' is not allowed"):
            resolve_source(session=session, kind="ontology", name="/etc/x.ttl", data_dirs=(str(root),))
    spec = RunSpec.parse({"model": MODEL, "layers": [0], "units": list(range(len(PLANTED))),
                          "explainers": ["concept_induction", "pmi"], "ontology": ontology})
    summary = run(spec, database_url=sqlite_url, progress=False)
    assert summary.processed == len(PLANTED) and not summary.errors, summary.errors
    digest = content_hash(clinical)
    with session_scope(sqlite_url) as session:
        for i, cls in enumerate(PLANTED):
            info = get_neuron(session=session, model=MODEL, layer=0, index=i)
            ci = [e for e in info["explanations"] if e["explainer"] == "concept_induction"]
            assert ci and all(e["ontology"] == {"name": "clinical", "hash": digest} for e in info["explanations"])
            assert ci[0]["explainer_version"].endswith(f"+clinical.{digest[:12]}")
            assert ci[0]["scores"][0]["simulator"] == "symbolic" and ci[0]["score"] > 0.8, ci[0]
            assert IRI + cls in ci[0]["structured"]["iris"], (cls, ci[0]["text"])
            best = best_label(session=session, model=MODEL, layer=0, index=i)
            assert clinical.label(clinical.find(IRI + cls)) in best["text"].lower(), (cls, best["text"])
    again = run(spec, database_url=sqlite_url, progress=False)  # resumable: nothing left to do
    assert again.skipped == len(PLANTED) and again.explanations == 0


@pytest.mark.slow
def test_a_clinical_label_is_never_scored_against_wordnet(records, clinical):
    from neurolabel.pipeline.plugins import build
    from neurolabel.pipeline.run import explain_and_score
    from neurolabel.scoring.validate import simulate_and_score

    spec = RunSpec.parse({"explainers": ["concept_induction"], "ontology": str(CLINICAL_TTL)})
    [label, *_] = explain_and_score(records[:1], spec)
    assert label.ontology == "clinical" and label.score.score > 0.8
    wordnet = build("simulator", "symbolic")  # over the default ontology
    with pytest.raises(ScoringError, match="refers to ontology 'clinical'.*not 'wordnet"):
        simulate_and_score(label, records[0], simulator=wordnet)


@pytest.mark.slow
def test_cli_registers_the_ontology_and_labels_with_it(sqlite_url, tmp_path, records):
    from typer.testing import CliRunner

    from neurolabel.service.cli import app
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.queries import get_neuron, save_neuron_records

    upgrade(sqlite_url)
    with session_scope(sqlite_url) as session:
        save_neuron_records(session=session, records=records[:1])
    bad = tmp_path / "bad.ttl"
    bad.write_text("@prefix x: <http://x#> .\nx:a x:b x:c .\n")
    refused = CliRunner().invoke(app, ["ontologies", "add", "bad", str(bad), "--db", sqlite_url])
    assert refused.exit_code != 0 and "no classes found" in str(refused.exception or refused.output)
    added = CliRunner().invoke(app, ["ontologies", "add", "clinical", str(CLINICAL_TTL), "--db", sqlite_url])
    assert added.exit_code == 0, added.output
    out = CliRunner().invoke(app, ["label", "--model", MODEL, "--layers", "0", "--units", "0", "--explainers",
                                   "concept_induction", "--ontology", "clinical", "--set",
                                   "concept_induction.fraction=0.25", "--db", sqlite_url, "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "1 explained" in out.output
    with session_scope(sqlite_url) as session:
        [best, *_] = get_neuron(session=session, model=MODEL, layer=0, index=0)["explanations"]
    assert best["ontology"]["name"] == "clinical" and best["params"]["fraction"] == 0.25
    assert IRI + PLANTED[0] in best["structured"]["iris"]
    unknown = CliRunner().invoke(app, ["label", "--model", MODEL, "--layers", "0", "--units", "0", "--explainers",
                                       "concept_induction", "--ontology", "nope", "--db", sqlite_url])
    assert unknown.exit_code != 0 and "neither a registered ontology" in str(unknown.exception or unknown.output)
