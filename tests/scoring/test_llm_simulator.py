"""LLM simulator: all-at-once expected values equal a one-token-at-a-time loop of the same
model; digit scale; the endpoint paths over real HTTP to the project's test server (causal
prompt logprobs: one request per window, causal, equal to the local ``logits`` method; the chat
listing when the server serves chat only; JSON when it gives no logprobs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurolabel.core.errors import ConfigError, ScoringError
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
        sim = LLMSimulator(OpenAIBackend(base_url=url, model="smollm2-135m"), endpoint_method="logprobs")
        out = sim.simulate(_expl(), (" dog", " ate"))
    assert out.method == "logprobs" and sim.max_value == 10 and sim.forward_passes == 1  # one request a window
    assert len(out.expected_activations) == 2 and all(0 <= v <= 10 for v in out.expected_activations)
    # SmolLM2 answers digits here, so the expectation has mass
    assert any(sum(p) > 0.99 for p in out.distribution_probabilities)


class KeywordJSONBackend:
    """A real, rule-based chat backend without logprobs: answers a JSON list marking tokens
    that appear in the explanation (served over HTTP by lm.testserver)."""

    name = "rule:keyword-json"
    supports_logits = False
    supports_prompt_logprobs = False

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
    # prompt scoring refused once (404), the first window's listing request found no logprobs,
    # then one JSON request per window
    assert server.faults.completion_requests == 1 and server.faults.chat_requests == 3


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


def _keyword_record():
    return NeuronRecord(model="m", neuron=NeuronId(0, 0), top=(
        _window(("a", " dog", " ran", "\n"), (0, 3, 0, 0), 1), _window((" cats", " and", " dog"), (0, 0, 2), 3)),
        random=(_window(("the", "\t", " car"), (0, 0, 0.1), 2, "random"),))


# at each slot the alternatives put 0.9 on the keyword's value (10 or 0) and 0.1 on the other
KEYWORD_PRED = [1, 9, 1, 1, 1, 1, 9, 1, 1, 1]
KEYWORD_TRUE = [0, 3, 0, 0, 0, 0, 2, 0, 0, 0.1]


def test_endpoint_one_completion_request_per_window():
    """Against the project's test server: one prompt-scoring request per scored window, the
    expected value read at each ``unknown`` slot of the all-at-once prompt, found by its offset."""
    from neurolabel.lm.openai_backend import OpenAIBackend
    from neurolabel.lm.testserver import KeywordBackend, serve_backend

    with serve_backend(KeywordBackend()) as server:
        sim = LLMSimulator(OpenAIBackend(base_url=server.base_url, model="smollm2-135m"))
        out = simulate_and_score(_expl("dog"), _keyword_record(), simulator=sim)
    assert server.faults.completion_requests == 3 == sim.forward_passes  # three scored windows, three requests
    assert server.faults.chat_requests == 0
    assert out.score.method == "prompt-logprobs"
    assert out.score.score == pytest.approx(np.corrcoef(KEYWORD_PRED, KEYWORD_TRUE)[0, 1])


def test_chat_only_endpoint_falls_back_to_the_chat_listing(caplog):
    """A server without prompt scoring (404 on /v1/completions) is asked once; every window then
    goes to the chat listing, one chat request each, and the fallback is logged."""
    from neurolabel.lm.openai_backend import OpenAIBackend
    from neurolabel.lm.testserver import KeywordBackend, serve_backend

    with serve_backend(KeywordBackend(), chat_only=True) as server:
        sim = LLMSimulator(OpenAIBackend(base_url=server.base_url, model="smollm2-135m"))
        out = simulate_and_score(_expl("dog"), _keyword_record(), simulator=sim)
    assert server.faults.completion_requests == 1 and server.faults.chat_requests == 3
    assert out.score.method == "logprobs"
    assert out.score.score == pytest.approx(np.corrcoef(KEYWORD_PRED, KEYWORD_TRUE)[0, 1])
    assert "not causal" in caplog.text


def test_endpoint_method_prompt_logprobs_alone_does_not_fall_back():
    from neurolabel.lm.openai_backend import OpenAIBackend
    from neurolabel.lm.testserver import KeywordBackend, serve_backend

    with serve_backend(KeywordBackend(), chat_only=True) as server:
        sim = LLMSimulator(OpenAIBackend(base_url=server.base_url, model="smollm2-135m"),
                           endpoint_method="prompt-logprobs")
        with pytest.raises(ScoringError, match="prompt-logprobs.*404"):
            sim.simulate(_expl("dog"), ("a", " dog"))
    assert server.faults.chat_requests == 0
    with pytest.raises(ConfigError, match="endpoint_method must be one of"):
        LLMSimulator(object(), endpoint_method="causal")


class _MergingKeywordBackend:
    """The keyword backend scored through a tokenizer that merges text around a slot: ``merge``
    ``"tab"`` makes ``"\tunknown"`` one token (alternatives ``"\t<digit>"``), ``"token"`` makes
    the window token, tab and slot one token (no token starts at the slot or its tab)."""

    name = "rule:keyword-merging"
    supports_logits = False
    supports_prompt_logprobs = True

    def __init__(self, merge):
        from neurolabel.lm.testserver import KeywordBackend

        self.inner, self.merge = KeywordBackend(), merge

    async def chat(self, messages, **kw):
        return await self.inner.chat(messages, **kw)

    async def prompt_logprobs(self, text, *, top_logprobs=5):
        from neurolabel.lm.base import PromptToken

        toks = await self.inner.prompt_logprobs(text, top_logprobs=top_logprobs)
        out, k = [], 0
        while k < len(toks):
            t = toks[k]
            if k + 2 < len(toks) and toks[k + 2].token == "unknown" and toks[k + 1].token == "\t":
                tab, slot = toks[k + 1], toks[k + 2]
                if self.merge == "tab":
                    out += [t, PromptToken(token="\tunknown", offset=tab.offset, logprob=-0.1,
                                           top_logprobs=tuple(("\t" + a, b) for a, b in slot.top_logprobs))]
                else:
                    out.append(PromptToken(token=t.token + "\tunknown", offset=t.offset, logprob=-0.1,
                                           top_logprobs=t.top_logprobs))
                k += 3
                continue
            out.append(t)
            k += 1
        return out


def test_slot_merged_with_its_tab_is_read_at_the_tab():
    from neurolabel.lm.openai_backend import OpenAIBackend
    from neurolabel.lm.testserver import serve_backend

    with serve_backend(_MergingKeywordBackend("tab")) as server:
        sim = LLMSimulator(OpenAIBackend(base_url=server.base_url, model="smollm2-135m"))
        out = simulate_and_score(_expl("dog"), _keyword_record(), simulator=sim)
    assert out.score.method == "prompt-logprobs" and server.faults.completion_requests == 3
    assert out.score.score == pytest.approx(np.corrcoef(KEYWORD_PRED, KEYWORD_TRUE)[0, 1])


def test_unreadable_slots_send_that_window_to_the_chat_listing(caplog):
    from neurolabel.lm.openai_backend import OpenAIBackend
    from neurolabel.lm.testserver import serve_backend

    with serve_backend(_MergingKeywordBackend("token")) as server:
        sim = LLMSimulator(OpenAIBackend(base_url=server.base_url, model="smollm2-135m"))
        out = simulate_and_score(_expl("dog"), _keyword_record(), simulator=sim)
    # each window: a prompt-scoring request whose slots cannot be found, then a chat listing
    assert server.faults.completion_requests == 3 and server.faults.chat_requests == 3
    assert out.score.method == "logprobs"
    assert out.score.score == pytest.approx(np.corrcoef(KEYWORD_PRED, KEYWORD_TRUE)[0, 1])
    assert "no prompt token starts at the slot" in caplog.text
    with serve_backend(_MergingKeywordBackend("token")) as server:
        alone = LLMSimulator(OpenAIBackend(base_url=server.base_url, model="smollm2-135m"),
                             endpoint_method="prompt-logprobs")
        with pytest.raises(ScoringError, match="no prompt token starts at the slot of window token 0"):
            alone.simulate(_expl("dog"), ("a", " dog"))


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


# ---- causal prompt logprobs on the real model, over HTTP ----------------------------------------
@pytest.fixture(scope="module")
def smollm2_server():
    from neurolabel.lm.factory import local_backend
    from neurolabel.lm.testserver import serve_backend

    local = local_backend()
    with serve_backend(local) as server:
        yield local, server


def _endpoint_sim(server, **kw):
    from neurolabel.lm.openai_backend import OpenAIBackend

    kw.setdefault("max_value", 9)  # SmolLM2 splits "10", as the local method knows from its tokenizer
    return LLMSimulator(OpenAIBackend(base_url=server.base_url, model=server.model_name, timeout_s=600), **kw)


@pytest.mark.slow
def test_prompt_logprobs_is_causal_smollm2(smollm2_server):
    """The proof: the value at slot i is unchanged when the tokens after i change, and changes
    when a token before it does — over HTTP, one completion request per window."""
    _, server = smollm2_server
    base = ("The", " big", " dog", " ate", " the", " apples")
    after = ("The", " big", " dog", " chased", " a", " cat")  # same first three tokens
    before = ("A", " small", " dog", " ate", " the", " apples")  # same last four, different first two
    sim = _endpoint_sim(server)
    start = server.faults.completion_requests
    a, b, c = sim.simulate_many(_expl(), [base, after, before])
    assert server.faults.completion_requests - start == 3 and {a.method, b.method, c.method} == {"prompt-logprobs"}
    np.testing.assert_allclose(a.expected_activations[:3], b.expected_activations[:3], atol=1e-4)
    np.testing.assert_allclose(a.distribution_probabilities[:3], b.distribution_probabilities[:3], atol=1e-5)
    assert not np.allclose(a.expected_activations[3:], b.expected_activations[3:], atol=1e-3)
    # a change before a slot reaches it: " dog" (slot 2) and the identical tail differ
    assert np.abs(np.subtract(a.expected_activations[2:], c.expected_activations[2:])).max() > 1e-3


@pytest.mark.slow
def test_prompt_logprobs_agree_with_local_logits_smollm2(smollm2_server):
    """Same model, same prompt text: the endpoint's numbers are the local ``logits`` method's,
    within float tolerance, where the endpoint's tokenization of the whole text equals the piece
    by piece one and every digit is among the top alternatives returned. Digits outside the top
    ``top_logprobs`` count as 0 at the endpoint (the local method sees all): after the ``\\n``
    token of the first window, SmolLM2 ranks digits 6–9 at 106–441, so the test asks for the top
    500 (with the top 100 that slot read 1.45 instead of 1.66; the other slots agreed)."""
    local, server = smollm2_server
    windows = [WINDOWS[0], WINDOWS[1], (" cat", " and", " dog")]
    sim = _endpoint_sim(server, top_logprobs=500)
    remote = sim.simulate_many(_expl(), windows)
    here = LLMSimulator(local).simulate_many(_expl(), windows)
    for w, r, h in zip(windows, remote, here):
        ids, _ = LLMSimulator(local).build_prompt(_expl(), w)
        text, _ = sim.prompt_text(_expl(), w)
        assert local.tokenizer.encode(text, add_special_tokens=False) == ids  # same tokens, so same numbers
        assert r.method == "prompt-logprobs" and h.method == "logits"
        np.testing.assert_allclose(r.expected_activations, h.expected_activations, atol=2e-3)
        np.testing.assert_allclose(r.distribution_probabilities, h.distribution_probabilities, atol=1e-3)
