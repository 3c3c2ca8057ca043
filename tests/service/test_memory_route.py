"""POST /v1/memory on tiny recall models trained in the fixture: the shape and the numbers of the
answer (the same as the model functions give), readable 422s, cost linear in the text (counted in
cell steps, not timed), and the example texts read from the data folder."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from gatesum.model.bundle import BUNDLED_MODEL, TOKENIZER_FILE
from gatesum.model.cells import _Cell
from gatesum.model.recall import CELL_NAMES, load_recall_models, recall_curve, recall_trace
from gatesum.model.text import normalize
from gatesum.model.tokenizer import Tokenizer
from gatesum.service.memory_state import sample_positions
from gatesum.service.settings import Settings
from tests.service.helpers import ARTICLE, serving
from tests.service.memory_helpers import generated_text, recall_models_once, write_examples


@pytest.fixture(scope="session")
def recall_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recall_models_once(tmp_path_factory)


@pytest.fixture
def memory_client(
    settings: Settings, recall_models: Path, tmp_path: Path, monkeypatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("GATESUM_RECALL_MODELS", str(recall_models))
    monkeypatch.setenv("GATESUM_DATA", str(write_examples(tmp_path / "data")))
    with serving(settings) as client:
        wait_for_memory(client)
        yield client


def wait_for_memory(client: TestClient) -> None:
    client.app.state.memory.loaded.wait(60)


def test_every_cell_gives_its_recall_trace_and_verdict(
    memory_client: TestClient, recall_models: Path
) -> None:
    response = memory_client.post("/v1/memory", json={"text": ARTICLE, "key": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    tokenizer = Tokenizer.load(BUNDLED_MODEL / TOKENIZER_FILE)
    ids = tokenizer.encode(normalize(ARTICLE))
    assert body["tokens"] == len(ids) and body["positions"] == list(range(len(ids)))
    assert body["key"] == 5 and body["key_symbols"] == 8 and body["chance"] == 0.125
    assert body["pieces"] == tokenizer.id_to_piece(ids)
    assert [cell["name"] for cell in body["cells"]] == list(CELL_NAMES)
    models = load_recall_models(recall_models, tokenizer)
    for cell in body["cells"]:
        model = models[cell["name"]].model
        curve, trace = recall_curve(model, ids, 5), recall_trace(model, ids, 5)
        assert cell["recall"] == pytest.approx(curve.tolist(), rel=1e-3, abs=1e-6)
        assert cell["trace"] == pytest.approx(trace[1:].tolist(), rel=1e-3, abs=1e-30)
        assert cell["key_trace"] == pytest.approx(trace[0].item(), rel=1e-3, abs=1e-30)
        assert cell["trace"][-1] == 1.0 and cell["final_recall"] == cell["recall"][-1]
        assert cell["correct"] == (cell["answer"] == 5) and 0 <= cell["answer"] < 8
        assert 0 <= cell["held_to"] <= len(ids)
        if cell["correct"] and cell["final_recall"] > 0.5:
            assert cell["held_to"] >= 1
    assert body["elapsed_ms"] > 0


def test_the_default_key_comes_from_the_text_and_cells_can_be_chosen(memory_client: TestClient) -> None:
    first = memory_client.post("/v1/memory", json={"text": ARTICLE, "cells": ["lstm", "rnn"]}).json()
    again = memory_client.post("/v1/memory", json={"text": ARTICLE, "cells": ["lstm", "rnn"]}).json()
    assert first["key"] == again["key"] and [c["name"] for c in first["cells"]] == ["lstm", "rnn"]
    keys = {memory_client.post("/v1/memory", json={"text": f"{ARTICLE} {i}"}).json()["key"] for i in range(8)}
    assert len(keys) > 1  # not one fixed key for every text


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"text": ""}, "The text is empty."),
        ({"text": "   "}, "The text is empty or only whitespace."),
        ({"text": "x" * 100_001}, "The text is longer than 100,000 characters."),
        ({"text": ARTICLE, "key": 8}, "The key must be less than 8: the models know 8 keys."),
        ({"text": ARTICLE, "key": -1}, "key must be at least 0."),
        ({"text": ARTICLE, "key": "3"}, "key must be a whole number."),
        ({"text": ARTICLE, "cells": []}, "cells is empty."),
        ({"text": ARTICLE, "cells": ["lstm", "lstm"]}, "cells names a cell twice."),
        ({"text": ARTICLE, "cells": ["transformer"]}, "cells[0]"),
        ({"text": ARTICLE, "beam_size": 4}, "beam_size is not a known field."),
    ],
)
def test_bad_input_is_a_readable_422(memory_client: TestClient, body: dict, reason: str) -> None:
    response = memory_client.post("/v1/memory", json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith(reason)


def test_long_texts_come_back_sampled_to_at_most_2000_points() -> None:
    assert sample_positions(5) == [0, 1, 2, 3, 4]
    positions = sample_positions(25_000)
    assert len(positions) <= 2000 and positions == sorted(set(positions))
    assert positions[:10] == list(range(10)) and positions[-1] == 24_999  # dense at the start
    assert max(b - a for a, b in itertools.pairwise(positions)) <= 26  # and spread over the rest


def test_cost_is_linear_in_the_text(memory_client: TestClient, monkeypatch) -> None:
    """Counted cell steps, not seconds: a fixed number of steps per token for every cell."""
    steps = []
    for kind in _Cell.__subclasses__():
        original = kind.step
        monkeypatch.setattr(
            kind, "step", lambda self, *a, _step=original, **k: steps.append(1) or _step(self, *a, **k)
        )
    counts = {}
    for words in (600, 1200, 2400):
        steps.clear()
        body = memory_client.post("/v1/memory", json={"text": generated_text(words)}).json()
        counts[body["tokens"]] = len(steps)
    # gated cells read key + text once, the RNN twice (readout, then the autograd trace): 5 passes
    assert all(count == 5 * (tokens + 1) for tokens, count in counts.items()), counts
    assert max(counts) > 2500  # the long text is sampled, the work is not


def test_examples_are_read_from_the_data_folder(memory_client: TestClient) -> None:
    examples = memory_client.get("/v1/memory/examples").json()["examples"]
    assert [example["id"] for example in examples] == ["news", "meeting"]
    assert examples[0]["text"] == generated_text(400, 2)  # the longest article
    assert 0 < len(examples[1]["text"]) <= 50_000 and "QMSum" in examples[1]["title"]


def test_without_a_data_folder_there_are_no_examples_and_without_models_503(
    settings: Settings, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("GATESUM_RECALL_MODELS", str(tmp_path / "none"))
    monkeypatch.setenv("GATESUM_DATA", str(tmp_path / "absent"))
    with serving(settings) as client:
        wait_for_memory(client)
        response = client.post("/v1/memory", json={"text": ARTICLE})
        assert response.status_code == 503 and "no recall models" in response.json()["error"]
        assert str(tmp_path) not in response.text
        assert client.post("/v1/summarize", json={"text": ARTICLE}).status_code == 200  # unaffected


def test_the_readout_matches_the_curve_and_trace_functions(recall_models: Path) -> None:
    from gatesum.model.recall_readout import read_document

    models = load_recall_models(recall_models)
    ids = torch.randint(16000, (300,), generator=torch.Generator().manual_seed(0))
    for loaded in models.values():
        readout = read_document(loaded.model, ids, 2)
        assert torch.allclose(readout.recall, recall_curve(loaded.model, ids, 2), atol=1e-6)
        assert torch.allclose(readout.trace, recall_trace(loaded.model, ids, 2), atol=1e-6)
        assert readout.correct.shape == (300,)
