"""``gatesum train``: train a summarizer on CPU, one GPU, or several GPUs (torchrun), resumably.

    gatesum train --config configs/cnndm-small.toml --max-minutes 120
    gatesum train --config configs/cnndm-small.toml --resume          # after a crash or a stop
    torchrun --nproc-per-node 4 -m gatesum train --config configs/cnndm-base.toml

Writes into ``--output-dir``: ``checkpoint/`` (the latest bundle + trainer_state.pt, for
--resume), ``best/`` (the bundle with the best validation score), ``metrics.jsonl`` (one JSON
object per log line) and ``curves.png``. Under torchrun every rank trains; rank 0 alone writes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from gatesum.model.bundle import TOKENIZER_FILE, WEIGHTS_FILE, load_weights, read_card, save_bundle
from gatesum.model.config import ModelConfig
from gatesum.model.devices import resolve_device
from gatesum.model.errors import GatesumError
from gatesum.model.pipeline import summarize_ids
from gatesum.model.search import GENERATION_SETTINGS, GenerationConfig
from gatesum.model.summarizer import Summarizer
from gatesum.model.text import NormalizerConfig, normalize
from gatesum.training import checkpoint
from gatesum.training.checkpoint import TrainerState
from gatesum.training.clock import TrainingClock
from gatesum.training.data import TokenBatchSampler, collate, tokenize_pairs
from gatesum.training.options import Options, TrainConfig, describe_changes, load_options, resume_changes
from gatesum.training.options import add_arguments as add_option_arguments
from gatesum.training.plots import plot_curves
from gatesum.training.rouge import rouge
from gatesum.training.setup import load_training_pairs, prepare_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option_arguments(parser)


def run(args: argparse.Namespace) -> int:
    options = load_options(args)
    Trainer(options).train()
    return 0


# --model settings that may differ from an --init-from bundle's: its weights do not fix them
FINE_TUNABLE = ("dropout",)
VALIDATION_BATCH_SIZE = 32  # documents decoded together for the validation ROUGE
KEPT_DIR = "checkpoints"  # the last keep_checkpoints validations' weights, one bundle each


def fine_tuning_config(
    bundle_config: ModelConfig, model_flags: dict[str, Any], init_from: str
) -> ModelConfig:
    """The bundle's model settings with the --model flags that can change on its weights
    (``FINE_TUNABLE``); GatesumError for a flag that contradicts the bundle's architecture."""
    changes = {}
    for key, value in model_flags.items():
        bundle_value = getattr(bundle_config, key)
        if key in FINE_TUNABLE:
            changes[key] = value
        elif value != bundle_value:
            raise GatesumError(
                f"--model {key}={value} conflicts with --init-from {init_from}, whose {key} is "
                f"{bundle_value}: fine-tuning keeps the bundle's architecture "
                f"(only {', '.join(FINE_TUNABLE)} can change)"
            )
    return replace(bundle_config, **changes)


def learning_rate_factor(step: int, warmup: int, decay: str, max_steps: int | None) -> float:
    """Linear warmup to 1, then inverse-sqrt, linear (to 0 at max_steps) or constant."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if decay == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / (step + 1))
    if decay == "linear" and max_steps:
        return max(0.0, (max_steps - step) / max(1, max_steps - warmup))
    return 1.0


def time_left(
    step: int,
    max_steps: int | None,
    max_minutes: float | None,
    minutes_used: float,
    minutes_per_step: float | None,
) -> str:
    """The training time left that the progress bar shows: to --max-minutes, or at this run's pace
    to --max-steps, whichever comes first; "-" when neither bounds the run (only --max-epochs)."""
    estimates = []
    if max_minutes is not None:
        estimates.append(max(0.0, max_minutes - minutes_used))
    if max_steps is not None and minutes_per_step is not None:
        estimates.append(max(0, max_steps - step) * minutes_per_step)
    return f"{min(estimates):.1f}m" if estimates else "-"


def format_score(metric: str, score: float | None) -> str:
    """A best score as the last line prints it: ROUGE to 2 decimals, a loss to 3."""
    if score is None:
        return "-"
    return f"{score:.3f}" if metric == "loss" else f"{score:.2f}"


FUSED_ADAM_DEVICES = {"cpu", "cuda"}  # where torch has a fused AdamW kernel that we have tested


def cpu_has_bf16_units() -> bool:
    """Whether oneDNN runs bfloat16 matmuls natively here (AVX512-BF16 or AMX); elsewhere they are
    emulated and slower than float32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def make_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer that ``config.optimizer`` names over ``parameters`` (``gatesum bench train``
    builds its own with this too). Adam is torch's fused AdamW where the parameters live on a
    device that has it: one pass over each tensor for the whole update instead of a dozen
    elementwise ops, 4–5 ms a step instead of 27–29 (the per-tensor loop, the CPU default) on
    cnndm-small at one CPU thread (measured), the same update within float rounding."""
    parameters = list(parameters)
    if config.optimizer == "adam":
        fused = all(parameter.device.type in FUSED_ADAM_DEVICES for parameter in parameters)
        return torch.optim.AdamW(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused or None
        )
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(
            parameters,
            lr=config.learning_rate,
            initial_accumulator_value=0.1,
            weight_decay=config.weight_decay,
        )
    raise GatesumError(f"[train] optimizer must be adam or adagrad, not {config.optimizer!r}")


class Trainer:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.train_config = options.train
        self.distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
        if self.distributed:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.is_main = self.rank == 0
        self.device = resolve_device(self.train_config.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.train_config.threads:
            torch.set_num_threads(self.train_config.threads)
        self.output_dir = Path(self.train_config.output_dir)
        self.normalizer = NormalizerConfig()

    # --- setup -----------------------------------------------------------------------------------

    def _prepare(self) -> None:
        config = self.train_config
        if self.is_main:
            removed = checkpoint.remove_stale_files(self.output_dir)  # a killed save's leftovers
            if removed:
                print(f"gatesum train: removed what a killed save left in {self.output_dir}: "
                      f"{', '.join(removed)}", file=sys.stderr)  # fmt: skip
        if self.distributed:
            dist.barrier()  # every rank sees the recovered checkpoint/
        if not config.resume and (self.output_dir / "checkpoint").exists():
            raise GatesumError(
                f"{self.output_dir}/checkpoint exists: pass --resume to continue that run, "
                "or choose another --output-dir"
            )  # never overwrite a run by accident
        state = checkpoint.load_trainer_state(self.output_dir) if config.resume else None
        # The options as this run resolves them, in copies: the Options handed in stay as they were.
        model_config, tokenizer_config = self.options.model, self.options.tokenizer
        if config.init_from:  # fine-tune: the bundle decides vocabulary and architecture
            card = read_card(Path(config.init_from))
            tokenizer_config = replace(tokenizer_config, path=str(Path(config.init_from) / TOKENIZER_FILE))
            bundle_config = ModelConfig.from_dict(card["model"])
            model_config = fine_tuning_config(bundle_config, self.options.model_flags, config.init_from)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        allowed_changes = {}
        if state is not None:  # the run's own tokenizer: compare every setting before reading data
            self._resolve(model_config, tokenizer_config, pairs=None)
            allowed_changes = self._compare_with_checkpoint()
        data = self.options.data
        loaded = load_training_pairs(data, config)
        if self.is_main:
            for line in loaded.reports:
                print(line, file=sys.stderr)
        self.data_reports = loaded.reports
        if state is None:
            self._resolve(model_config, tokenizer_config, pairs=loaded.train)
        limits = (data.source_max_tokens, data.target_max_tokens)
        self.train_set = tokenize_pairs(loaded.train, self.tokenizer, self.normalizer, *limits)
        self.validation_set = tokenize_pairs(loaded.validation, self.tokenizer, self.normalizer, *limits)
        self.sampler = TokenBatchSampler(
            self.train_set["length"], data.batch_tokens, shuffle=True, seed=config.seed
        )
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.model = Summarizer(self.options.model).to(self.device)
        if config.cpu_bf16_output and self.device.type == "cpu":
            if cpu_has_bf16_units():
                self.model.decoder.output_matmul_dtype = torch.bfloat16
            elif self.is_main:
                print("cpu_bf16_output: this CPU has no bfloat16 units (AVX512-BF16, AMX); the output "
                      "layer stays float32", file=sys.stderr)  # fmt: skip
        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: learning_rate_factor(step, config.warmup_steps, config.decay, config.max_steps),
        )
        self.step, self.elapsed, self.best_score, self.stale_validations = 0, 0.0, None, 0
        if state is not None:
            self.load_state_dict(state)
            load_weights(self.model, self.output_dir / "checkpoint" / WEIGHTS_FILE)
            if self.is_main:
                self._note_resume(allowed_changes)
        else:
            if config.init_from:
                load_weights(self.model, Path(config.init_from) / WEIGHTS_FILE)
            random.seed(config.seed + self.rank)
            torch.manual_seed(config.seed + self.rank)  # dropout differs across ranks, as it should
        self.trained_model = self.model
        if self.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

    def _resolve(self, model_config: ModelConfig, tokenizer_config, pairs) -> None:
        """Load (or train, on ``pairs``) the tokenizer and settle the model settings it implies;
        ``self.options`` becomes what the card records."""
        self.tokenizer = prepare_tokenizer(
            tokenizer_config,
            pairs,
            self.output_dir,
            self.normalizer,
            self.is_main,
            self.distributed,
            resume=pairs is None,
        )
        model_config = replace(model_config, vocab_size=self.tokenizer.vocab_size)
        if self.train_config.coverage_from_step is not None:
            model_config = replace(model_config, coverage=True)  # w_c starts at 0: inert until trained
        self.options = replace(self.options, model=model_config, tokenizer=tokenizer_config)

    def _compare_with_checkpoint(self) -> dict[str, tuple[Any, Any]]:
        """The settings that changed since the checkpoint and may (``RESUME_MAY_CHANGE``);
        GatesumError, one line naming them, for those that may not (``RESUME_FIXED``)."""
        card = read_card(self.output_dir / "checkpoint")
        saved = card.get("training", {}).get("options", {})
        handed = saved.get("tokenizer", {}).get("path")
        if handed is not None and self.options.tokenizer.path is None:
            # a run handed its tokenizer resumes without the flag, on its checkpoint's copy
            # (prepare_tokenizer; the fingerprint below vouches for it): the card keeps the path
            self.options = replace(self.options, tokenizer=replace(self.options.tokenizer, path=handed))
        changes = resume_changes(saved, self.options.to_dict())
        recorded = card.get("tokenizer", {}).get("fingerprint")
        if recorded and recorded != self.tokenizer.fingerprint and not changes.fixed:
            # the same settings, another file: the pieces' ids would mean other words
            changes.fixed[f"tokenizer file {self.tokenizer.path}"] = (
                recorded[:12],
                self.tokenizer.fingerprint[:12],
            )
        if changes.fixed:
            raise GatesumError(changes.refusal())
        return changes.allowed

    def _note_resume(self, changes: dict[str, tuple[Any, Any]]) -> None:
        """Say where the run resumes and what changed; log it as a "resume" event."""
        metrics = self.output_dir / "metrics.jsonl"
        for warning in checkpoint.trim_metrics(metrics, self.step):
            print(f"gatesum train: warning: {warning}", file=sys.stderr)
        print(
            f"resuming from step {self.step} of {self.output_dir}/checkpoint "
            f"({self.elapsed / 60:.1f} min trained so far)",
            flush=True,
        )
        if changes:
            print(f"changed since the checkpoint: {describe_changes(changes)}", flush=True)
        changed = {name: {"checkpoint": before, "now": after} for name, (before, after) in changes.items()}
        self._log(metrics, {"step": self.step, "event": "resume", "changed": changed}, None)

    def state_dict(self) -> TrainerState:
        """Everything --resume needs beyond the weights (saved in every checkpoint)."""
        return TrainerState(
            step=self.step,
            elapsed=self.elapsed,
            best_score=self.best_score,
            stale_validations=self.stale_validations,
            sampler=self.sampler.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=checkpoint.capture_rng(),
            model_config=self.model.config.to_dict(),
        )

    def load_state_dict(self, state: TrainerState) -> None:
        """Put the trainer back where ``state`` was taken (the weights come from the bundle)."""
        if state.model_config != self.model.config.to_dict():
            raise GatesumError(
                "--resume: the model settings differ from the checkpoint's; "
                "use the same config, or a new --output-dir"
            )
        try:
            self.optimizer.load_state_dict(state.optimizer)
        except (KeyError, ValueError, IndexError) as error:
            raise GatesumError(
                f"--resume: the checkpoint's optimizer state does not fit a {self.train_config.optimizer} "
                f"optimizer ({type(error).__name__}: {error}); resume with the run's optimizer"
            ) from None
        self.scheduler.load_state_dict(state.scheduler)
        self._apply_optimizer_settings()
        self.sampler.load_state_dict(state.sampler)
        self.step, self.elapsed = state.step, state.elapsed
        self.best_score, self.stale_validations = state.best_score, state.stale_validations
        checkpoint.restore_rng(state.rng)

    def _apply_optimizer_settings(self) -> None:
        """This run's learning rate, schedule and weight decay over the restored optimizer's
        (a resumed run may change them: ``RESUME_MAY_CHANGE``). Unchanged settings give the
        very numbers restored, so a resume stays exact."""
        config = self.train_config
        factor = learning_rate_factor(self.scheduler.last_epoch, config.warmup_steps, config.decay,
                                      config.max_steps)  # fmt: skip
        self.scheduler.base_lrs = [config.learning_rate for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["initial_lr"] = config.learning_rate
            group["lr"] = config.learning_rate * factor
            group["weight_decay"] = config.weight_decay

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.model.parameters(), self.train_config)

    # --- the loop --------------------------------------------------------------------------------

    def batches(self):
        """(epoch, position, Batch) from the saved position on; each rank takes every world_size-th."""
        while self.sampler.epoch < self.train_config.max_epochs:
            epoch = self.sampler.epoch
            all_batches = self.sampler.batches(epoch)
            usable = len(all_batches) - len(all_batches) % self.world_size  # equal work on every rank
            for position in range(self.sampler.start, usable, self.world_size):
                self.sampler.start = position + self.world_size
                indices = all_batches[position + self.rank]
                yield collate([self.train_set[i] for i in indices])
            self.sampler.set_epoch(epoch + 1)

    def train(self) -> None:
        self._prepare()
        config = self.train_config
        metrics = self.output_dir / "metrics.jsonl"
        writer = self._tensorboard()
        clock = TrainingClock(config.clock, self.elapsed)
        session_start, session_first_step = clock.seconds(), self.step  # this run's pace, for time left
        tokens_seen, window_start, window_loss, window_steps = 0, time.monotonic(), 0.0, 0
        progress = tqdm(
            total=config.max_steps,
            initial=self.step,
            disable=not self.is_main,
            unit="step",
            dynamic_ncols=True,
        )
        self.model.train()
        batches = self.batches()
        while True:
            # Check before drawing a batch: the saved data position must not count an untrained batch.
            if self._should_stop(clock):
                stop_reason = (
                    "max_steps" if config.max_steps and self.step >= config.max_steps else "max_minutes"
                )
                break
            batch = next(batches, None)
            if batch is None:
                stop_reason = "max_epochs"
                break
            loss, stats = self._train_step(batch.to(self.device))
            self.step += 1
            progress.update(1)
            tokens_seen += int(batch.source_lengths.sum()) + batch.num_tokens
            window_loss, window_steps = window_loss + loss, window_steps + 1
            if self.step % config.log_every == 0:
                now, trained = time.monotonic(), clock.seconds()
                record = {
                    "step": self.step,
                    "loss": window_loss / window_steps,
                    **stats,
                    "lr": self.scheduler.get_last_lr()[0],
                    "epoch": self.sampler.epoch,
                    "tokens_per_s": tokens_seen * self.world_size / (now - window_start),
                    "elapsed_s": trained,
                }
                progress.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    tok_s=f"{record['tokens_per_s']:.0f}",
                    left=time_left(
                        self.step,
                        config.max_steps,
                        config.max_minutes,
                        trained / 60,
                        (trained - session_start) / 60 / (self.step - session_first_step),
                    ),
                )
                self._log(metrics, record, writer)
                tokens_seen, window_start, window_loss, window_steps = 0, now, 0.0, 0
            if self.step % config.eval_every == 0:
                if self._validate(metrics, writer, clock):
                    stop_reason = "early stopping"
                    break
            elif self.step % config.checkpoint_every == 0:
                with clock.excluded():
                    self._save_checkpoint(clock.seconds())
        progress.close()
        if self.step % config.eval_every != 0:
            self._validate(metrics, writer, clock)
        if self.is_main:
            plot_curves(metrics, self.output_dir / "curves.png")
            print(
                f"stopped at step {self.step} ({stop_reason}); "
                f"best {config.best_metric}: {format_score(config.best_metric, self.best_score)}; "
                f"bundles in {self.output_dir}/best and {self.output_dir}/checkpoint"
            )
        if writer:
            writer.close()
        if self.distributed:
            dist.destroy_process_group()

    def _should_stop(self, clock: TrainingClock) -> bool:
        config = self.train_config
        if config.max_steps is not None and self.step >= config.max_steps:
            return True
        over_time = config.max_minutes is not None and clock.seconds() >= 60 * config.max_minutes
        if self.distributed:  # every rank must stop at the same step
            flag = torch.tensor([float(over_time)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over_time = bool(flag.item())
        return over_time

    def _train_step(self, batch) -> tuple[float, dict]:
        config = self.train_config
        coverage_on = config.coverage_from_step is not None and self.step >= config.coverage_from_step
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda" and config.bf16
            else nullcontext()
        )
        with autocast:
            loss, stats = self.trained_model(
                batch.source,
                batch.source_lengths,
                batch.target_input,
                batch.target_output,
                coverage_loss_weight=config.coverage_loss_weight if coverage_on else 0.0,
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Clipping keeps one exploding gradient (a known failure of recurrent nets) from wrecking the weights.
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        return loss.item(), stats

    # --- validation, checkpoints, logs -----------------------------------------------------------

    @torch.no_grad()
    def _validate(self, metrics: Path, writer, clock: TrainingClock) -> bool:
        """Validation loss and ROUGE; keeps the best bundle. Returns True to stop early."""
        with clock.excluded():
            return self._validate_now(metrics, writer, clock.seconds())

    def _validate_now(self, metrics: Path, writer, trained: float) -> bool:
        config = self.train_config
        stop = False
        if self.is_main:
            self.model.eval()
            record = {"step": self.step, **self.validation_scores(), "elapsed_s": trained}
            self.model.train()
            score = record["val_loss"] if config.best_metric == "loss" else record[config.best_metric]
            better = self.best_score is None or (
                score < self.best_score if config.best_metric == "loss" else score > self.best_score
            )
            record["best"] = better
            self._log(metrics, record, writer)
            tqdm.write(
                f"step {self.step}: val loss {record['val_loss']:.3f}, ROUGE-1/2/Lsum "
                f"{record['rouge1']:.2f}/{record['rouge2']:.2f}/{record['rougeLsum']:.2f}"
                + (" (best)" if better else "")
            )
            if better:
                self.best_score, self.stale_validations = score, 0
                self._save_bundle(self.output_dir / "best", record)
            else:
                self.stale_validations += 1
            stop = config.patience > 0 and self.stale_validations >= config.patience
            if config.keep_checkpoints:
                self._keep_checkpoint(record)
        self._save_checkpoint(trained)
        if self.distributed:
            flag = torch.tensor([float(stop)], device=self.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    def validation_scores(self) -> dict[str, float]:
        config, data = self.train_config, self.options.data
        sampler = TokenBatchSampler(self.validation_set["length"], data.batch_tokens, shuffle=False)
        total, tokens = 0.0, 0
        for indices in sampler.batches(0)[: config.eval_batches]:
            batch = collate([self.validation_set[i] for i in indices]).to(self.device)
            _, stats = self.model(
                batch.source,
                batch.source_lengths,
                batch.target_input,
                batch.target_output,
                coverage_loss_weight=0.0,
            )
            total, tokens = total + stats["nll"] * stats["tokens"], tokens + stats["tokens"]
        sample = self.validation_set.select(range(min(config.eval_rouge_samples, len(self.validation_set))))
        # greedy, as long as the training targets (within the search's own bound), through the one
        # inference path: summaries capped at their sources' lengths, padded with the model's PAD
        longest = next(setting.maximum for setting in GENERATION_SETTINGS if setting.name == "max_length")
        generation = GenerationConfig(beam_size=1, max_length=min(data.target_max_tokens, longest))
        summaries = summarize_ids(self.model, sample["source_ids"], generation, VALIDATION_BATCH_SIZE)
        predictions = [self.tokenizer.decode(ids) for ids in summaries]
        references = [normalize(text, self.normalizer) for text in sample["target"]]
        return {"val_loss": total / max(tokens, 1), **rouge(predictions, references)}

    def _card(self, record: dict | None = None) -> dict:
        data = self.options.data
        return {
            "data": {
                "source": data.dataset or data.data_files,
                "text_column": data.text_column,
                "summary_column": data.summary_column,
                "source_max_tokens": data.source_max_tokens,
                "target_max_tokens": data.target_max_tokens,
                "training_pairs": len(self.train_set),
                "rows": self.data_reports,  # read, dropped and why, used: one line per split
            },
            "training": {
                "step": self.step,
                "elapsed_minutes": round(self.elapsed / 60, 2),
                "device": str(self.device),
                "world_size": self.world_size,
                "options": self.options.to_dict(),
            },
            "metrics": {"validation": record} if record else {},
        }

    def _save_bundle(
        self, directory: Path, record: dict | None = None, extra_files: dict | None = None
    ) -> None:
        save_bundle(
            directory,
            self.model,
            self.tokenizer,
            self.normalizer,
            self._card(record),
            extra_files=extra_files,
        )

    def _keep_checkpoint(self, record: dict) -> None:
        """The weights at this validation in checkpoints/step-NNNNNN; only the last keep_checkpoints stay."""
        kept = self.output_dir / KEPT_DIR
        self._save_bundle(kept / f"step-{self.step:06d}", record)
        for old in sorted(kept.glob("step-*"))[: -self.train_config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def _save_checkpoint(self, trained: float) -> None:
        self.elapsed = trained
        if self.is_main:
            state = self.state_dict().to_bytes()
            self._save_bundle(self.output_dir / "checkpoint", extra_files={checkpoint.STATE_FILE: state})

    def _log(self, path: Path, record: dict, writer) -> None:
        if not self.is_main:
            return
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
        if writer:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "step":
                    writer.add_scalar(key, value, record["step"])

    def _tensorboard(self):
        if not (self.train_config.tensorboard and self.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise GatesumError(
                "--tensorboard needs the tensorboard package: pip install 'gatesum[tensorboard]'"
            ) from None
        return SummaryWriter(self.output_dir / "tensorboard")
