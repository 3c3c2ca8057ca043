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
