"""Fixtures for the service tests: a tiny untrained bundle (built once), settings that keep
generation short, and an app client with the lifespan run (``with TestClient(app)``) and the
model's background load finished."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


def still_loading(status: int, body: bytes) -> bool:
    return status == 503 and json.loads(body).get("reason") == "loading"


def wait_until_loaded(client: TestClient, timeout: float = 60) -> None:
    """Until the background load has ended, ready or failed (/readyz stops saying "loading")."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if not still_loading(response.status_code, response.content):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the model was still loading after {timeout} s")
        time.sleep(0.02)


@contextmanager
def serving(settings: Settings) -> Iterator[TestClient]:
    """A client of an app built from ``settings``, once its model has loaded (or failed to)."""
    with TestClient(create_app(settings)) as client:
        wait_until_loaded(client)
        yield client


def get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET; raises URLError when nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


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
