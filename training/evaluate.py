"""``gatesum eval``: ROUGE of a model bundle beside Lead-3 on the same documents, by source length.

    gatesum eval --model runs/small/best --data-files ../shared/data/cnndm/test.jsonl.gz --limit 500

The documents go through the one inference path (``model.pipeline.summarize_texts``). Model
summaries (``Summary.normalized``), Lead-3 (the first three sentences of the normalized article)
and the references are all compared in the bundle's normalized text style, with rouge-score's
ROUGE-1/2/L/Lsum F1, Porter stemming, Lsum over newline-separated sentences (``training.rouge``).

Writes into --output-dir (default ``runs/eval-<bundle name>``):

* ``report.json``: every number, the rows read and dropped (also printed to stderr), the exact
  settings, the command line, the bundle's name and path;
* ``report.md``: model and Lead-3 ROUGE, then the same by source length (≤400, 401–800,
  801–1,600, >1,600 words of the normalized article), with how the sources were read (whole,
  selected by the content selector, truncated), summary lengths and decode speed; the same
  Markdown is printed to stdout;
* ``summaries.jsonl``: per document its id, summary, source length, how it was read, the
  sentences used and ROUGE, for error analysis.

``--mode extractive`` scores the content selector's own sentences (the bundle needs a selector);
a bundle with a selector reads long documents by its best sentences in either mode, unless
``--truncate`` asks for the first window of tokens (the baseline to compare with).

Decode speed counts the wall time of ``summarize_texts`` only (normalize, tokenize, search,
detokenize), not loading the data or scoring.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import datasets
import torch
from tqdm import tqdm

from gatesum.model.bundle import Bundle, write_atomically
from gatesum.model.pipeline import Summary, source_max_tokens, summarize_texts
from gatesum.model.reading import DEFAULT_MODE
from gatesum.model.search import GenerationConfig
from gatesum.model.text import normalize
from gatesum.training.data import DataConfig, load_split
from gatesum.training.rouge import METRICS, aggregate, lead, lead_words, rouge_per_document
from gatesum.training.summarize import (
    add_generation_arguments,
    add_mode_argument,
    add_model_arguments,
    check_model_mode,
    generation_config,
    load_model,
)

# (label, fewest words, most words) of the article, normalized; None: no upper bound
BUCKETS = (("≤400", 0, 400), ("401–800", 401, 800), ("801–1,600", 801, 1600), (">1,600", 1601, None))
READS = ("whole", "selected", "truncated")
METRIC_NAMES = {"rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L", "rougeLsum": "R-Lsum"}
SCORING_CHUNK = 200  # documents per rouge_per_document call: the progress bar's step


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_data_arguments(parser, split="test", limit=None)
    add_mode_argument(parser)
    parser.add_argument(
        "--truncate",
        action="store_true",
        help="read long documents truncated to the model's window even when the bundle has a content "
        "selector: the baseline that select-then-summarize is compared with",
    )
    parser.add_argument(
        "--lead-words",
        type=lead_words_value,
        default=None,
        metavar="N|reference",
        help="the lead baseline: the first sentences up to N words (Lead-k), or 'reference' for the "
        "references' mean length; long documents have longer references than Lead-3 (default: Lead-3)",
    )
    add_generation_arguments(parser)
    parser.add_argument(
        "--output-dir",
        default=None,
        metavar="DIR",
        help="where report.json, report.md and summaries.jsonl go (default: runs/eval-<bundle name>)",
    )


def add_data_arguments(parser: argparse.ArgumentParser, split: str, limit: int | None) -> None:
    """The pairs to score: files, split, limit, columns, cache (``gatesum eval`` and ``gatesum tune``)."""
    parser.add_argument(
        "--data-files",
        nargs="+",
        required=True,
        metavar="FILE",
        help="pairs to score (.jsonl[.gz], .csv, .parquet); {split} becomes --split",
    )
    parser.add_argument("--split", default=split, help="the split name that replaces {split} in file names")
    parser.add_argument("--limit", type=int, default=limit, help="score the first N documents only")
    parser.add_argument("--text-column", default="article", help="the column that holds the documents")
    parser.add_argument("--summary-column", default="highlights", help="the column of reference summaries")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="datasets cache for the parsed files (default: ~/.cache/huggingface/datasets)",
    )


def run(args: argparse.Namespace) -> int:
    generation = generation_config(args)
    bundle = load_model(args)
    if args.truncate:
        bundle.selector = None  # the pipeline then truncates, as for a bundle without one
    check_model_mode(bundle, args, generation)
    data = DataConfig(
        data_files=args.data_files,
        text_column=args.text_column,
        summary_column=args.summary_column,
        split=args.split,
        limit=args.limit,
        cache_dir=args.cache_dir,
    )
    with quiet_datasets():  # our own progress bar is enough; and an error stays one line
        loaded = load_split(data, args.split)
    print(loaded.report.line(), file=sys.stderr)  # rows read, dropped and why, used
    pairs = loaded.pairs
    ids = list(pairs["id"]) if "id" in pairs.column_names else list(range(len(pairs)))
    report, documents = evaluate(
        bundle,
        list(pairs["source"]),
        list(pairs["target"]),
        generation,
        args.batch_size,
        args.mode,
        args.lead_words,
    )
    report = {**report, "rows": asdict(loaded.report), "settings": settings(args, bundle, generation),
              "bundle": describe_bundle(bundle)}  # fmt: skip
    documents = [{"id": document_id, **record} for document_id, record in zip(ids, documents)]
    output_dir = Path(args.output_dir or f"runs/eval-{bundle.name}")
    markdown = render_markdown(report)
    write_atomically(
        output_dir / "report.json", (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode()
    )
    write_atomically(output_dir / "report.md", markdown.encode())
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in documents)
    write_atomically(output_dir / "summaries.jsonl", lines.encode())
    print(markdown, end="")
    print(f"wrote {output_dir}/report.json, report.md, summaries.jsonl", file=sys.stderr)
    return 0


# --- evaluation -----------------------------------------------------------------------------------


def evaluate(bundle: Bundle, articles: Sequence[str], references: Sequence[str], generation: GenerationConfig,
             batch_size: int = 16, mode: str = DEFAULT_MODE, lead_size: int | str | None = None
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """Scores of the model (in ``mode``) and of the lead baseline on the same documents: (report
    numbers, per-document records). The baseline is Lead-3, or with ``lead_size`` the first
    sentences up to that many words ("reference": the references' mean); the report's "lead3"
    holds its scores whichever it is, and "lead" says which."""
    summaries, seconds = summarize_timed(bundle, articles, generation, batch_size, mode)
    normalized_articles = [normalize(article, bundle.normalizer) for article in articles]
    normalized_references = [normalize(reference, bundle.normalizer) for reference in references]
    predictions = [summary.normalized for summary in summaries]
    if lead_size == "reference":
        lead_size = round(mean_words(normalized_references))
    leads = [lead(article) if lead_size is None else lead_words(article, int(lead_size))
             for article in normalized_articles]  # fmt: skip
    baseline = lead_label(lead_size)
    model_scores = score(predictions, normalized_references, "scoring the model")
    lead_scores = score(leads, normalized_references, f"scoring {baseline}")
    source_words = [len(article.split()) for article in normalized_articles]
    report = {
        "documents": len(articles),
        "model": rounded(aggregate(model_scores)),  # ROUGE F1 ×100
        "lead3": rounded(aggregate(lead_scores)),
        "lead": {"label": baseline, "words": lead_size},
        "by_source_words": by_source_words(
            source_words, model_scores, lead_scores, [summary.read for summary in summaries]
        ),
        "truncation_rate": round(sum(summary.truncated for summary in summaries) / len(summaries), 4),
        "reads": {read: sum(summary.read == read for summary in summaries) for read in READS},
        "mean_words": {  # whitespace tokens of the normalized text: punctuation counts as a word
            "model": mean_words(predictions),
            "lead3": mean_words(leads),
            "reference": mean_words(normalized_references),
            "source": round(sum(source_words) / len(source_words), 1),
        },
        "speed": {
            "generation_seconds": round(seconds, 3),
            "documents_per_second": round(len(articles) / seconds, 3),
        },
    }
    documents = [
        {"summary": summary.summary, "normalized": summary.normalized, "source_words": words,
         "input_tokens": summary.input_tokens, "truncated": summary.truncated, "read": summary.read,
         "sentences": [use.index for use in summary.sentences],
         "model": rounded(aggregate([model])), "lead3": rounded(aggregate([lead3]))}
        for summary, words, model, lead3 in zip(summaries, source_words, model_scores, lead_scores)
    ]  # fmt: skip
    return report, documents


def lead_words_value(text: str) -> int | str:
    """--lead-words: a positive number of words, or "reference"."""
    if text == "reference":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a positive number of words or 'reference', not {text!r}")


def lead_label(lead_size: int | str | None) -> str:
    return "Lead-3" if lead_size is None else f"Lead-k ({lead_size} words)"


def summarize_timed(bundle: Bundle, articles: Sequence[str], generation: GenerationConfig,
                    batch_size: int, mode: str = DEFAULT_MODE) -> tuple[list[Summary], float]:  # fmt: skip
    """Summaries in input order and the wall time spent in ``summarize_texts``.

    Documents are taken in order of character length, a few batches at a time, so batches pad
    little across the whole set (``summarize_texts`` sorts by tokens within each call) and the
    progress bar moves steadily.
    """
    order = sorted(range(len(articles)), key=lambda index: len(articles[index]))
    chunk_size = 8 * batch_size
    summaries: list[Summary | None] = [None] * len(articles)
    seconds = 0.0
    with tqdm(total=len(articles), desc="summarizing", unit="doc") as progress:
        for begin in range(0, len(order), chunk_size):
            chunk = order[begin : begin + chunk_size]
            started = time.perf_counter()
            results = summarize_texts(bundle, [articles[index] for index in chunk], generation, batch_size,
                                      mode=mode)  # fmt: skip
            seconds += time.perf_counter() - started  # results are Python lists: the device is done
            for index, summary in zip(chunk, results):
                summaries[index] = summary
            progress.update(len(chunk))
    return summaries, max(seconds, 1e-9)


def score(predictions: Sequence[str], references: Sequence[str], description: str) -> list[dict[str, float]]:
    """Per-document ROUGE F1 (0..1), with a progress bar."""
    scores: list[dict[str, float]] = []
    with tqdm(total=len(predictions), desc=description, unit="doc") as progress:
        for begin in range(0, len(predictions), SCORING_CHUNK):
            end = begin + SCORING_CHUNK
            scores += rouge_per_document(predictions[begin:end], references[begin:end])
            progress.update(len(predictions[begin:end]))
    return scores


def by_source_words(source_words: Sequence[int], model_scores: Sequence[dict[str, float]],
                    lead_scores: Sequence[dict[str, float]], reads: Sequence[str] | None = None
                    ) -> list[dict[str, Any]]:  # fmt: skip
    """Model and Lead-3 ROUGE per source-length bucket (None for a bucket without documents),
    and with ``reads`` how many of its documents were read whole, selected or truncated."""
    buckets = []
    for label, fewest, most in BUCKETS:
        members = [
            i for i, words in enumerate(source_words) if words >= fewest and (most is None or words <= most)
        ]
        buckets.append(
            {
                "bucket": label,
                "min_words": fewest,
                "max_words": most,
                "documents": len(members),
                "model": rounded(aggregate([model_scores[i] for i in members])) if members else None,
                "lead3": rounded(aggregate([lead_scores[i] for i in members])) if members else None,
            }
        )
        if reads is not None:
            buckets[-1]["reads"] = {read: sum(reads[i] == read for i in members) for read in READS}
    return buckets


def rounded(scores: dict[str, float]) -> dict[str, float]:
    return {metric: round(value, 4) for metric, value in scores.items()}


def mean_words(texts: Sequence[str]) -> float:
    return round(sum(len(text.split()) for text in texts) / max(1, len(texts)), 1)


# --- settings and rendering -----------------------------------------------------------------------


def settings(args: argparse.Namespace, bundle: Bundle, generation: GenerationConfig) -> dict[str, Any]:
    """What produced the numbers: the flags, the generation and data settings, the machine."""
    device = next(bundle.model.parameters()).device
    return {
        "command": shlex.join(["gatesum", *sys.argv[1:]]),
        "arguments": {name: value for name, value in vars(args).items() if not callable(value)},
        "mode": args.mode,
        "selector": bundle.selector.config.to_dict() if bundle.selector is not None else None,
        "generation": asdict(generation),
        "batch_size": args.batch_size,
        "data_files": args.data_files,
        "split": args.split,
        "limit": args.limit,
        "text_column": args.text_column,
        "summary_column": args.summary_column,
        "source_max_tokens": source_max_tokens(bundle),
        "normalizer": asdict(bundle.normalizer),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def describe_bundle(bundle: Bundle) -> dict[str, Any]:
    return {"name": bundle.name, "path": str(bundle.path.resolve()), "training": bundle.card.get("data", {})}


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: overall table, bucket table, then the other numbers in one list."""
    settings = report["settings"]
    header = " | ".join(METRIC_NAMES.values())
    reads = report["reads"]
    baseline = report.get("lead", {}).get("label", "Lead-3")
    lines = [
        f"# {report['bundle']['name']}: ROUGE F1 on {report['documents']} documents",
        "",
        f"Data: {', '.join(settings['data_files'])} (split {settings['split']}). {decoding(settings)}",
        "",
        f"| system | {header} |",
        "|---|" + "---:|" * len(METRICS),
        table_row("model", report["model"]),
        table_row(baseline, report["lead3"]),
        "",
        f"| source words | documents | system | {header} |",
        "|---|---:|---|" + "---:|" * len(METRICS),
    ]
    for bucket in report["by_source_words"]:
        lines.append(table_row(f"{bucket['bucket']} | {bucket['documents']} | model", bucket["model"]))
        lines.append(table_row(f"{bucket['bucket']} | {bucket['documents']} | {baseline}", bucket["lead3"]))
    words, speed = report["mean_words"], report["speed"]
    lines += [
        "",
        f"- sources read whole {reads['whole']}, by selected sentences {reads['selected']}, truncated "
        f"{reads['truncated']} ({100 * report['truncation_rate']:.1f}%; the window: "
        f"{settings['source_max_tokens']} tokens)",
        f"- mean length in words: model {words['model']}, {baseline} {words['lead3']}, "
        f"reference {words['reference']}, source {words['source']}",
        f"- decode speed: {speed['documents_per_second']:.2f} documents/s "
        f"({speed['generation_seconds']:.1f} s on {settings['device']})",
        "",
    ]
    return "\n".join(lines)


def decoding(settings: dict[str, Any]) -> str:
    """The mode and search settings, in a sentence."""
    generation = settings["generation"]
    if settings.get("mode") == "extractive":
        return f"Extractive: the content selector's best {generation['extract_sentences']} sentences."
    mask = generation["copy_mask_threshold"] if settings.get("selector") else 0  # no selector: no mask
    search = (
        f"Beam {generation['beam_size']}, {min(generation['min_length'], generation['max_length'])}–"
        f"{generation['max_length']} tokens, "
        f"length penalty {generation['length_penalty']}, "
        f"no-repeat n-gram {generation['no_repeat_ngram_size']}, "
        f"coverage penalty {generation['coverage_penalty']}"
    )
    return search + (f", copy mask above {mask}." if mask else ".")


def table_row(label: str, scores: dict[str, float] | None) -> str:
    cells = [f"{scores[metric]:.2f}" if scores else "–" for metric in METRICS]
    return f"| {label} | {' | '.join(cells)} |"


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """No datasets progress bars (loading, filtering) for the duration."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
