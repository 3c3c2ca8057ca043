"""The bad-input matrix: each malformed request gets its 4xx with a readable reason, and the
service keeps answering afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.service.helpers import ARTICLE, make_settings, serving

TOO_LONG = "word " * 20_001  # 100_005 characters, over the default limit of 100_000

# (name, route, JSON body) -> 422, and a word the reason must contain
INVALID = [
    ("missing text", "/v1/summarize", {}, "text"),
    ("text not a string", "/v1/summarize", {"text": 42}, "text"),
    ("text a list", "/v1/summarize", {"text": ["a"]}, "text"),
    ("empty text", "/v1/summarize", {"text": ""}, "The text is empty."),
    ("whitespace text", "/v1/summarize", {"text": " \n\t "}, "The text is empty or only whitespace."),
    ("too long text", "/v1/summarize", {"text": TOO_LONG}, "longer than 100,000 characters"),
    ("beam 0", "/v1/summarize", {"text": ARTICLE, "beam_size": 0}, "beam_size"),
    ("beam 99", "/v1/summarize", {"text": ARTICLE, "beam_size": 99}, "beam_size must be at most 16."),
    ("beam not a number", "/v1/summarize", {"text": ARTICLE, "beam_size": "four"}, "beam_size"),
    (
        "beam a fraction",
        "/v1/summarize",
        {"text": ARTICLE, "beam_size": 2.5},
        "beam_size must be a whole number.",
    ),
    (
        "beam a boolean",
        "/v1/summarize",
        {"text": ARTICLE, "beam_size": True},
        "beam_size must be a whole number.",
    ),
    (
        "text of NULs",
        "/v1/summarize",
        {"text": "\x00\x00"},
        "The text holds only control or invisible characters.",
    ),
    ("negative max_length", "/v1/summarize", {"text": ARTICLE, "max_length": -1}, "max_length"),
    ("negative min_length", "/v1/summarize", {"text": ARTICLE, "min_length": -5}, "min_length"),
    ("max_length over 256", "/v1/summarize", {"text": ARTICLE, "max_length": 257}, "max_length"),
    ("negative length penalty", "/v1/summarize", {"text": ARTICLE, "length_penalty": -1}, "length_penalty"),
    ("unknown field", "/v1/summarize", {"text": ARTICLE, "beam": 2}, "beam"),
    ("body is a list", "/v1/summarize", [ARTICLE], "The request body must be a JSON object."),
    ("missing texts", "/v1/summarize/batch", {}, "texts"),
    ("no texts", "/v1/summarize/batch", {"texts": []}, "texts"),
    ("too many texts", "/v1/summarize/batch", {"texts": ["a text"] * 33}, "texts"),
    ("blank text in batch", "/v1/summarize/batch", {"texts": [ARTICLE, "   "]}, "texts[1] is empty"),
    ("texts not a list", "/v1/summarize/batch", {"texts": ARTICLE}, "texts"),
    ("explain, empty text", "/v1/explain", {"text": ""}, "text"),
]


@pytest.fixture(scope="module")
def shared_client(tiny_bundle) -> Iterator[TestClient]:
    with serving(make_settings(tiny_bundle)) as client:
        yield client


def assert_still_serving(client: TestClient) -> None:
    response = client.post("/v1/summarize", json={"text": ARTICLE})
    assert response.status_code == 200 and response.json()["summary"]


@pytest.mark.parametrize(("route", "body", "reason"), [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])  # fmt: skip
def test_invalid_field_is_a_readable_422(shared_client: TestClient, route: str, body, reason: str) -> None:
    response = shared_client.post(route, json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert reason in answer["error"] and answer["detail"]
    # plain sentences, not pydantic's locations and prefixes
    assert "body." not in answer["error"] and "Value error" not in answer["error"]
    assert answer["error"].endswith(".")
    assert len(response.text) < 2000  # the offending input is not echoed back
    assert_still_serving(shared_client)


# (name, raw body, status, the error the client reads)
RAW = [
    ("invalid JSON", b'{"text": "unterminated', 422,
     "The request body is not valid JSON (line 1, column 10: Unterminated string starting at)."),
    ("missing comma", b'{"text": "a b c" "beam_size": 2}', 422,
     "The request body is not valid JSON (line 1, column 18: Expecting ',' delimiter)."),
    ("error on line 2", b'{"text": "a b c",\n "beam_size": }', 422,
     "The request body is not valid JSON (line 2, column 15: Expecting value)."),
    ("not JSON at all", b"summarize this please", 422,
     "The request body is not valid JSON (line 1, column 1: Expecting value)."),
    ("non-UTF-8 bytes", b'{"text": "\xff\xfe caf\xe9"}', 400,
     "The request body is not valid UTF-8 text (byte 0xff at offset 10)."),
]  # fmt: skip


@pytest.mark.parametrize(("content", "status", "error"), [case[1:] for case in RAW],
                         ids=[case[0] for case in RAW])  # fmt: skip
def test_undecodable_body_is_a_4xx_that_says_why(
    shared_client: TestClient, content: bytes, status: int, error: str
) -> None:
    response = shared_client.post(
        "/v1/summarize", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert response.json()["error"] == error and "Traceback" not in response.text
    assert_still_serving(shared_client)


def test_oversized_body_is_413(shared_client: TestClient) -> None:
    body = json.dumps({"texts": ["x" * 50_000] * 32}).encode()  # 1.6 MB, over the 1 MiB limit
    response = shared_client.post(
        "/v1/summarize/batch", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "larger than" in response.json()["error"]
    assert_still_serving(shared_client)


def test_oversized_chunked_body_is_413(shared_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the middleware must count
        yield b'{"text": "'
        for _ in range(40):
            yield b"x" * 32_768
        yield b'"}'

    response = shared_client.post(
        "/v1/summarize", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert_still_serving(shared_client)


def test_wrong_method_and_unknown_route(shared_client: TestClient) -> None:
    assert shared_client.get("/v1/summarize").status_code == 405
    assert shared_client.post("/v1/nothing", json={}).status_code == 404
    assert_still_serving(shared_client)
