"""Fixtures of the pipeline tests: the planted tiny Llama and two sets of texts around its marker."""

from __future__ import annotations

import random

import pytest

from tests.pipeline.planted import MARKER


@pytest.fixture(scope="session")
def planted_dir(tmp_path_factory):
    from tests.pipeline.planted import planted_llama_dir

    return planted_llama_dir(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="session")
def planted(planted_dir):
    from neurolabel.activations.models import load_target

    return load_target(str(planted_dir))


@pytest.fixture(scope="session")
def planted_lm(planted_dir):
    from neurolabel.pipeline.intervene import load_lm

    return load_lm(str(planted_dir))


def make_sets(n: int = 30, seed: int = 0) -> tuple[list[str], list[str]]:
    """Set A: random word strings holding the marker; set B: the same without it."""
    from tests.activations.tiny import WORDS

    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    a = [f"{words(rng.randint(2, 9))}{MARKER} {words(rng.randint(1, 4))}" for _ in range(n)]
    b = [words(rng.randint(3, 12)) for _ in range(n)]
    return a, b


@pytest.fixture(scope="session")
def sets():
    return make_sets()
