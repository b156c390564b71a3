"""What a hostile but fair client found (issue 14), each as a regression test over real HTTP
against uvicorn on real databases:

1. jobs naming server files (corpus/model paths) and probing paths through job errors;
3. NUL / control characters / invalid UTF-8 in path and query parameters;
4. a database that goes away (503 JSON, recovery when it is back);
5. job ownership, privacy of specs, per-key quotas and the write rate limit;
6. server paths in ``/v1/models``, ``true`` as an activation, security headers on pages.

(2, the cold-start races, is ``test_cold_start.py``; the CLI's one-line failures are
``test_cli_failures.py``.)"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from neurolabel.service import jobs as queue
from neurolabel.service.app import create_app
from neurolabel.service.limits import ServiceLimits
from neurolabel.storage.db import make_engine, session_factory
from tests.service.live import client, fresh_database, live_server, make_key, seed, small_ontology

SECRET = "TOP-SECRET-LINE the quick brown fox\n" * 20


def _count_jobs(url: str) -> int:
    from neurolabel.storage.models import Job

    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            return int(s.scalar(select(func.count(Job.id))))
    finally:
        engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory):
    """(base URL, db URL, keys {a, b, admin}, data root, secret file outside it)."""
    tmp = tmp_path_factory.mktemp("sec")
    root = tmp / "data"
    root.mkdir()
    (root / "corpus.txt").write_text("The dog ran home.\n" * 5, encoding="utf-8")
    secret = tmp / "secret.txt"
    secret.write_text(SECRET, encoding="utf-8")
    (root / "link.txt").symlink_to(secret)  # inside the root, pointing out of it
    with fresh_database(request.param, tmp) as url:
        seed(url)
        from neurolabel.storage.db import session_scope
        from neurolabel.storage.sources import add_source

        with session_scope(url) as s:
            add_source(session=s, kind="corpus", name="dogs", path=str(root / "corpus.txt"))
        keys = {"a": make_key(url, "alice"), "b": make_key(url, "bob"), "admin": make_key(url, "ops", admin=True)}
        onto = small_ontology()
        limits = ServiceLimits(data_dirs=str(root), max_queued_jobs=1000, writes_per_minute=10_000)
        app = create_app(url, ontology=lambda: onto, limits=limits)
        with live_server(app) as base:
            yield base, url, keys, root, secret
        app.state.engine.dispose()


SPEC = {"model": "default", "layers": [0], "units": [0, 1], "explainers": ["pmi"]}


# ----------------------------------------------------------------------- 1. file disclosure


def test_job_naming_a_server_file_is_refused_before_queueing(served):
    base, url, keys, root, secret = served
    before = _count_jobs(url)
    with client(base, keys["a"]) as c:
        for field, value in (("corpus", str(secret)), ("corpus", str(root / "link.txt")),
                             ("corpus", f"{root}/../secret.txt"), ("corpus", "~/.ssh/id_rsa"),
                             ("corpus", "secret.txt"), ("model", "/etc"), ("model", "/no/such/dir")):
            r = c.post("/v1/jobs", json={**SPEC, field: value})
            assert r.status_code == 422, (field, value, r.text)
            body = r.json()
            assert body["detail"][0]["loc"] == ["body", field]
            msg = body["detail"][0]["msg"]
            assert "not allowed" in msg and "default" in msg, msg
            if field == "corpus":
                assert "dogs" in msg  # the registered names are offered
            rest = msg.replace(repr(value), "")  # apart from what the client wrote itself
            assert str(root) not in rest and str(secret) not in rest and "/" not in rest, msg
            assert "does not exist" not in msg  # the same answer for any path: nothing to probe with
    assert _count_jobs(url) == before  # nothing was queued


def test_allowed_names_and_paths_are_queued_without_server_paths(served):
    base, url, keys, root, _ = served
    with client(base, keys["a"]) as c, client(base) as anon:
        for corpus in ("dogs", "default", str(root / "corpus.txt")):
            r = c.post("/v1/jobs", json={**SPEC, "corpus": corpus})
            assert r.status_code == 202, (corpus, r.text)
            assert r.json()["spec"]["corpus"] == corpus  # what the client wrote, never the resolved path
            job = anon.get(f"/v1/jobs/{r.json()['id']}").json()
            assert job["spec"] is None and job["worker"] is None
        r = c.post("/v1/jobs", json={**SPEC, "corpus_text": "A cat sat on the mat.\nA dog barked."})
        assert r.status_code == 202, r.text
        r = c.post("/v1/jobs", json={**SPEC, "corpus": "dogs", "corpus_text": "text"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "corpus_text"]


def test_worker_rechecks_and_its_errors_carry_no_paths(served, monkeypatch):
    """A job that reached the queue another way (here: straight into the table) naming a server
    file fails in the worker's own check; the file is never read into the database."""
    base, url, keys, root, secret = served
    from neurolabel.service.limits import get_limits
    from neurolabel.service.worker import Worker
    from neurolabel.storage.models import ApiKey

    monkeypatch.setenv("NEUROLABEL_DATA_DIRS", str(root))
    get_limits.cache_clear()
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory() as s:
        a_id = s.scalar(select(ApiKey.id).where(ApiKey.name == "alice"))
        job_id = queue.enqueue(session=s, spec={**SPEC, "corpus": str(secret)}, owner_key_id=a_id)
        s.commit()
    try:
        state = Worker(database_url=url, heartbeat_s=0.5).run_one(job_id=job_id)
    finally:
        get_limits.cache_clear()
        engine.dispose()
    assert state["status"] == "failed" and "not allowed" in state["error"], state
    with client(base) as anon, client(base, keys["a"]) as owner, client(base, keys["b"]) as other:
        for c in (anon, other):
            seen = c.get(f"/v1/jobs/{job_id}").json()
            assert seen["status"] == "failed" and seen["error"] is None and seen["spec"] is None
        mine = owner.get(f"/v1/jobs/{job_id}").json()
        assert "not allowed" in mine["error"] and str(secret.parent) not in mine["error"]
        for n in anon.get("/v1/models").json():
            assert "TOP-SECRET" not in str(anon.get(f"/v1/models/{n['name']}/neurons", params={"limit": 500}).json())


# ------------------------------------------------------------------------- 5. ownership


def test_jobs_belong_to_their_key(served):
    base, url, keys, _, _ = served
    with client(base, keys["a"]) as a, client(base, keys["b"]) as b, client(base, keys["admin"]) as admin, \
            client(base) as anon:
        job = a.post("/v1/jobs", json=SPEC).json()
        assert job["mine"] and job["spec"]["layers"] == [0]
        seen = b.get(f"/v1/jobs/{job['id']}").json()
        assert not seen["mine"] and seen["spec"] is None and seen["status"] == "queued"
        r = b.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 403 and "another API key" in r.json()["detail"]
        assert a.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"  # untouched
        listing = anon.get("/v1/jobs", params={"limit": 500}).json()
        assert listing and all(j["spec"] is None and j["worker"] is None and j["error"] is None for j in listing)
        assert any(j["spec"] is not None for j in a.get("/v1/jobs", params={"limit": 500}).json())
        assert admin.get(f"/v1/jobs/{job['id']}").json()["spec"]["layers"] == [0]
        assert admin.delete(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        r = a.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 409 and "already cancelled" in r.json()["detail"]


def test_quotas_answer_429_with_retry_after(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    from neurolabel.storage.db import upgrade

    upgrade(url)
    a, b = make_key(url, "a"), make_key(url, "b")
    limits = ServiceLimits(max_queued_jobs=3, max_neurons_per_job=100, writes_per_minute=8)
    app = create_app(url, limits=limits)
    with live_server(app) as base, client(base, a) as ca, client(base, b) as cb:
        r = ca.post("/v1/jobs", json={**SPEC, "units": list(range(60)), "layers": [0, 1]})
        assert r.status_code == 429 and "120 neurons" in r.json()["detail"] and int(r.headers["retry-after"]) > 0
        r = ca.post("/v1/jobs", json={**SPEC, "units": None})  # every unit of the default model: 1536
        assert r.status_code == 429 and "1536" in r.json()["detail"]
        for _ in range(3):
            assert ca.post("/v1/jobs", json=SPEC).status_code == 202
        r = ca.post("/v1/jobs", json=SPEC)
        assert r.status_code == 429 and "3 jobs queued" in r.json()["detail"] and int(r.headers["retry-after"]) > 0
        assert cb.post("/v1/jobs", json=SPEC).status_code == 202  # another key has its own quota
        # a's 6 write requests so far; 2 more pass the rate limit (as 429s of the queue quota), then 429 for rate
        statuses = [ca.post("/v1/jobs", json=SPEC).status_code for _ in range(3)]
        assert statuses == [429, 429, 429]
        r = ca.post("/v1/jobs", json=SPEC)
        assert r.status_code == 429 and "per minute" in r.json()["detail"], r.text
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert ca.get("/v1/jobs").status_code == 200  # reads are not rate-limited
    app.state.engine.dispose()


# ---------------------------------------------------------------- 3. invalid text in params

BAD_PATHS = [
    "/v1/models/%00", "/v1/models/a%00b", "/v1/models/a%00b/neurons?layer=0", "/v1/models/tiny%00/neurons/0/1",
    "/v1/models/tiny%01/neurons/0/1/label", "/v1/models/%ff%fe", "/models/%00", "/models/a%00b/neurons/0/1",
    "/v1/search?q=a%00b", "/v1/search?q=dog&model=a%00b", "/v1/search/concept?cls=%00", "/search?q=a%00b",
    "/v1/search?q=%ff", "/v1/jobs?status=%00",
]


def test_nul_and_control_characters_in_path_or_query_are_422_on_a_kept_connection(served):
    base, *_ = served
    with client(base) as c:
        for path in BAD_PATHS:
            r = c.get(path)
            assert r.status_code == 422, (path, r.status_code, r.text)
            assert r.json()["detail"][0]["type"] == "invalid_text" and r.json()["message"]
            assert r.headers.get("connection", "").lower() != "close"
            assert c.get("/v1/models").status_code == 200  # the same client goes on


# ------------------------------------------------------------------- 6. smaller findings


def test_models_hide_server_paths_and_boolean_activations_are_refused(served):
    base, url, keys, _, _ = served
    with client(base, keys["a"]) as c:
        models = c.get("/v1/models").json()
        assert models and all("source" not in m for m in models)
        rec = {"neuron_id": {"layer_index": 0, "neuron_index": 1},
               "most_positive_activation_records": [{"tokens": ["a", "b"], "activations": [0.0, True]}],
               "random_sample": [{"tokens": ["a", "b"], "activations": [0.0, 1.0]}]}
        for path, body in (("/v1/explain", {"records": [rec], "explainers": ["pmi"]}),
                           ("/v1/score", {"records": [rec], "explanation": {"text": "b"}})):
            r = c.post(path, json=body)
            assert r.status_code == 422, r.text
            assert "activations[1] is true" in r.json()["detail"][0]["msg"]
        rec["most_positive_activation_records"][0]["activations"] = [0.0, "1.5"]
        assert c.post("/v1/score", json={"records": [rec], "explanation": {"text": "b"}}).status_code == 422
        r = c.post("/v1/explain", json={"records": [rec], "explainers": ["pmi"], "model": "../../etc"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "model"]


def test_config_errors_are_422_in_the_documented_shape(served):
    base, url, keys, _, _ = served
    with client(base, keys["a"]) as c:
        spec = c.get("/openapi.json").json()
        r = c.post("/v1/jobs", json={**SPEC, "explainers": ["no_such"]})
        body = r.json()
        assert r.status_code == 422 and isinstance(body["detail"], list)
        assert set(body["detail"][0]) == {"loc", "msg", "type"} and "no_such" in body["message"]
        documented = {code for p in spec["paths"].values() for op in p.values() for code in op["responses"]}
        assert {"401", "403", "404", "409", "413", "422", "429", "503"} <= documented
        post_jobs = spec["paths"]["/v1/jobs"]["post"]["responses"]
        assert post_jobs["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationErrorOut")
        assert "Retry-After" in post_jobs["429"]["headers"]


def test_security_headers_on_pages_and_api(served):
    base, *_ = served
    with client(base) as c:
        for path in ("/", "/models/tiny", "/models/tiny/neurons/0/1", "/search?q=dog", "/v1/models", "/nope"):
            r = c.get(path)
            csp = r.headers.get("content-security-policy", "")
            assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, path
            assert r.headers.get("x-frame-options") == "DENY", path
            assert r.headers.get("x-content-type-options") == "nosniff", path


# -------------------------------------------------------------- 4. database unreachable


class _Proxy:
    """A TCP forwarder on loopback to the PostgreSQL server, which a test can cut and restore
    (the shared server itself is never touched)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", self.port))
        self.port = lsock.getsockname()[1]
        lsock.listen(64)
        self._listener = lsock
        threading.Thread(target=self._accept, args=(lsock,), daemon=True).start()

    def _accept(self, lsock: socket.socket) -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._conns += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Close the listener and every forwarded connection: the database is 'down'."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._conns.clear()


def test_database_down_is_503_json_and_recovers(tmp_path):
    from tests.conftest import PG_ADMIN_URL

    with fresh_database("postgresql", tmp_path) as url:
        seed(url)
        proxy = _Proxy(("127.0.0.1", int(os.environ.get("NEUROLABEL_TEST_PG_PORT", "5432"))))
        proxy.start()
        host_part = url.split("@", 1)[1].split("/", 1)[0]
        proxied = url.replace(host_part, f"127.0.0.1:{proxy.port}")
        assert PG_ADMIN_URL  # the server is reached only through the proxy below
        app = create_app(proxied, ontology=small_ontology)
        with live_server(app) as base, client(base) as c:
            assert c.get("/v1/models").status_code == 200
            proxy.cut()
            for path in ("/v1/models", "/v1/models/tiny/neurons/0/1", "/v1/search?q=dog", "/v1/jobs", "/"):
                r = c.get(path, timeout=60)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/json")
                assert "database unavailable" in r.json()["detail"] and r.headers.get("retry-after")
            proxy.start()  # the database is back, on the same address
            from neurolabel.service.worker import wait_for

            assert wait_for(lambda: c.get("/v1/models").status_code == 200, timeout_s=60, every_s=0.5)
            assert c.get("/v1/models/tiny/neurons/0/1").json()["best_label"]["text"] == "dogs and puppies"
        proxy.cut()
        app.state.engine.dispose()


def test_sources_cli_registers_names(tmp_path):
    from typer.testing import CliRunner

    from neurolabel.service.cli import app as cli_app
    from neurolabel.storage.db import upgrade

    url = f"sqlite:///{tmp_path}/s.db"
    upgrade(url)
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello\n")
    run = CliRunner().invoke
    assert run(cli_app, ["corpora", "add", "hello", str(corpus), "--db", url]).exit_code == 0
    out = run(cli_app, ["corpora", "list", "--db", url]).stdout
    assert "hello" in out and str(corpus) in out
    bad = run(cli_app, ["corpora", "add", "../x", str(corpus), "--db", url])
    assert bad.exit_code != 0 and "not a usable name" in str(bad.exception)
    bad = run(cli_app, ["models", "add", "m", str(tmp_path), "--db", url])
    assert bad.exit_code != 0 and "config.json" in str(bad.exception)
    assert run(cli_app, ["corpora", "remove", "hello", "--db", url]).exit_code == 0
    assert "hello" not in run(cli_app, ["corpora", "list", "--db", url]).stdout
    Path(corpus).unlink()


@pytest.mark.slow
def test_corpus_sent_as_text_is_labelled_by_the_worker(tmp_path, assets):
    """A job carrying its corpus in the body, on a registered model: the real worker writes the
    text to a private temporary file, records and labels from it, and leaves no file behind."""
    import glob
    import tempfile

    from neurolabel.service.limits import ServiceLimits
    from neurolabel.service.worker import Worker
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.sources import add_source
    from tests.service.live import CORPUS_LINES

    url = f"sqlite:///{tmp_path}/t.db"
    upgrade(url)
    with session_scope(url) as s:
        add_source(session=s, kind="model", name="tiny-llama", path=assets[0])
    key = make_key(url)
    app = create_app(url, limits=ServiceLimits())
    spec = {"model": "tiny-llama", "layers": [0], "units": [0, 1], "explainers": ["concept_induction"],
            "simulators": {"concept_induction": "symbolic"}, "corpus_text": "\n".join(CORPUS_LINES * 8),
            "max_tokens": 2000, "top_k": 5, "n_random": 4}
    with live_server(app) as base, client(base, key) as c:
        r = c.post("/v1/jobs", json=spec)
        assert r.status_code == 202, r.text
        before = set(glob.glob(os.path.join(tempfile.gettempdir(), "neurolabel-corpus-*")))
        state = Worker(database_url=url, heartbeat_s=0.5).run_one(job_id=r.json()["id"])
        assert state["status"] == "done", state
        assert state["result"]["recorded"] == 2 and state["result"]["neurons"] == 2
        n = c.get("/v1/models/tinyllama/neurons/0/1").json()
        assert any(" dog" in "".join(e["tokens"]) for e in n["examples"])
        assert set(glob.glob(os.path.join(tempfile.gettempdir(), "neurolabel-corpus-*"))) <= before
    app.state.engine.dispose()
