"""``gatesum bench cells``: our ``Recurrent("lstm")`` against ``torch.nn.LSTM``, same weights.

Times a training step (forward + backward) and inference (``torch.inference_mode``) of both,
unidirectional and bidirectional, interleaved in one run so that both see the same machine
load; reports the median of the repetitions. On CPU float32 torch runs a fused oneDNN kernel,
on CUDA cuDNN: the targets below are for CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gatesum.model.kernels import lstm_ops
from gatesum.model.recurrent import Recurrent

TARGETS = {"train": 1.2, "inference": 1.3}  # ours / torch, median ms, on CPU


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per batch (B)")
    parser.add_argument("--steps", type=int, default=400, help="time steps per sequence (T)")
    parser.add_argument("--input-size", type=int, default=128, help="input features (I)")
    parser.add_argument("--hidden-size", type=int, default=256, help="hidden units (H)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions before timing")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: cuda when available, else cpu")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0: torch default); 1 is steadier when shared")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")


def _train_step(model: nn.Module, x: Tensor, grad_output: Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        x.grad = None
        output, _ = model(x)
        output.backward(grad_output)

    return step


def _inference(model: nn.Module, x: Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step


def _time_ms(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def _compare(ours: Callable[[], None], reference: Callable[[], None], args, device) -> tuple[float, float]:
    """Median ms of ours and of the reference, run alternately so that load hits both alike."""
    for _ in range(args.warmup):
        ours(), reference()
    ours_ms, reference_ms = [], []
    for _ in range(args.repeats):
        ours_ms.append(_time_ms(ours, device))
        reference_ms.append(_time_ms(reference, device))
    return statistics.median(ours_ms), statistics.median(reference_ms)


def run(args: argparse.Namespace) -> int:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    B, T, H = args.batch_size, args.steps, args.hidden_size
    reference_name = "cuDNN" if device.type == "cuda" else "torch"
    loops = "compiled (model/csrc/lstm.cpp)" if device.type == "cpu" and lstm_ops() else "torch ops"
    print(f"Recurrent('lstm') vs torch.nn.LSTM on {device} ({torch.get_num_threads()} threads), "
          f"B={B} T={T} I={args.input_size} H={H}, median of {args.repeats}; our loops: {loops}")  # fmt: skip
    print(f"{'case':<20}{'ours ms':>10}{reference_name + ' ms':>11}{'ratio':>8}{'target':>8}  met")
    rows = []
    for bidirectional in (False, True):
        torch.manual_seed(0)
        reference = nn.LSTM(args.input_size, H, batch_first=True, bidirectional=bidirectional).to(device)
        ours = Recurrent.from_torch(reference)
        x = torch.randn(B, T, args.input_size, device=device, requires_grad=True)
        grad_output = torch.randn(B, T, H * (2 if bidirectional else 1), device=device)
        cases = {
            "train": (_train_step(ours, x, grad_output), _train_step(reference, x, grad_output)),
            "inference": (_inference(ours, x), _inference(reference, x)),
        }
        for mode, (ours_step, reference_step) in cases.items():
            ours_ms, reference_ms = _compare(ours_step, reference_step, args, device)
            ratio = ours_ms / reference_ms
            case = f"{'bi' if bidirectional else 'uni'} {mode}"
            met = ("yes" if ratio <= TARGETS[mode] else "NO") if device.type == "cpu" else "-"
            print(f"{case:<20}{ours_ms:>10.1f}{reference_ms:>11.1f}{ratio:>8.2f}{TARGETS[mode]:>8.1f}  {met}")
            rows.append({"case": case, "ours_ms": ours_ms, "reference_ms": reference_ms,
                         "ratio": ratio, "target": TARGETS[mode], "met": met})  # fmt: skip
    if args.json:
        settings = {
            "device": str(device),
            "B": B,
            "T": T,
            "I": args.input_size,
            "threads": torch.get_num_threads(),
            "H": H,
            "repeats": args.repeats,
            "our_loops": loops,
        }
        with open(args.json, "w") as file:
            json.dump({"settings": settings, "results": rows}, file, indent=2)
    return 0
