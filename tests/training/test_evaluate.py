"""``gatesum eval``: the reports it writes, their numbers, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gatesum.model.bundle import load_bundle
from gatesum.model.text import normalize
from gatesum.training import summarize
from gatesum.training.rouge import aggregate, rouge_per_document
from tests.helpers import SOURCE_MAX_TOKENS, make_rows, write_jsonl

SENTENCES = [5, 3, 60, 45, 100, 170]  # 50, 30, 600, 450, 1000 and 1700 words: buckets of 2, 2, 1, 1


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "test.jsonl", make_rows(SENTENCES))


def eval_args(bundle: Path, data: Path | str, tmp_path: Path, *more: str) -> list:
    return ["eval", "--model", bundle, "--data-files", data, "--output-dir", tmp_path / "out",
            "--cache-dir", tmp_path / "cache", "--beam-size", "2", "--max-length", "8", *more]  # fmt: skip


def test_eval_writes_report_json_and_markdown(
    gatesum, tiny_bundle: Path, data_file: Path, tmp_path: Path
) -> None:
    result = gatesum(*eval_args(tiny_bundle, data_file, tmp_path, "--coverage-penalty", "0.5"))
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert result.out == markdown
    assert "Beam 2, 8–8 tokens, length penalty 1.0, no-repeat n-gram 3, coverage penalty 0.5." in markdown
    assert "summarizing" in result.err  # the progress bar

    assert report["documents"] == len(SENTENCES)
    for scores in report["model"].values():
        assert 0 <= scores <= 100
    # every reference is its document's first three sentences: Lead-3 is exact
    assert report["lead3"] == pytest.approx(dict.fromkeys(["rouge1", "rouge2", "rougeL", "rougeLsum"], 100))
    assert "| Lead-3 | 100.00 | 100.00 | 100.00 | 100.00 |" in markdown

    buckets = report["by_source_words"]
    assert [bucket["bucket"] for bucket in buckets] == ["≤400", "401–800", "801–1,600", ">1,600"]
    assert [bucket["documents"] for bucket in buckets] == [2, 2, 1, 1]
    assert sum(bucket["documents"] for bucket in buckets) == report["documents"]
    assert all(bucket["lead3"]["rouge1"] == pytest.approx(100) for bucket in buckets)
    assert "| >1,600 | 1 | Lead-3 | 100.00 | 100.00 | 100.00 | 100.00 |" in markdown

    bundle = load_bundle(tiny_bundle)
    articles = [row["article"] for row in make_rows(SENTENCES)]
    too_long = [len(bundle.tokenizer.encode(normalize(article))) > SOURCE_MAX_TOKENS for article in articles]
    assert 0 < sum(too_long) < len(articles)  # the check below can tell right from wrong
    assert report["truncation_rate"] == pytest.approx(sum(too_long) / len(articles), abs=1e-4)
    assert report["reads"] == {
        "whole": len(articles) - sum(too_long),
        "selected": 0,
        "truncated": sum(too_long),
    }
    assert report["mean_words"]["source"] == pytest.approx(
        sum(count * 10 for count in SENTENCES) / len(SENTENCES), abs=0.1
    )
    assert report["speed"]["documents_per_second"] > 0

    settings = report["settings"]
    assert settings["generation"]["beam_size"] == 2 and settings["generation"]["max_length"] == 8
    assert settings["generation"]["coverage_penalty"] == 0.5
    assert settings["source_max_tokens"] == SOURCE_MAX_TOKENS
    assert settings["command"].startswith("gatesum eval --model ") and "--beam-size 2" in settings["command"]
    assert report["bundle"] == {
        "name": "tiny-untrained",
        "path": str(tiny_bundle.resolve()),
        "training": {"source_max_tokens": SOURCE_MAX_TOKENS},
    }


def test_model_rouge_compares_normalized_summaries_with_normalized_references(
    gatesum, tiny_bundle: Path, data_file: Path, tmp_path: Path
) -> None:
    assert gatesum(*eval_args(tiny_bundle, data_file, tmp_path)).code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "out" / "summaries.jsonl").read_text().splitlines()]
    rows = make_rows(SENTENCES)
    assert [record["id"] for record in records] == [row["id"] for row in rows]  # input order
    expected = aggregate(rouge_per_document([record["normalized"] for record in records],
                                            [normalize(row["highlights"]) for row in rows]))  # fmt: skip
    assert report["model"] == pytest.approx(expected, abs=1e-3)


def test_eval_and_summarize_give_the_same_summaries(
    gatesum, tiny_bundle: Path, data_file: Path, tmp_path: Path
) -> None:
    """Both doors go through summarize_texts; eval's reordering by length must not mix documents up."""
    assert gatesum(*eval_args(tiny_bundle, data_file, tmp_path, "--batch-size", "2")).code == 0
    evaluated = [
        json.loads(line)["summary"]
        for line in (tmp_path / "out" / "summaries.jsonl").read_text().splitlines()
    ]
    result = gatesum(
        "summarize", "--model", tiny_bundle, "--input", data_file, "--beam-size", "2", "--max-length", "8"
    )
    assert result.code == 0, result.err
    assert [json.loads(line)["summary"] for line in result.out.splitlines()] == evaluated


def test_limit_split_placeholder_and_custom_columns(gatesum, tiny_bundle: Path, tmp_path: Path) -> None:
    rows = [{"text": row["article"], "summary": row["highlights"]} for row in make_rows(SENTENCES)]
    write_jsonl(tmp_path / "validation.jsonl", rows)
    columns = ["--text-column", "text", "--summary-column", "summary"]
    pattern = tmp_path / "{split}.jsonl"
    result = gatesum(
        *eval_args(tiny_bundle, pattern, tmp_path, "--split", "validation", "--limit", "3", *columns)
    )
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["documents"] == 3
    assert [bucket["documents"] for bucket in report["by_source_words"]] == [2, 1, 0, 0]
    assert report["by_source_words"][2]["model"] is None
    assert "| >1,600 | 0 | model | – | – | – | – |" in result.out


def test_default_output_dir_is_named_after_the_bundle(
    gatesum, tiny_bundle: Path, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = eval_args(tiny_bundle, data_file, tmp_path)
    del args[args.index("--output-dir") : args.index("--output-dir") + 2]
    assert gatesum(*args).code == 0
    assert (tmp_path / "runs" / "eval-tiny-untrained" / "report.json").is_file()


def corrupt_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a download cut short
    return broken


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing file", "nothing.jsonl: file not found"),
        ("unknown column", "no column 'body'"),
        ("empty file", "empty.jsonl: file is empty"),
        ("no pairs", "no non-empty pairs"),
        ("corrupt bundle", "model.safetensors: unreadable weights"),
        ("missing bundle", "model bundle not found"),
        ("bad setting", "--batch-size must be ≥ 1"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    gatesum, tiny_bundle: Path, data_file: Path, tmp_path: Path, case: str, message: str
) -> None:
    bundle, data, more = tiny_bundle, data_file, []
    if case == "missing file":
        data = tmp_path / "nothing.jsonl"
    elif case == "unknown column":
        more = ["--text-column", "body"]
    elif case == "empty file":
        data = tmp_path / "empty.jsonl"
        data.write_text("")
    elif case == "no pairs":
        data = write_jsonl(tmp_path / "blank.jsonl", [{"article": " ", "highlights": ""}])
    elif case == "corrupt bundle":
        bundle = corrupt_bundle(tiny_bundle, tmp_path)
    elif case == "missing bundle":
        bundle = tmp_path / "no-such-bundle"
    elif case == "bad setting":
        more = ["--batch-size", "0"]
    result = gatesum(*eval_args(bundle, data, tmp_path, *more))
    assert result.code == 2
    assert result.err.count("\n") == 1 and result.err.startswith("gatesum eval: error: "), result.err
    assert message in result.err and "Traceback" not in result.err
    assert result.out == "" and not (tmp_path / "out").exists()


def test_absent_default_model_is_a_clear_error(
    gatesum, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(summarize, "BUNDLED_MODEL", tmp_path / "pretrained" / "cnndm-lstm-small")
    result = gatesum("eval", "--data-files", data_file, "--output-dir", tmp_path / "out")
    assert result.code == 2
    default = tmp_path / "pretrained" / "cnndm-lstm-small"
    assert result.err == f"gatesum eval: error: no --model given and the bundled model {default} is absent\n"


def test_eval_reads_long_documents_by_the_selector_and_scores_the_extractive_mode(
    gatesum, make_selector_bundle, tiny_bundle: Path, data_file: Path, tmp_path: Path
) -> None:
    bundle = make_selector_bundle()
    assert gatesum(*eval_args(bundle, data_file, tmp_path)).code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reads"] == {"whole": 2, "selected": 4, "truncated": 0} and report["truncation_rate"] == 0
    assert [bucket["reads"]["selected"] for bucket in report["by_source_words"]] == [0, 2, 1, 1]
    assert report["settings"]["mode"] == "abstractive" and report["settings"]["selector"]["cell"] == "lstm"
    result = gatesum(
        *eval_args(bundle, data_file, tmp_path, "--mode", "extractive", "--extract-sentences", "3")
    )
    assert result.code == 0, result.err
    assert "Extractive: the content selector's best 3 sentences." in result.out
    records = [json.loads(line) for line in (tmp_path / "out" / "summaries.jsonl").read_text().splitlines()]
    assert all(len(record["sentences"]) == 3 and record["read"] == "whole" for record in records)
    truncated = gatesum(*eval_args(bundle, data_file, tmp_path, "--truncate"))
    assert truncated.code == 0, truncated.err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reads"] == {"whole": 2, "selected": 0, "truncated": 4}
    refused = gatesum(*eval_args(tiny_bundle, data_file, tmp_path, "--mode", "extractive"))
    assert refused.code != 0 and "extractive mode needs a content selector" in refused.err


def test_lead_words_sizes_the_baseline_to_the_references(
    gatesum, tiny_bundle: Path, data_file: Path, tmp_path: Path
) -> None:
    """Long documents are judged beside Lead-k, k sentences to the references' mean length."""
    result = gatesum(*eval_args(tiny_bundle, data_file, tmp_path, "--lead-words", "reference"))
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    words = report["lead"]["words"]
    assert words == round(report["mean_words"]["reference"])
    assert report["lead"]["label"] == f"Lead-k ({words} words)"
    assert report["lead3"]["rouge1"] == pytest.approx(100)  # the references are three sentences
    assert f"| Lead-k ({words} words) | 100.00 |" in result.out

    result = gatesum(*eval_args(tiny_bundle, data_file, tmp_path, "--lead-words", "1"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["mean_words"]["lead3"] == pytest.approx(report["mean_words"]["reference"] / 3, abs=0.5)


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_lead_words_must_be_a_length(
    gatesum, tiny_bundle: Path, data_file: Path, tmp_path: Path, value: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        gatesum(*eval_args(tiny_bundle, data_file, tmp_path, "--lead-words", value))
    assert exit_info.value.code == 2
    assert "argument --lead-words: must be a positive number of words" in capsys.readouterr().err
