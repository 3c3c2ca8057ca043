"""``gatesum bench train``: full training steps of the input-feeding decoder and the parallel one.

Times forward + backward + gradient clipping + optimizer step (``gatesum train``'s own optimizer,
from the config's ``[train]`` table) of three summarizers that differ only in the decoder, built
from a training config's ``[model]`` table (default ``configs/cnndm-small-input-feeding.toml``, its
tokenizer's vocabulary size):

    (a) input feeding, additive attention: the config as it is, stepped token by token
    (b) no input feeding, additive attention: the decoder LSTM over all positions at once
    (c) no input feeding, bilinear ("general") attention: attention for all positions in one bmm

in two phases of training: before the coverage phase (coverage feature on, w_c = 0, so it is
not tracked) and in it (coverage loss λ from ``[train]``, w_c ≠ 0: coverage feeds the scores,
so the parallel decoders attend position by position after their parallel LSTM). The cases
run interleaved in one process, so that all see the same machine load; the median of the
repetitions is reported, with tokens/s (source + target tokens, as ``gatesum train`` counts
them) and the speed-up over (a).

Each step is timed on two clocks: the wall clock, and the process's CPU time (``--clock``
chooses which one the tokens/s and speed-ups are computed from; both are stored). On a
shared machine the wall clock also counts the time other jobs hold the core, which varied
±30% from step to step with three trainings running on our two cores; CPU time counts only
this process's work (at one thread, the same as the wall time on an idle machine; with more
threads it sums them, so it measures work, not latency). ``gatesum train --clock cpu``
budgets runs the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import tomllib
import torch

from gatesum.model.config import ModelConfig
from gatesum.model.kernels import lstm_ops
from gatesum.model.summarizer import Summarizer
from gatesum.training.options import TrainConfig
from gatesum.training.train import make_optimizer

CASES = {  # name -> ModelConfig overrides
    "(a) input feeding, additive": {"input_feeding": True},
    "(b) parallel, additive": {"input_feeding": False, "attention": "mlp"},
    "(c) parallel, bilinear": {"input_feeding": False, "attention": "general"},
}
W_C_IN_PHASE = 0.05  # any w_c ≠ 0: what the coverage phase has after its first step
TARGET_SPEEDUP = 3.0  # tokens/s of the parallel decoder over (a), issue #14
OPTIMIZER_SETTINGS = ("optimizer", "learning_rate", "weight_decay")  # taken from [train], as by gatesum train
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/cnndm-small-input-feeding.toml",
                        help="training config whose [model] and [tokenizer] sizes are used")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per batch (B)")
    parser.add_argument("--source-length", type=int, default=400, help="source tokens per pair (S)")
    parser.add_argument("--target-length", type=int, default=60, help="target tokens per pair (T)")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per case; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case before timing")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0: torch default); 1 is steadier on a shared machine")  # fmt: skip
    parser.add_argument("--phases", default="before-coverage,coverage",
                        help="comma-separated: before-coverage (w_c = 0: not tracked), "
                             "coverage (λ > 0, w_c ≠ 0: fed into the scores)")  # fmt: skip
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="the clock tokens/s and speed-ups come from (both are stored): cpu, "
                             "this process's CPU time, steadier on a shared machine; or wall")  # fmt: skip
    parser.add_argument("--cpu-bf16-output", action=argparse.BooleanOptionalAction, default=None,
                        help="every case's output layer in bfloat16 (gatesum train's cpu_bf16_output; "
                             "default: the config's [train] setting)")  # fmt: skip
    parser.add_argument("--output", metavar="PATH", help="also write the results, and this command, to JSON")


@dataclass
class Batch:
    source: torch.Tensor  # (B, S)
    source_lengths: torch.Tensor  # (B,)
    target_input: torch.Tensor  # (B, T)
    target_output: torch.Tensor  # (B, T)

    @property
    def tokens(self) -> int:
        return int(self.source_lengths.sum()) + int((self.target_output != 0).sum())


def read_config(path: str) -> tuple[ModelConfig, dict]:
    """The config file's [model] table with its [tokenizer] vocabulary size, and its [train] table."""
    tables = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    model = dict(tables.get("model", {}))
    model["vocab_size"] = tables.get("tokenizer", {}).get("vocab_size", ModelConfig.vocab_size)
    return ModelConfig(**model), tables.get("train", {})


def random_batch(config: ModelConfig, B: int, S: int, T: int) -> Batch:
    """Full-length random pairs: CNN/DailyMail articles mostly exceed the 400-token cap."""
    generator = torch.Generator().manual_seed(0)
    first = max(config.pad_id, config.unk_id, config.bos_id, config.eos_id) + 1
    source = torch.randint(first, config.vocab_size, (B, S), generator=generator)
    words = torch.randint(first, config.vocab_size, (B, T - 1), generator=generator)
    bos = torch.full((B, 1), config.bos_id)
    eos = torch.full((B, 1), config.eos_id)
    return Batch(source, torch.full((B,), S), torch.cat([bos, words], 1), torch.cat([words, eos], 1))


def coverage_loss_weight(train: dict) -> float:
    """λ of the config's [train] table (``coverage_weight`` in configs written before the rename)."""
    return float(train.get("coverage_loss_weight", train.get("coverage_weight", 1.0)))


def train_step(config: ModelConfig, train: dict, batch: Batch, phase: str) -> Callable[[], None]:
    """One full training step of a fresh model, as ``gatesum train`` takes it."""
    torch.manual_seed(0)
    model = Summarizer(config).train()
    if train.get("cpu_bf16_output", False):
        model.decoder.output_matmul_dtype = torch.bfloat16
    loss_weight = 0.0  # λ
    if phase == "coverage":
        loss_weight = coverage_loss_weight(train)
        with torch.no_grad():
            model.decoder.attention.w_c.fill_(W_C_IN_PHASE)
    settings = {name: train[name] for name in OPTIMIZER_SETTINGS if name in train}
    optimizer = make_optimizer(model.parameters(), TrainConfig(**settings))
    grad_clip = train.get("grad_clip", 1.0)

    def step() -> None:
        loss, _ = model(batch.source, batch.source_lengths, batch.target_input, batch.target_output,
                        coverage_loss_weight=loss_weight)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()

    return step


def time_interleaved(
    steps: dict[str, Callable[[], None]], warmup: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Median seconds per step of each on every clock (name -> clock -> s), one step of each in
    turn so that load hits all alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    seconds = {name: {clock: [] for clock in CLOCKS} for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = {clock: read() for clock, read in CLOCKS.items()}
            step()
            for clock, read in CLOCKS.items():
                seconds[name][clock].append(read() - start[clock])
    return {
        name: {clock: statistics.median(values) for clock, values in clocks.items()}
        for name, clocks in seconds.items()
    }


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()  # recorded: other jobs on the machine skew the absolute times
    base, train = read_config(args.config)
    if args.cpu_bf16_output is not None:
        train["cpu_bf16_output"] = args.cpu_bf16_output
    output_dtype = "bfloat16" if train.get("cpu_bf16_output", False) else "float32"
    B, S, T = args.batch_size, args.source_length, args.target_length
    batch = random_batch(base, B, S, T)
    loops = "compiled (model/csrc/lstm.cpp)" if lstm_ops() else "torch ops"
    print(f"training step (fwd + bwd + clip + AdamW) on cpu, {torch.get_num_threads()} threads; "
          f"{args.config}: V={base.vocab_size} E={base.embedding_size} H_enc={base.encoder_hidden_size}×2 "
          f"H_dec={base.decoder_hidden_size} A={base.attention_size}, copy={base.copy}, "
          f"coverage={base.coverage}; B={B} S={S} T={T} ({batch.tokens} tokens/step); "
          f"median of {args.repeats}; LSTM loops: {loops}; output layer: {output_dtype}; "
          f"clock: {args.clock}")  # fmt: skip
    print(f"{'phase':<17}{'case':<30}{'ms/step':>9}{'tokens/s':>10}{'× (a)':>8}{'wall ms':>9}{'× (a)':>7}")
    rows = []
    for phase in args.phases.split(","):
        configs = {name: ModelConfig(**{**base.to_dict(), **overrides}) for name, overrides in CASES.items()}
        steps = {name: train_step(config, train, batch, phase) for name, config in configs.items()}
        medians = time_interleaved(steps, args.warmup, args.repeats)
        reference = medians[next(iter(CASES))]
        for name, clocks in medians.items():
            seconds = clocks[args.clock]
            row = {"phase": phase, "case": name, "ms_per_step": 1e3 * seconds,
                   "tokens_per_s": batch.tokens / seconds, "speedup": reference[args.clock] / seconds,
                   "wall_ms_per_step": 1e3 * clocks["wall"], "cpu_ms_per_step": 1e3 * clocks["cpu"],
                   "wall_speedup": reference["wall"] / clocks["wall"]}  # fmt: skip
            rows.append(row)
            print(f"{phase:<17}{name:<30}{row['ms_per_step']:>9.1f}{row['tokens_per_s']:>10.0f}"
                  f"{row['speedup']:>8.2f}{row['wall_ms_per_step']:>9.1f}"
                  f"{row['wall_speedup']:>7.2f}")  # fmt: skip
    print(f"target: ≥ {TARGET_SPEEDUP:.0f}× tokens/s over (a)")
    if args.output:
        machine = {"processor": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "lstm_loops": loops, "cpus": os.cpu_count(),
                   "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()}}  # fmt: skip
        settings = {"config": args.config, "model": base.to_dict(), "B": B, "S": S, "T": T,
                    "tokens_per_step": batch.tokens, "repeats": args.repeats, "warmup": args.warmup,
                    "clock": args.clock, "output_layer_dtype": output_dtype,
                    "coverage_loss_weight": coverage_loss_weight(train),
                    "w_c_in_phase": W_C_IN_PHASE}  # fmt: skip
        record = {
            "command": shlex.join(["gatesum", *sys.argv[1:]]),
            "argv": sys.argv,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine,
            "settings": settings,
            "target_speedup": TARGET_SPEEDUP,
            "results": rows,
        }
        Path(args.output).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
