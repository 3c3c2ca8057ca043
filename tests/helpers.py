"""Helpers shared by the test folders (fixtures live in conftest.py): generated documents and
training pairs, and the one tiny-bundle builder."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from gatesum.model.bundle import save_bundle
from gatesum.model.config import ModelConfig
from gatesum.model.summarizer import Summarizer
from gatesum.model.text import NormalizerConfig
from gatesum.model.tokenizer import Tokenizer

WORDS = ["police", "said", "president", "government", "people", "year", "new", "city", "court",
         "team", "won", "match", "storm", "hit", "coast", "report", "found", "school"]  # fmt: skip
PAIR_WORDS = (
    "police president government city council minister court players team fans storm river "
    "school doctors hospital company market prices election voters"
).split()
SOURCE_MAX_TOKENS = 128  # short, so the tiny model decodes fast; some test documents are longer


def make_sentence(rng: random.Random) -> str:
    """Nine words and a period: ten words once normalized ("... school .")."""
    return " ".join(rng.choice(WORDS) for _ in range(9)).capitalize() + "."


def make_rows(sentence_counts: list[int], seed: int = 0) -> list[dict]:
    """One document per count, of that many sentences; its reference is its first three sentences."""
    rng = random.Random(seed)
    rows = []
    for index, count in enumerate(sentence_counts):
        sentences = [make_sentence(rng) for _ in range(count)]
        rows.append(
            {"id": f"doc-{index}", "article": " ".join(sentences), "highlights": "\n".join(sentences[:3])}
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_pairs(path: Path, count: int, seed: int = 0) -> Path:
    """Articles of random words whose summary is the article's first sentence."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as file:
        for index in range(count):
            sentences = [
                " ".join(rng.choice(PAIR_WORDS) for _ in range(rng.randint(4, 8))) + " ." for _ in range(4)
            ]
            record = {"id": str(index), "article": " ".join(sentences), "highlights": sentences[0]}
            file.write(json.dumps(record) + "\n")
    return path


def build_tiny_bundle(directory: Path, source_max_tokens: int = SOURCE_MAX_TOKENS) -> Path:
    """A bundle with a 300-piece tokenizer and a randomly initialized small summarizer (hidden
    sizes 16/32): real shapes, gibberish summaries, built in a second or two."""
    rng = random.Random(0)
    texts = [make_sentence(rng).lower() for _ in range(300)]
    tokenizer = Tokenizer.train(
        texts, directory.parent / f"{directory.name}-tokenizer" / "tokenizer.model", 300
    )
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, embedding_size=16, encoder_hidden_size=16,
                         decoder_hidden_size=32, attention_size=16)  # fmt: skip
    card = {"name": "tiny-untrained", "data": {"source_max_tokens": source_max_tokens}, "metrics": {}}
    save_bundle(directory, Summarizer(config).eval(), tokenizer, NormalizerConfig(), card=card)
    return directory


def build_tiny_selector_bundle(directory: Path, source_max_tokens: int = SOURCE_MAX_TOKENS) -> Path:
    """The tiny bundle with a randomly initialized tiny content selector (a BiLSTM of 8 per
    direction): every selector code path runs, the scores mean nothing."""
    from gatesum.model.bundle import save_with_selector
    from gatesum.model.selector import ContentSelector, SelectorConfig

    plain = build_tiny_bundle(directory.parent / f"{directory.name}-plain", source_max_tokens)
    vocab_size = Tokenizer.load(plain / "tokenizer.model").vocab_size
    torch.manual_seed(1)
    config = SelectorConfig(vocab_size=vocab_size, embedding_size=8, hidden_size=8, num_layers=1)
    save_with_selector(plain, directory, ContentSelector(config).eval(), {"metrics": {}})
    return directory
