"""A response cache for chat backends, keyed on the full request, so re-runs cost nothing.

Answers are stored in one SQLite file (default ``<cache_dir>/lm_responses.sqlite``) under the
SHA-256 of the canonical JSON of ``(backend name, messages, n, temperature, max_tokens,
logprobs, top_logprobs)``; scored prompts (prompt logprobs) under that of
``(backend name, prompt, top_logprobs)``. :class:`CachedBackend` wraps any :class:`lm.base.ChatBackend`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from neurolabel.core.errors import LMError
from neurolabel.lm.base import ChatBackend, ChatChoice, Message, PromptToken, normalise_messages

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses ("
    " key TEXT PRIMARY KEY, backend TEXT NOT NULL, request TEXT NOT NULL,"
    " response TEXT NOT NULL, created REAL NOT NULL DEFAULT (julianday('now')))"
)


def request_key(backend: str, request: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of ``backend`` and the full ``request``."""
    blob = json.dumps({"backend": backend, "request": request}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """SQLite store of chat answers. Safe to share between threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        """The SQLite file."""
        self.hits = 0
        """Lookups answered from the cache (this process)."""
        self.misses = 0
        """Lookups not in the cache (this process)."""

    @classmethod
    def default(cls) -> "ResponseCache":
        """The cache in the settings' cache folder."""
        from neurolabel.core.assets import cache_dir

        return cls(cache_dir() / "lm_responses.sqlite")

    _init_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            with self._init_lock:
                conn.execute(_SCHEMA)
            return conn
        except (sqlite3.Error, OSError) as exc:
            raise LMError(f"{self.path}: cannot open the LM response cache: {exc}") from exc

    def get(self, key: str) -> list[ChatChoice] | None:
        """The cached choices for ``key``, or ``None``."""
        hit = self.get_json(key)
        return None if hit is None else [ChatChoice.from_json(d) for d in hit]

    def get_json(self, key: str) -> Any:
        """The cached JSON answer for ``key``, or ``None``."""
        conn = self._connect()
        try:
            row = conn.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        finally:
            conn.close()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, *, backend: str, request: Mapping[str, Any], choices: Sequence[ChatChoice]) -> None:
        """Store ``choices`` under ``key`` (replacing an older answer)."""
        self.put_json(key, backend=backend, request=request, answer=[c.to_json() for c in choices])

    def put_json(self, key: str, *, backend: str, request: Mapping[str, Any], answer: Any) -> None:
        """Store a JSON-able ``answer`` under ``key`` (replacing an older one)."""
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO responses (key, backend, request, response) VALUES (?, ?, ?, ?)",
                    (
                        key,
                        backend,
                        json.dumps(request, sort_keys=True, ensure_ascii=False),
                        json.dumps(answer, ensure_ascii=False),
                    ),
                )
        finally:
            conn.close()

    def __len__(self) -> int:
        conn = self._connect()
        try:
            return int(conn.execute("SELECT count(*) FROM responses").fetchone()[0])
        finally:
            conn.close()

    def clear(self) -> None:
        """Forget every stored answer."""
        conn = self._connect()
        try:
            with conn:
                conn.execute("DELETE FROM responses")
        finally:
            conn.close()


class CachedBackend:
    """A chat backend answering repeated requests from a :class:`ResponseCache`.

    Other attributes (``model``, ``tokenizer``, ``next_token_logprobs`` …) pass through to the
    wrapped backend.
    """

    def __init__(self, backend: ChatBackend, cache: ResponseCache) -> None:
        self.backend = backend
        """The wrapped backend."""
        self.cache = cache
        """Where answers are kept."""

    @property
    def name(self) -> str:
        """The wrapped backend's name."""
        return self.backend.name

    @property
    def supports_logits(self) -> bool:
        """The wrapped backend's."""
        return self.backend.supports_logits

    @property
    def supports_prompt_logprobs(self) -> bool:
        """The wrapped backend's."""
        return self.backend.supports_prompt_logprobs

    def __getattr__(self, item: str) -> Any:
        if item in ("backend", "cache"):
            raise AttributeError(item)
        return getattr(self.backend, item)

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 256,
        logprobs: bool = False,
        top_logprobs: int = 0,
    ) -> list[ChatChoice]:
        """Answer from the cache, or ask the wrapped backend and store its answer."""
        request = {
            "messages": normalise_messages(messages),
            "n": n,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "logprobs": logprobs,
            "top_logprobs": top_logprobs,
        }
        seed = getattr(self.backend, "seed", None)
        if seed is not None and temperature > 0:
            # a seeded sampler (the local backend) answers differently per seed; greedy does not
            request["seed"] = seed
        key = request_key(self.backend.name, request)
        hit = self.cache.get(key)
        if hit is not None:
            log.debug("LM cache hit %s", key[:12])
            return hit
        choices = await self.backend.chat(
            messages, n=n, temperature=temperature, max_tokens=max_tokens, logprobs=logprobs, top_logprobs=top_logprobs
        )
        self.cache.put(key, backend=self.backend.name, request=request, choices=choices)
        return choices

    async def prompt_logprobs(self, text: str, *, top_logprobs: int = 5) -> list[PromptToken]:
        """Answer from the cache, or score ``text`` with the wrapped backend and store the answer
        (a refusal, :class:`core.errors.LMCapabilityError`, is not stored)."""
        request = {"prompt": text, "top_logprobs": top_logprobs}
        key = request_key(self.backend.name + ":prompt_logprobs", request)
        hit = self.cache.get_json(key)
        if hit is not None:
            return [PromptToken(token=t["token"], offset=int(t["offset"]), logprob=t["logprob"],
                                top_logprobs=tuple((str(a), float(b)) for a, b in t["top"])) for t in hit]
        tokens = await self.backend.prompt_logprobs(text, top_logprobs=top_logprobs)  # type: ignore[attr-defined]
        self.cache.put_json(key, backend=self.backend.name, request=request, answer=[
            {"token": t.token, "offset": t.offset, "logprob": t.logprob, "top": [list(p) for p in t.top_logprobs]}
            for t in tokens])
        return tokens
