"""``resolve_device``: the one device picker (training, summarize/eval, the service)."""

from __future__ import annotations

import pytest
import torch

from gatesum.model import devices
from gatesum.model.devices import resolve_device
from gatesum.model.errors import GatesumError


def test_auto_takes_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "3")  # torchrun: each process its own GPU
    assert resolve_device("auto") == torch.device("cuda", 3)


def test_a_named_device_is_checked_and_the_error_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    cases = {
        "cuda": "--device cuda: no CUDA device is available",
        "cuda:1": "--device cuda:1: no CUDA device is available",
        "mps": "--device mps: MPS is not available",
        "gpu": "--device 'gpu': not a device (auto, cpu, cuda, cuda:N or mps)",
    }
    for name, message in cases.items():
        with pytest.raises(GatesumError) as raised:
            resolve_device(name)
        assert str(raised.value) == message
    with pytest.raises(GatesumError, match=r"^GATESUM_DEVICE cuda: "):
        resolve_device("cuda", "GATESUM_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(GatesumError, match=r"^--device cuda:2: this machine has 2 CUDA device\(s\)$"):
        resolve_device("cuda:2")
