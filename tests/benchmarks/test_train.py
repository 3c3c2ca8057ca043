"""gatesum bench train: the three decoders' training steps side by side, on both clocks."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def test_every_case_is_timed_on_both_clocks(gatesum, tmp_path: Path) -> None:
    output = tmp_path / "train.json"
    threads = torch.get_num_threads()
    try:
        result = gatesum(
            "bench", "train", "--batch-size", "2", "--source-length", "12", "--target-length", "4",
            "--repeats", "1", "--warmup", "0", "--threads", "1", "--phases", "before-coverage",
            "--clock", "wall", "--output", output,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert result.code == 0, result.err
    record = json.loads(output.read_text())
    assert record["settings"]["clock"] == "wall" and record["settings"]["tokens_per_step"] == 2 * 12 + 2 * 4
    rows = record["results"]
    assert [row["case"][:3] for row in rows] == ["(a)", "(b)", "(c)"]
    assert rows[0]["speedup"] == rows[0]["wall_speedup"] == 1.0
    for row in rows:
        assert row["ms_per_step"] == row["wall_ms_per_step"] and row["cpu_ms_per_step"] > 0
        assert abs(row["tokens_per_s"] * row["ms_per_step"] / 1e3 - 32) < 1e-6
