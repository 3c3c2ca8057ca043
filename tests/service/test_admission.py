"""Admission by cost and cancellation: a request over the row-step ceiling or over its client's
share gets 429 at once, work that cannot finish within the timeout 503 + Retry-After at once; a
maximal request beside short ones leaves them fast; a client that hangs up stops its work."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import uvicorn

from gatesum.model.search import GenerationConfig
from gatesum.service.app import create_app
from gatesum.service.batching import Refused, StepCost
from gatesum.service.settings import Settings
from gatesum.service.state import BatchKey
from tests.service.helpers import ARTICLE, get, make_settings, serving, still_loading
from tests.service.test_batching import CHEAP, FakeEngine, make_batcher

SECOND_PER_ROW_STEP = StepCost(per_row=1.0, per_row_token=0.0, per_char=0.0)
TEN_STEPS = BatchKey(GenerationConfig(beam_size=1, max_length=9), explain=False)  # ≤ 9 tokens + EOS


def test_a_request_over_the_ceiling_is_429_at_once(tiny_bundle: Path) -> None:
    with serving(make_settings(tiny_bundle, max_request_row_steps=300)) as client:
        body = {"texts": [ARTICLE] * 4, "beam_size": 4, "max_length": 100}  # 4 · 4 · (~34 + 1) row-steps
        started = time.monotonic()
        refused = client.post("/v1/summarize/batch", json=body)
        assert time.monotonic() - started < 2
        assert refused.status_code == 429 and "retry-after" not in refused.headers
        assert "over the ceiling of 300" in refused.json()["error"]
        assert client.post("/v1/summarize", json={"text": ARTICLE, "beam_size": 4}).status_code == 200
        metrics = client.get("/metrics").text
    assert 'gatesum_rejected_total{reason="over_ceiling"} 1.0' in metrics


def test_work_that_cannot_finish_in_time_is_503_at_once_and_short_work_still_fits() -> None:
    """Each text below costs 10 s of model time (1 s per row-step, 10 steps); the timeout is 60 s,
    of which 54 s may be planned: five fit side by side, a sixth would finish after ~60 s."""

    async def scenario() -> None:
        batcher = make_batcher(FakeEngine(SECOND_PER_ROW_STEP), max_wait_ms=60_000)  # no step runs
        for client in range(5):
            batcher.submit(["x" * 40], TEN_STEPS, client=f"c{client}")
        with pytest.raises(Refused) as refusal:
            batcher.submit(["x" * 40], TEN_STEPS, client="c5")
        assert (refusal.value.status, refusal.value.reason, refusal.value.retry_after) == (
            503,
            "overloaded",
            6,
        )
        batcher.submit(["xxxx"], TEN_STEPS, client="c6")  # 2 s: done after ~2 + 5 · 2 s, fair sharing
        await batcher.stop()

    asyncio.run(scenario())


def test_a_client_over_its_share_is_429() -> None:
    async def scenario() -> None:
        batcher = make_batcher(FakeEngine(SECOND_PER_ROW_STEP), max_wait_ms=60_000)
        for _ in range(3):  # 30 s: the share of one client is half the 60 s timeout
            batcher.submit(["x" * 40], TEN_STEPS, client="a")
        with pytest.raises(Refused) as over:
            batcher.submit(["x" * 40], TEN_STEPS, client="a")
        assert (over.value.status, over.value.reason, over.value.retry_after) == (429, "over_share", 30)
        batcher.submit(["x" * 40], TEN_STEPS, client="b")  # another client still fits
        long = BatchKey(GenerationConfig(beam_size=1, max_length=40), explain=False)  # 41 s alone
        with pytest.raises(Refused) as alone:
            batcher.submit(["x" * 160], long, client="c")
        assert (alone.value.status, alone.value.retry_after) == (429, None)  # waiting cannot help
        await batcher.stop()

    asyncio.run(scenario())


def test_the_cost_of_a_long_text_includes_the_selectors_pass() -> None:
    """The selector reads each long text whole before anything decodes: at 0.1 s per token, a
    text it reads 400 tokens of needs ~40 s, over one client's 30 s share, though its decoding
    alone (10 steps at 1 ms) is cheap; without that selector cost the same text is admitted."""
    reading = StepCost(per_row=1e-3, per_row_token=0.0, per_char=0.0, per_selector_token=0.1)

    async def scenario() -> None:
        batcher = make_batcher(FakeEngine(reading, long_source=50), max_wait_ms=60_000)
        batcher.submit(["x" * 40], TEN_STEPS, client="a")  # short: the selector does not read it
        with pytest.raises(Refused) as refusal:
            batcher.submit(["x" * 400], TEN_STEPS, client="b")
        assert (refusal.value.status, refusal.value.retry_after) == (429, None)
        assert "~40 s of model time" in str(refusal.value)
        await batcher.stop()
        free = make_batcher(FakeEngine(replace(reading, per_selector_token=0.0), long_source=50))
        free.submit(["x" * 400], TEN_STEPS, client="b")
        await free.stop()

    asyncio.run(scenario())


def test_a_maximal_request_beside_short_ones_leaves_them_fast(tiny_bundle: Path) -> None:
    """A request that holds its whole share of the batch for ~200 decoder steps; short requests
    sent one after another meanwhile each take their own few steps."""
    settings = make_settings(tiny_bundle, max_batch_rows=32, request_timeout_s=600)
    maximal = {"texts": [ARTICLE * 20] * 8, "beam_size": 4, "max_length": 200, "min_length": 200}
    with serving(settings) as client:
        batcher = client.app.state.service.batcher
        batcher.engine.cost = CHEAP  # admitted whatever start-up measured on a loaded machine
        answer: list = []
        thread = threading.Thread(
            target=lambda: answer.append(client.post("/v1/summarize/batch", json=maximal))
        )
        started = time.monotonic()
        thread.start()
        while not batcher.engine.rows:
            time.sleep(0.005)
        latencies = []
        while len(latencies) < 5:
            sent = time.monotonic()
            assert client.post("/v1/summarize", json={"text": ARTICLE, "max_length": 8}).status_code == 200
            latencies.append(time.monotonic() - sent)
        short_done = time.monotonic()
        maximal_still_running = not answer
        thread.join()
        maximal_took = time.monotonic() - started
    assert answer[0].status_code == 200 and len(answer[0].json()["results"]) == 8
    # the five short ones came and went while the maximal one (200 decoder steps) was still running
    assert maximal_still_running and short_done - started < maximal_took
    assert max(latencies) < maximal_took / 5, (latencies, maximal_took)


@contextmanager
def live(settings: Settings) -> Iterator[tuple[str, object]]:
    """The app under a real uvicorn (which notices a client hanging up); yields (URL, app)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started or still_loading(*get(f"{url}/readyz")):
        if time.monotonic() > deadline:
            pytest.fail("the server was not ready within 60 s")
        time.sleep(0.05)
    try:
        yield url, app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_client_that_hangs_up_stops_its_work(tiny_bundle: Path) -> None:
    settings = make_settings(tiny_bundle, max_length=200, request_timeout_s=600)
    with live(settings) as (url, app):
        batcher = app.state.service.batcher
        engine_step = batcher.engine.step
        batcher.engine.step = lambda lane: time.sleep(0.02) or engine_step(lane)  # ≥ 200 steps: ≥ 4 s
        body = json.dumps({"text": ARTICLE * 4, "min_length": 200}).encode()
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as hang_up:
            hang_up.sendall(b"POST /v1/summarize HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
                            b"content-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            deadline = time.monotonic() + 10
            while not batcher.engine.rows and time.monotonic() < deadline:
                time.sleep(0.005)
            assert batcher.engine.rows, "the request never reached the model"
        gone = time.monotonic()
        while batcher.engine.rows and time.monotonic() - gone < 2:
            time.sleep(0.005)
        assert batcher.engine.rows == 0  # its rows left the batch at the next step boundary
        batcher.engine.step = engine_step
        started = time.monotonic()
        short = json.dumps({"text": ARTICLE, "max_length": 8}).encode()
        request = urllib.request.Request(f"{url}/v1/summarize", short, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        assert time.monotonic() - started < 4  # it did not wait for the abandoned work
        _, metrics = get(f"{url}/metrics")
    metrics = metrics.decode()
    assert 'gatesum_cancelled_total{reason="disconnect"} 1.0' in metrics
    assert 'gatesum_requests_total{route="/v1/summarize",status="499"} 1.0' in metrics
    assert 'status="200"} 1.0' in metrics  # only the second request succeeded
