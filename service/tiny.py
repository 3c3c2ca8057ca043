"""A tiny, untrained model bundle in seconds: for tests, the benchmark and the container check
when no trained model is at hand (its summaries are gibberish, its shapes are real).

    python -m gatesum.service.tiny DIR
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import torch

from gatesum.model.bundle import save_bundle
from gatesum.model.config import ModelConfig
from gatesum.model.summarizer import Summarizer
from gatesum.model.text import NormalizerConfig
from gatesum.model.tokenizer import Tokenizer

TOPICS = (
    "the council voted to build a new bridge across river city mayor said construction will begin "
    "next spring and take two years police reported storm hit coast on tuesday people were evacuated "
    "from their homes minister announced plan for schools hospitals"
)
WORDS = TOPICS.split()


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + " ." for _ in range(count)]


def build_tiny_bundle(directory: Path, source_max_tokens: int = 64, seed: int = 0) -> Path:
    """Write a tiny bundle (vocabulary 320: 256 byte pieces + words, hidden sizes 16/32) to ``directory``."""
    directory = Path(directory)
    torch.manual_seed(seed)
    card = {"name": "tiny-untrained", "data": {"source_max_tokens": source_max_tokens}, "metrics": {}}
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = Tokenizer.train(sentences(400, seed), Path(scratch) / "tokenizer.model", 320)
        config = ModelConfig(vocab_size=tokenizer.vocab_size, embedding_size=16, encoder_hidden_size=16,
                             decoder_hidden_size=32, attention_size=16)  # fmt: skip
        save_bundle(directory, Summarizer(config).eval(), tokenizer, NormalizerConfig(), card)
    return directory


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m gatesum.service.tiny DIR")
    print(build_tiny_bundle(Path(sys.argv[1])))
