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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gatesum.model.bundle import recover_directory, write_atomically
from gatesum.model.errors import GatesumError

STATE_FILE = "trainer_state.pt"


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
    directory = Path(output_dir) / "checkpoint"
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


def trim_metrics(path: Path, step: int) -> None:
    """Drop the log lines a killed run wrote after its last checkpoint: the resumed run
    trains those steps again and logs them itself."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        write_atomically(path, "".join(kept).encode())
