"""Every CLI command reports a database or configuration failure in one clear line on stderr
and exits non-zero; the traceback only with ``--debug`` (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
"""A PostgreSQL URL nothing listens on."""


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neurolabel.service.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.mark.parametrize("args", [
    ("keys", "create", "--name", "x", "--db", DOWN),
    ("keys", "list", "--db", DOWN),
    ("serve", "--db", DOWN, "--port", "1"),
    ("worker", "--once", "--db", DOWN),
    ("corpora", "list", "--db", DOWN),
    ("db", "upgrade", "--db", DOWN),
])
def test_database_down_is_one_line(args):
    res = _run(*args)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "database" in lines[0] and "Connection refused" in lines[0], lines
    debug = _run("--debug", *args)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_configuration_failures_are_one_line(tmp_path):
    bad_url = _run("keys", "list", "--db", "nosuchdriver://x")
    assert bad_url.returncode != 0 and len(bad_url.stderr.strip().splitlines()) == 1, bad_url.stderr
    assert "database URL" in bad_url.stderr or "nosuchdriver" in bad_url.stderr

    bad_env = _run("serve", "--db", f"sqlite:///{tmp_path}/x.db", "--port", "1",
                   env={"NEUROLABEL_MAX_QUEUED_JOBS": "many"})
    assert bad_env.returncode != 0 and len(bad_env.stderr.strip().splitlines()) == 1, bad_env.stderr
    assert "max_queued_jobs" in bad_env.stderr

    secret = tmp_path / "secret.txt"
    secret.write_text("secret\n")
    cfg = tmp_path / "nightly.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path}/n.db"\n[[models]]\nlayers = [0]\nunits = [0]\n'
                   f'explainers = ["pmi"]\ncorpus = "{secret}"\n')
    res = _run("nightly", str(cfg), env={"NEUROLABEL_DATA_DIRS": ""})
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "models[0]" in res.stderr and "not allowed" in res.stderr
