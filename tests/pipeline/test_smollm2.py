"""The bundled example sets end to end on the real SmolLM2-135M (a few examples per side)."""

from __future__ import annotations

from itertools import islice

import pytest

from neurolabel.activations.corpus import load_corpus
from neurolabel.pipeline.contrast import ContrastSpec
from neurolabel.service.cli_contrast import EXAMPLES, example_paths

pytestmark = pytest.mark.slow

N = 20
"""Examples per side (every sixth of the bundled ones): with BH over 3 x 1536 neurons, 12 per side could not
reach q <= 0.05 even for a perfect separator."""


def _sets(name: str) -> tuple[list[str], list[str]]:
    a, b = example_paths(name)
    return list(islice(load_corpus(a), 0, None, 6))[:N], list(islice(load_corpus(b), 0, None, 6))[:N]


def test_bundled_sets_are_well_formed():
    for name in EXAMPLES:
        a, b = (list(load_corpus(p)) for p in example_paths(name))
        assert 100 <= len(a) <= 200 and 100 <= len(b) <= 200, name
        assert len(set(a)) == len(a) and len(set(b)) == len(b) and not set(a) & set(b), name


@pytest.fixture(scope="module")
def smollm2_lm():
    from neurolabel.pipeline.intervene import load_lm

    return load_lm("default")


def test_bundled_use_cases_end_to_end(smollm2_lm, tmp_path):
    from neurolabel.pipeline.contrast import contrast
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.studies import get_study, save_study

    url = f"sqlite:///{tmp_path}/real.db"
    spec = ContrastSpec(layers=(4, 16, 28), keep=50)
    from neurolabel.storage.db import upgrade

    upgrade(url)
    studies = {}
    for name in EXAMPLES:
        a, b = _sets(name)
        study = contrast(smollm2_lm.target, a, b, spec=spec, names=(f"{name}/a", f"{name}/b"))
        assert study.n_tested == 3 * 1536 and study.set_a.n_examples == N
        assert study.neurons, f"{name}: no neuron separates {N} examples per side"
        top = study.neurons[0]
        assert abs(top.auroc - 0.5) >= 0.3 and top.q_value <= 0.05
        with session_scope(url) as s:
            studies[name] = save_study(session=s, study=study)
    # English vs French separate perfectly somewhere in these layers
    with session_scope(url) as s:
        lang = get_study(session=s, study_id=studies["languages"], limit=1)
    assert abs(lang["neurons"][0]["auroc"] - 0.5) == 0.5
    # the whole run on the clinical sets: contrast, store, label the top neuron, score its label causally
    from dataclasses import replace

    from neurolabel.pipeline.studies import run_contrast_study

    a, b = _sets("clinical")
    run = run_contrast_study(replace(spec, name="clinical", label=1), a, b, database_url=url, causal=True)
    assert len(run.labelled) == 1 and run.causal_scores >= 1
    with session_scope(url) as s:
        ranked = get_study(session=s, study_id=run.study_id, order="causal", limit=1)["neurons"][0]
    assert ranked["label"] is not None and ranked["causal_score"] is not None
