"""32 concurrent first requests at a freshly started server process (real ``neurolabel serve``
on PostgreSQL): semantic searches (the embedder loads lazily) and job posts (the plugin
registry loads lazily) all succeed — no 5xx, no false "unknown explainer … known: none"."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.service.live import free_port, fresh_database, make_key, seed

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
N = 32


def test_concurrent_first_requests_on_a_fresh_server(tmp_path):
    with fresh_database("postgresql", tmp_path) as url:
        seed(url)
        key = make_key(url)
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "NEUROLABEL_MAX_QUEUED_JOBS": "1000", "NEUROLABEL_WRITES_PER_MINUTE": "1000"}
        proc = subprocess.Popen([sys.executable, "-m", "neurolabel.service.cli", "serve", "--db", url,
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            end = time.monotonic() + 120
            while True:  # up: a route that touches no lazy loader
                try:
                    if httpx.get(f"{base}/v1/models", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None and time.monotonic() < end, "serve did not come up"
                time.sleep(0.3)
            barrier = threading.Barrier(N)
            results: list[tuple[str, int, str]] = []
            lock = threading.Lock()

            def call(i: int) -> None:
                with httpx.Client(base_url=base, timeout=300,
                                  headers={"Authorization": f"Bearer {key}"}) as c:
                    barrier.wait()
                    if i % 2:
                        r = c.post("/v1/jobs", json={"model": "default", "layers": [0], "units": [i],
                                                     "explainers": ["pmi", "concept_induction"]})
                        what = "job"
                    else:
                        r = c.get("/v1/search", params={"q": "automobiles", "mode": "semantic", "limit": 1})
                        what = "semantic"
                with lock:
                    results.append((what, r.status_code, r.text[:300]))

            threads = [threading.Thread(target=call, args=(i,)) for i in range(N)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
            assert len(results) == N
            bad = [r for r in results if r[1] != (202 if r[0] == "job" else 200)]
            assert not bad, bad
            semantic = [r for r in results if r[0] == "semantic"]
            assert all('"cars"' in r[2] for r in semantic)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
