"""Training options: a TOML config file with [model], [data], [tokenizer] and [train] tables,
overridden by command-line flags. Every flag has help text, generated from the field's own."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from gatesum.model.config import ModelConfig
from gatesum.model.errors import GatesumError
from gatesum.training.data import DataConfig
from gatesum.training.fields import SettingError, check, option
from gatesum.training.rouge import METRICS


@dataclass
class TokenizerConfig:
    path: str | None = option(None, "an existing tokenizer.model; default: train one into the output dir")
    vocab_size: int = option(16000, "vocabulary size of a tokenizer trained here", minimum=1)
    model_type: str = option(
        "unigram", "sentencepiece model type: unigram or bpe", choices=("unigram", "bpe")
    )
    sample_size: int = option(20000, "training pairs sampled to train the tokenizer", minimum=1)


@dataclass
class TrainConfig:
    output_dir: str = option("runs/summarizer", "where checkpoint/, best/, metrics.jsonl and curves.png go")
    seed: int = option(0, "seed for weights, data order and dropout; the same seed resumes identically")
    device: str = option("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice)", minimum=1)
    optimizer: str = option(
        "adam", "adam or adagrad (See et al. used adagrad, lr 0.15)", choices=("adam", "adagrad")
    )
    learning_rate: float = option(1e-3, "peak learning rate, reached after the warmup", exclusive_minimum=0)
    weight_decay: float = option(0.0, "L2 penalty (adagrad) / decoupled decay (adam)", minimum=0)
    warmup_steps: int = option(200, "linear warmup steps from 0 to the peak learning rate", minimum=0)
    decay: str = option(
        "inverse_sqrt",
        "after warmup: inverse_sqrt, linear (to 0 at max_steps) or constant",
        choices=("inverse_sqrt", "linear", "constant"),
    )
    max_steps: int | None = option(None, "stop after this many optimizer steps", minimum=1)
    max_minutes: float | None = option(
        None, "stop after this much training time (resumed runs count it all)", exclusive_minimum=0
    )
    clock: str = option(
        "wall",
        "what max_minutes and elapsed_s count: wall (all time) or cpu (this process's CPU time in "
        "training, validation and checkpoint saves excluded: equal budgets on a shared machine)",
        choices=("wall", "cpu"),
    )
    max_epochs: int = option(1000, "stop after this many passes over the training data", minimum=1)
    grad_clip: float = option(
        2.0, "clip the gradient norm: recurrent nets' gradients can explode", exclusive_minimum=0
    )
    bf16: bool = option(True, "bf16 autocast on CUDA (weights stay float32); ignored elsewhere")
    cpu_bf16_output: bool = option(
        False,
        "on the CPU, the output layer's matmuls in bfloat16 with float32 sums (~3x faster where the "
        "CPU has bfloat16 matrix units, AMX or AVX512-BF16); the weights stay float32",
    )
    log_every: int = option(20, "steps between progress/metrics log lines", minimum=1)
    eval_every: int = option(500, "steps between validations (loss + ROUGE on a sample)", minimum=1)
    eval_batches: int = option(20, "validation batches for the validation loss", minimum=1)
    eval_rouge_samples: int = option(100, "validation documents summarized greedily for ROUGE", minimum=1)
    best_metric: str = option(
        "rougeLsum",
        "what picks the best model: rouge1, rouge2, rougeL, rougeLsum or loss",
        choices=(*METRICS, "loss"),
    )
    patience: int = option(0, "stop after this many validations without improvement (0: never)", minimum=0)
    checkpoint_every: int = option(
        500, "steps between resumable checkpoints (also at each validation)", minimum=1
    )
    keep_checkpoints: int = option(
        0, "also keep the weights of the last N validations in output_dir/checkpoints/step-N", minimum=0
    )
    validation_files: list[str] = option([], "validation pairs; default: a {split} pattern, else hold out")
    validation_size: int = option(
        500, "pairs held out of the training data when there is no validation file", minimum=1
    )
    coverage_from_step: int | None = option(
        None, "turn the coverage loss on from this step (See et al.)", minimum=0
    )
    coverage_loss_weight: float = option(
        1.0, "λ of the coverage loss once it is on (was coverage_weight)", minimum=0
    )
    tensorboard: bool = option(False, "also write TensorBoard events to output_dir/tensorboard")
    resume: bool = option(
        False, "continue from output_dir/checkpoint (same weights as no stop; changed settings are refused)"
    )
    init_from: str | None = option(
        None, "start from a bundle's weights, tokenizer and model settings (fine-tuning)"
    )


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "train": TrainConfig,
}


# old [train] names still read, with a warning: old name -> new name
RENAMED = {"coverage_weight": "coverage_loss_weight"}

# What --resume does with each setting that differs from the checkpoint's (the options its card
# records, as the run resolved them). A name is "section.key", or a section for all its keys.
# Fixed: a change breaks the run, so --resume refuses it. The model and the tokenizer decide the
# weights' shapes and what each row means; the data, the seed and the batch size decide which
# pairs are trained in what order (the saved data position counts batches of that order); the
# validation pairs and best_metric decide what the best score so far was measured on; the
# optimizer's kind decides the layout of its saved state; init_from decides the model settings.
RESUME_FIXED = (
    "model",
    "tokenizer.vocab_size",
    "tokenizer.model_type",
    "tokenizer.sample_size",
    "data.dataset",
    "data.dataset_config",
    "data.data_files",
    "data.text_column",
    "data.summary_column",
    "data.split",
    "data.source_max_tokens",
    "data.target_max_tokens",
    "data.batch_tokens",
    "data.limit",
    "train.seed",
    "train.optimizer",
    "train.best_metric",
    "train.clock",  # the elapsed time saved so far was counted on this clock
    "train.validation_files",
    "train.validation_size",
    "train.init_from",
)
# May change: the resumed run applies the new value from its first step, prints the changes and
# logs them in metrics.jsonl as a "resume" event; the checkpoint's card then records the new value.
# The learning rate and weight decay replace the saved optimizer's; the schedule (warmup, decay)
# is recomputed from the resumed step on.
RESUME_MAY_CHANGE = (
    # where the tokenizer file is read from: its content is checked by fingerprint on resume
    # (another copy of the same tokenizer is fine; another tokenizer is refused)
    "tokenizer.path",
    "data.cache_dir",
    "train.device",
    "train.threads",
    "train.learning_rate",
    "train.weight_decay",
    "train.warmup_steps",
    "train.decay",
    "train.max_steps",
    "train.max_minutes",
    "train.max_epochs",
    "train.grad_clip",
    "train.bf16",
    "train.cpu_bf16_output",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.eval_rouge_samples",
    "train.patience",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.coverage_from_step",
    "train.coverage_loss_weight",
    "train.tensorboard",
)
# Not compared: where the run lives and the flag that says to resume it.
RESUME_NOT_COMPARED = ("train.output_dir", "train.resume")


@dataclass
class Options:
    model: ModelConfig
    data: DataConfig
    tokenizer: TokenizerConfig
    train: TrainConfig
    # the --model KEY=VALUE settings given on the command line, parsed (--init-from checks them)
    model_flags: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of [data], [tokenizer] and [train]; --model KEY=VALUE for the model."""
    parser.add_argument(
        "--config", type=Path, help="TOML file with [model] [data] [tokenizer] [train] tables"
    )
    model_keys = ", ".join(f.name for f in dataclasses.fields(ModelConfig) if f.name != "extra")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a [model] setting (repeatable); keys: {model_keys}",
    )
    for section in ("data", "tokenizer", "train"):
        group = parser.add_argument_group(f"[{section}]")
        hints = typing.get_type_hints(SECTIONS[section])
        for item in dataclasses.fields(SECTIONS[section]):
            # values arrive as text and meet the config file's checks in load_options
            _add_flag(group, flag_name(section, item.name), section, item, hints[item.name],
                      item.metadata["help"], as_text=True)  # fmt: skip
    for old in RENAMED:  # the old flags still work, unlisted
        parser.add_argument(flag_name("train", old), dest=f"train.{old}", help=argparse.SUPPRESS)


def flag_name(section: str, name: str) -> str:
    """The command-line flag of a setting: --learning-rate, --tokenizer-vocab-size."""
    return "--" + ("tokenizer-" if section == "tokenizer" else "") + name.replace("_", "-")


def _add_flag(group, flag: str, section: str, item: dataclasses.Field, hint, help_text: str,
              as_text: bool = False) -> None:  # fmt: skip
    """A flag for one field; ``as_text`` leaves the value a string for the caller to check."""
    dest = f"{section}.{item.name}"
    kind = _base_type(hint)
    if kind is bool:
        group.add_argument(
            flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
    elif kind is list:
        group.add_argument(flag, dest=dest, nargs="+", default=None, help=help_text)
    else:
        group.add_argument(flag, dest=dest, type=str if as_text else kind, default=None, help=help_text)


def _base_type(hint) -> type:
    arguments = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is list:
        return list
    if arguments and origin is not list:  # Optional[X] / X | None
        return _base_type(arguments[0])
    return hint


def load_options(args: argparse.Namespace) -> Options:
    """The config file (if any), then the flags that were given; every value is checked against
    its field's type and bounds, whichever of the two it came from (GatesumError: one line)."""
    tables: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    origins: dict[str, str] = {}  # "section.key" -> how its value was given ("--seed VALUE"), for errors
    if args.config is not None:
        for name, values in _read_config(Path(args.config)).items():
            tables[name].update(values)
            origins.update({f"{name}.{key}": f"{args.config}: [{name}] {key} = VALUE" for key in values})
    given = {dest: value for dest, value in vars(args).items() if "." in dest and value is not None}
    if "data.dataset" in given and "data.data_files" not in given:
        tables["data"]["data_files"] = []  # --dataset on the command line wins over the config's files
    for dest, value in given.items():
        section, key = dest.split(".", 1)
        tables[section][key] = value
        origins[dest] = flag_name(section, key) + " VALUE"
    model_flags = {}
    for assignment in args.model:
        key, separator, value = assignment.partition("=")
        if not separator:
            raise GatesumError(f"--model {assignment!r}: expected KEY=VALUE")
        model_flags[key.strip()] = _parse_value(value)
        origins[f"model.{key.strip()}"] = f"--model {key.strip()}=VALUE"
    tables["model"].update(model_flags)
    _rename_deprecated(tables["train"], origins)
    built = {name: _build(name, cls, tables[name], origins) for name, cls in SECTIONS.items()}
    options = Options(**built, model_flags=model_flags)
    _check_together(options, origins)
    return options


def _read_config(path: Path) -> dict[str, dict[str, Any]]:
    try:
        loaded = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GatesumError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise GatesumError(f"{path}: invalid TOML ({error})") from None
    except OSError as error:
        raise GatesumError(f"{path}: unreadable ({error.strerror})") from None
    unknown = sorted(set(loaded) - set(SECTIONS))
    if unknown:
        raise GatesumError(f"{path}: unknown tables {unknown}; expected {sorted(SECTIONS)}")
    not_tables = [name for name, values in loaded.items() if not isinstance(values, dict)]
    if not_tables:
        raise GatesumError(f"{path}: {not_tables[0]} must be a table ([{not_tables[0]}]), not a value")
    return loaded


def _build(name: str, cls: type, values: dict[str, Any], origins: dict[str, str]) -> Any:
    """One section's dataclass from its checked values; GatesumError naming the value at fault."""
    fields = {item.name: item for item in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        origin = origins.get(f"{name}.{unknown[0]}", "")
        where = origin.split(": [")[0] + ": " if ": [" in origin else ""  # the config file's name
        raise GatesumError(f"{where}[{name}]: unknown settings {unknown}")
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = check(fields[key], hints[key], value)
        except SettingError as error:
            origin = origins.get(f"{name}.{key}", f"[{name}] {key} = VALUE")
            raise GatesumError(f"{origin.replace('VALUE', _show(value))}: {error}") from None
    try:
        return cls(**checked)
    except (TypeError, ValueError) as error:
        raise GatesumError(f"[{name}]: {error}") from None


def _check_together(options: Options, origins: dict[str, str]) -> None:
    """The checks that read two settings at once."""
    train = options.train
    if train.decay == "linear" and train.max_steps is None:
        raise GatesumError("[train] decay = linear counts down to max_steps: set max_steps (--max-steps)")
    if train.coverage_from_step is not None:
        try:
            replace(options.model, coverage=True)  # what the coverage phase trains
        except ValueError as error:
            raise GatesumError(f"--coverage-from-step: {error}") from None


def _show(value: Any) -> str:
    """A value as the user wrote it: text as is, true/false, lists and tables as JSON."""
    if value is None:
        return "unset"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _rename_deprecated(train: dict[str, Any], origins: dict[str, str]) -> None:
    """Move old [train] names to their new ones, with a one-line warning each."""
    for old, new in RENAMED.items():
        if old not in train:
            continue
        if new in train:
            raise GatesumError(f"[train]: both {old} and {new} are set; {old} is the old name of {new}")
        print(f"gatesum train: warning: [train] {old} (--{old.replace('_', '-')}) is deprecated; "
              f"call it {new} (--{new.replace('_', '-')})", file=sys.stderr)  # fmt: skip
        train[new] = train.pop(old)
        origins[f"train.{new}"] = origins.pop(f"train.{old}", f"[train] {old} = VALUE")


def _parse_value(text: str) -> Any:
    """A --model value as TOML reads it (numbers, true/false, "strings"); bare words are strings."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


# --- resuming -------------------------------------------------------------------------------------


@dataclass
class ResumeChanges:
    """The settings of a resumed run that differ from its checkpoint's: name -> (checkpoint's, now)."""

    fixed: dict[str, tuple[Any, Any]]  # refused (RESUME_FIXED)
    allowed: dict[str, tuple[Any, Any]]  # applied and logged (RESUME_MAY_CHANGE)

    def refusal(self) -> str:
        """``--resume: these settings differ from the checkpoint's: tokenizer.vocab_size 600 → 900 (…)``"""
        return (
            f"--resume: these settings differ from the checkpoint's: {describe_changes(self.fixed)} "
            "(resume with the checkpoint's values, or train into another --output-dir)"
        )


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """``data.source_max_tokens 400 → 300, train.learning_rate 0.001 → 0.002``"""
    return ", ".join(f"{name} {_show(before)} → {_show(after)}" for name, (before, after) in changes.items())


def resume_rule(name: str) -> str:
    """ "fixed", "may change" or "not compared" for a setting "section.key" (a new setting that no
    list names is fixed: refusing is the safe default)."""
    if name in RESUME_FIXED or name.split(".", 1)[0] in RESUME_FIXED:
        return "fixed"
    if name in RESUME_MAY_CHANGE:
        return "may change"
    if name in RESUME_NOT_COMPARED:
        return "not compared"
    return "fixed"


def resume_changes(saved: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> ResumeChanges:
    """Compare a run's settings (``Options.to_dict()`` as resolved) with those its checkpoint
    recorded. A setting the checkpoint does not record (one newer than it) is not compared; a
    [train] setting it records under an old name (``RENAMED``) is read under the new one."""
    saved = {
        **saved,
        "train": {RENAMED.get(key, key): value for key, value in saved.get("train", {}).items()},
    }
    changes = ResumeChanges(fixed={}, allowed={})
    for section, values in current.items():
        recorded = saved.get(section, {})
        for key, value in values.items():
            name = f"{section}.{key}"
            if key not in recorded or _same(recorded[key], value):
                continue
            rule = resume_rule(name)
            if rule == "fixed":
                changes.fixed[name] = (recorded[key], value)
            elif rule == "may change":
                changes.allowed[name] = (recorded[key], value)
    return changes


def _same(recorded: Any, value: Any) -> bool:
    """Equal once both went through JSON (the card is JSON: tuples became lists)."""
    return json.loads(json.dumps(recorded)) == json.loads(json.dumps(value))
