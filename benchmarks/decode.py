"""``gatesum bench decode``: documents/s of two or more bundles on the same documents, side by side.

    gatesum bench decode --model pretrained/cnndm-lstm-small --model runs/medium/export \\
        --threads 1 --output benchmarks/results/decode.json

Each round summarizes the same real articles (the first ``--documents`` of the validation file
whose source fills the summarizer's window, so every bundle reads 400-token sources) with every
bundle in turn, through the one inference path (``model.pipeline.summarize_texts``: normalize,
tokenize, beam search, detokenize). Rounds interleave the bundles, so load from other jobs on the
machine hits all of them alike; the median round is reported, with each bundle's speed as a
ratio to the first one's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from gatesum.benchmarks.train import _cpu_name
from gatesum.model.bundle import Bundle
from gatesum.model.pipeline import encode_sources, load, source_max_tokens, summarize_texts
from gatesum.model.search import GenerationConfig
from gatesum.training.data import DATA_DIR, DataConfig, load_split

VALIDATION_FILE = DATA_DIR / "cnndm" / "validation.jsonl.gz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        metavar="DIR",
        help="a bundle (repeat; default: the bundled model); the first is the reference",
    )
    parser.add_argument("--data-file", default=str(VALIDATION_FILE), help="articles to summarize")
    parser.add_argument("--documents", type=int, default=64, help="articles summarized per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the median is reported")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16, help="documents decoded together")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    parser.add_argument("--output", metavar="PATH", help="also write the results, and this command, to JSON")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    bundles = {name: load(name).bundle for name in (args.model or [None])}
    window = min(source_max_tokens(bundle) for bundle in bundles.values())
    articles = long_articles(args.data_file, args.documents, window, next(iter(bundles.values())))
    # the default generation settings, at the asked beam: what a user of the service gets
    generation = GenerationConfig(beam_size=args.beam_size)
    summarize_texts(next(iter(bundles.values())), articles[:2], generation, args.batch_size)  # warm up
    seconds: dict[str | None, list[float]] = {name: [] for name in bundles}
    for _ in range(args.rounds):
        for name, bundle in bundles.items():
            start = time.perf_counter()
            summarize_texts(bundle, articles, generation, args.batch_size)
            seconds[name].append(time.perf_counter() - start)
    rows, reference = [], None
    print(
        f"decoding {len(articles)} articles ({window}-token sources), beam {args.beam_size}, batch "
        f"{args.batch_size}, {torch.get_num_threads()} threads, median of {args.rounds} rounds"
    )
    for name, bundle in bundles.items():
        median = statistics.median(seconds[name])
        reference = reference or median
        parameters = sum(parameter.numel() for parameter in bundle.model.parameters())
        row = {"model": bundle.name, "path": name or "bundled", "parameters": parameters,
               "seconds": round(median, 3), "documents_per_second": round(len(articles) / median, 3),
               "speed_vs_first": round(reference / median, 3)}  # fmt: skip
        rows.append(row)
        print(f"{row['model']:<32}{parameters / 1e6:>7.2f} M params{row['documents_per_second']:>9.2f} docs/s"
              f"{row['speed_vs_first']:>7.2f}×")  # fmt: skip
    if args.output:
        record = {
            "command": shlex.join(["gatesum", *sys.argv[1:]]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"processor": _cpu_name(), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                        "torch": torch.__version__,
                        "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()}},
            "settings": {"data_file": args.data_file, "documents": len(articles), "source_tokens": window,
                         "beam_size": args.beam_size, "batch_size": args.batch_size, "rounds": args.rounds},
            "results": rows,
        }  # fmt: skip
        Path(args.output).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


def long_articles(data_file: str, count: int, window: int, bundle: Bundle) -> list[str]:
    """The first ``count`` articles whose tokens fill ``window``: every bundle reads full windows."""
    articles = list(load_split(DataConfig(data_files=[data_file]), "validation").pairs["source"])
    _, lengths = encode_sources(bundle, articles)
    return [article for article, length in zip(articles, lengths) if length >= window][:count]
