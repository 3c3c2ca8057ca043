"""Bodies of ``POST /v1/memory`` and ``GET /v1/memory/examples``: every field bounded, so that a bad
request is a readable 422 (the text takes /v1/summarize's limits and cleaning)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gatesum.model.recall import CELL_NAMES
from gatesum.service.schemas import EXAMPLE_TEXT, Text

MAX_POINTS = 2000  # per curve; a longer text is sampled (see MemoryResponse.positions)
Cell = Literal[CELL_NAMES]  # type: ignore[valid-type]


class MemoryRequest(BaseModel):
    text: Text
    key: int | None = Field(
        None,
        strict=True,
        ge=0,
        description="which key symbol to plant (0 … key_symbols − 1; the shipped models know 8); "
        "left out, a key derived from the text, so that the same text always gets the same key",
    )
    cells: list[Cell] | None = Field(
        None,
        min_length=1,
        max_length=len(CELL_NAMES),
        description="which cells' recall models to run, each once; left out, every loaded one",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": "A text to read with a key planted before it, by each cell's recall model.",
            "examples": [{"text": EXAMPLE_TEXT, "key": 3, "cells": ["rnn", "lstm"]}],
        },
    )

    @field_validator("cells")
    @classmethod
    def _each_once(cls, cells: list[str] | None) -> list[str] | None:
        if cells is not None and len(set(cells)) != len(cells):
            raise ValueError("names a cell twice")
        return cells


class CellRecall(BaseModel):
    name: str = Field(description="the cell: rnn, gru, lstm or lstm-peephole")
    recall: list[float] = Field(
        description="at each of `positions`: the probability of the right key had the document "
        "ended after that token (chance is 1 / key_symbols)"
    )
    trace: list[float] = Field(
        description="at each of `positions`: the share of what the cell wrote at that token left at "
        "the end of the document (LSTM ∏f, GRU ∏(1 − z), RNN ‖∂h_T/∂h_t‖/√H)"
    )
    key_trace: float = Field(description="the same share for the key itself")
    answer: int = Field(description="the key the readout names at the end of the document")
    correct: bool = Field(description="the answer is the key planted")
    final_recall: float = Field(description="the probability of the right key at the end")
    held_to: int = Field(
        description="tokens read before the readout first names a wrong key (= tokens when it never does)"
    )


class MemoryResponse(BaseModel):
    tokens: int = Field(description="the text's length in tokens (the bundled summarizer's tokenizer)")
    key: int = Field(description="the key symbol planted before the text")
    key_symbols: int = Field(description="how many keys the models tell apart")
    chance: float = Field(description="the probability of naming the key by guessing")
    positions: list[int] = Field(
        description=f"the token indices (0-based) the curves are given at: every token up to "
        f"{MAX_POINTS:,} tokens; past that {MAX_POINTS:,} at most, dense at the start (log-spaced) "
        "and evenly spread, the first and the last token always included"
    )
    pieces: list[str] = Field(description="the token (sentencepiece piece) at each position")
    cells: list[CellRecall]
    elapsed_ms: float = Field(description="time in the service, queueing included")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tokens": 3,
                    "key": 3,
                    "key_symbols": 8,
                    "chance": 0.125,
                    "positions": [0, 1, 2],
                    "pieces": ["▁the", "▁council", "▁voted"],
                    "cells": [
                        {
                            "name": "lstm",
                            "recall": [0.99, 0.98, 0.98],
                            "trace": [0.91, 0.95, 1.0],
                            "key_trace": 0.87,
                            "answer": 3,
                            "correct": True,
                            "final_recall": 0.98,
                            "held_to": 3,
                        }
                    ],
                    "elapsed_ms": 12.5,
                }
            ]
        }
    )


class MemoryExample(BaseModel):
    id: str
    title: str = Field(description="what the text is and where it comes from")
    text: str


class MemoryExamples(BaseModel):
    examples: list[MemoryExample] = Field(
        description="texts read at startup from the data folder (GATESUM_DATA); empty where it is absent"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"examples": [{"id": "news", "title": "A long news article", "text": EXAMPLE_TEXT}]}]
        }
    )
