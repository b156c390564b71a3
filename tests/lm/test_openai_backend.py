"""The OpenAI-compatible backend: the real ``openai`` client over a socket to a real HTTP
server (lm.testserver, answering from the local SmolLM2 backend)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from neurolabel.core.errors import LMError
from neurolabel.lm.base import run_sync
from neurolabel.lm.cache import CachedBackend, ResponseCache
from neurolabel.lm.openai_backend import OpenAIBackend
from neurolabel.lm.testserver import serve_backend, serve_local_backend

pytestmark = pytest.mark.slow

KEY = "sk-test-key"
Q = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def local():
    from neurolabel.lm.factory import local_backend

    return local_backend()


@pytest.fixture(scope="module")
def server(local):
    with serve_backend(local, api_key=KEY) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset_faults(server):
    server.faults.fail_next(0)
    yield
    server.faults.fail_next(0)


def _client(server, **kw) -> OpenAIBackend:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 600)  # a loaded CI machine can take long per answer
    return OpenAIBackend(base_url=server.base_url, model=server.model_name, api_key=KEY, **kw)


def test_chat_with_logprobs_matches_local(server, local):
    b = _client(server)
    [remote] = run_sync(b.chat(Q, max_tokens=10, logprobs=True, top_logprobs=2))
    [direct] = run_sync(local.chat(Q, max_tokens=10, logprobs=True, top_logprobs=2))
    assert "Paris" in remote.text and remote.text == direct.text
    assert [t.token for t in remote.tokens] == [t.token for t in direct.tokens]
    assert remote.tokens[0].logprob == pytest.approx(direct.tokens[0].logprob, abs=1e-5)
    assert len(remote.tokens[0].top_logprobs) == 2


def test_n_choices_and_list_models(server):
    b = _client(server)
    assert run_sync(b.list_models()) == [server.model_name]
    choices = run_sync(b.chat([{"role": "user", "content": "Name an animal."}], n=3, temperature=1.0, max_tokens=6))
    assert len(choices) == 3 and all(c.text for c in choices)


def test_retries_500_then_succeeds(server):
    b = _client(server, max_retries=3)
    server.faults.fail_next(2, status=500)
    before = server.faults.chat_requests
    [c] = run_sync(b.chat(Q, max_tokens=4))
    assert c.text
    assert server.faults.chat_requests - before == 3
    assert b.requests_sent == 3


def test_429_retried_then_gives_up_with_url(server):
    b = _client(server, max_retries=2)
    server.faults.fail_next(10, status=429)
    with pytest.raises(LMError, match=f"{server.base_url}.*429.*3 attempts"):
        run_sync(b.chat(Q, max_tokens=4))
    assert b.requests_sent == 3


def test_wrong_key_and_wrong_model_fail_at_once(server):
    bad_key = OpenAIBackend(base_url=server.base_url, model=server.model_name, api_key="nope", backoff_s=0.01)
    with pytest.raises(LMError, match="401"):
        run_sync(bad_key.chat(Q, max_tokens=4))
    assert bad_key.requests_sent == 1
    bad_model = _client(server)
    bad_model.model = "gpt-nonexistent"
    with pytest.raises(LMError, match=r"404.*gpt-nonexistent"):
        run_sync(bad_model.chat(Q, max_tokens=4))


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


def test_dead_endpoint_raises_once_naming_the_url():
    url = _dead_url()
    b = OpenAIBackend(base_url=url, model="m", max_retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(LMError, match=f"{url}.*unreachable") as first:
        run_sync(b.chat(Q))
    assert b.requests_sent == 3
    # later calls fail fast with the same error, without new attempts
    t = time.perf_counter()

    async def many():
        return await asyncio.gather(*(b.chat(Q) for _ in range(5)), return_exceptions=True)

    errs = run_sync(many())
    assert all(e is first.value for e in errs)
    assert b.requests_sent == 3 and time.perf_counter() - t < 1


def test_cache_hit_on_rerun_sends_no_request(server, tmp_path):
    cache_file = tmp_path / "responses.sqlite"
    b1 = CachedBackend(_client(server), ResponseCache(cache_file))
    first = run_sync(b1.chat(Q, max_tokens=6, logprobs=True, top_logprobs=1))
    before = server.faults.chat_requests
    b2 = CachedBackend(_client(server), ResponseCache(cache_file))
    second = run_sync(b2.chat(Q, max_tokens=6, logprobs=True, top_logprobs=1))
    assert second == first
    assert server.faults.chat_requests == before
    assert b2.cache.hits == 1


def test_concurrency_limit_holds(server):
    b = _client(server, concurrency=2)
    in_flight, peak = 0, 0

    orig = b._call

    async def spy(what, fn):
        async def wrapped(client):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await fn(client)
            finally:
                in_flight -= 1

        return await orig(what, wrapped)

    b._call = spy

    async def many():
        return await asyncio.gather(*(b.chat([{"role": "user", "content": f"Count to {i}."}], max_tokens=3) for i in range(5)))

    assert len(run_sync(many())) == 5
    assert peak == 2


def test_serve_local_backend_yields_url(local):
    with serve_local_backend(local) as url:
        b = OpenAIBackend(base_url=url, model="smollm2-135m")
        assert run_sync(b.list_models()) == ["smollm2-135m"]


def test_backend_from_settings_picks_openai(server, tmp_path, monkeypatch):
    from neurolabel.core.settings import Settings
    from neurolabel.lm.factory import backend_from_settings

    monkeypatch.setenv("NEUROLABEL_CACHE_DIR", str(tmp_path))
    from neurolabel.core.settings import get_settings

    get_settings.cache_clear()
    try:
        s = Settings(
            openai_base_url=server.base_url, openai_api_key=KEY, openai_model=server.model_name, llm_timeout_s=600
        )
        b = backend_from_settings(s)
        assert isinstance(b, CachedBackend) and isinstance(b.backend, OpenAIBackend)
        assert b.cache.path.parent == tmp_path
        assert "Paris" in run_sync(b.chat(Q, max_tokens=10))[0].text
    finally:
        get_settings.cache_clear()


# ---- prompt logprobs (legacy Completions with echo + logprobs) ----------------------------------
TEXT = "The capital of France is Paris.\tunknown\n"


def test_prompt_logprobs_over_http_match_local(server, local):
    b = _client(server)
    before = server.faults.completion_requests
    remote = run_sync(b.prompt_logprobs(TEXT, top_logprobs=5))
    direct = local.score_text(TEXT, top_logprobs=5)
    assert server.faults.completion_requests - before == 1
    assert [(t.token, t.offset) for t in remote] == [(t.token, t.offset) for t in direct]
    assert "".join(t.token for t in remote) == TEXT and remote[0].logprob is None and not remote[0].top_logprobs
    for r, d in zip(remote[1:], direct[1:]):
        assert r.logprob == pytest.approx(d.logprob, abs=1e-5)
        assert [a for a, _ in r.top_logprobs] == [a for a, _ in d.top_logprobs] and len(r.top_logprobs) == 5
    # the offsets locate a piece of text: the token after the tab starts where "unknown" does
    [slot] = [t for t in remote if t.offset == TEXT.index("unknown")]
    assert slot.token.startswith("unknown")


def test_prompt_logprobs_tokens_are_causal(local):
    # the log-probabilities at a token do not depend on the text after it
    a = local.score_text("A dog chased the cat.", top_logprobs=3)
    b = local.score_text("A dog chased the ball and", top_logprobs=3)
    n = 4  # "A", " dog", " chased", " the"
    assert [t.token for t in a[:n]] == [t.token for t in b[:n]] == ["A", " dog", " chased", " the"]
    for x, y in zip(a[1:n], b[1:n]):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-4)


def test_chat_only_endpoint_is_a_capability_error_asked_once(local):
    from neurolabel.core.errors import LMCapabilityError

    with serve_backend(local, chat_only=True) as srv:
        b = OpenAIBackend(base_url=srv.base_url, model=srv.model_name, backoff_s=0.01)
        with pytest.raises(LMCapabilityError, match="not served.*404"):
            run_sync(b.prompt_logprobs(TEXT))
        with pytest.raises(LMCapabilityError):
            run_sync(b.prompt_logprobs(TEXT))  # known now: no second request
        assert srv.faults.completion_requests == 1 and b.requests_sent == 1
        assert run_sync(b.chat(Q, max_tokens=4))[0].text  # chat is still served


def test_prompt_logprobs_retry_on_500_and_cache(server, tmp_path):
    b = _client(server, max_retries=2)
    server.faults.fail_next(1, status=500)
    before = server.faults.completion_requests
    cached = CachedBackend(b, ResponseCache(tmp_path / "c.sqlite"))
    first = run_sync(cached.prompt_logprobs(TEXT, top_logprobs=2))
    again = run_sync(cached.prompt_logprobs(TEXT, top_logprobs=2))
    assert server.faults.completion_requests - before == 2  # one failed attempt, one answer, then the cache
    assert again == first and cached.supports_prompt_logprobs and not cached.supports_logits
