"""``gatesum summarize``: JSON Lines and plain text in, JSON Lines out; one-line errors naming the line."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from gatesum.model.search import GENERATION_SETTINGS
from gatesum.training import summarize
from tests.helpers import make_rows, write_jsonl

FAST = ("--beam-size", "1", "--max-length", "6")


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_keep_their_fields_and_gain_summary_and_truncated(
    gatesum, tiny_bundle: Path, tmp_path: Path
) -> None:
    rows = make_rows([4, 30, 2])
    rows[1]["extra"] = {"nested": [1, 2]}
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output_path = tmp_path / "o" / "out.jsonl"
    result = gatesum("summarize", "--model", tiny_bundle, "--input", source, "--output", output_path, *FAST)
    assert result.code == 0, result.err
    assert result.out == "" and "summarizing" in result.err  # progress bar for file input
    output = read_jsonl(output_path.read_text(encoding="utf-8"))
    assert [{key: row[key] for key in rows[0] if key in row} for row in output] == [
        {key: row[key] for key in rows[0]} for row in rows
    ]
    assert output[1]["extra"] == {"nested": [1, 2]}
    assert all(isinstance(row["summary"], str) and isinstance(row["truncated"], bool) for row in output)
    assert [row["truncated"] for row in output] == [False, True, False]  # 300 words > 128 tokens


def test_gzipped_input_custom_field_and_empty_text(gatesum, tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl.gz"
    lines = [{"body": "Police said the storm hit the coast."}, {"body": ""}]
    source.write_bytes(gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode()))
    result = gatesum("summarize", "--model", tiny_bundle, "--input", source, "--text-field", "body", *FAST)
    assert result.code == 0, result.err
    output = read_jsonl(result.out)
    assert [row["body"] for row in output] == [line["body"] for line in lines]
    assert output[1]["summary"] == "" and output[1]["truncated"] is False  # nothing to summarize


def test_plain_text_blocks_are_documents(gatesum, tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text(
        "First document.\nStill the first.\n\n\n  \nSecond document.\n\nThird.\n", encoding="utf-8"
    )
    result = gatesum("summarize", "--model", tiny_bundle, "--input", source, *FAST)
    assert result.code == 0, result.err
    output = read_jsonl(result.out)
    assert [(row["document"], row["line"]) for row in output] == [(1, 1), (2, 6), (3, 8)]
    fields = {"document", "line", "summary", "truncated", "read", "sentences"}
    assert all(set(row) == fields for row in output)


def test_stdin_to_stdout_without_a_progress_bar(
    gatesum, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"One story.\n\nAnother story.\n")))
    result = gatesum("summarize", "--model", tiny_bundle, *FAST)
    assert result.code == 0, result.err
    assert [row["document"] for row in read_jsonl(result.out)] == [1, 2]
    assert result.err == ""


def test_json_lines_detected_by_the_first_line(gatesum, tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_text('\n{"article": "The court found the report."}\n', encoding="utf-8")
    output = read_jsonl(gatesum("summarize", "--model", tiny_bundle, "--input", source, *FAST).out)
    assert list(output[0]) == ["article", "summary", "truncated", "read", "sentences"]
    forced = read_jsonl(
        gatesum("summarize", "--model", tiny_bundle, "--input", source, "--format", "text", *FAST).out
    )
    assert list(forced[0]) == ["document", "line", "summary", "truncated", "read", "sentences"]


def test_an_interrupted_run_keeps_what_it_wrote(
    gatesum, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results are flushed chunk by chunk: stopping in the second chunk keeps the first."""
    calls = []
    real = summarize.summarize_texts

    def interrupted_on_second_chunk(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(summarize, "CHUNK_DOCUMENTS", 5)  # with --batch-size 1: chunks of 5 documents
    monkeypatch.setattr(summarize, "summarize_texts", interrupted_on_second_chunk)
    source = write_jsonl(tmp_path / "in.jsonl", make_rows([2] * 12))
    output = tmp_path / "out.jsonl"
    result = gatesum(
        "summarize", "--model", tiny_bundle, "--input", source, "--output", output, "--batch-size", "1", *FAST
    )
    assert result.code == 130
    written = read_jsonl(output.read_text())
    assert calls == [5, 5]
    assert [row["id"] for row in written] == [f"doc-{index}" for index in range(5)]


def corrupt_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "config.json").write_text('{"format": "gatesum-bundle", ')
    return broken


GOOD = '{"id": 1, "article": "Police said."}\n'


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("in.jsonl", GOOD.encode() * 2 + b'{"article": "caf\xe9"}\n', "in.jsonl: line 3 is not UTF-8"),
        ("in.jsonl", (GOOD + '{"article": "unfinished\n').encode(), "in.jsonl: line 2 is not valid JSON"),
        ("in.jsonl", (GOOD + "[1, 2]\n").encode(), "in.jsonl: line 2 is not a JSON object"),
        (
            "in.jsonl",
            (GOOD + '\n{"id": 2, "text": "x"}\n').encode(),
            "in.jsonl: line 3 has no field 'article' (fields: id, text)",
        ),
        (
            "in.jsonl",
            (GOOD + '{"article": null}\n').encode(),
            "in.jsonl: line 2: field 'article' is null, not text",
        ),
        (
            "in.jsonl",
            (GOOD + '{"article": ["a"]}\n').encode(),
            "in.jsonl: line 2: field 'article' is a list, not text",
        ),
        ("in.txt", b"fine\n\nnot \xff utf-8\n", "in.txt: line 3 is not UTF-8"),
        ("in.txt", b"\n \n", "in.txt: no documents"),
        ("in.jsonl.gz", b"not gzip at all", "in.jsonl.gz: unreadable"),
    ],
)
def test_bad_input_fails_before_any_work_with_one_line(
    gatesum, tiny_bundle: Path, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    output = tmp_path / "out.jsonl"
    output.write_text("an earlier run's results\n")
    result = gatesum("summarize", "--model", tiny_bundle, "--input", source, "--output", output, *FAST)
    assert result.code == 2
    assert result.err.startswith(f"gatesum summarize: error: {tmp_path}/{message}"), result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert output.read_text() == "an earlier run's results\n"  # not clobbered


@pytest.mark.parametrize("case", ["missing file", "corrupt bundle", "missing bundle"])
def test_missing_file_and_bad_bundle(gatesum, tiny_bundle: Path, tmp_path: Path, case: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", make_rows([2]))
    bundle = tiny_bundle
    if case == "missing file":
        source = tmp_path / "absent.jsonl"
    elif case == "corrupt bundle":
        bundle = corrupt_bundle(tiny_bundle, tmp_path)
    else:
        bundle = tmp_path / "nowhere"
    result = gatesum("summarize", "--model", bundle, "--input", source, *FAST)
    expected = {"missing file": f"{source}: file not found", "corrupt bundle": "config.json: not valid JSON",
                "missing bundle": f"model bundle not found: {bundle} is not a directory"}[case]  # fmt: skip
    assert result.code == 2
    assert result.err.startswith("gatesum summarize: error: ") and result.err.count("\n") == 1, result.err
    assert expected in result.err and result.out == ""


def test_help_says_that_blank_lines_separate_plain_text_documents(
    gatesum, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gatesum("summarize", "--help")
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "plain text, where blank lines separate documents" in help_text  # --input
    assert "Plain-text input: blank lines separate documents" in help_text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--beam-size", "17"), "--beam-size must be between 1 and 16, not 17"),
        (("--max-length", "0"), "--max-length must be between 1 and 256, not 0"),
        (("--no-repeat-ngram-size", "-1"), "--no-repeat-ngram-size must be between 0 and 16, not -1"),
        (("--coverage-penalty", "-0.5"), "--coverage-penalty must be between 0.0 and 5.0, not -0.5"),
        (("--device", "gpu"), "--device 'gpu': not a device (auto, cpu, cuda, cuda:N or mps)"),
    ],
)
def test_a_setting_out_of_bounds_is_one_error_line_naming_the_flag(
    gatesum, tiny_bundle: Path, tmp_path: Path, flags: tuple[str, str], message: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", make_rows([2]))
    result = gatesum("summarize", "--model", tiny_bundle, "--input", source, *FAST, *flags)
    assert (result.code, result.out) == (2, "")
    assert result.err == f"gatesum summarize: error: {message}\n"


def test_every_generation_setting_is_a_flag_with_its_default_and_bounds(
    gatesum, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: argparse breaks lines at hyphens too
    with pytest.raises(SystemExit):
        gatesum("summarize", "--help")
    help_text = " ".join(capsys.readouterr().out.split())
    for setting in GENERATION_SETTINGS:
        flag = "--" + setting.name.replace("_", "-")
        assert f"{flag} {'N' if setting.kind is int else 'X'} {setting.help}" in help_text
        assert f"[{setting.minimum}–{setting.maximum}, default {setting.default}]" in help_text


def test_a_long_document_is_read_by_the_selector_and_extractive_mode(
    gatesum, make_selector_bundle, tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = make_selector_bundle()
    source = write_jsonl(tmp_path / "in.jsonl", make_rows([4, 30]))
    result = gatesum("summarize", "--model", bundle, "--input", source, *FAST)
    assert result.code == 0, result.err
    output = read_jsonl(result.out)
    assert [row["read"] for row in output] == ["whole", "selected"]  # 300 words > 128 tokens
    assert output[0]["sentences"] == [0, 1, 2, 3] and output[1]["truncated"] is False
    assert output[1]["sentences"] == sorted(output[1]["sentences"]) and max(output[1]["sentences"]) > 12
    extractive = gatesum("summarize", "--model", bundle, "--input", source, "--mode", "extractive",
                         "--extract-sentences", "2")  # fmt: skip
    assert extractive.code == 0, extractive.err
    assert [len(row["sentences"]) for row in read_jsonl(extractive.out)] == [2, 2]
    refused = gatesum("summarize", "--model", tiny_bundle, "--input", source, "--mode", "extractive")
    assert refused.code != 0 and refused.out == ""
    assert (
        "extractive mode needs a content selector" in refused.err
        and len(refused.err.strip().splitlines()) == 1
    )
