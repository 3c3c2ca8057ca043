"""The HTTP routes: typed handlers that parse, call the ``ModelService`` and shape the answer."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gatesum.model.pipeline import Summary
from gatesum.service.batching import QueueFull
from gatesum.service.errors import public
from gatesum.service.explain import explanation
from gatesum.service.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    ExplainResponse,
    Health,
    ModelCard,
    SummarizeRequest,
    SummaryResponse,
)
from gatesum.service.state import ModelService, ReadyService, Service

STATIC = Path(__file__).parent / "static"
# every error a route can answer, in OpenAPI (the API routes answer all of these; /v1/model
# the access and availability ones)
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "the request body is not UTF-8 text"},
    401: {"model": ErrorResponse, "description": "API keys are set and the request has no known "
          "'Authorization: Bearer <key>' (with WWW-Authenticate)"},
    408: {"model": ErrorResponse, "description": "the request body did not arrive in time"},
    413: {"model": ErrorResponse, "description": "the request body is over the size limit"},
    415: {"model": ErrorResponse, "description": "the request body is not application/json "
          "(UTF-8), or is compressed"},
    422: {"model": ErrorResponse, "description": "the body is not JSON, or a field is missing, of the "
          "wrong type or out of bounds, or a text has nothing readable, or the model has no content "
          "selector for the extractive mode or the copy mask asked"},
    429: {"model": ErrorResponse, "description": "the client is over its rate limit (with Retry-After)"},
    503: {"model": ErrorResponse, "description": "the model is loading or failed to load, or the "
          "queue or the server's connections are full (with Retry-After where a retry can succeed)"},
    504: {"model": ErrorResponse, "description": "the request took longer than the service's timeout"},
}  # fmt: skip
ACCESS_ERRORS = {status: ERRORS[status] for status in (401, 429, 503)}
router = APIRouter()


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The web page: paste a text, see its summary, attention and memory trace."""
    return FileResponse(STATIC / "index.html")


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> FileResponse:
    """The page's icon (an SVG), also where browsers look for one by default."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive (liveness; says nothing about the model: see /readyz)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(service: Service) -> Health | JSONResponse:
    """The model is loaded and requests can be served; 503 with the reason until then ("loading"
    while it loads, else why loading failed). The container's health check probes this."""
    if not service.ready:
        reason = public(service.reason, service.settings.model)  # the log has the paths
        return JSONResponse(Health(status="unavailable", reason=reason).model_dump(), status_code=503)
    return Health(status="ready", model=service.name)


@router.get("/v1/model", response_model=ModelCard, responses=ACCESS_ERRORS)
def model_card(service: ReadyService) -> ModelCard:
    """The model bundle's card: cell, sizes, training data, metrics."""
    return ModelCard(name=service.name, card=public_card(service.bundle.card))


@router.post("/v1/summarize", response_model=SummaryResponse, responses=ERRORS)
async def summarize(request: SummarizeRequest, service: ReadyService) -> SummaryResponse:
    """Summarize one text."""
    started = time.perf_counter()
    [summary] = await _summarize(service, [request.text], request)
    return _response(summary, started, service)


@router.post("/v1/summarize/batch", response_model=BatchResponse, responses=ERRORS)
async def summarize_batch(request: BatchRequest, service: ReadyService) -> BatchResponse:
    """Summarize up to the batch limit of texts; results in request order."""
    started = time.perf_counter()
    summaries = await _summarize(service, request.texts, request)
    return BatchResponse(results=[_response(summary, started, service) for summary in summaries])


@router.post("/v1/explain", response_model=ExplainResponse, responses=ERRORS)
async def explain(request: SummarizeRequest, service: ReadyService) -> ExplainResponse:
    """Summarize one text, with cross-attention (summary × source tokens), memory trace and the
    content selector's scores."""
    started = time.perf_counter()
    [summary] = await _summarize(service, [request.text], request, explain=True)
    return ExplainResponse(
        **_response(summary, started, service).model_dump(), **explanation(service.bundle, summary)
    )


@router.get("/metrics", include_in_schema=False)
def metrics(service: Service) -> Response:
    """Prometheus metrics: requests, latency, batch sizes, queue depth."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _summarize(service: ModelService, texts: list[str], request: SummarizeRequest | BatchRequest,
                     explain: bool = False) -> list[Summary]:  # fmt: skip
    """The model call through the batcher, its refusals as HTTP errors."""
    try:
        return await service.summarize(texts, request, explain, request.mode)
    except QueueFull as error:
        service.metrics.rejected.labels("queue_full").inc()
        retry = str(service.settings.retry_after_s)
        raise HTTPException(503, f"busy: {error}; retry later", headers={"Retry-After": retry}) from None
    except TimeoutError:
        service.metrics.rejected.labels("timeout").inc()
        raise HTTPException(504, f"timed out after {service.settings.request_timeout_s:g} s") from None


# what /v1/model shows of a bundle's config.json: not the training options (they hold paths and
# machine details) nor where it was exported from
CARD_SECTIONS = ("format", "version", "model", "tokenizer", "normalizer", "data", "metrics", "weights_dtype")


def public_card(card: dict[str, Any]) -> dict[str, Any]:
    """The card's public sections; the training data's files by name only."""
    shown = {key: card[key] for key in CARD_SECTIONS if key in card}
    if isinstance(shown.get("tokenizer"), dict):
        shown["tokenizer"] = {k: v for k, v in shown["tokenizer"].items() if k != "file"}
    if isinstance(shown.get("data"), dict):
        data = dict(shown["data"])
        for key, value in data.items():
            if isinstance(value, str) and "/" in value:
                data[key] = PurePosixPath(value).name
            elif isinstance(value, list):
                data[key] = [PurePosixPath(v).name if isinstance(v, str) else v for v in value]
        shown["data"] = data
    if isinstance(card.get("selector"), dict):
        shown["selector"] = {"model": card["selector"].get("model")}
    return shown


def _response(summary: Summary, started: float, service: ModelService) -> SummaryResponse:
    return SummaryResponse(
        summary=summary.summary,
        input_tokens=summary.input_tokens,
        truncated=summary.truncated,
        read=summary.read,
        mode=summary.mode,
        sentences=[asdict(use) for use in summary.sentences],
        sentence_count=summary.sentence_count,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
        model=service.name,
    )
