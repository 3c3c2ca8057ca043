"""The web page in a real headless chromium (Debian's, driven by Playwright for Python): type a
text, click, and see the summary, the attention heatmap and the memory trace; an error replaces
the previous result with a plain sentence; no request of the page fails (its icon included).
The Memory view draws one panel per cell from /v1/memory (tiny recall models trained once per
session); the page is checked at a desktop (1280 px) and a phone (390 px) width.

Skips when /usr/bin/chromium or playwright is absent (CI installs both: ``apt-get install -y
chromium`` and ``pip install playwright``; never ``playwright install``). The screenshot goes to
``$GATESUM_SCREENSHOTS`` if set, else the test's tmp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.service.helpers import ARTICLE
from tests.service.memory_helpers import generated_text, recall_models_once, write_examples

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.browser
WIDTHS = {"desktop": 1280, "phone": 390}


@pytest.fixture(autouse=True)
def memory_models(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch) -> None:
    """Recall models and example files for every app these tests start (live_server reads them)."""
    monkeypatch.setenv("GATESUM_RECALL_MODELS", str(recall_models_once(tmp_path_factory)))
    monkeypatch.setenv("GATESUM_DATA", str(write_examples(tmp_path / "data")))


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


def open_page(browser, url: str, width: int = 1280):
    """A page at ``url``, with the page's JS errors and every failed response recorded."""
    page = browser.new_page(viewport={"width": width, "height": 1000})
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
    # the trace is drawn over the text as written (cased, unsplit), one span per source token
    memory_tokens = page.locator("#memory span[data-t]")
    assert memory_tokens.count() == columns
    assert "remembered" in memory_tokens.last.get_attribute("title")
    assert page.inner_text("#memory").strip() == ARTICLE
    texts = page.eval_on_selector_all("#memory span[data-t]", "spans => spans.map(s => s.textContent)")
    assert next(text for text in texts if text.strip()) == "T"  # cased, as written
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


def test_extractive_is_not_offered_without_a_content_selector(browser, live_server: str) -> None:
    page = open_page(browser, live_server + "/")
    page.wait_for_selector("input[name=mode][value=extractive]:disabled")
    assert page.get_attribute("#mode-extractive-label", "title") == "this model has no content selector"
    summarize(page, ARTICLE * 3)  # abstractive, truncated: the first sentences read, the rest grey
    assert "the first ones; the rest was not read" in page.inner_text("#reading-legend")
    assert not page.is_visible("#selection-view")  # no selector, no scores
    assert page.inner_text("#reading .used").startswith("The city council voted")
    assert page.js_errors == [] and page.failed == []
    page.close()


def test_api_docs_render_offline(browser, live_server: str) -> None:
    """Swagger UI comes from the service itself: it renders with no network."""
    page = browser.new_page()
    page.goto(live_server + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/summarize" in path for path in paths) and len(paths) >= 3
    page.close()


def test_generation_bounds_come_from_the_schema_and_only_set_fields_are_sent(
    browser, live_server: str
) -> None:
    page = open_page(browser, live_server + "/")
    schema = page.evaluate("fetch('/openapi.json').then(r => r.json())")
    fields = schema["components"]["schemas"]["SummarizeRequest"]["properties"]
    for name in ("beam_size", "max_length"):
        bounds = next(option for option in fields[name]["anyOf"] if option.get("type") == "integer")
        page.wait_for_function(f"document.getElementById('{name}').max !== ''")
        assert page.get_attribute(f"#{name}", "min") == str(bounds["minimum"])
        assert page.get_attribute(f"#{name}", "max") == str(bounds["maximum"])
        assert page.input_value(f"#{name}") == ""  # the service's default, not one written here
    sent = []
    page.on("request", lambda r: r.url.endswith("/v1/explain") and sent.append(r.post_data_json))
    summarize(page, ARTICLE)  # sets max_length only
    assert sent == [{"text": ARTICLE, "max_length": 8}]
    page.close()


@pytest.mark.parametrize("device", WIDTHS)
def test_a_long_heatmap_is_readable(browser, live_server: str, tmp_path: Path, device: str) -> None:
    """Past 150 source tokens: rows 16 px high, labels on both axes that stay in view while the
    frame scrolls, and hovering names the pair."""
    page = open_page(browser, live_server + "/", WIDTHS[device])
    summarize(page, generated_text(190))  # ~200 source tokens, the tiny model's limit
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    columns = int(page.get_attribute("#heatmap", "data-columns"))
    assert columns > 150
    rows_box, body_box = page.locator("#heatmap-rows").bounding_box(), page.locator("#heatmap").bounding_box()
    rows = int(page.get_attribute("#heatmap", "data-rows"))
    assert body_box["height"] == pytest.approx(16 * rows, abs=1)  # 16 px a row: 11 px labels fit
    assert body_box["width"] / columns >= 6  # cells stay visible; the frame scrolls instead
    assert page.locator("#heatmap-columns").bounding_box()["height"] > 20  # column labels
    assert rows_box["width"] > 20
    cell = body_box["width"] / columns
    page.hover("#heatmap", position={"x": cell * 20 + cell / 2, "y": 16 * 1 + 8})
    hover = page.inner_text("#heatmap-hover")
    assert "summary token 2" in hover and "source token" in hover and "[" in hover
    # scrolled right, the row labels stay at the frame's left edge
    page.evaluate("document.getElementById('heatmap-frame').scrollLeft = 400")
    assert page.locator("#heatmap-rows").bounding_box()["x"] == pytest.approx(rows_box["x"], abs=1)
    page.evaluate("document.getElementById('heatmap-frame').scrollLeft = 0")
    assert page.js_errors == []
    page.screenshot(path=str(screenshot_folder(tmp_path) / f"gatesum-heatmap-{device}.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("device", WIDTHS)
def test_memory_view_draws_each_cell(browser, live_server: str, tmp_path: Path, device: str) -> None:
    page = open_page(browser, live_server + "/#memory", WIDTHS[device])
    assert page.is_visible("#view-memory") and not page.is_visible("#view-summarize")
    page.wait_for_selector("#memory-examples:not([hidden])")  # the data folder has both files
    assert page.locator("#memory-example option").count() == 3  # "your own text" and two examples
    page.select_option("#memory-example", "news")
    assert page.input_value("#memory-source") == generated_text(400, 2)
    page.click("#memory-run")
    page.wait_for_selector("#memory-result:not([hidden])", timeout=60_000)

    panels = page.locator("#memory-cells .cell")
    assert panels.count() == 4
    assert [panels.nth(i).get_attribute("data-cell") for i in range(4)] == [
        "rnn",
        "gru",
        "lstm",
        "lstm-peephole",
    ]
    for i in range(4):
        panel = panels.nth(i)
        assert panel.locator(".verdict").count() == 1 and "key" in panel.locator(".verdict").inner_text()
        assert (
            "gate" in panel.locator(".explain").inner_text()
            or "rewritten" in panel.locator(".explain").inner_text()
        )
        box = panel.locator("canvas").bounding_box()
        assert box["width"] > 250 and box["height"] > 200
    boxes = [panels.nth(i).bounding_box() for i in range(4)]
    if device == "desktop":  # side by side, two a row
        assert boxes[0]["y"] == boxes[1]["y"] and boxes[1]["x"] > boxes[0]["x"]
    else:  # one a row, none wider than the screen
        assert all(box["x"] >= 0 and box["x"] + box["width"] <= WIDTHS[device] for box in boxes)
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTHS[device]
    panels.first.locator("canvas").scroll_into_view_if_needed()
    canvas = panels.first.locator("canvas").bounding_box()
    page.mouse.move(canvas["x"] + canvas["width"] / 2, canvas["y"] + 60)
    assert "tokens" in panels.nth(3).locator(".hover").inner_text()  # every panel marks the same token
    assert "tokens · key" in page.inner_text("#memory-meta")
    assert page.js_errors == [] and page.failed == []
    shot = screenshot_folder(tmp_path) / f"gatesum-memory-{device}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def test_memory_view_says_why_a_text_is_refused(browser, live_server: str) -> None:
    page = open_page(browser, live_server + "/#memory")
    page.fill("#memory-source", "   ")
    page.click("#memory-run")
    page.wait_for_selector("#memory-error:not([hidden])")
    assert page.inner_text("#memory-error") == "The text is empty or only whitespace."
    assert not page.is_visible("#memory-result")
    page.close()
