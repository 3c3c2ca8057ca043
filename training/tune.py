"""``gatesum tune``: decoding settings chosen as a grid on validation documents, never on test.

    gatesum tune --model runs/medium/best --data-files ../shared/data/cnndm/validation.jsonl.gz \\
        --limit 500 --grid min_length=0,30,45,60 --grid length_penalty=1.0,1.5,2.0

Every combination of the ``--grid`` values (the other settings keep their flags' values) runs
through the one inference path (``training.evaluate.summarize_timed``) and is scored with the
same ROUGE as ``gatesum eval``. The best point is the one with the highest mean of R-1, R-2 and
R-Lsum: the three scores a summary is compared with Lead-3 on. Writes into --output-dir
(default ``runs/tune-<bundle name>``) ``grid.json`` (every point, its scores, mean length and
decode speed, the command) and ``grid.md`` (the table, best first), and prints the table.

The chosen values become the defaults of ``model.search.GenerationConfig`` by hand: that one
home feeds the service, ``gatesum summarize`` and ``gatesum eval``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gatesum.model.bundle import write_atomically
from gatesum.model.errors import GatesumError
from gatesum.model.search import GENERATION_SETTINGS, GenerationConfig
from gatesum.model.text import normalize
from gatesum.training.data import DataConfig, load_split
from gatesum.training.evaluate import (
    METRIC_NAMES,
    add_data_arguments,
    mean_words,
    quiet_datasets,
    rounded,
    score,
    summarize_timed,
)
from gatesum.training.rouge import aggregate
from gatesum.training.summarize import (
    add_generation_arguments,
    add_model_arguments,
    generation_config,
    load_model,
)

SELECTED_BY = ("rouge1", "rouge2", "rougeLsum")  # the best point has the highest mean of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_data_arguments(parser, split="validation", limit=500)
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,…",
        help="a generation setting and the values to try (repeat for more settings: every "
        "combination is tried)",
    )
    add_generation_arguments(parser)
    parser.add_argument("--output-dir", default=None, metavar="DIR",
                        help="where grid.json and grid.md go (default: runs/tune-<bundle name>)")  # fmt: skip


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["min_length=0,30", "length_penalty=1,1.5"]`` -> {name: values}; GatesumError when invalid."""
    settings = {setting.name: setting for setting in GENERATION_SETTINGS}
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, _, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if name not in settings:
            raise GatesumError(f"--grid {item}: {name!r} is not a generation setting ({', '.join(settings)})")
        if name in grid:
            raise GatesumError(f"--grid {item}: {name} is given twice")
        setting, parsed = settings[name], []
        for value in values.split(","):
            try:
                number = setting.kind(value.strip())
            except ValueError:
                raise GatesumError(f"--grid {item}: {value!r} is not a {setting.kind.__name__}") from None
            problem = setting.problem(number)
            if problem:
                raise GatesumError(f"--grid {item}: {name} {problem}")
            parsed.append(number)
        grid[name] = parsed
    if not grid:
        raise GatesumError("give at least one --grid NAME=V1,V2,…")
    return grid


def grid_points(base: GenerationConfig, grid: dict[str, list[Any]]) -> list[GenerationConfig]:
    """Every combination of the grid's values, the other settings as in ``base``."""
    names = list(grid)
    return [replace(base, **dict(zip(names, values))) for values in itertools.product(*grid.values())]


def run(args: argparse.Namespace) -> int:
    grid = parse_grid(args.grid)
    if args.limit is not None and args.limit < 1:
        raise GatesumError(f"--limit must be ≥ 1, not {args.limit}")
    base = generation_config(args)
    bundle = load_model(args)
    data = DataConfig(data_files=args.data_files, text_column=args.text_column,
                      summary_column=args.summary_column, split=args.split, limit=args.limit,
                      cache_dir=args.cache_dir)  # fmt: skip
    with quiet_datasets():
        loaded = load_split(data, args.split)
    print(loaded.report.line(), file=sys.stderr)
    articles, references = list(loaded.pairs["source"]), list(loaded.pairs["target"])
    normalized_references = [normalize(reference, bundle.normalizer) for reference in references]
    points = []
    for number, generation in enumerate(grid_points(base, grid), start=1):
        print(f"point {number}: {describe(generation, grid)}", file=sys.stderr)
        summaries, seconds = summarize_timed(bundle, articles, generation, args.batch_size)
        predictions = [summary.normalized for summary in summaries]
        scores = rounded(aggregate(score(predictions, normalized_references, "scoring")))
        points.append({
            "settings": {name: getattr(generation, name) for name in grid},
            "rouge": scores,
            "selection_score": round(sum(scores[metric] for metric in SELECTED_BY) / len(SELECTED_BY), 4),
            "mean_words": mean_words(predictions),
            "documents_per_second": round(len(articles) / seconds, 3),
        })  # fmt: skip
    points.sort(key=lambda point: point["selection_score"], reverse=True)
    report = {
        "command": shlex.join(["gatesum", *sys.argv[1:]]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bundle": bundle.name,
        "documents": len(articles),
        "data_files": args.data_files,
        "split": args.split,
        "rows": asdict(loaded.report),
        "base_generation": asdict(base),
        "grid": grid,
        "selected_by": f"mean of {', '.join(METRIC_NAMES[metric] for metric in SELECTED_BY)}",
        "best": points[0]["settings"],
        "points": points,
    }
    output_dir = Path(args.output_dir or f"runs/tune-{bundle.name}")
    markdown = render_markdown(report)
    write_atomically(
        output_dir / "grid.json", (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode()
    )
    write_atomically(output_dir / "grid.md", markdown.encode())
    print(markdown, end="")
    print(f"wrote {output_dir}/grid.json, grid.md", file=sys.stderr)
    return 0


def describe(generation: GenerationConfig, grid: dict[str, list[Any]]) -> str:
    return ", ".join(f"{name}={getattr(generation, name)}" for name in grid)


def render_markdown(report: dict[str, Any]) -> str:
    names = list(report["grid"])
    metrics = " | ".join(METRIC_NAMES.values())
    others = ", ".join(
        f"{name} {value}"
        for name, value in report["base_generation"].items()
        if name not in names and name != "source_lengths"  # set per batch, never a setting
    )
    lines = [
        f"# {report['bundle']}: decoding grid on {report['documents']} {report['split']} documents",
        "",
        f"`{report['command']}`",
        "",
        f"Other settings: {others}. Best first, by the {report['selected_by']}.",
        "",
        f"| {' | '.join(names)} | {metrics} | mean | words | docs/s |",
        "|" + "---:|" * (len(names) + len(METRIC_NAMES) + 3),
    ]
    for point in report["points"]:
        cells = [str(point["settings"][name]) for name in names]
        cells += [f"{point['rouge'][metric]:.2f}" for metric in METRIC_NAMES]
        cells += [
            f"{point['selection_score']:.2f}",
            f"{point['mean_words']}",
            f"{point['documents_per_second']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
