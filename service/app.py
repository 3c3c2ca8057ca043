"""The FastAPI app, assembled: settings, lifespan (model loading, in the background), middleware,
error handlers, routes and the static page. ``service.app:app`` is what uvicorn serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from gatesum.service.errors import http_error, internal_error, validation_error
from gatesum.service.limits import RequestLimitsMiddleware
from gatesum.service.memory_routes import memory_router
from gatesum.service.memory_state import start_memory
from gatesum.service.metrics import Metrics, MetricsMiddleware
from gatesum.service.routes import STATIC, router
from gatesum.service.security import PROTECTED, AccessMiddleware, TokenBuckets, load_keys
from gatesum.service.settings import Settings, get_settings
from gatesum.service.state import ModelService

DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"  # Swagger UI 5, shipped by the package


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = ModelService(settings, metrics)
        app.state.service = service
        service.batcher.start()
        service.start_loading()  # in the background: the port opens now, /readyz says "loading"
        app.state.memory = start_memory(settings)  # recall models for /v1/memory, also in the background
        yield
        await service.batcher.stop()

    app = FastAPI(
        title="gatesum",
        summary="Summarize text with an LSTM encoder-decoder with attention and copy.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: FastAPI's default page loads them from a CDN
    )
    app.include_router(router)
    app.include_router(memory_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """The OpenAPI docs (Swagger UI), working without internet access."""
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="gatesum API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    # middleware, innermost first: each request meets them in the reverse order
    app.add_middleware(
        RequestLimitsMiddleware,
        max_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        json_routes=lambda: json_routes(app),
    )
    keys = load_keys(settings)
    rate = settings.rate_limit_per_s
    buckets = TokenBuckets(rate, settings.rate_limit_burst) if rate else None
    # keys and rates are checked before any body is read
    app.add_middleware(AccessMiddleware, keys=keys, buckets=buckets, metrics=metrics)
    # outermost, so that every refusal is counted
    known_paths = {route.path for route in router.routes} | {"/docs", "/openapi.json"}
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=known_paths)
    if keys:
        app.openapi = lambda: bearer_openapi(app)
    return app


def json_routes(app: FastAPI) -> set[str]:
    """The paths whose POST takes a JSON body, as the OpenAPI schema states them (every router's)."""
    paths = app.openapi()["paths"]
    return {path for path, operations in paths.items() if "requestBody" in operations.get("post", {})}


def bearer_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema with the bearer-key requirement on the API routes (when keys are set)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        bearer = {"type": "http", "scheme": "bearer"}
        schema.setdefault("components", {})["securitySchemes"] = {"apiKey": bearer}
        for path, operations in schema["paths"].items():
            if path.startswith(PROTECTED):
                for operation in operations.values():
                    operation["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app()
