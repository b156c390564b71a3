"""Job notifications: the final state of a job POSTed to the callback URL its spec names.

A delivery is a JSON body (the job as ``GET /v1/jobs/{id}`` shows it to its owner) with headers

- ``X-Neurolabel-Event``: ``job.done``, ``job.failed`` or ``job.cancelled``;
- ``X-Neurolabel-Delivery``: an id, the same on every retry of one delivery;
- ``X-Neurolabel-Timestamp``: Unix seconds when the delivery was made;
- ``X-Neurolabel-Signature``: ``sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"``
  keyed with the SHA-256 hex digest of the API key that submitted the job (the server keeps only
  that digest; the receiver computes it from the key: :func:`verify_signature`). Jobs queued
  without a key (CLI, nightly) carry no signature.

Deliveries never block a job: a :class:`Notifier` sends them from a background thread, retrying
a failed one (connection error, timeout, any status but 2xx) with exponential backoff. Callback
targets are limited to the hosts the operator allows (``NEUROLABEL_CALLBACK_HOSTS``, default
loopback only), checked when the job is submitted and again before each delivery, and redirects
are not followed, so a job cannot make the server reach anything else.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
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


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    event: str = field(compare=False)
    key: str | None = field(compare=False)
    id: str = field(compare=False)
    attempt: int = field(default=0, compare=False)


class Notifier:
    """Delivers job notifications from one background thread (started on first use), retrying
    each up to ``retries`` times after the first attempt, waiting ``backoff_s`` × 2^n between
    attempts. Constructor only stores its arguments."""

    def __init__(self, *, allowed_hosts: Iterable[str], retries: int = 5, backoff_s: float = 1.0,
                 timeout_s: float = 10.0) -> None:
        self.allowed_hosts = tuple(allowed_hosts)
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.delivered: list[dict[str, Any]] = []
        """Outcome of each finished delivery (``id``, ``url``, ``event``, ``attempts``, ``ok``)."""
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._busy = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def send(self, url: str, payload: Any, *, event: str, key: str | None) -> str:
        """Queue a delivery of ``payload`` (JSON-able) to ``url``, signed with ``key`` (a
        :func:`signing_key`; ``None`` = unsigned); returns the delivery id. Never blocks on the
        network; a URL on a host not allowed is refused (ConfigError)."""
        check_callback_url(url, self.allowed_hosts)
        body = json.dumps(payload, separators=(",", ":"), default=str).encode("utf-8")
        d = _Delivery(time.monotonic(), next(self._seq), url, body, event, key, uuid.uuid4().hex)
        with self._cond:
            if self._closed:
                raise RuntimeError("notifier is closed")
            heapq.heappush(self._heap, d)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="job-callbacks", daemon=True)
                self._thread.start()
            self._cond.notify()
        return d.id

    def pending(self) -> int:
        """Deliveries not finished yet (queued, waiting for a retry or in flight)."""
        with self._cond:
            return len(self._heap) + self._busy

    def close(self, timeout_s: float = 30.0) -> int:
        """Stop taking deliveries and wait up to ``timeout_s`` for the pending ones; returns how
        many were abandoned."""
        end = time.monotonic() + timeout_s
        with self._cond:
            self._closed = True
            while (self._heap or self._busy) and time.monotonic() < end:
                self._cond.wait(min(0.1, max(0.0, end - time.monotonic())))
            left = len(self._heap) + self._busy
            if left:
                log.warning("job callbacks: %d delivery(ies) abandoned at shutdown", left)
            self._heap.clear()
            self._cond.notify_all()
            return left

    def _loop(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as http:
            while True:
                with self._cond:
                    while not self._heap or self._heap[0].due > time.monotonic():
                        if self._closed and not self._heap:
                            return
                        self._cond.wait(None if not self._heap else max(0.0, self._heap[0].due - time.monotonic()))
                    d = heapq.heappop(self._heap)
                    self._busy += 1
                try:
                    ok, why = self._attempt(http, d)
                finally:
                    with self._cond:
                        self._busy -= 1
                d.attempt += 1
                with self._cond:
                    if ok or d.attempt > self.retries or self._closed:
                        if not ok:
                            log.warning("job callback %s to %s failed after %d attempt(s): %s", d.id, d.url,
                                        d.attempt, why)
                        self.delivered.append({"id": d.id, "url": d.url, "event": d.event,
                                               "attempts": d.attempt, "ok": ok, "error": why})
                    else:
                        d.due = time.monotonic() + self.backoff_s * 2 ** (d.attempt - 1)
                        heapq.heappush(self._heap, d)
                    self._cond.notify_all()

    def _attempt(self, http: Any, d: _Delivery) -> tuple[bool, str | None]:
        try:
            check_callback_url(d.url, self.allowed_hosts)
        except ConfigError as exc:
            return False, str(exc)
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", EVENT_HEADER: d.event, DELIVERY_HEADER: d.id,
                   TIMESTAMP_HEADER: ts, "User-Agent": "neurolabel-callbacks/1"}
        if d.key is not None:
            headers[SIGNATURE_HEADER] = sign(d.body, ts, d.key)
        try:
            r = http.post(d.url, content=d.body, headers=headers)
        except Exception as exc:  # noqa: BLE001 - any transport failure is retried
            return False, f"{type(exc).__name__}: {exc}"
        if 200 <= r.status_code < 300:
            return True, None
        return False, f"HTTP {r.status_code}"
