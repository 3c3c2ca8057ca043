"""Fixtures for the service tests: a tiny untrained bundle (built once), settings that keep
generation short, and an app client with the lifespan run (``with TestClient(app)``) and the
model's background load finished."""

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
from tests.service.helpers import SOURCE_MAX_TOKENS, get, make_settings, serving, still_loading


@pytest.fixture(scope="session")
def tiny_bundle(make_tiny_bundle) -> Path:
    """The shared tiny bundle (tests/conftest.py), reading up to 200 source tokens."""
    return make_tiny_bundle(SOURCE_MAX_TOKENS)


@pytest.fixture
def settings(tiny_bundle: Path) -> Settings:
    return make_settings(tiny_bundle)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with serving(settings) as client:
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
    while still_loading(*get(f"http://127.0.0.1:{port}/readyz")):
        if time.monotonic() > deadline:
            pytest.fail("the model was still loading after 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
