"""Helpers of the memory tests: tiny recall models trained on the bundled tokenizer's pieces (the
shipped ones may be absent), and a data folder with example files of generated text."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path

import torch

from gatesum.experiments.recall import Filler
from gatesum.experiments.ship import ShipConfig, train_shipped
from gatesum.model.bundle import BUNDLED_MODEL, TOKENIZER_FILE
from gatesum.model.recall import CELL_NAMES, save_recall_model
from gatesum.model.text import normalize
from gatesum.model.tokenizer import Tokenizer

WORDS = (
    "the council voted on tuesday to build a new bridge across river construction will begin next "
    "spring and take two years mayor said police reported storm hit coast thousands of homes lost "
    "power officials asked people stay indoors while crews cleared roads company market prices rose"
).split()
PIECES = 32  # text pieces with their own embedding row in the tiny models


def generated_text(words: int, seed: int = 0) -> str:
    """Sentences of twelve words from WORDS, capitalized, with a period."""
    rng = random.Random(seed)
    sentences = [
        " ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(words // 12)
    ]
    return " ".join(sentences)


def build_recall_models(directory: Path, steps: int = 40) -> Path:
    """One tiny recall model per cell (H = 8), trained for ``steps`` on generated text; saved
    as the shipped ones are (NAME.json + NAME.safetensors, the bundled tokenizer's fingerprint)."""
    tokenizer = Tokenizer.load(BUNDLED_MODEL / TOKENIZER_FILE)
    ids = torch.tensor(tokenizer.encode(normalize(generated_text(6000))))
    pieces = torch.tensor([piece for piece, _ in Counter(ids.tolist()).most_common(PIECES)])
    position = torch.full((tokenizer.vocab_size,), PIECES, dtype=torch.int64)  # rare
    position[pieces] = torch.arange(PIECES)
    filler = Filler("generated text", PIECES + 1, position[ids], pieces)
    config = ShipConfig(filler_vocab=PIECES, embedding_size=8, hidden_size=8, batch_size=16,
                        train_length=40, max_steps=steps)  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    for cell in CELL_NAMES:
        model, record = train_shipped(config, filler, cell)
        save_recall_model(directory, cell, model, {"training": record}, tokenizer)
    return directory


def write_examples(data: Path) -> Path:
    """A data folder laid out as ../shared/data, with generated text in place of the datasets."""
    (data / "cnndm").mkdir(parents=True, exist_ok=True)
    (data / "long").mkdir(parents=True, exist_ok=True)
    news = [{"id": str(i), "article": generated_text(200 + 100 * i, i), "highlights": "x"} for i in range(3)]
    meeting = {"id": "m", "split": "test", "article": "\n".join(generated_text(60, i) for i in range(300)),
               "summary": "x"}  # fmt: skip
    for path, rows in (
        (data / "cnndm" / "test.jsonl.gz", news),
        (data / "long" / "qmsum.jsonl.gz", [meeting]),
    ):
        with gzip.open(path, "wt", encoding="utf-8") as file:
            file.writelines(json.dumps(row) + "\n" for row in rows)
    return data


def recall_models_once(factory) -> Path:
    """The tiny recall models, trained once per test session (``factory``: tmp_path_factory)."""
    directory = factory.getbasetemp() / "recall-models"
    if not (directory / "lstm-peephole.json").exists():
        build_recall_models(directory)
    return directory
