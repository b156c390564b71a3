"""``POST /v1/explain`` and ``POST /v1/score``: ad-hoc work on records recorded elsewhere."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from neurolabel.core.errors import ConfigError
from neurolabel.core.types import Explanation, NeuronId, NeuronRecord
from neurolabel.pipeline.run import ItemFailure
from neurolabel.pipeline.spec import RunSpec
from neurolabel.service.deps import ApiKeyDep, LimitsDep, SessionDep
from neurolabel.service.errors import invalid, responses
from neurolabel.service.schemas import ExplainRequest, ExplanationOut, ExplanationsOut, ItemError, ScoreRequest
from neurolabel.service.sources import is_plain_name, redact_paths

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


def _parse_one(d: Any, i: int, model: str | None) -> NeuronRecord:
    """Record ``i`` of a request as a core record; ValueError saying what is wrong."""
    from neurolabel.activations.openai_format import UNNAMED_MODEL, from_openai_json

    if not isinstance(d, dict):
        raise ValueError(f"not a NeuronRecord: expected an object, got {type(d).__name__}")
    bad = _non_number(d)
    if bad is not None:
        raise ValueError(f"not a NeuronRecord: {bad}")
    extra = d.get("neurolabel") if isinstance(d.get("neurolabel"), dict) else {}
    if model is None and extra.get("model") is not None:
        if not isinstance(extra["model"], str):
            raise ValueError("neurolabel.model must be a string")
        if not is_plain_name(extra["model"]):
            raise ValueError(f"neurolabel.model {extra['model'][:80]!r} is not allowed: use letters, digits, "
                             "'_', '.' and '-' (up to 200, starting with a letter or digit)")
    try:
        name = model or extra.get("model") or UNNAMED_MODEL
        neuron = None if isinstance(d.get("neuron_id"), dict) else NeuronId(0, i)
        return from_openai_json(d, model=name, neuron=neuron, where=f"records[{i}]")
    except Exception as exc:  # noqa: BLE001 - any malformed record is the caller's error
        raise ValueError(f"not a NeuronRecord: {exc}") from None


def parse_records(raw: list[dict[str, Any]], *, model: str | None) -> tuple[list[tuple[int, NeuronRecord]], list[ItemError]]:
    """OpenAI ``NeuronRecord`` JSON -> ``(position, core record)`` of each valid record, and an
    :class:`ItemError` (stage ``parse``) for each invalid one. A bad ``model`` is a 422.

    The model name is ``model``, else the record's ``neurolabel.model``, else
    :data:`activations.openai_format.UNNAMED_MODEL` (the rule ``neurolabel import`` follows too);
    the neuron is the record's ``neuron_id``, else (layer 0, its position in the list)."""
    if model is not None:
        _check_model_name(model, ["body", "model"])
    good: list[tuple[int, NeuronRecord]] = []
    bad: list[ItemError] = []
    for i, d in enumerate(raw):
        try:
            good.append((i, _parse_one(d, i, model)))
        except ValueError as exc:
            bad.append(ItemError(record=i, stage="parse", type="invalid_record", msg=str(exc)))
    return good, bad


def _item_error(i: int, f: ItemFailure) -> ItemError:
    return ItemError(record=i, stage=f.stage, type=f.kind, msg=redact_paths(f.message), explainer=f.explainer)  # type: ignore[arg-type]


def _answer(response: Response, explanations: list[Explanation], failures: list[ItemError],
            stored: list[int], records: list[tuple[int, NeuronRecord]]) -> dict[str, Any]:
    """200 when nothing failed, 207 when something did, 422 naming every failure when nothing
    succeeded."""
    where = {i: r for i, r in records}
    failures = sorted(failures, key=lambda f: f.record)
    for f in failures:
        if f.record in where:
            f.model, f.layer, f.index = where[f.record].model, where[f.record].neuron.layer, where[f.record].neuron.index
    if failures and not explanations:
        raise HTTPException(422, detail=[
            {"loc": ["body", "records", f.record] + ([f.explainer] if f.explainer else []),
             "msg": f.msg if f.explainer is None else f"{f.explainer}: {f.msg}", "type": f.type}
            for f in failures])
    if failures:
        response.status_code = 207
    return {"explanations": [ExplanationOut.of(e) for e in explanations], "stored_ids": stored,
            "partial": bool(failures), "failures": failures}


PARTIAL = {207: {"model": ExplanationsOut, "description": "Multi-Status: some records or explainers failed; "
                 "`partial` is true, `failures` names each with why, `explanations` hold what succeeded."}}
"""OpenAPI: the partial answer of explain and score."""


def explain_run_spec(body: ExplainRequest, *, session: Any, data_dirs: tuple[str, ...]) -> RunSpec:
    """The run spec of an explain request (the endpoint's one conversion into a run): its plugins
    and its ontology, which must be ``default``, registered or under the data roots (422 naming
    the field otherwise)."""
    from neurolabel.activations.openai_format import UNNAMED_MODEL
    from neurolabel.service.sources import resolve_source

    try:
        ontology = resolve_source(session=session, kind="ontology", name=body.ontology, data_dirs=data_dirs).spec
    except ConfigError as exc:
        raise invalid(["body", "ontology"], str(exc), "not_allowed") from None
    try:
        return RunSpec.parse({"model": body.model or UNNAMED_MODEL, "explainers": body.explainers,
                              "simulators": body.simulators, "ontology": ontology}, where="explain request")
    except ConfigError as exc:
        raise invalid(["body", "explainers"], str(exc), "config_error") from None


@router.post("/explain", response_model=ExplanationsOut, summary="Explain and score given records",
             responses={**responses(401, 403, 413, 422, 429, 502, 503), **PARTIAL})
def explain(body: ExplainRequest, session: SessionDep, _key: ApiKeyDep, limits: LimitsDep,
            response: Response) -> dict[str, Any]:
    """Run the named explainers on each record, score every explanation on the record's
    score-split windows, and (``store: true``) store the valid records and the explanations.
    What fails for one record and explainer is reported in ``failures`` (status 207) while the
    rest is returned; 422 when nothing succeeds or an explainer or simulator tag is unknown.
    Needs an API key."""
    from neurolabel.pipeline.run import explain_and_score_each

    spec = explain_run_spec(body, session=session, data_dirs=limits.roots())
    records, failures = parse_records(body.records, model=body.model)
    results = explain_and_score_each([r for _, r in records], spec)
    explanations = [e for res in results for e in res.explanations]
    failures += [_item_error(i, f) for (i, _), res in zip(records, results) for f in res.problems]
    stored: list[int] = []
    if body.store and explanations:
        from neurolabel.storage.queries import save_explanations, save_neuron_records

        save_neuron_records(session=session, records=[r for _, r in records])
        stored = save_explanations(session=session, explanations=explanations)
        session.commit()
    return _answer(response, explanations, failures, stored, records)


@router.post("/score", response_model=ExplanationsOut, summary="Score an explanation",
             responses={**responses(401, 403, 413, 422, 429, 502, 503), **PARTIAL})
def score(body: ScoreRequest, _key: ApiKeyDep, response: Response) -> dict[str, Any]:
    """Simulate the given explanation on each record's score-split windows and correlate.
    A record that is invalid or cannot be scored is reported in ``failures`` (status 207);
    422 when none can be scored. Needs an API key."""
    from neurolabel.core.errors import LMError, ScoringError
    from neurolabel.pipeline.plugins import build
    from neurolabel.scoring.validate import simulate_and_score

    try:
        simulator = build("simulator", body.simulator)
    except ConfigError as exc:
        raise invalid(["body", "simulator"], str(exc), "config_error") from None
    records, failures = parse_records(body.records, model=body.model)
    out = []
    for i, rec in records:
        e = Explanation(
            model=rec.model,
            neuron=rec.neuron,
            explainer=body.explanation.explainer,
            explainer_version=body.explanation.explainer_version,
            text=body.explanation.text,
            structured=body.explanation.structured,
        )
        try:
            out.append(simulate_and_score(e, rec, simulator=simulator))
        except (ScoringError, LMError) as exc:
            failures.append(ItemError(record=i, stage="score", type=type(exc).__name__, msg=redact_paths(str(exc))))
    return _answer(response, out, failures, [], records)
