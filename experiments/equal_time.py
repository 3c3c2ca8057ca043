"""``gatesum compare``: training runs given the same CPU time, judged by beam ROUGE on validation.

    for config in cnndm-small cnndm-small-parallel-additive cnndm-small-parallel-bilinear; do
      gatesum train --config configs/$config.toml --output-dir runs/equal-time/$config \\
          --clock cpu --max-minutes 60 &   # side by side: the cpu clock keeps the budgets equal
    done; wait
    gatesum compare --run runs/equal-time/cnndm-small --run runs/equal-time/cnndm-small-parallel-additive \\
        --run runs/equal-time/cnndm-small-parallel-bilinear --limit 500 \\
        --output-dir benchmarks/results/equal-time-60min

Each run's weights at the end of its budget (``checkpoint/``) summarize the same validation
documents through ``gatesum eval``'s path (beam search, the shipped generation defaults unless
flags say otherwise); the run with the highest mean of R-1, R-2 and R-Lsum wins (the scores a
summary is compared with Lead-3 on). Writes ``compare.json`` (every number, each run's model and
training settings and how much it trained, the command), ``compare.md`` (the table) and
``compare.png`` (validation NLL and greedy sample ROUGE-Lsum against training minutes, from
each run's ``metrics.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gatesum.experiments.plots import plot_equal_time
from gatesum.model.bundle import load_bundle, write_atomically
from gatesum.model.errors import GatesumError
from gatesum.training.data import DATA_DIR, DataConfig, load_split
from gatesum.training.evaluate import METRIC_NAMES, evaluate, quiet_datasets
from gatesum.training.summarize import add_generation_arguments, generation_config
from gatesum.training.tune import SELECTED_BY

VALIDATION_FILE = DATA_DIR / "cnndm" / "validation.jsonl.gz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", action="append", required=True, type=Path, metavar="DIR", dest="runs",
                        help="a training run's output directory (repeat for each candidate)")  # fmt: skip
    parser.add_argument("--data-files", nargs="+", default=[str(VALIDATION_FILE)], metavar="FILE",
                        help="validation pairs (never test documents: this picks a model)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=500, help="score on the first N documents")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    add_generation_arguments(parser)
    parser.add_argument("--output-dir", type=Path, required=True, metavar="DIR",
                        help="where compare.json, compare.md and compare.png go")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    generation = generation_config(args)
    for directory in args.runs:
        if not (directory / "checkpoint").is_dir():
            raise GatesumError(f"{directory}: no checkpoint/ (is it a gatesum train output directory?)")
    with quiet_datasets():
        loaded = load_split(DataConfig(data_files=args.data_files, limit=args.limit), "validation")
    articles, references = list(loaded.pairs["source"]), list(loaded.pairs["target"])
    rows = []
    for directory in args.runs:
        print(f"scoring {directory} on {len(articles)} documents", file=sys.stderr)
        bundle = load_bundle(directory / "checkpoint")
        report, _ = evaluate(bundle, articles, references, generation, args.batch_size)
        rows.append(describe_run(directory, bundle.card, report))
    best = max(rows, key=lambda row: row["selection_score"])
    for row in rows:
        row["winner"] = row is best
    payload = {
        "command": shlex.join(["gatesum", *sys.argv[1:]]),
        "documents": len(articles),
        "data_files": args.data_files,
        "generation": asdict(generation),
        "selected_by": f"mean of {', '.join(METRIC_NAMES[metric] for metric in SELECTED_BY)}",
        "runs": rows,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    markdown = render(payload)
    write_atomically(args.output_dir / "compare.json", (json.dumps(payload, indent=2) + "\n").encode())
    write_atomically(args.output_dir / "compare.md", markdown.encode())
    plot_equal_time(rows, args.output_dir / "compare.png")
    print(markdown, end="")
    return 0


def describe_run(directory: Path, card: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """One candidate: its settings, how long and how far it trained, its curves and its scores."""
    options = card["training"]["options"]
    model, train = options["model"], options["train"]
    records = [
        json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    validations = [record for record in records if "val_loss" in record]
    scores = report["model"]
    return {
        "run": str(directory),
        "name": directory.name,
        "decoder": f"{'input feeding' if model.get('input_feeding', True) else 'parallel'}, "
        f"{'additive' if model['attention'] == 'mlp' else 'bilinear'}",
        "model": model,
        "clock": train.get("clock", "wall"),
        "max_minutes": train.get("max_minutes"),
        "trained_minutes": round(card["training"]["elapsed_minutes"], 2),
        "steps": card["training"]["step"],
        "validation_curve": [
            {
                "step": r["step"],
                "minutes": round(r["elapsed_s"] / 60, 2),
                "val_loss": r["val_loss"],
                "rougeLsum_greedy_sample": r["rougeLsum"],
            }
            for r in validations
        ],
        "final_val_loss": validations[-1]["val_loss"] if validations else None,
        "rouge": scores,
        "lead3": report["lead3"],
        "mean_words": report["mean_words"]["model"],
        "selection_score": round(sum(scores[metric] for metric in SELECTED_BY) / len(SELECTED_BY), 4),
    }


def render(payload: dict[str, Any]) -> str:
    rows, metrics = payload["runs"], " | ".join(METRIC_NAMES.values())
    generation = payload["generation"]
    lines = [
        f"# Equal training time: beam ROUGE on {payload['documents']} validation documents",
        "",
        f"`{payload['command']}`",
        "",
        f"Beam {generation['beam_size']}, {min(generation['min_length'], generation['max_length'])}–"
        f"{generation['max_length']} tokens, "
        f"length penalty {generation['length_penalty']}, "
        f"no-repeat n-gram {generation['no_repeat_ngram_size']}. "
        f"Each run's weights at the end of its budget; winner by the {payload['selected_by']}.",
        "",
        f"| run | decoder | clock | minutes | steps | val NLL | {metrics} | words |",
        "|---|---|---|---:|---:|---:|" + "---:|" * (len(METRIC_NAMES) + 1),
    ]
    for row in rows:
        cells = " | ".join(f"{row['rouge'][metric]:.2f}" for metric in METRIC_NAMES)
        loss = f"{row['final_val_loss']:.3f}" if row["final_val_loss"] is not None else "–"
        name = f"**{row['name']}** (winner)" if row["winner"] else row["name"]
        lines.append(f"| {name} | {row['decoder']} | {row['clock']} | {row['trained_minutes']:.1f} | "
                     f"{row['steps']} | {loss} | {cells} | {row['mean_words']} |")  # fmt: skip
    lead = rows[0]["lead3"]
    lines.append(f"| Lead-3 | – | – | – | – | – | {' | '.join(f'{lead[m]:.2f}' for m in METRIC_NAMES)} | – |")
    return "\n".join(lines) + "\n"
