"""``neurolabel worker``: takes jobs from the database queue and runs them.

A labelling job's spec (:class:`service.schemas.JobSpec` as a dict) is converted once into a
:class:`pipeline.spec.RunSpec` (:func:`job_run_spec`) and run by :func:`pipeline.run.run`, which
stores its results in small idempotent transactions, so a worker killed at any moment leaves nothing a rerun would
duplicate or lose. While a job runs, a background thread heartbeats every ``heartbeat_s``;
a cancelled job (or one taken away after a missed heartbeat) makes ``should_stop`` true.
A job's callback is recorded pending with its final state and sent by the worker's
:class:`service.callbacks.Notifier`; each poll of the queue also has it look for deliveries that
a dead worker left, so a callback outlives the worker that should have sent it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from sqlalchemy.exc import InterfaceError, OperationalError

from neurolabel.core.errors import ConfigError
from neurolabel.service import jobs

if TYPE_CHECKING:
    from neurolabel.pipeline.spec import RunSpec

log = logging.getLogger(__name__)


def default_worker_name() -> str:
    """``host:pid:random`` — unique per worker process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


JOB_RUNNERS: dict[str, str] = {"contrast": "neurolabel.pipeline.studies:run_contrast_job"}
"""Job kinds besides labelling (a spec's ``kind``) -> the ``module:function`` that runs them."""


def run_spec(
    spec: Mapping[str, Any],
    *,
    database_url: str,
    should_stop: Callable[[], bool],
    on_progress: Callable[..., None],
    data_dirs: Sequence[str] | None = None,
) -> Any:
    """Run one job spec: a labelling spec (the API's ``JobSpec`` as a dict) through the
    pipeline, or a spec of another ``kind`` through its :data:`JOB_RUNNERS` entry.

    A labelling spec's model and corpus (another kind's model) are checked again here, as the API
    checked them (a spec may reach the queue another way): only built-in or registered names and paths under
    ``data_dirs`` (default: ``NEUROLABEL_DATA_DIRS``); a corpus sent as ``corpus_text`` is
    written to a private temporary file for the run."""
    from neurolabel.pipeline.run import run

    kind = spec.get("kind", "label")
    if kind != "label":
        import importlib

        if kind not in JOB_RUNNERS:
            raise ValueError(f"unknown job kind {kind!r}; known: label, {', '.join(sorted(JOB_RUNNERS))}")
        module, func = JOB_RUNNERS[kind].split(":")
        if "model" in spec:  # checked like a label job's model, again at run time
            model_spec, _, _ = resolve_job_sources({"model": spec["model"]}, database_url=database_url,
                                                   data_dirs=data_dirs)
            spec = {**spec, "model": model_spec}
        return getattr(importlib.import_module(module), func)(spec, database_url=database_url,
                                                              should_stop=should_stop, on_progress=on_progress)

    model_spec, corpus_spec, ontology_spec = resolve_job_sources(spec, database_url=database_url,
                                                                 data_dirs=data_dirs)
    with _corpus_file(spec.get("corpus_text")) as text_file:
        run_spec = job_run_spec(spec, model=model_spec, corpus=text_file or corpus_spec, ontology=ontology_spec)
        return run(run_spec, database_url=database_url, progress=False, should_stop=should_stop,
                   on_progress=on_progress)


def job_run_spec(spec: Mapping[str, Any], *, model: str, corpus: str, ontology: str) -> "RunSpec":
    """The run spec of a labelling job spec, its sources already resolved for the loaders (the one
    conversion of a job into a run); :class:`ConfigError` naming a bad field."""
    from neurolabel.core.settings import get_settings
    from neurolabel.pipeline.spec import RunSpec

    fields = {"model": model, "layers": spec["layers"], "units": spec.get("units"), "corpus": corpus,
           "record": _record_options(spec), "explainers": spec["explainers"], "simulators": spec.get("simulators"),
           "ontology": ontology, "retry_failed": bool(spec.get("retry_failed", False)),
           "ray_address": ray_address_allowed(spec.get("ray_address"), default=get_settings().ray_address,
                                       allowed=get_settings().ray_address_list())}
    for key in ("scorer", "threshold", "store_every", "concurrency", "embed"):
        if spec.get(key) is not None:
            fields[key] = spec[key]
    return RunSpec.parse(fields, where="job spec")


def ray_address_allowed(named: str | None, *, default: str | None, allowed: Sequence[str]) -> str | None:
    """The Ray cluster a job runs on: the one it names, if the operator allows it (a driver
    unpickles what the cluster sends), else the operator's default (``NEUROLABEL_RAY_ADDRESS``,
    ``None``: in the worker process)."""
    if named is None:
        return default
    if named not in allowed:
        raise ConfigError(f"job spec: ray_address {named!r} is not a Ray cluster this server allows "
                          f"(allowed: {', '.join(allowed) or 'none'}; the operator sets NEUROLABEL_RAY_ADDRESS "
                          "or NEUROLABEL_RAY_ADDRESSES)")
    return named


def resolve_job_sources(spec: Mapping[str, Any], *, database_url: str,
                        data_dirs: Sequence[str] | None = None) -> tuple[str, str, str]:
    """(model spec, corpus spec, ontology spec) for the loaders, through
    :func:`service.sources.resolve_source`; :class:`ConfigError` when the job names something the
    server does not allow."""
    from neurolabel.service.limits import get_limits
    from neurolabel.service.sources import resolve_source
    from neurolabel.storage.db import session_scope

    roots = tuple(data_dirs) if data_dirs is not None else get_limits().roots()
    with session_scope(database_url) as s:
        model = resolve_source(session=s, kind="model", name=str(spec.get("model", "default")), data_dirs=roots)
        corpus = resolve_source(session=s, kind="corpus", name=str(spec.get("corpus", "default")), data_dirs=roots)
        ontology = resolve_source(session=s, kind="ontology", name=str(spec.get("ontology") or "default"),
                                  data_dirs=roots)
    return model.spec, corpus.spec, ontology.spec


@contextlib.contextmanager
def _corpus_file(text: str | None) -> Iterator[str | None]:
    if text is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="neurolabel-corpus-") as d:
        path = os.path.join(d, "corpus.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        yield path


def _record_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The recording settings of a job spec (only those it sets)."""
    return {k: int(spec[k]) for k in ("max_tokens", "top_k", "n_random") if spec.get(k) is not None}


def _jsonable(x: Any) -> Any:
    if hasattr(x, "as_dict") and callable(x.as_dict):
        x = x.as_dict()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = dataclasses.asdict(x)
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _progress_of(args: tuple, kwargs: dict) -> tuple[float | None, dict[str, Any]]:
    """Understand the pipeline's progress callback: ``(done, total)``, ``(fraction)``,
    a mapping, or keywords ``done=``/``total=``/``fraction=``."""
    detail: dict[str, Any] = {}
    if len(args) == 1 and isinstance(args[0], Mapping):
        detail = dict(args[0])
    elif len(args) == 1 and dataclasses.is_dataclass(args[0]):
        detail = dataclasses.asdict(args[0])
    elif len(args) >= 2 and all(isinstance(a, (int, float)) for a in args[:2]):
        detail = {"done": args[0], "total": args[1]}
        if len(args) >= 3 and isinstance(args[2], Mapping):
            detail.update(args[2])
    elif len(args) == 1 and isinstance(args[0], (int, float)):
        detail = {"fraction": args[0]}
    detail.update(kwargs)
    detail = _jsonable(detail)
    frac = detail.get("fraction")
    if frac is None and isinstance(detail.get("done"), (int, float)) and detail.get("total"):
        frac = detail["done"] / detail["total"]
    return (float(frac) if isinstance(frac, (int, float)) else None), detail


_STOPPED = object()
"""What a runner that raised ``InterruptedError`` on request returned, in effect."""


class Worker:
    """Runs queued jobs. Constructor only stores its arguments; engines are made in ``run*``."""

    def __init__(
        self,
        *,
        database_url: str,
        name: str | None = None,
        poll_s: float = 2.0,
        heartbeat_s: float = 5.0,
        stale_after_s: float = 60.0,
        max_attempts: int = 3,
        runner: Callable[..., Any] = run_spec,
        notifier: Any = None,
    ) -> None:
        self.database_url = database_url
        self.name = name or default_worker_name()
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.max_attempts = max_attempts
        self.runner = runner
        self.shutdown = threading.Event()
        """Set (e.g. by SIGTERM) to stop: the running job is put back in the queue."""
        self._factory = None
        self._notifier = notifier

    @property
    def notifier(self) -> Any:
        """The :class:`service.callbacks.Notifier` delivering job callbacks (by default one under
        this worker's name, its stale claims as old as its jobs' stale heartbeats, allowing the
        hosts of ``NEUROLABEL_CALLBACK_HOSTS``, retried as ``NEUROLABEL_CALLBACK_RETRIES``,
        ``…_BACKOFF_S`` and ``…_TIMEOUT_S`` say; made on first use)."""
        if self._notifier is None:
            from neurolabel.core.settings import get_settings
            from neurolabel.service.callbacks import Notifier

            settings = get_settings()
            self._notifier = Notifier(database_url=self.database_url, name=self.name,
                                      allowed_hosts=settings.callback_host_list(),
                                      retries=settings.callback_retries, backoff_s=settings.callback_backoff_s,
                                      timeout_s=settings.callback_timeout_s, poll_s=self.poll_s,
                                      stale_after_s=self.stale_after_s)
        return self._notifier

    def close(self, *, timeout_s: float = 30.0) -> int:
        """Wait up to ``timeout_s`` for the callbacks of the jobs this worker finished; returns how
        many are still pending (they stay in the database for the next worker)."""
        return 0 if self._notifier is None else self._notifier.close(timeout_s)

    def _notify(self, job_id: int) -> None:
        """Deliver the callback of a job just made final (pending in the database since then, if
        its spec names a ``callback_url``); never raises and never waits for the receiver."""
        try:
            self.notifier.send(job_id)
        except Exception as exc:  # noqa: BLE001 - a notification must never break the worker
            log.warning("job %s: callback not sent now (it stays pending): %s", job_id, exc)

    def _poll_callbacks(self) -> None:
        """Have the notifier look for due deliveries: left by dead workers, or by jobs failed
        for lost heartbeats (:func:`service.jobs.requeue_stale`)."""
        try:
            self.notifier.kick()
        except Exception as exc:  # noqa: BLE001 - as above
            log.warning("worker %s: callbacks not polled: %s", self.name, exc)

    def _session(self):
        if self._factory is None:
            from neurolabel.storage.db import make_engine, session_factory

            self._factory = session_factory(make_engine(self.database_url))
        return self._factory()

    def run_one(self, *, job_id: int | None = None) -> dict[str, Any] | None:
        """Requeue stale jobs, poll the pending callbacks, claim one job (``job_id`` if given) and
        run it to its end. Returns the job's final state, or ``None`` when nothing was queued."""
        with self._session() as s:
            jobs.requeue_stale(session=s, stale_after_s=self.stale_after_s, max_attempts=self.max_attempts)
            self._poll_callbacks()
            job = jobs.claim(session=s, worker=self.name, job_id=job_id)
        if job is None:
            return None
        self._run(job)
        with self._session() as s:
            return jobs.get_job(session=s, job_id=job["id"])

    def run_forever(self, *, until_idle: bool = False, max_jobs: int | None = None,
                    stop: threading.Event | None = None) -> int:
        """Loop over the queue; returns the number of jobs run. ``until_idle`` stops when
        the queue is empty, ``stop`` stops between jobs."""
        n = 0
        stop = stop or self.shutdown
        log.info("worker %s polling %s", self.name, self.database_url)
        reached = False
        while not stop.is_set() and not self.shutdown.is_set() and (max_jobs is None or n < max_jobs):
            try:
                state = self.run_one()
            except (OperationalError, InterfaceError) as exc:
                if not reached:  # never reached the database: the configuration is wrong
                    raise
                log.warning("worker %s: database unavailable (%s); retrying in %.1f s",
                            self.name, str(getattr(exc, "orig", exc)).strip().splitlines()[0], self.poll_s)
                stop.wait(self.poll_s)
                continue
            reached = True
            if state is None:
                if until_idle:
                    break
                stop.wait(self.poll_s)
            else:
                n += 1
        return n

    def _run(self, job: Mapping[str, Any]) -> None:
        job_id = job["id"]
        stop = threading.Event()
        lost = threading.Event()
        state: dict[str, Any] = {"progress": None, "detail": None}
        lock = threading.Lock()

        def beat() -> None:
            with lock:
                progress, detail = state["progress"], state["detail"]
            with self._session() as s:
                alive = jobs.heartbeat(session=s, job_id=job_id, worker=self.name,
                                       progress=progress, detail=detail)
            if not alive:
                lost.set()
                stop.set()

        def heartbeat_loop() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    beat()
                except Exception as exc:  # noqa: BLE001 - a flaky DB must not kill the job
                    log.warning("job %s: heartbeat failed: %s", job_id, exc)

        def on_progress(*args: Any, **kwargs: Any) -> None:
            frac, detail = _progress_of(args, kwargs)
            with lock:
                state["progress"], state["detail"] = frac, detail

        thread = threading.Thread(target=heartbeat_loop, name=f"heartbeat-{job_id}", daemon=True)
        thread.start()
        log.info("worker %s running job %s", self.name, job_id)
        try:
            result = self.runner(job["spec"], database_url=self.database_url,
                                 should_stop=lambda: stop.is_set() or self.shutdown.is_set(),
                                 on_progress=on_progress)
        except InterruptedError as exc:
            # a runner that stops by raising (a contrast does) after ``should_stop`` said so is
            # stopped, not failed: cancelled, taken away, or back in the queue on shutdown
            if not (lost.is_set() or self.shutdown.is_set()):
                self._failed(job_id, exc, stop, thread)
                return
            result = _STOPPED
        except Exception as exc:  # noqa: BLE001 - the job fails, the worker lives on
            self._failed(job_id, exc, stop, thread)
            return
        stop.set()
        thread.join()
        if lost.is_set():
            log.info("job %s was cancelled or taken away; stopped", job_id)
            self._notify(job_id)  # sent only when it was cancelled (a final state)
            return
        if self.shutdown.is_set() or getattr(result, "stopped", False):
            with self._session() as s:
                jobs.release(session=s, job_id=job_id, worker=self.name)
            log.info("worker %s shutting down: job %s back in the queue", self.name, job_id)
            return
        with self._session() as s:
            summary = _jsonable(result)
            jobs.finish(session=s, job_id=job_id, worker=self.name, status="done",
                        result=summary if isinstance(summary, dict) else {"summary": summary})
        log.info("job %s done", job_id)
        self._notify(job_id)

    def _failed(self, job_id: int, exc: BaseException, stop: threading.Event, thread: threading.Thread) -> None:
        """Record a job's failure (the worker lives on)."""
        stop.set()
        thread.join()
        log.error("job %s failed", job_id, exc_info=exc)
        with self._session() as s:
            jobs.finish(session=s, job_id=job_id, worker=self.name, status="failed",
                        error=f"{type(exc).__name__}: {exc}")
        self._notify(job_id)


def wait_for(predicate: Callable[[], bool], *, timeout_s: float, every_s: float = 0.2) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passed (used by the CLI and tests)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()
