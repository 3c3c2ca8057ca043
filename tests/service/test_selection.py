"""Long documents through the API (issue #15): the content selector picks what the model reads,
the extractive mode, the copy mask, and the refusals when the model has no selector; the
selector's pass read in pieces on the scheduler thread (issue #16): the same readings, its cost
in admission, its work stopped with its request."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gatesum.model.bundle import load_bundle
from gatesum.model.pipeline import summarize_texts
from gatesum.model.reading import document_sentences
from gatesum.model.recurrent import STRETCH_MULTIPLE
from gatesum.model.search import GenerationConfig
from gatesum.service.batching import StepCost
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
        "/v1/summarize", json={"text": LONG, "mode": "extractive", "extract_sentences": 4}
    )
    body = response.json()
    assert response.status_code == 200 and body["mode"] == "extractive" and body["read"] == "whole"
    assert len(body["sentences"]) == 4
    assert body["summary"] == " ".join(LONG[s["start"] : s["end"]] for s in body["sentences"])
    batch = selector_client.post(
        "/v1/summarize/batch", json={"texts": [ARTICLE, LONG], "mode": "extractive", "extract_sentences": 3}
    )
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


def test_texts_read_together_are_summarized_as_the_pipeline_summarizes_them(selector_bundle):
    """The short texts of a batch request are read at once (one selector pass for them all) and
    each text is summarized as the pipeline summarizes it alone, in both modes."""
    texts = [ARTICLE, LONG, make_rows([6], seed=8)[0]["article"]]
    with serving(make_settings(selector_bundle)) as client:
        engine = client.app.state.service.batcher.engine
        together, calls = engine.prepare_together, []
        engine.prepare_together = lambda examples: calls.append(len(examples)) or together(examples)
        abstractive = client.post("/v1/summarize/batch", json={"texts": texts}).json()
        extractive = client.post("/v1/summarize/batch", json={"texts": texts, "mode": "extractive"}).json()
    assert calls == [2, 2]  # the two short texts together; LONG on the long lane's turn
    bundle = load_bundle(selector_bundle)
    greedy = GenerationConfig(beam_size=1, max_length=8)  # the test settings' defaults
    for served, mode in ((abstractive, "abstractive"), (extractive, "extractive")):
        alone = [summarize_texts(bundle, [text], greedy, mode=mode)[0] for text in texts]
        assert [result["summary"] for result in served["results"]] == [summary.summary for summary in alone]
        assert [result["read"] for result in served["results"]] == [summary.read for summary in alone]


def test_without_a_selector_extractive_and_the_copy_mask_are_refused(client):
    for extra in ({"mode": "extractive"}, {"copy_mask_threshold": 0.4}):
        response = client.post("/v1/summarize", json={"text": ARTICLE, **extra})
        assert response.status_code == 422
        assert "needs a content selector" in response.json()["error"]
    response = client.post("/v1/summarize", json={"text": ARTICLE, "mode": "bullets"})
    assert response.status_code == 422
    assert response.json()["error"] == "mode must be 'abstractive' or 'extractive'."


def test_a_long_text_read_in_pieces_is_read_as_the_pipeline_reads_it(selector_bundle):
    """The fewest selector steps a piece (``STRETCH_MULTIPLE``, 128): LONG (~440 tokens) takes
    several pieces, and every mode reads it exactly as one pass over the whole document does."""
    texts, greedy = [ARTICLE, LONG], GenerationConfig(beam_size=1, max_length=8)
    with serving(make_settings(selector_bundle, selector_steps=STRETCH_MULTIPLE)) as client:
        engine = client.app.state.service.batcher.engine
        prepare, outcomes = engine.prepare, []
        engine.prepare = lambda example: outcomes.append(prepare(example)) or outcomes[-1]
        selected = client.post("/v1/summarize", json={"text": LONG}).json()
        masked = client.post("/v1/summarize/batch", json={"texts": texts, "copy_mask_threshold": 0.5}).json()
        extracted = client.post("/v1/summarize", json={"text": LONG, "mode": "extractive"}).json()
    assert outcomes.count(None) >= 3 * 3  # three readings of LONG, in pieces
    bundle = load_bundle(selector_bundle)
    [alone] = summarize_texts(bundle, [LONG], greedy)
    assert selected["summary"] == alone.summary and selected["read"] == "selected"
    used = [(sentence["index"], sentence["score"]) for sentence in selected["sentences"]]
    assert used == [(use.index, use.score) for use in alone.sentences]
    piped = summarize_texts(bundle, texts, replace(greedy, copy_mask_threshold=0.5))
    assert [result["summary"] for result in masked["results"]] == [summary.summary for summary in piped]
    [extract] = summarize_texts(bundle, [LONG], greedy, mode="extractive")
    used = [(sentence["index"], sentence["score"]) for sentence in extracted["sentences"]]
    assert used == [(use.index, use.score) for use in extract.sentences]


def test_admission_counts_the_selectors_pass(selector_client, client):
    """At a second per token the selector reads, LONG (~500 tokens guessed) and even ARTICLE in
    the extractive mode or with the default copy mask (~37) are over one client's 30 s share;
    ARTICLE read whole without the mask is not."""
    engine = selector_client.app.state.service.batcher.engine
    assert engine.cost.per_selector_token > 0
    assert client.app.state.service.batcher.engine.cost.per_selector_token == 0  # no selector
    engine.cost = replace(engine.cost, per_selector_token=1.0)
    started = time.monotonic()
    long = selector_client.post("/v1/summarize", json={"text": LONG})
    assert long.status_code == 429 and "of model time" in long.json()["error"]
    assert time.monotonic() - started < 2  # at once
    extractive = selector_client.post("/v1/summarize", json={"text": ARTICLE, "mode": "extractive"})
    assert extractive.status_code == 429
    assert selector_client.post("/v1/summarize", json={"text": ARTICLE}).status_code == 429  # the mask reads
    unmasked = {"text": ARTICLE, "copy_mask_threshold": 0}
    assert selector_client.post("/v1/summarize", json=unmasked).status_code == 200


def test_a_request_that_times_out_stops_its_selector_pass(selector_bundle):
    """Pieces of 128 steps made 0.2 s slower: LONG's reading (several pieces) outlasts the 0.5 s
    timeout; after the 504 the engine holds nothing of it and reads no more of it."""
    tokens = len(document_sentences(load_bundle(selector_bundle), LONG)[1])
    pieces_needed = math.ceil(tokens / STRETCH_MULTIPLE)
    settings = make_settings(selector_bundle, selector_steps=STRETCH_MULTIPLE, request_timeout_s=0.5)
    with serving(settings) as client:
        engine = client.app.state.service.batcher.engine
        engine.cost = StepCost(per_row=1e-6, per_row_token=0.0, per_char=0.0)  # admit it: not tested here
        prepare, read = engine.prepare, []

        def slow(example):
            time.sleep(0.2)
            read.append(example.text)
            return prepare(example)

        engine.prepare = slow
        assert client.post("/v1/summarize", json={"text": LONG}).status_code == 504
        deadline = time.monotonic() + 2
        while engine.readers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not engine.readers  # its selector pass was dropped
        pieces = read.count(LONG)
        assert 0 < pieces < pieces_needed
        client.app.state.service.settings.request_timeout_s = 60
        assert client.post("/v1/summarize", json={"text": ARTICLE}).status_code == 200
        assert read.count(LONG) == pieces  # no piece of it after the timeout
        metrics = client.get("/metrics").text
    assert 'gatesum_cancelled_total{reason="timeout"} 1.0' in metrics
