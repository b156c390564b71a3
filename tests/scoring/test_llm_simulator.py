"""LLM simulator: all-at-once expected values equal a one-token-at-a-time loop of the same
model; digit scale; the endpoint paths (logprobs over real HTTP, JSON fallback)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import ActivationRecord, Explanation, NeuronId, NeuronRecord
from neurolabel.lm.base import ChatChoice
from neurolabel.lm.local import LocalBackend
from neurolabel.scoring.llm_simulator import LLMSimulator, _expected
from neurolabel.scoring.validate import simulate_and_score

WINDOWS = [
    ("The", " big", " dog", " ate", "\n", " apples"),
    (" A", " red", "\t", " car"),
    (" cat",),
]


def _expl(text="animals such as dogs and cats"):
    return Explanation(model="m", neuron=NeuronId(0, 0), explainer="x", explainer_version="1", text=text)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from neurolabel.core.assets import smollm2_dir

    return AutoTokenizer.from_pretrained(smollm2_dir())


@pytest.fixture(scope="module")
def tiny_backend(tokenizer):
    """A tiny random Llama built from a config, with SmolLM2's real tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    return LocalBackend(LlamaForCausalLM(cfg).eval(), tokenizer, device="cpu", name="local:tiny")


def test_registered():
    assert SIMULATORS["llm"] is LLMSimulator


def test_expected_value_renormalises_over_digits():
    e, d = _expected([0, 1, 2], np.log([0.1, 0.1, 0.3]))
    assert d == pytest.approx((0.2, 0.2, 0.6)) and e == pytest.approx(0.2 + 1.2)
    assert _expected([0, 1], [-np.inf, -np.inf])[0] == 0.0


def test_smollm2_scale_is_0_to_9(tiny_backend, tokenizer):
    # "10" is two tokens ("1", "0") for SmolLM2, so the slot scale is 0..9
    assert len(tokenizer.encode("10", add_special_tokens=False)) == 2
    sim = LLMSimulator(tiny_backend)
    out = sim.simulate(_expl(), WINDOWS[0])
    assert sim.max_value == 9 and out.distribution_values == tuple(float(v) for v in range(10))
    assert all(0 <= v <= 9 for v in out.expected_activations) and out.method == "logits"
    for p, v in zip(out.distribution_probabilities, out.expected_activations):
        assert sum(p) == pytest.approx(1.0) and v == pytest.approx(sum(i * q for i, q in enumerate(p)))


def test_prompt_slots_are_tabs_before_unknown(tiny_backend, tokenizer):
    ids, slots = LLMSimulator(tiny_backend).build_prompt(_expl(), WINDOWS[1])
    assert len(slots) == 4
    tab = tokenizer.encode("\t", add_special_tokens=False)
    for s in slots:
        assert ids[s - len(tab) + 1: s + 1] == tab
        assert tokenizer.decode(ids[s + 1: s + 4]).startswith("unknown")
    text = tokenizer.decode(ids)
    assert " red\tunknown\n\\t\tunknown\n car\tunknown\n<end>" in text


def _all_at_once_equals_token_by_token(backend, windows=WINDOWS):
    sim = LLMSimulator(backend)
    many = sim.simulate_many(_expl(), windows)
    assert sim.forward_passes == len(windows) + 1  # one per window, plus the shared header once
    before = sim.forward_passes
    for w, m in zip(windows, many):
        ref = sim.simulate_token_by_token(_expl(), w)
        np.testing.assert_allclose(m.expected_activations, ref.expected_activations, atol=1e-4)
        np.testing.assert_allclose(m.distribution_probabilities, ref.distribution_probabilities, atol=1e-5)
    assert sim.forward_passes - before == sum(len(w) for w in windows)


def test_all_at_once_equals_one_token_at_a_time_tiny(tiny_backend):
    _all_at_once_equals_token_by_token(tiny_backend)


@pytest.mark.slow
def test_all_at_once_equals_one_token_at_a_time_smollm2():
    from neurolabel.lm.factory import local_backend

    _all_at_once_equals_token_by_token(local_backend(), WINDOWS[1:])  # 5 tokens: 5 full-prompt passes


@pytest.mark.slow
def test_endpoint_logprobs_over_http():
    from neurolabel.lm.factory import local_backend
    from neurolabel.lm.openai_backend import OpenAIBackend
    from neurolabel.lm.testserver import serve_local_backend

    with serve_local_backend(local_backend()) as url:
        sim = LLMSimulator(OpenAIBackend(base_url=url, model="smollm2-135m"))
        out = sim.simulate(_expl(), (" dog", " ate"))
    assert out.method == "logprobs" and sim.max_value == 10 and sim.forward_passes == 1  # one request a window
    assert len(out.expected_activations) == 2 and all(0 <= v <= 10 for v in out.expected_activations)
    # SmolLM2 answers digits here, so the expectation has mass
    assert any(sum(p) > 0.99 for p in out.distribution_probabilities)


class KeywordJSONBackend:
    """A real, rule-based chat backend without logprobs: answers a JSON list marking tokens
    that appear in the explanation (served over HTTP by lm.testserver)."""

    name = "rule:keyword-json"

    async def chat(self, messages, *, n=1, temperature=0.0, max_tokens=256, logprobs=False, top_logprobs=0):
        user = messages[-1]["content"]
        expl = user.split("\n", 1)[0].split(": ", 1)[1].lower()
        if "JSON list" not in user:
            return [ChatChoice(text="5")] * n
        toks = [line.split("\t", 1)[1] for line in user.split("\n") if "\t" in line and line.split("\t")[0].isdigit()]
        vals = [10 if t.strip().lower() in expl.split() else 0 for t in toks]
        return [ChatChoice(text=f"Sure: {json.dumps(vals)}")] * n


def test_endpoint_without_logprobs_falls_back_to_json():
    from neurolabel.lm.openai_backend import OpenAIBackend
    from neurolabel.lm.testserver import serve_backend

    rec = NeuronRecord(model="m", neuron=NeuronId(0, 0), top=(
        ActivationRecord(tokens=("a", " dog", " ran"), activations=(0, 3, 0), window_id=1, split="score"),),
        random=(ActivationRecord(tokens=("the", " cat"), activations=(0, 0.1), window_id=2, split="score",
                                 kind="random"),))
    with serve_backend(KeywordJSONBackend()) as server:
        sim = LLMSimulator(OpenAIBackend(base_url=server.base_url, model="smollm2-135m"))
        out = simulate_and_score(_expl("dog"), rec, simulator=sim)
    assert out.score.method == "json" and out.score.simulator == "llm"
    assert out.score.score == pytest.approx(np.corrcoef([0, 10, 0, 0, 0], [0, 3, 0, 0, 0.1])[0, 1])
    # the first window's listing request found no logprobs, then one JSON request per window
    assert server.faults.chat_requests == 3


def test_unparseable_json_is_a_scoring_error():
    from neurolabel.lm.openai_backend import OpenAIBackend
    from neurolabel.lm.testserver import serve_backend

    class Chatty(KeywordJSONBackend):
        async def chat(self, messages, **kw):
            return [ChatChoice(text="I think it is about dogs.")]

    with serve_backend(Chatty()) as server:
        sim = LLMSimulator(OpenAIBackend(base_url=server.base_url, model="smollm2-135m", max_retries=0))
        with pytest.raises(ScoringError, match="JSON list of 2 numbers"):
            sim.simulate(_expl("dog"), ("a", " dog"))


def _window(tokens, acts, wid, kind="top"):
    return ActivationRecord(tokens=tokens, activations=acts, window_id=wid, split="score", kind=kind)


def test_endpoint_one_request_per_window_with_logprobs():
    """Against the project's test server: one chat request per scored window, the expected value
    read from the logprobs of the numbers the answer writes, in the window's token order."""
    from neurolabel.lm.openai_backend import OpenAIBackend
    from neurolabel.lm.testserver import KeywordBackend, serve_backend

    rec = NeuronRecord(model="m", neuron=NeuronId(0, 0), top=(
        _window(("a", " dog", " ran", "\n"), (0, 3, 0, 0), 1), _window((" cats", " and", " dog"), (0, 0, 2), 3)),
        random=(_window(("the", "\t", " car"), (0, 0, 0.1), 2, "random"),))
    with serve_backend(KeywordBackend()) as server:
        sim = LLMSimulator(OpenAIBackend(base_url=server.base_url, model="smollm2-135m"))
        out = simulate_and_score(_expl("dog"), rec, simulator=sim)
    assert server.faults.chat_requests == 3 == sim.forward_passes  # three scored windows, three requests
    assert out.score.method == "logprobs"
    # at each number the alternatives put 0.9 on the keyword's value (10 or 0) and 0.1 on the other
    pred = [1, 9, 1, 1, 1, 1, 9, 1, 1, 1]
    true = [0, 3, 0, 0, 0, 0, 2, 0, 0, 0.1]
    assert out.score.score == pytest.approx(np.corrcoef(pred, true)[0, 1])


def test_listing_lines_are_read_by_position_and_short_answers_fall_back():
    from neurolabel.lm.base import TokenLogprob

    sim = LLMSimulator(backend=object(), max_value=10)

    def choice(text_pieces):
        return ChatChoice(text="".join(text_pieces), tokens=tuple(
            TokenLogprob(token=p, logprob=0.0, top_logprobs=((p.strip(), -0.1),) if p.strip().isdigit() else ())
            for p in text_pieces))

    got = sim._listing_rows(choice(["Here:\n", "cat", "\t", "7", "\n", "xx", "\t", " 2", "\n", "z", "\t", "5"]), 2)
    assert [int(np.argmax(r)) for r in got] == [7, 2]  # the third line is ignored
    assert sim._listing_rows(choice(["cat", "\t", "7"]), 2) is None
