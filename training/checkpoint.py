"""Resumable training state: what a bundle does not hold, in ``checkpoint/trainer_state.pt``.

``TrainerState`` holds the step, the training time, the best score so far, the data position,
the optimizer's and scheduler's state and every random generator's state, so that ``--resume``
with the same seed reaches the same weights at step N as a run that never stopped. The trainer
builds it and restores itself from it (``Trainer.state_dict`` / ``Trainer.load_state_dict``);
this module writes and reads the file. It is written inside the checkpoint bundle's atomic swap
and read with ``weights_only=True``: tensors and plain containers, no pickled objects.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gatesum.model.bundle import recover_directory, write_atomically
from gatesum.model.errors import GatesumError

STATE_FILE = "trainer_state.pt"
# what a training run writes into its output directory
CHECKPOINT_DIR, BEST_DIR, METRICS_FILE = "checkpoint", "best", "metrics.jsonl"


@dataclass
class TrainerState:
    step: int  # optimizer steps taken
    elapsed: float  # seconds trained, over every session of the run
    best_score: float | None  # the best validation score so far (None before the first)
    stale_validations: int  # validations since the best one (early stopping counts them)
    sampler: dict[str, Any]  # the data position: TokenBatchSampler.state_dict()
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]  # capture_rng()
    model_config: dict[str, Any]  # the architecture trained: a resumed run must have the same

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({item.name: getattr(self, item.name) for item in dataclasses.fields(self)}, buffer)
        return buffer.getvalue()


def load_trainer_state(output_dir: Path) -> TrainerState:
    """The state saved in ``output_dir/checkpoint``; GatesumError when it is missing or unreadable."""
    directory = Path(output_dir) / CHECKPOINT_DIR
    recover_directory(directory)
    path = directory / STATE_FILE
    if not path.exists():
        raise GatesumError(f"{path}: no checkpoint to resume from (train without --resume first)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a truncated or foreign file
        raise GatesumError(
            f"{path}: unreadable training state ({type(error).__name__}); the checkpoint is corrupt"
        ) from None
    names = [item.name for item in dataclasses.fields(TrainerState)]
    missing = [name for name in names if name not in saved] if isinstance(saved, dict) else names
    if missing:
        raise GatesumError(f"{path}: not a training state of this version (no {', '.join(missing)})")
    return TrainerState(**{name: saved[name] for name in names})


def capture_rng() -> dict[str, Any]:
    """Every random generator's state: torch's, CUDA's and Python's."""
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": (version, list(internal), gauss),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def trim_metrics(path: Path, step: int) -> list[str]:
    """Drop the log lines a killed run wrote after its last checkpoint: the resumed run
    trains those steps again and logs them itself. A last line cut short by the kill is dropped
    too; the returned warnings say so. GatesumError for a broken line before the last."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    kept, warnings = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number < len(lines):
                raise GatesumError(
                    f"{path}: line {number} is not JSON; mend or delete it to resume"
                ) from None
            warnings.append(f"{path}: dropped its last line, cut short by the stop ({len(line)} characters)")
            continue
        if record.get("step", 0) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")  # the next record starts a line
    if kept != lines:
        write_atomically(path, "".join(kept).encode())
    return warnings


def remove_stale_files(output_dir: Path) -> list[str]:
    """Finish what a killed save left undone in ``output_dir``: put back a bundle whose swap it
    interrupted (``recover_directory``), and delete the half-written temporaries it left
    (``.checkpoint.tmp-*``, ``.best.tmp-*`` folders, ``.metrics.jsonl.*`` files). Returns their
    names. Call it before this run saves anything: a temporary of its own would look the same."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    for bundle in (CHECKPOINT_DIR, BEST_DIR):
        recover_directory(output_dir / bundle)
    removed = []
    for pattern in (f".{CHECKPOINT_DIR}.tmp-*", f".{BEST_DIR}.tmp-*", f".{METRICS_FILE}.*"):
        for path in sorted(output_dir.glob(pattern)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
