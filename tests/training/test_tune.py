"""gatesum tune: a decoding grid on validation documents, best point first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatesum.model.errors import GatesumError
from gatesum.model.search import GenerationConfig
from gatesum.training.tune import grid_points, parse_grid
from tests.helpers import make_rows, write_jsonl

SENTENCES = [5, 3, 8, 6]


def test_every_combination_runs_and_the_best_comes_first(gatesum, tiny_bundle: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "validation.jsonl", make_rows(SENTENCES))
    result = gatesum(
        "tune", "--model", tiny_bundle, "--data-files", data, "--limit", "4",
        "--output-dir", tmp_path / "out", "--cache-dir", tmp_path / "cache",
        "--max-length", "6", "--grid", "min_length=0,3", "--grid", "length_penalty=0.5,1.0,2.0",
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert report["documents"] == 4 and len(report["points"]) == 6
    assert {(p["settings"]["min_length"], p["settings"]["length_penalty"]) for p in report["points"]} == {
        (m, a) for m in (0, 3) for a in (0.5, 1.0, 2.0)
    }
    scores = [point["selection_score"] for point in report["points"]]
    assert scores == sorted(scores, reverse=True) and report["best"] == report["points"][0]["settings"]
    assert report["base_generation"]["max_length"] == 6 and report["command"].startswith("gatesum tune")
    assert "| min_length | length_penalty | R-1 |" in result.out
    assert (tmp_path / "out" / "grid.md").read_text() == result.out


def test_grid_points_keep_the_other_settings() -> None:
    base = GenerationConfig(beam_size=2)
    points = grid_points(base, {"min_length": [0, 10], "no_repeat_ngram_size": [0, 3]})
    assert len(points) == 4 and all(point.beam_size == 2 for point in points)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([], "at least one --grid"),
        (["temperature=1,2"], "'temperature' is not a generation setting"),
        (["min_length=0,x"], "'x' is not a int"),
        (["beam_size=0,4"], "beam_size"),
        (["min_length=0", "min_length=3"], "given twice"),
    ],
)
def test_a_bad_grid_is_one_clear_error(items: list[str], message: str) -> None:
    with pytest.raises(GatesumError, match=message):
        parse_grid(items)
