"""HTML pages of contrast studies: the list, and one study's ranked neurons with effect sizes,
labels and the two sides' activation distributions per neuron (inline SVG drawn here)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Sequence

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from neurolabel.service.deps import SessionDep
from neurolabel.service.web.pages import templates

router = APIRouter(include_in_schema=False)


def two_histograms(a: Sequence[float], b: Sequence[float], *, bins: int = 24, width: int = 260,
                   height: int = 56) -> dict[str, Any]:
    """Bars of the histograms of ``a`` (drawn upwards) and ``b`` (downwards) over shared bins,
    each scaled to its own largest bin (sides of different sizes compare by shape)."""
    vals = [float(v) for v in (*a, *b) if math.isfinite(v)]
    if not vals:
        return {"a": [], "b": [], "width": width, "height": height, "lo": 0.0, "hi": 0.0}
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    half = height / 2
    bw = width / bins

    def bars(xs: Sequence[float], up: bool) -> list[dict[str, float]]:
        counts = [0] * bins
        for v in xs:
            if math.isfinite(v):
                counts[min(bins - 1, int((v - lo) / span * bins))] += 1
        top = max(counts) or 1
        out = []
        for i, c in enumerate(counts):
            if c:
                h = max(1.0, (half - 2) * c / top)
                out.append({"x": round(i * bw, 2), "y": round(half - h if up else half, 2), "w": round(bw - 1, 2),
                            "h": round(h, 2), "count": c})
        return out

    return {"a": bars(a, True), "b": bars(b, False), "width": width, "height": height, "lo": lo, "hi": hi}


@router.get("/studies", response_class=HTMLResponse)
def studies_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Every stored study, newest first."""
    from neurolabel.storage.studies import list_studies

    return templates.TemplateResponse(request, "studies.html", {"studies": list_studies(session=session, limit=200)})


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(
    request: Request,
    study_id: int,
    session: SessionDep,
    order: Literal["rank", "auroc", "smd", "q", "causal"] = "rank",
    layer: Annotated[str, Query(max_length=6, pattern=r"^\d*$")] = "",
    direction: Literal["a", "b", ""] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> HTMLResponse:
    """The ranked neurons of one study (the filter form sends empty fields for "any")."""
    from neurolabel.storage.studies import get_study

    layer = int(layer) if layer else None  # type: ignore[assignment]
    direction = direction or None  # type: ignore[assignment]
    study = get_study(session=session, study_id=study_id, order=order, layer=layer, direction=direction,
                      limit=limit, samples=True)
    if study is None:
        raise HTTPException(404, detail=f"contrast study {study_id} not found")
    for n in study["neurons"]:
        n["plot"] = two_histograms(n.pop("sample_a"), n.pop("sample_b"))
    return templates.TemplateResponse(request, "study.html", {"study": study, "order": order, "layer": layer,
                                                              "direction": direction})
