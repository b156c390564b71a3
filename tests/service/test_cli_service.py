"""``neurolabel serve`` (migrates, then serves API and pages) and ``neurolabel keys`` as real
processes / CLI calls."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from neurolabel.service.cli import app as cli_app
from tests.service.live import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_serve_migrates_and_serves(tmp_path):
    url = f"sqlite:///{tmp_path}/fresh.db"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "neurolabel.service.cli", "serve", "--db", url, "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"{base}/v1/models", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < end, "serve did not come up"
                time.sleep(0.3)
        assert r.status_code == 200 and r.json() == []
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and "No models yet" in page.text
        assert httpx.get(f"{base}/openapi.json", timeout=10).json()["info"]["title"] == "neurolabel"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_keys_list_never_shows_secrets(tmp_path):
    url = f"sqlite:///{tmp_path}/k.db"
    from neurolabel.storage.db import upgrade

    upgrade(url)
    runner = CliRunner()
    secret = runner.invoke(cli_app, ["keys", "create", "--name", "alice", "--db", url]).stdout.splitlines()[0]
    runner.invoke(cli_app, ["keys", "create", "--name", "bob", "--db", url])
    assert runner.invoke(cli_app, ["keys", "revoke", "1", "--db", url]).exit_code == 0
    out = runner.invoke(cli_app, ["keys", "list", "--db", url]).stdout
    assert "alice" in out and "bob" in out and "revoked" in out and "live" in out
    assert secret not in out and secret[:10] in out
