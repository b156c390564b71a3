"""Contract test: every registered explainer runs on the same recorded SmolLM2 neuron and
returns well-formed explanations built only from explain-split windows.

The neuron (layer 5, one unit) was recorded with ``activations.record.record_neurons`` on the
default corpus and saved with ``activations.openai_format.write_records``
(see ``data/README.md``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from neurolabel.core.registry import EXPLAINERS
from neurolabel.core.types import Explanation, NeuronRecord

pytestmark = pytest.mark.slow

DATA = Path(__file__).with_name("data") / "recorded_neuron.json"


@pytest.fixture(scope="module")
def record() -> NeuronRecord:
    from neurolabel.activations.openai_format import read_records

    [rec] = read_records(DATA)
    assert rec.windows("top", "explain") and rec.windows("top", "score")
    return rec


_explainers: dict[str, object] = {}


def _explainer(tag: str):
    if tag not in _explainers:
        factory = EXPLAINERS[tag]
        make = getattr(factory, "from_defaults", None)
        _explainers[tag] = make() if make is not None else factory()
    return _explainers[tag]


@pytest.mark.parametrize("tag", EXPLAINERS.tags())
def test_explainer_contract(tag: str, record: NeuronRecord):
    explainer = _explainer(tag)
    assert explainer.kind == tag
    assert isinstance(explainer.version, str) and explainer.version
    got = explainer.explain(record)
    assert isinstance(got, list) and got, f"{tag} returned no explanation"
    assert [e.rank for e in got] == list(range(len(got)))
    for e in got:
        assert isinstance(e, Explanation)
        assert e.model == record.model and e.neuron == record.neuron
        assert e.explainer == tag and e.explainer_version == explainer.version
        assert isinstance(e.text, str) and e.text.strip() == e.text and e.text
        assert e.score is None
        json.dumps(dict(e.structured))
        json.dumps(dict(e.params))
    # score-split windows never influence the explanation
    explain_only = replace(
        record,
        top=record.windows("top", "explain"),
        random=record.windows("random", "explain"),
        quantile=record.windows("quantile", "explain"),
    )
    assert [e.text for e in explainer.explain(explain_only)] == [e.text for e in got]
