"""``gatesum serve``: run the REST service and web page under uvicorn.

Flags map onto ``Settings`` (each also settable as a ``GATESUM_*`` environment variable); they
are passed on through the environment, so that every uvicorn worker process reads the same.
The port opens at once; the model loads in the background (see ``state.ModelService``), and
gatesum's own log lines (each startup phase and its duration, a failed load at ERROR) go to
uvicorn's log handler at ``--log-level``.
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import Any

from gatesum.service.settings import Settings

# flag -> the Settings field (and GATESUM_ variable) it sets
FLAGS = {
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
    settings = Settings()  # flags and environment together, checked before uvicorn starts
    uvicorn.run(
        "gatesum.service.app:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=log_config(args.log_level),
        proxy_headers=False,
    )
    return 0


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
