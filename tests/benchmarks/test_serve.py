"""gatesum bench serve: the service's throughput for bundles side by side in one run."""

from __future__ import annotations

import json
from pathlib import Path


def test_two_bundles_run_each_phase_and_the_second_is_relative_to_the_first(
    gatesum, tiny_bundle: Path, tmp_path: Path
) -> None:
    output = tmp_path / "serve.json"
    result = gatesum(
        "bench", "serve", "--model", tiny_bundle, "--model", tiny_bundle, "--requests", "4",
        "--concurrency", "2", "--max-length", "4", "--beam-size", "1", "--torch-threads", "1",
        "--json", output,
    )  # fmt: skip
    assert result.code == 0, result.err
    record = json.loads(output.read_text())
    assert record["command"].startswith("gatesum bench serve") and len(record["models"]) == 2
    for run in record["models"]:
        assert run["batching on"]["statuses"] == {"200": 4} and run["batching off"]["statuses"] == {"200": 4}
        assert run["ratio"] > 0
    assert record["models"][0]["relative_to_first"] == {"batching on": 1.0, "batching off": 1.0}


def test_rounds_take_turns_and_report_the_median(gatesum, tiny_bundle: Path, tmp_path: Path) -> None:
    output = tmp_path / "serve.json"
    result = gatesum(
        "bench", "serve", "--model", tiny_bundle, "--model", tiny_bundle, "--requests", "3", "--rounds", "3",
        "--concurrency", "2", "--max-length", "4", "--beam-size", "1", "--torch-threads", "1",
        "--json", output,
    )  # fmt: skip
    assert result.code == 0, result.err
    record = json.loads(output.read_text())
    for run in record["models"]:
        for phase in ("batching on", "batching off"):
            assert len(run[phase]["rounds"]) == 3 and run[phase]["statuses"] == {"200": 3}
            assert run[phase]["throughput"] == sorted(run[phase]["rounds"])[1]  # the median round's
    first, second = record["models"]
    assert first["batching on"]["ratio_to_first_by_round"] == [1.0, 1.0, 1.0]
    by_round = second["batching on"]["ratio_to_first_by_round"]
    assert second["relative_to_first"]["batching on"] == sorted(by_round)[1]


def test_mixed_load_takes_one_model(gatesum, tiny_bundle: Path) -> None:
    result = gatesum("bench", "serve", "--mode", "mixed", "--model", tiny_bundle, "--model", tiny_bundle)
    assert result.code == 2 and "--mode mixed takes one --model" in result.err
