"""``ModelService``: the loaded bundle, its micro-batcher and its metrics, built in the app's
lifespan; routes receive it through the ``Service`` / ``ReadyService`` dependencies.

The model loads on a background thread (``start_loading``), so that the port is open at once:
while it loads, /healthz answers 200, /readyz 503 with the reason ``loading`` and /v1/* 503 with
Retry-After. A load that fails logs its cause at ERROR and leaves /readyz at 503 with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Annotated

import torch
from fastapi import Depends, HTTPException, Request

from gatesum.model.bundle import Bundle
from gatesum.model.errors import GatesumError
from gatesum.model.kernels import kernels_enabled, lstm_ops
from gatesum.model.pipeline import Summary, load, summarize_texts
from gatesum.model.search import GenerationConfig
from gatesum.service.batching import MicroBatcher
from gatesum.service.metrics import Metrics
from gatesum.service.schemas import GenerationOptions
from gatesum.service.settings import Settings

log = logging.getLogger("gatesum.service")
LOADING = "loading"  # the reason /readyz gives while the model loads


@dataclass(frozen=True)
class BatchKey:
    """A micro-batch group: texts that share it go through one model call."""

    generation: GenerationConfig  # frozen, so hashable as it is
    explain: bool


class ModelService:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bundle: Bundle | None = None  # set once the model is loaded and its loops are built
        self.reason = LOADING  # why the service is not ready; "" once it is
        self.loaded = threading.Event()  # set when loading ends, ready or not
        self.batcher = MicroBatcher(
            self._run_batch, settings.max_batch_size, settings.max_wait_ms, settings.max_queue, metrics
        )

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
        except GatesumError as error:  # a missing or corrupt bundle, or a device this machine lacks
            self.reason = str(error)  # a device error names GATESUM_DEVICE itself
            if not self.reason.startswith("GATESUM_DEVICE"):
                self.reason += " (set GATESUM_MODEL to a model bundle directory)"
            log.error("startup: the model could not be loaded: %s", self.reason)
        except Exception as error:  # a broken device, out of memory...: logged whole, told briefly
            self.reason = f"loading {self.settings.model} failed: {type(error).__name__}"
            log.error("startup: the model could not be loaded: %s", self.reason, exc_info=error)
        else:
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
        self, texts: list[str], options: GenerationOptions, explain: bool = False
    ) -> list[Summary]:
        """Summaries through the micro-batcher; TimeoutError past the request timeout."""
        key = BatchKey(self.generation(options), explain)
        return await asyncio.wait_for(self.batcher.submit(texts, key), self.settings.request_timeout_s)

    def _run_batch(self, texts: list[str], key: BatchKey) -> list[Summary]:
        """One model call (on the batcher's thread)."""
        return summarize_texts(self.bundle, texts, key.generation, batch_size=len(texts), explain=key.explain)


def get_service(request: Request) -> ModelService:
    return request.app.state.service


def ready_service(service: Annotated[ModelService, Depends(get_service)]) -> ModelService:
    """The service, or 503: with Retry-After while the model loads, without once loading failed."""
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
