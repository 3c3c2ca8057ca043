"""``ModelService``: the loaded bundle, its continuous batcher and its metrics, built in the app's
lifespan; routes receive it through the ``Service`` / ``ReadyService`` dependencies.

The model loads on a background thread (``start_loading``), so that the port is open at once:
while it loads, /healthz answers 200, /readyz 503 with the reason ``loading`` and /v1/* 503 with
Retry-After. A load that fails logs its cause at ERROR and leaves /readyz at 503 with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Annotated

import torch
from fastapi import Depends, HTTPException, Request

from gatesum.model.bundle import Bundle
from gatesum.model.errors import GatesumError
from gatesum.model.kernels import kernels_enabled, lstm_ops
from gatesum.model.pipeline import Summary, build_summary, extractive, load, top_forward_gates
from gatesum.model.reading import (
    DocumentReader,
    Reading,
    check_mode,
    copy_sources,
    document_sentences,
    needs_selector,
    read_together,
    source_max_tokens,
)
from gatesum.model.running import RunningBatch
from gatesum.model.search import GenerationConfig
from gatesum.model.selector_pass import SelectorPass
from gatesum.service.batching import CHARS_PER_TOKEN, ContinuousBatcher, Example, Refused, StepCost
from gatesum.service.metrics import Metrics
from gatesum.service.schemas import GenerationOptions
from gatesum.service.settings import Settings

log = logging.getLogger("gatesum.service")
LOADING = "loading"  # the reason /readyz gives while the model loads
# The HTTP request being served: the ReadyService dependency records it, so that ``summarize``
# can tell who asks (the client's share) and notice a client that hangs up.
HTTP_REQUEST: ContextVar[Request | None] = ContextVar("gatesum_http_request", default=None)
LONG_SOURCE = 128  # source tokens: longer texts decode in the batcher's long lane


@dataclass(frozen=True)
class BatchKey:
    """A request's search settings: its texts form one search group in the running batch."""

    generation: GenerationConfig  # frozen, so hashable as it is
    explain: bool
    mode: str = "abstractive"  # "extractive": no decoding, the selector's sentences


class ModelService:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bundle: Bundle | None = None  # set once the model is loaded and its loops are built
        self.reason = LOADING  # why the service is not ready; "" once it is
        self.loaded = threading.Event()  # set when loading ends, ready or not
        self.batcher = ContinuousBatcher(settings, metrics)

    def start_loading(self) -> None:
        """``load`` on a daemon thread: a stop during a long first build does not wait for it."""
        log.info("startup: loading the model in the background; /readyz answers 503 until it is ready")
        threading.Thread(target=self.load, name="gatesum-load", daemon=True).start()

    def load(self) -> None:
        """Load the bundle, then build our LSTM loops; each phase is logged with its duration. On
        failure, log the cause at ERROR, keep serving /healthz and say why on /readyz."""
        started = time.perf_counter()
        try:
            bundle = self._load()
            engine = ServiceEngine(bundle, self.settings)  # calibrated: request costs are known
        except GatesumError as error:  # a missing or corrupt bundle, or a device this machine lacks
            self.reason = str(error)  # a device error names GATESUM_DEVICE itself
            if not self.reason.startswith("GATESUM_DEVICE"):
                self.reason += " (set GATESUM_MODEL to a model bundle directory)"
            log.error("startup: the model could not be loaded: %s", self.reason)
        except Exception as error:  # a broken device, out of memory...: logged whole, told briefly
            self.reason = f"loading {self.settings.model} failed: {type(error).__name__}"
            log.error("startup: the model could not be loaded: %s", self.reason, exc_info=error)
        else:
            self.batcher.attach(engine)
            self.bundle = bundle  # published last: requests are served from here on
            self.reason = ""
            log.info("startup: ready in %.2f s, serving %s from %s",
                     time.perf_counter() - started, bundle.name, bundle.path)  # fmt: skip
        finally:
            self.loaded.set()

    def _load(self) -> Bundle:
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        started = time.perf_counter()
        loaded = load(self.settings.model, self.settings.device, device_option="GATESUM_DEVICE")
        bundle, device = loaded.bundle, loaded.device
        log.info("startup: model bundle %s loaded in %.2f s", bundle.path, time.perf_counter() - started)
        if device.type == "cpu":  # our compiled loops are CPU code
            self._build_loops()
        return bundle

    def _build_loops(self) -> None:
        """Build our LSTM loops (a machine's first start, ~10 s) or load them from torch's cache:
        here, not in the first request."""
        if not kernels_enabled():
            log.info("startup: compiled LSTM loops off (GATESUM_KERNELS): the LSTM runs on torch ops")
            return
        started = time.perf_counter()
        outcome = "ready" if lstm_ops() is not None else "unavailable (see above), torch ops instead"
        log.info("startup: compiled LSTM loops %s in %.2f s", outcome, time.perf_counter() - started)

    @property
    def loading(self) -> bool:
        return not self.loaded.is_set()

    @property
    def ready(self) -> bool:
        return self.bundle is not None

    @property
    def name(self) -> str | None:
        return self.bundle.name if self.bundle is not None else None

    def generation(self, options: GenerationOptions) -> GenerationConfig:
        """The request's search settings over the service's defaults."""
        asked = options.model_dump(include=set(GenerationOptions.model_fields), exclude_none=True)
        generation = replace(self.settings.generation, **asked)
        # a default min_length above an asked max_length: the max wins (the schema refuses both asked)
        return replace(generation, min_length=min(generation.min_length, generation.max_length))

    async def summarize(
        self, texts: list[str], options: GenerationOptions, explain: bool = False, mode: str = "abstractive"
    ) -> list[Summary]:
        """Summaries through the continuous batcher. Refused at once (HTTPException 422) when
        the model cannot serve ``mode`` or the copy mask (no selector), or (429/503 +
        Retry-After) when the estimated cost does not fit; TimeoutError past the request timeout
        and a 499 when the client hangs up, both after stopping the work."""
        key = BatchKey(self.generation(options), explain, mode)
        try:
            check_mode(self.bundle, mode, key.generation.copy_mask_threshold)
        except GatesumError as error:
            raise HTTPException(422, f"{error}.") from None
        http = HTTP_REQUEST.get()
        try:
            job = self.batcher.submit(texts, key, client_identity(http))
        except Refused as refusal:
            self.metrics.rejected.labels(refusal.reason).inc()
            headers = {"Retry-After": str(max(1, refusal.retry_after))} if refusal.retry_after else None
            raise HTTPException(refusal.status, str(refusal), headers=headers) from None
        waits = {job.future}
        watcher = asyncio.ensure_future(_hang_up(http)) if http is not None else None
        if watcher is not None:
            waits.add(watcher)
        try:
            done, _ = await asyncio.wait(waits, timeout=self.settings.request_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        except asyncio.CancelledError:
            job.cancel("cancelled")
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        if job.future in done:
            return job.future.result()
        if watcher in done:
            job.cancel("disconnect")
            raise HTTPException(499, "the client closed the request")
        job.cancel("timeout")
        raise TimeoutError


class ServiceEngine:
    """The model side of the continuous batcher (service/batching.py ``Engine``): tokenizing,
    one running batch of model/running.py per lane and the summaries; runs on the scheduler
    thread. Texts of more than ``LONG_SOURCE`` tokens decode in a batch of their own (the long
    lane), so that the attention of short texts does not read the long ones' padding; the
    batcher decides when each lane steps. A text the content selector reads is read in pieces of
    ``selector_steps`` time steps (model/reading.py ``DocumentReader``), one per ``prepare``;
    texts of one piece are read many at once (``prepare_together``)."""

    def __init__(self, bundle: Bundle, settings: Settings) -> None:
        self.bundle = bundle
        self.batches = (RunningBatch(bundle.model), RunningBatch(bundle.model))  # short, long lane
        self.source_limit = source_max_tokens(bundle)
        self.long_source = LONG_SOURCE
        self.gates: dict[Example, dict | None] = {}  # explain: each text's top forward encoder gates
        self.extracted: list[Example] = []  # extractive summaries read, answered at their lane's step
        self.readers: dict[Example, DocumentReader] = {}  # texts read in pieces, until read
        self.piece_tokens = settings.selector_steps  # the selector's time steps read per piece
        self.cost = calibrate(bundle, settings)

    @property
    def rows(self) -> int:
        """Rows of both lanes, and the extractive summaries waiting to be answered."""
        return sum(batch.rows for batch in self.batches) + len(self.extracted)

    def lane_rows(self, lane: int) -> int:
        return self.batches[lane].rows + sum(example.lane == lane for example in self.extracted)

    def selector_tokens(self, example: Example) -> float:
        """The tokens the selector will read of the text (model/reading.py ``needs_selector``),
        guessed from its characters."""
        key: BatchKey = example.request.key
        guess = math.ceil(len(example.text) / CHARS_PER_TOKEN)
        reads = needs_selector(self.bundle, guess, key.mode, key.generation.copy_mask_threshold)
        return guess if reads else 0

    def prepare(self, example: Example) -> int | None:
        """Read the next piece of the text (model/reading.py; the selector scores a long one
        whole, a piece at a time); once read, the source tokens the decoder will read, 1 for an
        extractive summary (it decodes nothing); None while pieces are left."""
        reader = self._reader(example)
        try:
            reading = reader.advance(self.piece_tokens)
        except Exception:
            del self.readers[example]
            raise
        example.selector_tokens = reader.selector_tokens_left
        if reading is None:
            return None
        return self._read(example, reading)

    def prepare_together(self, examples: list[Example]) -> list[int | None]:
        """Read at once the texts that are one piece of the selector's pass or need none (one
        batched pass for them all, model/reading.py ``read_together``); as ``prepare`` for
        each, None for a longer one, left tokenized for ``prepare``."""
        try:
            readers = [self._reader(example) for example in examples]
            readings = read_together(readers, self.piece_tokens)
        except Exception:
            for example in examples:
                self.readers.pop(example, None)
            raise
        read: list[int | None] = []
        for example, reader, reading in zip(examples, readers, readings, strict=True):
            example.selector_tokens = reader.selector_tokens_left
            read.append(None if reading is None else self._read(example, reading))
        return read

    def _reader(self, example: Example) -> DocumentReader:
        """The text's reader: kept from its last piece, or a new one."""
        reader = self.readers.get(example)
        if reader is None:
            key: BatchKey = example.request.key
            generation = key.generation
            reader = DocumentReader(self.bundle, example.text, key.mode, generation.copy_mask_threshold,
                                    generation.extract_sentences, generation.lead_share)  # fmt: skip
            self.readers[example] = reader
        return reader

    def _read(self, example: Example, reading: Reading) -> int:
        """The text is read: the tokens the decoder will read (1 for an extractive summary)."""
        del self.readers[example]
        example.prepared, example.selector_tokens = reading, 0.0
        return 1 if example.request.key.mode == "extractive" else len(reading.source_ids)

    def admit(self, examples: list[Example]) -> None:
        key: BatchKey = examples[0].request.key
        if key.mode == "extractive":  # done once read: answered at the lane's next step
            self.extracted.extend(examples)
            return
        readings: list[Reading] = [example.prepared for example in examples]
        sources = [reading.source_ids for reading in readings]
        masked = copy_sources(readings, key.generation.copy_mask_threshold, self.bundle.model.config.pad_id,
                              self.bundle.tokenizer.word_starts)  # fmt: skip
        gates = self.batches[examples[0].lane].admit(sources, key.generation, examples, key.explain, masked)
        for position, example in enumerate(examples):
            self.gates[example] = top_forward_gates(gates, self.bundle, position, len(sources[position]))

    def step(self, lane: int) -> list[tuple[Example, Summary, int]]:
        finished = [self._extracted(example) for example in self.extracted if example.lane == lane]
        self.extracted = [example for example in self.extracted if example.lane != lane]
        for decoded in self.batches[lane].step():
            example: Example = decoded.handle
            summary = build_summary(self.bundle, example.text, example.prepared, decoded.tokens,
                                    example.request.key.explain, decoded.attention,
                                    self.gates.pop(example, None))  # fmt: skip
            finished.append((example, summary, len(decoded.tokens) + 1))
        return finished

    def _extracted(self, example: Example) -> tuple[Example, Summary, int]:
        """An extractive summary, counted as the steps the scheduler expected of it (L)."""
        key: BatchKey = example.request.key
        summary = extractive(self.bundle, example.text, example.prepared, key.explain)
        return example, summary, min(key.generation.max_length, example.tokens) + 1

    def cancel(self, examples: list[Example]) -> None:
        for batch in self.batches:
            batch.cancel(set(examples))
        gone = set(examples)
        self.extracted = [example for example in self.extracted if example not in gone]
        for example in examples:
            self.gates.pop(example, None)
            self.readers.pop(example, None)  # its selector pass stops here


def calibrate(bundle: Bundle, settings: Settings) -> StepCost:
    """The cost model's α, β, γ, δ on this machine (a second or two at startup): decoder steps
    of a batch as wide as the settings allow over short and over the longest sources, the
    tokenizing and encoding of a long text, and the selector's pass over it."""
    model, limit = bundle.model, source_max_tokens(bundle)
    texts = max(1, min(settings.max_batch_size, settings.max_batch_rows // 4))
    generation = GenerationConfig(beam_size=4, max_length=8, min_length=8, no_repeat_ngram_size=3)
    rng = random.Random(0)
    per_row = {}
    for width in sorted({min(32, limit), limit}):
        batch = RunningBatch(model)
        sources = [[rng.randrange(4, model.config.vocab_size) for _ in range(width)] for _ in range(texts)]
        started = time.perf_counter()
        batch.admit(sources, generation, range(texts))
        encode = (time.perf_counter() - started) / (texts * width)  # per source token
        batch.step()  # the first step warms up
        started = time.perf_counter()
        for _ in range(3):
            batch.step()
        per_row[width] = (time.perf_counter() - started) / 3 / (texts * generation.beam_size)
    narrow, wide = min(per_row), max(per_row)
    per_row_token = max(0.0, (per_row[wide] - per_row[narrow]) / max(1, wide - narrow))
    text = " ".join(rng.choice(("The", "council", "voted", "on", "a", "bridge.")) for _ in range(4000))
    started = time.perf_counter()
    _, ids, _ = document_sentences(bundle, text)
    per_char = (time.perf_counter() - started) / len(text) + encode / CHARS_PER_TOKEN
    per_selector_token = 0.0
    if bundle.selector is not None:
        started = time.perf_counter()
        selector_pass = SelectorPass(bundle.selector, ids)
        while selector_pass.advance(settings.selector_steps) is None:  # in pieces, as it serves
            pass
        per_selector_token = (time.perf_counter() - started) / len(ids)
    cost = StepCost(max(1e-6, per_row[narrow] - per_row_token * narrow), per_row_token, per_char,
                    per_selector_token)  # fmt: skip
    log.info("startup: cost model: %.3g s per row-step, + %.3g s per source token; %.3g s per character, "
             "%.3g s per token the selector reads", cost.per_row, cost.per_row_token, cost.per_char,
             cost.per_selector_token)  # fmt: skip
    return cost


def client_identity(http: Request | None) -> str:
    """Who is asking, for the per-client share: the API key's name when security has set one,
    else the client's address."""
    if http is None:
        return ""
    named = getattr(http.state, "client", None)
    return str(named) if named else (http.client.host if http.client else "")


async def _hang_up(http: Request) -> None:
    """Returns when the client of ``http`` disconnects (its body has been read already, so the
    next message from the server is the disconnect)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def get_service(request: Request) -> ModelService:
    return request.app.state.service


async def ready_service(
    service: Annotated[ModelService, Depends(get_service)], request: Request
) -> ModelService:
    """The service, or 503: with Retry-After while the model loads, without once loading failed.
    Records the HTTP request for ``ModelService.summarize`` (``HTTP_REQUEST``)."""
    HTTP_REQUEST.set(request)
    if service.loading:
        retry = str(service.settings.retry_after_s)
        raise HTTPException(
            503, "model not ready: still loading; retry in a few seconds", headers={"Retry-After": retry}
        )
    if not service.ready:
        raise HTTPException(503, f"model not ready: {service.reason}")
    return service


Service = Annotated[ModelService, Depends(get_service)]
ReadyService = Annotated[ModelService, Depends(ready_service)]
