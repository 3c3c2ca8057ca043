"""The web page in a real headless chromium (Debian's, driven by Playwright for Python): type a
text, click, and see the summary, the attention heatmap and the memory trace; an error replaces
the previous result with a plain sentence; no request of the page fails (its icon included).

Skips when /usr/bin/chromium or playwright is absent (CI installs both: ``apt-get install -y
chromium`` and ``pip install playwright``; never ``playwright install``). The screenshot goes to
``$GATESUM_SCREENSHOTS`` if set, else the test's tmp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.service.helpers import ARTICLE

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


def screenshot_folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("GATESUM_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser, url: str):
    """A page at ``url``, with the page's JS errors and every failed response recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.js_errors, page.failed = [], []
    page.on("pageerror", lambda error: page.js_errors.append(str(error)))
    page.on("response", lambda r: r.status >= 400 and page.failed.append(f"{r.status} {r.url}"))
    page.goto(url)
    page.wait_for_selector("#model-name:has-text('tiny-untrained')")
    return page


def summarize(page, text: str) -> None:
    page.fill("#source", text)
    page.fill("#max_length", "8")
    page.click("#summarize")
    page.wait_for_selector("#summarize:not([disabled])", timeout=30_000)


def test_page_summarizes_and_draws_heatmap_and_memory(browser, live_server: str, tmp_path: Path) -> None:
    page = open_page(browser, live_server + "/")
    summarize(page, ARTICLE)
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)

    assert page.inner_text("#summary").strip()
    heatmap = page.locator("#heatmap")
    assert heatmap.is_visible()
    rows, columns = int(heatmap.get_attribute("data-rows")), int(heatmap.get_attribute("data-columns"))
    assert 1 <= rows <= 9 and columns > 10
    box = heatmap.bounding_box()
    assert box["width"] > 100 and box["height"] > 20
    # the heatmap is drawn: some pixels are neither white nor transparent
    inked = page.evaluate(
        """() => { const c = document.getElementById('heatmap');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 200) n++; return n; }"""
    )
    assert inked > 100
    memory_tokens = page.locator("#memory span")
    assert memory_tokens.count() == columns
    assert "remembered" in memory_tokens.last.get_attribute("title")
    # the page's icon is served (no 404 for it, nor for /favicon.ico)
    icon = page.evaluate("fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)")
    assert icon == 200 and page.evaluate("fetch('/favicon.ico').then(r => r.status)") == 200
    assert page.js_errors == [] and page.failed == []

    shot = screenshot_folder(tmp_path) / "gatesum-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def test_an_error_replaces_the_previous_result_with_a_readable_message(
    browser, live_server: str, tmp_path: Path
) -> None:
    page = open_page(browser, live_server + "/")
    summarize(page, ARTICLE)
    assert page.is_visible("#result") and page.inner_text("#summary").strip()

    summarize(page, "   ")  # passes the browser's "required", the API says 422
    message = page.inner_text("#error")
    assert page.is_visible("#error") and message == "The text is empty or only whitespace."
    assert "body." not in message and "Value error" not in message
    # nothing of the previous answer is left to be read as the answer to this text
    assert not page.is_visible("#result")
    assert page.inner_text("#summary") == "" and page.locator("#memory span").count() == 0
    assert page.locator("#heatmap").get_attribute("data-rows") is None
    assert page.js_errors == []
    assert [f for f in page.failed if "/v1/explain" not in f] == []  # the 422 alone, no 404
    page.screenshot(path=str(screenshot_folder(tmp_path) / "gatesum-page-error.png"), full_page=True)

    summarize(page, ARTICLE)  # and the page recovers
    assert page.is_visible("#result") and not page.is_visible("#error")
    page.close()


def test_api_docs_render_offline(browser, live_server: str) -> None:
    """Swagger UI comes from the service itself: it renders with no network."""
    page = browser.new_page()
    page.goto(live_server + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/summarize" in path for path in paths) and len(paths) >= 3
    page.close()
