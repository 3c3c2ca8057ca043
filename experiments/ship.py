"""``gatesum memory ship``: train the recall models that ship with the package, one per cell.

Unlike a sweep point, a shipped model is read out at every position: the endpoint that plants a
key at the start of a user's text asks, for every token, how likely the right key is had the
document ended there. So training puts the loss on the readout after every text token of a
document of ``train_length`` tokens (every lag from 1 to ``train_length`` at once), and the
evaluation reads the whole recall curve of held-out documents (CNN/DailyMail *test* articles,
the training text is validation articles) in one pass, out to lags well past the training length.

Every cell gets the same budget (steps, batch, learning rate, hidden size); the gated cells start
from chrono initialization with memory times up to ``chrono_span`` × the training length.
Writes NAME.json + NAME.safetensors per cell and README.md (the card) into ``--output``, and
the results (JSON with the command, Markdown, PNG) at ``--report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gatesum.experiments.memory_report import plot_curves
from gatesum.experiments.recall import (
    Filler,
    MemoryConfig,
    make_filler,
    new_model,
    recall_batch,
    train_step,
)
from gatesum.model.recall import CELL_NAMES, RecallModel, save_recall_model


@dataclass
class ShipConfig(MemoryConfig):
    """The sweep's model and optimizer settings, and how the shipped models train and are scored."""

    cells: tuple[str, ...] = CELL_NAMES
    train_length: int = 1000  # text tokens per training document, a loss after each
    chrono_span: float = 4.0  # memory times up to 4 × train_length: room past the training lag
    max_steps: int = 400  # the budget per model, the same for every cell
    max_seconds: float = 1800.0
    eval_lags: tuple[int, ...] = (1, 3, 10, 30, 100, 300, 1000, 2000, 5000)
    eval_size: int = 256
    held_accuracy: float = 0.95  # "held to lag L": accuracy at least this at every lag up to L
    seed: int = 0


def train_shipped(config: ShipConfig, filler: Filler, cell: str) -> tuple[RecallModel, dict]:
    """Train one cell's model on windows of ``filler``, loss at every position; (model, record)."""
    model = new_model(config, filler, cell, "chrono", config.key_length + config.train_length, config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    stream = torch.Generator().manual_seed(config.seed)
    started, cpu_started, step = time.perf_counter(), time.process_time(), 0
    while step < config.max_steps:
        step += 1
        batch = recall_batch(config, filler, config.train_length, config.batch_size, stream)
        tokens, keys = (tensor.to(config.device) for tensor in batch)
        loss, _ = train_step(model, optimizer, tokens, keys, config.grad_clip, every_position=True)
        if step % 50 == 0:  # progress of a long run, one line per 50 steps
            print(f"{cell}: step {step}, loss {loss.item():.3f}", file=sys.stderr, flush=True)
        if time.perf_counter() - started > config.max_seconds:
            break
    record = {
        "cell": cell,
        "steps": step,
        "loss": round(loss.item(), 4),
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }
    return model.cpu().eval(), record


@torch.no_grad()
def recall_along(model: RecallModel, config: ShipConfig, filler: Filler) -> tuple[list[float], list[float]]:
    """Held-out recall after every text token out to max(eval_lags): (accuracy, mean probability
    of the right key) per lag 1, 2, …, from ``eval_size`` documents read once each."""
    length = max(config.eval_lags)
    tokens, keys = recall_batch(config, filler, length, config.eval_size, torch.Generator().manual_seed(-1))
    k = config.key_length
    correct, probability = [], []
    for chunk_tokens, chunk_keys in zip(tokens.split(64), keys.split(64)):
        logits = model(chunk_tokens)[:, k:]  # (b, L, k, K): after each text token
        targets = chunk_keys.unsqueeze(1).expand(-1, length, -1)  # (b, L, k)
        correct.append((logits.argmax(-1) == targets).all(-1).float())  # (b, L)
        log_p = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(-1)
        probability.append(log_p.exp())  # (b, L)
    return torch.cat(correct).mean(0).tolist(), torch.cat(probability).mean(0).tolist()


def held_to(accuracy: list[float], threshold: float) -> int:
    """The longest lag L with accuracy ≥ threshold at every lag 1…L (0 if not even at lag 1)."""
    for index, value in enumerate(accuracy):
        if value < threshold:
            return index
    return len(accuracy)


def _ship_one(job: tuple) -> dict:
    """Train and score one cell (a worker process); returns the record with the weights."""
    config, spec, threads, cell = job
    torch.set_num_threads(threads)
    filler = make_filler(spec)
    test_filler = make_filler(spec, split="test", pieces=filler.pieces)  # scored on unseen text
    model, record = train_shipped(config, filler, cell)
    accuracy, probability = recall_along(model, config, test_filler)
    recall = {
        str(lag): {"accuracy": round(accuracy[lag - 1], 4), "probability": round(probability[lag - 1], 4)}
        for lag in config.eval_lags
    }
    record.update(
        recall=recall,
        held_to=held_to(accuracy, config.held_accuracy),
        parameters=sum(p.numel() for p in model.parameters()),
    )
    return {**record, "state": model.state_dict(), "curve": accuracy}


def run_ship(
    config: ShipConfig,
    spec: tuple,
    filler_name: str,
    output: Path,
    report: Path,
    workers: int,
    threads: int,
    command: str,
    tokenizer,
) -> list[dict]:
    """Train every cell (in ``workers`` processes), then write the models, the card and the report."""
    jobs = [(config, spec, threads, cell) for cell in config.cells]
    started = time.perf_counter()
    if workers <= 1:
        records = [_ship_one(job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            records = pool.map(_ship_one, jobs, chunksize=1)
    seconds = time.perf_counter() - started
    output.mkdir(parents=True, exist_ok=True)
    report.parent.mkdir(parents=True, exist_ok=True)
    facts = {"command": command, "filler": filler_name, "config": dataclasses.asdict(config)}
    for record in records:
        model = RecallModel(config.model_config(record["cell"]), record["state"]["pieces"])
        model.load_state_dict(record["state"])
        training = {k: record[k] for k in ("steps", "loss", "seconds", "cpu_seconds")}
        card = {**facts, "training": training, "recall": record["recall"], "held_to": record["held_to"]}
        save_recall_model(output, record["cell"], model, card, tokenizer)
        record["bytes"] = (output / f"{record['cell']}.safetensors").stat().st_size
    summary = [{k: v for k, v in r.items() if k not in ("state", "curve")} for r in records]
    payload = {**facts, "wall_seconds": round(seconds, 1), "models": summary}
    report.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    table = ship_table(config, summary)
    report.with_suffix(".md").write_text(f"# Shipped recall models\n\nMade by `{command}`.\n\n{table}\n")
    curves = {r["cell"]: r["curve"] for r in records}
    plot_curves(curves, report.with_suffix(".png"), config.key_symbols**-config.key_length, command)
    (output / "README.md").write_text(card_text(config, payload, report, table))
    return summary


def ship_table(config: ShipConfig, models: list[dict]) -> str:
    """Held-out recall accuracy by lag, one row per model (Markdown)."""
    header = "| model | " + " | ".join(f"L = {lag:,}" for lag in config.eval_lags) + " | held ≥ "
    header += f"{config.held_accuracy:.2f} to | size |"
    rows = [header, "|---|" + "---:|" * (len(config.eval_lags) + 2)]
    for model in models:
        cells = [f"{model['recall'][str(lag)]['accuracy']:.2f}" for lag in config.eval_lags]
        size = f"{model['bytes'] / 1000:.0f} KB" if "bytes" in model else ""
        rows.append(f"| {model['cell']} | " + " | ".join(cells) + f" | {model['held_to']:,} | {size} |")
    return "\n".join(rows)


def card_text(config: ShipConfig, payload: dict, report: Path, table: str) -> str:
    """README.md of the shipped models: what they are, how they were trained, recall by lag."""
    times = ", ".join(
        f"{m['cell']} {m['seconds'] / 60:.1f} min ({m['cpu_seconds'] / 60:.1f} CPU min)"
        for m in payload["models"]
    )
    chance = config.key_symbols**-config.key_length
    text_source = ""
    if payload["filler"].startswith("CNN"):
        text_source = (
            " of the first 2,000 validation articles (concatenated); scored on windows of the first "
            "2,000 *test* articles"
        )
    return "\n".join(
        [
            "# Recall models: how long does each cell remember?",
            "",
            "One small model per cell (plain RNN, GRU, LSTM, and the LSTM with peepholes of the "
            "material's extended form): an embedding, one of gatesum's own recurrent layers "
            f"(H = {config.hidden_size}) and a linear readout of the hidden state. It reads a key (1 of "
            f"{config.key_symbols} symbols, chance {chance:.3f}) followed by text, and at every position "
            "names the key from its state alone, with no attention: the probability of the right key "
            "after t tokens is what the cell still remembers across a lag of t.",
            "",
            "```python",
            "from gatesum.model.bundle import BUNDLED_MODEL, load_bundle",
            "from gatesum.model.recall import load_recall_models, recall_curve",
            "from gatesum.model.text import normalize",
            "",
            "bundle = load_bundle(BUNDLED_MODEL)  # the summarizer: its tokenizer and normalizer",
            "models = load_recall_models(tokenizer=bundle.tokenizer)  # name -> LoadedRecallModel",
            "ids = bundle.tokenizer.encode(normalize(text, bundle.normalizer))",
            'curve = recall_curve(models["lstm"].model, ids, key=3)  # (T,): P(right key) after each token',
            "```",
            "",
            "Files: `NAME.json` (config, tokenizer fingerprint, these facts) and `NAME.safetensors` "
            "(float32 weights). Text is the bundled summarizer's sentencepiece pieces; the "
            f"{config.filler_vocab} most frequent in the training text have their own embedding, "
            "every other piece shares one.",
            "",
            "## How they were trained",
            "",
            f"`{payload['command']}`",
            "",
            f"- data: {payload['filler']}; a training document is a key and a random window of "
            f"{config.train_length:,} tokens{text_source}",
            "- loss: cross-entropy of the readout after every text token, lag t weighted 1/t (all lags "
            f"1…{config.train_length:,} at once); Adam {config.learning_rate:g}, batch {config.batch_size}, "
            f"gradient norm clipped at {config.grad_clip:g}, {config.max_steps} steps per model, "
            f"seed {config.seed}",
            f"- gates: chrono initialization, memory times up to {config.chrono_span:g} × "
            f"{config.train_length:,} steps (the plain RNN has no gates: default initialization)",
            f"- time, wall (CPU) on the machine that ran it, {payload['wall_seconds'] / 60:.1f} min in all: "
            f"{times}",
            "",
            f"## Held-out recall accuracy by lag ({config.eval_size} test documents)",
            "",
            f"From `{report.with_suffix('.json').as_posix()}`; L = text tokens read since the key.",
            "",
            table,
            "",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``gatesum memory ship`` of its own (the sweep's --cells, --max-steps, --data,
    --workers ... apply too)."""
    parser.add_argument("--output", type=Path, default=Path("runs/memory-ship"), help="folder for the models")
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("runs/memory-ship/memory-ship"),
        help="path prefix of the results: PREFIX.json, .md, .png",
    )
    parser.add_argument("--train-length", type=int, help="text tokens per training document")
    parser.add_argument("--eval-lags", type=lambda s: tuple(map(int, s.split(","))), help="lags in the table")
    parser.add_argument("--eval-size", type=int, help="held-out documents scored")
