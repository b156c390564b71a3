"""The nightly run on the real pipeline (tiny random Llama, small corpus, concept induction):
labels what is missing, skips what is done, redoes what is stale after an explainer version
change, resumes after being SIGKILLed, writes JSON/Markdown summaries and a log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from neurolabel.service.nightly import load_config, run_nightly
from neurolabel.storage.db import make_engine, session_factory

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, assets, units: str) -> Path:
    model, corpus = assets
    cfg = tmp_path / "nightly.toml"
    cfg.write_text(
        f'database_url = "sqlite:///{tmp_path}/labels.db"\noutput_dir = "reports"\n'
        f'[[models]]\nmodel = "{model}"\nlayers = [0, 1]\nunits = "{units}"\n'
        f'explainers = ["concept_induction"]\ncorpus = "{corpus}"\nmax_tokens = 2000\ntop_k = 5\nn_random = 4\n'
        'store_every = 2\n'
    )
    return cfg


def _explanations(url: str) -> list[tuple]:
    from neurolabel.storage.models import ExplanationRow, Neuron

    engine = make_engine(url)
    with session_factory(engine)() as s:
        rows = s.execute(select(Neuron.layer, Neuron.index, ExplanationRow.explainer_version, ExplanationRow.rank,
                                ExplanationRow.id).join(Neuron, Neuron.id == ExplanationRow.neuron_id)).all()
        assert s.scalar(select(func.count(ExplanationRow.id))) == len(rows)
    engine.dispose()
    return sorted(tuple(r) for r in rows)


def test_missing_then_nothing_then_stale(tmp_path, assets, monkeypatch):
    cfg = load_config(_config(tmp_path, assets, "0-2"))
    first = run_nightly(cfg)
    assert first["status"] == "ok", first
    (m,) = first["models"]
    assert m["result"]["neurons"] == 6 and m["result"]["recorded"] == 6
    assert m["result"]["processed"] == 6 and m["result"]["skipped"] == 0
    from neurolabel.explainers.concept_induction import ConceptInductionExplainer

    v1 = ConceptInductionExplainer.version
    rows1 = _explanations(cfg.database_url)
    assert rows1 and {r[2] for r in rows1} == {v1}

    for f in (first["summary_json"], first["summary_md"], first["log"]):
        assert Path(f).is_file() and Path(f).parent == cfg.output_dir
    assert json.loads((cfg.output_dir / "nightly-latest.json").read_text())["status"] == "ok"
    assert "concept_induction" in Path(first["summary_md"]).read_text()
    assert "nightly summary" in Path(first["log"]).read_text()

    time.sleep(1.1)  # summaries are named by the second
    second = run_nightly(cfg)
    r2 = second["models"][0]["result"]
    assert (r2["recorded"], r2["processed"], r2["skipped"]) == (0, 0, 6)
    assert _explanations(cfg.database_url) == rows1

    monkeypatch.setattr(ConceptInductionExplainer, "version", v1 + ".next")  # a new explainer version
    time.sleep(1.1)
    third = run_nightly(cfg)
    r3 = third["models"][0]["result"]
    assert (r3["recorded"], r3["processed"], r3["skipped"]) == (0, 6, 0)
    rows3 = _explanations(cfg.database_url)
    assert set(rows1) <= set(rows3)  # old labels kept
    assert {r[2] for r in rows3} == {v1, v1 + ".next"}
    assert len(list(cfg.output_dir.glob("nightly-2*.json"))) == 3


def test_nightly_resumes_after_sigkill(tmp_path, assets):
    cfg_path = _config(tmp_path, assets, "0-3")
    cfg = load_config(cfg_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "neurolabel.service.cli", "nightly", str(cfg_path)]
    # paced (0.3 s per neuron) so that the kill lands mid-run: unpaced, the tiny job can end between polls
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, "NEUROLABEL_NEURON_DELAY_S": "0.3"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = Path(cfg.database_url.removeprefix("sqlite:///"))
    try:
        end = time.monotonic() + 240
        while time.monotonic() < end and proc.poll() is None:
            if db.exists():
                try:
                    if len({(r[0], r[1]) for r in _explanations(cfg.database_url)}) >= 2:
                        break
                except Exception:  # noqa: BLE001 - tables not created yet
                    pass
            time.sleep(0.3)
        assert proc.poll() is None, proc.stdout.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    before = _explanations(cfg.database_url)
    done_before = {(r[0], r[1]) for r in before}
    assert len(done_before) >= 2

    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "nightly: ok" in res.stdout
    summary = json.loads((cfg.output_dir / "nightly-latest.json").read_text())
    r = summary["models"][0]["result"]
    assert r["neurons"] == 8 and r["recorded"] == 0
    assert r["skipped"] >= len(done_before) - 1 and r["skipped"] + r["processed"] == 8
    after = _explanations(cfg.database_url)
    assert set(before) <= set(after)
