"""``POST /v1/explain`` and ``POST /v1/score``: ad-hoc work on records recorded elsewhere."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from neurolabel.core.types import Explanation, NeuronId, NeuronRecord
from neurolabel.service.deps import ApiKeyDep, SessionDep
from neurolabel.service.schemas import ExplainRequest, ExplanationOut, ExplanationsOut, ScoreRequest

router = APIRouter(tags=["explain"])


def parse_records(raw: list[dict[str, Any]], *, model: str | None) -> list[NeuronRecord]:
    """OpenAI ``NeuronRecord`` JSON -> core records; 422 naming the bad record.

    The model name is ``model``, else the record's ``neurolabel.model``, else ``external``; the
    neuron is the record's ``neuron_id``, else (layer 0, its position in the list)."""
    from neurolabel.activations.openai_format import from_openai_json

    out = []
    for i, d in enumerate(raw):
        try:
            extra = d.get("neurolabel") if isinstance(d.get("neurolabel"), dict) else {}
            name = model or extra.get("model") or "external"
            neuron = None if isinstance(d.get("neuron_id"), dict) else NeuronId(0, i)
            out.append(from_openai_json(d, model=name, neuron=neuron, where=f"records[{i}]"))
        except Exception as exc:  # noqa: BLE001 - any malformed record is the caller's error
            raise HTTPException(
                422, detail=[{"loc": ["body", "records", i], "msg": f"not a NeuronRecord: {exc}",
                              "type": "value_error"}]
            ) from None
    return out


@router.post("/explain", response_model=ExplanationsOut, summary="Explain and score given records")
def explain(body: ExplainRequest, session: SessionDep, _key: ApiKeyDep) -> dict[str, Any]:
    """Run the named explainers on each record, score every explanation on the record's
    score-split windows, and (``store: true``) store records and explanations. Needs an API key."""
    from neurolabel.service.pipeline import explain_and_score

    records = parse_records(body.records, model=body.model)
    explanations = explain_and_score(records, explainers=body.explainers, simulators=body.simulators)
    stored: list[int] = []
    if body.store:
        from neurolabel.storage.queries import save_explanations, save_neuron_records

        save_neuron_records(session=session, records=records)
        stored = save_explanations(session=session, explanations=explanations)
        session.commit()
    return {"explanations": [ExplanationOut.of(e) for e in explanations], "stored_ids": stored}


@router.post("/score", response_model=ExplanationsOut, summary="Score an explanation")
def score(body: ScoreRequest, _key: ApiKeyDep) -> dict[str, Any]:
    """Simulate the given explanation on each record's score-split windows and correlate.
    Needs an API key."""
    from neurolabel.scoring.validate import simulate_and_score

    records = parse_records(body.records, model=body.model)
    from neurolabel.service.pipeline import plugin

    simulator = plugin("simulator", body.simulator)
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
