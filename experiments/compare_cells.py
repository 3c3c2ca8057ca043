"""``gatesum memory compare``: the memory question on real summaries.

Trains summarizers that differ only in the encoder cell (rnn, gru, lstm), each with attention
on and with attention off, with the same time budget, then scores each on the same test
documents with ROUGE broken down by source length (``training.evaluate.BUCKETS``), written to
``compare.json``, ``compare.md`` and ``compare.png`` in the output directory:

    gatesum memory compare --config configs/cnndm-small-input-feeding.toml --budget-minutes 30 \
        --test-files ../shared/data/cnndm/test.jsonl.gz --test-limit 500

The encoder is unidirectional here: a bidirectional encoder's backward direction ends on the
document's first token, so with attention off it would hand the decoder the start of the
document for free and hide the very effect being measured. Without attention there is no copy
(copy reads the attention weights) and no coverage. All runs share one tokenizer. Each run
resumes if its directory already holds a checkpoint, so an interrupted comparison continues.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gatesum.experiments.plots import plot_compare
from gatesum.model.bundle import load_bundle, write_atomically
from gatesum.model.errors import GatesumError
from gatesum.model.search import GenerationConfig
from gatesum.training.data import DataConfig, load_pairs
from gatesum.training.evaluate import BUCKETS, evaluate
from gatesum.training.options import Options, load_options
from gatesum.training.train import Trainer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("configs/cnndm-small-input-feeding.toml"),
                        help="base training config (the one the stored comparisons used)")  # fmt: skip
    parser.add_argument("--cells", default="rnn,gru,lstm", help="comma-separated encoder cells")
    parser.add_argument(
        "--attention", default="mlp,none", help="comma-separated attention kinds (none = off)"
    )
    parser.add_argument(
        "--budget-minutes", type=float, default=30.0, help="training time per run, the same for all"
    )
    parser.add_argument("--max-steps", type=int, help="also stop each run after this many steps")
    parser.add_argument("--gate-init", default="default", help="gate initialization: default or chrono")
    parser.add_argument("--test-files", nargs="+", required=True, help="test pairs (.jsonl/.jsonl.gz/...)")
    parser.add_argument("--test-limit", type=int, default=500, help="test documents scored per run")
    parser.add_argument("--beam-size", type=int, default=4, help="beam size when scoring")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/compare-cells"), help="where runs go")
    parser.add_argument("--threads", type=int, help="CPU threads per training run")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FLAG=VALUE",
        help="extra training flag for every run, e.g. --set data.limit=2000",
    )


def run_options(args: argparse.Namespace, cell: str, attention: str, tokenizer: Path | None) -> Options:
    """The base config with only the encoder cell and attention changed (plus the budget)."""
    namespace = argparse.Namespace(
        config=args.config,
        model=[
            f"encoder_cell={json.dumps(cell)}",
            f"attention={json.dumps(attention)}",
            "bidirectional=false",
            f"gate_init={json.dumps(args.gate_init)}",
            *([] if attention != "none" else ["copy=false", "coverage=false"]),
        ],
    )
    options = load_options(namespace)
    train = options.train
    train.output_dir = str(args.output_dir / f"{cell}-{attention}")
    train.max_minutes, train.max_steps = args.budget_minutes, args.max_steps
    train.resume = (Path(train.output_dir) / "checkpoint").exists()
    train.coverage_from_step = None
    if args.threads:
        train.threads = args.threads
    if tokenizer is not None:
        options.tokenizer.path = str(tokenizer)
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        section, _, field = key.partition(".")
        target = getattr(options, section, None)
        if target is None or not hasattr(target, field) or not value:
            raise GatesumError(f"--set {assignment}: expected SECTION.FIELD=VALUE, e.g. data.limit=2000")
        setattr(target, field, _parse(value, type(getattr(target, field))))
    return options


def _parse(value: str, kind: type) -> Any:
    """A ``--set`` value as the field's type; JSON (lists, booleans) or, failing that, the text
    itself (a path for a field whose default is None)."""
    if kind in (int, float, str):
        return kind(value)
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def run(args: argparse.Namespace) -> int:
    cells, kinds = args.cells.split(","), args.attention.split(",")
    test = load_pairs(DataConfig(data_files=args.test_files, limit=args.test_limit), "test")
    tokenizer, rows = None, []
    for cell in cells:
        for attention in kinds:
            options = run_options(args, cell, attention, tokenizer)
            Trainer(options).train()
            directory = Path(options.train.output_dir)
            # The later runs share this run's tokenizer: the copy in its checkpoint is always there.
            tokenizer = tokenizer or directory / "checkpoint" / "tokenizer.model"
            bundle = load_bundle(directory / "best")
            generation = GenerationConfig(beam_size=args.beam_size, max_length=options.data.target_max_tokens)
            report, _ = evaluate(bundle, list(test["source"]), list(test["target"]), generation)
            trained = json.loads((directory / "checkpoint" / "config.json").read_text())["training"]["step"]
            rows.append(row(cell, attention, trained, bundle.card, report))
            write_results(args.output_dir, rows, args)
    print(render(rows, args))
    return 0


def row(
    cell: str, attention: str, trained: int, card: dict[str, Any], report: dict[str, Any]
) -> dict[str, Any]:
    """One run's results: ``steps`` trained in the budget; ``scored_step``, the step of the
    bundle scored (``best/``, the best validation ROUGE)."""
    return {
        "cell": cell,
        "attention": attention,
        "steps": trained,
        "scored_step": card["training"]["step"],
        "minutes": card["training"]["elapsed_minutes"],
        "rouge": report["model"],
        "lead3": report["lead3"],
        "by_source_words": report["by_source_words"],
        "documents": report["documents"],
    }


def write_results(directory: Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    settings = {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key not in ("run",)
    }
    payload = {"settings": settings, "runs": rows}
    write_atomically(
        directory / "compare.json", (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode()
    )
    write_atomically(directory / "compare.md", render(rows, args).encode())
    plot_compare(rows, directory / "compare.png")


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Encoder cells on real summaries: {args.budget_minutes:g} min of training each, "
        f"scored on {rows[0]['documents'] if rows else 0} test documents (beam {args.beam_size}).",
        "",
        "| encoder | attention | steps (scored at) | R-1 | R-2 | R-Lsum | "
        + " | ".join(f"R-Lsum {label} words" for label, _, _ in BUCKETS)
        + " |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(BUCKETS),
    ]
    for entry in rows:
        cells = [_bucket_lsum(bucket) for bucket in entry["by_source_words"]]
        rouge = entry["rouge"]
        lines.append(
            f"| {entry['cell']} | {entry['attention']} | {entry['steps']} ({entry['scored_step']}) | "
            f"{rouge['rouge1']:.2f} | "
            f"{rouge['rouge2']:.2f} | {rouge['rougeLsum']:.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def _bucket_lsum(bucket: dict[str, Any]) -> str:
    model = bucket["model"]
    return "–" if model is None else f"{model['rougeLsum']:.2f} (n={bucket['documents']})"
