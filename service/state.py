"""``ModelService``: the loaded bundle, its micro-batcher and its metrics, built in the app's
lifespan; routes receive it through the ``Service`` / ``ReadyService`` dependencies."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Annotated

import torch
from fastapi import Depends, HTTPException, Request

from gatesum.model.bundle import Bundle, load_bundle
from gatesum.model.errors import GatesumError
from gatesum.model.kernels import lstm_ops
from gatesum.model.pipeline import Summary, summarize_texts
from gatesum.model.search import GenerationConfig
from gatesum.service.batching import MicroBatcher
from gatesum.service.metrics import Metrics
from gatesum.service.schemas import GenerationOptions
from gatesum.service.settings import Settings

log = logging.getLogger("gatesum.service")
# a micro-batch group: GenerationConfig as a tuple (hashable) and whether to explain
BatchKey = tuple[tuple, bool]


class ModelService:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bundle: Bundle | None = None
        self.reason = "the model is loading"  # why the service is not ready
        self.batcher = MicroBatcher(
            self._run_batch, settings.max_batch_size, settings.max_wait_ms, settings.max_queue, metrics
        )

    def load(self) -> None:
        """Load the bundle; on failure keep serving /healthz and say why on /readyz."""
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        try:
            self.bundle = load_bundle(self.settings.model, self.settings.device)
        except GatesumError as error:
            self.reason = f"{error} (set GATESUM_MODEL to a model bundle directory)"
        except Exception as error:  # a broken device, out of memory...: logged whole, told briefly
            log.exception("loading %s failed", self.settings.model)
            self.reason = f"loading {self.settings.model} failed: {type(error).__name__}"
        else:
            if torch.device(self.settings.device).type == "cpu":
                lstm_ops()  # build (first start on a machine, ~10 s) or load our LSTM loops, not on a request
            self.reason = ""
            log.info("serving %s from %s", self.bundle.name, self.bundle.path)

    @property
    def ready(self) -> bool:
        return self.bundle is not None

    @property
    def name(self) -> str | None:
        return self.bundle.name if self.bundle is not None else None

    def generation(self, options: GenerationOptions) -> GenerationConfig:
        """The request's search settings over the service's defaults."""
        names = set(GenerationOptions.model_fields)
        values = {name: getattr(self.settings, name) for name in names}
        values.update(options.model_dump(include=names, exclude_none=True))
        values["min_length"] = min(values["min_length"], values["max_length"])  # a default min, asked max
        return GenerationConfig(**values)

    async def summarize(
        self, texts: list[str], options: GenerationOptions, explain: bool = False
    ) -> list[Summary]:
        """Summaries through the micro-batcher; TimeoutError past the request timeout."""
        key: BatchKey = (dataclasses.astuple(self.generation(options)), explain)
        return await asyncio.wait_for(self.batcher.submit(texts, key), self.settings.request_timeout_s)

    def _run_batch(self, texts: list[str], key: BatchKey) -> list[Summary]:
        """One model call (on the batcher's thread)."""
        generation, explain = GenerationConfig(*key[0]), key[1]
        return summarize_texts(self.bundle, texts, generation, batch_size=len(texts), explain=explain)


def get_service(request: Request) -> ModelService:
    return request.app.state.service


def ready_service(service: Annotated[ModelService, Depends(get_service)]) -> ModelService:
    if not service.ready:
        raise HTTPException(503, f"model not ready: {service.reason}")
    return service


Service = Annotated[ModelService, Depends(get_service)]
ReadyService = Annotated[ModelService, Depends(ready_service)]
