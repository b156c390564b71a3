"""HTML pages: model list, model overview, neuron page and label search.

Handlers read through :mod:`storage.queries` like the REST routes; shading and the activation
histogram are computed here and drawn as inline HTML/SVG (no JavaScript needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from neurolabel.service.deps import SessionDep

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)


def mount_static(app: FastAPI) -> None:
    """Serve ``service/web/static`` under ``/static``."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")


def shade(activation: float, max_activation: float) -> float:
    """Opacity (0–1) of a token's highlight: its activation relative to the neuron's maximum."""
    if max_activation <= 0 or activation <= 0:
        return 0.0
    return round(min(1.0, activation / max_activation), 3)


def histogram(values: Sequence[float], *, bins: int = 30, width: int = 480, height: int = 120) -> dict:
    """Bars of a histogram of ``values`` as SVG rectangles (log-scaled counts)."""
    vals = [float(v) for v in values if math.isfinite(v)]
    if not vals:
        return {"bars": [], "width": width, "height": height, "lo": 0.0, "hi": 0.0, "n": 0}
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    counts = [0] * bins
    for v in vals:
        counts[min(bins - 1, int((v - lo) / span * bins))] += 1
    top = math.log1p(max(counts))
    bw = width / bins
    bars = []
    for i, c in enumerate(counts):
        h = 0.0 if c == 0 else max(1.0, (height - 4) * math.log1p(c) / top)
        bars.append({"x": round(i * bw, 2), "y": round(height - h, 2), "w": round(bw - 1, 2),
                     "h": round(h, 2), "count": c,
                     "from": round(lo + i * span / bins, 3), "to": round(lo + (i + 1) * span / bins, 3)})
    return {"bars": bars, "width": width, "height": height, "lo": lo, "hi": hi, "n": len(vals)}


def _windows(examples: Sequence[dict], max_act: float) -> list[dict]:
    return [
        {"split": e["split"], "max": e["max_activation"],
         "tokens": [{"t": t, "a": a, "s": shade(a, max_act)}
                    for t, a in zip(e["tokens"], e["activations"])]}
        for e in examples
    ]


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context)


@router.get("/", response_class=HTMLResponse)
def index(request: Request, session: SessionDep) -> HTMLResponse:
    """The models in the database and a search box."""
    from neurolabel.storage.queries import list_models

    return _render(request, "index.html", models=list_models(session=session))


@router.get("/models/{model}", response_class=HTMLResponse)
def model_page(request: Request, model: str, session: SessionDep) -> HTMLResponse:
    """Labelled fraction and score distribution per layer."""
    from neurolabel.storage.queries import list_neurons, model_overview

    ov = model_overview(session=session, model=model)
    if ov is None:
        raise HTTPException(404, detail=f"model {model!r} not found")
    neurons = list_neurons(session=session, model=model, limit=200)
    return _render(request, "model.html", model=model, ov=ov, neurons=neurons)


@router.get("/models/{model}/neurons/{layer}/{index}", response_class=HTMLResponse)
def neuron_page(request: Request, model: str, layer: int, index: int, session: SessionDep) -> HTMLResponse:
    """Label, every explanation with its scores, top and random windows, histogram."""
    from neurolabel.storage.queries import get_neuron

    info = get_neuron(session=session, model=model, layer=layer, index=index)
    if info is None:
        raise HTTPException(404, detail=f"neuron {model} {layer}:{index} not found")
    examples = info.get("examples") or []
    top = [e for e in examples if e["kind"] == "top"]
    rnd = [e for e in examples if e["kind"] == "random"]
    stats = info.get("stats") or {}
    max_act = max([e["max_activation"] for e in top] or [stats.get("max") or 0.0])
    background = [a for e in examples if e["kind"] != "top" for a in e["activations"]]
    return _render(
        request, "neuron.html", model=model, layer=layer, index=index, info=info, stats=stats,
        top=_windows(top, max_act), random=_windows(rnd, max_act),
        hist=histogram(background or [a for e in top for a in e["activations"]]),
        hist_top=histogram([a for e in top for a in e["activations"]]),
    )


@router.get("/search", response_class=HTMLResponse)
def search_page(
    request: Request,
    session: SessionDep,
    q: Annotated[str, Query(max_length=500)] = "",
    mode: Literal["text", "semantic", "concept"] = "text",
) -> HTMLResponse:
    """Label search form and results: full text, semantic, or labels under an ontology class."""
    results: list[dict] = []
    error = None
    if q.strip() and mode == "concept":
        from neurolabel.service.concept_search import labels_under

        try:
            results = labels_under(session=session, ontology=request.app.state.ontology(), cls=q.strip(),
                                   limit=50)
        except LookupError as exc:
            error = str(exc)
    elif q.strip():
        from neurolabel.storage.queries import search_labels

        results = search_labels(session=session, query=q, mode=mode, limit=50)
    return _render(request, "search.html", q=q, mode=mode, results=results, error=error)
