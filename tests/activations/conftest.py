"""Session-wide tiny models (built once from a config, saved to a temporary folder)."""

from __future__ import annotations

import pytest

from tests.activations.tiny import tiny_bert_dir, tiny_gpt2_dir, tiny_llama_dir


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return tiny_gpt2_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    return tiny_bert_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def gpt2_target(gpt2_dir):
    from neurolabel.activations.models import load_target

    return load_target(str(gpt2_dir))
