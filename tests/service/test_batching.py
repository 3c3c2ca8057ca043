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
from gatesum.service.batching import LONG, SHORT, ContinuousBatcher, Example, QueueFull, StepCost
from gatesum.service.metrics import Metrics
from gatesum.service.settings import Settings
from gatesum.service.state import BatchKey
from tests.service.helpers import ARTICLE, make_settings, serving

GREEDY = BatchKey(GenerationConfig(beam_size=1, max_length=256), explain=False)
CHEAP = StepCost(per_row=1e-4, per_row_token=0.0, per_char=0.0)


class FakeEngine:
    """Each text decodes for len(text) steps into text.upper(); ``boom`` fails the step. Texts
    of more than ``long_source`` characters run in the long lane, and are read in
    ``read_pieces`` pieces (as the content selector reads a long document), each logged as
    ("read", LONG); the selector reads len(text) tokens of them. Short texts are read together
    (``prepare_together``, logged in ``together``); "unreadable" fails to be read."""

    source_limit = 1000

    def __init__(self, cost: StepCost = CHEAP, step_seconds: float = 0.0, long_source: int = 1000,
                 long_step_seconds: float | None = None, prepare_seconds: float = 0.0,
                 read_pieces: int = 1) -> None:  # fmt: skip
        self.cost, self.long_source = cost, long_source
        self.piece_tokens = long_source  # a text the selector reads is read in one piece up to this
        self.step_seconds = (step_seconds, step_seconds if long_step_seconds is None else long_step_seconds)
        self.prepare_seconds = prepare_seconds  # to read a piece of a text of the long lane
        self.read_pieces = read_pieces
        self.reading: dict[Example, int] = {}  # pieces read of the texts read in pieces, until read
        self.running: dict[Example, int] = {}
        self.batches: list[list[str]] = []  # the texts in the stepped lane's batch at every step
        self.admitted: list[list[str]] = []  # the texts of every admit call
        self.log: list[tuple[str, int]] = []  # ("admit" | "step", lane), in order
        self.together: list[list[str]] = []  # the texts of every prepare_together call

    @property
    def rows(self) -> int:
        return sum(example.rows for example in self.running)

    def lane_rows(self, lane: int) -> int:
        return sum(example.rows for example in self.running if example.lane == lane)

    def selector_tokens(self, example: Example) -> float:
        return len(example.text) if len(example.text) > self.long_source else 0

    def prepare(self, example: Example) -> int | None:
        if example.text == "unreadable":
            raise ValueError("cannot tokenize")
        if len(example.text) > self.long_source:
            time.sleep(self.prepare_seconds)
            self.log.append(("read", LONG))
            pieces = self.reading.pop(example, 0) + 1
            if pieces < self.read_pieces:
                self.reading[example] = pieces
                example.selector_tokens = len(example.text) * (1 - pieces / self.read_pieces)
                return None
            example.selector_tokens = 0
        example.prepared = example.text
        return len(example.text)

    def prepare_together(self, examples: list[Example]) -> list[int | None]:
        self.together.append(sorted(example.text for example in examples))
        return [self.prepare(example) for example in examples]

    def admit(self, examples: list[Example]) -> None:
        self.log.append(("admit", examples[0].lane))
        self.admitted.append([example.text for example in examples])
        self.running.update((example, 0) for example in examples)

    def step(self, lane: int) -> list[tuple[Example, str, int]]:
        time.sleep(self.step_seconds[lane])
        self.log.append(("step", lane))
        running = [example for example in self.running if example.lane == lane]
        self.batches.append(sorted(example.text for example in running))
        if any(example.text == "boom" for example in running):
            raise RuntimeError("model exploded")
        finished = []
        for example in running:
            self.running[example] += 1
            if self.running[example] >= len(example.text):
                finished.append((example, example.text.upper(), self.running.pop(example)))
        return finished

    def cancel(self, examples: list[Example]) -> None:
        for example in examples:
            self.running.pop(example, None)
            self.reading.pop(example, None)


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


def test_a_short_request_does_not_wait_for_rows_that_long_ones_hold() -> None:
    """Long texts fill their lane's whole row budget for 400 steps; a short request still joins
    at the next step boundary, in its own lane."""
    engine = FakeEngine(step_seconds=0.001, long_source=50)

    async def scenario() -> None:
        batcher = make_batcher(engine, max_batch_rows=2, request_share=1.0)
        long = asyncio.ensure_future(results(batcher, ["x" * 400, "y" * 400]))
        while engine.lane_rows(LONG) < 2:
            await asyncio.sleep(0.001)
        joined = batcher.lane_steps[SHORT]
        assert await results(batcher, ["abc"]) == ["ABC"]
        assert batcher.lane_steps[SHORT] - joined == 3  # its own 3 steps, no wait for rows
        assert not long.done()
        assert await long == ["X" * 400, "Y" * 400]
        await batcher.stop()

    asyncio.run(scenario())


def long_steps_while_short_runs(log: list[tuple[str, int]], short_steps: int) -> int:
    """In the engine's log: the long lane's steps from the first short admission to the
    ``short_steps``-th short step after it."""
    start = log.index(("admit", SHORT))
    ends = [i for i, entry in enumerate(log) if i > start and entry == ("step", SHORT)]
    return log[start : ends[short_steps - 1]].count(("step", LONG))


def test_the_long_lane_takes_at_most_its_share_while_short_work_runs() -> None:
    """A long step costs 10 short ones: stepped at every iteration, it would make a short
    request ~11 times slower; within LONG_SHARE (1/4) of the time it steps about once per 30
    short steps (2 here, ≤ 10 on a machine where sleeps overshoot)."""
    engine = FakeEngine(step_seconds=0.002, long_step_seconds=0.02, long_source=80)

    async def scenario() -> None:
        batcher = make_batcher(engine)
        long = asyncio.ensure_future(results(batcher, ["x" * 400]))
        while not engine.lane_rows(LONG):
            await asyncio.sleep(0.001)
        assert await results(batcher, ["s" * 60]) == ["S" * 60]
        long.cancel()
        await batcher.stop()

    asyncio.run(scenario())
    assert long_steps_while_short_runs(engine.log, 60) <= 10


def test_short_requests_make_progress_while_long_texts_are_prepared() -> None:
    """Eight long texts take 30 ms each to tokenize (one per long turn, prepare_chars); a short
    request sent beside them runs its 20 steps while at most a few of them are prepared, and
    the long request is not starved: it is answered in full."""
    engine = FakeEngine(step_seconds=0.002, long_source=50, prepare_seconds=0.03)
    texts = [f"{i}" * 400 for i in range(8)]  # long by their characters already (~100 tokens)

    async def scenario() -> None:
        batcher = make_batcher(engine, prepare_chars=100)
        long = asyncio.ensure_future(results(batcher, texts))
        while not engine.lane_rows(LONG):
            await asyncio.sleep(0.001)
        assert await results(batcher, ["s" * 20]) == ["S" * 20]
        assert engine.log.count(("admit", LONG)) < 8, engine.log
        assert await long == [text.upper() for text in texts]
        await batcher.stop()

    asyncio.run(scenario())
    start = engine.log.index(("admit", SHORT))
    end = [i for i, entry in enumerate(engine.log) if entry == ("step", SHORT)][19]
    assert engine.log[start:end].count(("admit", LONG)) <= 3  # a long prepare costs 45 short steps


def test_short_requests_make_progress_while_a_long_text_is_read_in_pieces() -> None:
    """The content selector reads a long text in 40 pieces of 20 ms (one block of 0.8 s before);
    a short request sent meanwhile runs its 20 steps (no sleep) between a few of them, within
    the long lane's share, and the long text is then read to its end and answered."""
    engine = FakeEngine(long_source=50, prepare_seconds=0.02, read_pieces=40)

    async def scenario() -> None:
        batcher = make_batcher(engine)
        long = asyncio.ensure_future(results(batcher, ["x" * 400]))
        while engine.log.count(("read", LONG)) < 2:
            await asyncio.sleep(0.001)
        assert await results(batcher, ["s" * 20]) == ["S" * 20]
        assert not long.done() and engine.reading  # the short one did not wait for the reading
        assert await long == ["X" * 400]
        await batcher.stop()

    asyncio.run(scenario())
    assert engine.log.count(("read", LONG)) == 40 and not engine.reading
    start = engine.log.index(("admit", SHORT))
    end = [i for i, entry in enumerate(engine.log) if entry == ("step", SHORT)][19]
    assert engine.log[start:end].count(("read", LONG)) <= 3  # a piece costs 3 pieces' worth of short steps


def test_a_cancelled_request_stops_its_reading() -> None:
    """A client gone while its long text is read in pieces: no piece is read after the next
    iteration, and the engine drops what it had read."""
    engine = FakeEngine(long_source=50, prepare_seconds=0.002, read_pieces=1000)

    async def scenario() -> None:
        batcher = make_batcher(engine)
        request = batcher.submit(["x" * 400], GREEDY)
        while engine.log.count(("read", LONG)) < 3:
            await asyncio.sleep(0.001)
        request.cancel("disconnect")
        deadline = time.monotonic() + 2
        while engine.reading and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        assert not engine.reading and batcher.depth == 0
        read = engine.log.count(("read", LONG))
        assert await results(batcher, ["ok"]) == ["OK"]
        assert engine.log.count(("read", LONG)) == read < 1000
        assert batcher.metrics.cancelled.labels("disconnect")._value.get() == 1
        await batcher.stop()

    asyncio.run(scenario())


def test_waiting_requests_of_one_setting_are_encoded_together() -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        batcher = make_batcher(engine, max_wait_ms=300)  # time for all of them to arrive
        other = BatchKey(GenerationConfig(beam_size=2, max_length=256), explain=False)
        requests = [batcher.submit([f"t{i}"], GREEDY) for i in range(5)] + [batcher.submit(["u"], other)]
        assert [await request.future for request in requests] == [
            ["T0"],
            ["T1"],
            ["T2"],
            ["T3"],
            ["T4"],
            ["U"],
        ]
        await batcher.stop()

    asyncio.run(scenario())
    assert sorted(map(sorted, engine.admitted)) == [
        ["t0", "t1", "t2", "t3", "t4"],
        ["u"],
    ]  # one call per setting


def test_waiting_short_texts_are_read_together_whatever_their_setting() -> None:
    """One ``prepare_together`` for the six short texts (one selector pass, where the model has
    one); the long text is read on its own, in its lane."""
    engine = FakeEngine(long_source=50)

    async def scenario() -> None:
        batcher = make_batcher(engine, max_wait_ms=300)
        other = BatchKey(GenerationConfig(beam_size=2, max_length=256), explain=False)
        requests = [batcher.submit([f"t{i}"], GREEDY) for i in range(5)] + [batcher.submit(["u"], other)]
        long = batcher.submit(["x" * 60], GREEDY)
        answers = [await request.future for request in requests]
        assert answers == [["T0"], ["T1"], ["T2"], ["T3"], ["T4"], ["U"]]
        assert await long.future == ["X" * 60]
        await batcher.stop()

    asyncio.run(scenario())
    assert engine.together == [["t0", "t1", "t2", "t3", "t4", "u"]]
    assert engine.log.count(("read", LONG)) == 1


def test_a_text_that_cannot_be_read_fails_its_request_alone() -> None:
    """Read together, one text fails: the texts are read again one by one, and only the
    request whose text fails gets the error."""
    engine = FakeEngine()

    async def scenario() -> None:
        batcher = make_batcher(engine, max_wait_ms=300)
        bad, good = batcher.submit(["unreadable"], GREEDY), batcher.submit(["fine", "also"], GREEDY)
        with pytest.raises(ValueError, match="cannot tokenize"):
            await bad.future
        assert await good.future == ["FINE", "ALSO"]
        await batcher.stop()

    asyncio.run(scenario())
    assert engine.together == [["also", "fine", "unreadable"]]


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
        # admission judges by the cost measured at start-up: pinned, so a loaded machine's slow
        # calibration cannot refuse these requests (429) before they run
        batcher.engine.cost = CHEAP
        engine_step = batcher.engine.step
        batcher.engine.step = lambda lane: time.sleep(0.05) or engine_step(lane)  # 200 steps: ~10 s
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
