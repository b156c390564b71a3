"""Benchmark of the REST service on loopback, on PostgreSQL: requests/s and p50/p99 latency of
neuron lookup, best label, neuron listing and label search with concurrent clients.

Baselines measured in the same run: the same storage query called in-process (no HTTP, one
thread), and a trivial HTTP route (``GET /v1/jobs/{missing id}``: one primary-key lookup), so
the ratios show what HTTP + JSON cost and how the heavier routes compare.

    .venv/bin/python bench/service.py [--quick] [--clients 8] [--seconds 5] [--hostile-only | --no-hostile]
    .venv/bin/python bench/service.py --bulk [--bulk-labels 1000000] [--bulk-db postgresql|sqlite]

The last scenario, ``mixed reads``, interleaves every read route (lookup, best label, list, text
and semantic search); the issue-15 target is its p99 <= 150 ms with ``--clients 16``. Each
scenario also reports the server process's CPU time per request: on a machine shared with other
work latencies follow the machine's load, this figure much less; and, with PostgreSQL on the same
machine, the CPU per request of the PostgreSQL backends serving the bench's database (the server
keeps its pooled connections, whose backends' CPU this reads) and how many connections the server
opened during the scenario (each one starts a backend and prepares its statements anew).

``--bulk`` (issue 16): labels/s and the server's peak memory streaming 10^6 labels from
``GET /v1/models/{m}/labels`` (JSON Lines and Neuronpedia format) against ``neurolabel export -f
neuronpedia`` on the same database (the baseline), and the server's peak streaming 10^4 labels.

The hostile mix (issue 14) follows: ``--hostile-clients`` (32) clients for ``--hostile-seconds``
(60) on a COLD server (fresh process, nothing loaded): neuron lookups, text and semantic search,
job posts by 8 keys (default quotas: many answers are 429), and hostile requests (NUL in paths,
server paths as corpora, malformed JSON, unauthenticated job listings); in the middle the server
is killed with SIGKILL and restarted. It reports requests/s (and its ratio to the trivial route
measured in the same run), p50/p99, 5xx (target 0), 429s, connection errors while the server was
down, and jobs acknowledged (202) but missing from the database afterwards (target 0).

Needs PostgreSQL (``NEUROLABEL_TEST_PG``, default postgresql://postgres@127.0.0.1:5432/test); a
fresh database is created and dropped. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx  # noqa: E402

PG_ADMIN = os.environ.get("NEUROLABEL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
WORDS = ("dog cat car tree river music number colour city food bird water light house ship "
         "money king war book game").split()


def _records(n_layers: int, per_layer: int):
    from neurolabel.core.types import ActivationRecord, NeuronId, NeuronRecord, NeuronStats

    rng = random.Random(0)
    out = []
    for layer in range(n_layers):
        for idx in range(per_layer):
            w = WORDS[(layer * per_layer + idx) % len(WORDS)]
            top = tuple(ActivationRecord(tokens=tuple(f" {t}" for t in ["the", w, "is", "here"] * 16),
                                         activations=tuple(rng.random() * (3 if j % 4 == 1 else 0.2)
                                                           for j in range(64)),
                                         window_id=k, split="score" if k % 2 else "explain", kind="top")
                        for k in range(20))
            rnd = tuple(ActivationRecord(tokens=tuple(f" t{j}" for j in range(64)),
                                         activations=tuple(rng.random() * 0.2 for _ in range(64)),
                                         window_id=100 + k, split="score" if k % 2 else "explain",
                                         kind="random")
                        for k in range(10))
            out.append(NeuronRecord(model="bench", neuron=NeuronId(layer, idx), top=top, random=rnd,
                                    stats=NeuronStats(count=10_000, mean=0.1, std=0.3, max=3.0,
                                                      min=-0.2, frac_active=0.3)))
    return out


def _explanations(records):
    from neurolabel.core.types import Explanation, ScoreResult

    rng = random.Random(1)
    out = []
    for r in records:
        w = WORDS[(r.neuron.layer * 1000 + r.neuron.index) % len(WORDS)]
        for ex, text in (("concept_induction", f"{w}s and related things"), ("pmi", f"the word {w}")):
            s = rng.uniform(-0.1, 0.9)
            out.append(Explanation(model="bench", neuron=r.neuron, explainer=ex, explainer_version="1",
                                   text=text, score=ScoreResult(score=s, scorer="correlation",
                                                                simulator="embedding", parts={"top_only": s})))
    return out


def _seed(url: str, n_layers: int, per_layer: int) -> None:
    from neurolabel.storage.db import make_engine, session_factory, upgrade
    from neurolabel.storage.queries import save_explanations, save_neuron_records, upsert_model

    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as s:
        upsert_model(session=s, name="bench", architecture="bench", source="bench", unit_map={},
                     n_layers=n_layers, n_units=per_layer)
        recs = _records(n_layers, per_layer)
        save_neuron_records(session=s, records=recs)
        save_explanations(session=s, explanations=_explanations(recs), threshold=0.3)
        s.commit()
    engine.dispose()


def seed_labels(url: str, n: int, *, model: str = "bulk", per_layer: int = 1536, chunk: int = 20_000,
                progress: bool = False) -> None:
    """``n`` neurons of ``model`` (``per_layer`` a layer) with one accepted, scored label each,
    inserted in bulk (core inserts, ``chunk`` rows a statement batch): a label database of a
    million labels in about a minute."""
    from datetime import datetime, timezone

    from sqlalchemy import insert, select
    from tqdm.auto import tqdm

    from neurolabel.storage.db import make_engine, session_factory, upgrade
    from neurolabel.storage.models import ExplanationRow, Neuron, Score
    from neurolabel.storage.queries import upsert_model

    upgrade(url)
    engine = make_engine(url)
    rng = random.Random(0)
    now = datetime.now(timezone.utc)
    try:
        with session_factory(engine)() as s:
            model_id = upsert_model(session=s, name=model, architecture="bench", source="bench", unit_map={},
                                    n_layers=(n + per_layer - 1) // per_layer, n_units=per_layer)
            s.commit()
        bar = tqdm(total=n, unit="label", desc=f"seed {model}", disable=not progress)
        for start in range(0, n, chunk):
            ids = range(start, min(n, start + chunk))
            with session_factory(engine)() as s:
                top = s.scalar(select(Neuron.id).order_by(Neuron.id.desc()).limit(1)) or 0
                s.execute(insert(Neuron), [{"model_id": model_id, "layer": i // per_layer, "index": i % per_layer}
                                           for i in ids])
                neurons = s.execute(select(Neuron.id, Neuron.layer, Neuron.index)
                                    .where(Neuron.id > top, Neuron.model_id == model_id)).all()
                top_e = s.scalar(select(ExplanationRow.id).order_by(ExplanationRow.id.desc()).limit(1)) or 0
                s.execute(insert(ExplanationRow), [
                    {"neuron_id": nid, "explainer": "concept_induction", "explainer_version": "1", "rank": 0,
                     "text": f"{WORDS[(layer * per_layer + idx) % len(WORDS)]}s and related things",
                     "structured": {}, "params": {}, "score": round(rng.uniform(0.3, 0.95), 4),
                     "accepted": True, "created_at": now, "updated_at": now}
                    for nid, layer, idx in neurons])
                expl = s.execute(select(ExplanationRow.id, ExplanationRow.score).where(ExplanationRow.id > top_e)).all()
                s.execute(insert(Score), [{"explanation_id": eid, "scorer": "correlation", "simulator": "symbolic",
                                           "split": "score", "score": sc, "parts": {}, "n_tokens": 40, "method": "",
                                           "created_at": now} for eid, sc in expl])
                s.commit()
            bar.update(len(ids))
        bar.close()
        with engine.connect() as conn:  # statistics for the planner, as after any bulk load
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    finally:
        engine.dispose()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(url: str, port: int, env: dict | None = None, workers: int = 1) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "neurolabel.service.cli", "serve", "--db", url, "--port", str(port),
                             "--no-migrate", "--workers", str(workers)], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def _load(base: str, paths, *, clients: int, seconds: float, max_requests: int) -> dict:
    """Hammer ``paths`` (cycled) with ``clients`` threads until ``seconds`` or ``max_requests``."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = [0]
    stop_at = time.monotonic() + seconds

    def run(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=30) as c:
            while time.monotonic() < stop_at:
                with lock:
                    if counter[0] >= max_requests:
                        return
                    counter[0] += 1
                path = rng.choice(paths)
                t0 = time.perf_counter()
                r = c.get(path)
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    if r.status_code >= 500:
                        errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99
    return {"n": len(lat), "rps": len(lat) / wall, "p50": q[49] * 1000, "p99": q[98] * 1000,
            "errors": errors[0]}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of a live process and its live child processes (the
    workers of ``serve --workers N``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_cpu_s(int(c)) for c in children)


def _pg_backends(url: str) -> tuple[float, int]:
    """(CPU seconds so far of the PostgreSQL backends connected to the database of ``url``, the
    connections opened to it so far). The CPU is read from ``/proc``: 0 when PostgreSQL runs
    elsewhere; a backend that exits takes its CPU with it (the server keeps its connections)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))]
        opened = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
    cpu = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, PermissionError):
            continue
        cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(opened[0]) if opened and opened[0] is not None else 0


def _direct(url: str, n_layers: int, per_layer: int, n: int) -> float:
    """In-process get_neuron calls per second (one thread, no HTTP)."""
    from neurolabel.core.types import NeuronId  # noqa: F401
    from neurolabel.storage.db import make_engine, session_factory
    from neurolabel.storage.queries import get_neuron

    engine = make_engine(url)
    rng = random.Random(2)
    t0 = time.perf_counter()
    with session_factory(engine)() as s:
        for _ in range(n):
            get_neuron(session=s, model="bench", layer=rng.randrange(n_layers), index=rng.randrange(per_layer))
            s.rollback()
    dt = time.perf_counter() - t0
    engine.dispose()
    return n / dt


def _keys(url: str, n: int) -> list[str]:
    from neurolabel.service.auth import create_key
    from neurolabel.storage.db import session_scope

    with session_scope(url) as s:
        return [create_key(session=s, name=f"bench-{i}").secret for i in range(n)]


def _hostile(url: str, port: int, *, clients: int, seconds: float, n_layers: int, per_layer: int,
             trivial_rps: float) -> None:
    """The hostile mix on a cold server with a SIGKILL + restart half-way (see the docstring)."""
    from sqlalchemy import select

    from neurolabel.storage.db import make_engine, session_factory
    from neurolabel.storage.models import Job

    keys = _keys(url, 8)
    base = f"http://127.0.0.1:{port}"
    proc = _start_server(url, port)  # cold: no request has loaded anything yet
    lock = threading.Lock()
    lat: list[float] = []
    counts = {"5xx": 0, "429": 0, "4xx other": 0, "conn errors": 0, "hostile answered 4xx": 0}
    fivexx: list[str] = []
    acked: list[int] = []
    stop_at = time.monotonic() + seconds
    rng0 = random.Random(5)
    neurons = [(rng0.randrange(n_layers), rng0.randrange(per_layer)) for _ in range(500)]
    hostile = [
        ("GET", "/v1/models/%00", None), ("GET", "/v1/models/a%00b/neurons?layer=0", None),
        ("GET", "/models/%00", None), ("GET", "/v1/search?q=a%00b", None),
        ("POST", "/v1/jobs", {"corpus": "/etc/passwd", "layers": [0], "units": [0], "explainers": ["pmi"]}),
        ("POST", "/v1/jobs", {"model": "/etc", "layers": [0], "units": [0], "explainers": ["pmi"]}),
        ("POST", "/v1/jobs", b'{"layers": [0], "explainers": ["pmi"'),
        ("GET", "/v1/jobs?limit=500", None),
        ("POST", "/v1/explain", {"records": [{"most_positive_activation_records": [
            {"tokens": ["a"], "activations": [True]}]}], "explainers": ["pmi"]}),
    ]

    def one(c: httpx.Client, rng: random.Random, key: str) -> tuple[str, httpx.Response]:
        x = rng.random()
        auth = {"Authorization": f"Bearer {key}"}
        if x < 0.40:
            layer, idx = rng.choice(neurons)
            return "read", c.get(f"/v1/models/bench/neurons/{layer}/{idx}")
        if x < 0.60:
            return "read", c.get("/v1/search", params={"q": rng.choice(WORDS)})
        if x < 0.75:
            return "read", c.get("/v1/search", params={"q": rng.choice(WORDS) + " things", "mode": "semantic"})
        if x < 0.90:
            spec = {"model": "default", "layers": [rng.randrange(30)], "units": [rng.randrange(1536)],
                    "explainers": ["pmi"]}
            return "job", c.post("/v1/jobs", json=spec, headers=auth)
        method, path, body = rng.choice(hostile)
        if isinstance(body, bytes):
            return "hostile", c.request(method, path, content=body,
                                        headers={**auth, "content-type": "application/json"})
        return "hostile", c.request(method, path, json=body, headers=auth if method == "POST" else {})

    def run(seed: int) -> None:
        rng = random.Random(seed)
        key = keys[seed % len(keys)]
        with httpx.Client(base_url=base, timeout=60) as c:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    kind, r = one(c, rng, key)
                except httpx.TransportError:
                    with lock:
                        counts["conn errors"] += 1
                    time.sleep(0.05)  # the server is down: clients retry
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    if r.status_code >= 500:
                        counts["5xx"] += 1
                        fivexx.append(f"{r.request.method} {r.request.url.path} -> {r.status_code} {r.text[:120]}")
                    elif r.status_code == 429:
                        counts["429"] += 1
                    elif kind == "hostile" and 400 <= r.status_code < 500:
                        counts["hostile answered 4xx"] += 1
                    elif r.status_code >= 400:
                        counts["4xx other"] += 1
                    if kind == "job" and r.status_code == 202:
                        acked.append(r.json()["id"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds / 2)
    proc.send_signal(9)  # SIGKILL mid-load
    proc.wait(timeout=20)
    t_kill = time.perf_counter()
    proc = _start_server(url, port)
    downtime = time.perf_counter() - t_kill
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    proc.terminate()
    proc.wait(timeout=20)

    engine = make_engine(url)
    with session_factory(engine)() as s:
        stored = set(s.scalars(select(Job.id).where(Job.id.in_(acked))))
    engine.dispose()
    lost = len(set(acked) - stored)
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0.0] * 99
    rps = len(lat) / wall
    print(f"\nhostile mix: {clients} clients, {seconds:.0f} s, cold server, SIGKILL + restart at "
          f"{seconds / 2:.0f} s (down {downtime:.1f} s until the new process answered)")
    print(f"{'answered':>9s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'5xx':>5s} {'429':>6s} "
          f"{'conn err':>8s} {'jobs acked':>10s} {'acked lost':>10s} {'vs trivial':>10s}")
    print(f"{len(lat):9d} {rps:8.1f} {q[49] * 1000:8.1f} {q[98] * 1000:8.1f} {counts['5xx']:5d} "
          f"{counts['429']:6d} {counts['conn errors']:8d} {len(acked):10d} {lost:10d} "
          f"{rps / trivial_rps:9.2f}x")
    print(f"hostile requests answered 4xx: {counts['hostile answered 4xx']}; other 4xx: {counts['4xx other']}")
    for line in fivexx[:10]:
        print("  5xx:", line)


def _peak_kib(pid: int) -> int:
    """Peak resident memory (VmHWM, KiB) of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")


def _cli_export(url: str, fmt: str, out: Path) -> tuple[float, int, int]:
    """(seconds, items written, peak memory KiB) of ``neurolabel export`` in a process of its own."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "neurolabel.service.cli", "export", "--format", fmt, "--model",
                             "bulk", "--db", url, "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"neurolabel export failed: {err}")
    n = int(err.split("wrote ", 1)[1].split()[0]) if "wrote " in err else -1
    return seconds, n, usage.ru_maxrss


def _http_stream(base: str, fmt: str) -> tuple[float, int, int]:
    """(seconds, rows, bytes) of one full ``GET /v1/models/bulk/labels`` in ``fmt``."""
    rows = size = 0
    t0 = time.perf_counter()
    with httpx.Client(base_url=base, timeout=600) as c:
        with c.stream("GET", "/v1/models/bulk/labels", params={"format": fmt}) as r:
            r.raise_for_status()
            if fmt == "neuronpedia":
                tail = b""
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    rows += (tail + chunk).count(b'"modelId"')  # the tail is shorter than the key
                    tail = chunk[-8:]
            else:
                for line in r.iter_lines():
                    size += len(line) + 1
                    rows += bool(line)
    return time.perf_counter() - t0, rows - (fmt == "csv"), size


def bulk(*, n: int, db: str) -> None:
    """Bulk label streaming: labels/s and server peak memory streaming ``n`` labels over HTTP
    (JSON Lines and the Neuronpedia format) vs ``neurolabel export -f neuronpedia`` on the same
    database; and the server's peak memory streaming n/100 labels of a database of their own."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="nl-bulk-"))
    names: list[str] = []

    def database(tag: str) -> str:
        if db == "sqlite":
            return f"sqlite:///{tmp}/{tag}.db"
        import psycopg

        name = f"nl_bulk_{tag}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"

    def served(url: str, fmts: tuple[str, ...]) -> tuple[int, int, dict[str, tuple[float, int, int]]]:
        port = free_port()
        proc = _start_server(url, port)
        try:
            base = f"http://127.0.0.1:{port}"
            httpx.get(f"{base}/v1/models/bulk/labels", params={"limit": 100}, timeout=60).raise_for_status()
            warm = _peak_kib(proc.pid)
            runs = {fmt: _http_stream(base, fmt) for fmt in fmts}
            return warm, _peak_kib(proc.pid), runs
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    try:
        small_n = max(1000, n // 100)
        small, big = database("small"), database("big")
        t0 = time.perf_counter()
        seed_labels(small, small_n)
        seed_labels(big, n, progress=True)
        print(f"seeded {n:,} labels (and {small_n:,} in a second database) into {db} in "
              f"{time.perf_counter() - t0:.0f} s")
        print(f"\nbulk labels, {db}, loopback, one client ({n:,} labels; machine shared with other work)")
        print(f"{'way':44s} {'items':>10s} {'seconds':>8s} {'labels/s':>10s} {'vs CLI':>7s} {'peak MiB':>9s}")
        cli_s, cli_n, cli_kib = _cli_export(big, "neuronpedia", tmp / "export.json")
        cli_rate = cli_n / cli_s
        print(f"{'CLI export -f neuronpedia (baseline)':44s} {cli_n:10,d} {cli_s:8.1f} {cli_rate:10,.0f} "
              f"{1.0:6.2f}x {cli_kib / 1024:9.0f}", flush=True)
        warm_small, peak_small, _ = served(small, ("jsonl",))
        warm, peak, runs = served(big, ("jsonl", "neuronpedia"))
        for fmt, (secs, rows, size) in runs.items():
            rate = rows / secs
            print(f"{'HTTP GET /labels format=' + fmt:44s} {rows:10,d} {secs:8.1f} {rate:10,.0f} "
                  f"{cli_rate / rate:6.2f}x {peak / 1024:9.0f}   ({size / 2**20:.0f} MiB sent)")
        print(f"server peak memory: {warm / 1024:.0f} MiB warm, {peak / 1024:.0f} MiB after streaming {n:,} labels "
              f"(+{(peak - warm) / 1024:.1f} MiB); streaming {small_n:,} labels: {peak_small / 1024:.0f} MiB "
              f"(+{(peak_small - warm_small) / 1024:.1f} MiB)")
        print("target: HTTP within 1.5x of the CLI's time ('vs CLI' = CLI labels/s over HTTP labels/s), "
              "server memory flat")
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if names:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                for name in names:
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small database, short runs")
    ap.add_argument("--clients", type=int, default=None, help="concurrent client threads")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per scenario")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (serve --workers)")
    ap.add_argument("--hostile-only", action="store_true", help="only the trivial baseline and the hostile mix")
    ap.add_argument("--no-hostile", action="store_true", help="skip the hostile mix")
    ap.add_argument("--hostile-clients", type=int, default=32, help="clients of the hostile mix")
    ap.add_argument("--hostile-seconds", type=float, default=None, help="length of the hostile mix (60)")
    ap.add_argument("--bulk", action="store_true", help="only the bulk label streaming comparison")
    ap.add_argument("--bulk-labels", type=int, default=None, help="labels of the bulk comparison (10^6)")
    ap.add_argument("--bulk-db", choices=("postgresql", "sqlite"), default="postgresql")
    args = ap.parse_args()
    if args.bulk:
        bulk(n=args.bulk_labels or (20_000 if args.quick else 1_000_000), db=args.bulk_db)
        return
    n_layers, per_layer = (2, 50) if args.quick else (4, 250)
    clients = args.clients or (4 if args.quick else 8)
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    max_requests = 2_000 if args.quick else 20_000

    import psycopg

    name = f"nl_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    proc = None
    try:
        t0 = time.perf_counter()
        _seed(url, n_layers, per_layer)
        print(f"seeded {n_layers * per_layer} neurons (30 windows x 64 tokens each, 2 labels each) "
              f"into PostgreSQL in {time.perf_counter() - t0:.1f} s")
        direct = _direct(url, n_layers, per_layer, 200 if args.quick else 1000)
        port = free_port()
        proc = _start_server(url, port, workers=args.workers)
        base = f"http://127.0.0.1:{port}"
        rng = random.Random(3)
        neurons = [(rng.randrange(n_layers), rng.randrange(per_layer)) for _ in range(500)]
        scenarios = {
            "trivial (404 job lookup)": [f"/v1/jobs/{10**9 + i}" for i in range(10)],
            "neuron lookup": [f"/v1/models/bench/neurons/{l}/{i}" for l, i in neurons],
            "best label": [f"/v1/models/bench/neurons/{l}/{i}/label" for l, i in neurons],
            "list neurons (50)": [f"/v1/models/bench/neurons?layer={l}&limit=50&offset={i % 200}"
                                  for l, i in neurons[:50]],
            "text search": [f"/v1/search?q={w}" for w in WORDS],
            "semantic search": [f"/v1/search?q={w}+things&mode=semantic" for w in WORDS],
        }
        # the mixed read load: every read route interleaved, as a browser population sends them
        mixed = [p for group in zip(scenarios["neuron lookup"][:100], scenarios["best label"][:100],
                                    scenarios["list neurons (50)"] * 2, scenarios["text search"] * 5,
                                    scenarios["semantic search"] * 5) for p in group]
        scenarios["mixed reads"] = mixed
        # warm up (semantic search loads the embedding model on first use), every worker process:
        # requests on parallel connections, which the workers accept in turn
        def warm() -> None:
            with httpx.Client(base_url=base, timeout=120) as c:
                for paths in scenarios.values():
                    c.get(paths[0])

        warmers = [threading.Thread(target=warm) for _ in range(1 if args.workers == 1 else 4 * args.workers)]
        for t in warmers:
            t.start()
        for t in warmers:
            t.join()
        print(f"\nPostgreSQL, loopback, {clients} concurrent clients, up to {seconds:.0f} s / "
              f"{max_requests} requests per scenario, {args.workers} server process(es)")
        print(f"baseline in-process get_neuron (1 thread, no HTTP): {direct:8.1f} calls/s")
        print(f"{'scenario':32s} {'requests':>8s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
              f"{'5xx':>6s} {'vs trivial':>10s} {'vs direct':>9s} {'server CPU ms/req':>17s} "
              f"{'PostgreSQL CPU ms/req':>21s} {'connections opened':>18s}")
        trivial = None
        if args.hostile_only:
            scenarios = {k: v for k, v in scenarios.items() if k.startswith("trivial")}
        for label, paths in scenarios.items():
            pg0, opened0 = _pg_backends(url)
            cpu0 = _cpu_s(proc.pid)
            r = _load(base, paths, clients=clients, seconds=seconds, max_requests=max_requests)
            cpu = (_cpu_s(proc.pid) - cpu0) / max(1, r["n"]) * 1000
            pg1, opened1 = _pg_backends(url)
            pg = (pg1 - pg0) / max(1, r["n"]) * 1000
            trivial = trivial or r["rps"]
            print(f"{label:32s} {r['n']:8d} {r['rps']:8.1f} {r['p50']:8.1f} {r['p99']:8.1f} "
                  f"{r['errors']:6d} {r['rps'] / trivial:9.2f}x {r['rps'] / direct:8.2f}x {cpu:17.2f} {pg:21.2f} "
                  f"{opened1 - opened0:18d}", flush=True)
            if label == "mixed reads":
                print(f"target mixed reads p99 <= 150 ms at 16 clients ({clients} here): {r['p99']:.1f} ms "
                      f"{'MET' if r['p99'] <= 150 and clients >= 16 else 'NOT MET'}", flush=True)
        proc.terminate()
        proc.wait(timeout=20)
        proc = None
        if args.no_hostile:
            return
        _hostile(url, free_port(), clients=args.hostile_clients,
                 seconds=args.hostile_seconds or (20.0 if args.quick else 60.0),
                 n_layers=n_layers, per_layer=per_layer, trivial_rps=trivial)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


if __name__ == "__main__":
    main()
