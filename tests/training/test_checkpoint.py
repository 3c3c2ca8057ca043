"""What a killed run leaves behind: a log line cut short, temporary folders, a half-swapped bundle."""

from __future__ import annotations

import json

import pytest

from gatesum.model.errors import GatesumError
from gatesum.training.checkpoint import remove_stale_files, trim_metrics


def test_a_truncated_last_log_line_is_dropped_with_a_warning(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": step, "loss": 1.0}) for step in (2, 4, 6)]
    metrics.write_text("\n".join(lines) + "\n" + '{"step": 8, "lo')
    warnings = trim_metrics(metrics, step=4)
    assert warnings == [f"{metrics}: dropped its last line, cut short by the stop (15 characters)"]
    assert metrics.read_text() == lines[0] + "\n" + lines[1] + "\n"  # and the steps after the checkpoint
    assert trim_metrics(metrics, step=4) == [] and metrics.read_text() == lines[0] + "\n" + lines[1] + "\n"


def test_a_whole_last_line_without_its_newline_gets_one(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 2}\n{"step": 4}')
    assert trim_metrics(metrics, step=4) == []
    assert metrics.read_text() == '{"step": 2}\n{"step": 4}\n'  # the next record starts its own line


def test_a_broken_line_before_the_last_is_refused_by_number(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 2}\n{"step": 4, "lo\n{"step": 6}\n')
    with pytest.raises(GatesumError, match=r"metrics\.jsonl: line 2 is not JSON; mend or delete it"):
        trim_metrics(metrics, step=6)


def test_stale_temporaries_are_removed_and_a_half_swapped_bundle_put_back(tmp_path):
    for name in (".checkpoint.tmp-abc123", ".best.tmp-x9"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".metrics.jsonl.k2j3").write_text("half")
    (tmp_path / "best.old").mkdir()  # killed between best -> best.old and the new best -> best
    (tmp_path / "best.old" / "config.json").write_text("{}")
    (tmp_path / "keep.txt").write_text("mine")
    removed = remove_stale_files(tmp_path)
    assert removed == [".checkpoint.tmp-abc123", ".best.tmp-x9", ".metrics.jsonl.k2j3"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best", "keep.txt"]
    assert (tmp_path / "best" / "config.json").read_text() == "{}"
    assert remove_stale_files(tmp_path) == [] and remove_stale_files(tmp_path / "absent") == []
