"""The page with a model that has a content selector (issue #15): the sentences a summary came
from are highlighted in the text, and the mode switch gives an extractive summary. Skips as
test_browser.py does without chromium or playwright."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatesum.model.search import GenerationConfig
from gatesum.service.settings import Settings
from tests.helpers import make_rows
from tests.service.helpers import SOURCE_MAX_TOKENS, make_settings
from tests.service.test_browser import browser, memory_models, open_page, screenshot_folder  # noqa: F401

pytestmark = pytest.mark.browser
LONG = make_rows([40], seed=5)[0]["article"]  # ~440 tokens: twice what the model reads


@pytest.fixture
def settings(make_selector_bundle) -> Settings:
    """live_server (conftest.py) serves the tiny bundle with a selector inside."""
    return make_settings(make_selector_bundle(SOURCE_MAX_TOKENS))


def run(page, mode: str) -> None:
    page.fill("#source", LONG)
    page.check(f"input[name=mode][value={mode}]")
    page.click("#summarize")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    page.wait_for_selector("#summarize:not([disabled])", timeout=30_000)


def test_the_page_highlights_the_selected_sentences_and_switches_to_extractive(
    browser,  # noqa: F811
    live_server: str,
    tmp_path: Path,
) -> None:
    page = open_page(browser, live_server + "/")
    run(page, "abstractive")
    assert "chosen by the content selector" in page.inner_text("#reading-legend")
    used = page.eval_on_selector_all("#reading .used", "spans => spans.map(s => s.textContent)")
    assert 3 <= len(used) < 40 and all(sentence in LONG and sentence.endswith(".") for sentence in used)
    assert page.inner_text("#reading") == LONG  # the text as written, nothing dropped
    assert "selector score" in page.locator("#reading .used").first.get_attribute("title")
    assert page.is_visible("#heatmap")
    scores = page.locator("#selection span")  # the selector's score of each token read
    assert scores.count() > 50 and "P(copied)" in scores.first.get_attribute("title")
    page.screenshot(path=str(screenshot_folder(tmp_path) / "gatesum-page-selected.png"), full_page=True)

    run(page, "extractive")
    extracted = page.eval_on_selector_all("#reading .used", "spans => spans.map(s => s.textContent)")
    assert len(extracted) == GenerationConfig().extract_sentences  # the default
    assert page.inner_text("#summary") == " ".join(extracted)
    assert not page.is_visible("#heatmap")  # no attention to draw for sentences taken as written
    page.screenshot(path=str(screenshot_folder(tmp_path) / "gatesum-page-extractive.png"), full_page=True)
    assert page.js_errors == [] and page.failed == []
    page.close()
