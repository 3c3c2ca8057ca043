"""Resumable training state: what a bundle does not hold, in ``checkpoint/trainer_state.pt``.

Optimizer and scheduler state, the step, the data position, the best score so far and every
random generator's state, so that ``--resume`` with the same seed reaches the same weights at
step N as a run that never stopped. The file is written inside the checkpoint bundle's atomic
swap and read with ``weights_only=True``: tensors and plain containers, no pickled objects.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import torch

from gatesum.model.bundle import WEIGHTS_FILE, load_weights, recover_directory, write_atomically
from gatesum.model.errors import GatesumError

STATE_FILE = "trainer_state.pt"


def trainer_state(trainer) -> bytes:
    state = {
        "step": trainer.step,
        "elapsed": trainer.elapsed,
        "best_score": trainer.best_score,
        "stale_validations": trainer.stale_validations,
        "sampler": trainer.sampler.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": _python_rng_state(),
        },
        "model_config": trainer.model.config.to_dict(),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_trainer_state(output_dir: Path) -> dict[str, Any]:
    directory = Path(output_dir) / "checkpoint"
    recover_directory(directory)
    path = directory / STATE_FILE
    if not path.exists():
        raise GatesumError(f"{path}: no checkpoint to resume from (train without --resume first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a truncated or foreign file
        raise GatesumError(
            f"{path}: unreadable training state ({type(error).__name__}); the checkpoint is corrupt"
        ) from None


def restore(trainer, state: dict[str, Any]) -> None:
    """Put the trainer back where the checkpoint was taken."""
    if state["model_config"] != trainer.model.config.to_dict():
        raise GatesumError(
            "--resume: the model settings differ from the checkpoint's; "
            "use the same config, or a new --output-dir"
        )
    load_weights(trainer.model, trainer.output_dir / "checkpoint" / WEIGHTS_FILE)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.sampler.load_state_dict(state["sampler"])
    trainer.step, trainer.elapsed = state["step"], state["elapsed"]
    trainer.best_score, trainer.stale_validations = state["best_score"], state["stale_validations"]
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))


def _python_rng_state() -> tuple:
    version, internal, gauss = random.getstate()
    return version, list(internal), gauss


def trim_metrics(path: Path, step: int) -> None:
    """Drop the log lines a killed run wrote after its last checkpoint: the resumed run
    trains those steps again and logs them itself."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        write_atomically(path, "".join(kept).encode())
