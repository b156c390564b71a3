"""Fixtures shared by the service tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """(tiny random Llama model folder, small corpus file) for real pipeline runs."""
    from tests.service.live import small_corpus, tiny_model_dir

    d = tmp_path_factory.mktemp("tiny-assets")
    return tiny_model_dir(d / "tinyllama"), small_corpus(d / "corpus.txt")
