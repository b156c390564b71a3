"""Nightly config parsing: unit ranges, validation errors naming the field, the run lock."""

from __future__ import annotations

import fcntl

import pytest

from neurolabel.core.errors import ConfigError
from neurolabel.service.nightly import load_config, parse_units, run_nightly


def test_parse_units():
    assert parse_units(None, where="x") is None
    assert parse_units("0-3,7", where="x") == [0, 1, 2, 3, 7]
    assert parse_units([5, 6], where="x") == [5, 6]
    with pytest.raises(ConfigError, match="units"):
        parse_units(3.5, where="x")


def test_load_config(tmp_path):
    cfg = tmp_path / "nightly.toml"
    cfg.write_text(
        'database_url = "sqlite:///x.db"\noutput_dir = "out"\n'
        '[[models]]\nmodel = "default"\nlayers = [0, 10]\nunits = "0-2"\nexplainers = ["pmi"]\n'
        'simulators = { pmi = "embedding" }\nmax_tokens = 5000\n'
    )
    c = load_config(cfg)
    assert c.output_dir == tmp_path / "out" and c.database_url == "sqlite:///x.db"
    (spec,) = c.models
    assert spec["units"] == [0, 1, 2] and spec["layers"] == [0, 10] and spec["max_tokens"] == 5000
    assert spec["simulators"] == {"pmi": "embedding"} and spec["corpus"] == "default"


@pytest.mark.parametrize(
    "text, field",
    [
        ('[[models]]\nlayers = []\nexplainers = ["pmi"]\n', "layers"),
        ('[[models]]\nlayers = [0]\nexplainers = ["pmi"]\ncolour = 1\n', "colour"),
        ('[[models]]\nlayers = [0]\n', "explainers"),
        ('unknown = 1\n[[models]]\nlayers = [0]\nexplainers = ["pmi"]\n', "unknown"),
        ('output_dir = "x"\n', "models"),
        ('[[models]\n', "cannot read"),
    ],
)
def test_bad_config_names_the_field(tmp_path, text, field):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=field) as exc:
        load_config(cfg)
    assert str(cfg) in str(exc.value)


def test_second_concurrent_run_is_refused(tmp_path):
    cfg = tmp_path / "n.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path}/l.db"\n[[models]]\nlayers = [0]\nexplainers = ["pmi"]\n')
    c = load_config(cfg)
    c.output_dir.mkdir(parents=True)
    with open(c.output_dir / "nightly.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another nightly run"):
            run_nightly(c)


def test_tagged_explainers_and_ontology_reach_the_run_spec(tmp_path):
    """The nightly config's job spec converts into the run spec once (service.worker.job_run_spec);
    an ontology the server does not allow is refused before anything runs."""
    from neurolabel.service.nightly import check_sources
    from neurolabel.service.worker import job_run_spec
    from neurolabel.storage.db import upgrade

    cfg = tmp_path / "nightly.toml"
    cfg.write_text(
        '[[models]]\nlayers = [1]\nunits = "0-1"\nexplainers = ["tokens", { kind = "pmi", lam = 0.5 }]\n'
        'simulators = { pmi = { kind = "lexical", max_words = 2 } }\nontology = "clinical"\nconcurrency = 3\n'
    )
    (job,) = load_config(cfg).models
    spec = job_run_spec(job, model="default", corpus="default", ontology="/data/clinical.ttl")
    assert [c.as_json() for c in spec.explainers] == [{"kind": "tokens"}, {"kind": "pmi", "lam": 0.5}]
    assert spec.simulators["pmi"].as_json() == {"kind": "lexical", "max_words": 2}
    assert (spec.ontology, spec.concurrency, spec.units) == ("/data/clinical.ttl", 3, (0, 1))
    url = f"sqlite:///{tmp_path}/n.db"
    upgrade(url)
    with pytest.raises(ConfigError, match="models\\[0\\]: ontology 'clinical' is not allowed: name one of default"):
        check_sources(load_config(cfg), database_url=url, data_dirs=())
