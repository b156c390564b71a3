"""A small OpenAI-compatible HTTP server over any chat backend (usually the local one).

It speaks the Chat Completions wire format (``n``, ``logprobs``/``top_logprobs``), the legacy
Completions format for scoring a prompt (``POST /v1/completions`` with ``echo=true`` and
``logprobs=K``: every prompt token's text, ``text_offset``, ``token_logprobs`` and
``top_logprobs``; no token is generated whatever ``max_tokens`` says) and ``GET /v1/models``
on 127.0.0.1 at a free port, in a background thread, so tests exercise the real ``openai``
client over a socket. Fault injection: ``server.faults.fail_next(k, status)`` makes the next
``k`` requests (chat or completions) answer with that HTTP status. ``chat_only=True`` (or a
backend without prompt logprobs) answers ``/v1/completions`` with 404, as a chat-only server does.

    with serve_local_backend(backend) as base_url:            # just the URL
        ...
    with serve_backend(backend, api_key="sk-test") as server:  # URL + fault switch + counters
        server.faults.fail_next(2, status=500)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from neurolabel.core.errors import LMError

from neurolabel.lm.base import ChatBackend, ChatChoice, PromptToken, TokenLogprob


@dataclass
class Faults:
    """Fault-injection switch and request counters of a test server."""

    fail_status: int = 500
    """Status answered while ``fail_remaining`` > 0."""
    fail_remaining: int = 0
    """How many more requests (chat or completions) fail."""
    chat_requests: int = 0
    """Chat requests received (failed ones included)."""
    completion_requests: int = 0
    """Completions (prompt-scoring) requests received (failed and refused ones included)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` requests (chat or completions) with HTTP ``status``."""
        with self._lock:
            self.fail_remaining, self.fail_status = count, status

    @property
    def requests(self) -> int:
        """Chat and completions requests received."""
        return self.chat_requests + self.completion_requests

    def _take(self, kind: str = "chat") -> int | None:
        with self._lock:
            if kind == "chat":
                self.chat_requests += 1
            else:
                self.completion_requests += 1
            if self.fail_remaining > 0:
                self.fail_remaining -= 1
                return self.fail_status
            return None


@dataclass
class TestServer:
    """A running server."""

    __test__ = False  # not a pytest test class

    base_url: str
    """``http://127.0.0.1:<port>/v1``."""
    faults: Faults
    """Fault-injection switch and counters."""
    model_name: str
    """The model id it reports and accepts."""


def build_app(backend: ChatBackend, *, model_name: str, faults: Faults, api_key: str | None = None,
              chat_only: bool = False):
    """The FastAPI app answering Chat Completions (and prompt scoring through Completions, unless
    ``chat_only`` or the backend does not declare ``supports_prompt_logprobs``) from ``backend``."""
    app = FastAPI(title="neurolabel test LLM server")

    def _err(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    def _auth(request: Request) -> JSONResponse | None:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return _err(401, "Incorrect API key provided", "invalid_request_error")
        return None

    @app.get("/v1/models")
    async def models(request: Request):
        if (bad := _auth(request)) is not None:
            return bad
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "neurolabel"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        status = faults._take()
        if status is not None:
            return _err(status, f"injected fault {status}", "server_error")
        if (bad := _auth(request)) is not None:
            return bad
        body = await request.json()
        if body.get("model") != model_name:
            return _err(404, f"The model {body.get('model')!r} does not exist", "invalid_request_error")
        try:
            choices = await backend.chat(
                body["messages"],
                n=int(body.get("n") or 1),
                temperature=float(body.get("temperature") if body.get("temperature") is not None else 1.0),
                max_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
                logprobs=bool(body.get("logprobs")),
                top_logprobs=int(body.get("top_logprobs") or 0),
            )
        except (ValueError, KeyError) as exc:
            return _err(400, str(exc), "invalid_request_error")
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [_choice_json(i, c, bool(body.get("logprobs"))) for i, c in enumerate(choices)],
            "usage": {"prompt_tokens": 0, "completion_tokens": sum(len(c.tokens) for c in choices), "total_tokens": 0},
        }

    @app.post("/v1/completions")
    async def completions(request: Request):
        status = faults._take("completion")
        if chat_only or not backend.supports_prompt_logprobs:
            return _err(404, "Not Found: this server serves /v1/chat/completions only", "invalid_request_error")
        if status is not None:
            return _err(status, f"injected fault {status}", "server_error")
        if (bad := _auth(request)) is not None:
            return bad
        body = await request.json()
        if body.get("model") != model_name:
            return _err(404, f"The model {body.get('model')!r} does not exist", "invalid_request_error")
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            return _err(400, "prompt: one non-empty string expected", "invalid_request_error")
        if not body.get("echo") or body.get("logprobs") is None:
            return _err(400, "this test server scores prompts only: echo=true and logprobs=K are required",
                        "invalid_request_error")
        try:
            tokens = await backend.prompt_logprobs(prompt, top_logprobs=int(body["logprobs"]))  # type: ignore[attr-defined]
        except (ValueError, LMError) as exc:
            return _err(400, str(exc), "invalid_request_error")
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [{
                "index": 0,
                "text": prompt,
                "finish_reason": "length",
                "logprobs": {
                    "tokens": [t.token for t in tokens],
                    "token_logprobs": [t.logprob for t in tokens],
                    "top_logprobs": [dict(t.top_logprobs) if k else None for k, t in enumerate(tokens)],
                    "text_offset": [t.offset for t in tokens],
                },
            }],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": 0, "total_tokens": len(tokens)},
        }

    return app


def _choice_json(index: int, c: ChatChoice, logprobs: bool) -> dict[str, Any]:
    lp = None
    if logprobs:
        lp = {
            "content": [
                {
                    "token": t.token,
                    "logprob": t.logprob,
                    "bytes": list(t.token.encode("utf-8")),
                    "top_logprobs": [
                        {"token": a, "logprob": b, "bytes": list(a.encode("utf-8"))} for a, b in t.top_logprobs
                    ],
                }
                for t in c.tokens
            ]
        }
    return {
        "index": index,
        "message": {"role": "assistant", "content": c.text},
        "finish_reason": c.finish_reason,
        "logprobs": lp,
    }


class KeywordBackend:
    """A rule-based chat backend for the test server and benchmarks, speaking the LLM simulator's
    formats: a neuron fires (value ``max_value``) on the tokens that are words of the explanation,
    0 elsewhere. It scores the simulator's all-at-once prompt (:meth:`prompt_logprobs`: the last
    ``<start>`` block's ``token<TAB>unknown`` lines, where the alternatives at each ``unknown`` put
    0.9 on the value), answers its chat listing requests (``<start>``…``<end>`` block: one
    ``token<TAB>value`` line per token, with per-token logprobs whose alternatives at each number
    put 0.9 on the value), its JSON requests, and anything else with a short sentence.

    ``latency_s``: seconds each answer takes, awaited, so concurrent requests overlap as on an
    endpoint that serves many at once (a GPU server batching them); ``requests`` counts chats."""

    name = "rule:keyword"
    supports_logits = False
    supports_prompt_logprobs = True

    def __init__(self, *, latency_s: float = 0.0, max_value: int = 10) -> None:
        self.latency_s = latency_s
        self.max_value = max_value
        self.requests = 0

    def _value(self, token: str, words: set[str]) -> int:
        return self.max_value if token.strip().lower() in words else 0

    def _number(self, value: int, top: int) -> TokenLogprob:
        other = 0 if value else self.max_value
        alts = ((str(value), math.log(0.9)), (str(other), math.log(0.1)))[: max(1, top)]
        return TokenLogprob(token=str(value), logprob=math.log(0.9), top_logprobs=alts)

    async def prompt_logprobs(self, text: str, *, top_logprobs: int = 5) -> list[PromptToken]:
        """The prompt cut into pieces (the header's runs of text, tabs and newlines; a window line's token, tab,
        ``unknown``, newline); at each ``unknown`` of the last ``<start>`` block the alternatives
        put 0.9 on the value of the token on its line (which only that token decides)."""
        self.requests += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        found = re.findall(r"does is find(.*)", text)
        words = set(re.findall(r"[a-z]+", found[-1].lower())) if found else set()
        start = text.rfind("<start>\n")
        head_end = start + len("<start>\n") if start >= 0 else len(text)
        pieces: list[tuple[str, tuple[tuple[str, float], ...]]] = [
            (p, ((p, -0.01),)) for p in re.findall(r"[^\t\n]+|[\t\n]", text[:head_end])]
        for line in text[head_end:].splitlines(keepends=True):
            tok, tab, rest = line.partition("\t")
            if not tab or not rest.startswith("unknown"):
                pieces.append((line, ((line, -0.01),)))
                continue
            number = self._number(self._value(tok, words), top_logprobs)
            pieces += [(tok, ((tok, -0.01),)), ("\t", (("\t", -0.01),)), ("unknown", number.top_logprobs),
                       (rest[len("unknown"):], ((rest[len("unknown"):], -0.01),))]
        out, at = [], 0
        for k, (piece, alts) in enumerate(p for p in pieces if p[0]):
            lp = dict(alts).get(piece, -5.0)
            out.append(PromptToken(token=piece, offset=at, logprob=None if k == 0 else lp,
                                   top_logprobs=() if k == 0 else alts[: max(0, top_logprobs)]))
            at += len(piece)
        return out

    async def chat(self, messages, *, n: int = 1, temperature: float = 0.0, max_tokens: int = 256,
                   logprobs: bool = False, top_logprobs: int = 0) -> list[ChatChoice]:
        self.requests += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        user = messages[-1]["content"]
        head = re.search(r"explanation(?: of the neuron)?: (.*)", user, flags=re.IGNORECASE)
        words = set(re.findall(r"[a-z]+", head.group(1).lower())) if head else set()
        block = re.search(r"<start>\n(.*?)\n?<end>", user, flags=re.DOTALL)
        if block is not None:
            toks = block.group(1).split("\n")
            pieces: list[TokenLogprob] = []
            for i, t in enumerate(toks):
                pieces.append(TokenLogprob(token=t, logprob=-0.01))
                pieces.append(TokenLogprob(token="\t", logprob=-0.01))
                pieces.append(self._number(self._value(t, words), top_logprobs))
                if i < len(toks) - 1:
                    pieces.append(TokenLogprob(token="\n", logprob=-0.01))
            text = "".join(p.token for p in pieces)
            return [ChatChoice(text=text, tokens=tuple(pieces) if logprobs else ())] * n
        if "JSON list" in user:
            toks = [line.split("\t", 1)[1] for line in user.split("\n")
                    if "\t" in line and line.split("\t")[0].isdigit()]
            return [ChatChoice(text=json.dumps([self._value(t, words) for t in toks]))] * n
        return [ChatChoice(text="A neuron that finds " + (" ".join(sorted(words)) or "words") + ".")] * n


@contextlib.contextmanager
def serve_backend(
    backend: ChatBackend, *, model_name: str = "smollm2-135m", api_key: str | None = None, chat_only: bool = False
) -> Iterator[TestServer]:
    """Serve ``backend`` over HTTP on 127.0.0.1 (free port) for the duration of the block
    (``chat_only``: no prompt scoring, ``/v1/completions`` answers 404)."""
    import uvicorn

    faults = Faults()
    app = build_app(backend, model_name=model_name, faults=faults, api_key=api_key, chat_only=chat_only)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="neurolabel-test-llm-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test LLM server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield TestServer(base_url=f"http://127.0.0.1:{port}/v1", faults=faults, model_name=model_name)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def serve_local_backend(backend: ChatBackend | None = None, **kwargs: Any) -> Iterator[str]:
    """Serve ``backend`` (default: the shared local SmolLM2 backend); yields the base URL."""
    if backend is None:
        from neurolabel.lm.factory import local_backend

        backend = local_backend()
    with serve_backend(backend, **kwargs) as server:
        yield server.base_url
