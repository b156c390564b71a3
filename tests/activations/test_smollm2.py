"""Recording on the real default model (SmolLM2-135M-Instruct) on a few hundred WordNet tokens,
checked against an independent plain forward pass (see tests/activations/reference.py)."""

from __future__ import annotations

import pytest

from neurolabel.activations.corpus import load_corpus
from neurolabel.activations.models import load_target
from neurolabel.core.assets import smollm2_dir
from tests.activations.test_record import check_against_reference

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return load_target("default", device="cpu")


@pytest.fixture(scope="module")
def wordnet_texts():
    texts = []
    for t in load_corpus("wordnet"):
        texts.append(t)
        if len(texts) >= 25:
            break
    return texts


def test_smollm2_matches_reference(smollm2, wordnet_texts, monkeypatch):
    import tests.activations.test_record as tr

    monkeypatch.setattr(tr, "T", 64)
    recs = check_against_reference(smollm2, smollm2_dir(), wordnet_texts, [0, 14, 29], top_k=2, n_random=3,
                                   n_quantile_bins=2, per_bin=1, batch_size=3, atol=1e-4)
    assert len(recs) == 3 * 1536
    assert recs[0].model == "smollm2-135m"
    n_tokens = recs[0].stats.count
    assert 256 <= n_tokens <= 640, n_tokens  # a few hundred tokens
