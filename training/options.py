"""Training options: a TOML config file with [model], [data], [tokenizer] and [train] tables,
overridden by command-line flags. Every flag has help text, generated from the field's own."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from gatesum.model.config import ModelConfig
from gatesum.model.errors import GatesumError
from gatesum.training.data import DataConfig


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with the help text its command-line flag shows."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TokenizerConfig:
    path: str | None = option(None, "an existing tokenizer.model; default: train one into the output dir")
    vocab_size: int = option(16000, "vocabulary size of a tokenizer trained here")
    model_type: str = option("unigram", "sentencepiece model type: unigram or bpe")
    sample_size: int = option(20000, "training pairs sampled to train the tokenizer")


@dataclass
class TrainConfig:
    output_dir: str = option("runs/summarizer", "where checkpoint/, best/, metrics.jsonl and curves.png go")
    seed: int = option(0, "seed for weights, data order and dropout; the same seed resumes identically")
    device: str = option("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice)")
    optimizer: str = option("adam", "adam or adagrad (See et al. used adagrad, lr 0.15)")
    learning_rate: float = option(1e-3, "peak learning rate, reached after the warmup")
    weight_decay: float = option(0.0, "L2 penalty (adagrad) / decoupled decay (adam)")
    warmup_steps: int = option(200, "linear warmup steps from 0 to the peak learning rate")
    decay: str = option("inverse_sqrt", "after warmup: inverse_sqrt, linear (to 0 at max_steps) or constant")
    max_steps: int | None = option(None, "stop after this many optimizer steps")
    max_minutes: float | None = option(None, "stop after this much training time (resumed runs count it all)")
    max_epochs: int = option(1000, "stop after this many passes over the training data")
    grad_clip: float = option(2.0, "clip the gradient norm: recurrent nets' gradients can explode")
    bf16: bool = option(True, "bf16 autocast on CUDA (weights stay float32); ignored elsewhere")
    log_every: int = option(20, "steps between progress/metrics log lines")
    eval_every: int = option(500, "steps between validations (loss + ROUGE on a sample)")
    eval_batches: int = option(20, "validation batches for the validation loss")
    eval_rouge_samples: int = option(100, "validation documents summarized greedily for ROUGE")
    best_metric: str = option(
        "rougeLsum", "what picks the best model: rouge1, rouge2, rougeL, rougeLsum or loss"
    )
    patience: int = option(0, "stop after this many validations without improvement (0: never)")
    checkpoint_every: int = option(500, "steps between resumable checkpoints (also at each validation)")
    validation_files: list[str] = option([], "validation pairs; default: a {split} pattern, else hold out")
    validation_size: int = option(500, "pairs held out of the training data when there is no validation file")
    coverage_from_step: int | None = option(None, "turn the coverage loss on from this step (See et al.)")
    coverage_loss_weight: float = option(1.0, "λ of the coverage loss once it is on (was coverage_weight)")
    tensorboard: bool = option(False, "also write TensorBoard events to output_dir/tensorboard")
    resume: bool = option(False, "continue from output_dir/checkpoint (same seed: same weights as no stop)")
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
            flag = "--" + ("tokenizer-" if section == "tokenizer" else "") + item.name.replace("_", "-")
            help_text = item.metadata.get("help", _comment_help(section, item.name))
            _add_flag(group, flag, section, item, hints[item.name], help_text)
    train_hints = typing.get_type_hints(TrainConfig)
    for old, new in RENAMED.items():  # the old flags still work, unlisted
        flag, kind = "--" + old.replace("_", "-"), _base_type(train_hints[new])
        parser.add_argument(flag, dest=f"train.{old}", type=kind, help=argparse.SUPPRESS)


def _add_flag(group, flag: str, section: str, item: dataclasses.Field, hint, help_text: str) -> None:
    dest = f"{section}.{item.name}"
    kind = _base_type(hint)
    if kind is bool:
        group.add_argument(
            flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
    elif kind is list:
        group.add_argument(flag, dest=dest, nargs="+", default=None, help=help_text)
    else:
        group.add_argument(flag, dest=dest, type=kind, default=None, help=help_text)


def _base_type(hint) -> type:
    arguments = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is list:
        return list
    if arguments and origin is not list:  # Optional[X] / X | None
        return _base_type(arguments[0])
    return hint


_DATA_HELP = {
    "dataset": "Hugging Face Hub dataset, e.g. abisee/cnn_dailymail (needs the network)",
    "dataset_config": "Hub dataset configuration, e.g. 3.0.0",
    "data_files": "local .jsonl/.jsonl.gz/.csv/.parquet files; '{split}' in a name becomes the split",
    "text_column": "column holding the document (CNN/DM: article; XSum: document)",
    "summary_column": "column holding the reference summary (CNN/DM: highlights; XSum: summary)",
    "split": "split to train on",
    "source_max_tokens": "source tokens the model reads; longer documents are truncated",
    "target_max_tokens": "summary tokens trained on; longer summaries are truncated",
    "batch_tokens": "padded source+target tokens per batch (batches are built by token count)",
    "limit": "use only the first N training pairs (smoke runs)",
    "cache_dir": "datasets cache directory",
}


def _comment_help(section: str, name: str) -> str:
    return _DATA_HELP.get(name, name.replace("_", " ")) if section == "data" else name.replace("_", " ")


def load_options(args: argparse.Namespace) -> Options:
    """The config file (if any), then the flags that were given, then validation."""
    tables: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if args.config is not None:
        try:
            loaded = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GatesumError(f"{args.config}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise GatesumError(f"{args.config}: invalid TOML ({error})") from None
        unknown = sorted(set(loaded) - set(SECTIONS))
        if unknown:
            raise GatesumError(f"{args.config}: unknown tables {unknown}; expected {sorted(SECTIONS)}")
        for name, values in loaded.items():
            tables[name].update(values)
    given = {dest: value for dest, value in vars(args).items() if "." in dest and value is not None}
    if "data.dataset" in given and "data.data_files" not in given:
        tables["data"]["data_files"] = []  # --dataset on the command line wins over the config's files
    for dest, value in given.items():
        section, key = dest.split(".", 1)
        tables[section][key] = value
    model_flags = {}
    for assignment in args.model:
        key, separator, value = assignment.partition("=")
        if not separator:
            raise GatesumError(f"--model {assignment!r}: expected KEY=VALUE")
        model_flags[key.strip()] = _parse_value(value)
    tables["model"].update(model_flags)
    _rename_deprecated(tables["train"])
    built = {}
    for name, cls in SECTIONS.items():
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(tables[name]) - known)
        if unknown:
            raise GatesumError(f"[{name}]: unknown settings {unknown}")
        try:
            built[name] = cls(**tables[name])
        except (TypeError, ValueError) as error:
            raise GatesumError(f"[{name}]: {error}") from None
    return Options(**built, model_flags=model_flags)


def _rename_deprecated(train: dict[str, Any]) -> None:
    """Move old [train] names to their new ones, with a one-line warning each."""
    for old, new in RENAMED.items():
        if old not in train:
            continue
        if new in train:
            raise GatesumError(f"[train]: both {old} and {new} are set; {old} is the old name of {new}")
        print(f"gatesum train: warning: [train] {old} (--{old.replace('_', '-')}) is deprecated; "
              f"call it {new} (--{new.replace('_', '-')})", file=sys.stderr)  # fmt: skip
        train[new] = train.pop(old)


def _parse_value(text: str) -> Any:
    """A --model value as TOML reads it (numbers, true/false, "strings"); bare words are strings."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text
