"""The web page in a real headless chromium (Debian's, driven by Playwright for Python): type a
text, click, and see the summary, the attention heatmap and the memory trace.

Skips when /usr/bin/chromium or playwright is absent (CI installs both: ``apt-get install -y
chromium`` and ``pip install playwright``; never ``playwright install``). The screenshot goes to
``$GATESUM_SCREENSHOTS`` if set, else the test's tmp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.service.conftest import ARTICLE

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


def test_page_summarizes_and_draws_heatmap_and_memory(browser, live_server: str, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live_server + "/")
    page.wait_for_selector("#model-name:has-text('tiny-untrained')")
    page.fill("#source", ARTICLE)
    page.fill("#max_length", "8")
    page.click("#summarize")
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
    assert errors == []

    folder = Path(os.environ.get("GATESUM_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "gatesum-page.png"), full_page=True)
    assert (folder / "gatesum-page.png").stat().st_size > 10_000
    page.close()


def test_page_shows_a_readable_error(browser, live_server: str) -> None:
    page = browser.new_page()
    page.goto(live_server + "/")
    page.fill("#source", "   ")  # passes the browser's "required", the API says 422
    page.click("#summarize")
    page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    assert "whitespace" in page.inner_text("#error")
    page.close()


def test_api_docs_render_offline(browser, live_server: str) -> None:
    """Swagger UI comes from the service itself: it renders with no network."""
    page = browser.new_page()
    page.goto(live_server + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/summarize" in path for path in paths) and len(paths) >= 3
    page.close()
