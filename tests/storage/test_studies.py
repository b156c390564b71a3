"""Contrast studies and causal scores in the label database (SQLite and PostgreSQL)."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from neurolabel.core.errors import StorageError
from neurolabel.core.studies import ContrastStudy, NeuronContrast, SetFingerprint
from neurolabel.core.types import Explanation, NeuronId, ScoreResult
from neurolabel.storage.db import session_scope
from neurolabel.storage.models import Study, StudyNeuron
from neurolabel.storage.queries import get_neuron, save_explanations
from neurolabel.storage.studies import (
    get_study,
    list_studies,
    neuron_explanations,
    save_causal_scores,
    save_study,
    study_neurons,
)


def _nc(layer: int, index: int, rank: int, auroc: float, q: float, smd: float | None = 1.0) -> NeuronContrast:
    return NeuronContrast(neuron=NeuronId(layer, index), rank=rank, auroc=auroc, p_value=q / 2, q_value=q, smd=smd,
                          smd_other=0.5, mean_a=1.0, mean_b=0.2, std_a=0.3, std_b=0.1,
                          sample_a=(1.0, 1.2, 0.9), sample_b=(0.1, 0.2))


def _study(neurons, name="s") -> ContrastStudy:
    fp = SetFingerprint(name="a.txt", sha256="0" * 64, n_examples=3, n_tokens=30)
    return ContrastStudy(name=name, model="m", set_a=fp, set_b=SetFingerprint("b.txt", "1" * 64, 2, 20),
                         layers=(0, 1), n_tested=80, score="max", test="mannwhitney", neurons=tuple(neurons),
                         params={"alpha": 0.05, "min_effect": 0.1})


STUDY = [_nc(0, 7, 0, 1.0, 1e-9), _nc(1, 3, 1, 0.1, 1e-6, smd=-2.0), _nc(1, 12, 2, 0.8, 1e-3, smd=None)]


def test_save_and_read_a_study(migrated_url):
    with session_scope(migrated_url) as s:
        sid = save_study(session=s, study=_study(STUDY))
    with session_scope(migrated_url) as s:
        st = get_study(session=s, study_id=sid, samples=True)
        assert st["name"] == "s" and st["model"] == "m" and st["n_kept"] == 3 and st["n_tested"] == 80
        assert st["set_a"]["n_examples"] == 3 and st["set_b"]["sha256"] == "1" * 64
        assert [(n["layer"], n["index"]) for n in st["neurons"]] == [(0, 7), (1, 3), (1, 12)]
        assert st["neurons"][0]["sample_a"] == [1.0, 1.2, 0.9] and st["neurons"][2]["smd"] is None
        assert [n["index"] for n in get_study(session=s, study_id=sid, layer=1)["neurons"]] == [3, 12]
        assert [n["index"] for n in get_study(session=s, study_id=sid, direction="b")["neurons"]] == [3]
        assert [n["index"] for n in get_study(session=s, study_id=sid, order="smd")["neurons"]] == [3, 7, 12]
        assert [n["index"] for n in get_study(session=s, study_id=sid, min_auroc_effect=0.35)["neurons"]] == [7, 3]
        assert get_study(session=s, study_id=sid + 100) is None
        assert [x["id"] for x in list_studies(session=s, model="m")] == [sid]
        assert study_neurons(session=s, study_id=sid, limit=2) == [NeuronId(0, 7), NeuronId(1, 3)]


def test_bad_values_are_refused_and_nothing_is_stored(migrated_url):
    with session_scope(migrated_url) as s:
        save_study(session=s, study=_study(STUDY, name="kept"))
    bad = [_nc(0, 1, 0, 0.9, 1e-3), _nc(0, 2, 1, math.nan, 1e-3)]
    with pytest.raises(StorageError, match=r"neuron 0:2: auroc: value nan is not finite"):
        with session_scope(migrated_url) as s:
            save_study(session=s, study=_study(bad, name="bad"))
    with pytest.raises(StorageError, match="lists a neuron twice"):
        with session_scope(migrated_url) as s:
            save_study(session=s, study=_study([_nc(0, 1, 0, 0.9, 1e-3), _nc(0, 1, 1, 0.8, 1e-3)], name="dup"))
    with session_scope(migrated_url) as s:
        assert [x["name"] for x in list_studies(session=s)] == ["kept"]
        assert s.scalar(select(func.count()).select_from(StudyNeuron)) == 3
        assert s.scalar(select(func.count()).select_from(Study)) == 1


def test_causal_scores_sit_beside_the_correlation_score_and_rank_the_study(migrated_url):
    corr = ScoreResult(score=0.4, scorer="correlation", simulator="lexical", parts={"top_only": 0.5}, n_tokens=10)
    expl = [Explanation(model="m", neuron=NeuronId(1, 12), explainer="pmi", explainer_version="1", text="zebra",
                        score=corr),
            Explanation(model="m", neuron=NeuronId(0, 7), explainer="pmi", explainer_version="1", text="horse",
                        score=corr)]
    with session_scope(migrated_url) as s:
        sid = save_study(session=s, study=_study(STUDY))
        save_explanations(session=s, explanations=expl, threshold=0.3)
    with session_scope(migrated_url) as s:
        ids = {e["text"]: e["id"] for n in (NeuronId(1, 12), NeuronId(0, 7))
               for e in neuron_explanations(session=s, model="m", neuron=n)}
        causal = ScoreResult(score=2.5, scorer="intervention", simulator="clamp", parts={"z": 4.0, "value": 8.0},
                             n_tokens=40, method="clamp 1:12 to 8")
        assert save_causal_scores(session=s, scores=[(ids["zebra"], causal),
                                                     (ids["horse"], ScoreResult(**{**causal.__dict__, "score": 0.1}))]) == 2
        # idempotent: the same scores again update, never duplicate
        save_causal_scores(session=s, scores=[(ids["zebra"], causal)])
    with session_scope(migrated_url) as s:
        info = get_neuron(session=s, model="m", layer=1, index=12)
        (e,) = info["explanations"]
        assert e["score"] == 0.4  # the correlation score stays the main score
        assert sorted((x["scorer"], x["score"]) for x in e["scores"]) == [("correlation", 0.4), ("intervention", 2.5)]
        ranked = get_study(session=s, study_id=sid, order="causal")["neurons"]
        assert [(n["index"], n["causal_score"]) for n in ranked] == [(12, 2.5), (7, 0.1), (3, None)]
        assert ranked[0]["label"]["text"] == "zebra"
    with pytest.raises(StorageError, match="explanation 999999 does not exist"):
        with session_scope(migrated_url) as s:
            save_causal_scores(session=s, scores=[(ids["zebra"], causal), (999999, causal)])
    with pytest.raises(StorageError, match="is not 'intervention'"):
        with session_scope(migrated_url) as s:
            save_causal_scores(session=s, scores=[(ids["zebra"], corr)])
