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
