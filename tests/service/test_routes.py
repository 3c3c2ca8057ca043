"""Every route against a tiny bundle: what a client of the API relies on."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi.testclient import TestClient

from gatesum.service import state
from gatesum.service.errors import public
from gatesum.service.routes import public_card
from tests.service.helpers import ARTICLE, SOURCE_MAX_TOKENS, make_settings, serving


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "model": None, "reason": None}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model"] == "tiny-untrained"


def test_summarize_returns_the_documented_fields(client: TestClient) -> None:
    response = client.post("/v1/summarize", json={"text": ARTICLE})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"summary", "input_tokens", "truncated", "read", "mode", "sentences",
                         "sentence_count", "elapsed_ms", "model"}  # fmt: skip
    assert body["read"] == "whole" and body["mode"] == "abstractive" and body["sentence_count"] == 2
    assert [(s["index"], s["score"]) for s in body["sentences"]] == [(0, None), (1, None)]  # no selector
    first = body["sentences"][0]
    assert ARTICLE[first["start"] : first["end"]] == ARTICLE.split(". ")[0] + "."
    assert isinstance(body["summary"], str) and body["summary"]
    assert 10 < body["input_tokens"] < SOURCE_MAX_TOKENS and body["truncated"] is False
    assert body["elapsed_ms"] > 0 and body["model"] == "tiny-untrained"


def test_summarize_flags_truncation_past_the_source_limit(client: TestClient) -> None:
    body = client.post("/v1/summarize", json={"text": " ".join([ARTICLE] * 5)}).json()
    assert body["input_tokens"] > SOURCE_MAX_TOKENS and body["truncated"] is True
    assert body["read"] == "truncated" and body["sentence_count"] == 10  # the model read the first ones
    assert [s["index"] for s in body["sentences"]] == list(range(len(body["sentences"])))
    assert 1 < len(body["sentences"]) < 10


def test_generation_options_are_applied(client: TestClient) -> None:
    options = {
        "beam_size": 3,
        "max_length": 3,
        "min_length": 3,
        "length_penalty": 0.5,
        "no_repeat_ngram_size": 0,
    }
    body = client.post("/v1/explain", json={"text": ARTICLE, **options}).json()
    assert len(body["summary_tokens"]) == 3  # min_length = max_length = 3 tokens, no room for EOS


def test_a_min_length_over_max_length_is_lowered_to_it(client: TestClient) -> None:
    """Not refused: the schema could not say so (JSON Schema does not compare fields)."""
    body = client.post("/v1/explain", json={"text": ARTICLE, "min_length": 9, "max_length": 3}).json()
    assert len(body["summary_tokens"]) == 3


def test_batch_answers_each_text_in_order(client: TestClient) -> None:
    texts = [ARTICLE, "The storm hit the coast.", ARTICLE * 5]
    response = client.post("/v1/summarize/batch", json={"texts": texts})
    assert response.status_code == 200
    results = response.json()["results"]
    singles = [client.post("/v1/summarize", json={"text": text}).json() for text in texts]
    assert [r["summary"] for r in results] == [s["summary"] for s in singles]
    assert [r["input_tokens"] for r in results] == [s["input_tokens"] for s in singles]
    assert [r["truncated"] for r in results] == [False, False, True]


def test_explain_returns_attention_and_memory_per_source_token(client: TestClient) -> None:
    body = client.post("/v1/explain", json={"text": ARTICLE}).json()
    rows, columns = len(body["summary_tokens"]), len(body["source_tokens"])
    assert columns == body["input_tokens"]
    assert 1 <= rows <= 8 + 1  # max_length, plus EOS
    assert len(body["attention"]) == rows and all(len(row) == columns for row in body["attention"])
    for row in body["attention"]:
        assert abs(sum(row) - 1) < 1e-2  # a distribution over the source (rounded to 4 digits)
    assert len(body["memory"]) == columns
    assert body["memory"][-1] == 1.0  # the last token is all still there
    assert all(0 <= value <= 1 for value in body["memory"])
    assert body["memory"][0] <= body["memory"][-1]


def test_model_card(client: TestClient, tiny_bundle: Path) -> None:
    response = client.get("/v1/model")
    body = response.json()
    assert body["name"] == "tiny-untrained" and set(body) == {"name", "card"}
    assert body["card"]["model"]["encoder_cell"] == "lstm"
    assert body["card"]["model"]["encoder_hidden_size"] == 16
    assert body["card"]["data"]["source_max_tokens"] == SOURCE_MAX_TOKENS
    # no filesystem paths, no training options
    assert str(tiny_bundle) not in response.text and "/tmp" not in response.text
    assert "training" not in body["card"] and "exported_from" not in body["card"]


def test_public_card_keeps_the_facts_and_drops_paths_and_training_options() -> None:
    card = {"name": "m", "model": {"encoder_cell": "lstm"}, "metrics": {"rouge1": 0.3},
            "data": {"source": ["../shared/data/cnndm/train.jsonl.gz", "/srv/x/val.csv"], "text_column": "a"},
            "tokenizer": {"file": "tokenizer.model", "vocab_size": 100},
            "training": {"options": {"output": "/home/me/runs"}},
            "exported_from": "/home/me/runs/x"}  # fmt: skip
    assert public_card(card) == {
        "model": {"encoder_cell": "lstm"},
        "metrics": {"rouge1": 0.3},
        "data": {"source": ["train.jsonl.gz", "val.csv"], "text_column": "a"},
        "tokenizer": {"vocab_size": 100},
    }


def test_error_messages_lose_paths_and_library_details() -> None:
    assert public(
        "/srv/x/model.safetensors: unreadable (Error while deserializing header: HeaderTooLarge); corrupt"
    ) == ("model.safetensors: unreadable; corrupt")
    advice = "not found: /a b/x is not a directory (set GATESUM_MODEL to a bundle directory)"
    assert (
        public(advice, "/a b/x")
        == "not found: x is not a directory (set GATESUM_MODEL to a bundle directory)"
    )
    assert public("this machine has 0 CUDA device(s)") == "this machine has 0 CUDA device(s)"


def test_metrics_count_requests_and_batches(client: TestClient) -> None:
    client.post("/v1/summarize", json={"text": ARTICLE})
    client.post("/v1/summarize", json={"text": ""})
    oversized = json.dumps({"text": "x" * (2 << 20)})  # refused on its declared size
    client.post("/v1/summarize", content=oversized, headers={"content-type": "application/json"})
    text = client.get("/metrics").text
    assert 'gatesum_requests_total{route="/v1/summarize",status="200"} 1.0' in text
    assert 'gatesum_requests_total{route="/v1/summarize",status="422"} 1.0' in text
    assert 'gatesum_requests_total{route="/v1/summarize",status="413"} 1.0' in text
    assert "gatesum_request_latency_seconds_bucket" in text
    assert "gatesum_batch_size_count 0.0" not in text and "gatesum_batch_size_count" in text
    assert "gatesum_queue_depth 0.0" in text
    reading = re.search(r"^gatesum_reading_seconds_total (\S+)$", text, re.M)  # tokenizing, encoding
    model = re.search(r"^gatesum_model_seconds_total (\S+)$", text, re.M)  # decoder steps
    assert float(reading.group(1)) > 0 and float(model.group(1)) > 0


def test_openapi_has_an_example_on_each_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            answer = operation["responses"]["200"]["content"]["application/json"]
            for part in (body, answer):
                if part:
                    name = part["schema"]["$ref"].rsplit("/", 1)[-1]
                    assert components[name].get("examples"), f"{method} {path}: no example for {name}"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text  # works offline: assets served here
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


def test_index_page_and_static_files(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="heatmap"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert 'rel="icon" href="/static/favicon.svg"' in page.text
    for icon in ("/static/favicon.svg", "/favicon.ico"):  # browsers ask for the latter unprompted
        response = client.get(icon)
        assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")


def test_missing_model_starts_but_is_not_ready(tmp_path: Path) -> None:
    with serving(make_settings(tmp_path / "nowhere")) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "nowhere" in ready.json()["reason"] and "GATESUM_MODEL" in ready.json()["reason"]
        assert str(tmp_path) not in ready.text  # the directory's name, not its path (the log has it)
        refused = client.post("/v1/summarize", json={"text": ARTICLE})
        assert refused.status_code == 503 and "model not ready" in refused.json()["error"]
        assert client.get("/v1/model").status_code == 503


def test_corrupt_bundle_is_a_readable_503_not_a_traceback(tmp_path: Path, tiny_bundle: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.model"):
        (broken / name).write_bytes((tiny_bundle / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not weights")
    with serving(make_settings(broken)) as client:
        reason = client.get("/readyz").json()["reason"]
        assert "model.safetensors" in reason and "Traceback" not in reason
        assert str(tmp_path) not in reason and "deserializ" not in reason  # no path, no safetensors internals
    card = json.loads((tiny_bundle / "config.json").read_text())
    assert card["format"] == "gatesum-bundle"  # the fixture bundle itself is untouched


def test_the_compiled_lstm_loops_are_ready_before_the_service_is(monkeypatch, settings) -> None:
    """Building them takes ~10 s on a machine's first start: at startup, not in a request."""
    calls = []
    monkeypatch.setattr(state, "lstm_ops", lambda: calls.append("built"))
    with serving(settings) as client:
        assert calls == ["built"]
        assert client.get("/readyz").status_code == 200
