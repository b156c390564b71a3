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


def test_auto_processes_forks_only_for_symbolic_work_on_several_cores():
    from neurolabel.pipeline.run import AUTO_PROCESSES_CAP, auto_processes

    symbolic = RunSpec.parse({"layers": [10], "explainers": ["concept_induction", "pmi"]})
    assert auto_processes(symbolic, neurons=None, n_cores=2) == (2, "symbolic explainers on 2 cores")
    assert auto_processes(symbolic, neurons=1536, n_cores=64)[0] == AUTO_PROCESSES_CAP
    assert auto_processes(symbolic, neurons=12, n_cores=4)[0] == 3  # 4 neurons per process at least
    assert auto_processes(symbolic, neurons=7, n_cores=2) == (1, "7 neuron(s): too few to fork for")
    assert auto_processes(symbolic, neurons=None, n_cores=1) == (1, "one core")
    narrow = RunSpec.parse({"layers": [10], "explainers": ["pmi"], "concurrency": 3})
    assert auto_processes(narrow, neurons=None, n_cores=16)[0] == 3  # never more than in flight
    with_llm = RunSpec.parse({"layers": [10], "explainers": ["concept_induction", "llm_summary"]})
    assert auto_processes(with_llm, neurons=None, n_cores=8) == (1, "explainer(s) llm_summary not GIL-bound Python")
    by_embedding = RunSpec.parse({"layers": [10], "explainers": ["pmi"], "simulators": "embedding"})
    assert auto_processes(by_embedding, neurons=None, n_cores=8)[0] == 1
    on_ray = RunSpec.parse({"layers": [10], "explainers": ["pmi"], "ray_address": "auto"})
    assert auto_processes(on_ray, neurons=None, n_cores=8) == (1, "a Ray run")


def test_cli_label_resolves_processes_auto(monkeypatch):
    import neurolabel.pipeline.run as run_mod
    from neurolabel.service.cli_label import build_spec

    monkeypatch.setattr(run_mod, "cores", lambda: 2)
    common = dict(model="default", layers=[10], simulators=None, corpus="default", options={})
    assert build_spec(units=None, explainers=["concept_induction", "pmi"], processes="auto", **common).processes == 2
    assert build_spec(units=[0, 1], explainers=["concept_induction", "pmi"], processes="auto", **common).processes == 1
    assert build_spec(units=None, explainers=["tokens", "llm_summary"], processes="auto", **common).processes == 1
    assert build_spec(units=[0], explainers=["pmi"], processes="3", **common).processes == 3
    assert build_spec(units=None, explainers=["pmi"], **common).processes == 1  # jobs, demo: threads unless asked
    for bad in ("x", "0", "65"):
        with pytest.raises(ConfigError, match="--processes"):
            build_spec(units=None, explainers=["pmi"], processes=bad, **common)


def test_cli_label_fast_sets_concept_induction_searches():
    """``neurolabel label --fast``: concept induction's FAST parameters, a ``--set`` of the same
    parameter wins, and without concept induction among the explainers the flag is refused."""
    from neurolabel.explainers.concept_induction import FAST
    from neurolabel.service.cli_label import build_spec

    common = dict(model="default", layers=[10], units=[0], simulators=None, corpus="default", options={})
    spec = build_spec(explainers=["concept_induction", "pmi"], fast=True, **common)
    by_kind = {c.kind: c.params for c in spec.explainers}
    assert by_kind == {"concept_induction": FAST, "pmi": {}}
    assert FAST == {"alternatives": [], "class_search": False}
    spec = build_spec(explainers=["concept_induction"], fast=True, params=["concept_induction.class_search=true"],
                      **common)
    assert spec.explainers[0].params == {"alternatives": [], "class_search": True}
    assert build_spec(explainers=["concept_induction"], **common).explainers[0].params == {}
    with pytest.raises(ConfigError, match="--fast.*concept_induction"):
        build_spec(explainers=["pmi"], fast=True, **common)


def test_cores_follow_a_cgroup_cpu_quota(tmp_path):
    import os

    from neurolabel.pipeline.run import cores

    affinity = len(os.sched_getaffinity(0))
    assert cores(tmp_path) == affinity  # no quota files: the affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cores(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core: one
    assert cores(tmp_path) == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cores(tmp_path) == affinity
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert cores(tmp_path) == 1
