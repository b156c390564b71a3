"""The contrast study page in real headless Chromium: the ranked neurons, their labels, the two
sides' distributions as inline SVG, and the filter form."""

from __future__ import annotations

import pytest

from neurolabel.service.app import create_app
from tests.service.live import fresh_database, live_server
from tests.service.test_web import browser, click_and_wait  # noqa: F401 - the shared Chromium fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def study_site(tmp_path_factory):
    from neurolabel.core.studies import ContrastStudy, NeuronContrast, SetFingerprint
    from neurolabel.core.types import Explanation, NeuronId, ScoreResult
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import save_explanations
    from neurolabel.storage.studies import save_study

    def nc(index: int, rank: int, auroc: float) -> NeuronContrast:
        hi, lo = (2.0, 0.0) if auroc > 0.5 else (0.0, 2.0)
        return NeuronContrast(neuron=NeuronId(3, index), rank=rank, auroc=auroc, p_value=1e-8, q_value=1e-6,
                              smd=1.5, smd_other=1.0, mean_a=hi, mean_b=lo, std_a=0.2, std_b=0.2,
                              sample_a=(hi, hi + 0.1, hi - 0.1), sample_b=(lo, lo + 0.2))

    with fresh_database("sqlite", tmp_path_factory.mktemp("web-studies")) as url:
        fp = SetFingerprint("harmful.txt", "a" * 64, 3, 40)
        study = ContrastStudy(name="harm", model="tiny", set_a=fp, set_b=SetFingerprint("harmless.txt", "b" * 64, 2, 30),
                              layers=(3,), n_tested=100, score="max", test="mannwhitney",
                              neurons=(nc(11, 0, 0.98), nc(22, 1, 0.05)), params={"alpha": 0.05, "min_effect": 0.1})
        with session_scope(url) as s:
            sid = save_study(session=s, study=study)
            save_explanations(session=s, threshold=0.1, explanations=[Explanation(
                model="tiny", neuron=NeuronId(3, 11), explainer="pmi", explainer_version="1", text="steal",
                score=ScoreResult(score=0.4, scorer="correlation", simulator="lexical"))])
        app = create_app(url)
        with live_server(app) as base:
            yield base, sid
        app.state.engine.dispose()


def test_study_page_in_chromium(browser, study_site):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, sid = study_site
    browser.get(f"{base}/studies")
    click_and_wait(browser, browser.find_element(By.LINK_TEXT, f"{sid} · harm"))
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.study-neuron")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == ["3:11", "3:22"]
    assert "steal" in rows[0].find_element(By.CSS_SELECTOR, "td.label-cell").text
    assert "unlabelled" in rows[1].find_element(By.CSS_SELECTOR, "td.label-cell").text
    svg = rows[0].find_element(By.CSS_SELECTOR, "svg.dist")
    assert svg.find_elements(By.CSS_SELECTOR, "rect.bar-a") and svg.find_elements(By.CSS_SELECTOR, "rect.bar-b")
    assert svg.size["width"] > 100
    Select(browser.find_element(By.NAME, "direction")).select_by_value("b")
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "#filters button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.study-neuron")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == ["3:22"]
