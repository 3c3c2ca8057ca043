"""Generation settings in the service: defaults, bounds and help come from ``GenerationConfig``
(settings and request schema alike); the frozen config is the micro-batch key; β is reachable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gatesum.model.search import GENERATION_SETTINGS, GenerationConfig
from gatesum.service import state
from gatesum.service.schemas import SummarizeRequest
from gatesum.service.settings import Settings
from gatesum.service.state import BatchKey
from tests.service.helpers import ARTICLE, make_settings, serving


def test_settings_take_their_generation_defaults_and_bounds_from_generation_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(model=Path("m")).generation == GenerationConfig()
    for setting in GENERATION_SETTINGS:
        field = Settings.model_fields[setting.name]
        assert field.default == setting.default and field.description == setting.help
        with pytest.raises(ValidationError, match=setting.name):
            Settings(model=Path("m"), **{setting.name: setting.maximum + 1})
    monkeypatch.setenv("GATESUM_BEAM_SIZE", "2")
    monkeypatch.setenv("GATESUM_COVERAGE_PENALTY", "0.5")
    assert Settings().generation == GenerationConfig(beam_size=2, coverage_penalty=0.5)


def test_request_schema_takes_bounds_and_help_from_generation_config(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SummarizeRequest"]
    for setting in GENERATION_SETTINGS:
        field = schema["properties"][setting.name]
        allowed = field["anyOf"][0]
        assert (allowed["minimum"], allowed["maximum"]) == (setting.minimum, setting.maximum)
        assert allowed["type"] == ("integer" if setting.kind is int else "number")
        assert field["description"] == setting.help and field.get("default") is None  # optional
    assert "A min_length above max_length is lowered to max_length" in schema["description"]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("beam_size", True, "beam_size must be a whole number."),
        ("beam_size", "4", "beam_size must be a whole number."),
        ("beam_size", 4.5, "beam_size must be a whole number."),  # 4.0 is 4, as in JSON Schema
        ("length_penalty", "1.0", "length_penalty must be a number."),
        ("coverage_penalty", 5.5, "coverage_penalty must be at most 5.0."),
        ("coverage_penalty", -1, "coverage_penalty must be at least 0.0."),
    ],
)
def test_generation_fields_are_strict_and_bounded(client: TestClient, field: str, value, reason: str) -> None:
    response = client.post("/v1/summarize", json={"text": ARTICLE, field: value})
    assert response.status_code == 422 and response.json()["error"] == reason


def test_the_request_over_the_service_defaults_is_the_batch_key(tiny_bundle: Path) -> None:
    with serving(make_settings(tiny_bundle, min_length=6)) as client:
        service = client.app.state.service
        asked = service.generation(SummarizeRequest(text=ARTICLE, beam_size=2, coverage_penalty=0.5))
        assert asked == replace(service.settings.generation, beam_size=2, coverage_penalty=0.5)
        assert asked.min_length == 6 and asked.max_length == 8  # make_settings: greedy, max_length 8
        short = service.generation(SummarizeRequest(text=ARTICLE, max_length=4))
        assert (short.min_length, short.max_length) == (4, 4)  # a default min above the asked max
    same = BatchKey(GenerationConfig(beam_size=2), explain=False)
    assert same == BatchKey(GenerationConfig(beam_size=2), explain=False) and hash(same) == hash(
        BatchKey(GenerationConfig(beam_size=2), explain=False)
    )
    assert same != BatchKey(GenerationConfig(beam_size=2, coverage_penalty=0.5), explain=False)


def test_coverage_penalty_reaches_the_search(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path) -> None:
    used: list[GenerationConfig] = []
    admit = state.ServiceEngine.admit

    def spy(engine, examples):
        used.append(examples[0].request.key.generation)
        return admit(engine, examples)

    monkeypatch.setattr(state.ServiceEngine, "admit", spy)
    with serving(make_settings(tiny_bundle)) as client:
        response = client.post(
            "/v1/summarize", json={"text": ARTICLE, "beam_size": 2, "coverage_penalty": 0.5}
        )
    assert response.status_code == 200, response.text
    assert used == [GenerationConfig(beam_size=2, max_length=8, min_length=8, coverage_penalty=0.5)]


def test_a_device_the_machine_lacks_is_a_readable_503(tiny_bundle: Path) -> None:
    with serving(make_settings(tiny_bundle, device="gpu")) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "GATESUM_DEVICE 'gpu': not a device (auto, cpu, cuda, cuda:N or mps)"
