"""Fixtures for the service tests: a tiny untrained bundle (built once), settings that keep
generation short, and an app client with the lifespan run (``with TestClient(app)``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from gatesum.service.app import create_app
from gatesum.service.settings import Settings
from gatesum.service.tiny import build_tiny_bundle

SOURCE_MAX_TOKENS = 200
ARTICLE = (
    "The city council voted on Tuesday to build a new bridge across the river. "
    "Construction will begin next spring and take two years, the mayor said."
)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokenizer trained on generated sentences + a Summarizer with hidden sizes 16/32, saved."""
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", source_max_tokens=SOURCE_MAX_TOKENS)


def make_settings(model: Path, **overrides) -> Settings:
    """Short greedy generation (an untrained model would otherwise run to max_length)."""
    values = {"model": model, "beam_size": 1, "max_length": 8, "max_body_bytes": 1 << 20, **overrides}
    return Settings(**values)


@pytest.fixture
def settings(tiny_bundle: Path) -> Settings:
    return make_settings(tiny_bundle)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """The app under a real uvicorn on a free loopback port (for the browser); yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
