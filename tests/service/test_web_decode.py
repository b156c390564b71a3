"""Output-side tokens and facets on the neuron page (real headless Chromium) and in the neuron API
(real HTTP)."""

from __future__ import annotations

import httpx
import pytest

from neurolabel.service.app import create_app
from tests.service.live import fresh_database, live_server, seed, small_ontology
from tests.service.test_web import browser  # noqa: F401 - the shared Chromium fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _seed_output_and_facets(url: str) -> None:
    from neurolabel.core.types import Explanation, NeuronId, ScoreResult
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import save_explanations

    out = Explanation(
        model="tiny", neuron=NeuronId(0, 1), explainer="output_tokens", explainer_version="1",
        text="promotes: dog, puppy · suppresses: cat",
        structured={"promoted": [{"id": 5, "token": " dog", "weight": 2.5}, {"id": 6, "token": " puppy", "weight": 1.5}],
                    "suppressed": [{"id": 7, "token": " cat", "weight": -2.0}]},
        score=ScoreResult(score=None, scorer="agreement", simulator="symbolic",
                          parts={"agreement": 1.0, "top_token_inside": 1.0, "n_inside": 2.0, "n_promoted": 2.0}))
    facets = Explanation(
        model="tiny", neuron=NeuronId(0, 1), explainer="facets", explainer_version="1",
        text="2 facets: dogs; closing brackets",
        structured={"facets": [
            {"label": "dogs", "explainer": "pmi", "explainer_version": "1", "structured": {}, "simulator": "lexical",
             "weight": 1.0, "share": 0.7, "score": 0.41,
             "examples": [{"window_id": 1, "token": " dog", "activation": 4.0, "context": "The ⟦dog⟧ ran"}]},
            {"label": "closing brackets", "explainer": "pmi", "explainer_version": "1", "structured": {},
             "simulator": "lexical", "weight": 0.5, "share": 0.3, "score": None,
             "examples": [{"window_id": 2, "token": ")", "activation": 2.0, "context": "(a ⟦)⟧"}]}]},
        score=ScoreResult(score=0.2, scorer="correlation", simulator="facets"))
    with session_scope(url) as s:
        save_explanations(session=s, threshold=0.3, explanations=[out, facets])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with fresh_database("sqlite", tmp_path_factory.mktemp("webdec")) as url:
        seed(url)
        _seed_output_and_facets(url)
        onto = small_ontology()
        app = create_app(url, ontology=lambda: onto)
        with live_server(app) as base:
            yield base
        app.state.engine.dispose()


def test_neuron_page_shows_promoted_suppressed_and_facets(site, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/models/tiny/neurons/0/1")
    assert browser.find_element(By.ID, "best-label").text == "dogs and puppies"  # neither became the label
    assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, ".output-tokens code.promoted")] == ["dog", "puppy"]
    assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, ".output-tokens code.suppressed")] == ["cat"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#explanations tr.explanation")
    out_row = next(r for r in rows if "output_tokens" in r.text)
    assert "agreement" in out_row.text and "top_token_inside 1.00" in out_row.text
    facets = browser.find_elements(By.CSS_SELECTOR, "ol.facets li.facet")
    assert len(facets) == 2
    assert facets[0].text.startswith("dogs") and "score 0.410" in facets[0].text and "The ⟦dog⟧ ran" in facets[0].text
    assert facets[1].text.startswith("closing brackets") and "score –" in facets[1].text


def test_neuron_api_returns_output_tokens_and_facets(site):
    r = httpx.get(f"{site}/v1/models/tiny/neurons/0/1", timeout=30)
    assert r.status_code == 200
    by = {e["explainer"]: e for e in r.json()["explanations"]}
    assert [p["token"] for p in by["output_tokens"]["structured"]["promoted"]] == [" dog", " puppy"]
    assert by["output_tokens"]["scores"][0]["parts"]["agreement"] == 1.0
    assert [f["label"] for f in by["facets"]["structured"]["facets"]] == ["dogs", "closing brackets"]
    assert by["facets"]["structured"]["facets"][0]["examples"][0]["context"] == "The ⟦dog⟧ ran"
