"""Fixtures shared by every test folder: a tiny (untrained) model bundle, documents, a CLI runner."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from gatesum import cli
from gatesum.model.bundle import save_bundle
from gatesum.model.config import ModelConfig
from gatesum.model.summarizer import Summarizer
from gatesum.model.text import NormalizerConfig
from gatesum.model.tokenizer import Tokenizer

WORDS = ["police", "said", "president", "government", "people", "year", "new", "city", "court",
         "team", "won", "match", "storm", "hit", "coast", "report", "found", "school"]  # fmt: skip
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


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with a 300-piece tokenizer and a randomly initialized small summarizer."""
    directory = tmp_path_factory.mktemp("tiny-bundle")
    rng = random.Random(0)
    texts = [make_sentence(rng).lower() for _ in range(300)]
    tokenizer = Tokenizer.train(texts, directory / "tokenizer" / "tokenizer.model", vocab_size=300)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, embedding_size=16, encoder_hidden_size=16,
                         decoder_hidden_size=32, attention_size=16)  # fmt: skip
    card = {"name": "tiny", "data": {"source_max_tokens": SOURCE_MAX_TOKENS}}
    save_bundle(directory / "tiny", Summarizer(config), tokenizer, NormalizerConfig(), card=card)
    return directory / "tiny"


class Result(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def gatesum(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``gatesum ARGS...`` in-process: (exit code, stdout, stderr)."""

    def run(*args: str | Path) -> Result:
        monkeypatch.setattr(sys, "argv", ["gatesum"])  # cli.main rewrites sys.argv; restored after the test
        capsys.readouterr()
        code = cli.main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
