"""``gatesum select train``: train the content selector (``model/selector.py``), resumably.

    gatesum select train --config configs/selector.toml --max-minutes 60
    gatesum select train --config configs/selector.toml --resume        # after a crash or a stop

Labels come from the reference by the alignment of Gehrmann et al. (2018), see
``align_labels``. The selector tags the ids of a summarizer bundle's tokenizer (``--bundle``,
default the bundled model), so it always ships beside that summarizer. Writes into
``--output-dir``:

    checkpoint/     selector.safetensors + selector.json + trainer_state.pt, for --resume
    best/           the summarizer bundle with the best selector so far added: ready to serve
    metrics.jsonl   one JSON object per log line and per validation, and a "start" and a "stop"
                    event per session (the clock, the limits, why it stopped)

``clock = "cpu"`` (``training/clock.py``) gives runs that share a machine equal budgets: the
cell comparison (``gatesum select compare``, experiments/compare_selectors.py) trains its six
selectors side by side on it.

Validation reports token-level loss, precision/recall/F1 at 0.5 and ROC AUC, and the
sentence-level quality: ROUGE of a 3-sentence extractive summary by the selector's sentence
scores beside Lead-3 on the same documents.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import shutil
import tempfile
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import tomllib
import torch
from safetensors.torch import save_file
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from gatesum.model.bundle import (
    BUNDLED_MODEL,
    TOKENIZER_FILE,
    load_selector,
    load_weights,
    read_card,
    recover_directory,
    replace_directory,
    save_with_selector,
)
from gatesum.model.errors import GatesumError
from gatesum.model.selector import (
    ContentSelector,
    SelectorConfig,
    extractive_summary,
    sentence_scores,
    split_sentences,
    token_probabilities_batch,
)
from gatesum.model.text import NormalizerConfig, normalize
from gatesum.model.tokenizer import PAD_ID, Tokenizer
from gatesum.training import checkpoint
from gatesum.training.clock import CLOCKS, TrainingClock
from gatesum.training.data import DataConfig, TokenBatchSampler, load_pairs
from gatesum.training.options import _add_flag, _parse_value, option
from gatesum.training.rouge import rouge
from gatesum.training.setup import validation_pairs

_LABELS_VERSION = 1  # bump when label_pairs' output changes, to invalidate old caches
SELECTOR_STATE = "selector.json"
RUN_WEIGHTS = ("checkpoint", "best")  # a run's selectors: at the end of its budget, at its best validation

# --- labels: the paper's alignment ----------------------------------------------------------------


def align_labels(source: list[str], reference_lines: list[list[str]], min_span: int = 1) -> list[int]:
    """1 for each source word the reference copies, else 0 (Gehrmann et al. 2018, §3).

    The paper: "a word x_i is copied if (1) it is part of the longest possible subsequence of
    tokens s = x_{i−j:i:i+k} ... if s ∈ x and s ∈ y, and (2) there exists no earlier sequence
    u with s = u." Its preprocessing (``make_BIO_tgt``) does this greedily from the left:

    1. at source position i, extend the span x_i .. x_{j−1} word by word for as long as it
       still occurs as contiguous words of one reference line;
    2. a span of at least ``min_span`` words (the paper: 1) is labelled 1, unless the same
       words were labelled earlier in the source (only the first copy of a phrase counts);
       a word that starts no span is labelled 0;
    3. continue at j (at i + 1 when no span started at i).

    Unlike the original, which tests ``phrase in reference_string`` on characters (so "he"
    matched inside "the"), spans are whole words, and never cross reference line breaks.
    """
    where: dict[str, list[tuple[int, int]]] = {}  # word -> its (line, position) in the reference
    for line_number, line in enumerate(reference_lines):
        for position, word in enumerate(line):
            where.setdefault(word, []).append((line_number, position))
    labels, seen, start = [0] * len(source), set(), 0
    while start < len(source):
        ends = where.get(source[start], [])  # where the span so far ends in the reference
        end = start + 1 if ends else start
        while ends and end < len(source):
            ends = [
                (line, p + 1) for line, p in ends if _word_at(reference_lines, line, p + 1) == source[end]
            ]
            end += bool(ends)
        phrase = tuple(source[start:end])
        if end - start >= max(min_span, 1) and phrase not in seen:
            labels[start:end] = [1] * (end - start)
            seen.add(phrase)
        start = max(end, start + 1)
    return labels


def _word_at(lines: list[list[str]], line: int, position: int) -> str | None:
    return lines[line][position] if position < len(lines[line]) else None


def label_pairs(
    dataset: datasets.Dataset,
    tokenizer: Tokenizer,
    normalizer: NormalizerConfig,
    max_tokens: int,
    min_span: int = 1,
) -> datasets.Dataset:
    """Add source_ids (the article's ids, at most ``max_tokens``), labels (0/1 per id: each
    subword piece takes its word's label), sentence_lengths (ids per sentence of
    ``split_sentences``, before the cap), source_length (ids before the cap) and length.

    Cached like ``tokenize_pairs``: the fingerprint hashes the input, tokenizer and settings.
    """
    settings = [dataset._fingerprint, tokenizer.fingerprint, dataclasses.asdict(normalizer),
                max_tokens, min_span, _LABELS_VERSION]  # fmt: skip
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def encode(batch: dict[str, list]) -> dict[str, list]:
        documents = [split_sentences(normalize(text, normalizer)) for text in batch["source"]]
        words = [[sentence.split() for sentence in sentences] for sentences in documents]
        flat = [word for sentences in words for sentence in sentences for word in sentence]
        pieces = iter(tokenizer.encode_batch(flat))  # one piece list per word: the same ids as the text
        out: dict[str, list] = {"source_ids": [], "labels": [], "sentence_lengths": [], "source_length": []}
        for sentences, target in zip(words, batch["target"]):
            reference = [line.split() for line in normalize(target, normalizer).splitlines()]
            word_labels = iter(align_labels([w for s in sentences for w in s], reference, min_span))
            ids, labels, lengths = [], [], []
            for sentence in sentences:
                before = len(ids)
                for _ in sentence:
                    word_ids = next(pieces)
                    ids += word_ids
                    labels += [next(word_labels)] * len(word_ids)
                lengths.append(len(ids) - before)
            out["source_ids"].append(ids[:max_tokens])
            out["labels"].append(labels[:max_tokens])
            out["sentence_lengths"].append(lengths)
            out["source_length"].append(len(ids))
        out["length"] = [len(ids) for ids in out["source_ids"]]
        return out

    return dataset.map(encode, batched=True, new_fingerprint=fingerprint, desc="labelling")


# --- options --------------------------------------------------------------------------------------


@dataclass
class SelectorDataConfig:
    data_files: list[str] = option(
        [], "local .jsonl/.jsonl.gz/.csv/.parquet files; '{split}' becomes the split"
    )
    dataset: str | None = option(
        None, "Hugging Face Hub dataset, e.g. abisee/cnn_dailymail (needs the network)"
    )
    dataset_config: str | None = option(None, "Hub dataset configuration, e.g. 3.0.0")
    text_column: str = option("article", "column holding the document")
    summary_column: str = option("highlights", "column holding the reference summary")
    split: str = option("train", "split to train on")
    max_tokens: int = option(2000, "source tokens read per document (the rest is cut, to bound memory)")
    batch_tokens: int = option(16000, "padded source tokens per batch (batches are built by token count)")
    min_span: int = option(1, "shortest copied span labelled positive (the paper: 1)")
    limit: int | None = option(None, "use only the first N training pairs (smoke runs)")
    cache_dir: str | None = option(None, "datasets cache directory")

    def pairs_config(self) -> DataConfig:
        """The loader's settings (``training.data``)."""
        keep = ("data_files", "dataset", "dataset_config", "text_column", "summary_column", "split",
                "limit", "cache_dir")  # fmt: skip
        return DataConfig(**{name: getattr(self, name) for name in keep}, source_max_tokens=self.max_tokens)


@dataclass
class SelectorTrainConfig:
    output_dir: str = option("runs/selector", "where checkpoint/, best/ and metrics.jsonl go")
    bundle: str | None = option(None, "summarizer bundle whose tokenizer the selector tags and that best/ "
                                "extends (default: the bundled model)")  # fmt: skip
    seed: int = option(0, "seed for weights, data order and dropout; the same seed resumes identically")
    device: str = option("auto", "auto (CUDA if present, else CPU), cpu, cuda or cuda:N")
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice)")
    learning_rate: float = option(1e-3, "AdamW peak learning rate, reached after the warmup")
    weight_decay: float = option(0.01, "AdamW decoupled weight decay")
    warmup_steps: int = option(100, "linear warmup steps from 0 to the peak learning rate; constant after")
    grad_clip: float = option(5.0, "clip the gradient norm: recurrent nets' gradients can explode")
    max_steps: int | None = option(None, "stop after this many optimizer steps")
    max_minutes: float | None = option(None, "stop after this much training time (resumed runs count it all)")
    clock: str = option("wall", "what max_minutes and elapsed_s count: wall (all time) or cpu (this "
                        "process's CPU time in training, validation and checkpoint saves excluded: "
                        "equal budgets on a shared machine); fixed on --resume")  # fmt: skip
    max_epochs: int = option(1, "stop after this many passes over the training data")
    log_every: int = option(20, "steps between log lines")
    eval_every: int = option(500, "steps between validations")
    eval_documents: int = option(500, "validation documents for the token metrics (loss, F1, AUC)")
    eval_rouge_documents: int = option(200, "of those, documents summarized extractively for ROUGE")
    extract_sentences: int = option(3, "sentences in the validation extractive summary (as Lead-3)")
    best_metric: str = option("auc", "what picks best/: auc, f1, loss or rouge1/rouge2/rougeLsum")
    checkpoint_every: int = option(200, "steps between resumable checkpoints (also at each validation)")
    validation_files: list[str] = option([], "validation pairs; default: a {split} pattern, else hold out")
    validation_size: int = option(500, "pairs held out of the training data when there is no validation file")
    resume: bool = option(False, "continue from output_dir/checkpoint (refused if the model or data differ)")


SECTIONS: dict[str, type] = {
    "model": SelectorConfig,
    "data": SelectorDataConfig,
    "train": SelectorTrainConfig,
}
_SCORES = ("auc", "f1", "loss", "rouge1", "rouge2", "rougeLsum")


@dataclass
class SelectorOptions:
    model: SelectorConfig
    data: SelectorDataConfig
    train: SelectorTrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}


def add_arguments(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The ``train`` action; returns the actions, to which ``gatesum select compare`` (an
    experiment: experiments/compare_selectors.py, which the library does not import) adds itself."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train a content selector (config file + flags), resumable")
    train.add_argument("--config", type=Path, help="TOML file with [model] [data] [train] tables")
    keys = ", ".join(f.name for f in dataclasses.fields(SelectorConfig))
    train.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                       help=f"override a [model] setting (repeatable); keys: {keys}")  # fmt: skip
    for section in ("data", "train"):
        group = train.add_argument_group(f"[{section}]")
        hints = typing.get_type_hints(SECTIONS[section])
        for item in dataclasses.fields(SECTIONS[section]):
            flag = "--" + item.name.replace("_", "-")
            _add_flag(group, flag, section, item, hints[item.name], item.metadata["help"])
    return actions


def load_options(args: argparse.Namespace) -> SelectorOptions:
    """The config file (if any), then the flags that were given."""
    tables: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if args.config is not None:
        try:
            loaded = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GatesumError(f"{args.config}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise GatesumError(f"{args.config}: invalid TOML ({error})") from None
        if unknown := sorted(set(loaded) - set(SECTIONS)):
            raise GatesumError(f"{args.config}: unknown tables {unknown}; expected {sorted(SECTIONS)}")
        for name, values in loaded.items():
            tables[name].update(values)
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, key = dest.split(".", 1)
            tables[section][key] = value
    for assignment in args.model:
        key, separator, value = assignment.partition("=")
        if not separator:
            raise GatesumError(f"--model {assignment!r}: expected KEY=VALUE")
        tables["model"][key.strip()] = _parse_value(value)
    built = {}
    for name, cls in SECTIONS.items():
        if unknown := sorted(set(tables[name]) - {f.name for f in dataclasses.fields(cls)}):
            raise GatesumError(f"[{name}]: unknown settings {unknown}")
        try:
            built[name] = cls(**tables[name])
        except (TypeError, ValueError) as error:
            raise GatesumError(f"[{name}]: {error}") from None
    if built["train"].best_metric not in _SCORES:
        raise GatesumError(f"[train] best_metric must be one of {_SCORES}")
    if built["train"].clock not in CLOCKS:
        raise GatesumError(f"[train] clock must be one of {tuple(CLOCKS)}, not {built['train'].clock!r}")
    return SelectorOptions(**built)


def run(args: argparse.Namespace) -> int:
    SelectorTrainer(load_options(args)).train()
    return 0


# --- metrics --------------------------------------------------------------------------------------


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """ROC AUC by ranks (Mann–Whitney U): P(a random positive scores above a random negative),
    ties counting one half. NaN when one class is absent."""
    positives = labels.bool()
    P, N = int(positives.sum()), int((~positives).sum())
    if P == 0 or N == 0:
        return math.nan
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)  # sorted values
    counts = counts.double()
    average_ranks = counts.cumsum(0) - (counts - 1) / 2  # 1-based; a tie group shares its mean rank
    rank_sum = float(average_ranks[inverse][positives].sum())
    return (rank_sum - P * (P + 1) / 2) / (P * N)


def token_metrics(probabilities: Tensor, labels: Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Loss, precision, recall, F1 (at ``threshold``), AUC and the positive rate of pooled tokens."""
    labels = labels.float()
    predicted = probabilities >= threshold
    true_positives = float((predicted & labels.bool()).sum())
    precision = true_positives / max(1, int(predicted.sum()))
    recall = true_positives / max(1, int(labels.sum()))
    clamped = probabilities.clamp(1e-7, 1 - 1e-7)
    loss = -(labels * clamped.log() + (1 - labels) * (1 - clamped).log()).mean()
    return {
        "val_loss": float(loss),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "auc": roc_auc(probabilities, labels),
        "positive_rate": float(labels.mean()),
    }


def spans(sentence_lengths: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each sentence from its length in ids."""
    ends = [sum(sentence_lengths[: index + 1]) for index in range(len(sentence_lengths))]
    return [(end - length, end) for end, length in zip(ends, sentence_lengths)]


# --- training -------------------------------------------------------------------------------------


@dataclass
class SelectorBatch:
    source: Tensor  # (B, T) ids, PAD_ID after each length
    source_lengths: Tensor  # (B,)
    labels: Tensor  # (B, T) float 0/1, 0 at padding (never read there: the loss selects real tokens)

    def to(self, device: torch.device) -> SelectorBatch:
        return SelectorBatch(
            *(tensor.to(device) for tensor in (self.source, self.source_lengths, self.labels))
        )


def collate(rows: dict[str, list]) -> SelectorBatch:
    """Columns of ``label_pairs`` rows (``dataset[indices]``) -> a SelectorBatch."""
    sources = [torch.tensor(ids, dtype=torch.long) for ids in rows["source_ids"]]
    labels = [torch.tensor(values, dtype=torch.float32) for values in rows["labels"]]
    return SelectorBatch(
        source=pad_sequence(sources, batch_first=True, padding_value=PAD_ID),
        source_lengths=torch.tensor([len(ids) for ids in sources]),
        labels=pad_sequence(labels, batch_first=True, padding_value=0.0),
    )


class SelectorTrainer:
    def __init__(self, options: SelectorOptions) -> None:
        self.options = options
        self.config = options.train
        self.output_dir = Path(self.config.output_dir)
        self.bundle = Path(self.config.bundle) if self.config.bundle else BUNDLED_MODEL
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        wanted = self.config.device
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if wanted == "auto" else wanted
        )

    def _prepare(self) -> None:
        config, data = self.config, self.options.data
        if not config.resume and (self.output_dir / "checkpoint").exists():
            raise GatesumError(f"{self.output_dir}/checkpoint exists: pass --resume to continue that run, "
                               "or choose another --output-dir")  # fmt: skip
        self.output_dir.mkdir(parents=True, exist_ok=True)
        state = self._load_state() if config.resume else None
        self.tokenizer = Tokenizer.load(self.bundle / TOKENIZER_FILE)
        self.normalizer = NormalizerConfig(**read_card(self.bundle).get("normalizer", {}))
        pairs, validation = validation_pairs(load_pairs(data.pairs_config()), data.pairs_config(), config)
        settings = (self.tokenizer, self.normalizer, data.max_tokens, data.min_span)
        self.train_set = label_pairs(pairs, *settings)
        validation = validation.select(range(min(len(validation), config.eval_documents)))
        self.validation_set = label_pairs(validation, *settings)
        self.sampler = TokenBatchSampler(self.train_set["length"], data.batch_tokens, seed=config.seed)
        self.options.model.vocab_size = self.tokenizer.vocab_size
        torch.manual_seed(config.seed)
        self.model = ContentSelector(self.options.model).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)  # fmt: skip
        warmup = max(1, config.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup)
        )
        self.step, self.elapsed, self.best_score = 0, 0.0, None
        if state is not None:
            self._restore(state)
            checkpoint.trim_metrics(self.output_dir / "metrics.jsonl", self.step)
            print(f"resuming from step {self.step} ({self.elapsed / 60:.1f} min trained so far)", flush=True)
        else:
            random.seed(config.seed)
        sample = self.train_set.select(range(min(2000, len(self.train_set))))
        positive_rate = sum(map(sum, sample["labels"])) / max(1, sum(sample["length"]))
        print(f"{len(self.train_set)} training pairs ({sum(self.train_set['length'])} tokens, at most "
              f"{data.max_tokens} per document; {positive_rate:.1%} positive in the first 2,000), "
              f"{len(self.validation_set)} validation pairs; "
              f"{sum(p.numel() for p in self.model.parameters())} parameters", flush=True)  # fmt: skip

    def batches(self):
        """Batches from the saved data position on, epoch after epoch."""
        columns = self.train_set.select_columns(["source_ids", "labels"])
        while self.sampler.epoch < self.config.max_epochs:
            epoch = self.sampler.epoch
            all_batches = self.sampler.batches(epoch)
            for position in range(self.sampler.start, len(all_batches)):
                self.sampler.start = position + 1  # counted before training on it: a checkpoint resumes after
                yield collate(columns[all_batches[position]])
            self.sampler.set_epoch(epoch + 1)

    def train(self) -> None:
        self._prepare()
        config = self.config
        metrics = self.output_dir / "metrics.jsonl"
        clock = TrainingClock(config.clock, self.elapsed)
        self._log(metrics, {"event": "start", "step": self.step, "clock": config.clock,
                            "max_minutes": config.max_minutes, "max_steps": config.max_steps,
                            "max_epochs": config.max_epochs, "elapsed_s": clock.seconds()})  # fmt: skip
        window_start, window_tokens, window_loss, window_steps = time.monotonic(), 0, 0.0, 0
        batches = self.batches()
        self.model.train()
        stop_reason = "max_epochs"
        while True:
            if config.max_steps is not None and self.step >= config.max_steps:
                stop_reason = "max_steps"
                break
            if config.max_minutes is not None and clock.seconds() >= 60 * config.max_minutes:
                stop_reason = "max_minutes"
                break
            batch = next(batches, None)
            if batch is None:
                break
            window_loss += self._train_step(batch.to(self.device))
            self.step, window_steps = self.step + 1, window_steps + 1
            window_tokens += int(batch.source_lengths.sum())
            if self.step % config.log_every == 0:
                now = time.monotonic()
                record = {"step": self.step, "loss": window_loss / window_steps, "epoch": self.sampler.epoch,
                          "tokens_per_s": window_tokens / (now - window_start),
                          "s_per_1k_tokens": 1000 * (now - window_start) / window_tokens,
                          "lr": self.scheduler.get_last_lr()[0], "elapsed_s": clock.seconds()}  # fmt: skip
                print(f"step {self.step}: loss {record['loss']:.4f}, {record['tokens_per_s']:.0f} tokens/s "
                      f"({record['s_per_1k_tokens']:.3f} s per 1,000), {record['elapsed_s'] / 60:.1f} min",
                      flush=True)  # fmt: skip
                self._log(metrics, record)
                window_start, window_tokens, window_loss, window_steps = now, 0, 0.0, 0
            if self.step % config.eval_every == 0:
                self._validate(metrics, clock)
            elif self.step % config.checkpoint_every == 0:
                with clock.excluded():
                    self._save_checkpoint(clock.seconds())
        if self.step % config.eval_every != 0:
            self._validate(metrics, clock)
        self._log(metrics, {"event": "stop", "step": self.step, "reason": stop_reason,
                            "elapsed_s": self.elapsed})  # fmt: skip
        print(f"stopped at step {self.step} ({stop_reason}); best {config.best_metric}: "
              f"{self.best_score}; bundle with the selector in {self.output_dir}/best")  # fmt: skip

    def _train_step(self, batch: SelectorBatch) -> float:
        loss = self.model(batch.source, batch.source_lengths, batch.labels).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    # --- validation ------------------------------------------------------------------------------

    def validation_scores(self) -> dict[str, float]:
        """Token metrics on the validation documents, extractive ROUGE and Lead-3 on the first ones."""
        rows = self.validation_set
        probabilities = token_probabilities_batch(self.model, rows["source_ids"])
        record = token_metrics(torch.cat(probabilities), torch.tensor([x for r in rows["labels"] for x in r]))
        count = min(self.config.eval_rouge_documents, len(rows))
        extracted, leads, references = [], [], []
        for index in range(count):
            sentences = split_sentences(normalize(rows[index]["source"], self.normalizer))
            scores = sentence_scores(probabilities[index], spans(rows[index]["sentence_lengths"]))
            chosen = extractive_summary(sentences, scores, max_sentences=self.config.extract_sentences)
            extracted.append("\n".join(sentences[i] for i in chosen))
            leads.append("\n".join(sentences[: self.config.extract_sentences]))
            references.append(normalize(rows[index]["target"], self.normalizer))
        selected, lead = rouge(extracted, references), rouge(leads, references)
        record.update({name: selected[name] for name in ("rouge1", "rouge2", "rougeLsum")})
        record.update({f"lead_{name}": lead[name] for name in ("rouge1", "rouge2", "rougeLsum")})
        return record

    def _validate(self, metrics: Path, clock: TrainingClock) -> None:
        """Validation, best/ and a checkpoint: outside the training time on the cpu clock."""
        with clock.excluded():
            self._validate_now(metrics, clock.seconds())

    def _validate_now(self, metrics: Path, trained: float) -> None:
        self.model.eval()
        with torch.no_grad():
            record = {"step": self.step, **self.validation_scores(), "elapsed_s": trained}
        self.model.train()
        score = record[self.config.best_metric]
        lower_is_better = self.config.best_metric == "loss"
        better = self.best_score is None or (
            score < self.best_score if lower_is_better else score > self.best_score
        )
        record["best"] = better
        self._log(metrics, record)
        print(f"step {self.step}: validation loss {record['val_loss']:.4f}, token F1 {record['f1']:.3f} "
              f"(P {record['precision']:.3f} R {record['recall']:.3f}), AUC {record['auc']:.4f}; "
              f"extractive ROUGE-1/2/Lsum {record['rouge1']:.2f}/{record['rouge2']:.2f}/"
              f"{record['rougeLsum']:.2f}, Lead-{self.config.extract_sentences} {record['lead_rouge1']:.2f}/"
              f"{record['lead_rouge2']:.2f}/{record['lead_rougeLsum']:.2f}" + (" (best)" if better else ""),
              flush=True)  # fmt: skip
        self.elapsed = trained
        if better:
            self.best_score = score
            save_with_selector(self.bundle, self.output_dir / "best", self.model, self._facts(record))
        self._save_checkpoint(trained)

    def _facts(self, record: dict | None = None) -> dict[str, Any]:
        return {
            "training": {"step": self.step, "elapsed_minutes": round(self.elapsed / 60, 2),
                         "training_pairs": len(self.train_set), "options": self.options.to_dict()},
            "metrics": {"validation": record} if record else {},
        }  # fmt: skip

    # --- checkpoints -----------------------------------------------------------------------------

    def _run_settings(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues: the architecture, the ids it
        reads, everything that decides the labels and the order of the batches, and the clock
        (the elapsed time saved so far was counted on it)."""
        data = {
            key: value for key, value in dataclasses.asdict(self.options.data).items() if key != "cache_dir"
        }
        return {"model": self.model.config.to_dict(), "tokenizer_fingerprint": self.tokenizer.fingerprint,
                "data": data, "seed": self.config.seed, "clock": self.config.clock}  # fmt: skip

    def _save_checkpoint(self, trained: float) -> None:
        """checkpoint/ as one directory swapped in whole (``replace_directory``): weights, settings
        and the trainer state always belong to the same step, ``trained`` seconds in."""
        self.elapsed = trained
        state = {
            "step": self.step, "elapsed": self.elapsed, "best_score": self.best_score,
            "sampler": self.sampler.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": _python_rng_state()},
        }  # fmt: skip
        target = self.output_dir / "checkpoint"
        built = Path(tempfile.mkdtemp(dir=self.output_dir, prefix=".checkpoint.tmp-"))
        try:
            weights = {name: p.detach().cpu().contiguous() for name, p in self.model.named_parameters()}
            save_file(weights, str(built / "selector.safetensors"))
            (built / SELECTOR_STATE).write_text(json.dumps(self._run_settings(), indent=2) + "\n")
            torch.save(state, built / checkpoint.STATE_FILE)
            replace_directory(built, target)
        except BaseException:
            shutil.rmtree(built, ignore_errors=True)
            raise

    def _load_state(self) -> dict[str, Any]:
        directory = self.output_dir / "checkpoint"
        recover_directory(directory)
        path = directory / checkpoint.STATE_FILE
        if not path.exists():
            raise GatesumError(f"{path}: no checkpoint to resume from (train without --resume first)")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)  # tensors and containers only
        except Exception as error:  # torch raises several types for a truncated or foreign file
            raise GatesumError(f"{path}: unreadable training state ({type(error).__name__})") from None

    def _restore(self, state: dict[str, Any]) -> None:
        directory = self.output_dir / "checkpoint"
        saved = json.loads((directory / SELECTOR_STATE).read_text(encoding="utf-8"))
        saved.setdefault("clock", "wall")  # checkpoints from before the clock option counted wall time
        current = self._run_settings()
        if differ := sorted(key for key in current if saved.get(key) != current[key]):
            raise GatesumError(
                f"--resume: the {', '.join(differ)} settings differ from the checkpoint's "
                f"({directory / SELECTOR_STATE}); use the same ones, or a new --output-dir"
            )
        load_weights(self.model, directory / "selector.safetensors")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step, self.elapsed, self.best_score = state["step"], state["elapsed"], state["best_score"]
        torch.set_rng_state(state["rng"]["torch"])
        version, internal, gauss = state["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))

    def _log(self, path: Path, record: dict) -> None:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")


def load_run_selector(run: Path, weights: str, tokenizer: Tokenizer) -> ContentSelector:
    """The content selector of a ``gatesum select train`` output directory, for ``tokenizer``'s
    ids (checked by fingerprint), in eval mode: with ``weights`` "checkpoint" the weights at the
    end of its budget, with "best" those of its best validation (the bundle in best/).
    GatesumError, in one line, for a directory that has no such selector."""
    directory = Path(run) / weights
    if weights not in RUN_WEIGHTS:
        raise GatesumError(f"weights must be one of {RUN_WEIGHTS}, not {weights!r}")
    if not directory.is_dir():
        raise GatesumError(f"{run}: no {weights}/ (is it a gatesum select train output directory?)")
    recover_directory(directory)
    if weights == "best":
        card = read_card(directory)
        if "selector" not in card:
            raise GatesumError(f"{directory}: a bundle without a content selector")
        selector = load_selector(directory, card, tokenizer)
    else:
        path = directory / SELECTOR_STATE
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            config = SelectorConfig.from_dict(saved["model"])
        except FileNotFoundError:
            raise GatesumError(f"{path}: missing (is {run} a gatesum select train run?)") from None
        except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
            raise GatesumError(f"{path}: unreadable selector settings ({error})") from None
        if (trained_with := saved.get("tokenizer_fingerprint")) != tokenizer.fingerprint:
            raise GatesumError(f"{path}: the selector was trained with another tokenizer "
                               f"({trained_with}, this one is {tokenizer.fingerprint})")  # fmt: skip
        selector = ContentSelector(config)
        load_weights(selector, directory / "selector.safetensors")
    return selector.eval()


def _python_rng_state() -> tuple:
    version, internal, gauss = random.getstate()
    return version, list(internal), gauss
