"""Summarization pairs: load them, tokenize them (cached), and batch them by token budget.

    files or Hub --load_pairs--> {source, target} --tokenize_pairs--> {source_ids, target_ids, ...}
        --TokenBatchSampler + collate--> Batch(source (B, S), target_input (B, T), ...)

Loading and tokenizing go through Hugging Face ``datasets``: the Arrow cache means a second
run neither re-reads the JSON nor re-tokenizes (the tokenize step's fingerprint is derived from
the tokenizer file and the limits, see ``tokenize_pairs``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from torch.nn.utils.rnn import pad_sequence

from gatesum.model.errors import GatesumError
from gatesum.model.text import NormalizerConfig, normalize
from gatesum.model.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from gatesum.training.fields import option

# Where the shared datasets live (cnndm/, long/): $GATESUM_DATA, else ../shared/data beside the
# directory the command runs in (the layout of a checkout next to its shared data).
DATA_DIR = Path(os.environ.get("GATESUM_DATA", Path("..") / "shared" / "data"))
_TOKENIZE_VERSION = 1  # bump when tokenize_pairs' output changes, to invalidate old caches
_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
_HUB_ERRORS = (datasets.exceptions.DatasetNotFoundError, FileNotFoundError, ConnectionError, ValueError)


@dataclass
class DataConfig:
    """Where the pairs come from and how they are cut and batched."""

    dataset: str | None = option(
        None, "Hugging Face Hub dataset, e.g. abisee/cnn_dailymail (needs the network)"
    )
    dataset_config: str | None = option(None, "Hub dataset configuration, e.g. 3.0.0")
    data_files: list[str] = option(
        [],
        "local .jsonl/.jsonl.gz/.csv/.parquet files; '{split}' in a name becomes the split "
        "(a file without it that has a 'split' column gives that split's rows)",
    )
    text_column: str = option("article", "column holding the document (CNN/DM: article; XSum: document)")
    summary_column: str = option(
        "highlights", "column holding the reference summary (CNN/DM: highlights; XSum: summary)"
    )
    split: str = option("train", "split to train on")
    source_max_tokens: int = option(
        400, "source tokens the model reads; longer documents are truncated", minimum=1
    )
    target_max_tokens: int = option(
        100, "summary tokens trained on; longer summaries are truncated", minimum=1
    )
    batch_tokens: int = option(
        6000, "padded source+target tokens per batch (batches are built by token count)", minimum=1
    )
    limit: int | None = option(None, "use only the first N training pairs (smoke runs)", minimum=1)
    cache_dir: str | None = option(None, "datasets cache directory (default: ~/.cache/huggingface/datasets)")


@dataclass
class DataReport:
    """What loading one split did to its rows: read, dropped (by reason), cut by --limit, used."""

    split: str
    read: int
    dropped: dict[str, int]  # reason ("empty article") -> rows; only reasons that occurred
    limited: int  # rows past --limit
    used: int

    def line(self) -> str:
        """``train: 400 rows read, 200 dropped (empty article 150, empty highlights 50), 200 used``"""
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.dropped.items())
        dropped = sum(self.dropped.values())
        text = f"{self.split}: {self.read} rows read, {dropped} dropped"
        text += f" ({reasons})" if reasons else ""
        if self.limited:
            text += f", {self.limited} past the limit"
        return f"{text}, {self.used} used"


@dataclass
class LoadedPairs:
    pairs: datasets.Dataset  # columns source, target (+ id)
    report: DataReport


# --- loading --------------------------------------------------------------------------------------


def load_pairs(config: DataConfig, split: str | None = None) -> datasets.Dataset:
    """The ``split`` (default ``config.split``) as a Dataset with columns source, target (+ id);
    ``load_split`` says the same with a report of the rows dropped."""
    return load_split(config, split).pairs


def load_split(config: DataConfig, split: str | None = None) -> LoadedPairs:
    """The ``split`` (default ``config.split``) as a Dataset with columns source, target (+ id),
    and a report of what was read and dropped.

    Pairs with an empty (or whitespace, or missing) source or target are dropped and counted by
    reason. GatesumError for a missing file, an unreadable line, an unknown column or an empty result.
    """
    split = split or config.split
    if config.data_files:
        where, dataset = _load_local(config.data_files, split, config.cache_dir)
    elif config.dataset:
        where, dataset = _load_hub(config.dataset, config.dataset_config, split, config.cache_dir)
    else:
        raise GatesumError("data: set either data_files (local files) or dataset (a Hub name)")
    _check_columns(dataset, config, where)
    keep = [config.text_column, config.summary_column]
    if "id" in dataset.column_names and "id" not in keep:
        keep.append("id")
    dataset = dataset.select_columns(keep)
    # two steps, because the text column may already be called "target" (or the summary "source")
    renames = {config.text_column: "source_text", config.summary_column: "target_text"}
    dataset = dataset.rename_columns(renames)
    dataset = dataset.rename_columns({"source_text": "source", "target_text": "target"})
    read = len(dataset)
    # A small column of reasons, counted, then filtered on: both steps are cached by datasets,
    # and the counts come from the column, so a cache hit reports the same numbers.
    dataset = dataset.map(_empty_reason, batched=True, desc="finding empty pairs")
    codes = list(dataset["empty"])
    reasons = {
        EMPTY_SOURCE: f"empty {config.text_column}",
        EMPTY_TARGET: f"empty {config.summary_column}",
        EMPTY_BOTH: f"empty {config.text_column} and {config.summary_column}",
    }
    counts = Counter(codes)
    dropped = {label: counts[code] for code, label in reasons.items() if counts[code]}
    if dropped:
        dataset = dataset.filter(_is_kept, input_columns="empty", batched=True, desc="dropping empty pairs")
    dataset = dataset.remove_columns("empty")
    kept = len(dataset)
    if config.limit is not None:
        dataset = dataset.select(range(min(config.limit, len(dataset))))
    if len(dataset) == 0:
        raise GatesumError(f"{where}: no non-empty pairs in split {split!r}")
    report = DataReport(split, read, dropped, limited=kept - len(dataset), used=len(dataset))
    return LoadedPairs(dataset, report)


def _check_columns(dataset: datasets.Dataset, config: DataConfig, where: str) -> None:
    if config.text_column == config.summary_column:
        raise GatesumError(f"{where}: text_column and summary_column are both {config.text_column!r}")
    for column in (config.text_column, config.summary_column):
        if column not in dataset.column_names:
            raise GatesumError(f"{where}: no column {column!r}; available: {', '.join(dataset.column_names)}")
        feature = dataset.features[column]
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            raise GatesumError(f"{where}: column {column!r} holds {feature}, not text")


EMPTY_SOURCE, EMPTY_TARGET, EMPTY_BOTH = 1, 2, 3  # the "empty" column's codes (0: a usable pair)


def _empty_reason(batch: dict[str, list]) -> dict[str, list[int]]:
    def empty(text: str | None) -> bool:
        return not (text and text.strip())

    return {"empty": [empty(s) * EMPTY_SOURCE + empty(t) * EMPTY_TARGET
                      for s, t in zip(batch["source"], batch["target"])]}  # fmt: skip


def _is_kept(codes: list[int]) -> list[bool]:
    return [code == 0 for code in codes]


def _load_hub(name: str, config_name: str | None, split: str, cache_dir: str | None):
    try:
        return name, datasets.load_dataset(name, config_name, split=split, cache_dir=cache_dir)
    except _HUB_ERRORS as error:
        raise GatesumError(f"dataset {name!r} split {split!r}: {_first_line(error)}") from error


def _load_local(patterns: list[str], split: str, cache_dir: str | None):
    files: list[str] = []
    for pattern in patterns:
        pattern = pattern.replace("{split}", split)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        missing = [match for match in matches if not Path(match).is_file()]
        if not matches or missing:
            raise GatesumError(f"{(missing or [pattern])[0]}: file not found")
        empty = [match for match in matches if Path(match).stat().st_size == 0]
        if empty:
            raise GatesumError(f"{empty[0]}: file is empty")
        files += matches
    builders = {_builder(file) for file in files}
    if len(builders) > 1:
        raise GatesumError(f"{', '.join(files)}: mixed file types; use one of .jsonl, .csv, .parquet")
    builder = builders.pop()
    where = ", ".join(files)
    try:
        dataset = datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir)
        dataset.data.validate(full=True)  # pyarrow's JSON reader lets invalid UTF-8 through
    except Exception as error:  # datasets wraps the reader's error; find the file and line ourselves
        message = _diagnose(files, builder) or f"{where}: unreadable: {_first_line(error)}"
        raise GatesumError(message) from error
    if SPLIT_COLUMN in dataset.column_names and not any("{split}" in pattern for pattern in patterns):
        dataset = _rows_of_split(dataset, split, where)
    return where, dataset


SPLIT_COLUMN = "split"  # a file that holds several splits names each row's (e.g. long/qmsum.jsonl.gz)


def _rows_of_split(dataset: datasets.Dataset, split: str, where: str) -> datasets.Dataset:
    """The rows whose ``split`` column is ``split``: one file that holds all of a dataset's splits."""
    present = sorted({str(value) for value in dataset[SPLIT_COLUMN]})
    if split not in present:
        raise GatesumError(f"{where}: no rows of split {split!r}; its {SPLIT_COLUMN!r} column has "
                           f"{', '.join(present)}")  # fmt: skip
    return dataset.filter(_in_split, input_columns=SPLIT_COLUMN, fn_kwargs={"split": split})


def _in_split(value: str, split: str) -> bool:
    return value == split


def _builder(file: str) -> str:
    name = file.lower()
    for compression in _COMPRESSIONS:
        name = name.removesuffix(compression)
    builder = _BUILDERS.get(Path(name).suffix)
    if builder is None:
        raise GatesumError(f"{file}: unknown file type; use .jsonl, .json, .csv or .parquet (optionally .gz)")
    return builder


def _diagnose(files: list[str], builder: str) -> str | None:
    """The first file and line that is not UTF-8 (or, for JSON Lines, not a JSON object)."""
    if builder == "parquet":
        return None
    from datasets.utils.file_utils import xopen  # opens .gz/.bz2/... transparently

    for file in files:
        with xopen(file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    return f"{file}: line {number} is not UTF-8"
                if builder == "json" and line.strip() and not _is_json_object(line):
                    return f"{file}: line {number} is not a JSON object"
    return None


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# --- tokenizing -----------------------------------------------------------------------------------


def tokenize_pairs(dataset: datasets.Dataset, tokenizer: Tokenizer, normalizer_config: NormalizerConfig,
                   source_max_tokens: int, target_max_tokens: int) -> datasets.Dataset:  # fmt: skip
    """Add source_ids (truncated to ``source_max_tokens``), source_length (before truncation),
    truncated, target_ids ([BOS] + at most ``target_max_tokens`` ids + [EOS]) and length
    (len(source_ids) + len(target_ids), what a batch pads).

    The map's fingerprint hashes the input dataset, the tokenizer's model file, the normalizer
    settings and the limits, so a second call with the same inputs loads the Arrow cache instead
    of tokenizing again (for a dataset backed by cache files, as ``load_pairs`` returns).
    """
    settings = [dataset._fingerprint, tokenizer.fingerprint, asdict(normalizer_config),
                source_max_tokens, target_max_tokens, _TOKENIZE_VERSION]  # fmt: skip
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def encode(batch: dict[str, list]) -> dict[str, list]:
        sources = tokenizer.encode_batch([normalize(text, normalizer_config) for text in batch["source"]])
        targets = tokenizer.encode_batch([normalize(text, normalizer_config) for text in batch["target"]])
        source_ids = [ids[:source_max_tokens] for ids in sources]
        target_ids = [[BOS_ID, *ids[:target_max_tokens], EOS_ID] for ids in targets]
        return {
            "source_ids": source_ids,
            "source_length": [len(ids) for ids in sources],
            "truncated": [len(ids) > source_max_tokens for ids in sources],
            "target_ids": target_ids,
            "length": [len(s) + len(t) for s, t in zip(source_ids, target_ids)],
        }

    return dataset.map(encode, batched=True, new_fingerprint=fingerprint, desc="tokenizing")


def iter_texts_for_tokenizer(dataset: datasets.Dataset, sample_size: int, seed: int = 0,
                             normalizer_config: NormalizerConfig | None = None) -> Iterator[str]:  # fmt: skip
    """Normalized source and target texts of ``sample_size`` random pairs, to train the tokenizer."""
    config = normalizer_config or NormalizerConfig()
    indices = sorted(random.Random(seed).sample(range(len(dataset)), min(sample_size, len(dataset))))
    for batch in dataset.select(indices).iter(batch_size=256):
        for source, target in zip(batch["source"], batch["target"]):
            yield normalize(source, config)
            yield normalize(target, config)


# --- batching -------------------------------------------------------------------------------------


class TokenBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of example indices whose padded size ``max(length) · count`` fits ``batch_tokens``.

    Length bucketing: the (shuffled) indices are cut into buckets of ~100 batches, each bucket is
    sorted by length and cut greedily into batches, so a batch pads little; then the order of the
    batches is shuffled. Everything is drawn from ``seed`` and the epoch, so an epoch's batches
    are the same on every run and ``load_state_dict({"epoch": e, "start": k})`` resumes at
    batch k of epoch e. An example longer than the budget gets a batch of its own.
    ``drop_last`` drops each bucket's leftover batch when it is less than half full.
    """

    def __init__(self, lengths: Sequence[int], batch_tokens: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:  # fmt: skip
        self.lengths = list(lengths)
        self.batch_tokens = batch_tokens
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch, self.start = 0, 0
        mean_length = max(1, sum(self.lengths) // max(1, len(self.lengths)))
        self.bucket_size = 100 * max(1, batch_tokens // mean_length)
        self._cache: tuple[int, list[list[int]]] | None = None

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch``, in order (deterministic for seed and epoch)."""
        if self._cache and self._cache[0] == epoch:
            return self._cache[1]
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        batches: list[list[int]] = []
        for begin in range(0, len(order), self.bucket_size):
            bucket = sorted(order[begin : begin + self.bucket_size], key=self.lengths.__getitem__)
            batches += self._fill(bucket)
        if self.shuffle:
            rng.shuffle(batches)
        self._cache = (epoch, batches)
        return batches

    def _fill(self, bucket: list[int]) -> list[list[int]]:
        batches, batch, longest = [], [], 0  # bucket is sorted: the newest index is the longest
        for index in bucket:
            length = self.lengths[index]
            if batch and max(longest, length) * (len(batch) + 1) > self.batch_tokens:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(index)
            longest = max(longest, length)
        if batch and not (self.drop_last and batches and longest * len(batch) < self.batch_tokens / 2):
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        while self.start < len(batches):
            self.start += 1  # counted before yielding: state_dict() then says "resume after this"
            yield batches[self.start - 1]
        self.epoch, self.start = self.epoch + 1, 0

    def __len__(self) -> int:
        return len(self.batches(self.epoch))

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def state_dict(self) -> dict[str, int]:
        """Where iteration stands. With a prefetching DataLoader the sampler runs ahead of the
        training step: save the trainer's own count of batches consumed as ``start`` instead."""
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.start = int(state["epoch"]), int(state["start"])
        self.seed = int(state.get("seed", self.seed))


@dataclass
class Batch:
    """One padded batch; every tensor is long, padded with PAD_ID."""

    source: torch.Tensor  # (B, S)
    source_lengths: torch.Tensor  # (B,)
    target_input: torch.Tensor  # (B, T) = [BOS, y_1 .. y_n]
    target_output: torch.Tensor  # (B, T) = [y_1 .. y_n, EOS]
    num_tokens: int  # non-pad target tokens: the loss is averaged over these

    def to(self, device: torch.device | str) -> Batch:
        move = {name: getattr(self, name).to(device, non_blocking=True)
                for name in ("source", "source_lengths", "target_input", "target_output")}  # fmt: skip
        return Batch(**move, num_tokens=self.num_tokens)


def collate(examples: list[dict[str, Any]]) -> Batch:
    """Examples from ``tokenize_pairs`` -> a Batch (pass as a DataLoader's ``collate_fn``)."""
    sources = [torch.tensor(example["source_ids"], dtype=torch.long) for example in examples]
    targets = [torch.tensor(example["target_ids"], dtype=torch.long) for example in examples]
    target_output = pad_sequence([ids[1:] for ids in targets], batch_first=True, padding_value=PAD_ID)
    return Batch(
        source=pad_sequence(sources, batch_first=True, padding_value=PAD_ID),  # (B, S)
        source_lengths=torch.tensor([len(ids) for ids in sources], dtype=torch.long),  # (B,)
        target_input=pad_sequence([ids[:-1] for ids in targets], batch_first=True, padding_value=PAD_ID),
        target_output=target_output,  # (B, T)
        num_tokens=int((target_output != PAD_ID).sum()),
    )
