"""What the sync and async clients share: how each call is asked and how its answer is read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypedDict

from neurolabel.service.schemas import ExplanationsOut, JobOut, JobSpec

FINAL = ("done", "failed", "cancelled")
"""Job states that do not change any more."""


class LabelRow(TypedDict):
    """One row of ``GET /v1/models/{m}/labels`` (:data:`storage.labels.LABEL_FIELDS`)."""

    model: str
    layer: int
    index: int
    explainer: str
    explainer_version: str
    text: str
    score: float | None
    scorer: str | None
    simulator: str | None
    n_tokens: int | None
    updated_at: str
    """When the label was written (RFC 3339, UTC)."""
    cursor: str
    """Pass as ``cursor=`` to resume after this row."""


@dataclass(frozen=True)
class Call:
    """One HTTP request: method, path, query parameters and JSON body."""

    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    json: Any = None


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in params.items() if v is not None}


def _records(records: Sequence[Any]) -> list[dict[str, Any]]:
    """Records as OpenAI ``NeuronRecord`` JSON (core :class:`NeuronRecord` objects are converted)."""
    from neurolabel.activations.openai_format import to_openai_json
    from neurolabel.core.types import NeuronRecord

    return [to_openai_json(r) if isinstance(r, NeuronRecord) else dict(r) for r in records]


def explain(records: Sequence[Any], explainers: Sequence[str], *, model: str | None, simulators: Mapping[str, str] | None,
            store: bool) -> Call:
    return Call("POST", "/v1/explain", json={"records": _records(records), "explainers": list(explainers),
                                             "model": model, "simulators": simulators, "store": store})


def score(records: Sequence[Any], text: str, *, simulator: str, model: str | None, explainer: str,
          structured: Mapping[str, Any] | None) -> Call:
    return Call("POST", "/v1/score", json={
        "records": _records(records), "model": model, "simulator": simulator,
        "explanation": {"text": text, "explainer": explainer, "structured": dict(structured or {})}})


def submit(spec: JobSpec | Mapping[str, Any]) -> Call:
    body = spec.model_dump(exclude_none=True) if isinstance(spec, JobSpec) else JobSpec(**spec).model_dump(exclude_none=True)
    return Call("POST", "/v1/jobs", json=body)


def labels_params(*, format: str, layer: int | None, explainer: str | None, min_score: float | None,
                  updated_since: Any, cursor: str | None, limit: int | None) -> dict[str, Any]:
    return _clean({"format": format, "layer": layer, "explainer": explainer, "min_score": min_score,
                   "updated_since": updated_since, "cursor": cursor, "limit": limit})


def search_params(q: str, *, mode: str, model: str | None, min_score: float | None, limit: int,
                  offset: int) -> dict[str, Any]:
    return _clean({"q": q, "mode": mode, "model": model, "min_score": min_score, "limit": limit, "offset": offset})


def explanations(body: Any) -> ExplanationsOut:
    return ExplanationsOut.model_validate(body)


def job(body: Any) -> JobOut:
    return JobOut.model_validate(body)


def label_line(line: str) -> LabelRow | None:
    return json.loads(line) if line.strip() else None


class Progress:
    """Reports a job's progress while waiting: to ``on_progress(job)`` and/or a tqdm bar."""

    def __init__(self, job_id: int, show: bool | Callable[[JobOut], None]) -> None:
        self.callback = show if callable(show) else None
        self.bar = None
        if show is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=100, unit="%", desc=f"job {job_id}")

    def update(self, j: JobOut) -> None:
        if self.callback is not None:
            self.callback(j)
        if self.bar is not None:
            self.bar.n = round(100 * j.progress, 1)
            self.bar.set_postfix_str(j.status, refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
