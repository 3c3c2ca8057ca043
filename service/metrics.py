"""Prometheus metrics of one app (its own registry, so that several apps can live in one process),
and the pure-ASGI middleware that counts requests and times them."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gatesum_requests", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "gatesum_request_latency_seconds", "HTTP request latency by route", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.model_latency = Histogram(
            "gatesum_model_call_seconds", "time of one model call (one decoder step of the running batch)",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "gatesum_batch_size",
            "texts in the running batch per decoder step",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("gatesum_queue_depth", "texts waiting for the model", registry=self.registry)
        self.rejected = Counter(
            "gatesum_rejected", "requests refused by the service", ["reason"], registry=self.registry
        )
        # continuous batching (service/batching.py): work stopped, model time, the running batch
        self.cancelled = Counter(
            "gatesum_cancelled", "requests whose work was stopped: timeout, disconnect", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self.model_seconds = Counter(
            "gatesum_model_seconds", "time the model thread spent in decoder steps", registry=self.registry
        )
        self.reading_seconds = Counter(
            "gatesum_reading_seconds",
            "time the model thread spent reading texts: tokenizing, the content selector's pass, encoding",
            registry=self.registry,
        )
        self.running_rows = Gauge(
            "gatesum_running_rows",
            "decoder rows (texts × beams) in the running batch",
            registry=self.registry,
        )

    def observe_model_call(self, texts: int, seconds: float) -> None:
        self.batch_size.observe(texts)
        self.model_latency.observe(seconds)


class MetricsMiddleware:
    """Counts and times every HTTP request; the route label is the path of a known route, else
    "other" (so that scanning random URLs cannot blow up the number of series)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: set[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        status = 500  # unless a response starts
        responded = False
        hung_up = False  # the client went away before its answer (counted as 499, nginx's code)
        started = time.perf_counter()

        async def receive_watching() -> Message:
            nonlocal hung_up
            message = await receive()
            hung_up = hung_up or (message["type"] == "http.disconnect" and not responded)
            return message

        async def send_with_status(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive_watching, send_with_status)
        finally:
            self.metrics.requests.labels(route, "499" if hung_up else str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
