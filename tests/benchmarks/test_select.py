"""gatesum bench select: the content selector's time and memory by document length."""

from __future__ import annotations

import json
from pathlib import Path


def test_each_length_is_timed_on_both_paths_with_its_memory(gatesum, tmp_path: Path) -> None:
    config = tmp_path / "selector.toml"
    config.write_text("[model]\nembedding_size = 8\nhidden_size = 8\nnum_layers = 1\n")
    output = tmp_path / "select.json"
    result = gatesum(
        "bench", "select", "--config", config, "--tokens", "50", "300", "--rounds", "1", "--output", output
    )
    assert result.code == 0, result.err
    record = json.loads(output.read_text())
    assert record["command"].startswith("gatesum bench select") and record["selector"]["hidden_size"] == 8
    assert [row["tokens"] for row in record["results"]] == [50, 300]
    for row in record["results"]:
        assert row["one_pass_s"] > 0 and row["in_pieces_s"] > 0 and row["memory_mb"] >= 0
    assert record["per_token_growth"] > 0


def test_a_bundle_without_a_selector_is_one_error_line(gatesum, tiny_bundle: Path) -> None:
    result = gatesum("bench", "select", "--model", tiny_bundle, "--tokens", "50")
    assert result.code != 0 and "has no content selector" in result.err


def test_a_length_below_one_is_refused(gatesum) -> None:
    result = gatesum("bench", "select", "--tokens", "0")
    assert result.code == 2 and "must be positive" in result.err
