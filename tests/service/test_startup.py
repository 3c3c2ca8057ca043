"""Startup and health: the port opens before the model has loaded (/readyz 503 "loading", then
200), each phase is logged with its duration, and a broken model is logged at ERROR and keeps
/readyz at 503 with the reason (the container's health check probes /readyz)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import uvicorn

from gatesum.service import state
from gatesum.service.app import create_app
from tests.service.helpers import ARTICLE, get, make_settings, serving


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def poll(url: str, until: Callable[[int, bytes], bool], timeout: float) -> tuple[int, bytes, float]:
    """GET ``url`` every 20 ms until ``until(status, body)``; (status, body, seconds waited)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            status, body = get(url)
            if until(status, body):
                return status, body, time.monotonic() - started
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.02)
    pytest.fail(f"{url}: no matching answer within {timeout} s")


def server_post(url: str, body: dict) -> tuple[int, dict[str, str], dict]:
    """(status, lower-cased headers, JSON body) of a POST."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.load(error)


def test_readyz_is_503_loading_within_2_s_then_200(monkeypatch, tiny_bundle: Path) -> None:
    """A real uvicorn with a load that takes as long as the test wants: the port answers at once."""
    release = threading.Event()
    real_load = state.load

    def slow_load(*args, **kwargs):
        release.wait(timeout=60)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(state, "load", slow_load)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(make_settings(tiny_bundle)), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    started = time.monotonic()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        status, body, _ = poll(url + "/readyz", lambda status, body: True, timeout=10)
        first_answer = time.monotonic() - started
        assert (status, json.loads(body)) == (
            503,
            {"status": "unavailable", "model": None, "reason": "loading"},
        )
        assert first_answer < 2, f"/readyz first answered {first_answer:.2f} s after start"
        assert get(url + "/healthz")[0] == 200
        refused = server_post(url + "/v1/summarize", {"text": ARTICLE})
        assert refused[0] == 503 and refused[1]["retry-after"] == "1"
        assert "loading" in refused[2]["error"]

        release.set()
        status, body, _ = poll(url + "/readyz", lambda status, body: status == 200, timeout=30)
        assert json.loads(body)["model"] == "tiny-untrained"
        assert server_post(url + "/v1/summarize", {"text": ARTICLE})[0] == 200
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=10)


def test_each_startup_phase_is_logged_with_its_duration(caplog, monkeypatch, tiny_bundle: Path) -> None:
    monkeypatch.setenv("GATESUM_KERNELS", "auto")
    monkeypatch.setattr(state, "lstm_ops", lambda: time.sleep(0.2) or object())  # a 0.2 s "build"
    with caplog.at_level(logging.INFO, logger="gatesum.service"), serving(make_settings(tiny_bundle)):
        pass
    lines = [record.getMessage() for record in caplog.records if record.name == "gatesum.service"]
    assert any(line.startswith(f"startup: model bundle {tiny_bundle} loaded in ") for line in lines), lines
    [loops] = [line for line in lines if line.startswith("startup: compiled LSTM loops ready in ")]
    assert float(loops.split()[-2]) >= 0.2
    assert any(line.startswith("startup: ready in ") and "tiny-untrained" in line for line in lines)
    assert not [r for r in caplog.records if r.name.startswith("gatesum") and r.levelno >= logging.WARNING]


def truncate_weights(bundle: Path) -> None:
    weights = bundle / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


# how to break a copy of the tiny bundle -> the file the ERROR line and /readyz must name
BREAKAGES = {
    "missing directory": (lambda bundle: os.rename(bundle, bundle.with_name("gone")), "broken"),
    "truncated weights": (truncate_weights, "model.safetensors"),
    "bad config.json": (lambda bundle: (bundle / "config.json").write_text("{not json"), "config.json"),
    "missing tokenizer": (lambda bundle: (bundle / "tokenizer.model").unlink(), "tokenizer.model"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_model_logs_one_error_and_readyz_says_why(
    caplog, tmp_path: Path, tiny_bundle: Path, breakage: str
) -> None:
    bundle = tmp_path / "broken"
    bundle.mkdir()
    for file in tiny_bundle.iterdir():
        (bundle / file.name).write_bytes(file.read_bytes())
    breaks, culprit = BREAKAGES[breakage]
    breaks(bundle)
    with caplog.at_level(logging.INFO, logger="gatesum.service"), serving(make_settings(bundle)) as client:
        assert client.get("/healthz").status_code == 200  # alive: liveness
        ready = client.get("/readyz")
        refused = client.post("/v1/summarize", json={"text": ARTICLE})
    errors = [r for r in caplog.records if r.name.startswith("gatesum") and r.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    assert errors[0].getMessage().startswith("startup: the model could not be loaded: ")
    assert culprit in errors[0].getMessage()
    assert ready.status_code == 503
    assert culprit in ready.json()["reason"] and "Traceback" not in ready.text
    assert refused.status_code == 503 and "retry-after" not in refused.headers  # retrying will not help


def test_gatesum_serve_logs_its_startup_and_a_failed_load(tmp_path: Path) -> None:
    """The real command: its log shows the phases at INFO and the cause at ERROR."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gatesum",
        "serve",
        "--port",
        str(port),
        "--model",
        str(tmp_path / "nowhere"),
    ]
    env = {**os.environ, "GATESUM_KERNELS": "off"}
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) as process:
        try:
            status, body, _ = poll(
                f"http://127.0.0.1:{port}/readyz",
                lambda status, body: json.loads(body).get("reason") != "loading",
                timeout=60,
            )
        finally:
            process.terminate()
            log = process.communicate(timeout=30)[1]
    assert status == 503 and "nowhere" in json.loads(body)["reason"]
    assert "INFO:     startup: loading the model in the background" in log
    [error] = [line for line in log.splitlines() if line.startswith("ERROR:")]
    assert "startup: the model could not be loaded: model bundle not found:" in error and "nowhere" in error
