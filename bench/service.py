"""Benchmark of the REST service on loopback, on PostgreSQL: requests/s and p50/p99 latency of
neuron lookup, best label, neuron listing and label search with concurrent clients.

Baselines measured in the same run: the same storage query called in-process (no HTTP, one
thread), and a trivial HTTP route (``GET /v1/jobs/{missing id}``: one primary-key lookup), so
the ratios show what HTTP + JSON cost and how the heavier routes compare.

    .venv/bin/python bench/service.py [--quick] [--clients 8] [--seconds 5]

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


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(url: str, port: int) -> subprocess.Popen:
    code = ("import uvicorn; from service.app import create_app; "
            f"uvicorn.run(create_app({url!r}), host='127.0.0.1', port={port}, log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small database, short runs")
    ap.add_argument("--clients", type=int, default=None, help="concurrent client threads")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per scenario")
    args = ap.parse_args()
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
        proc = _start_server(url, port)
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
        # warm up (semantic search loads the embedding model on first use)
        with httpx.Client(base_url=base, timeout=120) as c:
            for paths in scenarios.values():
                c.get(paths[0])
        print(f"\nPostgreSQL, loopback, {clients} concurrent clients, up to {seconds:.0f} s / "
              f"{max_requests} requests per scenario")
        print(f"baseline in-process get_neuron (1 thread, no HTTP): {direct:8.1f} calls/s")
        print(f"{'scenario':32s} {'requests':>8s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
              f"{'5xx':>6s} {'vs trivial':>10s} {'vs direct':>9s}")
        trivial = None
        for label, paths in scenarios.items():
            r = _load(base, paths, clients=clients, seconds=seconds, max_requests=max_requests)
            trivial = trivial or r["rps"]
            print(f"{label:32s} {r['n']:8d} {r['rps']:8.1f} {r['p50']:8.1f} {r['p99']:8.1f} "
                  f"{r['errors']:6d} {r['rps'] / trivial:9.2f}x {r['rps'] / direct:8.2f}x")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


if __name__ == "__main__":
    main()
