"""The local transformers backend on the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from neurolabel.core.errors import LMError
from neurolabel.lm.base import ChatBackend, run_sync

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend():
    from neurolabel.lm.factory import local_backend

    return local_backend()


def test_load_exposes_model_and_tokenizer(backend):
    assert isinstance(backend, ChatBackend) and backend.supports_logits and backend.supports_prompt_logprobs
    from neurolabel.lm.base import PromptLogprobsBackend

    assert isinstance(backend, PromptLogprobsBackend)
    assert backend.name == "local:smollm2-135m"
    assert backend.device in ("cpu", "cuda") or backend.device.startswith("cuda")
    assert backend.model.config.num_hidden_layers == 30
    assert backend.tokenizer("Paris")["input_ids"]


def test_greedy_answer_and_logprobs(backend):
    [choice] = run_sync(
        backend.chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=12, logprobs=True, top_logprobs=3)
    )
    assert "Paris" in choice.text
    assert choice.tokens and all(t.logprob <= 0 for t in choice.tokens)
    # greedy: each chosen token is the most likely one
    for t in choice.tokens:
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0][1] == pytest.approx(t.logprob, abs=1e-5)
    assert "".join(t.token for t in choice.tokens).strip() == choice.text


def test_batched_generation_matches_single(backend):
    a = [{"role": "user", "content": "Say the word blue."}]
    b = [{"role": "user", "content": "Write a very long and detailed story about a cat who travels to the moon."}]
    batch = backend.generate([a, b], max_tokens=8)
    single = backend.generate([a], max_tokens=8)
    assert batch[0][0].text == single[0][0].text  # left padding does not change the answer
    assert batch[1][0].finish_reason == "length"
    # n > 1 shares one prefill of the prompt: greedy copies equal the single answer
    shared = backend.generate([a, b], n=2, max_tokens=8, logprobs=True)
    assert [c.text for c in shared[0]] == [batch[0][0].text] * 2
    assert [c.text for c in shared[1]] == [batch[1][0].text] * 2


def test_n_samples_with_temperature(backend):
    choices = asyncio.run(
        backend.chat([{"role": "user", "content": "Name one animal."}], n=4, temperature=1.2, max_tokens=10)
    )
    assert len(choices) == 4
    assert len({c.text for c in choices}) > 1


def test_next_token_logprobs(backend):
    ids = backend.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    [full] = backend.next_token_logprobs([ids])
    assert full.shape == (len(ids), len(backend.tokenizer))
    assert np.allclose(np.exp(full).sum(-1), 1.0, atol=1e-3)
    cands = backend.tokenizer(["The", "Paris"], add_special_tokens=False)["input_ids"]
    cand_ids = [c[0] for c in cands]
    [last] = backend.next_token_logprobs([ids, ids[:4]], positions=[[len(ids) - 1], [3]], candidate_ids=cand_ids)[:1]
    assert last.shape == (1, 2)
    assert np.allclose(last[0], full[-1, cand_ids], atol=1e-4)
    # greedy generation's first token has the top next-token log-probability
    [choice] = backend.generate([[{"role": "user", "content": "What is the capital of France?"}]], max_tokens=1, logprobs=True)[0:1][0]
    assert math.isclose(choice.tokens[0].logprob, float(full[-1].max()), abs_tol=1e-3)


def test_bad_request_is_an_lm_error(backend):
    with pytest.raises(LMError, match="bad request"):
        backend.generate([[{"role": "user", "content": "x"}]], n=0)
