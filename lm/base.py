"""The chat-backend contract shared by the local and the OpenAI-compatible backends.

A backend answers one conversation with ``n`` sampled choices; each choice carries its text
and, when asked, the log-probability of every generated token and the most likely
alternatives (as in OpenAI's Chat Completions ``logprobs``/``top_logprobs``).

Two capabilities are declared, never probed: ``supports_logits`` (a local model whose
``model``, ``tokenizer`` and ``next_token_logprobs`` the caller may use) and
``supports_prompt_logprobs`` (:class:`PromptLogprobsBackend`: the log-probabilities of a
given text's own tokens, as the legacy Completions API returns them with ``echo`` and
``logprobs``).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

T = TypeVar("T")

Message = Mapping[str, str]
"""One chat message: ``{"role": "system"|"user"|"assistant", "content": "..."}``."""


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability."""

    token: str
    """The token as text."""
    logprob: float
    """Natural-log probability of this token under the model."""
    top_logprobs: tuple[tuple[str, float], ...] = ()
    """The most likely tokens at this position with their log-probabilities, best first."""


@dataclass(frozen=True)
class ChatChoice:
    """One sampled answer."""

    text: str
    """The assistant's answer."""
    tokens: tuple[TokenLogprob, ...] = ()
    """Per generated token log-probabilities (empty unless ``logprobs=True`` was asked)."""
    finish_reason: str = "stop"
    """``stop`` (end of answer) or ``length`` (hit ``max_tokens``)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (used by the response cache)."""
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "tokens": [
                {"token": t.token, "logprob": t.logprob, "top": [list(p) for p in t.top_logprobs]}
                for t in self.tokens
            ],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ChatChoice":
        """Inverse of :meth:`to_json`."""
        return cls(
            text=d["text"],
            finish_reason=d.get("finish_reason", "stop"),
            tokens=tuple(
                TokenLogprob(
                    token=t["token"],
                    logprob=float(t["logprob"]),
                    top_logprobs=tuple((str(a), float(b)) for a, b in t.get("top", ())),
                )
                for t in d.get("tokens", ())
            ),
        )


@dataclass(frozen=True)
class PromptToken:
    """One token of a scored prompt (the Completions API's ``echo`` + ``logprobs``)."""

    token: str
    """The token as text."""
    offset: int
    """Character offset in the prompt text where the token starts (``text_offset``)."""
    logprob: float | None
    """Log-probability of this token given the tokens before it (``None`` for the first)."""
    top_logprobs: tuple[tuple[str, float], ...] = ()
    """The most likely tokens at this position given the tokens before it, best first
    (empty for the first token)."""


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that answers chat conversations."""

    name: str
    """Identity of the backend and model (part of cache keys), e.g. ``local:smollm2-135m``."""
    supports_logits: bool
    """True for a local model whose forward pass the caller may run directly (``model``,
    ``tokenizer``, ``next_token_logprobs``: :class:`lm.local.LocalBackend`)."""
    supports_prompt_logprobs: bool
    """True when the backend is a :class:`PromptLogprobsBackend`. For an endpoint this says it
    may be asked; the endpoint can still turn out not to serve it
    (:class:`core.errors.LMCapabilityError`)."""

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
        """``n`` answers to ``messages``. Raises :class:`core.errors.LMError` on failure."""
        ...


@runtime_checkable
class PromptLogprobsBackend(ChatBackend, Protocol):
    """A chat backend that also scores a text's own tokens (one forward pass, no generation)."""

    async def prompt_logprobs(self, text: str, *, top_logprobs: int = 5) -> list[PromptToken]:
        """Every token of ``text``: its offset, its log-probability given the tokens before it and
        the ``top_logprobs`` most likely tokens at its position. Raises
        :class:`core.errors.LMCapabilityError` when the endpoint does not serve prompt logprobs,
        :class:`core.errors.LMError` on other failures."""
        ...


def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion from synchronous code.

    Uses ``asyncio.run`` when no event loop is running in this thread; inside a running loop
    (e.g. a FastAPI handler calling a synchronous explainer) it runs in a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    box: dict[str, Any] = {}

    def _target() -> None:
        try:
            box["value"] = asyncio.run(coro)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=_target, name="neurolabel-run-sync")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def normalise_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Plain ``[{"role", "content"}]`` dicts; raises ``ValueError`` on a malformed message."""
    out = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise ValueError(f"message {i}: needs role system/user/assistant and string content, got {m!r}")
        out.append({"role": role, "content": content})
    if not out:
        raise ValueError("no messages")
    return out
