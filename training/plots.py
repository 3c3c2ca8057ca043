"""Training curves from metrics.jsonl: loss and validation ROUGE against steps, as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt


def plot_curves(metrics_path: Path, png_path: Path) -> None:
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r]
    validation = [r for r in records if "val_loss" in r]
    figure, (loss_axis, rouge_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    loss_axis.plot(
        [r["step"] for r in validation], [r["val_loss"] for r in validation], "o-", label="validation NLL"
    )
    loss_axis.set(xlabel="step", ylabel="loss (NLL per token)", title="Loss")
    loss_axis.legend()
    for key, label in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeLsum", "ROUGE-Lsum")):
        rouge_axis.plot(
            [r["step"] for r in validation], [r.get(key, 0) for r in validation], "o-", label=label
        )
    rouge_axis.set(xlabel="step", ylabel="F1 ×100", title="Validation ROUGE (greedy, sample)")
    rouge_axis.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=110)
    plt.close(figure)


def plot_compare(runs: list[dict], png_path: Path) -> None:
    """``gatesum memory compare``'s runs: ROUGE-Lsum by source length, one line per encoder cell
    and attention setting (solid: attention on, dashed: off), with Lead-3 in grey; the right
    panel subtracts Lead-3, which takes out how hard each length bucket is in itself."""
    figure, (score_axis, gap_axis) = plt.subplots(1, 2, figsize=(12, 4.4))
    colors = {"rnn": "tab:red", "gru": "tab:blue", "lstm": "tab:green"}
    for run in runs:
        buckets = [b for b in run["by_source_words"] if b["model"] is not None]
        labels = [b["bucket"] for b in buckets]
        style = "--" if run["attention"] == "none" else "-"
        name = f"{run['cell']}, attention {'off' if run['attention'] == 'none' else 'on'}"
        line = {"marker": "o", "color": colors.get(run["cell"]), "label": name}
        score_axis.plot(labels, [b["model"]["rougeLsum"] for b in buckets], style, **line)
        gaps = [b["model"]["rougeLsum"] - b["lead3"]["rougeLsum"] for b in buckets]
        gap_axis.plot(labels, gaps, style, **line)
    if runs:
        buckets = [b for b in runs[0]["by_source_words"] if b["lead3"] is not None]
        score_axis.plot([b["bucket"] for b in buckets], [b["lead3"]["rougeLsum"] for b in buckets], ":",
                        marker="s", color="grey", label="Lead-3")  # fmt: skip
    gap_axis.axhline(0, color="grey", lw=0.8)
    score_axis.set(xlabel="source length (words)", ylabel="ROUGE-Lsum F1 ×100",
                   title="Encoder cells, same training time")  # fmt: skip
    gap_axis.set(xlabel="source length (words)", ylabel="ROUGE-Lsum − Lead-3",
                 title="Against Lead-3 on the same documents")  # fmt: skip
    score_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
