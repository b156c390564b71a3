"""neurolabel.client against a real server on loopback (uvicorn, seeded SQLite database, a real
worker running a real job on the tiny model): every call, sync and async, and API errors raised
as the library's exceptions."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

from neurolabel.client import AsyncClient, Client
from neurolabel.core.errors import ConfigError, ExplanationError, StorageError
from neurolabel.service.app import create_app
from neurolabel.service.limits import ServiceLimits
from neurolabel.service.worker import Worker, run_spec
from neurolabel.storage.db import upgrade
from tests.service.live import live_server, make_key, seed, small_ontology
from tests.service.test_explain_api import _record

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, assets):
    d = tmp_path_factory.mktemp("client")
    url = f"sqlite:///{d}/labels.db"
    upgrade(url)
    seed(url)
    key = make_key(url)
    roots = str(Path(assets[0]).parent)
    onto = small_ontology()
    app = create_app(url, ontology=lambda: onto, limits=ServiceLimits(data_dirs=roots))
    with live_server(app) as base:
        yield base, key, url, roots
    app.state.engine.dispose()


def test_reads_and_bulk_labels(server):
    base, key, _, _ = server
    with Client(base) as nl:
        assert [m["name"] for m in nl.models()] == ["tiny"]
        assert nl.neuron("tiny", 0, 1)["best_label"]["text"] == "dogs and puppies"
        assert nl.label("tiny", 0, 2)["text"] == "cars"
        assert [r["text"] for r in nl.search("cars")] == ["cars"]
        rows = list(nl.labels("tiny"))
        from neurolabel.client import LabelRow
        from neurolabel.storage.labels import LABEL_FIELDS

        assert set(rows[0]) == set(LabelRow.__annotations__) == set(LABEL_FIELDS)
        assert [(r["layer"], r["index"], r["text"]) for r in rows] == [(0, 1, "dogs and puppies"), (0, 2, "cars")]
        assert [r["index"] for r in nl.labels("tiny", min_score=0.7)] == [1]
        assert list(nl.labels("tiny", cursor=rows[0]["cursor"])) == rows[1:]
        assert list(nl.labels("tiny", limit=1)) == rows[:1]
        with pytest.raises(StorageError) as err:
            nl.label("tiny", 1, 3)  # recorded, never labelled
        assert err.value.status == 404 and "no label" in str(err.value)
        with pytest.raises(StorageError):
            list(nl.labels("no-such-model"))
        with pytest.raises(ConfigError) as err:  # a write without a key
            nl.cancel(1)
        assert err.value.status == 401


def test_explain_score_partial_and_errors(server):
    base, key, _, _ = server
    digits, empty = _record(lambda r: f" {r.randint(0, 9999)}"), _record(lambda r: "", index=1)
    with Client(base, api_key=key) as nl:
        out = nl.explain([digits, empty], ["pmi"], model="ext")
        assert out.partial and [e.index for e in out.explanations] == [0] * len(out.explanations)
        (f,) = out.failures
        assert (f.record, f.explainer, f.type) == (1, "pmi", "ExplanationError")
        with pytest.raises(ExplanationError) as err:  # nothing succeeded: the library's own error
            nl.explain([empty], ["pmi"])
        assert err.value.status == 422
        with pytest.raises(ConfigError, match="no_such"):
            nl.explain([digits], ["no_such"])
        scored = nl.score([digits], "numbers and years", simulator="embedding")
        assert not scored.partial and scored.explanations[0].score.n_tokens > 0


def test_jobs_submit_wait_with_progress_and_cancel(server, assets):
    base, key, url, roots = server
    spec = {"model": assets[0], "corpus": assets[1], "layers": [0], "units": [0, 1, 2],
            "explainers": ["concept_induction"], "simulators": {"concept_induction": "symbolic"},
            "max_tokens": 1000, "top_k": 4, "n_random": 4}
    worker = Worker(database_url=url, heartbeat_s=0.3,
                    runner=lambda s, **kw: run_spec(s, data_dirs=(roots,), **kw))
    seen = []
    with Client(base, api_key=key) as nl:
        job = nl.submit(spec)
        assert job.status == "queued" and job.mine
        thread = threading.Thread(target=worker.run_one, kwargs={"job_id": job.id})
        thread.start()
        done = nl.wait(job.id, timeout_s=300, poll_s=0.1, progress=seen.append)
        thread.join()
        assert done.status == "done" and done.result["processed"] == 3
        assert seen[-1].status == "done" and all(0.0 <= s.progress <= 1.0 for s in seen)
        other = nl.submit(spec)
        assert nl.cancel(other.id).status == "cancelled"
        assert nl.wait(other.id, timeout_s=10, progress=True).status == "cancelled"  # with a tqdm bar
        with pytest.raises(ConfigError) as err:
            nl.submit({**spec, "callback_url": "http://10.1.2.3/x"})
        assert err.value.status == 422 and "not allowed" in str(err.value)


def test_async_client(server):
    base, key, _, _ = server

    async def go():
        async with AsyncClient(base, api_key=key) as nl:
            rows = [r async for r in nl.labels("tiny")]
            neuron, found = await asyncio.gather(nl.neuron("tiny", 0, 1), nl.search("dogs"))
            with pytest.raises(StorageError):
                await nl.neuron("tiny", 9, 9)
            job = await nl.submit({"layers": [0], "units": [0], "explainers": ["pmi"],
                                   "corpus_text": "one two three"})
            cancelled = await nl.cancel(job.id)
            final = await nl.wait(job.id, timeout_s=10)
            scored = await nl.score([_record(lambda r: f" {r.randint(0, 99)}")], "numbers")
            return rows, neuron, found, cancelled, final, scored

    rows, neuron, found, cancelled, final, scored = asyncio.run(go())
    assert [r["text"] for r in rows] == ["dogs and puppies", "cars"]
    assert neuron["best_label"]["text"] == "dogs and puppies" and found[0]["text"] == "dogs and puppies"
    assert cancelled.status == final.status == "cancelled"
    assert scored.explanations[0].explainer == "user"


class _CuttingProxy:
    """A real TCP proxy on loopback to ``upstream`` that cuts its first connection after
    ``cut_after`` bytes of the answer (a dropped link mid-stream); later connections pass whole."""

    def __init__(self, upstream: tuple[str, int], cut_after: int) -> None:
        import socket

        self.upstream, self.cut_after, self.connections = upstream, cut_after, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            limit = self.cut_after if self.connections == 1 else None
            up = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(conn, up, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn, limit), daemon=True).start()

    @staticmethod
    def _pump(src, dst, limit) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: limit - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        import socket

        for s in (src, dst):  # shutdown sends the FIN even while the other pump sits in recv()
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def test_label_stream_resumes_after_a_dropped_connection(tmp_path):
    from urllib.parse import urlsplit

    from bench.service import seed_labels

    url = f"sqlite:///{tmp_path}/bulk.db"
    seed_labels(url, 3000, per_layer=1000)
    app = create_app(url)
    with live_server(app) as base:
        with Client(base) as direct:
            want = list(direct.labels("bulk"))
        parts = urlsplit(base)
        proxy = _CuttingProxy((parts.hostname, parts.port), cut_after=200_000)  # of ~900 kB
        try:
            with Client(proxy.url, timeout_s=30) as nl:
                got = list(nl.labels("bulk"))
            assert proxy.connections == 2  # cut once, resumed once
            assert got == want and len(got) == 3000
            proxy2 = _CuttingProxy((parts.hostname, parts.port), cut_after=200_000)
            with Client(proxy2.url, timeout_s=30) as nl, pytest.raises(httpx.TransportError):
                list(nl.labels("bulk", resume=0))
            proxy2.close()
        finally:
            proxy.close()
    app.state.engine.dispose()
