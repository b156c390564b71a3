"""Any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, llama.cpp server, Ollama …)
through the ``openai`` package's ``AsyncOpenAI`` client.

Chat answers through ``/chat/completions``; prompt logprobs (the log-probabilities of a given
text's own tokens, :meth:`OpenAIBackend.prompt_logprobs`) through the legacy ``/completions``
with ``echo`` and ``logprobs``, which vLLM and other OpenAI-compatible servers serve. An endpoint
that refuses that (HTTP 400/404/405/422/501) or answers without logprobs raises
:class:`core.errors.LMCapabilityError`, and later calls raise it at once without a request.

- timeouts, retries with exponential backoff on 429 / 5xx / connection errors (our own loop,
  the client's built-in retries are off so the policy lives in one place);
- one concurrency limit (an ``asyncio.Semaphore`` per event loop, held here and nowhere else);
- a dead or misconfigured endpoint raises one :class:`core.errors.LMError` naming the URL;
  later calls within ``dead_for_s`` fail at once with the same error instead of retrying again.

Wrap it in :class:`lm.cache.CachedBackend` (``lm.factory`` does) for the response cache.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from typing import Any, Sequence

from neurolabel.core.errors import LMCapabilityError, LMError
from neurolabel.lm.base import ChatChoice, Message, PromptToken, TokenLogprob, normalise_messages

log = logging.getLogger(__name__)


_NOT_SERVED = frozenset({400, 404, 405, 422, 501})
"""Statuses with which an endpoint says it does not serve a request of this kind."""


class OpenAIBackend:
    """Chat backend over an OpenAI-compatible HTTP endpoint."""

    supports_logits = False
    """An endpoint's forward pass is not ours to run."""
    supports_prompt_logprobs = True
    """:meth:`prompt_logprobs` may be asked (the endpoint may still refuse it)."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        dead_for_s: float = 30.0,
    ) -> None:
        self.base_url = base_url
        """Endpoint base URL (usually ending in ``/v1``)."""
        self.model = model
        """Model name sent with every request."""
        self.api_key = api_key
        """API key (``None``: a dummy key, for local servers)."""
        self.timeout_s = timeout_s
        """Timeout of one HTTP request."""
        self.max_retries = max_retries
        """Retries after the first attempt on 429 / 5xx / connection errors."""
        self.concurrency = concurrency
        """Requests in flight at most (per event loop)."""
        self.backoff_s = backoff_s
        """First backoff; doubles on each retry (with jitter), capped by ``max_backoff_s``."""
        self.max_backoff_s = max_backoff_s
        """Longest wait between two attempts."""
        self.dead_for_s = dead_for_s
        """After an unreachable endpoint, fail fast for this long."""
        self._per_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, asyncio.Semaphore]]" = (
            weakref.WeakKeyDictionary()
        )
        self._dead: tuple[float, LMError] | None = None
        self.requests_sent = 0
        """HTTP attempts made (all loops), for tests and benchmarks."""
        self._no_prompt_logprobs: LMCapabilityError | None = None

    @classmethod
    def from_settings(cls, settings: Any = None) -> "OpenAIBackend":
        """Built from ``core.settings`` (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, model, timeout, retries, concurrency)."""
        from neurolabel.core.errors import ConfigError
        from neurolabel.core.settings import get_settings

        s = settings or get_settings()
        if not s.openai_base_url:
            raise ConfigError("OPENAI_BASE_URL (or NEUROLABEL_OPENAI_BASE_URL) is not set")
        return cls(
            base_url=s.openai_base_url,
            model=s.openai_model,
            api_key=s.openai_api_key,
            timeout_s=s.llm_timeout_s,
            max_retries=s.llm_max_retries,
            concurrency=s.llm_concurrency,
        )

    @property
    def name(self) -> str:
        """``openai:<base_url>:<model>`` (part of cache keys)."""
        return f"openai:{self.base_url.rstrip('/')}:{self.model}"

    def _state(self) -> tuple[Any, asyncio.Semaphore]:
        """The client and the semaphore of the running event loop (httpx pools are loop-bound)."""
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        st = self._per_loop.get(loop)
        if st is None:
            client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key or "sk-no-key",
                timeout=self.timeout_s,
                max_retries=0,
            )
            st = (client, asyncio.Semaphore(self.concurrency))
            self._per_loop[loop] = st
        return st

    def _check_dead(self) -> None:
        if self._dead is not None:
            since, err = self._dead
            if time.monotonic() - since < self.dead_for_s:
                raise err
            self._dead = None

    async def _call(self, what: str, fn, *, not_served: frozenset[int] = frozenset()) -> Any:
        """Run ``fn(client)`` under the concurrency limit with the retry policy; an HTTP status in
        ``not_served`` raises :class:`LMCapabilityError` at once."""
        import openai

        self._check_dead()
        client, sem = self._state()
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                async with sem:
                    self.requests_sent += 1
                    return await fn(client)
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
                if getattr(exc, "status_code", None) in not_served:
                    raise LMCapabilityError(
                        f"{self.base_url}: {what} is not served (HTTP {exc.status_code}): {_short(exc)}"
                    ) from exc
                last = exc
                if attempt == self.max_retries:
                    break
                status = getattr(exc, "status_code", None)
                wait = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                log.warning(
                    "%s %s: %s (attempt %d/%d), retrying in %.2fs",
                    self.base_url, what, status or type(exc).__name__, attempt + 1, self.max_retries + 1, wait,
                )
                await asyncio.sleep(wait)
            except openai.APIStatusError as exc:  # 4xx other than 429: misconfiguration, not transient
                if exc.status_code in not_served:
                    raise LMCapabilityError(
                        f"{self.base_url}: {what} is not served (HTTP {exc.status_code}, model {self.model!r}): "
                        f"{_short(exc)}"
                    ) from exc
                raise LMError(
                    f"{self.base_url}: {what} failed with HTTP {exc.status_code} (model {self.model!r}): "
                    f"{_short(exc)}"
                ) from exc
            except openai.OpenAIError as exc:
                raise LMError(f"{self.base_url}: {what} failed: {_short(exc)}") from exc
        assert last is not None
        if isinstance(last, openai.APIConnectionError):
            err = LMError(
                f"{self.base_url}: endpoint unreachable ({type(last).__name__}: {_short(last)}) after "
                f"{self.max_retries + 1} attempts; check OPENAI_BASE_URL"
            )
            self._dead = (time.monotonic(), err)
        else:
            err = LMError(
                f"{self.base_url}: {what} still failing with HTTP {getattr(last, 'status_code', '?')} after "
                f"{self.max_retries + 1} attempts: {_short(last)}"
            )
        raise err from last

    async def list_models(self) -> list[str]:
        """Model ids the endpoint serves (a cheap reachability check)."""

        async def fn(client):
            page = await client.models.list()
            return [m.id for m in page.data]

        return await self._call("GET /models", fn)

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
        """``n`` answers; servers that return fewer than ``n`` choices are asked again for the rest."""
        msgs = normalise_messages(messages)
        choices: list[ChatChoice] = []
        while len(choices) < n:
            want = n - len(choices)
            kwargs: dict[str, Any] = dict(
                model=self.model, messages=msgs, n=want, temperature=temperature, max_tokens=max_tokens
            )
            if logprobs:
                kwargs["logprobs"] = True
                if top_logprobs:
                    kwargs["top_logprobs"] = top_logprobs

            async def fn(client, kwargs=kwargs):
                return await client.chat.completions.create(**kwargs)

            resp = await self._call("POST /chat/completions", fn)
            got = [_choice(c, logprobs) for c in (resp.choices or [])]
            if not got:
                raise LMError(f"{self.base_url}: chat completion with no choices (model {self.model!r})")
            choices.extend(got[:want])
        return choices

    async def prompt_logprobs(self, text: str, *, top_logprobs: int = 5) -> list[PromptToken]:
        """Every token of ``text`` with its offset, log-probability and ``top_logprobs`` alternatives:
        ``POST /completions`` with ``echo=True``, ``logprobs=top_logprobs`` and ``max_tokens=1``
        (the one generated token is dropped; some servers refuse ``max_tokens=0``).

        Raises :class:`LMCapabilityError` when the endpoint does not serve this (an HTTP status
        saying so, or an answer without prompt logprobs); after that, at once, without a request."""
        if self._no_prompt_logprobs is not None:
            raise self._no_prompt_logprobs
        if not text:
            raise LMError(f"{self.base_url}: empty prompt")

        async def fn(client):
            return await client.completions.create(model=self.model, prompt=text, max_tokens=1, temperature=0.0,
                                                   echo=True, logprobs=top_logprobs)

        try:
            resp = await self._call("POST /completions (echo, logprobs)", fn, not_served=_NOT_SERVED)
            tokens = _prompt_tokens(resp, text, want_alternatives=top_logprobs > 0)
        except LMCapabilityError as exc:
            self._refused(exc)
            raise
        if tokens is None:
            exc = LMCapabilityError(
                f"{self.base_url}: POST /completions with echo=True returned no prompt logprobs (model {self.model!r})"
            )
            self._refused(exc)
            raise exc
        return tokens

    def _refused(self, exc: LMCapabilityError) -> None:
        if self._no_prompt_logprobs is None:  # requests in flight together may all be refused: log once
            log.warning("%s", exc)
        self._no_prompt_logprobs = exc


def _prompt_tokens(resp: Any, text: str, *, want_alternatives: bool) -> list[PromptToken] | None:
    """The prompt's tokens from an echoed completion (tokens starting past the prompt are the
    generated ones, dropped); ``None`` when the answer carries no usable prompt logprobs."""
    choice = (resp.choices or [None])[0]
    lp = getattr(choice, "logprobs", None)
    if lp is None or not lp.tokens or not lp.text_offset or len(lp.text_offset) != len(lp.tokens):
        return None
    token_lp = list(lp.token_logprobs or [None] * len(lp.tokens))
    top = list(lp.top_logprobs or [None] * len(lp.tokens))
    out = []
    for k, (tok, off) in enumerate(zip(lp.tokens, lp.text_offset)):
        if off >= len(text):
            break
        alts = top[k] if k < len(top) else None
        value = token_lp[k] if k < len(token_lp) else None
        out.append(PromptToken(
            token=tok, offset=int(off), logprob=None if value is None else float(value),
            top_logprobs=tuple(sorted(((str(a), float(b)) for a, b in (alts or {}).items()), key=lambda p: -p[1])),
        ))
    if want_alternatives and len(out) > 1 and not any(t.top_logprobs for t in out[1:]):
        return None  # echoed tokens, but no alternatives at any position
    return out


def _choice(c: Any, logprobs: bool) -> ChatChoice:
    text = (c.message.content if c.message is not None else None) or ""
    tokens: tuple[TokenLogprob, ...] = ()
    if logprobs and getattr(c, "logprobs", None) is not None and c.logprobs.content:
        tokens = tuple(
            TokenLogprob(
                token=t.token,
                logprob=float(t.logprob),
                top_logprobs=tuple((a.token, float(a.logprob)) for a in (t.top_logprobs or ())),
            )
            for t in c.logprobs.content
        )
    return ChatChoice(text=text.strip(), tokens=tokens, finish_reason=c.finish_reason or "stop")


def _short(exc: BaseException, limit: int = 300) -> str:
    s = str(exc) or type(exc).__name__
    return s if len(s) <= limit else s[:limit] + "…"
