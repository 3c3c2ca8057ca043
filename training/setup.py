"""Training inputs that need a decision: the validation pairs and the tokenizer."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch.distributed as dist

from gatesum.model.errors import GatesumError
from gatesum.model.text import NormalizerConfig
from gatesum.model.tokenizer import Tokenizer
from gatesum.training.data import DataConfig, iter_texts_for_tokenizer, load_pairs, load_split
from gatesum.training.options import TokenizerConfig

# sentencepiece's words when a corpus has fewer distinct pieces than the vocabulary asked for
_VOCABULARY_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


@dataclass
class TrainingPairs:
    train: datasets.Dataset
    validation: datasets.Dataset
    reports: list[str]  # one line per split read: rows read, dropped and why, used


def load_training_pairs(data: DataConfig, train) -> TrainingPairs:
    """The training and validation pairs (``validation_pairs``), with a report line per split."""
    loaded = load_split(data)
    source = _validation_source(data, train)
    if source is not None:
        validation = load_split(source, "validation")
        return TrainingPairs(loaded.pairs, validation.pairs, [loaded.report.line(), validation.report.line()])
    pairs, held_out = _hold_out(loaded.pairs, train.validation_size)
    line = f"{loaded.report.line()}, of which the last {len(held_out)} are held out for validation"
    return TrainingPairs(pairs, held_out, [line])


def validation_pairs(
    pairs: datasets.Dataset, data: DataConfig, train
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training pairs, validation pairs): from --validation-files, a '{split}' pattern, or held out."""
    source = _validation_source(data, train)
    if source is not None:
        return pairs, load_pairs(source, "validation")
    return _hold_out(pairs, train.validation_size)


def _validation_source(data: DataConfig, train) -> DataConfig | None:
    """Where the validation split is read from; None: it is held out of the training pairs."""
    if train.validation_files:
        return DataConfig(**{**data.__dict__, "data_files": train.validation_files, "limit": None})
    if any("{split}" in pattern for pattern in data.data_files) or (data.dataset and not data.data_files):
        return DataConfig(**{**data.__dict__, "limit": None})
    return None


def _hold_out(pairs: datasets.Dataset, validation_size: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    size = min(validation_size, len(pairs) // 10)
    if size < 1:
        raise GatesumError(f"too few training pairs ({len(pairs)}) to hold out a validation set")
    # the last pairs of the file: the same hold-out on every run and every resume
    return pairs.select(range(len(pairs) - size)), pairs.select(range(len(pairs) - size, len(pairs)))


def prepare_tokenizer(
    config,
    pairs: datasets.Dataset | None,
    output_dir: Path,
    normalizer: NormalizerConfig,
    is_main: bool,
    distributed: bool,
    resume: bool,
) -> Tokenizer:
    """The given tokenizer, the one this run trained before (resume), or a new one (rank 0 trains
    it on ``pairs``, which a resumed run need not pass)."""
    if config.path:
        return Tokenizer.load(Path(config.path))
    path = Path(output_dir) / "tokenizer.model"
    saved = Path(output_dir) / "checkpoint" / "tokenizer.model"
    if resume and not path.exists() and saved.exists():
        return Tokenizer.load(saved)  # a run that was handed its tokenizer keeps it in its checkpoint only
    if not path.exists() and is_main:
        if resume or pairs is None:
            raise GatesumError(f"{path}: missing; cannot resume without the run's tokenizer")
        train_tokenizer(config, pairs, path, normalizer)
    if distributed:
        dist.barrier()  # the other ranks wait for rank 0's tokenizer
    return Tokenizer.load(path)


def train_tokenizer(
    config: TokenizerConfig, pairs: datasets.Dataset, path: Path, normalizer: NormalizerConfig
) -> Tokenizer:
    """A tokenizer of ``config.vocab_size`` pieces, or, when the training texts are too few to
    hold that many (a ``--limit`` smoke run), of the most they allow, with a one-line warning."""

    def texts():
        return iter_texts_for_tokenizer(pairs, config.sample_size, normalizer_config=normalizer)

    try:
        return Tokenizer.train(texts(), path, config.vocab_size, config.model_type)
    except GatesumError as error:
        too_high = _VOCABULARY_TOO_HIGH.search(str(error))
        if too_high is None:
            raise
    allowed = int(too_high.group(2))
    print(
        f"gatesum train: warning: --tokenizer-vocab-size {config.vocab_size} is more than the "
        f"training data allows; the tokenizer gets {allowed} pieces",
        file=sys.stderr,
    )
    try:
        return Tokenizer.train(texts(), path, allowed, config.model_type)
    except GatesumError as error:
        raise GatesumError(
            f"{error} (after lowering --tokenizer-vocab-size to {allowed}; set it lower)"
        ) from None
