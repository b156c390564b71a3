"""Plugins built from tagged configurations by the registry; unknown parameters are refused with
the plugin and its allowed parameters named; the CLI's --set reaches the plugin."""

import pytest

from neurolabel.core.errors import ConfigError
from neurolabel.pipeline.plugins import allowed_params, build, check
from neurolabel.pipeline.simulators import resolve


def test_parameters_reach_the_plugin():
    tokens = build("explainer", {"kind": "tokens", "max_tokens": 5, "min_count": 2})
    assert (tokens.max_tokens, tokens.min_count) == (5, 2)
    assert build("explainer", {"kind": "tokens", "max_tokens": 5, "min_count": 2}) is tokens  # built once
    assert build("explainer", "tokens").max_tokens == 20  # other parameters: another instance
    plain = build("explainer", "tokens")  # a bare tag again (found without parsing): the same instance,
    assert plain is build("explainer", {"kind": "tokens"}) and plain is not tokens  # as its mapping's
    with pytest.raises(ConfigError):
        build("explainer", "no-such-explainer")  # an unknown tag is still refused
    assert build("simulator", {"kind": "lexical", "max_words": 1}).max_words == 1
    assert build("scorer", {"kind": "correlation", "active_fraction": 0.5}).active_fraction == 0.5


def test_unknown_parameter_names_plugin_and_allowed():
    with pytest.raises(ConfigError) as exc:
        check("explainer", {"kind": "pmi", "lamda": 0.8})
    msg = str(exc.value)
    assert "explainer 'pmi'" in msg and "lamda" in msg and "allowed: alpha, lam," in msg
    with pytest.raises(ConfigError, match="unknown explainer 'nope'; known: .*pmi"):
        check("explainer", "nope")
    with pytest.raises(ConfigError, match="simulator 'lexical': unknown parameter.*allowed: max_words"):
        resolve(["pmi"], {"pmi": {"kind": "lexical", "words": 2}})
    # resources are never configuration
    assert "annotator" not in allowed_params("explainer", "concept_induction")
    assert "backend" not in allowed_params("simulator", "llm")


def test_wrong_kind_of_value_is_a_config_error():
    with pytest.raises(ConfigError, match="explainer 'tokens': parameter max_tokens must be int, not 'many'"):
        build("explainer", {"kind": "tokens", "max_tokens": "many"})
    with pytest.raises(ConfigError, match="parameter words must be bool"):
        check("explainer", {"kind": "pmi", "words": 1})
    assert check("explainer", {"kind": "pmi", "lam": 1}).params == {"lam": 1}  # an int is a float
    assert check("explainer", {"kind": "llm_summary", "window_tokens": None}).params == {"window_tokens": None}


def test_default_and_chosen_simulators():
    got = resolve(["concept_induction", {"kind": "pmi", "lam": 0.5}], {"pmi": {"kind": "lexical", "max_words": 2}})
    assert got["concept_induction"].kind == "symbolic"
    assert got["pmi"].as_json() == {"kind": "lexical", "max_words": 2}


def test_cli_set_parses_plugin_parameters():
    from neurolabel.service.cli_label import build_spec

    spec = build_spec(model="default", layers=[1], units=[0], explainers=["pmi", "tokens"], simulators="lexical",
                      corpus="default", options={"max_tokens": 100},
                      params=["pmi.lam=0.5", "tokens.max_tokens=3", "lexical.max_words=1", "pmi.words=false"],
                      concurrency=2)
    assert [c.as_json() for c in spec.explainers] == [{"kind": "pmi", "lam": 0.5, "words": False},
                                                     {"kind": "tokens", "max_tokens": 3}]
    assert spec.simulators["*"].as_json() == {"kind": "lexical", "max_words": 1}
    assert spec.concurrency == 2 and spec.record.kwargs() == {"max_tokens": 100}
    with pytest.raises(ConfigError, match="PLUGIN.PARAMETER=VALUE"):
        build_spec(model="default", layers=[1], units=None, explainers=["pmi"], simulators=None, corpus="default",
                   options={}, params=["lam=0.5"])
    with pytest.raises(ConfigError, match="not one of the chosen plugins"):
        build_spec(model="default", layers=[1], units=None, explainers=["pmi"], simulators=None, corpus="default",
                   options={}, params=["tokens.max_tokens=3"])
