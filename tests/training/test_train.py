"""gatesum train end to end: loss falls, bundles load, resume after kill -9 is exact."""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gatesum.cli import main
from gatesum.model.bundle import load_bundle
from gatesum.model.config import ModelConfig
from gatesum.model.errors import GatesumError
from gatesum.model.text import NormalizerConfig
from gatesum.model.tokenizer import Tokenizer
from gatesum.training.checkpoint import STATE_FILE, TrainerState, capture_rng, load_trainer_state
from gatesum.training.data import DataConfig, load_pairs
from gatesum.training.options import TokenizerConfig, TrainConfig, load_options
from gatesum.training.options import add_arguments as add_option_arguments
from gatesum.training.setup import train_tokenizer
from gatesum.training.train import Trainer, fine_tuning_config, format_score, make_optimizer, time_left
from tests.helpers import write_pairs

REPO = Path(__file__).resolve().parents[2]


def train_arguments(data: Path, output: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train",
        "--data-files",
        str(data),
        "--output-dir",
        str(output),
        "--max-steps",
        str(steps),
        "--validation-size",
        "6",
        "--tokenizer-vocab-size",
        "300",
        "--batch-tokens",
        "400",
        "--eval-every",
        "1000",
        "--eval-batches",
        "2",
        "--eval-rouge-samples",
        "4",
        "--log-every",
        "2",
        "--checkpoint-every",
        "2",
        "--threads",
        "1",
        "--learning-rate",
        "0.01",
        "--warmup-steps",
        "0",
        "--model",
        "embedding_size=16",
        "--model",
        "encoder_hidden_size=16",
        "--model",
        "decoder_hidden_size=32",
        "--model",
        "attention_size=16",
        *extra,
    ]


def read_metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_save_resume_evaluate_summarize(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 80)
    output = tmp_path / "run"
    assert main(train_arguments(data, output, 30)) == 0
    losses = [record["loss"] for record in read_metrics(output) if "loss" in record]
    assert losses[-1] < losses[0] - 0.4, losses  # it learns (from ~4.0 nats per token)
    bundle = load_bundle(output / "best")
    assert bundle.card["training"]["step"] == 30
    assert (output / "curves.png").stat().st_size > 0

    assert main(train_arguments(data, output, 40, "--resume")) == 0
    assert load_bundle(output / "checkpoint").card["training"]["step"] == 40
    steps = [record["step"] for record in read_metrics(output) if "loss" in record]
    assert steps == sorted(steps) and steps[-1] == 40  # continued, not restarted

    report_dir = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                str(output / "best"),
                "--data-files",
                str(data),
                "--limit",
                "5",
                "--output-dir",
                str(report_dir),
            ]
        )
        == 0
    )
    report = json.loads((report_dir / "report.json").read_text())
    assert 0 <= report["model"]["rouge1"] <= 100

    summaries = tmp_path / "summaries.jsonl"
    assert (
        main(["summarize", "--model", str(output / "best"), "--input", str(data), "--output", str(summaries)])
        == 0
    )
    rows = [json.loads(line) for line in summaries.read_text().splitlines()]
    assert len(rows) == 80 and all("summary" in row for row in rows)


def _run_to_completion(arguments: list[str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "gatesum", *arguments],
        cwd=REPO,
        check=True,
        capture_output=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )


@pytest.mark.slow
def test_resume_after_kill_reaches_the_same_weights(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 60)
    steps = 16
    straight = tmp_path / "straight"
    _run_to_completion(train_arguments(data, straight, steps))

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "gatesum", *train_arguments(data, killed, steps)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        state = killed / "checkpoint" / "trainer_state.pt"
        if state.exists() and torch.load(state, weights_only=True)["step"] >= 6:
            break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = torch.load(killed / "checkpoint" / "trainer_state.pt", weights_only=True)["step"]
    assert 6 <= interrupted_at < steps

    _run_to_completion([*train_arguments(data, killed, steps), "--resume"])
    logged = [record["step"] for record in read_metrics(killed) if "loss" in record]
    assert logged == sorted(set(logged)), "steps after the checkpoint were logged twice"
    want = load_file(str(straight / "checkpoint" / "model.safetensors"))
    got = load_file(str(killed / "checkpoint" / "model.safetensors"))
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_two_gloo_processes_train_in_step(tmp_path):
    """torchrun with 2 CPU processes (gloo): DDP keeps the replicas equal, rank 0 alone writes."""
    data = write_pairs(tmp_path / "pairs.jsonl", 60)
    output = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
               "-m", "gatesum", *train_arguments(data, output, 6)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TQDM_DISABLE": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    card = load_bundle(output / "checkpoint").card
    assert card["training"]["world_size"] == 2 and card["training"]["step"] == 6
    records = [record for record in read_metrics(output) if "loss" in record]
    assert [record["step"] for record in records] == [2, 4, 6]  # one writer: no duplicate lines


def test_a_fresh_run_never_overwrites_an_existing_one(tmp_path, capsys):
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    output = tmp_path / "run"
    (output / "checkpoint").mkdir(parents=True)
    assert main(train_arguments(data, output, 2)) == 2
    assert "pass --resume" in capsys.readouterr().err


@pytest.mark.slow
def test_coverage_phase_switches_the_coverage_loss_on(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    output = tmp_path / "run"
    assert main(train_arguments(data, output, 6, "--coverage-from-step", "3", "--log-every", "1")) == 0
    records = {record["step"]: record for record in read_metrics(output) if "loss" in record}
    assert all("coverage_loss" not in records[step] for step in (1, 2, 3))  # steps 0-2: off
    assert all(records[step]["coverage_loss"] > 0 for step in (4, 5, 6))
    weight = load_bundle(output / "checkpoint").model.decoder.attention.w_c
    assert weight.abs().sum() > 0  # w_c left 0 and started learning in the phase


@pytest.mark.slow
@pytest.mark.parametrize("units", [True, False], ids=["bf16-units", "no-bf16-units"])
def test_cpu_bf16_output_trains_the_output_layer_in_bfloat16(tmp_path, monkeypatch, capsys, units):
    """Where the CPU has bfloat16 units the output layer's matmuls run in bfloat16; elsewhere (they
    would be emulated, slower than float32) the run says so and stays float32."""
    from gatesum.model import vocabulary

    dtypes = []
    original = vocabulary.target_log_probs

    def spy(hidden, weight, bias, target, matmul_dtype=None):
        dtypes.append(matmul_dtype)
        return original(hidden, weight, bias, target, matmul_dtype)

    monkeypatch.setattr("gatesum.model.decoder.target_log_probs", spy)
    monkeypatch.setattr("gatesum.training.train.cpu_has_bf16_units", lambda: units)
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    output = tmp_path / "run"
    assert main(train_arguments(data, output, 4, "--cpu-bf16-output", "--model", "input_feeding=false")) == 0
    assert set(dtypes) == ({torch.bfloat16} if units else {None})
    assert ("this CPU has no bfloat16 units" in capsys.readouterr().err) is not units
    losses = [record["loss"] for record in read_metrics(output) if "loss" in record]
    assert losses and all(loss == loss and loss < 100 for loss in losses)  # finite
    for parameter in load_bundle(output / "checkpoint").model.parameters():
        assert parameter.dtype == torch.float32  # only the matmuls were bfloat16


@pytest.mark.slow
def test_init_from_a_bundle_starts_where_it_left_off(tmp_path, capsys):
    data = write_pairs(tmp_path / "pairs.jsonl", 60)
    first, second, refused = tmp_path / "first", tmp_path / "second", tmp_path / "refused"
    assert main(train_arguments(data, first, 30, "--log-every", "1")) == 0
    init = ("--init-from", str(first / "checkpoint"))
    capsys.readouterr()
    # --model settings equal to the bundle's are fine (train_arguments gives them); another size is not
    assert main(train_arguments(data, refused, 2, *init, "--model", "encoder_hidden_size=8")) == 2
    assert capsys.readouterr().err == (
        "gatesum train: error: --model encoder_hidden_size=8 conflicts with --init-from "
        f"{first}/checkpoint, whose encoder_hidden_size is 16: fine-tuning keeps the bundle's "
        "architecture (only dropout can change)\n"
    )
    assert not refused.exists()  # refused before anything was written
    assert main(train_arguments(data, second, 2, "--log-every", "1", *init, "--model", "dropout=0.3")) == 0
    start = [record["loss"] for record in read_metrics(first) if "loss" in record]
    resumed = [record["loss"] for record in read_metrics(second) if "loss" in record]
    assert resumed[0] < start[0] - 0.3 and abs(resumed[0] - start[-1]) < 0.3
    bundle = load_bundle(second / "checkpoint")
    assert bundle.model.config.encoder_hidden_size == 16  # the bundle's architecture
    assert bundle.model.config.dropout == 0.3 != load_bundle(first / "checkpoint").model.config.dropout
    assert bundle.tokenizer.fingerprint == load_bundle(first / "checkpoint").tokenizer.fingerprint
    # the same command resumes the fine-tuning run: its model settings come from the same bundle
    assert main(train_arguments(data, second, 3, *init, "--model", "dropout=0.3", "--resume")) == 0
    assert load_bundle(second / "checkpoint").card["training"]["step"] == 3


def test_fine_tuning_config_applies_dropout_and_refuses_another_architecture():
    bundle_config = ModelConfig(encoder_hidden_size=16, attention="mlp")
    tuned = fine_tuning_config(bundle_config, {"dropout": 0.4, "encoder_hidden_size": 16}, "b")
    assert (tuned.dropout, tuned.encoder_hidden_size, bundle_config.dropout) == (0.4, 16, 0.1)
    with pytest.raises(
        GatesumError, match=r"^--model attention=dot conflicts with --init-from b, whose attention"
    ):
        fine_tuning_config(bundle_config, {"attention": "dot"}, "b")


@pytest.mark.slow
def test_the_trainer_leaves_the_options_it_was_handed_alone(tmp_path):
    """The coverage phase, the tokenizer's vocabulary and --init-from change the model settings
    this run trains (and its card records), never the caller's Options."""
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    parser = argparse.ArgumentParser()
    add_option_arguments(parser)
    arguments = train_arguments(data, tmp_path / "run", 2, "--coverage-from-step", "1")[1:]
    options = load_options(parser.parse_args(arguments))
    handed = copy.deepcopy(options)
    trainer = Trainer(options)
    trainer.train()
    assert options == handed and options.model.coverage is False and options.model.vocab_size == 16000
    trained = load_bundle(tmp_path / "run" / "checkpoint").model.config
    assert trained.coverage is True and trained.vocab_size == trainer.tokenizer.vocab_size < 16000
    assert trainer.options.model == trained


def test_trainer_state_file_round_trip_and_a_foreign_file(tmp_path):
    state = TrainerState(step=7, elapsed=1.5, best_score=None, stale_validations=2, sampler={"epoch": 1},
                         optimizer={}, scheduler={}, rng=capture_rng(), model_config={"a": 1})  # fmt: skip
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    (directory / STATE_FILE).write_bytes(state.to_bytes())
    loaded = load_trainer_state(tmp_path)
    assert (loaded.step, loaded.elapsed, loaded.stale_validations, loaded.sampler) == (
        7,
        1.5,
        2,
        {"epoch": 1},
    )
    torch.testing.assert_close(loaded.rng["torch"], state.rng["torch"])
    torch.save({"step": 3}, directory / STATE_FILE)
    with pytest.raises(GatesumError, match="not a training state of this version"):
        load_trainer_state(tmp_path)


@pytest.mark.slow
def test_a_run_handed_its_tokenizer_resumes_with_the_checkpoints_copy(tmp_path):
    """``gatesum memory compare`` hands later runs the first run's tokenizer; resuming one of
    them alone must not need the flag again."""
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(train_arguments(data, first, 2)) == 0
    assert main(train_arguments(data, second, 2, "--tokenizer-path", str(first / "tokenizer.model"))) == 0
    assert not (second / "tokenizer.model").exists()
    assert main(train_arguments(data, second, 4, "--resume")) == 0
    assert load_bundle(second / "checkpoint").card["training"]["step"] == 4


def test_time_left_counts_down_to_max_steps_at_the_runs_pace():
    assert time_left(10, 100, None, minutes_used=5.0, minutes_per_step=0.5) == "45.0m"
    assert time_left(10, 100, 20.0, minutes_used=5.0, minutes_per_step=0.5) == "15.0m"  # the nearer limit
    assert time_left(10, None, 20.0, minutes_used=25.0, minutes_per_step=0.5) == "0.0m"
    assert time_left(10, None, None, minutes_used=5.0, minutes_per_step=0.5) == "-"  # only max_epochs


def test_best_score_is_rounded():
    assert format_score("rougeLsum", 3.4933255580679528) == "3.49"
    assert format_score("loss", 4.123456) == "4.123"
    assert format_score("rougeLsum", None) == "-"


def test_progress_resume_and_last_line_say_where_the_run_is(tmp_path, capsys):
    """--max-steps alone gives a time left, --resume names its step, the best score is rounded."""
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    output = tmp_path / "run"
    assert main(train_arguments(data, output, 2)) == 0
    first = capsys.readouterr()
    assert re.search(r"left=\d+\.\dm", first.err) and "left=-" not in first.err, first.err
    assert re.search(r"best rougeLsum: \d+\.\d\d;", first.out), first.out
    assert "resuming" not in first.out
    assert main(train_arguments(data, output, 4, "--resume")) == 0
    resumed = capsys.readouterr()
    assert resumed.out.startswith(f"resuming from step 2 of {output}/checkpoint ("), resumed.out
    assert "stopped at step 4 (max_steps)" in resumed.out


def test_a_vocabulary_larger_than_the_corpus_allows_is_lowered_with_a_warning(tmp_path, capsys):
    pairs = load_pairs(DataConfig(data_files=[str(write_pairs(tmp_path / "pairs.jsonl", 30))]))
    config = TokenizerConfig(vocab_size=16000)
    capsys.readouterr()
    tokenizer = train_tokenizer(config, pairs, tmp_path / "tokenizer.model", NormalizerConfig())
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "--tokenizer-vocab-size 16000" in warning, warning
    assert warning.rstrip().endswith(f"the tokenizer gets {tokenizer.vocab_size} pieces")
    assert 100 < tokenizer.vocab_size < 16000 and config.vocab_size == 16000  # the config is left as it was
    assert Tokenizer.load(tmp_path / "tokenizer.model").vocab_size == tokenizer.vocab_size


def test_resume_refuses_changed_settings_in_one_line_and_records_allowed_ones(tmp_path, capsys):
    rows = [json.loads(line) for line in write_pairs(tmp_path / "pairs.jsonl", 42).read_text().splitlines()]
    rows[0]["article"], rows[1]["highlights"] = "  ", ""
    data = tmp_path / "with-empty.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    other = write_pairs(tmp_path / "other.jsonl", 40, seed=1)
    output = tmp_path / "run"
    assert main(train_arguments(data, output, 2)) == 0
    assert (
        "train: 42 rows read, 2 dropped (empty article 1, empty highlights 1), 40 used, "
        "of which the last 4 are held out for validation\n"
    ) in capsys.readouterr().err
    card = (output / "checkpoint" / "config.json").read_bytes()

    refused = {
        ("--model", "encoder_hidden_size=8"): "model.encoder_hidden_size 16 → 8",
        ("--tokenizer-vocab-size", "900", "--source-max-tokens", "300"):
            "data.source_max_tokens 400 → 300, tokenizer.vocab_size 300 → 900",
        ("--data-files", str(other)): f'data.data_files ["{data}"] → ["{other}"]',
        ("--seed", "1", "--batch-tokens", "500"): "data.batch_tokens 400 → 500, train.seed 0 → 1",
        ("--optimizer", "adagrad"): "train.optimizer adam → adagrad",  # was a raw KeyError: 'sum'
    }  # fmt: skip
    for flags, named in refused.items():
        assert main(train_arguments(data, output, 4, "--resume", *flags)) == 2, flags
        assert capsys.readouterr().err == (
            f"gatesum train: error: --resume: these settings differ from the checkpoint's: {named} "
            "(resume with the checkpoint's values, or train into another --output-dir)\n"
        )
    assert (output / "checkpoint" / "config.json").read_bytes() == card  # nothing was touched
    original = (output / "tokenizer.model").read_bytes()  # the same settings, another tokenizer file
    train_tokenizer(TokenizerConfig(vocab_size=300), load_pairs(DataConfig(data_files=[str(other)])),
                    output / "tokenizer.model", NormalizerConfig())  # fmt: skip
    capsys.readouterr()
    assert main(train_arguments(data, output, 4, "--resume")) == 2
    assert capsys.readouterr().err.startswith(
        "gatesum train: error: --resume: these settings differ from the checkpoint's: "
        f"tokenizer file {output}/tokenizer.model "
    )
    (output / "tokenizer.model").write_bytes(original)

    (output / ".checkpoint.tmp-k9x2").mkdir()  # a save that kill -9 interrupted
    with open(output / "metrics.jsonl", "a") as metrics:
        metrics.write('{"step": 3, "lo')  # a log line cut short by the kill
    assert main(train_arguments(data, output, 4, "--resume", "--learning-rate", "0.02")) == 0
    captured = capsys.readouterr()
    assert f"removed what a killed save left in {output}: .checkpoint.tmp-k9x2\n" in captured.err
    assert f"warning: {output}/metrics.jsonl: dropped its last line, cut short by the stop" in captured.err
    assert not (output / ".checkpoint.tmp-k9x2").exists()
    assert captured.out.splitlines()[1] == (
        "changed since the checkpoint: train.learning_rate 0.01 → 0.02, train.max_steps 2 → 4"
    )
    records = read_metrics(output)
    assert [record for record in records if "event" in record] == [
        {"step": 2, "event": "resume", "changed": {"train.learning_rate": {"checkpoint": 0.01, "now": 0.02},
                                                    "train.max_steps": {"checkpoint": 2, "now": 4}}}
    ]  # fmt: skip
    learning_rates = {record["step"]: record["lr"] for record in records if "loss" in record}
    assert learning_rates[2] == pytest.approx(0.01 * (1 / 3) ** 0.5)  # inverse-sqrt decay, no warmup
    assert learning_rates[4] == pytest.approx(0.02 * (1 / 5) ** 0.5)  # the new peak rate, applied
    options = load_bundle(output / "checkpoint").card["training"]["options"]
    assert options["train"]["learning_rate"] == 0.02 and options["tokenizer"]["vocab_size"] == 300


def test_kept_checkpoints_hold_the_last_validations_and_the_cpu_clock_is_recorded(tmp_path, capsys):
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    output = tmp_path / "run"
    arguments = train_arguments(
        data, output, 8, "--eval-every", "2", "--keep-checkpoints", "2", "--clock", "cpu"
    )
    assert main(arguments) == 0
    kept = sorted(path.name for path in (output / "checkpoints").iterdir())
    assert kept == ["step-000006", "step-000008"]
    assert load_bundle(output / "checkpoints" / "step-000008").card["metrics"]["validation"]["step"] == 8
    elapsed = [record["elapsed_s"] for record in read_metrics(output) if "elapsed_s" in record]
    assert elapsed == sorted(elapsed) and elapsed[-1] > 0
    resumed_on_the_wall = train_arguments(
        data, output, 10, "--eval-every", "2", "--keep-checkpoints", "2", "--resume"
    )
    assert main(resumed_on_the_wall) != 0  # the saved elapsed time was counted on the cpu clock
    assert "train.clock cpu → wall" in capsys.readouterr().err


def test_the_cpu_clock_leaves_out_excluded_work():
    from gatesum.training.clock import TrainingClock

    clock = TrainingClock("cpu", elapsed=100.0)
    assert 100.0 <= clock.seconds() < 101.0
    with clock.excluded():
        sum(i * i for i in range(2_000_000))  # CPU work that is not training
    assert clock.seconds() < 100.05
    wall = TrainingClock("wall")
    with wall.excluded():
        time.sleep(0.05)
    assert wall.seconds() >= 0.05  # the wall clock counts everything


def test_adam_is_fused_on_cpu_and_steps_as_torch_adamw():
    """The fused kernel (4x faster a step) must make the very update of torch's plain AdamW."""
    torch.manual_seed(0)
    ours = [torch.randn(50, 20, requires_grad=True), torch.randn(7, requires_grad=True)]
    plain = [parameter.detach().clone().requires_grad_() for parameter in ours]
    start = ours[0].detach().clone()
    optimizer = make_optimizer(ours, TrainConfig(learning_rate=0.01, weight_decay=0.1))
    reference = torch.optim.AdamW(plain, lr=0.01, weight_decay=0.1)
    assert optimizer.defaults["fused"] is True
    for _ in range(5):
        for mine, theirs in zip(ours, plain, strict=True):
            mine.grad = torch.randn_like(mine)
            theirs.grad = mine.grad.clone()
        optimizer.step()
        reference.step()
    for mine, theirs in zip(ours, plain, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)
    assert (ours[0] - start).abs().mean() > 1e-2  # five steps of lr 0.01 moved the weights
