"""Job notifications: the final state of a job POSTed to the callback URL its spec names.

A delivery is a JSON body (the job as ``GET /v1/jobs/{id}`` shows it to its owner) with headers

- ``X-Neurolabel-Event``: ``job.done``, ``job.failed`` or ``job.cancelled``;
- ``X-Neurolabel-Delivery``: an id, the same on every retry of one delivery;
- ``X-Neurolabel-Timestamp``: Unix seconds when the delivery was made;
- ``X-Neurolabel-Signature``: ``sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"``
  keyed with the SHA-256 hex digest of the API key that submitted the job (the server keeps only
  that digest; the receiver computes it from the key: :func:`verify_signature`). Jobs queued
  without a key (CLI, nightly) carry no signature.

Deliveries never block a job, and survive the process that should send them. The UPDATE that
makes a job final also marks its callback pending, with a fresh delivery id
(:func:`service.jobs.finish`, ``cancel``, ``requeue_stale``); a :class:`Notifier` (a background
thread of every worker, and of the API for jobs it cancels) claims due deliveries from the
database, sends them and records each attempt's outcome in the job's row: a failed one
(connection error, timeout, any status but 2xx) is due again after an exponential backoff, and
``failed`` with its last error once its retries run out (``GET /v1/jobs/{id}`` shows the owner
``callback``). A claim is held only during an attempt; one older than the notifier's
``stale_after_s`` is a dead process's and is taken over. So a worker killed (SIGKILL, OOM, a
deploy) after a job ended, while its receiver was down, loses nothing: the next worker to poll
delivers it, with the same delivery id. Delivery is at least once: a process killed after the
receiver took a delivery but before recording it leaves it to be sent again (same id), and so
does a receiver slower than the claim's lifetime; receivers drop repeats by
``X-Neurolabel-Delivery``.

Callback targets are limited to the hosts the operator allows (``NEUROLABEL_CALLBACK_HOSTS``,
default loopback only), checked when the job is submitted and again before each attempt (a host
no longer allowed fails the delivery at once: it is never reached), and redirects are not
followed, so a job cannot make the server reach anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable
from urllib.parse import urlsplit

from neurolabel.core.errors import ConfigError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Neurolabel-Signature"
TIMESTAMP_HEADER = "X-Neurolabel-Timestamp"
EVENT_HEADER = "X-Neurolabel-Event"
DELIVERY_HEADER = "X-Neurolabel-Delivery"


def check_callback_url(url: str, allowed_hosts: Iterable[str]) -> str:
    """``url`` when it is an http(s) URL on an allowed host (without user info); ConfigError
    saying what is wrong otherwise."""
    allowed = {h.strip().lower().strip("[]") for h in allowed_hosts if h.strip()}
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"callback URL is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError("callback URL must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("callback URL must not carry a user name or password")
    if host not in allowed:
        raise ConfigError(f"callback host {host!r} is not allowed; the server allows "
                          f"{', '.join(sorted(allowed)) or 'none'} (NEUROLABEL_CALLBACK_HOSTS)")
    return url


def signing_key(api_key: str) -> str:
    """The key a delivery is signed with, from the API key that submitted the job (its SHA-256
    hex digest: what the server stores)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def sign(body: bytes, timestamp: str, key: str) -> str:
    """The ``X-Neurolabel-Signature`` value of ``body`` sent at ``timestamp`` with ``key``
    (:func:`signing_key` of the API key)."""
    mac = hmac.new(key.encode("ascii"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(api_key: str, body: bytes, timestamp: str, signature: str, *,
                     max_age_s: float | None = 300.0, now: float | None = None) -> bool:
    """Whether a delivery's ``signature`` (header ``X-Neurolabel-Signature``) was made for
    ``body`` and ``timestamp`` (header ``X-Neurolabel-Timestamp``) by the server holding
    ``api_key``; with ``max_age_s``, also whether it is that recent (no replays)."""
    if max_age_s is not None:
        try:
            age = (time.time() if now is None else now) - float(timestamp)
        except ValueError:
            return False
        if abs(age) > max_age_s:
            return False
    return hmac.compare_digest(sign(body, timestamp, signing_key(api_key)), signature)


class Notifier:
    """Delivers the pending job callbacks of the database at ``database_url`` from one background
    thread (started on first use), one at a time: each up to ``retries`` times after the first
    attempt, waiting ``backoff_s`` × 2^n between attempts. ``name`` marks its claims (the
    worker's name, by default ``host:pid:random``); a claim older than ``stale_after_s`` (and
    3 × ``timeout_s``: an attempt may take that long) is a dead process's. With deliveries pending,
    the thread looks for due ones at least every ``poll_s``; with none, it waits for :meth:`kick`.
    Constructor only stores its arguments."""

    def __init__(self, *, database_url: str, allowed_hosts: Iterable[str], name: str | None = None,
                 retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 10.0, poll_s: float = 2.0,
                 stale_after_s: float = 60.0) -> None:
        self.database_url = database_url
        self.allowed_hosts = tuple(allowed_hosts)
        self.name = name
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.stale_after_s = stale_after_s
        self.delivered: list[dict[str, Any]] = []
        """Outcome of each delivery this notifier finished (``id``, ``url``, ``event``,
        ``attempts``, ``ok``, ``error``)."""
        self._sent: set[int] = set()
        self._cond = threading.Condition()
        self._kicked = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._engine: Any = None
        self._factory: Any = None
        self._engine_lock = threading.Lock()

    @property
    def claim_ttl_s(self) -> float:
        """How long a claim holds: ``stale_after_s``, at least 3 × ``timeout_s``."""
        return max(self.stale_after_s, 3 * self.timeout_s)

    def send(self, job_id: int) -> None:
        """Deliver the callback of the final job ``job_id`` soon (its pending delivery, recorded
        with its final state); :meth:`close` waits for it. Never blocks on the network."""
        with self._cond:
            self._sent.add(job_id)
        self.kick()

    def kick(self) -> None:
        """Look for due deliveries now (the worker kicks on each poll of its queue: deliveries
        that a dead process left are picked up)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("notifier is closed")
            self._kicked = True
            if self._thread is None:
                if self.name is None:
                    self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
                self._thread = threading.Thread(target=self._loop, name="job-callbacks", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> int:
        """Deliveries of the jobs given to :meth:`send` still pending (in the database)."""
        from neurolabel.service import jobs

        with self._cond:
            ids = sorted(self._sent)
        if not ids:
            return 0
        with self._session() as s:
            return sum(state == "pending" for state in jobs.callback_states(session=s, job_ids=ids).values())

    def close(self, timeout_s: float = 30.0) -> int:
        """Wait up to ``timeout_s`` for the deliveries given to :meth:`send` (their retries
        included), then stop; returns how many are still pending. Those are not lost: they stay
        pending in the database, for the next worker to poll."""
        end = time.monotonic() + timeout_s
        left = 0
        try:
            while (left := self.pending()) and time.monotonic() < end:
                with self._cond:
                    self._cond.wait(min(0.25, max(0.0, end - time.monotonic())))
        except Exception as exc:  # noqa: BLE001 - closing must not fail on a database gone
            log.warning("job callbacks: could not read their state at shutdown: %s", exc)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(max(0.0, end - time.monotonic()))
        if left:
            log.warning("job callbacks: %d delivery(ies) still pending at shutdown; they stay in the database "
                        "for the next worker", left)
        if thread is None or not thread.is_alive():
            self._dispose()
        return left

    def _session(self):
        with self._engine_lock:  # the thread and close() may both be first
            if self._factory is None:
                from neurolabel.storage.db import make_engine, session_factory

                self._engine = make_engine(self.database_url)
                self._factory = session_factory(self._engine)
            return self._factory()

    def _dispose(self) -> None:
        with self._engine_lock:
            if self._engine is not None:
                self._engine.dispose()

    def _loop(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as http:
            while True:
                with self._cond:
                    if self._closed:
                        return
                    self._kicked = False
                try:
                    wait = self._step(http)
                except Exception as exc:  # noqa: BLE001 - a flaky database must not stop deliveries
                    log.warning("job callbacks: %s; trying again in %.1f s", exc, self.poll_s)
                    wait = self.poll_s
                with self._cond:
                    self._cond.notify_all()  # close() may be waiting on an outcome
                    end = None if wait is None else time.monotonic() + wait
                    while not (self._kicked or self._closed):
                        left = None if end is None else end - time.monotonic()
                        if left is not None and left <= 0:
                            break
                        self._cond.wait(left)

    def _step(self, http: Any) -> float | None:
        """Make one due attempt, if any; returns how long to wait before the next look (``0``:
        look again now, ``None``: nothing pending, wait for a kick)."""
        from neurolabel.service import jobs

        with self._session() as s:
            job = jobs.claim_callback(session=s, notifier=self.name, stale_after_s=self.claim_ttl_s)
            if job is None:
                nxt = jobs.next_callback_at(session=s, stale_after_s=self.claim_ttl_s)
                if nxt is None:
                    return None
                return min(self.poll_s, max(0.01, (nxt - datetime.now(timezone.utc)).total_seconds()))
            key = _signing_key(s, job)
        cb = job["callback"]
        url, event, attempt = job["spec"].get("callback_url"), f"job.{job['status']}", cb["attempts"]
        ok, why, hopeless = self._attempt(http, job, key)
        retry_at = None
        if not ok and not hopeless and attempt <= self.retries:
            retry_at = datetime.now(timezone.utc) + timedelta(seconds=self.backoff_s * 2 ** (attempt - 1))
        with self._session() as s:
            state = jobs.record_callback(session=s, job_id=job["id"], delivery_id=cb["delivery_id"],
                                         notifier=self.name, ok=ok, error=why, retry_at=retry_at)
        if state in ("delivered", "failed"):
            if not ok:
                log.warning("job %s: callback %s to %s failed after %d attempt(s): %s", job["id"],
                            cb["delivery_id"], url, attempt, why)
            self.delivered.append({"id": cb["delivery_id"], "url": url, "event": event, "attempts": attempt,
                                   "ok": ok, "error": why})
        return 0.0

    def _attempt(self, http: Any, job: dict[str, Any], key: str | None) -> tuple[bool, str | None, bool]:
        """(delivered, why not, whether retrying is pointless)."""
        url = job["spec"].get("callback_url") or ""
        try:
            check_callback_url(url, self.allowed_hosts)
        except ConfigError as exc:
            return False, str(exc), True
        body = _body(job)
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", EVENT_HEADER: f"job.{job['status']}",
                   DELIVERY_HEADER: job["callback"]["delivery_id"], TIMESTAMP_HEADER: ts,
                   "User-Agent": "neurolabel-callbacks/1"}
        if key is not None:
            headers[SIGNATURE_HEADER] = sign(body, ts, key)
        try:
            r = http.post(url, content=body, headers=headers)
        except Exception as exc:  # noqa: BLE001 - any transport failure is retried
            return False, f"{type(exc).__name__}: {exc}", False
        if 200 <= r.status_code < 300:
            return True, None, False
        return False, f"HTTP {r.status_code}", False


def _signing_key(session: Any, job: dict[str, Any]) -> str | None:
    from neurolabel.service.auth import signing_key_of

    return signing_key_of(session=session, key_id=job["owner_key_id"])


def _body(job: dict[str, Any]) -> bytes:
    """The body of a job's delivery: the job as its owner sees it (without its ``callback``, whose
    attempts change from one attempt to the next: every attempt sends the same bytes)."""
    from neurolabel.service import jobs
    from neurolabel.service.schemas import JobOut

    view = JobOut.model_validate(jobs.public_view(job, key_id=None, is_admin=True))
    return json.dumps(view.model_dump(mode="json", exclude={"callback"}), separators=(",", ":"),
                      default=str).encode("utf-8")
