"""Plots of the experiments: ROUGE by source length (``gatesum memory compare``), training curves
at equal time (``gatesum compare``), content selectors by source length (``gatesum select
compare``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


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
    _save(figure, png_path)


def plot_equal_time(runs: list[dict], png_path: Path) -> None:
    """``gatesum compare``'s runs against training minutes: validation NLL (left) and the greedy
    ROUGE-Lsum of the validation sample the trainer scores (right), one line per run."""
    figure, (loss_axis, rouge_axis) = plt.subplots(1, 2, figsize=(12, 4.4))
    for run in runs:
        curve = run["validation_curve"]
        minutes = [point["minutes"] for point in curve]
        label = f"{run['name']} ({run['decoder']})"
        loss_axis.plot(minutes, [point["val_loss"] for point in curve], "o-", ms=3, label=label)
        rouge_axis.plot(
            minutes, [point["rougeLsum_greedy_sample"] for point in curve], "o-", ms=3, label=label
        )
    clock = runs[0]["clock"] if runs else "wall"
    loss_axis.set(xlabel=f"training minutes ({clock} clock)", ylabel="validation NLL per token",
                  title="Validation loss at equal training time")  # fmt: skip
    rouge_axis.set(xlabel=f"training minutes ({clock} clock)", ylabel="ROUGE-Lsum F1 ×100",
                   title="Greedy ROUGE-Lsum on the validation sample")  # fmt: skip
    loss_axis.legend(fontsize=8)
    _save(figure, png_path)


def plot_selectors(runs: list[dict], lead3: dict, png_path: Path) -> None:
    """``gatesum select compare``'s runs by source length: token ROC AUC (left) and extractive
    ROUGE-Lsum minus Lead-3's on the same documents (right), one line per run, colored by cell
    (solid: bidirectional, dashed: one direction). A bucket without documents has no point."""
    figure, (auc_axis, gap_axis) = plt.subplots(1, 2, figsize=(12, 4.4))
    colors = {"rnn": "tab:red", "gru": "tab:blue", "lstm": "tab:green"}
    leads = {bucket["bucket"]: bucket["model"] for bucket in lead3["by_source_words"]}
    for run in runs:
        line = {"marker": "o", "color": colors.get(run["cell"]), "label": run["name"]}
        style = "-" if run["bidirectional"] else "--"
        buckets = [
            b for b in run["selection"]["by_source_words"] if b["metrics"] and b["metrics"]["auc"] is not None
        ]
        auc_axis.plot([b["bucket"] for b in buckets], [b["metrics"]["auc"] for b in buckets], style, **line)
        extracted = [b for b in run["extractive"]["by_source_words"] if b["model"] is not None]
        gaps = [b["model"]["rougeLsum"] - leads[b["bucket"]]["rougeLsum"] for b in extracted]
        gap_axis.plot([b["bucket"] for b in extracted], gaps, style, **line)
    gap_axis.axhline(0, color="grey", lw=0.8)
    auc_axis.set(xlabel="source length (words)", ylabel="token ROC AUC",
                 title="Selection quality, same training budget")  # fmt: skip
    gap_axis.set(xlabel="source length (words)", ylabel="ROUGE-Lsum − Lead-3",
                 title="Extractive summaries against Lead-3")  # fmt: skip
    auc_axis.legend(fontsize=8)
    _save(figure, png_path)


def _save(figure, png_path: Path) -> None:
    """Lay out, write the PNG and free the figure (pyplot keeps every open one)."""
    figure.tight_layout()
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
