"""``gatesum select compare``: content selectors on each encoder cell, judged on the same
validation documents by source length (issue #15, item 5: the memory case on real summaries).

A selector has to know what a whole article is about to rank its sentences: if a plain RNN
loses that on long articles and the gated cells keep it, selection quality falls with length
for the RNN and not for GRU/LSTM. Six runs, each cell one-way and both ways, on an equal CPU-time
budget, trained side by side (the cpu clock, ``training/clock.py``, counts each process's own CPU
time and leaves out validation and checkpoint saves, so runs that share the cores still get equal
budgets; configs/selector.toml sets one torch thread each). With M minutes each, six runs on two
cores take about 3·M minutes of wall time:

    M=120   # minutes of CPU time each
    for cell in rnn gru lstm; do
      gatesum select train --config configs/selector.toml --model cell=$cell --model bidirectional=false \\
          --output-dir runs/selectors/$cell-uni --clock cpu --max-minutes $M &
      gatesum select train --config configs/selector.toml --model cell=$cell --model bidirectional=true \\
          --output-dir runs/selectors/$cell-bi --clock cpu --max-minutes $M &
    done; wait
    gatesum select compare --run runs/selectors/rnn-uni --run runs/selectors/rnn-bi \\
        --run runs/selectors/gru-uni --run runs/selectors/gru-bi \\
        --run runs/selectors/lstm-uni --run runs/selectors/lstm-bi \\
        --limit 500 --threads 1 --output-dir benchmarks/results/select-compare-${M}min
    # + --summarize: the downstream ROUGE of select-then-summarize (beam search: slow)

A stopped run continues with the same line and ``--resume`` (the clock is fixed on resume).
Equal data instead of equal time: ``--max-steps N`` in place of ``--clock cpu --max-minutes M``
gives every run the same batches (the stored comparison, ``select-compare-500steps``, used 500
steps: only the LSTM has compiled loops, so equal time would mostly measure the loops).

Each run's selector (``--weights``: ``checkpoint``, the weights at the end of its budget, by
default; or ``best``, its best validation's) reads the same validation documents whole, as the
service reads them, and is scored three ways, overall and per source-length bucket (the buckets
of ``gatesum eval``, in words of the normalized article):

* token ROC AUC and precision/recall/F1 at 0.5 against the paper's labels (``align_labels``,
  the same as in training), pooled over the bucket's tokens;
* extractive ROUGE-1/2/Lsum: the selector's best sentences, trigram-blocked, as many as Lead-3
  has (``--extract-sentences``), beside Lead-3 on the same documents;
* with ``--summarize``, select-then-summarize with the summarizer of ``--bundle``, beside
  truncation (the same summarizer without a selector) and Lead-3.

The last two go through ``gatesum eval``'s path (``training.evaluate.evaluate``) with the
selector in the bundle, so they are the numbers ``gatesum eval`` gives that bundle (``--mode
extractive``, and the default mode). Cell and direction come from each selector's saved
settings; the budget, steps and stop reason from each run's metrics.jsonl. Writes into
``--output-dir``: ``compare.json`` (every number, each run's settings and budget, the command),
``compare.md`` (the tables) and ``compare.png`` (AUC and extractive ROUGE-Lsum − Lead-3 by
source length, one line per run).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from gatesum.experiments.equal_time import VALIDATION_FILE
from gatesum.experiments.plots import plot_selectors
from gatesum.model.bundle import write_atomically
from gatesum.model.errors import GatesumError
from gatesum.model.pipeline import load
from gatesum.model.selector import ContentSelector, token_probabilities_batch
from gatesum.model.text import normalize
from gatesum.training import selector as selector_training
from gatesum.training.data import DataConfig, load_split
from gatesum.training.evaluate import BUCKETS, evaluate, quiet_datasets
from gatesum.training.selector import (
    RUN_WEIGHTS,
    SelectorDataConfig,
    label_pairs,
    load_run_selector,
    token_metrics,
)
from gatesum.training.summarize import add_generation_arguments, generation_config

HELP = "content selectors (one per cell) on the same validation documents, by source length"
ROUGE_SHOWN = {"rouge1": "R-1", "rouge2": "R-2", "rougeLsum": "R-Lsum"}
TOKEN_SHOWN = ("auc", "f1", "precision", "recall")


# --- the select command: train (training/selector.py) and compare ---------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``gatesum select``: the ``train`` action of ``training/selector.py``, and ``compare``."""
    actions = selector_training.add_arguments(parser)
    add_compare_arguments(actions.add_parser("compare", help=HELP, description=HELP))


def run(args: argparse.Namespace) -> int:
    return compare(args) if args.action == "compare" else selector_training.run(args)


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", action="append", required=True, type=Path, metavar="DIR", dest="runs",
                        help="a gatesum select train output directory (repeat for each run)")  # fmt: skip
    parser.add_argument("--weights", choices=RUN_WEIGHTS, default="checkpoint",
                        help="each run's selector: checkpoint (the end of its budget) or best (its best "
                        "validation, picked on validation documents)")  # fmt: skip
    parser.add_argument("--bundle", default=None, metavar="DIR",
                        help="the summarizer bundle the selectors were trained for: its tokenizer, "
                        "normalizer and (--summarize) summarizer (default: the bundled model)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    parser.add_argument("--data-files", nargs="+", default=[str(VALIDATION_FILE)], metavar="FILE",
                        help="validation pairs (never test documents: this picks a model)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=500, help="score on the first N documents")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="source tokens the selectors read per document (default: all, as the "
                        "service reads them)")  # fmt: skip
    parser.add_argument("--summarize", action="store_true",
                        help="also the downstream ROUGE of select-then-summarize, beside truncation "
                        "(beam search over every document per run: slow)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    add_generation_arguments(parser)
    parser.add_argument("--output-dir", type=Path, required=True, metavar="DIR",
                        help="where compare.json, compare.md and compare.png go")  # fmt: skip


# --- the comparison -------------------------------------------------------------------------------


def compare(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    generation = generation_config(args)
    bundle = load(args.bundle, args.device, device_option="--device").bundle
    device = next(bundle.model.parameters()).device
    # every run is checked before any scoring: a bad --run is one line, not an error an hour in
    selectors = [load_run_selector(run, args.weights, bundle.tokenizer).to(device) for run in args.runs]
    budgets = [training_budget(run, args.weights) for run in args.runs]
    with quiet_datasets():
        loaded = load_split(DataConfig(data_files=args.data_files, limit=args.limit), "validation")
    print(loaded.report.line(), file=sys.stderr)
    articles, references = list(loaded.pairs["source"]), list(loaded.pairs["target"])
    min_span = SelectorDataConfig().min_span  # the paper's labels, whatever each run trained on
    labelled = label_pairs(loaded.pairs, bundle.tokenizer, bundle.normalizer, args.max_tokens or sys.maxsize,
                           min_span)  # fmt: skip
    source_words = [len(normalize(article, bundle.normalizer).split()) for article in articles]
    truncation = None
    if args.summarize:  # the same summarizer reading the first window: what selection is measured against
        print("summarizing with truncation (no selector)", file=sys.stderr)
        truncation = scores(evaluate(replace(bundle, selector=None), articles, references, generation,
                                     args.batch_size)[0])  # fmt: skip
    rows = []
    for run, selector, budget in zip(args.runs, selectors, budgets):
        print(f"scoring {run} on {len(articles)} documents", file=sys.stderr)
        with_selector = replace(bundle, selector=selector)
        probabilities = token_probabilities_batch(selector, labelled["source_ids"], args.batch_size)
        extractive, _ = evaluate(
            with_selector, articles, references, generation, args.batch_size, "extractive"
        )
        summarized = None
        if args.summarize:
            summarized = scores(evaluate(with_selector, articles, references, generation, args.batch_size)[0])
        rows.append({
            **describe_selector(run, selector), "budget": budget,
            "selection": selection_quality(probabilities, labelled["labels"], source_words),
            "extractive": scores(extractive), "select_then_summarize": summarized,
        })  # fmt: skip
    payload = {
        "command": shlex.join(["gatesum", *sys.argv[1:]]),
        "documents": len(articles),
        "data_files": args.data_files,
        "weights": args.weights,
        "bundle": {"name": bundle.name, "path": str(bundle.path)},
        "labels": {"min_span": min_span, "max_tokens": args.max_tokens},
        "buckets": [
            {"bucket": label, "min_words": fewest, "max_words": most} for label, fewest, most in BUCKETS
        ],
        "generation": asdict(generation),
        "lead3": lead3(extractive),
        "truncation": truncation,
        "runs": rows,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    markdown = render(payload)
    write_atomically(args.output_dir / "compare.json", (json.dumps(payload, indent=2) + "\n").encode())
    write_atomically(args.output_dir / "compare.md", markdown.encode())
    plot_selectors(rows, payload["lead3"], args.output_dir / "compare.png")
    print(markdown, end="")
    return 0


def describe_selector(run: Path, selector: ContentSelector) -> dict[str, Any]:
    """A run's name and its selector's saved settings: cell and direction."""
    config = selector.config
    return {
        "run": str(run),
        "name": run.name,
        "cell": config.cell,
        "bidirectional": config.bidirectional,
        "selector": config.to_dict(),
        "parameters": sum(parameter.numel() for parameter in selector.parameters()),
    }


def training_budget(run: Path, weights: str) -> dict[str, Any]:
    """How long and how far a run trained, from its metrics.jsonl: the clock and limits of its
    last session (a resumed run may have raised them), where it stopped and why, the step of
    the weights scored, and its validation curve."""
    path = run / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        raise GatesumError(f"{path}: missing (is {run} a gatesum select train output directory?)") from None
    except json.JSONDecodeError as error:
        raise GatesumError(f"{path}: not JSON Lines ({error})") from None
    starts = [record for record in records if record.get("event") == "start"]
    stops = [record for record in records if record.get("event") == "stop"]
    validations = [record for record in records if "auc" in record]
    steps = max((record["step"] for record in records), default=0)
    best = [record["step"] for record in validations if record.get("best")]
    return {
        "clock": starts[-1]["clock"] if starts else "wall",  # runs from before the clock option: wall
        "max_minutes": starts[-1]["max_minutes"] if starts else None,
        "max_steps": starts[-1]["max_steps"] if starts else None,
        "stopped_by": stops[-1]["reason"] if stops else None,
        "trained_minutes": round(max((r.get("elapsed_s", 0.0) for r in records), default=0.0) / 60, 2),
        "steps": steps,
        "weights_step": best[-1] if weights == "best" and best else steps,
        "validation_curve": [
            {"step": r["step"], "minutes": round(r["elapsed_s"] / 60, 2), "auc": r["auc"], "f1": r["f1"]}
            for r in validations
        ],
    }


def selection_quality(probabilities: list[torch.Tensor], labels: list[list[int]], source_words: list[int]
                      ) -> dict[str, Any]:  # fmt: skip
    """Token metrics (``token_metrics``: AUC, P/R/F1 at 0.5, loss) over all documents' tokens
    pooled, and over each source-length bucket's; a bucket without documents is None."""

    def pooled(members: list[int]) -> dict[str, float | None]:
        scores = torch.cat([probabilities[i] for i in members])
        truth = torch.tensor([label for i in members for label in labels[i]])
        metrics = token_metrics(scores, truth)
        return {"tokens": len(truth), **{name: finite(value) for name, value in metrics.items()}}

    buckets = []
    for label, fewest, most in BUCKETS:
        members = [
            i for i, words in enumerate(source_words) if words >= fewest and (most is None or words <= most)
        ]
        metrics = pooled(members) if members else None
        buckets.append({"bucket": label, "documents": len(members), "metrics": metrics})
    return {"overall": pooled(list(range(len(labels)))), "by_source_words": buckets}


def finite(value: float) -> float | None:
    """Rounded; None for NaN (an AUC where a class is absent), which JSON cannot hold."""
    return None if math.isnan(value) else round(value, 4)


def scores(report: dict[str, Any]) -> dict[str, Any]:
    """The system's side of an ``evaluate`` report: ROUGE overall and per bucket, how sources were read."""
    buckets = [
        {key: bucket[key] for key in ("bucket", "documents", "model", "reads") if key in bucket}
        for bucket in report["by_source_words"]
    ]
    return {"rouge": report["model"], "reads": report["reads"], "by_source_words": buckets}


def lead3(report: dict[str, Any]) -> dict[str, Any]:
    """Lead-3's side of an ``evaluate`` report (the same for every run: the same documents)."""
    buckets = [{"bucket": b["bucket"], "documents": b["documents"], "model": b["lead3"]}
               for b in report["by_source_words"]]  # fmt: skip
    return {"rouge": report["lead3"], "by_source_words": buckets}


# --- rendering ------------------------------------------------------------------------------------


def render(payload: dict[str, Any]) -> str:
    """compare.md: one row per run in each table; a column per source-length bucket."""
    rows, lead = payload["runs"], payload["lead3"]
    counts = [bucket["documents"] for bucket in rows[0]["selection"]["by_source_words"]]
    bucket_header = " | ".join(f"{label} ({count})" for (label, _, _), count in zip(BUCKETS, counts))
    rouge_names = "/".join(ROUGE_SHOWN.values())
    lines = [
        f"# Content selectors: {payload['documents']} validation documents, by source length (words)",
        "",
        f"`{payload['command']}`",
        "",
        f"Each run's `{payload['weights']}/` selector reads every document whole"
        + (f" (up to {payload['labels']['max_tokens']} tokens)" if payload["labels"]["max_tokens"] else "")
        + f"; token metrics against the paper's labels (min span {payload['labels']['min_span']}), "
        f"extractive summaries of {payload['generation']['extract_sentences']} sentences beside Lead-3, "
        f"tokenizer of {payload['bundle']['name']}.",
        "",
        "| run | cell | directions | clock | budget min | trained min | steps (scored) | parameters | "
        f"AUC | F1 | P | R | extractive {rouge_names} |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        budget, overall = row["budget"], row["selection"]["overall"]
        limit = f"{budget['max_minutes']:g}" if budget["max_minutes"] is not None else "–"
        tokens = " | ".join(number(overall[name]) for name in TOKEN_SHOWN)
        directions = 2 if row["bidirectional"] else 1
        steps = f"{budget['steps']} ({budget['weights_step']})"
        lines.append(f"| {row['name']} | {row['cell']} | {directions} | {budget['clock']} | {limit} | "
                     f"{budget['trained_minutes']:.1f} | {steps} | {row['parameters']:,} | {tokens} | "
                     f"{triple(row['extractive']['rouge'])} |")  # fmt: skip
    lines.append(f"| Lead-3 | | | | | | | | | | | | {triple(lead['rouge'])} |")
    for title, name in (("Token ROC AUC", "auc"), ("Token F1 at 0.5", "f1")):
        lines += ["", f"## {title} by source length (documents)", "", f"| run | all | {bucket_header} |",
                  "|---|---:|" + "---:|" * len(BUCKETS)]  # fmt: skip
        for row in rows:
            cells = [
                number(b["metrics"][name]) if b["metrics"] else "–"
                for b in row["selection"]["by_source_words"]
            ]
            lines.append(
                f"| {row['name']} | {number(row['selection']['overall'][name])} | {' | '.join(cells)} |"
            )
    systems = [(row["name"], row["extractive"]) for row in rows] + [("Lead-3", lead)]
    lines += rouge_table(f"Extractive {rouge_names} by source length", bucket_header, systems)
    if payload["truncation"] is not None:
        systems = [(row["name"], row["select_then_summarize"]) for row in rows]
        systems += [("truncation (no selector)", payload["truncation"]), ("Lead-3", lead)]
        lines += rouge_table(f"Select-then-summarize {rouge_names} by source length", bucket_header, systems)
    return "\n".join(lines) + "\n"


def rouge_table(title: str, bucket_header: str, systems: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["", f"## {title} (documents)", "", f"| system | all | {bucket_header} |",
             "|---|---:|" + "---:|" * len(BUCKETS)]  # fmt: skip
    for name, result in systems:
        cells = [triple(bucket["model"]) for bucket in result["by_source_words"]]
        lines.append(f"| {name} | {triple(result['rouge'])} | {' | '.join(cells)} |")
    return lines


def number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def triple(rouge: dict[str, float] | None) -> str:
    """R-1/R-2/R-Lsum as ``40.1/17.6/36.5``; – for an empty bucket."""
    return "–" if rouge is None else "/".join(f"{rouge[name]:.1f}" for name in ROUGE_SHOWN)
