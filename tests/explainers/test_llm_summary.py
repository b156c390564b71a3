"""The LLM summariser: prompt format and parsing by hand, end to end on the local SmolLM2,
and over real HTTP through the OpenAI-compatible backend."""

from __future__ import annotations

import pytest

from neurolabel.core.errors import ExplanationError
from neurolabel.core.types import ActivationRecord, NeuronId, NeuronRecord
from neurolabel.explainers.llm_summary import (
    LLMSummaryExplainer,
    build_messages,
    crop,
    normalised_activations,
    parse_answer,
)
from neurolabel.lm.base import ChatChoice


def _rec() -> NeuronRecord:
    w = [
        [(" The", 0.0), (" cat", 2.0), (" and", -0.5), (" the", 0.0), (" dog", 1.9), (" ran", 0.1)],
        [(" A", 0.0), (" horse", 1.5), (" ate", 0.0), (" hay", 0.0)],
        [(" bird", 5.0), (" songs", 1.0)],
    ]
    splits = ["explain", "explain", "score"]
    top = tuple(
        ActivationRecord(tokens=tuple(t for t, _ in x), activations=tuple(a for _, a in x), window_id=i, split=s)
        for i, (x, s) in enumerate(zip(w, splits))
    )
    return NeuronRecord(model="toy", neuron=NeuronId(3, 7), top=top)


def test_normalisation_uses_max_over_explain_windows():
    rec = _rec()
    ints = normalised_activations(rec.windows("top", "explain"))
    assert ints == [[0, 10, 0, 0, 9, 0], [0, 7, 0, 0]]
    with pytest.raises(ExplanationError):
        normalised_activations([ActivationRecord(tokens=("a",), activations=(0.0,))])


def test_prompt_format():
    msgs = build_messages(_rec().windows("top", "explain"))
    assert msgs[0]["role"] == "system" and "token<tab>activation" in msgs[0]["content"]
    user = msgs[-1]["content"]
    assert " cat\t10\n" in user and " dog\t9\n" in user and " and\t0\n" in user
    assert " bird" not in user  # score split never shown
    nonzero = user.split("filtered out:")[1]
    assert " cat\t10" in nonzero and " ran" not in nonzero
    assert user.endswith("the main thing this neuron does is find")
    few = build_messages(_rec().windows("top", "explain"), few_shot=True)
    assert len(few) == 6 and few[2]["role"] == "assistant"


def test_prompt_carries_the_token_statistics_of_the_explain_split():
    from dataclasses import replace

    from neurolabel.core.types import TokenStat, TokenStats
    from neurolabel.explainers.llm_summary import format_token_table

    rec = replace(_rec(), token_stats=TokenStats(count=900, mean=0.05, tokens=(
        TokenStat(" cat", 40, 1.0), TokenStat(" puppy", 7, 1.6), TokenStat(" the", 300, -0.1))))
    explainer = LLMSummaryExplainer(backend=None, window_tokens=None)  # type: ignore[arg-type]
    user = explainer.messages(rec)[-1]["content"]
    table = user.split("averaged over all of its text")[1]
    # means on the windows' 0-10 scale (max 2.0): puppy 8, cat 5; " the" (below 0) is not listed
    assert " puppy\t8\n cat\t5\n" in table and " the\t" not in table
    assert user.endswith("the main thing this neuron does is find")
    # without token statistics the table comes from the explain windows (score windows never)
    plain = format_token_table(_rec(), _rec().windows("top", "explain"))
    assert " cat\t10" in plain and " bird" not in plain


def test_crop_keeps_peak():
    w = ActivationRecord(tokens=tuple(str(i) for i in range(40)), activations=tuple(float(i == 30) for i in range(40)))
    c = crop(w, 10)
    assert len(c.tokens) == 10 and "30" in c.tokens and c.max_activation == 1.0
    assert crop(w, None) is w


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("animals and pets.", "animals and pets"),
        ("The main thing this neuron does is find words for animals.", "words for animals"),
        ('"days of the week"\nMore text', "days of the week"),
        ("Explanation of neuron 1 behavior: the main thing this neuron does is find colours", "colours"),
        ("The behavior of neuron 1 in this network is to find the thing it's looking for", "the thing it's looking for"),
    ],
)
def test_parse_answer(answer, expected):
    assert parse_answer(answer) == expected


@pytest.mark.parametrize("answer", ["", "   \n ", "...", "<start>\ncat\t10", "10"])
def test_unparseable_answers_raise(answer):
    with pytest.raises(ExplanationError):
        parse_answer(answer)


class FixedBackend:
    """A backend that answers fixed texts (to test ranking and the all-bad case)."""

    name = "fixed"
    supports_logits = False
    supports_prompt_logprobs = False

    def __init__(self, answers):
        self.answers = answers

    async def chat(self, messages, *, n=1, temperature=0.0, max_tokens=256, logprobs=False, top_logprobs=0):
        from neurolabel.lm.base import TokenLogprob

        return [ChatChoice(text=t, tokens=(TokenLogprob("x", lp),)) for t, lp in self.answers[:n]]


def test_candidates_ranked_and_bad_ones_dropped():
    e = LLMSummaryExplainer(FixedBackend([("cats", -2.0), ("", -0.1), ("animals", -0.5), ("Animals.", -0.4)]), n=4)
    got = e.explain(_rec())
    assert [x.text for x in got] == ["animals", "cats"]
    assert [x.rank for x in got] == [0, 1]
    assert got[0].structured["rejected"] == 1 and got[0].params["backend"] == "fixed"


def test_all_answers_unparseable_is_an_error():
    e = LLMSummaryExplainer(FixedBackend([("", -1.0), ("   ", -1.0)]), n=2)
    with pytest.raises(ExplanationError, match="3:7 of toy.*no usable answer"):
        e.explain(_rec())


@pytest.fixture(scope="module")
def local():
    from neurolabel.lm.factory import local_backend

    return local_backend()


@pytest.mark.slow
def test_end_to_end_local(local):
    e = LLMSummaryExplainer(local, n=2, max_tokens=16, max_windows=2)
    got = e.explain(_rec())
    assert 1 <= len(got) <= 2
    for x in got:
        assert x.text and x.explainer == "llm_summary" and x.params["backend"] == "local:smollm2-135m"
        assert x.structured["mean_logprob"] < 0


@pytest.mark.slow
def test_end_to_end_over_http(local, tmp_path):
    from neurolabel.lm.cache import CachedBackend, ResponseCache
    from neurolabel.lm.openai_backend import OpenAIBackend
    from neurolabel.lm.testserver import serve_backend

    with serve_backend(local) as server:
        remote = CachedBackend(
            OpenAIBackend(base_url=server.base_url, model=server.model_name, timeout_s=600),
            ResponseCache(tmp_path / "c.sqlite"),
        )
        e = LLMSummaryExplainer(remote, n=2, max_tokens=16, max_windows=2)
        first = e.explain(_rec())
        sent = server.faults.chat_requests
        again = e.explain(_rec())
        assert server.faults.chat_requests == sent == 1  # one request for both candidates; the rerun is cached
    assert [x.text for x in first] == [x.text for x in again]
    assert first[0].params["backend"].startswith("openai:http://127.0.0.1")
    # same prompt, same seed: the answers match the local backend's
    direct = LLMSummaryExplainer(local, n=2, max_tokens=16, max_windows=2).explain(_rec())
    assert sorted(x.text for x in direct) == sorted(x.text for x in first)
