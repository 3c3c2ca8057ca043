"""Reports of the recall sweep: JSON, Markdown tables (cells × lags) and plots; the trace plot."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from gatesum.experiments.recall import MemoryConfig

COLOURS = {"rnn": "tab:red", "gru": "tab:blue", "lstm": "tab:green", "lstm-peephole": "tab:purple"}


def summarize(results: Sequence[dict]) -> dict[tuple[str, str], dict[int, dict]]:
    """(cell, init) -> lag -> accuracy mean/std over seeds, solved count, median steps to solve."""
    groups: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for record in results:
        groups.setdefault((record["cell"], record["init"]), {}).setdefault(record["lag"], []).append(record)
    summary: dict[tuple[str, str], dict[int, dict]] = {}
    for key, by_lag in groups.items():
        summary[key] = {}
        for lag, records in sorted(by_lag.items()):
            accuracies = [r["accuracy"] for r in records]
            solved_steps = [r["steps_to_solve"] for r in records if r["solved"]]
            summary[key][lag] = {
                "mean": statistics.fmean(accuracies),
                "std": statistics.pstdev(accuracies),
                "runs": len(records),
                "solved": len(solved_steps),
                "median_steps": statistics.median(solved_steps) if solved_steps else None,
            }
    return summary


def write_json(path: Path, config: MemoryConfig, meta: dict, results: Sequence[dict]) -> None:
    payload = {"config": dataclasses.asdict(config), **meta, "results": list(results)}
    path.write_text(json.dumps(payload, indent=1) + "\n")


def row_name(cell: str, init: str) -> str:
    return "rnn (no gates)" if cell == "rnn" else f"{cell}, {init} init"


def _row_order(key: tuple[str, str]) -> tuple[int, str]:
    cell, init = key
    return (list(COLOURS).index(cell) if cell in COLOURS else len(COLOURS), init)


def markdown_report(
    config: MemoryConfig, results: Sequence[dict], filler_name: str, seconds: float, command: str = ""
) -> str:
    """Two tables, cells × lags: held-out recall accuracy (mean ± std over seeds), and median
    steps to solve among the seeds that solved (with how many did)."""
    summary = summarize(results)
    lags = sorted({r["lag"] for r in results})
    header = "| cell | " + " | ".join(f"L = {lag:,}" for lag in lags) + " |"
    rule = "|---|" + "---:|" * len(lags)
    accuracy_rows, steps_rows = [], []
    for (cell, init), by_lag in sorted(summary.items(), key=lambda item: _row_order(item[0])):
        accuracy_cells, steps_cells = [], []
        for lag in lags:
            point = by_lag.get(lag)
            if point is None:
                accuracy_cells.append("")
                steps_cells.append("")
                continue
            accuracy_cells.append(f"{point['mean']:.2f} ± {point['std']:.2f}")
            steps = "—" if point["median_steps"] is None else f"{point['median_steps']:g}"
            steps_cells.append(f"{steps} ({point['solved']}/{point['runs']})")
        accuracy_rows.append(f"| {row_name(cell, init)} | " + " | ".join(accuracy_cells) + " |")
        steps_rows.append(f"| {row_name(cell, init)} | " + " | ".join(steps_cells) + " |")
    chance = config.key_symbols**-config.key_length
    cpu_minutes = sum(r.get("cpu_seconds", 0) for r in results) / 60
    objective = (
        "Training loss: the readout after every filler token, lag t weighted 1/t (every lag "
        "1…L at once, a curriculum); scored from the final state at L."
        if config.every_position
        else "Training loss: the final state's readout only (`--final-only`), the classic setting."
    )
    return "\n".join(
        [
            "# Memory: recall a key across L tokens of filler",
            "",
            *([f"Made by `{command}`.", ""] if command else []),
            f"Key: {config.key_length} of {config.key_symbols} symbols at the start (chance {chance:.3f}); "
            f"filler: {filler_name}; readout from the final state, no attention. Hidden size "
            f"{config.hidden_size}, batch {config.batch_size}, Adam {config.learning_rate:g}, gradient norm "
            f"clipped at {config.grad_clip:g}; budget per point {config.max_steps} steps (cap "
            f"{config.max_seconds:g} s), stop at {config.solved_accuracy:.0%} held-out recall; "
            f"{config.seeds} seeds. Wall time {seconds / 60:.1f} min, CPU time {cpu_minutes:.1f} min.",
            "",
            objective,
            "",
            "Chrono init (Tallec & Ollivier 2018) sets the gate biases so that an untrained cell's "
            f"memory times spread up to {config.chrono_span:g} × the document length T (LSTM b_f = "
            "log U(1, T−1), b_i = −b_f; GRU b_z = −log U(1, T−1)); the default init forgets within a "
            "few steps, so a gradient from the end of a long document alone does not reach its key.",
            "",
            "## Held-out recall accuracy (mean ± std over seeds)",
            "",
            header,
            rule,
            *accuracy_rows,
            "",
            "## Steps to solve (median over solved seeds; solved/runs)",
            "",
            header,
            rule,
            *steps_rows,
            "",
        ]
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_results(results: Sequence[dict], path: Path, chance: float, command: str = "") -> Path:
    """Accuracy against lag (log x), one colour per cell, dashed for the default init."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for (cell, init), by_lag in sorted(summarize(results).items(), key=lambda item: _row_order(item[0])):
        lags = list(by_lag)
        dashed = init == "default" and cell != "rnn"
        axes.errorbar(
            lags,
            [by_lag[lag]["mean"] for lag in lags],
            yerr=[by_lag[lag]["std"] for lag in lags],
            label=row_name(cell, init),
            color=COLOURS.get(cell),
            marker="o",
            capsize=3,
            linestyle="--" if dashed else "-",
            markerfacecolor="white" if dashed else None,
        )
    axes.axhline(chance, color="grey", linestyle=":", label=f"chance ({chance:.3f})")
    axes.set(
        xscale="log",
        xlabel="lag L (tokens between the key and the end)",
        ylim=(-0.02, 1.02),
        ylabel="held-out recall accuracy",
        title="Recall of a document's first token",
    )
    if command:
        figure.text(0.01, 0.01, command, fontsize=6, color="grey")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: curves overlap at 1
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_trace(
    tokens: Sequence[str],
    retention: Sequence[float] | Tensor | Mapping[str, Sequence[float]],
    path: str | Path,
    title: str = "Memory trace",
) -> Path:
    """Plot retention per source position (one curve, or one per label of a mapping), with the
    tokens on the x axis when there are few enough to read."""
    plt = _pyplot()
    curves = retention if isinstance(retention, Mapping) else {"retention": retention}
    figure, axes = plt.subplots(figsize=(max(6.0, min(0.25 * len(tokens), 16.0)), 3.5))
    for label, values in curves.items():
        values = values.tolist() if isinstance(values, Tensor) else list(values)
        if len(values) != len(tokens):
            raise ValueError(f"{len(values)} retention values for {len(tokens)} tokens")
        axes.plot(range(len(values)), values, label=label, marker="." if len(values) <= 80 else None)
    if len(tokens) <= 80:
        axes.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
    axes.set(xlabel="source position", ylabel="retention at the end", ylim=(-0.02, 1.05), title=title)
    if len(curves) > 1:
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def plot_curves(curves: Mapping[str, Sequence[float]], path: Path, chance: float, command: str = "") -> Path:
    """Recall accuracy along a document (log x: lag 1, 2, …), one line per shipped model."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for name, values in curves.items():
        axes.plot(range(1, len(values) + 1), values, label=name, color=COLOURS.get(name))
    axes.axhline(chance, color="grey", linestyle=":", label=f"chance ({chance:.3f})")
    axes.set(
        xscale="log",
        xlabel="lag (text tokens read since the key)",
        ylim=(-0.02, 1.02),
        ylabel="held-out recall accuracy",
        title="Shipped recall models: recall along a document",
    )
    if command:
        figure.text(0.01, 0.01, command, fontsize=6, color="grey")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
