"""``resolve_device``: the one place a device name ("auto", "cpu", "cuda:1", "mps") becomes a
``torch.device``, for training, ``gatesum summarize``/``eval`` and the service alike."""

from __future__ import annotations

import os

import torch

from gatesum.model.errors import GatesumError


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """``auto``: CUDA (``cuda:LOCAL_RANK`` under torchrun, so each process takes its own GPU),
    then MPS, then CPU. Any other name must be a device this machine has; GatesumError names
    ``option`` (the flag or setting the name came from) when it is not."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GatesumError(f"{option} {name!r}: not a device (auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GatesumError(f"{option} {name}: no CUDA device is available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise GatesumError(f"{option} {name}: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not _mps_available():
        raise GatesumError(f"{option} {name}: MPS is not available")
    return device


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
