"""Continuous batching: requests join and leave the running batch at step boundaries, a short
request beside a long one finishes in its own steps, one request holds at most its share, and a
request that times out stops costing model time. The scheduler is driven by a fake engine (one
step per character of a text) where the model would only slow the test down."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gatesum.model.search import GenerationConfig
from gatesum.service.batching import ContinuousBatcher, Example, QueueFull, StepCost
from gatesum.service.metrics import Metrics
from gatesum.service.settings import Settings
from gatesum.service.state import BatchKey
from tests.service.helpers import ARTICLE, make_settings, serving

GREEDY = BatchKey(GenerationConfig(beam_size=1, max_length=256), explain=False)
CHEAP = StepCost(per_row=1e-4, per_row_token=0.0, per_char=0.0)


class FakeEngine:
    """Each text decodes for len(text) steps into text.upper(); ``boom`` fails the step."""

    source_limit = 1000

    def __init__(self, cost: StepCost = CHEAP, step_seconds: float = 0.0) -> None:
        self.cost, self.step_seconds = cost, step_seconds
        self.running: dict[Example, int] = {}
        self.batches: list[list[str]] = []  # the texts in the batch at every step

    @property
    def rows(self) -> int:
        return sum(example.rows for example in self.running)

    def prepare(self, example: Example) -> int:
        example.prepared = example.text
        return len(example.text)

    def admit(self, examples: list[Example]) -> None:
        self.running.update((example, 0) for example in examples)

    def step(self) -> list[tuple[Example, str, int]]:
        time.sleep(self.step_seconds)
        self.batches.append(sorted(example.text for example in self.running))
        if any(example.text == "boom" for example in self.running):
            raise RuntimeError("model exploded")
        finished = []
        for example in list(self.running):
            self.running[example] += 1
            if self.running[example] >= len(example.text):
                finished.append((example, example.text.upper(), self.running.pop(example)))
        return finished

    def cancel(self, examples: list[Example]) -> None:
        for example in examples:
            self.running.pop(example, None)


def make_batcher(engine: FakeEngine, **overrides) -> ContinuousBatcher:
    values = {"max_wait_ms": 0, "request_timeout_s": 60, **overrides}
    batcher = ContinuousBatcher(Settings(**values), Metrics())
    batcher.start()
    batcher.attach(engine)
    return batcher


async def results(batcher: ContinuousBatcher, texts: list[str], key=GREEDY, client: str = "") -> list:
    return await batcher.submit(texts, key, client).future


def test_a_short_request_joins_a_long_one_and_leaves_before_it() -> None:
    engine = FakeEngine(step_seconds=0.002)

    async def scenario() -> None:
        batcher = make_batcher(engine)
        long = asyncio.ensure_future(results(batcher, ["x" * 200]))
        while not engine.running:
            await asyncio.sleep(0.001)
        joined = batcher.iterations
        assert await results(batcher, ["abc"]) == ["ABC"]
        assert batcher.iterations - joined <= 5  # its own 3 steps (+ the step boundary it waited for)
        assert not long.done()
        assert await long == ["X" * 200]
        await batcher.stop()

    asyncio.run(scenario())
    assert ["abc", "x" * 200] in engine.batches  # one step ran both


def test_one_request_holds_at_most_its_share_of_the_batch() -> None:
    engine = FakeEngine(step_seconds=0.001)

    async def scenario() -> None:
        batcher = make_batcher(engine, max_batch_size=4, request_share=0.5)
        big = asyncio.ensure_future(results(batcher, [f"{i}" * 20 for i in range(8)], client="a"))
        await asyncio.sleep(0.02)
        small = await results(batcher, ["yy", "zz"], client="b")
        assert small == ["YY", "ZZ"] and not big.done()
        assert len(await big) == 8
        await batcher.stop()

    asyncio.run(scenario())
    assert max(len(texts) for texts in engine.batches) <= 4
    assert all(sum(text[0].isdigit() for text in texts) <= 2 for texts in engine.batches)  # half of 4


def test_a_cancelled_request_leaves_the_batch_at_the_next_step() -> None:
    engine = FakeEngine(step_seconds=0.002)

    async def scenario() -> None:
        batcher = make_batcher(engine)
        request = batcher.submit(["x" * 10_000], GREEDY)
        while not engine.running:
            await asyncio.sleep(0.001)
        request.cancel("timeout")
        deadline = time.monotonic() + 2
        while engine.running and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        assert not engine.running and batcher.depth == 0
        assert await results(batcher, ["ok"]) == ["OK"]
        assert batcher.metrics.cancelled.labels("timeout")._value.get() == 1
        await batcher.stop()

    asyncio.run(scenario())


def test_a_model_error_fails_its_requests_and_the_scheduler_survives() -> None:
    async def scenario() -> None:
        batcher = make_batcher(FakeEngine())
        with pytest.raises(RuntimeError, match="exploded"):
            await results(batcher, ["boom"])
        assert await results(batcher, ["fine"]) == ["FINE"]
        await batcher.stop()

    asyncio.run(scenario())


def test_more_texts_than_the_queue_holds_are_refused() -> None:
    async def scenario() -> None:
        engine = FakeEngine(step_seconds=0.01)
        batcher = make_batcher(engine, max_queue=2, max_batch_size=1)
        first = batcher.submit(["a" * 50], GREEDY)
        while not engine.running:
            await asyncio.sleep(0.001)
        waiting = batcher.submit(["b", "c"], GREEDY)
        with pytest.raises(QueueFull):
            batcher.submit(["d"], GREEDY)
        assert await first.future == ["A" * 50] and await waiting.future == ["B", "C"]
        await batcher.stop()

    asyncio.run(scenario())


def test_32_simultaneous_requests_share_decoder_steps(tiny_bundle: Path) -> None:
    settings = make_settings(tiny_bundle, max_batch_size=32, max_wait_ms=200)
    texts = [f"{ARTICLE} Story number {i}." for i in range(32)]
    with serving(settings) as client:
        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(lambda text: client.post("/v1/summarize", json={"text": text}), texts))
        steps = client.app.state.service.batcher.iterations
        alone = [client.post("/v1/summarize", json={"text": text}).json() for text in texts[:3]]
    assert [r.status_code for r in responses] == [200] * 32
    assert steps < 32 * 8 / 4, f"32 requests of ≤ 8 steps each took {steps} decoder steps"
    # batched or alone, a text gets the same summary
    assert [r.json()["summary"] for r in responses[:3]] == [a["summary"] for a in alone]


def test_requests_with_different_settings_share_decoder_steps(tiny_bundle: Path) -> None:
    settings = make_settings(tiny_bundle, max_batch_size=32, max_wait_ms=200)
    bodies = [{"text": ARTICLE, "max_length": 4 if i % 2 else 6, "beam_size": 1 + i % 3} for i in range(8)]
    with serving(settings) as client:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda body: client.post("/v1/explain", json=body), bodies))
        steps = client.app.state.service.batcher.iterations
    assert all(r.status_code == 200 for r in responses)
    assert steps < 4 * 6  # they ran side by side
    for body, response in zip(bodies, responses, strict=True):
        assert len(response.json()["summary_tokens"]) <= body["max_length"]


def test_a_request_past_the_timeout_is_504_and_its_work_stops(tiny_bundle: Path) -> None:
    with serving(make_settings(tiny_bundle, request_timeout_s=0.5, max_length=200)) as client:
        batcher = client.app.state.service.batcher
        engine_step = batcher.engine.step
        batcher.engine.step = lambda: time.sleep(0.05) or engine_step()  # 200 steps: ~10 s
        response = client.post("/v1/summarize", json={"text": ARTICLE * 4, "min_length": 200})
        assert response.status_code == 504 and "timed out after 0.5 s" in response.json()["error"]
        deadline = time.monotonic() + 2
        while batcher.engine.rows and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.engine.rows == 0  # the work stopped at a step boundary
        batcher.engine.step = engine_step
        client.app.state.service.settings.request_timeout_s = 60  # a loaded CI machine is slow
        started = time.monotonic()
        assert client.post("/v1/summarize", json={"text": ARTICLE, "max_length": 8}).status_code == 200
        assert time.monotonic() - started < 5  # it did not wait for the abandoned one (~10 s)
        metrics = client.get("/metrics").text
    assert 'gatesum_cancelled_total{reason="timeout"} 1.0' in metrics
    assert 'gatesum_requests_total{route="/v1/summarize",status="504"} 1.0' in metrics
