"""``ContinuousBatcher``: iteration-level batching of the model on one scheduler thread, with
admission bounded by cost and cancellation (issue #16).

    request ─► admission (estimated cost; refused at once: 429 over a share, 503 past the timeout)
            ─► waiting examples (one per text) ─► scheduler thread, every iteration:
                   drop what was cancelled (timeout, client gone), its reading included
                   · short lane: admit waiting examples (cheapest request first, one encoder call
                     per search setting), one decoder step for its rows
                   · long lane, on its turn: the same for texts of more than ``long_source`` tokens;
                     a text the engine reads in pieces (the content selector's pass over a long
                     document) gets one piece per turn
                   · deliver what finished

As LLM servers do it (Orca, Yu et al. 2022; vLLM): a request joins the running batch at the next
step boundary and leaves it at its own last token, so a short request beside a long one waits
one step, not the long one's whole decode. One request holds at most ``request_share`` of its
lane's batch, so that others always find room.

Two lanes, each its own running batch within the row and text budgets (``max_batch_rows``,
``max_batch_size``): short sources and long ones (``Engine.long_source``). A short request
therefore never waits for rows that long requests hold, and while short work runs, the long
lane's prefill (tokenizing, encoding) and steps get at most ``LONG_SHARE`` of the model time
(deficit round robin on measured seconds; Sarathi-Serve bounds a decode iteration's prefill the
same way): a short request's steps come at most 1 / (1 − ``LONG_SHARE``) times slower beside the
largest requests than alone. With no short work, the long lane runs every iteration.

Reading a text is part of its lane's turn too. Where the engine reads a text in pieces
(``Engine.prepare`` returns None until it is done: the content selector's pass over a document
of up to 100,000 characters takes seconds), a lane reads one text at a time and one piece per
turn, the piece's seconds count against the long lane's share like its steps, and a cancelled
request's reading stops at the next iteration (``Engine.cancel``).

Cost of one text, in seconds of model time at full batch: K · L · (α + β · S) + γ · chars + δ · R,
for beam K, at most L = min(max_length, S) + 1 steps, S source tokens (guessed from the
characters until the text is tokenized), R the tokens the content selector still has to read of
it (0 where it does not run: ``Engine.selector_tokens``); α, β, γ, δ come from the engine's
calibration, and two running averages correct them: the steps texts really take (most end
before L) and the step time the machine really gives (others share it). A request waits behind
the others roughly as under processor sharing: it is done after c + Σ_j min(c_j, c) seconds, c_j
the work left of request j.

The model side is an ``Engine`` (service/state.py wraps model/running.py in one); tests drive
the scheduler with a fake one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from gatesum.model.search import GenerationConfig
from gatesum.service.metrics import Metrics

log = logging.getLogger("gatesum.service")
CHARS_PER_TOKEN = 4.0  # a guess of S before tokenizing (English, our vocabulary: ~4.5)
HEADROOM = 0.9  # admit what is estimated to finish within this part of the request timeout
SHORT, LONG = 0, 1  # the lanes: sources of at most / more than ``Engine.long_source`` tokens
LONG_SHARE = 0.25  # the most model time the long lane takes while short work runs
LONG_CREDIT_S = 0.5  # the most model time the long lane may bank while it cannot use it


class QueueFull(Exception):
    """More texts are waiting than the queue holds; the client should retry later."""


class BatcherStopped(Exception):
    """The service is shutting down."""


class Refused(Exception):
    """Admission refused a request at once: ``status`` 429 (over a share) or 503 (the work
    queued would not let it finish in time); ``retry_after`` seconds, or None when waiting
    cannot help (a request over the ceiling)."""

    def __init__(self, status: int, reason: str, message: str, retry_after: int | None) -> None:
        super().__init__(message)
        self.status, self.reason, self.retry_after = status, reason, retry_after


@dataclass(frozen=True)
class StepCost:
    """Model time per decoder row and step: ``per_row`` + ``per_row_token`` · S, ``per_char``
    to tokenize and encode a text, and ``per_selector_token`` per token the content selector
    reads (α, β, γ, δ above), in seconds."""

    per_row: float
    per_row_token: float
    per_char: float
    per_selector_token: float = 0.0


@dataclass(eq=False)
class Example:
    """One text of a request, as the scheduler and the engine see it."""

    request: Request
    index: int  # position in the request
    text: str
    rows: int  # K: beams
    tokens: int  # S: source tokens read (a guess until prepared)
    selector_tokens: float = 0.0  # R: tokens the selector has still to read (a guess until tokenized)
    prepared: Any = None  # what the engine made of the text (token ids...), None until then
    lane: int = SHORT  # set when it joins the batch: LONG past ``Engine.long_source`` tokens
    admitted_at: int | None = None  # its lane's steps run when it joined the batch
    done: bool = False


@dataclass(eq=False)
class Request:
    texts: list[str]
    key: Any  # carries ``generation`` (a GenerationConfig); one search setting per request
    client: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)
    examples: list[Example] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    cancelled: str | None = None  # why: "timeout", "disconnect"...

    def cancel(self, reason: str) -> None:
        """Stop costing model time: the scheduler drops its texts at the next step boundary."""
        if self.cancelled is None and not self.future.done():
            self.cancelled = reason


class Engine(Protocol):
    """The model side of the scheduler: one running batch per lane; every method runs on the
    scheduler thread."""

    source_limit: int  # the most source tokens the model reads of a text
    long_source: int  # texts of more source tokens decode in the LONG lane
    piece_tokens: int  # the most tokens of the selector's pass one ``prepare`` reads
    cost: StepCost

    @property
    def rows(self) -> int:
        """Rows in every lane's batch."""

    def lane_rows(self, lane: int) -> int: ...

    def selector_tokens(self, example: Example) -> float:
        """R: the tokens the content selector will read of ``example.text`` (guessed from its
        characters), 0 where it does not run."""

    def prepare(self, example: Example) -> int | None:
        """Read ``example.text`` into ``example.prepared``; returns the tokens read (S), or None
        when it reads the text in pieces and more are left: then it holds the work done, keeps
        ``example.selector_tokens`` up to date, and the next call reads the next piece."""

    def prepare_together(self, examples: list[Example]) -> list[int | None]:
        """``prepare`` for several texts at once (one selector pass for them all) where each is
        read in one piece; None for a text that is not: ``prepare`` reads it later."""

    def admit(self, examples: list[Example]) -> None:
        """Encode these prepared examples (one search setting, one ``lane``) and add them to
        their lane's running batch."""

    def step(self, lane: int) -> list[tuple[Example, Any, int]]:
        """One decoder step of ``lane``'s batch; the examples it finished, each with its result
        and steps taken."""

    def cancel(self, examples: list[Example]) -> None:
        """Drop these running examples, and the reading of those it reads in pieces, now."""


class ContinuousBatcher:
    def __init__(self, settings: Any, metrics: Metrics | None = None) -> None:
        """``settings``: the service's Settings (batch, share, ceiling and timeout fields)."""
        self.settings = settings
        self.metrics = metrics
        self.engine: Engine | None = None
        self.iterations = 0  # scheduler iterations that ran a decoder step; read by tests
        self.lane_steps = [0, 0]  # decoder steps run per lane (SHORT, LONG)
        self.long_debt = 0.0  # seconds of model time the long lane has taken beyond its share
        self.fill = 1.0  # running average: steps texts take / their bound L
        self.slowdown = 1.0  # running average: measured step time / the cost model's
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._requests: list[Request] = []  # admitted and not yet answered, oldest first
        self._running: dict[Example, None] = {}  # examples in the engine's batch
        self._reading: list[Example | None] = [None, None]  # per lane: the text read in pieces
        self._thread: threading.Thread | None = None
        self._stopping = False

    # --- the event loop's side -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="gatesum-scheduler", daemon=True)
        self._thread.start()

    def attach(self, engine: Engine) -> None:
        """The loaded model: the scheduler serves from here on."""
        with self._lock:
            self.engine = engine
            self._wake.notify()

    async def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        for request in self._requests:
            _resolve(request, BatcherStopped("the service is shutting down"))
        self._requests.clear()

    @property
    def depth(self) -> int:
        """Texts waiting to join the running batch."""
        return sum(1 for request in self._requests for example in request.examples
                   if example.admitted_at is None and not example.done)  # fmt: skip

    def submit(self, texts: list[str], key: Any, client: str = "") -> Request:
        """Queue ``texts`` (one search setting, ``key.generation``) or refuse them at once:
        QueueFull past ``max_queue`` texts, ``Refused`` past a share or the timeout. Await
        ``request.future`` for the results in order; ``request.cancel`` stops the work."""
        loop = asyncio.get_running_loop()
        request = Request(list(texts), key, client, loop, loop.create_future())
        generation: GenerationConfig = key.generation
        limit = self.engine.source_limit
        for index, text in enumerate(texts):
            guess = min(limit, max(1, math.ceil(len(text) / CHARS_PER_TOKEN)))
            example = Example(request, index, text, generation.beam_size, guess)
            example.selector_tokens = self.engine.selector_tokens(example)
            request.examples.append(example)
        request.results = [None] * len(texts)
        with self._lock:
            self._admit_or_refuse(request)
            self._requests.append(request)
            self._wake.notify()
        self._observe_depth()
        return request

    def _admit_or_refuse(self, request: Request) -> None:
        settings = self.settings
        if self.depth + len(request.texts) > settings.max_queue:
            raise QueueFull(f"{self.depth} texts are waiting (the queue holds {settings.max_queue})")
        row_steps = sum(example.rows * self._bound(example) for example in request.examples)
        if row_steps > settings.max_request_row_steps:
            raise Refused(429, "over_ceiling", f"the request costs {row_steps:,} row-steps (texts × beam × "
                          f"(max_length + 1)), over the ceiling of {settings.max_request_row_steps:,}; send "
                          "fewer texts or a smaller beam_size or max_length", None)  # fmt: skip
        cost = self._remaining(request)
        share = settings.request_share * settings.request_timeout_s
        if cost > share:
            raise Refused(429, "over_share", f"the request needs ~{cost:.0f} s of model time, more than one "
                          f"client's share ({share:.0f} s); send fewer texts or a smaller beam_size or "
                          "max_length", None)  # fmt: skip
        mine = sum(self._remaining(other) for other in self._requests if other.client == request.client)
        if mine + cost > share:
            raise Refused(429, "over_share", f"this client already has ~{mine:.0f} s of model time queued "
                          f"(its share is {share:.0f} s); retry later", math.ceil(mine))  # fmt: skip
        finish = cost + sum(min(self._remaining(other), cost) for other in self._requests)
        allowed = HEADROOM * settings.request_timeout_s
        if finish > allowed:
            raise Refused(503, "overloaded", f"busy: ~{finish:.0f} s of model time would pass before this "
                          f"request is done, over the {settings.request_timeout_s:g} s timeout; retry later",
                          math.ceil(finish - allowed))  # fmt: skip

    def _bound(self, example: Example) -> int:
        """L: the most decoder steps ``example`` can take."""
        return min(example.request.key.generation.max_length, example.tokens) + 1

    def _remaining(self, request: Request) -> float:
        """Estimated seconds of model time the request still needs."""
        cost = self.engine.cost
        seconds = 0.0
        for example in request.examples:
            if example.done:
                continue
            steps = self.fill * self._bound(example)
            if example.admitted_at is not None:
                steps = max(0.0, steps - (self.lane_steps[example.lane] - example.admitted_at))
            else:  # still to read: tokenizing, encoding and the selector's pass, where it runs
                seconds += cost.per_char * len(example.text)
                seconds += cost.per_selector_token * example.selector_tokens
            seconds += example.rows * steps * (cost.per_row + cost.per_row_token * example.tokens)
        return seconds * self.slowdown

    # --- the scheduler thread ----------------------------------------------------------------

    def _serve(self) -> None:
        """The scheduler: one iteration per decoder step, until ``stop``."""
        while True:
            with self._lock:
                while not self._stopping and not self._ready():
                    self._wake.wait(self._idle_wait())
                if self._stopping:
                    return
                dropped = self._drop_cancelled()
            try:
                if dropped:
                    self.engine.cancel(dropped)
                self._iterate()
            except Exception as error:  # the model failed: its requests get a 500, serving goes on
                log.exception("the model failed; its requests are answered with an error")
                self._fail_running(error)

    def _iterate(self) -> None:
        """The short lane's admissions and step, then the long lane's on its turn: while both
        lanes have work, the long one takes at most ``LONG_SHARE`` of the seconds they spend."""
        long_turn = self.long_debt <= 0 or not self._has_work(SHORT)
        stepped = False
        for lane in (SHORT, LONG) if long_turn else (SHORT,):
            started = time.perf_counter()
            self._admit(lane)
            if self.metrics is not None:  # tokenizing, the selector's pieces and encoding
                self.metrics.reading_seconds.inc(time.perf_counter() - started)
            stepped = self._step(lane) or stepped
            seconds = time.perf_counter() - started
            if lane == LONG:
                self.long_debt += seconds
            else:
                self.long_debt -= seconds * LONG_SHARE / (1 - LONG_SHARE)
        if not (self._has_work(SHORT) and self._has_work(LONG)):
            self.long_debt = 0.0  # the share applies while both lanes have work, nothing is banked
        self.long_debt = max(self.long_debt, -LONG_CREDIT_S)
        self.iterations += stepped

    def _has_work(self, lane: int) -> bool:
        """Whether ``lane`` has rows in its batch or examples waiting to join it."""
        if self.engine.lane_rows(lane):
            return True
        with self._lock:
            requests = [request for request in self._requests if not request.cancelled]
        return any(self._next_waiting(request, lane) is not None for request in requests)

    def _lane(self, example: Example) -> int:
        """LONG for a text of more than the engine's ``long_source`` tokens (read, or guessed
        from its characters until it is tokenized)."""
        return LONG if example.tokens > self.engine.long_source else SHORT

    def _ready(self) -> bool:
        """Whether an iteration has something to do now."""
        if self.engine is None:
            return False
        if self._running or any(request.cancelled for request in self._requests):
            return True
        waiting = [request for request in self._requests if not request.cancelled]
        if not waiting:
            return False
        # an idle batch lets the first text wait up to max_wait_ms for company
        texts = sum(len(request.texts) for request in waiting)
        company = time.monotonic() - waiting[0].arrived >= self.settings.max_wait_ms / 1000
        return company or texts >= self.settings.max_batch_size

    def _idle_wait(self) -> float | None:
        waiting = [request for request in self._requests if not request.cancelled]
        if self.engine is None or not waiting:
            return None
        return max(0.0, waiting[0].arrived + self.settings.max_wait_ms / 1000 - time.monotonic())

    def _drop_cancelled(self) -> list[Example]:
        """Forget cancelled requests (under the lock); returns their examples that the engine
        holds: in the batch, or being read in pieces."""
        running = []
        for request in [request for request in self._requests if request.cancelled]:
            self._requests.remove(request)
            running += self._held(request)
            for example in request.examples:
                example.done = True
            if self.metrics is not None:
                self.metrics.cancelled.labels(request.cancelled).inc()
            request.loop.call_soon_threadsafe(request.future.cancel)
        return running

    def _admit(self, lane: int) -> None:
        """Move ``lane``'s waiting examples into its batch: the request holding the fewest rows
        first, within the lane's row and text budgets, one request's share, and the tokenize and
        encode budgets; the examples of one search setting are encoded in one call. A text read
        in pieces comes first and gets one piece; no other text starts reading meanwhile."""
        settings, engine = self.settings, self.engine
        with self._lock:
            requests = [request for request in self._requests if not request.cancelled]
        rows = engine.lane_rows(lane)
        running = [example for example in self._running if example.lane == lane]
        texts = len(running)
        held = {request: [0, 0] for request in requests}  # rows, texts in the lane's batch
        for example in running:
            if example.request in held:
                held[example.request][0] += example.rows
                held[example.request][1] += 1
        tokens = 0
        pieced = False  # whether a text read in pieces has had its piece this turn
        chosen: dict[Any, list[Example]] = {}  # search setting (request.key) -> examples
        candidates = [request for request in requests if self._next_waiting(request, lane) is not None]

        def order(request: Request) -> tuple[bool, int, float]:
            reading = self._reading[lane]
            return reading is None or reading.request is not request, held[request][0], request.arrived

        chars = self._read_ahead(lane, sorted(candidates, key=order), settings.max_batch_size - texts)
        while candidates and texts < settings.max_batch_size:
            request = min(candidates, key=order)
            example = self._next_waiting(request, lane)
            if example is None or not self._fits(example, held[request], rows):
                candidates.remove(request)
                continue
            unread = example.prepared is None
            if chosen and ((unread and chars >= settings.prepare_chars) or tokens >= settings.encode_tokens):
                break  # the rest joins at the next step: short requests keep moving meanwhile
            if example.prepared is None:
                reading = self._reading[lane]
                if pieced or (reading is not None and reading is not example):
                    candidates.remove(request)  # one text is read in pieces at a time, a piece a turn
                    continue
                chars += len(example.text) if reading is None else 0
                pieced = reading is example
                try:
                    read = engine.prepare(example)
                except Exception as error:  # this request's text failed to tokenize: a 500 for it alone
                    log.exception("tokenizing a request failed")
                    for examples in chosen.values():
                        examples[:] = [other for other in examples if other.request is not request]
                    candidates.remove(request)
                    self._fail(request, error)
                    continue
                if read is None:  # more pieces to read: the next one at this lane's next turn
                    self._reading[lane], pieced = example, True
                    candidates.remove(request)
                    continue
                self._reading[lane], example.tokens = None, read
                if self._lane(example) != lane:
                    continue  # its guessed length was wrong: it joins on its own lane's turn
            tokens += example.tokens
            example.lane, example.admitted_at = lane, self.lane_steps[lane]
            chosen.setdefault(request.key, []).append(example)
            held[request][0] += example.rows
            held[request][1] += 1
            rows += example.rows
            texts += 1
        for examples in chosen.values():
            if not examples:
                continue
            try:
                engine.admit(examples)
            except Exception as error:  # these texts failed to encode: a 500 for their requests alone
                log.exception("encoding a request failed")
                for request in dict.fromkeys(example.request for example in examples):
                    self._fail(request, error)
                continue
            for example in examples:
                self._running[example] = None

    def _read_ahead(self, lane: int, requests: list[Request], slots: int) -> int:
        """Read at once (``Engine.prepare_together``: one selector pass for them all) the waiting
        texts of ``lane`` that this turn may admit, in admission order, up to ``slots`` texts and
        the tokenize budget, where each is guessed to be one piece; returns the characters read.
        A failure leaves them unread: ``_admit`` reads them one by one and fails only the request
        whose text fails."""
        engine, ahead, chars = self.engine, [], 0
        for request in requests:
            for example in request.examples:
                if len(ahead) >= slots or chars >= self.settings.prepare_chars:
                    break
                waiting = example.admitted_at is None and not example.done and example.prepared is None
                if (not waiting or self._lane(example) != lane or example is self._reading[lane]
                        or example.selector_tokens > engine.piece_tokens):  # fmt: skip
                    continue
                ahead.append(example)
                chars += len(example.text)
        if len(ahead) < 2:
            return 0  # one text alone is read by ``prepare`` as before
        try:
            read = engine.prepare_together(ahead)
        except Exception:
            log.exception("reading texts together failed; they are read one by one")
            return 0
        for example, tokens in zip(ahead, read, strict=True):
            if tokens is not None:
                example.tokens = tokens
        return chars

    def _fits(self, example: Example, held: list[int], rows: int) -> bool:
        """Whether ``example`` may join a batch of ``rows`` rows, its request holding ``held``
        (rows, texts): within the row budget and the request's share (a request holding nothing
        always may, so that every request moves)."""
        settings = self.settings
        if rows and rows + example.rows > settings.max_batch_rows:
            return False
        if not held[1]:
            return True
        share_rows = settings.request_share * settings.max_batch_rows
        share_texts = settings.request_share * settings.max_batch_size
        return held[0] + example.rows <= share_rows and held[1] + 1 <= max(1, share_texts)

    def _next_waiting(self, request: Request, lane: int) -> Example | None:
        for example in request.examples:
            if example.admitted_at is None and not example.done and self._lane(example) == lane:
                return example
        return None

    def _step(self, lane: int) -> bool:
        """One decoder step of ``lane``'s batch, if it has rows; delivers what finished."""
        engine = self.engine
        if not engine.lane_rows(lane):
            return False
        running = [example for example in self._running if example.lane == lane]
        predicted = sum(example.rows * (engine.cost.per_row + engine.cost.per_row_token * example.tokens)
                        for example in running)  # fmt: skip
        started = time.perf_counter()
        finished = engine.step(lane)
        seconds = time.perf_counter() - started
        self.lane_steps[lane] += 1
        if engine.lane_rows(lane) + len(finished) >= self.settings.max_batch_rows // 4 and predicted > 0:
            # the machine's speed now, measured where batching is effective (slow steps of a
            # near-empty batch would make admission too careful for the next burst)
            self.slowdown = 0.9 * self.slowdown + 0.1 * min(20.0, max(0.2, seconds / predicted))
        if self.metrics is not None:
            self.metrics.observe_model_call(len(running), seconds)
            self.metrics.model_seconds.inc(seconds)
        for example, result, steps in finished:
            self.fill = 0.95 * self.fill + 0.05 * min(1.0, steps / self._bound(example))
            self._running.pop(example, None)
            example.done = True
            request = example.request
            if request.cancelled:
                continue
            request.results[example.index] = result
            if all(other.done for other in request.examples):
                self._finish(request, request.results)
        if self.metrics is not None:
            self.metrics.running_rows.set(engine.rows)
            self.metrics.queue_depth.set(self.depth)
        return True

    def _finish(self, request: Request, outcome: Any) -> None:
        with self._lock:
            if request in self._requests:
                self._requests.remove(request)
            for example in request.examples:
                example.done = True
                self._running.pop(example, None)
        _resolve(request, outcome)

    def _fail(self, request: Request, error: Exception) -> None:
        """``request`` fails alone: its examples already in the batch leave it, its reading
        stops, it gets ``error``."""
        if held := self._held(request):
            self.engine.cancel(held)
        self._finish(request, error)

    def _held(self, request: Request) -> list[Example]:
        """``request``'s examples in the batch or being read in pieces, which the scheduler
        forgets here: the engine is to drop them (``Engine.cancel``)."""
        held = []
        for example in request.examples:
            if example in self._running:
                del self._running[example]
                held.append(example)
            if example in self._reading:
                self._reading[self._reading.index(example)] = None
                held.append(example)
        return held

    def _fail_running(self, error: Exception) -> None:
        """After a failed step: every request in the batch gets ``error``; the batch is emptied."""
        requests = {example.request for example in self._running}
        examples = list(self._running)
        self._running.clear()
        try:
            self.engine.cancel(examples)
        except Exception:  # a broken batch: start a new one
            log.exception("the running batch could not be emptied")
        for request in requests:
            self._finish(request, error)

    def _observe_depth(self) -> None:
        if self.metrics is not None:
            with self._lock:
                self.metrics.queue_depth.set(self.depth)


def _resolve(request: Request, outcome: Any) -> None:
    """Answer ``request`` from any thread: its results (a list) or an exception."""

    def answer() -> None:
        if request.future.done():
            return
        if isinstance(outcome, BaseException):
            request.future.set_exception(outcome)
        else:
            request.future.set_result(outcome)

    request.loop.call_soon_threadsafe(answer)
