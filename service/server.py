"""``gatesum serve``: run the REST service and web page under uvicorn.

Flags map onto ``Settings`` (each also settable as a ``GATESUM_*`` environment variable); they
are passed on through the environment, so that every uvicorn worker process reads the same.
The port opens at once; the model loads in the background (see ``state.ModelService``), and
gatesum's own log lines (each startup phase and its duration, a failed load at ERROR) go to
uvicorn's log handler at ``--log-level``.

Bad settings or flags (``GATESUM_MAX_QUEUE=abc``, ``--port 99999``) are one line and exit 2,
checked by the same ``Settings`` on both paths before uvicorn starts. A host beyond loopback
without API keys is refused too, unless ``GATESUM_ALLOW_ANONYMOUS`` says to serve anyone.
Connection limits (``settings.py``: head and body timeouts, keep-alive, connections, header
size) are passed to uvicorn here, with its h11 protocol and no ``server`` header.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import os
from typing import Any

from pydantic import ValidationError

from gatesum.model.errors import GatesumError
from gatesum.service.settings import Settings

# flag -> the Settings field (and GATESUM_ variable) it sets
FLAGS = {
    "host": "host",
    "port": "port",
    "model": "model",
    "device": "device",
    "max_batch_size": "max_batch_size",
    "max_wait_ms": "max_wait_ms",
    "max_queue": "max_queue",
    "request_timeout": "request_timeout_s",
    "max_text_chars": "max_text_chars",
    "max_body_bytes": "max_body_bytes",
    "torch_threads": "torch_threads",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Settings.model_fields
    parser.add_argument(
        "--host",
        default=None,
        help=f"interface to listen on (default {defaults['host'].default}; 0.0.0.0 for all)",
    )
    parser.add_argument("--port", type=int, default=None, help=f"default {defaults['port'].default}")
    parser.add_argument(
        "--model",
        default=None,
        help="model bundle directory (default: the bundled pretrained/cnndm-lstm-small)",
    )
    parser.add_argument("--device", default=None, help="torch device: cpu (default), cuda, cuda:1 ...")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes, each with its "
        "own copy of the model (default 1: one process batches best)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="texts per model call (default 16; 1 turns micro-batching off)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=None,
        help="how long a request waits for others to batch with (default 5)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=None,
        help="texts waiting before requests get 503 + Retry-After (default 256)",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=None, help="seconds per request (default 60)"
    )
    parser.add_argument(
        "--max-text-chars", type=int, default=None, help="characters per text (default 100000)"
    )
    parser.add_argument("--max-body-bytes", type=int, default=None, help="request body size (default 8 MiB)")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    for flag, field in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"GATESUM_{field.upper()}"] = str(value)
    settings = checked_settings()  # flags and environment together, checked before uvicorn starts
    if args.workers < 1:
        raise GatesumError("--workers must be at least 1")
    uvicorn.run(
        "gatesum.service.app:app",
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=log_config(args.log_level),
        **connection_options(settings),
    )
    return 0


def connection_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the connection limits of ``settings`` (its h11 protocol, with the
    head deadline) and no ``server`` header (nor proxy headers: X-Forwarded-For is not trusted)."""
    from gatesum.service.connections import IMPORT_STRING

    return {
        "http": IMPORT_STRING,
        "timeout_keep_alive": settings.keep_alive_s,
        "limit_concurrency": settings.max_connections,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "server_header": False,
        "proxy_headers": False,
    }


def checked_settings() -> Settings:
    """``Settings()``, its errors as one GatesumError line; the API keys read, and required on a
    host beyond loopback unless GATESUM_ALLOW_ANONYMOUS."""
    from gatesum.service.security import load_keys

    try:
        settings = Settings()
    except ValidationError as error:
        raise GatesumError(settings_error(error)) from None
    keys = load_keys(settings)
    if not keys and not settings.allow_anonymous and not is_loopback(settings.host):
        raise GatesumError(
            f"listening on {settings.host} would serve anyone who reaches the port: set "
            "GATESUM_API_KEYS or GATESUM_API_KEYS_FILE, or GATESUM_ALLOW_ANONYMOUS=true"
        )
    return settings


def settings_error(error: ValidationError) -> str:
    """One line: each bad setting by its flag and variable, e.g. "--port / GATESUM_PORT: Input
    should be less than or equal to 65535 (got 99999)"."""
    flags = {field: flag for flag, field in FLAGS.items()}
    parts = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        name = f"GATESUM_{field.upper()}"
        if field in flags:
            name = f"--{flags[field].replace('_', '-')} / {name}"
        shown = "" if "key" in field else f" (got {str(item.get('input'))[:40]!r})"  # never a secret
        parts.append(f"{name}: {item['msg']}{shown}")
    return "bad settings: " + "; ".join(parts)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config, with the ``gatesum`` loggers on its handler at ``level``."""
    from uvicorn.config import LOG_LEVELS, LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["gatesum"] = {
        "handlers": ["default"],
        "level": LOG_LEVELS.get(level.lower(), "INFO"),
        "propagate": False,
    }
    return config
