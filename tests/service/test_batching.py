"""Concurrency: simultaneous requests share model calls, grouped by generation settings; a full
queue answers 503 with Retry-After; a slow model answers 504."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gatesum.service.batching import MicroBatcher, QueueFull
from tests.service.helpers import ARTICLE, make_settings, serving


def test_32_simultaneous_requests_share_few_model_calls(tiny_bundle: Path) -> None:
    settings = make_settings(tiny_bundle, max_batch_size=32, max_wait_ms=200)
    texts = [f"{ARTICLE} Story number {i}." for i in range(32)]
    with serving(settings) as client:
        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(lambda text: client.post("/v1/summarize", json={"text": text}), texts))
        calls = client.app.state.service.batcher.model_calls
        alone = [client.post("/v1/summarize", json={"text": text}).json() for text in texts[:3]]
        metrics = client.get("/metrics").text
    assert [r.status_code for r in responses] == [200] * 32
    assert calls < 32 / 4, f"32 requests took {calls} model calls"
    # batched or alone, a text gets the same summary
    assert [r.json()["summary"] for r in responses[:3]] == [a["summary"] for a in alone]
    assert "gatesum_batch_size_sum 35.0" in metrics  # 32 batched + 3 alone


def test_micro_batch_is_grouped_by_generation_settings(tiny_bundle: Path) -> None:
    settings = make_settings(tiny_bundle, max_batch_size=32, max_wait_ms=200)
    bodies = [{"text": ARTICLE, "max_length": 4 if i % 2 else 6} for i in range(8)]
    with serving(settings) as client:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda body: client.post("/v1/explain", json=body), bodies))
        calls = client.app.state.service.batcher.model_calls
    assert all(r.status_code == 200 for r in responses)
    assert 2 <= calls < 8
    for body, response in zip(bodies, responses, strict=True):
        assert len(response.json()["summary_tokens"]) <= body["max_length"]


def run(coroutine):
    return asyncio.run(coroutine)


def test_batcher_waits_for_company_then_calls_once() -> None:
    calls: list[list[str]] = []

    def upper(texts: list[str], key) -> list[str]:
        calls.append(texts)
        return [text.upper() for text in texts]

    async def scenario() -> list[list[str]]:
        batcher = MicroBatcher(upper, max_batch_size=8, max_wait_ms=50, max_queue=100)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit([f"t{i}"], "k") for i in range(5)))
        await batcher.stop()
        return results

    assert run(scenario()) == [["T0"], ["T1"], ["T2"], ["T3"], ["T4"]]
    assert calls == [["t0", "t1", "t2", "t3", "t4"]]


def test_batcher_never_exceeds_max_batch_size() -> None:
    sizes: list[int] = []

    def record(texts: list[str], key) -> list[str]:
        sizes.append(len(texts))
        return texts

    async def scenario() -> None:
        batcher = MicroBatcher(record, max_batch_size=4, max_wait_ms=20, max_queue=100)
        batcher.start()
        await asyncio.gather(*(batcher.submit([str(i)], "k") for i in range(10)))
        await batcher.stop()

    run(scenario())
    assert sum(sizes) == 10 and max(sizes) == 4


def test_full_queue_refuses_with_queue_full() -> None:
    release = threading.Event()

    def blocked(texts: list[str], key) -> list[str]:
        release.wait(5)
        return texts

    async def scenario() -> None:
        batcher = MicroBatcher(blocked, max_batch_size=1, max_wait_ms=0, max_queue=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a"], "k"))
        await asyncio.sleep(0.05)  # "a" is in the model; the queue is empty again
        waiting = asyncio.ensure_future(batcher.submit(["b", "c"], "k"))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.submit(["d"], "k")
        release.set()
        assert await first == ["a"] and await waiting == ["b", "c"]
        await batcher.stop()

    run(scenario())


def test_model_error_fails_its_requests_and_the_worker_survives() -> None:
    def flaky(texts: list[str], key) -> list[str]:
        if "boom" in texts:
            raise RuntimeError("model exploded")
        return texts

    async def scenario() -> None:
        batcher = MicroBatcher(flaky, max_batch_size=1, max_wait_ms=0, max_queue=10)
        batcher.start()
        with pytest.raises(RuntimeError):
            await batcher.submit(["boom"], "k")
        assert await batcher.submit(["fine"], "k") == ["fine"]
        await batcher.stop()

    run(scenario())


def slow_model(client: TestClient, seconds: float) -> Callable[[], None]:
    """Make every model call of ``client``'s app take ``seconds`` longer; returns the undo."""
    batcher = client.app.state.service.batcher
    run_batch = batcher.run_batch

    def slow(texts, key):
        time.sleep(seconds)
        return run_batch(texts, key)

    batcher.run_batch = slow
    return lambda: setattr(batcher, "run_batch", run_batch)


def test_full_queue_is_503_with_retry_after(tiny_bundle: Path) -> None:
    settings = make_settings(tiny_bundle, max_batch_size=1, max_wait_ms=0, max_queue=1, retry_after_s=3)
    with serving(settings) as client:
        slow_model(client, 0.5)
        with ThreadPoolExecutor(4) as pool:
            responses = list(
                pool.map(lambda _: client.post("/v1/summarize", json={"text": ARTICLE}), range(4))
            )
        statuses = sorted(r.status_code for r in responses)
        assert statuses[0] == 200 and statuses[-1] == 503
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["retry-after"] == "3" and "retry later" in busy.json()["error"]
        assert client.post("/v1/summarize", json={"text": ARTICLE}).status_code == 200  # serving again


def test_slow_request_times_out_with_504(tiny_bundle: Path) -> None:
    with serving(make_settings(tiny_bundle, request_timeout_s=0.5)) as client:
        undo = slow_model(client, 1.5)
        response = client.post("/v1/summarize", json={"text": ARTICLE})
        assert response.status_code == 504 and "timed out after 0.5 s" in response.json()["error"]
        undo()
        time.sleep(1.2)  # the abandoned call finishes; its result is dropped
        client.app.state.service.settings.request_timeout_s = 60  # a loaded CI machine is slow
        assert client.post("/v1/summarize", json={"text": ARTICLE}).status_code == 200
