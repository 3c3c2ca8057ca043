"""Request and response bodies. Every field is bounded here, so a bad request is a readable 422.

The text and batch limits come from ``Settings`` (``GATESUM_MAX_TEXT_CHARS``,
``GATESUM_MAX_BATCH_TEXTS``) read once at import, so that they also appear in the OpenAPI schema.
"""

from __future__ import annotations

import sys
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from gatesum.model.reading import DEFAULT_MODE, MODES
from gatesum.model.search import GENERATION_SETTINGS
from gatesum.service.settings import get_settings

_limits = get_settings()
EXAMPLE_TEXT = (
    "The city council voted on Tuesday to build a new bridge across the river. "
    "Construction will begin next spring and is expected to take two years. "
    "The mayor said the bridge would cut commuting times by half."
)


# Control characters (NUL, ESC, ...; tab and line breaks excepted) become spaces and invisible
# format characters (zero-width spaces and joiners, BOM, soft hyphen, bidi marks) are removed,
# before the model and before the emptiness check: they carry no words, and a NUL must not come
# back inside a summary (the decoder copies source tokens).
CONTROL_CHARACTERS = str.maketrans(
    {
        code: (" " if unicodedata.category(chr(code)) == "Cc" else None)
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in ("Cc", "Cf") and chr(code) not in "\t\n\r"
    }
)


def _readable_pattern() -> str:
    """A JSON Schema pattern that a text matches when it holds a character that is neither
    whitespace nor removed above: what ``clean_text`` requires, stated in the OpenAPI schema.
    BMP characters as ``\\uXXXX`` (ECMA and Python regexes both read them), others literally."""
    codes = sorted(CONTROL_CHARACTERS)
    ranges, start = [], codes[0]
    for previous, code in zip(codes, [*codes[1:], None]):
        if code != previous + 1:
            ranges.append((start, previous))
            start = code

    def char(code: int) -> str:
        return f"\\u{code:04x}" if code < 0x10000 else chr(code)

    return "[^\\s" + "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges) + "]"


READABLE = _readable_pattern()


def clean_text(text: str) -> str:
    """``text`` without control and format characters; 422 when nothing readable is left."""
    if not text.strip():
        raise ValueError("is empty or only whitespace")  # errors.py prefixes the field
    text = text.translate(CONTROL_CHARACTERS)
    if not text.strip():
        raise ValueError("holds only control or invisible characters")
    return text


Text = Annotated[
    str,
    Field(
        min_length=1,
        max_length=_limits.max_text_chars,
        description="raw text; control and invisible format characters are removed, and something "
        "readable must be left",
        json_schema_extra={"pattern": READABLE},
    ),
    AfterValidator(clean_text),
]


def _whole_number(value: Any) -> Any:
    """4.0 -> 4: JSON Schema's "integer" is any number without a fraction, so the schema allows
    it; ``true``, ``"4"`` and 4.5 still reach the strict check and are refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _generation_fields() -> dict[str, Any]:
    """One optional request field per ``GenerationConfig`` setting, with its bounds and help.
    Strict: ``true`` or ``"4"`` is not a beam size."""
    fields = {}
    for setting in GENERATION_SETTINGS:
        bounded = Annotated[setting.kind, Field(strict=True, ge=setting.minimum, le=setting.maximum)]
        if setting.kind is int:  # the bounds first, so that OpenAPI shows them as minimum/maximum
            bounded = Annotated[bounded, BeforeValidator(_whole_number)]
        fields[setting.name] = (bounded | None, Field(None, description=setting.help))
    return fields


# what every request says of its search settings (OpenAPI: each request's description)
GENERATION_RULES = (
    "Search settings are optional: one left out takes the service's default. "
    "A min_length above max_length is lowered to max_length (as GenerationConfig does with the "
    "source's length), so no pair of lengths is refused."
)
# Why lowered, not refused: JSON Schema cannot compare two fields, so a refusal would be a rule
# the OpenAPI schema does not state (schemathesis's positive_data_acceptance check finds it).


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# the search settings of a request: GenerationConfig's fields, each optional
GenerationOptions = create_model(
    "GenerationOptions", __base__=_Strict, __doc__=GENERATION_RULES, **_generation_fields()
)


Mode = Literal[MODES]
MODE_FIELD = Field(
    DEFAULT_MODE,
    description="abstractive: the model writes the summary (a long text is first cut to its best "
    "sentences by the content selector, when the model has one); extractive: the selector's best "
    "sentences themselves, up to extract_sentences (needs a model with a selector, else 422)",
)
ReadKind = Literal["whole", "selected", "truncated"]


class SummarizeRequest(GenerationOptions):
    text: Text
    mode: Mode = MODE_FIELD

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": f"One text to summarize. {GENERATION_RULES}",
            "examples": [{"text": EXAMPLE_TEXT, "beam_size": 4}],
        },
    )


class BatchRequest(GenerationOptions):
    texts: list[Text] = Field(min_length=1, max_length=_limits.max_batch_texts)
    mode: Mode = MODE_FIELD

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": f"Texts summarized with the same settings. {GENERATION_RULES}",
            "examples": [{"texts": [EXAMPLE_TEXT, "Another document to summarize."]}],
        },
    )


class SentenceUsed(BaseModel):
    index: int = Field(description="the sentence's position among the text's sentences")
    start: int = Field(description="where it starts in the text: a character (code point) offset")
    end: int = Field(description="where it ends (exclusive)")
    score: float | None = Field(description="the content selector's score, when it read the text")


class SummaryResponse(BaseModel):
    summary: str
    input_tokens: int = Field(description="source length in tokens, the whole text")
    truncated: bool = Field(description='read is "truncated": the model read only the first tokens')
    read: ReadKind = Field(
        description="how the text was read: whole; selected (longer than the model reads: the "
        "content selector's best sentences, in order); truncated (longer, and no selector)"
    )
    mode: Mode = Field(description="abstractive or extractive")
    sentences: list[SentenceUsed] = Field(
        description="the sentences the summary was made from (extractive: the summary's), in order"
    )
    sentence_count: int = Field(description="sentences in the text")
    elapsed_ms: float = Field(description="time in the service, queueing included")
    model: str = Field(description="the model bundle's name")

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "summary": "The city council voted to build a new bridge.",
                    "input_tokens": 41,
                    "truncated": False,
                    "read": "whole",
                    "mode": "abstractive",
                    "sentences": [
                        {"index": 0, "start": 0, "end": 73, "score": None},
                        {"index": 1, "start": 74, "end": 144, "score": None},
                        {"index": 2, "start": 145, "end": 205, "score": None},
                    ],
                    "sentence_count": 3,
                    "elapsed_ms": 85.2,
                    "model": "cnndm-lstm-small",
                }
            ]
        },
    )


class BatchResponse(BaseModel):
    results: list[SummaryResponse] = Field(description="one per text, in request order")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"results": SummaryResponse.model_config["json_schema_extra"]["examples"]}]
        }
    )


class ExplainResponse(SummaryResponse):
    source_tokens: list[str] = Field(description="the tokens the model read (after truncation)")
    summary_tokens: list[str] = Field(description="the generated tokens, end-of-summary included")
    attention: list[list[float]] = Field(description="(summary tokens, source tokens), rows sum to 1")
    memory: list[float] | None = Field(
        description="per source token: the share of what the encoder wrote there left at the end"
    )
    selection: list[float] | None = Field(
        description="per source token: the content selector's probability that a summary copies "
        "it (read over the whole text); null when the model has no selector"
    )

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "summary": "Council votes for bridge.",
                    "input_tokens": 4,
                    "truncated": False,
                    "read": "whole",
                    "mode": "abstractive",
                    "sentences": [{"index": 0, "start": 0, "end": 25, "score": 0.61}],
                    "sentence_count": 1,
                    "elapsed_ms": 40.5,
                    "model": "cnndm-lstm-small",
                    "source_tokens": ["▁the", "▁council", "▁voted", "▁yes"],
                    "summary_tokens": ["▁council", "▁votes", "</s>"],
                    "attention": [[0.1, 0.8, 0.05, 0.05], [0.0, 0.1, 0.8, 0.1], [0.2, 0.2, 0.2, 0.4]],
                    "memory": [0.12, 0.35, 0.71, 1.0],
                    "selection": [0.2, 0.9, 0.8, 0.4],
                }
            ]
        },
    )


class ErrorResponse(BaseModel):
    error: str = Field(description="what went wrong, in plain sentences on one line")
    detail: list[dict[str, Any]] | None = Field(None, description="each invalid field, for a 422")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "beam_size must be at most 16.",
                    "detail": [
                        {
                            "loc": ["body", "beam_size"],
                            "msg": "Input should be less than or equal to 16",
                            "type": "less_than_equal",
                        }
                    ],
                }
            ]
        }
    )


class Health(BaseModel):
    status: str = Field(description="ok (alive), ready, or unavailable")
    model: str | None = None
    reason: str | None = Field(None, description='why the service is not ready: "loading", or the cause')

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": [{"status": "ready", "model": "cnndm-lstm-small"}]},
    )


class ModelCard(BaseModel):
    name: str
    card: dict[str, Any] = Field(
        description="from the bundle's config.json: the architecture and sizes (model), tokenizer and "
        "normalizer settings, the training data's columns and limits, and the metrics; no file "
        "paths and no training options"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "cnndm-lstm-small",
                    "card": {
                        "model": {"encoder_cell": "lstm", "encoder_hidden_size": 256},
                        "data": {"source_max_tokens": 400},
                        "metrics": {"rouge1": 0.36},
                    },
                }
            ]
        }
    )
