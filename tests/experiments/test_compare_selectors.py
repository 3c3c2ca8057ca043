"""gatesum select compare: selectors of each cell scored on the same documents, by source length."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gatesum import cli
from tests.helpers import make_rows, write_jsonl, write_pairs
from tests.training.test_selector import selector_arguments

# one validation document per bucket, two in the first: 40, 300, 450, 900 and 1,700 words
SENTENCE_COUNTS = [4, 30, 45, 90, 170]
RUNS = {"rnn-uni": ("cell=rnn", "bidirectional=false"), "lstm-bi": ("cell=lstm", "bidirectional=true")}


@pytest.fixture(scope="module")
def selector_runs(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny selectors, a plain RNN one way and an LSTM both ways, 3 steps each on the cpu clock."""
    root = tmp_path_factory.mktemp("selector-runs")
    data = write_pairs(root / "pairs.jsonl", 40)
    argv = sys.argv
    try:
        for name, (cell, direction) in RUNS.items():
            extra = ("--clock", "cpu", "--eval-every", "2", "--model", cell, "--model", direction)
            assert cli.main(selector_arguments(data, root / name, tiny_bundle, 3, *extra)) == 0
    finally:
        sys.argv = argv
    return {name: root / name for name in RUNS}


def compare_arguments(runs: dict[str, Path], bundle: Path, validation: Path, output: Path, *extra) -> list:
    return [
        "select", "compare", *(item for run in runs.values() for item in ("--run", run)), "--bundle", bundle,
        "--data-files", validation, "--limit", "5", "--threads", "1", "--device", "cpu",
        "--output-dir", output, *extra,
    ]  # fmt: skip


def test_each_run_is_scored_per_bucket_beside_lead3(gatesum, selector_runs, tiny_bundle, tmp_path):
    validation = write_jsonl(tmp_path / "validation.jsonl", make_rows(SENTENCE_COUNTS))
    output = tmp_path / "compare"
    result = gatesum(*compare_arguments(selector_runs, tiny_bundle, validation, output))
    assert result.code == 0, result.err
    payload = json.loads((output / "compare.json").read_text())
    assert payload["documents"] == 5 and payload["command"].startswith("gatesum select compare")
    assert payload["weights"] == "checkpoint" and payload["truncation"] is None
    assert [(row["cell"], row["bidirectional"]) for row in payload["runs"]] == [
        ("rnn", False),
        ("lstm", True),
    ]
    for row in payload["runs"]:
        budget = row["budget"]
        assert budget["clock"] == "cpu" and budget["steps"] == budget["weights_step"] == 3
        assert budget["stopped_by"] == "max_steps" and [p["step"] for p in budget["validation_curve"]] == [
            2,
            3,
        ]
        buckets = row["selection"]["by_source_words"]
        assert [bucket["documents"] for bucket in buckets] == [2, 1, 1, 1]
        assert all(0 <= bucket["metrics"]["auc"] <= 1 and "f1" in bucket["metrics"] for bucket in buckets)
        assert sum(bucket["metrics"]["tokens"] for bucket in buckets) == row["selection"]["overall"]["tokens"]
        assert all(bucket["model"]["rouge1"] > 0 for bucket in row["extractive"]["by_source_words"])
        assert row["select_then_summarize"] is None
    # one tokenizer, the same labels: every run is scored on the very same tokens
    assert len({row["selection"]["overall"]["tokens"] for row in payload["runs"]}) == 1
    assert [bucket["documents"] for bucket in payload["lead3"]["by_source_words"]] == [2, 1, 1, 1]
    markdown = (output / "compare.md").read_text()
    assert "## Token ROC AUC by source length" in markdown and "| Lead-3 |" in markdown
    assert "| rnn-uni | rnn | 1 | cpu |" in markdown and "| lstm-bi | lstm | 2 | cpu |" in markdown
    assert "Select-then-summarize" not in markdown and (output / "compare.png").stat().st_size > 0


def test_scores_are_those_of_gatesum_eval_on_the_run_bundle(gatesum, selector_runs, tiny_bundle, tmp_path):
    """--weights best with --summarize: the extractive and select-then-summarize numbers are
    ``gatesum eval``'s for the run's best/ bundle, in each mode; truncation is the same
    summarizer without its selector (``gatesum eval --truncate``)."""
    validation = write_jsonl(tmp_path / "validation.jsonl", make_rows(SENTENCE_COUNTS))
    decoding = ("--beam-size", "2", "--max-length", "6")
    runs = {"lstm-bi": selector_runs["lstm-bi"]}
    result = gatesum(*compare_arguments(runs, tiny_bundle, validation, tmp_path / "c", "--weights", "best",
                                        "--summarize", *decoding))  # fmt: skip
    assert result.code == 0, result.err
    payload = json.loads((tmp_path / "c" / "compare.json").read_text())
    (row,) = payload["runs"]
    assert payload["weights"] == "best" and row["budget"]["weights_step"] in (2, 3)
    reports = {}
    for name, extra in (
        ("extractive", ("--mode", "extractive")),
        ("abstractive", ()),
        ("truncated", ("--truncate",)),
    ):
        eval_result = gatesum("eval", "--model", runs["lstm-bi"] / "best", "--data-files", validation,
                              "--limit", "5", "--device", "cpu", "--output-dir", tmp_path / name,
                              *decoding, *extra)  # fmt: skip
        assert eval_result.code == 0, eval_result.err
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    for name, scores in (("extractive", row["extractive"]), ("abstractive", row["select_then_summarize"]),
                         ("truncated", payload["truncation"])):  # fmt: skip
        assert scores["rouge"] == reports[name]["model"]
        assert [bucket["model"] for bucket in scores["by_source_words"]] == [
            bucket["model"] for bucket in reports[name]["by_source_words"]
        ]
    assert row["select_then_summarize"]["reads"]["selected"] > 0  # past the tiny window of 128 tokens
    assert payload["lead3"]["rouge"] == reports["extractive"]["lead3"]
    assert "Select-then-summarize" in (tmp_path / "c" / "compare.md").read_text()


def test_a_bad_run_is_one_error_line(gatesum, selector_runs, tiny_bundle, tmp_path):
    validation = write_jsonl(tmp_path / "validation.jsonl", make_rows([4]))
    runs = {"good": selector_runs["rnn-uni"], "bad": tmp_path}
    result = gatesum(*compare_arguments(runs, tiny_bundle, validation, tmp_path / "out"))
    assert result.code == 2 and result.err.count("\n") == 1
    assert "gatesum select: error:" in result.err and "no checkpoint/" in result.err
    best = gatesum(
        *compare_arguments({"bad": tmp_path}, tiny_bundle, validation, tmp_path / "out", "--weights", "best")
    )
    assert best.code == 2 and "no best/" in best.err
    assert not (tmp_path / "out").exists()  # refused before any work
