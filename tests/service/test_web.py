"""The web neuron browser in real headless Chromium (Debian chromium + chromedriver, selenium):
the neuron page loads and shows its label, windows and histogram; search returns the neuron;
the model overview shows the labelled fraction."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from neurolabel.service.app import create_app
from tests.service.live import fresh_database, live_server, seed, small_ontology

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = os.environ.get("NEUROLABEL_SCREENSHOT")
"""If set, the neuron page's screenshot is saved there."""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with fresh_database("sqlite", tmp_path_factory.mktemp("web")) as url:
        seed(url)
        onto = small_ontology()
        app = create_app(url, ontology=lambda: onto)
        with live_server(app) as base:
            yield base
        app.state.engine.dispose()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver_path)):
        pytest.fail("Debian chromium and chromium-driver are needed: run scripts/test-services.sh")
    profile = tempfile.mkdtemp(prefix="nl-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,1400", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def click_and_wait(browser, element):
    """Clicks a link or button and waits until the new page has replaced the old one (a click
    returns before the navigation finishes; reading the page at once races it).

    The old page is marked by a property on its window object, which a navigation replaces; the
    wait polls for a document without the mark that has finished loading. Chromedriver may answer
    a poll made while the documents swap with an error other than a stale element ("Node with
    given id does not belong to the document", "execution context was destroyed"): such a poll
    is a "not yet" and the wait goes on (it failed CI once when the staleness check of the old
    <html> element met that error)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script("window.__neurolabelOldPage = true;")
    element.click()

    def replaced_and_loaded(d):
        return d.execute_script(
            "return window.__neurolabelOldPage === undefined"
            " && document.readyState === 'complete';")

    WebDriverWait(browser, 30, ignored_exceptions=(WebDriverException,)).until(replaced_and_loaded)


def test_neuron_page_shows_label_explanations_windows_histogram(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/models/tiny/neurons/0/1")
    assert browser.find_element(By.ID, "best-label").text == "dogs and puppies"
    rows = browser.find_elements(By.CSS_SELECTOR, "#explanations tr.explanation")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text.splitlines()[0] for r in rows] == [
        "dogs and puppies", "the word dog"]
    assert "0.820" in rows[0].text and "symbolic" in rows[0].text
    # the label's row says so; the other accepted one does not
    assert [r.find_element(By.CSS_SELECTOR, "td.accepted").text for r in rows] == ["yes: the label", "yes"]
    top = browser.find_elements(By.CSS_SELECTOR, "#top-windows .window")
    assert len(top) == 4 and " dog" in top[0].text
    # the most active token is shaded most strongly
    toks = top[0].find_elements(By.CSS_SELECTOR, ".tok")
    alphas = [float(t.get_attribute("data-shade")) for t in toks]
    assert alphas.index(max(alphas)) == 1 and max(alphas) == pytest.approx(1.0)
    assert "rgb(255, 120, 0)" in toks[1].get_attribute("style")  # drawn fully opaque
    assert len(browser.find_elements(By.CSS_SELECTOR, "#random-windows .window")) == 4
    bars = browser.find_elements(By.CSS_SELECTOR, "#histogram svg rect")
    assert len(bars) >= 30
    if SCREENSHOT:
        browser.save_screenshot(SCREENSHOT)


def test_neuron_page_shows_failed_attempts(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/models/tiny/neurons/1/3")
    assert browser.find_element(By.ID, "best-label").text == "no accepted label yet"
    items = browser.find_elements(By.CSS_SELECTOR, "#failures li.failure")
    assert len(items) == 1 and "llm_summary" in items[0].text and "unparseable answer" in items[0].text
    browser.get(f"{site}/models/tiny/neurons/0/1")
    assert browser.find_elements(By.ID, "failures") == []


def test_search_page_finds_the_neuron(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/search")
    box = browser.find_element(By.ID, "q")
    box.send_keys("puppies")
    click_and_wait(browser, browser.find_element(By.ID, "go"))
    links = browser.find_elements(By.CSS_SELECTOR, "#results a.neuron-link")
    assert [a.text for a in links] == ["tiny 0:1"]
    click_and_wait(browser, links[0])
    assert browser.find_element(By.ID, "best-label").text == "dogs and puppies"


def test_search_by_ontology_class(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{site}/search")
    browser.find_element(By.ID, "q").send_keys("animal")
    Select(browser.find_element(By.ID, "mode")).select_by_value("concept")
    click_and_wait(browser, browser.find_element(By.ID, "go"))
    links = browser.find_elements(By.CSS_SELECTOR, "#results a.neuron-link")
    assert [a.text for a in links] == ["tiny 0:1", "tiny 1:0"]
    browser.get(f"{site}/search?mode=concept&q=unicorn")
    assert "unicorn" in browser.find_element(By.ID, "error").text


def test_model_overview_and_index(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/")
    click_and_wait(browser, browser.find_element(By.LINK_TEXT, "tiny"))
    assert browser.find_element(By.ID, "labelled-fraction").text == "50.0%"
    layer_rows = browser.find_elements(By.CSS_SELECTOR, "#layers tr")[1:]
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in layer_rows] == ["0", "1"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#layers svg.bars")) == 2
    assert "dogs and puppies" in browser.find_element(By.ID, "neurons").text
