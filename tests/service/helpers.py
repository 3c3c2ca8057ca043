"""Helpers of the service tests (fixtures live in conftest.py): settings, clients, a test text."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gatesum.service.app import create_app
from gatesum.service.settings import Settings

SOURCE_MAX_TOKENS = 200
ARTICLE = (
    "The city council voted on Tuesday to build a new bridge across the river. "
    "Construction will begin next spring and take two years, the mayor said."
)


def make_settings(model: Path, **overrides) -> Settings:
    """Short greedy generation (an untrained model would otherwise run to max_length)."""
    values = {"model": model, "beam_size": 1, "max_length": 8, "max_body_bytes": 1 << 20, **overrides}
    return Settings(**values)


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
