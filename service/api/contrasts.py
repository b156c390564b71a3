"""``/v1/contrasts``: queue a contrast study of two sets of texts (a job; API key needed) and
read stored studies with their ranked neurons."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, field_validator

from neurolabel.core.errors import ConfigError
from neurolabel.service import jobs as queue
from neurolabel.service.deps import CallerDep, LimitsDep, SessionDep
from neurolabel.service.errors import responses
from neurolabel.service.schemas import JobOut

router = APIRouter(tags=["contrasts"])

MAX_EXAMPLES = 2000
"""Most texts per side in one request."""
MAX_EXAMPLE_CHARS = 2000
"""Longest text accepted."""

StudyId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]

Text = Annotated[str, Field(min_length=1, max_length=MAX_EXAMPLE_CHARS, pattern=r"^[^\x00]*$")]
NoNul = r"^[^\x00]*$"


class ContrastRequest(BaseModel):
    """A contrast study to run: the two sets and the settings of :class:`pipeline.contrast.ContrastSpec`."""

    name: str = Field("contrast", min_length=1, max_length=200, pattern=NoNul, description="Name of the stored study.")
    model: str = Field("default", min_length=1, max_length=1000, pattern=NoNul,
                       description="'default', a registered model name, or a model folder under the "
                                   "server's data directories (NEUROLABEL_DATA_DIRS).")
    a: list[Text] = Field(..., min_length=2, max_length=MAX_EXAMPLES, description="Set A, one example per text.")
    b: list[Text] = Field(..., min_length=2, max_length=MAX_EXAMPLES, description="Set B.")
    layers: list[Annotated[int, Field(ge=0, le=10_000)]] | None = Field(None, max_length=10_000,
                                                                        description="Layers tested (all when absent).")
    score: Literal["max", "mean"] = "max"
    test: Literal["mannwhitney", "permutation"] = "mannwhitney"
    alpha: float = Field(0.05, gt=0.0, le=1.0)
    min_effect: float = Field(0.1, ge=0.0, lt=0.5)
    keep: int = Field(500, ge=1, le=5000)
    reservoir: int = Field(256, ge=2, le=4096)
    max_example_tokens: int = Field(64, ge=1, le=512)
    label: int = Field(0, ge=0, le=50, description="Label this many top neurons right away.")
    explainers: list[Annotated[str, Field(min_length=1, max_length=100, pattern=NoNul)]] = Field(["pmi"], min_length=1, max_length=10)
    causal: bool = Field(False, description="Score the new labels by intervention (needs label > 0).")

    @field_validator("a", "b")
    @classmethod
    def _not_blank(cls, texts: list[str]) -> list[str]:
        for i, t in enumerate(texts):
            if not t.strip():
                raise ValueError(f"text {i} is blank")
        return texts


class ContrastJobOut(BaseModel):
    """The queued job of a contrast study (its result names the study once done)."""

    job_id: int
    job: JobOut


class SetOut(BaseModel):
    name: str
    sha256: str
    n_examples: int
    n_tokens: int


class LabelOut(BaseModel):
    id: int
    text: str
    explainer: str
    score: float | None
    accepted: bool


class StudyNeuronOut(BaseModel):
    layer: int
    index: int
    rank: int
    auroc: float
    p_value: float
    q_value: float
    smd: float | None
    smd_other: float | None
    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    causal_score: float | None
    label: LabelOut | None
    sample_a: list[float] | None = None
    sample_b: list[float] | None = None


class StudyOut(BaseModel):
    """A stored contrast study and (a page of) its neurons."""

    id: int
    kind: str
    name: str
    model: str
    score: str
    test: str
    layers: list[int]
    n_tested: int
    n_kept: int
    params: dict[str, Any]
    set_a: SetOut | None
    set_b: SetOut | None
    neurons: list[StudyNeuronOut] = []


def _check_model(session, limits, model: str) -> None:
    """The model must be one the server allows (built-in, registered, or under its data
    directories), as for label jobs; 422 naming what is allowed otherwise."""
    from neurolabel.service.sources import resolve_source

    try:
        resolve_source(session=session, kind="model", name=model, data_dirs=limits.roots())
    except ConfigError as exc:
        raise HTTPException(422, detail=str(exc)) from None


@router.post("/contrasts", status_code=202, response_model=ContrastJobOut, summary="Queue a contrast study",
             responses=responses(401, 403, 413, 422, 429, 503))
def create_contrast(body: ContrastRequest, session: SessionDep, caller: CallerDep,
                    limits: LimitsDep) -> dict[str, Any]:
    """Queue a study of which neurons separate set ``a`` from set ``b``; a ``neurolabel worker``
    runs it and its job's result names the stored study; the job belongs to the caller's key.
    Needs an API key."""
    from neurolabel.pipeline.studies import spec_from_dict
    from neurolabel.pipeline.simulators import resolve_simulators

    if body.causal and not body.label:
        raise HTTPException(422, detail="causal scores need labels: set label > 0")
    _check_model(session, limits, body.model)
    resolve_simulators(body.explainers)  # ConfigError (422) names the known explainers
    spec = {"kind": "contrast", **body.model_dump()}
    spec_from_dict(spec)  # ConfigError (422) for settings the pipeline refuses
    job_id = queue.enqueue(session=session, spec=spec, owner_key_id=caller.key_id)
    session.commit()
    return {"job_id": job_id,
            "job": queue.public_view(queue.get_job(session=session, job_id=job_id), key_id=caller.key_id)}


@router.get("/contrasts", response_model=list[StudyOut], summary="List contrast studies",
            responses=responses(422, 503))
def list_contrasts(session: SessionDep, model: Annotated[str | None, Query(max_length=200, pattern=NoNul)] = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 50,
                   offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> list[dict[str, Any]]:
    """Studies, newest first (without neurons)."""
    from neurolabel.storage.studies import list_studies

    return list_studies(session=session, model=model, limit=limit, offset=offset)


@router.get("/contrasts/{study_id}", response_model=StudyOut, summary="A contrast study's ranked neurons",
            responses=responses(404, 422, 503))
def get_contrast(
    study_id: StudyId,
    session: SessionDep,
    order: Literal["rank", "auroc", "smd", "q", "causal"] = "rank",
    layer: Annotated[int | None, Query(ge=0, le=10_000)] = None,
    direction: Literal["a", "b"] | None = None,
    min_effect: Annotated[float, Query(ge=0.0, le=0.5)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    samples: bool = False,
) -> dict[str, Any]:
    """The study's neurons, filtered (``layer``, ``direction`` a/b, ``min_effect`` on
    ``|AUROC - 0.5|``) and ordered (its ranking, AUROC, ``|d|``, q-value, or causal score);
    ``samples`` adds the per-example scores of both sides."""
    from neurolabel.storage.studies import get_study

    out = get_study(session=session, study_id=study_id, order=order, layer=layer, direction=direction,
                    min_auroc_effect=min_effect, limit=limit, offset=offset, samples=samples)
    if out is None:
        raise HTTPException(404, detail=f"contrast study {study_id} not found")
    return out
