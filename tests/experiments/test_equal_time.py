"""gatesum compare: runs trained side by side, scored on the same validation documents."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import make_rows, write_jsonl, write_pairs
from tests.training.test_train import train_arguments


def test_runs_are_scored_on_the_same_documents_and_one_wins(gatesum, tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    runs = []
    for name, extra in (
        ("feeding", ()),
        ("parallel", ("--model", "input_feeding=false", "--model", "attention=general")),
    ):
        runs.append(tmp_path / name)
        arguments = train_arguments(data, runs[-1], 4, "--eval-every", "2", "--clock", "cpu", *extra)
        assert gatesum(*arguments).code == 0
    validation = write_jsonl(tmp_path / "validation.jsonl", make_rows([4, 6, 8]))
    output = tmp_path / "compare"
    result = gatesum(
        "compare", "--run", runs[0], "--run", runs[1], "--data-files", validation, "--limit", "3",
        "--beam-size", "2", "--max-length", "6", "--threads", "1", "--output-dir", output,
    )  # fmt: skip
    assert result.code == 0, result.err
    payload = json.loads((output / "compare.json").read_text())
    assert payload["documents"] == 3 and payload["command"].startswith("gatesum compare")
    assert [row["decoder"] for row in payload["runs"]] == ["input feeding, additive", "parallel, bilinear"]
    assert sum(row["winner"] for row in payload["runs"]) == 1
    assert all(row["clock"] == "cpu" and row["steps"] == 4 for row in payload["runs"])
    assert [point["step"] for point in payload["runs"][1]["validation_curve"]] == [2, 4]
    assert (output / "compare.png").stat().st_size > 0 and "| Lead-3 |" in (output / "compare.md").read_text()


def test_a_directory_without_a_checkpoint_is_one_error_line(gatesum, tmp_path: Path) -> None:
    result = gatesum("compare", "--run", tmp_path, "--output-dir", tmp_path / "out")
    assert result.code == 2 and "no checkpoint/" in result.err
