"""Bulk label reads (``GET /v1/models/{m}/labels``) and ETags on neuron and label reads, over real
HTTP on SQLite and PostgreSQL; the server's peak memory while streaming 10^5 labels, measured on
a server process of its own."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from neurolabel.service.app import create_app
from neurolabel.storage.db import upgrade
from tests.service.live import client, free_port, live_server, seed

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(db_url):
    upgrade(db_url)
    seed(db_url)
    app = create_app(db_url)
    with live_server(app) as base, client(base) as c:
        yield c, db_url
    app.state.engine.dispose()


def _jsonl(r: httpx.Response) -> list[dict]:
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def _add_label(url: str, index: int, text: str, score: float) -> None:
    from neurolabel.core.types import Explanation, NeuronId, ScoreResult
    from neurolabel.storage.db import make_engine, session_factory
    from neurolabel.storage.queries import save_explanations

    engine = make_engine(url)
    with session_factory(engine)() as s:
        save_explanations(session=s, threshold=0.3, explanations=[Explanation(
            model="tiny", neuron=NeuronId(1, index), explainer="pmi", explainer_version="1", text=text,
            score=ScoreResult(score=score, scorer="correlation", simulator="lexical", n_tokens=10))])
        s.commit()
    engine.dispose()


def test_labels_stream_in_every_format_with_filters_and_cursor(served):
    c, url = served
    rows = _jsonl(c.get("/v1/models/tiny/labels"))
    assert [(r["layer"], r["index"], r["text"], r["score"]) for r in rows] == [
        (0, 1, "dogs and puppies", 0.82), (0, 2, "cars", 0.61)]  # 1:0's label was not accepted
    assert rows[0]["explainer"] == "concept_induction" and rows[0]["simulator"] == "symbolic"
    assert rows[0]["cursor"] == "0:1" and datetime.fromisoformat(rows[0]["updated_at"]).tzinfo is not None

    r = c.get("/v1/models/tiny/labels", headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert [(t["layer"], t["index"], t["text"]) for t in table] == [("0", "1", "dogs and puppies"), ("0", "2", "cars")]
    r = c.get("/v1/models/tiny/labels", params={"format": "neuronpedia"}, headers={"Accept": "text/csv"})
    assert r.headers["content-type"].startswith("application/json")  # the parameter wins over Accept
    items = json.loads(r.text)
    assert [(i["modelId"], i["layer"], i["index"], i["description"]) for i in items] == [
        ("tiny", "0-mlp", "1", "dogs and puppies"), ("tiny", "0-mlp", "2", "cars")]
    assert items[0]["scores"][0]["explanationScoreTypeName"] == "correlation"
    assert json.loads(c.get("/v1/models/tiny/labels", headers={"Accept": "application/json"}).text) == items

    assert [r["text"] for r in _jsonl(c.get("/v1/models/tiny/labels", params={"explainer": "pmi"}))] == [
        "the word dog"]
    assert [r["index"] for r in _jsonl(c.get("/v1/models/tiny/labels", params={"min_score": 0.7}))] == [1]
    assert _jsonl(c.get("/v1/models/tiny/labels", params={"layer": 1})) == []
    # resume: a page of one, then after its cursor
    (first,) = _jsonl(c.get("/v1/models/tiny/labels", params={"limit": 1}))
    rest = _jsonl(c.get("/v1/models/tiny/labels", params={"cursor": first["cursor"]}))
    assert [first] + rest == rows

    # changes since a sync: nothing, then the one neuron whose label changed
    mark = datetime.now(timezone.utc)
    assert _jsonl(c.get("/v1/models/tiny/labels", params={"updated_since": mark.isoformat()})) == []
    _add_label(url, 3, "trees and forests", 0.7)
    changed = _jsonl(c.get("/v1/models/tiny/labels", params={"updated_since": mark.isoformat()}))
    assert [(r["layer"], r["index"], r["text"]) for r in changed] == [(1, 3, "trees and forests")]
    past = (mark - timedelta(days=1)).replace(tzinfo=None).isoformat()  # no zone: UTC
    assert len(_jsonl(c.get("/v1/models/tiny/labels", params={"updated_since": past}))) == 3

    assert c.get("/v1/models/nope/labels").status_code == 404
    r = c.get("/v1/models/tiny/labels", params={"cursor": "x"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_etags_answer_304_until_something_changes(served):
    c, url = served
    for path in ("/v1/models/tiny/neurons/1/3", "/v1/models/tiny/neurons/0/1/label", "/v1/models/tiny/labels"):
        r = c.get(path)
        etag = r.headers["etag"]
        assert r.status_code == 200 and etag.startswith('"')
        again = c.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert c.get(path, headers={"If-None-Match": '"other", ' + etag}).status_code == 304
        assert c.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    old_neuron = c.get("/v1/models/tiny/neurons/1/3").headers["etag"]
    old_bulk = c.get("/v1/models/tiny/labels").headers["etag"]
    old_csv = c.get("/v1/models/tiny/labels", params={"format": "csv"}).headers["etag"]
    assert old_csv != old_bulk  # a tag per representation
    _add_label(url, 3, "trees", 0.5)
    r = c.get("/v1/models/tiny/neurons/1/3", headers={"If-None-Match": old_neuron})
    assert r.status_code == 200 and r.json()["best_label"]["text"] == "trees"
    r = c.get("/v1/models/tiny/labels", headers={"If-None-Match": old_bulk})
    assert r.status_code == 200 and len(_jsonl(r)) == 3


def _serve(url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "neurolabel.service.cli", "serve", "--db", url, "--port",
                             str(port), "--no-migrate"], cwd=ROOT, env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("server did not start")
        time.sleep(0.2)


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _streamed_peak(url: str, n: int) -> tuple[int, int]:
    """(rows streamed, the server's peak resident memory in KiB) for one full JSON Lines stream."""
    proc, base = _serve(url)
    try:
        with httpx.Client(base_url=base, timeout=300) as c:
            c.get("/v1/models/bulk/labels", params={"limit": 10}).raise_for_status()  # warm
            rows = 0
            with c.stream("GET", "/v1/models/bulk/labels") as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    rows += bool(line)
        return rows, _peak_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_streaming_memory_is_flat(tmp_path):
    """10^5 labels stream with the server's peak memory within a few MiB of streaming 10^3."""
    from bench.service import seed_labels

    small, big = f"sqlite:///{tmp_path}/small.db", f"sqlite:///{tmp_path}/big.db"
    seed_labels(small, 1_000)
    seed_labels(big, 100_000)
    n_small, peak_small = _streamed_peak(small, 1_000)
    n_big, peak_big = _streamed_peak(big, 100_000)
    assert (n_small, n_big) == (1_000, 100_000)
    # the 10^5 rows are ~25 MB of JSON (and ~100 MB as Python dicts): held at once, they would show
    grown_mib = (peak_big - peak_small) / 1024
    assert grown_mib < 24, f"server peak grew {grown_mib:.1f} MiB from 10^3 to 10^5 labels"
