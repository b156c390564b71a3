"""``POST /v1/explain`` and ``POST /v1/score``: ad-hoc work on records recorded elsewhere."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from neurolabel.core.errors import ConfigError
from neurolabel.core.types import Explanation, NeuronId, NeuronRecord
from neurolabel.pipeline.spec import RunSpec
from neurolabel.service.deps import ApiKeyDep, LimitsDep, SessionDep
from neurolabel.service.errors import invalid, responses
from neurolabel.service.schemas import ExplainRequest, ExplanationOut, ExplanationsOut, ScoreRequest
from neurolabel.service.sources import is_plain_name

router = APIRouter(tags=["explain"])

_ACTIVATION_LISTS = ("most_positive_activation_records", "random_sample", "random_sample_by_quantile")


def _non_number(d: dict[str, Any]) -> str | None:
    """Where a record carries an activation that is not a JSON number (``true``, ``"1.5"``)."""
    for field in _ACTIVATION_LISTS:
        groups = d.get(field)
        if not isinstance(groups, list):
            continue
        flat = [(f"{field}[{i}]", w) for i, w in enumerate(groups)]
        if field == "random_sample_by_quantile":
            flat = [(f"{field}[{i}][{j}]", w) for i, q in enumerate(groups) if isinstance(q, list)
                    for j, w in enumerate(q)]
        for where, w in flat:
            acts = w.get("activations") if isinstance(w, dict) else None
            if isinstance(acts, list):
                for k, a in enumerate(acts):
                    if isinstance(a, bool) or not isinstance(a, (int, float)):
                        shown = str(a).lower() if isinstance(a, bool) else repr(a)[:40]
                        return f"{where}.activations[{k}] is {shown}: activations must be numbers"
    return None


def _check_model_name(name: str, loc: list[str | int]) -> None:
    if not is_plain_name(name):
        raise invalid(loc, f"model name {name[:80]!r} is not allowed: use letters, digits, '_', '.' and '-' "
                      "(up to 200, starting with a letter or digit); a model name is a label, never a path",
                      "not_allowed")


def parse_records(raw: list[dict[str, Any]], *, model: str | None) -> list[NeuronRecord]:
    """OpenAI ``NeuronRecord`` JSON -> core records; 422 naming the bad record.

    The model name is ``model``, else the record's ``neurolabel.model``, else ``external``; the
    neuron is the record's ``neuron_id``, else (layer 0, its position in the list)."""
    from neurolabel.activations.openai_format import from_openai_json

    out = []
    if model is not None:
        _check_model_name(model, ["body", "model"])
    for i, d in enumerate(raw):
        bad = _non_number(d)
        if bad is not None:
            raise invalid(["body", "records", i], f"not a NeuronRecord: {bad}")
        extra = d.get("neurolabel") if isinstance(d.get("neurolabel"), dict) else {}
        if model is None and extra.get("model") is not None:
            if not isinstance(extra["model"], str):
                raise invalid(["body", "records", i, "neurolabel", "model"], "must be a string")
            _check_model_name(extra["model"], ["body", "records", i, "neurolabel", "model"])
        try:
            name = model or extra.get("model") or "external"
            neuron = None if isinstance(d.get("neuron_id"), dict) else NeuronId(0, i)
            out.append(from_openai_json(d, model=name, neuron=neuron, where=f"records[{i}]"))
        except Exception as exc:  # noqa: BLE001 - any malformed record is the caller's error
            raise invalid(["body", "records", i], f"not a NeuronRecord: {exc}") from None
    return out


def explain_run_spec(body: ExplainRequest, *, session: Any, data_dirs: tuple[str, ...]) -> RunSpec:
    """The run spec of an explain request (the endpoint's one conversion into a run): its plugins
    and its ontology, which must be ``default``, registered or under the data roots (422 naming
    the field otherwise)."""
    from neurolabel.service.sources import resolve_source

    try:
        ontology = resolve_source(session=session, kind="ontology", name=body.ontology, data_dirs=data_dirs).spec
    except ConfigError as exc:
        raise invalid(["body", "ontology"], str(exc), "not_allowed") from None
    try:
        return RunSpec.parse({"model": body.model or "external", "explainers": body.explainers,
                              "simulators": body.simulators, "ontology": ontology}, where="explain request")
    except ConfigError as exc:
        raise invalid(["body", "explainers"], str(exc), "config_error") from None


@router.post("/explain", response_model=ExplanationsOut, summary="Explain and score given records",
             responses=responses(401, 403, 413, 422, 429, 502, 503))
def explain(body: ExplainRequest, session: SessionDep, _key: ApiKeyDep, limits: LimitsDep) -> dict[str, Any]:
    """Run the named explainers on each record, score every explanation on the record's
    score-split windows, and (``store: true``) store records and explanations. Needs an API key."""
    from neurolabel.pipeline.run import explain_and_score

    records = parse_records(body.records, model=body.model)
    explanations = explain_and_score(records, explain_run_spec(body, session=session, data_dirs=limits.roots()))
    stored: list[int] = []
    if body.store:
        from neurolabel.storage.queries import save_explanations, save_neuron_records

        save_neuron_records(session=session, records=records)
        stored = save_explanations(session=session, explanations=explanations)
        session.commit()
    return {"explanations": [ExplanationOut.of(e) for e in explanations], "stored_ids": stored}


@router.post("/score", response_model=ExplanationsOut, summary="Score an explanation",
             responses=responses(401, 403, 413, 422, 429, 502, 503))
def score(body: ScoreRequest, _key: ApiKeyDep) -> dict[str, Any]:
    """Simulate the given explanation on each record's score-split windows and correlate.
    Needs an API key."""
    from neurolabel.scoring.validate import simulate_and_score

    records = parse_records(body.records, model=body.model)
    from neurolabel.pipeline.plugins import build

    simulator = build("simulator", body.simulator)
    out = []
    for rec in records:
        e = Explanation(
            model=rec.model,
            neuron=rec.neuron,
            explainer=body.explanation.explainer,
            explainer_version=body.explanation.explainer_version,
            text=body.explanation.text,
            structured=body.explanation.structured,
        )
        out.append(simulate_and_score(e, rec, simulator=simulator))
    return {"explanations": [ExplanationOut.of(e) for e in out], "stored_ids": []}
