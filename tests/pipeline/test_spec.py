"""The run spec: tagged plugin configurations, validation naming the field, exact JSON round trip."""

import pytest

from neurolabel.core.errors import ConfigError
from neurolabel.pipeline.spec import PluginConfig, RunSpec, plugin_config


def test_plugin_config_from_tag_and_mapping():
    assert plugin_config("pmi") == PluginConfig(kind="pmi")
    c = plugin_config({"kind": "pmi", "lam": 0.8})
    assert c.kind == "pmi" and c.params == {"lam": 0.8}
    assert c.as_json() == {"kind": "pmi", "lam": 0.8}
    with pytest.raises(ConfigError, match="no 'kind'"):
        plugin_config({"lam": 0.8})


def test_spec_round_trips_through_json():
    spec = RunSpec.parse({"model": "default", "layers": [3, 4], "units": [0, 1],
                          "explainers": ["tokens", {"kind": "pmi", "lam": 0.8}],
                          "simulators": {"pmi": {"kind": "lexical", "max_words": 2}},
                          "scorer": "correlation", "ontology": "/data/clinical.ttl", "concurrency": 4,
                          "ray_address": "127.0.0.1:6379", "record": {"max_tokens": 500, "top_k": 3}})
    assert spec.explainer_tags == ["tokens", "pmi"]
    assert spec.explainers[1].params == {"lam": 0.8}
    assert spec.simulators["pmi"].params == {"max_words": 2}
    assert spec.record.kwargs() == {"max_tokens": 500, "top_k": 3}
    again = RunSpec.parse(spec.as_json())
    assert again == spec and again.as_json() == spec.as_json()
    with pytest.raises(ValueError, match="frozen"):
        spec.__setattr__("model", "other")


def test_one_simulator_for_all_explainers():
    assert RunSpec.parse({"layers": [0], "explainers": ["pmi"], "simulators": "embedding"}).simulators == {
        "*": PluginConfig(kind="embedding")}


@pytest.mark.parametrize("bad, field", [
    ({"layers": [0], "explainers": ["pmi", "pmi"]}, "explainers"),
    ({"layers": [0], "explainers": ["pmi"], "concurrency": 0}, "concurrency"),
    ({"layers": [0], "explainers": ["pmi"], "colour": "red"}, "colour"),
    ({"layers": "3", "explainers": ["pmi"]}, "layers"),
])
def test_bad_spec_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        RunSpec.parse(bad)
