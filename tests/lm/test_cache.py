"""The response cache: keyed on the full request, survives a new process (a new cache object)."""

from __future__ import annotations

import asyncio

import pytest

from neurolabel.lm.base import ChatChoice, TokenLogprob
from neurolabel.lm.cache import CachedBackend, ResponseCache, request_key


class CountingBackend:
    """A deterministic backend that counts calls (a real, if trivial, backend)."""

    name = "counting"
    supports_logits = False
    supports_prompt_logprobs = False

    def __init__(self) -> None:
        self.calls = 0

    async def chat(self, messages, *, n=1, temperature=0.0, max_tokens=256, logprobs=False, top_logprobs=0):
        self.calls += 1
        tok = (TokenLogprob("x", -0.5, (("x", -0.5), ("y", -1.0))),) if logprobs else ()
        return [ChatChoice(text=f"{messages[-1]['content']}#{i}", tokens=tok) for i in range(n)]


def test_request_key_covers_every_field():
    base = {"messages": [{"role": "user", "content": "a"}], "n": 1, "temperature": 0.0}
    k = request_key("b", base)
    assert k == request_key("b", dict(reversed(list(base.items()))))
    assert k != request_key("other", base)
    assert k != request_key("b", {**base, "n": 2})
    assert k != request_key("b", {**base, "messages": [{"role": "user", "content": "b"}]})


def test_cached_backend_hits_on_rerun(tmp_path):
    inner = CountingBackend()
    cached = CachedBackend(inner, ResponseCache(tmp_path / "c.sqlite"))
    msgs = [{"role": "user", "content": "hello"}]
    first = asyncio.run(cached.chat(msgs, n=2, logprobs=True, top_logprobs=2))
    # a fresh cache object on the same file, as in a re-run
    again = CachedBackend(inner, ResponseCache(tmp_path / "c.sqlite"))
    second = asyncio.run(again.chat(msgs, n=2, logprobs=True, top_logprobs=2))
    assert first == second and inner.calls == 1
    assert again.cache.hits == 1 and cached.cache.misses == 1
    asyncio.run(again.chat(msgs, n=3))
    assert inner.calls == 2
    assert len(again.cache) == 2
    again.cache.clear()
    assert len(again.cache) == 0


def test_unwritable_cache_is_an_lm_error(tmp_path):
    from neurolabel.core.errors import LMError

    (tmp_path / "f").write_text("not a dir")
    with pytest.raises(LMError, match="cache"):
        ResponseCache(tmp_path / "f" / "c.sqlite").get("k")


def test_sampling_seed_is_part_of_the_key(tmp_path):
    """A seeded backend sampling with temperature > 0 gives other answers for another seed, so
    the seed keys the cache; greedy requests (temperature 0) share one entry whatever the seed."""
    inner = CountingBackend()
    cached = CachedBackend(inner, ResponseCache(tmp_path / "c.sqlite"))
    msgs = [{"role": "user", "content": "hello"}]
    inner.seed = 0
    asyncio.run(cached.chat(msgs, n=2, temperature=1.0))
    asyncio.run(cached.chat(msgs, n=2, temperature=1.0))
    assert inner.calls == 1
    inner.seed = 1
    asyncio.run(cached.chat(msgs, n=2, temperature=1.0))
    assert inner.calls == 2
    asyncio.run(cached.chat(msgs, temperature=0.0))
    inner.seed = 0
    asyncio.run(cached.chat(msgs, temperature=0.0))
    assert inner.calls == 3
