"""``MemoryService``: the recall models behind ``POST /v1/memory``, loaded in the background from the
app's lifespan (``start_memory``), and the one worker thread that runs them.

A request is tokenized as the recall models were trained (``model/recall.py``: the bundled
summarizer's normalizer and tokenizer, whatever bundle the summarizer routes serve), then each
cell's model reads the key and the text once (``read_document``). The work runs on a single worker
thread, off the event loop: a 100,000-character text keeps it busy for seconds, so requests queue
for it (at most ``GATESUM_MEMORY_QUEUE`` waiting; past that 503 + Retry-After) instead of sharing
the CPU. A request past ``GATESUM_REQUEST_TIMEOUT_S`` gets 504; the worker finishes the text it has.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gatesum.model.bundle import BUNDLED_MODEL, TOKENIZER_FILE, read_card
from gatesum.model.errors import GatesumError
from gatesum.model.recall import SHIPPED_RECALL_MODELS, LoadedRecallModel, load_recall_models
from gatesum.model.recall_readout import read_document
from gatesum.model.text import NormalizerConfig, normalize
from gatesum.model.tokenizer import Tokenizer
from gatesum.service.memory_examples import read_examples
from gatesum.service.memory_schemas import (
    MAX_POINTS,
    CellRecall,
    MemoryExample,
    MemoryRequest,
    MemoryResponse,
)
from gatesum.service.settings import Settings

log = logging.getLogger("gatesum.service")
LOADING = "loading"


class MemorySettings(BaseSettings):
    """Where the recall models and the example texts are (``GATESUM_*`` like ``Settings``)."""

    model_config = SettingsConfigDict(env_prefix="GATESUM_")

    recall_models: Path = Field(
        SHIPPED_RECALL_MODELS, description="folder of recall models (NAME.json + .safetensors)"
    )
    # the same default as training.data.DATA_DIR, which the service may not import
    data: Path = Field(Path("..") / "shared" / "data", description="data folder: the page's example texts")
    memory_queue: int = Field(4, ge=0, description="memory requests waiting for the worker; past it, 503")


def sample_positions(tokens: int, limit: int = MAX_POINTS) -> list[int]:
    """Every index below ``tokens`` when there are at most ``limit``; else at most ``limit``:
    half log-spaced (where a plain RNN forgets, in the first tokens) and half evenly spread."""
    if tokens <= limit:
        return list(range(tokens))
    half = limit // 2
    spread = {round(i * (tokens - 1) / (half - 1)) for i in range(half)}
    dense = {round(math.exp(i * math.log(tokens) / (half - 1))) - 1 for i in range(half)}
    return sorted(spread | dense)


def rounded(value: float) -> float:
    """Four significant digits: a trace of 3e-21 stays 3e-21, not 0."""
    return float(f"{value:.4g}")


class MemoryService:
    def __init__(self, settings: Settings, memory: MemorySettings) -> None:
        self.settings, self.memory = settings, memory
        self.models: dict[str, LoadedRecallModel] = {}
        self.tokenizer: Tokenizer | None = None
        self.normalizer = NormalizerConfig()
        self.examples: list[MemoryExample] = []
        self.reason = LOADING
        self.loaded = threading.Event()
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="gatesum-memory")
        self.waiting = 0

    def load(self) -> None:
        """The bundled tokenizer, the recall models and the examples; a failure is logged and kept as
        the reason /v1/memory gives (the summarizer routes are not affected)."""
        started = time.perf_counter()
        try:
            self.normalizer = NormalizerConfig(**read_card(BUNDLED_MODEL).get("normalizer", {}))
            self.tokenizer = Tokenizer.load(BUNDLED_MODEL / TOKENIZER_FILE)
            self.models = load_recall_models(self.memory.recall_models, self.tokenizer)
            self.reason = ""
            log.info("startup: recall models %s loaded in %.2f s", ", ".join(self.models),
                     time.perf_counter() - started)  # fmt: skip
        except (GatesumError, OSError, TypeError) as error:
            self.reason = f"no recall models: {error}"
            log.error("startup: %s", self.reason)
        self.examples = read_examples(self.memory.data, self.settings.max_text_chars)
        self.loaded.set()

    def key_for(self, request: MemoryRequest, key_symbols: int) -> int:
        if request.key is None:  # a key of the text's own: the same text gets the same key
            return int.from_bytes(hashlib.sha256(request.text.encode()).digest()[:8], "big") % key_symbols
        if request.key >= key_symbols:
            raise HTTPException(
                422, f"The key must be less than {key_symbols}: the models know {key_symbols} keys."
            )
        return request.key

    def read(self, text: str, key: int, cells: list[str]) -> MemoryResponse:
        """Every named cell's recall model over the key and the text (on the worker thread)."""
        started = time.perf_counter()
        token_ids = self.tokenizer.encode(normalize(text, self.normalizer))
        positions = sample_positions(len(token_ids))
        results = []
        for name in cells:
            model = self.models[name].model
            readout = read_document(model, token_ids, [key] * model.config.key_length)
            k = model.config.key_length
            wrong = (~readout.correct).nonzero()
            results.append(
                CellRecall(
                    name=name,
                    recall=[rounded(v) for v in readout.recall[positions].tolist()],
                    trace=[rounded(v) for v in readout.trace[k:][positions].tolist()],
                    key_trace=rounded(readout.trace[0].item()),
                    answer=readout.answers[-1, 0].item(),
                    correct=bool(readout.correct[-1]),
                    final_recall=rounded(readout.recall[-1].item()),
                    held_to=wrong[0, 0].item() if len(wrong) else len(token_ids),
                )
            )
        key_symbols = self.models[cells[0]].model.config.key_symbols
        return MemoryResponse(
            tokens=len(token_ids),
            key=key,
            key_symbols=key_symbols,
            chance=rounded(1 / key_symbols),
            positions=positions,
            pieces=self.tokenizer.id_to_piece([token_ids[p] for p in positions]),
            cells=results,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def run(self, request: MemoryRequest) -> MemoryResponse:
        """``read`` on the worker thread; 422 for a key or cell the models lack, 503 when too many
        wait, 504 past the request timeout."""
        cells = request.cells or list(self.models)
        missing = [name for name in cells if name not in self.models]
        if missing:
            raise HTTPException(
                422, f"No recall model for {', '.join(missing)} here; loaded: {', '.join(self.models)}."
            )
        key = self.key_for(request, min(self.models[name].model.config.key_symbols for name in cells))
        if self.waiting > self.memory.memory_queue:
            retry = str(self.settings.retry_after_s)
            raise HTTPException(
                503, "busy: too many memory requests waiting; retry later", headers={"Retry-After": retry}
            )
        started = time.perf_counter()
        self.waiting += 1
        try:
            job = asyncio.get_running_loop().run_in_executor(self.worker, self.read, request.text, key, cells)
            response = await asyncio.wait_for(job, self.settings.request_timeout_s)
        except TimeoutError:
            raise HTTPException(504, f"timed out after {self.settings.request_timeout_s:g} s") from None
        finally:
            self.waiting -= 1
        response.elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        return response


def start_memory(settings: Settings) -> MemoryService:
    """A ``MemoryService`` whose models load on a daemon thread (the port opens at once)."""
    service = MemoryService(settings, MemorySettings())
    threading.Thread(target=service.load, name="gatesum-memory-load", daemon=True).start()
    return service


def memory_service(request: Request) -> MemoryService:
    """The app's MemoryService once its models are loaded; else 503 (with Retry-After while loading)."""
    service: MemoryService | None = getattr(request.app.state, "memory", None)
    if service is None:
        raise HTTPException(503, "memory models not ready: not started")
    if not service.loaded.is_set():
        retry = str(service.settings.retry_after_s)
        raise HTTPException(503, "memory models not ready: still loading; retry in a few seconds",
                            headers={"Retry-After": retry})  # fmt: skip
    if service.reason:
        raise HTTPException(503, f"memory models not ready: {service.reason}")
    return service


ReadyMemory = Annotated[MemoryService, Depends(memory_service)]
