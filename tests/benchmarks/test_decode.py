"""gatesum bench decode: bundles side by side on the same full-window articles."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import make_rows, write_jsonl


def test_two_bundles_are_timed_on_the_same_articles(gatesum, tiny_bundle: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "validation.jsonl", make_rows([2, 60, 70, 80]))  # the first is too short
    output = tmp_path / "decode.json"
    result = gatesum(
        "bench", "decode", "--model", tiny_bundle, "--model", tiny_bundle, "--data-file", data,
        "--documents", "2", "--rounds", "1", "--beam-size", "2", "--threads", "1", "--output", output,
    )  # fmt: skip
    assert result.code == 0, result.err
    record = json.loads(output.read_text())
    assert record["command"].startswith("gatesum bench decode") and record["settings"]["documents"] == 2
    assert record["results"][0]["speed_vs_first"] == 1.0
    assert all(row["documents_per_second"] > 0 for row in record["results"])
