"""``Settings``: every knob of the REST service, read from ``GATESUM_*`` environment variables.

Startup and health checks (a choice, kept the same in the Dockerfile): the port opens at once and
the model loads in the background (the bundle, then our compiled LSTM loops; each phase logged at
INFO with its duration).

- ``/healthz`` is liveness: 200 as long as the process runs.
- ``/readyz`` is readiness: 503 with the reason ``loading`` while the model loads, 200 once it
  serves, 503 with the cause when loading failed (a missing or corrupt bundle file...).
- A failed load logs its cause once at ERROR (naming the file) and the process stays up, so that
  /readyz can tell an operator why; it does not exit. Health checks therefore probe /readyz:
  the Docker image's HEALTHCHECK does, with a start period that covers the load, so a container
  whose model cannot load turns unhealthy instead of reporting healthy forever.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from gatesum.model.bundle import BUNDLED_MODEL
from gatesum.model.recurrent import STRETCH_MULTIPLE
from gatesum.model.search import GENERATION_SETTINGS, GenerationConfig
from gatesum.model.selector_pass import DEFAULT_STEPS


def _generation_fields() -> dict[str, Any]:
    """The defaults of a request that does not set them: ``GenerationConfig``'s own defaults and
    bounds (``GATESUM_BEAM_SIZE``, ``GATESUM_MAX_LENGTH``, ... change them)."""
    return {
        setting.name: (
            setting.kind,
            Field(setting.default, ge=setting.minimum, le=setting.maximum, description=setting.help),
        )
        for setting in GENERATION_SETTINGS
    }


# the generation defaults as settings fields; Settings adds the rest
GenerationSettings = create_model("GenerationSettings", __base__=BaseSettings, **_generation_fields())


class Settings(GenerationSettings):
    """Defaults suit one CPU replica; ``GATESUM_MODEL=/path`` serves another bundle."""

    model_config = SettingsConfigDict(env_prefix="GATESUM_", protected_namespaces=())

    model: Path = Field(BUNDLED_MODEL, description="model bundle directory")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:N, mps or auto (CUDA, MPS, CPU)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = torch's default")

    # request limits: enforced by the request schemas (text, batch) and a body-size middleware
    max_text_chars: int = Field(100_000, ge=1, description="characters per text")
    max_batch_texts: int = Field(32, ge=1, description="texts per /v1/summarize/batch request")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="request body size, bytes")

    # micro-batching: concurrent requests are gathered into one model call per generation setting
    max_batch_size: int = Field(16, ge=1, description="texts per model call")
    max_wait_ms: float = Field(5.0, ge=0, description="how long the first text waits for company")
    max_queue: int = Field(256, ge=1, description="texts waiting; past this, 503 + Retry-After")
    request_timeout_s: float = Field(60.0, gt=0, description="per request; past this, 504")
    retry_after_s: int = Field(
        1, ge=0, description="Retry-After of a 503 when the queue is full or the model is loading"
    )

    # --- continuous batching and admission by cost (service/batching.py, issue #16) ---------------
    # Requests join and leave the running decoder batch at step boundaries (max_batch_size caps
    # its texts, max_batch_rows its rows); a request whose estimated model time cannot finish
    # within request_timeout_s is refused at once (503 + Retry-After), and so is one over a
    # client's share (429). The ceiling of one request, in row-steps, is texts × beam_size ×
    # (min(max_length, source tokens) + 1): 65,536 is, e.g., 16 texts at beam 16 and max_length 255.
    max_batch_rows: int = Field(128, ge=1, description="decoder rows (texts × beams) stepped together")
    request_share: float = Field(
        0.5, gt=0, le=1, description="the part of the running batch one request may hold while others "
        "wait, and of request_timeout_s of model time one client may have queued (past it, 429)",
    )  # fmt: skip
    max_request_row_steps: int = Field(
        65_536, ge=1, description="one request's cost ceiling in row-steps (past it, 429)"
    )
    prepare_chars: int = Field(
        100_000, ge=1, description="characters tokenized per decoder step on the model thread (≥ 1 text)"
    )
    encode_tokens: int = Field(
        1024, ge=1, description="source tokens encoded per decoder step (≥ 1 text), so steps keep coming"
    )
    selector_steps: int = Field(
        DEFAULT_STEPS, ge=STRETCH_MULTIPLE, description="time steps of the content selector's pass over "
        "a long text read per turn of its lane (one piece), so that the lanes' steps keep coming",
    )  # fmt: skip

    # The generation defaults (beam_size, max_length, ...) are fields of GenerationSettings above.

    # --- access: API keys and per-client rate limits (service/security.py) ----------------------
    # Both are off by default, which suits the default host (127.0.0.1). A host beyond loopback
    # (0.0.0.0, as in the Docker image) refuses to start without keys unless allow_anonymous says
    # so: anyone who can reach the port could otherwise use the model.
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="API keys, comma-separated, each 'name=key' or 'name=sha256:<hex digest of the key>' "
        "(a bare key is named by its position); with any key set, /v1/* and /metrics need "
        "'Authorization: Bearer <key>' (401 without a known key)",
    )
    api_keys_file: Path | None = Field(
        None, description="a file of API keys, one 'name=key' or 'name=sha256:<hex>' per line (# comments)"
    )
    allow_anonymous: bool = Field(
        False,
        description="serve without API keys on a host beyond loopback (e.g. behind an authenticating proxy)",
    )
    rate_limit_per_s: float = Field(
        0.0, ge=0, description="requests per second per API key (per client address without keys); 0 = off"
    )
    rate_limit_burst: int = Field(
        10, ge=1, description="requests a client may make at once before the rate applies (the bucket size)"
    )

    # --- connections: what `gatesum serve` passes to uvicorn (its h11 protocol) -----------------
    # A slow client must not hold a connection: the request head must arrive within
    # header_timeout_s of the connection opening (or of the previous response), and each piece of
    # the body within body_timeout_s (else 408 and the connection is closed). Past max_connections
    # open connections, new requests get 503 at once.
    header_timeout_s: float = Field(
        10.0, gt=0, description="seconds to receive a request's head (line + headers)"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="seconds to wait for each piece of a request body; past it, 408"
    )
    keep_alive_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    max_connections: int = Field(
        512, ge=1, description="open connections (and requests in progress); past it, 503"
    )
    max_header_bytes: int = Field(
        16_384, ge=1024, description="request line and headers, bytes; past it, 400"
    )

    @property
    def generation(self) -> GenerationConfig:
        """The search settings of a request that sets none."""
        return GenerationConfig(**{item.name: getattr(self, item.name) for item in GENERATION_SETTINGS})


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once (request schemas read their limits from it at import)."""
    return Settings()
