"""Long documents through the API (issue #15): the content selector picks what the model reads,
the extractive mode, the copy mask, and the refusals when the model has no selector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gatesum.model.bundle import load_bundle
from gatesum.model.pipeline import summarize_texts
from gatesum.model.search import GenerationConfig
from tests.helpers import make_rows
from tests.service.helpers import ARTICLE, SOURCE_MAX_TOKENS, make_settings, serving

LONG = make_rows([40], seed=5)[0]["article"]  # ~440 tokens: twice what the model reads


@pytest.fixture(scope="module")
def selector_bundle(make_selector_bundle) -> Path:
    return make_selector_bundle(SOURCE_MAX_TOKENS)


@pytest.fixture
def selector_client(selector_bundle: Path) -> Iterator[TestClient]:
    with serving(make_settings(selector_bundle)) as client:
        yield client


def test_a_long_text_is_read_by_selected_sentences_as_the_pipeline_reads_it(selector_client, selector_bundle):
    body = selector_client.post("/v1/summarize", json={"text": LONG}).json()
    assert body["read"] == "selected" and body["truncated"] is False and body["sentence_count"] == 40
    assert body["input_tokens"] > 2 * SOURCE_MAX_TOKENS
    indices = [sentence["index"] for sentence in body["sentences"]]
    assert indices == sorted(indices) and max(indices) > 20  # from across the document, in order
    assert all(0 < sentence["score"] < 1 for sentence in body["sentences"])
    for sentence in body["sentences"]:
        assert LONG[sentence["start"] : sentence["end"]].endswith(".")
    [alone] = summarize_texts(
        load_bundle(selector_bundle), [LONG], GenerationConfig(beam_size=1, max_length=8)
    )
    assert body["summary"] == alone.summary  # the service and the pipeline read alike
    assert indices == [use.index for use in alone.sentences]


def test_extractive_mode_returns_the_selected_sentences(selector_client):
    response = selector_client.post(
        "/v1/summarize", json={"text": LONG, "mode": "extractive", "extract_sentences": 2}
    )
    body = response.json()
    assert response.status_code == 200 and body["mode"] == "extractive" and body["read"] == "whole"
    assert len(body["sentences"]) == 2
    assert body["summary"] == " ".join(LONG[s["start"] : s["end"]] for s in body["sentences"])
    batch = selector_client.post("/v1/summarize/batch", json={"texts": [ARTICLE, LONG], "mode": "extractive"})
    assert [len(result["sentences"]) for result in batch.json()["results"]] == [2, 3]  # ARTICLE has 2


def test_explain_carries_the_selectors_scores(selector_client, client):
    body = selector_client.post("/v1/explain", json={"text": LONG}).json()
    assert len(body["selection"]) == len(body["source_tokens"]) == len(body["memory"])
    assert all(0 <= value <= 1 for value in body["selection"])
    extractive = selector_client.post("/v1/explain", json={"text": ARTICLE, "mode": "extractive"}).json()
    assert extractive["attention"] == [] and len(extractive["selection"]) == extractive["input_tokens"]
    assert client.post("/v1/explain", json={"text": ARTICLE}).json()["selection"] is None


def test_the_copy_mask_is_served_as_the_pipeline_applies_it(selector_client, selector_bundle):
    texts = [ARTICLE, LONG]
    response = selector_client.post("/v1/summarize/batch", json={"texts": texts, "copy_mask_threshold": 0.5})
    assert response.status_code == 200
    served = [result["summary"] for result in response.json()["results"]]
    bundle = load_bundle(selector_bundle)
    masked = GenerationConfig(beam_size=1, max_length=8, copy_mask_threshold=0.5)
    assert served == [summary.summary for summary in summarize_texts(bundle, texts, masked)]
    unmasked = summarize_texts(bundle, texts, GenerationConfig(beam_size=1, max_length=8))
    assert served != [summary.summary for summary in unmasked]  # the mask changed something


def test_without_a_selector_extractive_and_the_copy_mask_are_refused(client):
    for extra in ({"mode": "extractive"}, {"copy_mask_threshold": 0.4}):
        response = client.post("/v1/summarize", json={"text": ARTICLE, **extra})
        assert response.status_code == 422
        assert "needs a content selector" in response.json()["error"]
    response = client.post("/v1/summarize", json={"text": ARTICLE, "mode": "bullets"})
    assert response.status_code == 422
    assert response.json()["error"] == "mode must be 'abstractive' or 'extractive'."
