"""``gatesum summarize``: summaries of JSON Lines or plain-text documents, written as JSON Lines.

    gatesum summarize --input articles.jsonl --output summaries.jsonl   # adds summary, read, ...
    gatesum summarize --input notes.txt                                 # blank-line-separated docs
    cat story.txt | gatesum summarize --beam-size 1                     # stdin -> stdout
    gatesum summarize --input report.txt --mode extractive              # the selector's sentences

Input is JSON Lines when the file name ends in .jsonl or .jsonl.gz or its first non-blank line
starts with ``{`` (``--format`` overrides the guess). Each object keeps its fields and gains
``summary`` (readable text), ``truncated`` (the model read only the document's first tokens),
``read`` (whole, selected or truncated: model/reading.py) and ``sentences`` (the indices of the
sentences the summary used); blank lines are skipped. Otherwise each blank-line-separated block
of text is one document and gives ``{"document": n, "line": its first line, "summary": ...,
"truncated": ..., "read": ..., "sentences": [...]}``. A whole document is read, up to any
length: past the model's window, by the content selector's best sentences when the bundle has
a selector. ``--mode extractive`` returns those sentences themselves (it needs a selector).

Bad input fails before any work. The whole input is read, decoded and parsed first, so a line
that is not UTF-8 or not JSON, or lacks the text field, stops the command with one error that
names the file and line, before the model runs and before ``--output`` is opened (an existing
output file is left alone). Then summaries are written in input order, a chunk at a time,
flushed after each chunk: an interrupted run keeps every summary written so far.

This module also holds the model, mode and generation flags that ``gatesum eval`` shares.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from gatesum.model.bundle import BUNDLED_MODEL, Bundle
from gatesum.model.errors import GatesumError
from gatesum.model.pipeline import Summary, load, summarize_texts
from gatesum.model.reading import DEFAULT_MODE, MODES, check_mode
from gatesum.model.search import GENERATION_SETTINGS, GenerationConfig

CHUNK_DOCUMENTS = 64  # documents per summarize_texts call: the unit of progress and of flushing
STDIN = "<stdin>"


# --- flags shared with gatesum eval ---------------------------------------------------------------


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help=f"model bundle directory or hf://owner/name (default: the bundled {BUNDLED_MODEL.name})",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
    )


def add_mode_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=DEFAULT_MODE,
        help="abstractive: the model writes the summary; extractive: the content selector's best "
        "sentences, up to --extract-sentences (needs a bundle with a selector)",
    )


def check_model_mode(bundle: Bundle, args: argparse.Namespace, generation: GenerationConfig) -> None:
    """GatesumError, before any work, when the bundle cannot serve --mode or --copy-mask-threshold."""
    check_mode(bundle, args.mode, generation.copy_mask_threshold)


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``GenerationConfig`` setting (its default, bounds and help), and --batch-size."""
    for setting in GENERATION_SETTINGS:
        parser.add_argument(
            "--" + setting.name.replace("_", "-"),
            type=setting.kind,
            default=setting.default,
            metavar="N" if setting.kind is int else "X",
            help=f"{setting.help} [{setting.minimum}–{setting.maximum}, default %(default)s]",
        )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="documents decoded together (sorted by length, so a batch pads little)",
    )


def generation_config(args: argparse.Namespace) -> GenerationConfig:
    """The search settings of the flags; GatesumError naming the flag for an impossible value."""
    if args.batch_size < 1:
        raise GatesumError(f"--batch-size must be ≥ 1, not {args.batch_size}")
    for setting in GENERATION_SETTINGS:
        problem = setting.problem(getattr(args, setting.name))
        if problem:
            raise GatesumError(f"--{setting.name.replace('_', '-')} {problem}")
    return GenerationConfig(**{setting.name: getattr(args, setting.name) for setting in GENERATION_SETTINGS})


def load_model(args: argparse.Namespace) -> Bundle:
    """The bundle of --model (default: the bundled model), on --device: loaded as ``gatesum.load``
    loads it, so the command line and the Python API read a bundle the same way."""
    if args.model is None and not BUNDLED_MODEL.is_dir():
        raise GatesumError(f"no --model given and the bundled model {BUNDLED_MODEL} is absent")
    return load(args.model, args.device, device_option="--device").bundle


# --- gatesum summarize ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Plain-text input: blank lines separate documents, so each block of non-blank lines is "
        "summarized on its own; keep one document's paragraphs apart with single line breaks, or "
        "give JSON Lines. JSON Lines input: one document per line, in --text-field."
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--input",
        default=None,
        metavar="FILE",
        help="JSON Lines (.jsonl, .jsonl.gz) or plain text, where blank lines separate documents; "
        "default: stdin",
    )
    parser.add_argument("--output", default=None, metavar="FILE", help="JSON Lines out; default: stdout")
    parser.add_argument(
        "--format",
        choices=("auto", "jsonl", "text"),
        default="auto",
        help="input format; auto: JSON Lines by file name or a first line starting with {, else text",
    )
    parser.add_argument(
        "--text-field", default="article", help="the JSON field that holds the document (JSON Lines input)"
    )
    add_mode_argument(parser)
    add_generation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    lines = read_lines(args.input)
    name = args.input or STDIN
    if is_json_lines(args.input, lines, args.format):
        documents = parse_json_lines(name, lines, args.text_field)
    else:
        documents = parse_text_blocks(lines)
    if not documents:
        raise GatesumError(f"{name}: no documents")
    generation = generation_config(args)
    bundle = load_model(args)
    check_model_mode(bundle, args, generation)
    progress = tqdm(total=len(documents), desc="summarizing", unit="doc", disable=args.input is None)
    with progress, open_output(args.output) as output:
        for written in write_summaries(bundle, documents, output, generation, args.batch_size, args.mode):
            progress.update(written)
    return 0


# --- reading --------------------------------------------------------------------------------------


@dataclass
class Document:
    text: str
    line: int  # where it starts in the input, 1-based
    record: dict[str, Any]  # the JSON object to extend, or the plain-text document's number

    def output(self, summary: Summary | None) -> dict[str, Any]:
        """The input record plus summary, truncated, read and the sentences used (an empty
        document gets an empty summary)."""
        return {
            **self.record,
            "summary": summary.summary if summary else "",
            "truncated": summary.truncated if summary else False,
            "read": summary.read if summary else "whole",
            "sentences": [use.index for use in summary.sentences] if summary else [],
        }


def read_lines(path: str | None) -> list[str]:
    """The lines of a file (gzip by its .gz suffix) or of stdin, decoded: GatesumError names the
    first line that is not UTF-8."""
    name = path or STDIN
    if path is None:
        data = sys.stdin.buffer.read()
    else:
        file = Path(path)
        if not file.is_file():
            raise GatesumError(f"{path}: file not found" if not file.exists() else f"{path}: not a file")
        try:
            data = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
        except (OSError, EOFError) as error:
            raise GatesumError(f"{path}: unreadable ({error})") from None
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as error:
            raise GatesumError(f"{name}: line {number} is not UTF-8 (byte {error.start + 1})") from None
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")  # a byte-order mark is not text
    return lines


def is_json_lines(path: str | None, lines: list[str], format: str) -> bool:
    if format != "auto":
        return format == "jsonl"
    if path and path.lower().endswith((".jsonl", ".jsonl.gz")):
        return True
    first = next((line for line in lines if line.strip()), "")
    return first.lstrip().startswith("{")


def parse_json_lines(name: str, lines: list[str], text_field: str) -> list[Document]:
    """One document per non-blank line; GatesumError names the first bad line."""
    documents = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise GatesumError(
                f"{name}: line {number} is not valid JSON ({error.msg}, column {error.colno})"
            ) from None
        if not isinstance(record, dict):
            raise GatesumError(f"{name}: line {number} is not a JSON object")
        if text_field not in record:
            fields = ", ".join(record) or "none"
            raise GatesumError(f"{name}: line {number} has no field {text_field!r} (fields: {fields})")
        text = record[text_field]
        if not isinstance(text, str):
            raise GatesumError(f"{name}: line {number}: field {text_field!r} is {_json_kind(text)}, not text")
        documents.append(Document(text, number, record))
    return documents


def _json_kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def parse_text_blocks(lines: list[str]) -> list[Document]:
    """One document per block of non-blank lines; blank lines separate documents."""
    documents: list[Document] = []
    block: list[str] = []
    for number, line in enumerate([*lines, ""], start=1):
        if line.strip():
            block.append(line)
        elif block:
            start = number - len(block)
            documents.append(
                Document("\n".join(block), start, {"document": len(documents) + 1, "line": start})
            )
            block = []
    return documents


# --- summarizing and writing ----------------------------------------------------------------------


@contextmanager
def open_output(path: str | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed below; the open may fail alone)
    except OSError as error:
        raise GatesumError(f"{path}: cannot write ({error.strerror})") from None
    with handle:
        yield handle


def write_summaries(bundle: Bundle, documents: list[Document], output: IO[str], generation: GenerationConfig,
                    batch_size: int, mode: str = DEFAULT_MODE) -> Iterator[int]:  # fmt: skip
    """Summarize ``documents`` a chunk at a time, write each as a JSON line in input order and flush;
    yields the number of documents written after each chunk (for a progress bar)."""
    chunk_size = max(CHUNK_DOCUMENTS, 4 * batch_size)
    for begin in range(0, len(documents), chunk_size):
        chunk = documents[begin : begin + chunk_size]
        texts = [(index, document.text) for index, document in enumerate(chunk) if document.text.strip()]
        summaries: list[Summary | None] = [None] * len(chunk)
        if texts:
            results = summarize_texts(bundle, [text for _, text in texts], generation, batch_size, mode=mode)
            for (index, _), summary in zip(texts, results):
                summaries[index] = summary
        for document, summary in zip(chunk, summaries):
            output.write(json.dumps(document.output(summary), ensure_ascii=False) + "\n")
        output.flush()
        yield len(chunk)
