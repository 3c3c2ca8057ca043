"""Access and abuse: API keys (401), per-key rate limits (429 + Retry-After), content types
(415), invisible text (422), slow and vanishing clients under the real uvicorn (408, 499), and
bad settings as one line with exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from gatesum.model.errors import GatesumError
from gatesum.service.app import create_app
from gatesum.service.connections import HeadTimeoutProtocol
from gatesum.service.security import TokenBuckets, digest, parse_keys
from gatesum.service.server import connection_options
from tests.service.helpers import ARTICLE, make_settings, serving

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed_client(tiny_bundle: Path) -> Iterator[TestClient]:
    """Alice's key given plainly, Bob's only as its SHA-256 digest; 2 requests at once, then
    one every 100 s per key."""
    keys = f"alice={ALICE},bob=sha256:{digest(BOB)}"
    settings = make_settings(tiny_bundle, api_keys=keys, rate_limit_per_s=0.01, rate_limit_burst=2)
    with serving(settings) as client:
        yield client


def test_a_missing_or_wrong_key_is_401_and_a_known_one_passes(keyed_client: TestClient) -> None:
    for headers in ({}, bearer("not-a-key-0123456789"), {"authorization": ALICE}, bearer("")):
        response = keyed_client.post("/v1/summarize", json={"text": ARTICLE}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "API key" in response.json()["error"]
    assert keyed_client.get("/v1/model").status_code == 401
    assert keyed_client.get("/metrics").status_code == 401
    # a refused request's body is never read: no key and a wrong content type is still a 401
    assert (
        keyed_client.post("/v1/summarize", content=b"x", headers={"content-type": "text/plain"}).status_code
        == 401
    )
    # the page, the docs and the health checks stay open (a load balancer probes /readyz)
    for path in ("/", "/healthz", "/readyz", "/openapi.json", "/docs"):
        assert keyed_client.get(path).status_code == 200, path
    schema = keyed_client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    assert schema["paths"]["/v1/summarize"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]

    # each key has its own bucket of 2: alice's third request in a row is refused
    answers = [
        keyed_client.post("/v1/summarize", json={"text": ARTICLE}, headers=bearer(ALICE)) for _ in range(3)
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    retry = int(answers[2].headers["retry-after"])  # whole seconds until a token is back
    assert 90 <= retry <= 100 and f"retry in {retry} s" in answers[2].json()["error"]
    assert keyed_client.get("/v1/model", headers=bearer(BOB)).status_code == 200  # the digest's key
    metrics = keyed_client.get("/metrics", headers=bearer(BOB)).text
    assert 'gatesum_rejected_total{reason="unauthorized"} 7.0' in metrics
    assert 'gatesum_rejected_total{reason="rate_limited"} 1.0' in metrics
    assert 'gatesum_requests_total{route="/v1/summarize",status="429"} 1.0' in metrics


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # empty: one token in 1/rate seconds
    assert buckets.take("b") == 0.0  # another client, another bucket
    now[0] = 1.0  # two tokens back
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    now[0] = 100.0  # never more than the burst
    assert [buckets.take("a") > 0 for _ in range(4)] == [False, False, False, True]


def test_keys_are_parsed_and_kept_hashed() -> None:
    keys = parse_keys([f"alice={ALICE}", f"sha256:{digest(BOB).upper()}", BOB + "x"], "test")
    assert keys == {digest(ALICE): "alice", digest(BOB): "key-2", digest(BOB + "x"): "key-3"}
    with pytest.raises(GatesumError, match=r"entry 1 .*16 characters"):
        parse_keys(["me=short"], "test")
    with pytest.raises(GatesumError, match="64 hex digits") as error:
        parse_keys([f"me=sha256:{'z' * 64}"], "test")
    assert "zzzz" not in str(error.value)  # a bad entry is named by position, never echoed


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "Content-Type: application/json (and none was given)"),
        ({"content-type": "text/plain"}, "(not text/plain)"),
        ({"content-type": "application/x-www-form-urlencoded"}, "(not application/x-www-form-urlencoded)"),
        ({"content-type": "application/json; charset=latin-1"}, "charset latin-1"),
        (
            {"content-type": "application/json", "content-encoding": "gzip"},
            "compressed (Content-Encoding: gzip)",
        ),
    ],
)
def test_a_body_that_is_not_json_is_415(client: TestClient, headers: dict[str, str], error: str) -> None:
    response = client.post("/v1/summarize", content=b'{"text": "a b c"}', headers=headers)
    assert response.status_code == 415, response.text
    assert error in response.json()["error"]


def test_json_with_a_utf8_charset_is_read(client: TestClient) -> None:
    for content_type in ("application/json; charset=utf-8", "Application/JSON;charset=UTF-8"):
        response = client.post(
            "/v1/summarize", content=b'{"text": "a b c d"}', headers={"content-type": content_type}
        )
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "text", ["\x00\x00\x00", "\u200b\u200c\u200d\ufeff", "\x00 \u200b \x1b\n", "\u00ad\u2060"]
)
def test_text_of_only_control_or_invisible_characters_is_422(client: TestClient, text: str) -> None:
    response = client.post("/v1/summarize", json={"text": text})
    assert response.status_code == 422
    assert response.json()["error"] == "The text holds only control or invisible characters."


def test_control_characters_never_reach_the_model(client: TestClient) -> None:
    dirty = "\x00".join(ARTICLE.split(" ", 5)) + "\u200b\x1b[31m"
    explained = client.post("/v1/explain", json={"text": dirty, "max_length": 20}).json()
    clean = client.post("/v1/explain", json={"text": ARTICLE.replace("\u200b", "") + "[31m"}).json()
    assert explained["source_tokens"] == clean["source_tokens"]
    assert not any(c in explained["summary"] for c in "\x00\x1b\u200b")


# --- under the real server: gatesum serve's uvicorn options -------------------------------------


class FastHeadDeadline(HeadTimeoutProtocol):
    header_timeout_s = 1.0


@pytest.fixture
def live(tiny_bundle: Path) -> Iterator[tuple[int, object]]:
    """uvicorn with ``gatesum serve``'s connection options (a 1 s head deadline, 1 s body
    timeout); yields (port, the app's metrics)."""
    settings = make_settings(tiny_bundle, body_timeout_s=1.0, header_timeout_s=1.0)
    app = create_app(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = {**connection_options(settings), "http": FastHeadDeadline}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield port, app
    server.should_exit = True
    thread.join(timeout=10)


POST_HEAD = (
    b"POST /v1/summarize HTTP/1.1\r\nhost: x\r\n"
    b"content-type: application/json\r\ncontent-length: 5000\r\n\r\n"
)


def exchange(port: int, data: bytes, wait: float = 5.0) -> tuple[bytes, float]:
    """Send ``data``, read until the server closes; (what came back, seconds it took)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            answer += b"<still open>"
    return answer, time.monotonic() - started


def test_slow_heads_and_bodies_are_cut_off_and_no_server_header(live) -> None:
    port, _ = live
    answer, seconds = exchange(
        port, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n" + b"GET /healthz HTTP/1.1\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200") and b"server:" not in answer.lower()
    assert b"408 Request Timeout" in answer and b"did not arrive within 1 s" in answer and seconds < 3
    _, seconds = exchange(port, b"")  # a connection that never says anything is closed too
    assert seconds < 3
    body = b'{"text": "' + b"x" * 140  # announces 5,000 bytes, sends 150
    head = POST_HEAD
    answer, seconds = exchange(port, head + body)
    assert answer.startswith(b"HTTP/1.1 408") and b"body did not arrive within 1 s" in answer, answer
    assert b"connection: close" in answer.lower() and seconds < 3


def test_a_client_that_hangs_up_is_counted_as_499_not_400(live) -> None:
    port, _ = live
    head = POST_HEAD
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + b'{"text": "abc')
        time.sleep(0.2)
    time.sleep(0.3)
    metrics = exchange(port, b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")[0].decode()
    assert 'gatesum_requests_total{route="/v1/summarize",status="499"} 1.0' in metrics
    assert 'status="400"' not in metrics


# --- configuration errors: one line, exit 2 ----------------------------------------------------


@pytest.mark.slow  # each starts python and imports torch
@pytest.mark.parametrize(
    ("env", "flags", "error"),
    [
        (
            {"GATESUM_MAX_QUEUE": "abc"},
            [],
            "--max-queue / GATESUM_MAX_QUEUE: Input should be a valid integer",
        ),
        ({}, ["--port", "99999"], "--port / GATESUM_PORT: Input should be less than or equal to 65535"),
        ({"GATESUM_PORT": "0"}, [], "--port / GATESUM_PORT: Input should be greater than or equal to 1"),
        ({}, ["--host", "0.0.0.0"], "listening on 0.0.0.0 would serve anyone"),
        ({"GATESUM_API_KEYS": "me=short"}, [], "GATESUM_API_KEYS, entry 1 (me): a key needs at least 16"),
    ],
    ids=["env not a number", "flag out of range", "env out of range", "public without keys", "short key"],
)
def test_bad_settings_are_one_line_and_exit_2(env: dict[str, str], flags: list[str], error: str) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GATESUM_")} | env
    done = subprocess.run([sys.executable, "-m", "gatesum", "serve", *flags], env=environment,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and error in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "short" not in done.stderr.replace("at least", "")
