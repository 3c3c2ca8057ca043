"""From raw text to a readable summary with a loaded bundle: the one inference path.

    text ─► read (model/reading.py: normalize, sentences, tokenize; whole, selected by the
            content selector, or truncated to the window) ─► Summarizer.generate
         ─► decode ids ─► detokenize ─► summary
    mode "extractive": text ─► read ─► the selector's best sentences ─► detokenize ─► summary

A summary is never longer than its source: each batch is decoded with its sources' token
counts as per-row caps (``GenerationConfig.for_sources``), so a five-token input gets at most
five summary tokens whatever ``max_length`` and ``min_length`` ask.

The command line (``gatesum summarize``, ``gatesum eval``) and the REST service all call
``summarize_texts`` (the service through ``read_documents`` and ``build_summary``, around its
running batch), so a summary is the same whichever door it came through; training's
validation, which holds token ids already, calls ``summarize_ids``, the same search below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gatesum.model.bundle import (
    BUNDLED_MODEL,
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    Bundle,
    load_bundle,
)
from gatesum.model.devices import resolve_device
from gatesum.model.errors import GatesumError
from gatesum.model.memory import gate_retention, memory_trace
from gatesum.model.reading import (
    DEFAULT_MODE,
    Reading,
    SentenceUse,
    copy_sources,
    read_documents,
    source_max_tokens,
)
from gatesum.model.search import GenerationConfig
from gatesum.model.selector import token_probabilities
from gatesum.model.summarizer import Generation, Summarizer
from gatesum.model.text import detokenize, normalize, source_casing


@dataclass
class Summary:
    summary: str  # readable: detokenized, sentence-initial capitals
    normalized: str  # in the model's own text style (what ROUGE compares with normalized references)
    input_tokens: int  # source length in tokens, the whole document
    truncated: bool  # read == "truncated": the model read only the first window of tokens
    token_ids: list[int]  # the summary's ids (extractive: empty)
    read: str = "whole"  # how the source was read: "whole" | "selected" | "truncated"
    mode: str = DEFAULT_MODE  # "abstractive" | "extractive"
    sentences: list[SentenceUse] = field(default_factory=list)  # the sentences used, document order
    sentence_count: int = 0  # sentences in the document
    attention: Tensor | None = None  # (summary tokens + EOS, source tokens), on request
    source_ids: list[int] | None = None  # the ids the model read, on request
    encoder_gates: dict[str, Tensor] | None = None  # top layer, forward direction: name -> (S, H)
    memory_trace: list[float] | None = None  # per source token: how much survives to the end
    selection: list[float] | None = None  # per source token read: the selector's P(copied), on request


def encode_sources(bundle: Bundle, texts: list[str]) -> tuple[list[list[int]], list[int]]:
    """Normalized, tokenized and truncated ids per text, and each text's length before truncation."""
    ids = bundle.tokenizer.encode_batch([normalize(text, bundle.normalizer) for text in texts])
    limit = source_max_tokens(bundle)
    return [row[:limit] or [bundle.model.config.unk_id] for row in ids], [len(row) for row in ids]


@torch.no_grad()
def summarize_texts(
    bundle: Bundle,
    texts: list[str],
    generation: GenerationConfig | None = None,
    batch_size: int = 16,
    explain: bool = False,
    mode: str = DEFAULT_MODE,
) -> list[Summary]:
    """Summaries of ``texts`` in order, each read whole, selected or truncated (``read_documents``).
    Sources are sorted by length into batches so that a batch pads little; ``explain`` adds
    attention, source ids, encoder gates and the selector's scores. GatesumError for a mode or
    copy mask the bundle cannot serve (no selector)."""
    generation = generation or GenerationConfig()
    readings = read_documents(bundle, texts, mode, generation.copy_mask_threshold,
                              generation.extract_sentences, batch_size, generation.lead_share)  # fmt: skip
    if mode == "extractive":
        return [extractive(bundle, text, reading, explain) for text, reading in zip(texts, readings)]
    sources = [reading.source_ids for reading in readings]
    masked = copy_sources(readings, generation.copy_mask_threshold, bundle.model.config.pad_id,
                          bundle.tokenizer.word_starts)  # fmt: skip
    results: list[Summary | None] = [None] * len(texts)
    for chunk in batches_by_length(sources, batch_size):
        rows = [sources[i] for i in chunk]
        copy_rows = [masked[i] for i in chunk] if masked else None
        output = generate_batch(bundle.model, rows, generation, explain, copy_rows)
        for position, index in enumerate(chunk):
            attention = output.attention[position] if explain and output.attention is not None else None
            gates = top_forward_gates(output.encoder_gates, bundle, position, len(rows[position]))
            results[index] = build_summary(bundle, texts[index], readings[index], output.tokens[position],
                                           explain, attention, gates)  # fmt: skip
    return results


def build_summary(
    bundle: Bundle,
    text: str,
    reading: Reading,
    token_ids: list[int],
    explain: bool = False,
    attention: Tensor | None = None,
    gates: dict[str, Tensor] | None = None,
) -> Summary:
    """The ``Summary`` of one decoded text: readable, with names cased as in ``text``, saying how
    the source was read; with ``explain``, its attention (t + 1, S) cut to the source, the
    source ids, the top forward encoder ``gates`` (name -> (S, H)), the memory trace and the
    selector's scores of the tokens read."""
    normalized = bundle.tokenizer.decode(token_ids)
    readable = detokenize(normalized, source_casing(text))  # names cased as in the source
    source_ids = reading.source_ids
    summary = Summary(readable, normalized, reading.input_tokens, reading.read == "truncated", token_ids,
                      reading.read, "abstractive", reading.sentences, reading.sentence_count)  # fmt: skip
    if explain:
        if attention is not None:
            summary.attention = attention[:, : len(source_ids)]
        summary.source_ids = source_ids
        summary.encoder_gates = gates
        summary.memory_trace = source_memory_trace(bundle, source_ids, gates)
        summary.selection = selection_scores(bundle, reading)
    return summary


def extractive(bundle: Bundle, text: str, reading: Reading, explain: bool = False) -> Summary:
    """The ``Summary`` of an extractive reading: its sentences, readable; normalized one per line
    (what ROUGE-Lsum splits on). With ``explain``, the document's ids and their selector scores."""
    sentences = reading.extract or []
    readable = detokenize(" ".join(sentences), source_casing(text))
    summary = Summary(readable, "\n".join(sentences), reading.input_tokens, False, [], reading.read,
                      "extractive", reading.sentences, reading.sentence_count)  # fmt: skip
    if explain:
        summary.source_ids = reading.source_ids
        summary.selection = selection_scores(bundle, reading)
    return summary


def selection_scores(bundle: Bundle, reading: Reading) -> list[float] | None:
    """The selector's P(copied) of each token the reading's source holds; None without a selector.
    Scored over the whole document when the reading has them, else over the tokens read alone."""
    if bundle.selector is None:
        return None
    probabilities = reading.source_probabilities
    if probabilities is None:
        probabilities = token_probabilities(bundle.selector, reading.source_ids)
    return probabilities.tolist()


@torch.no_grad()
def summarize_ids(
    model: Summarizer, sources: Sequence[Sequence[int]], generation: GenerationConfig, batch_size: int = 16
) -> list[list[int]]:
    """Summary token ids of sources already tokenized and truncated, in order: the search of
    ``summarize_texts`` for callers that hold ids (training's validation)."""
    results: list[list[int]] = [[] for _ in sources]
    for chunk in batches_by_length(sources, batch_size):
        output = generate_batch(model, [sources[i] for i in chunk], generation)
        for position, index in enumerate(chunk):
            results[index] = output.tokens[position]
    return results


def batches_by_length(sources: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices of ``sources`` in batches of ``batch_size``, shortest first, so a batch pads little."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    return [order[begin : begin + batch_size] for begin in range(0, len(order), batch_size)]


def generate_batch(
    model: Summarizer,
    rows: Sequence[Sequence[int]],
    generation: GenerationConfig,
    explain: bool = False,
    copy_rows: Sequence[Sequence[int]] | None = None,
) -> Generation:
    """One ``Summarizer.generate`` call on ``rows`` padded with the model's PAD id, each summary
    capped at its own source's length (``GenerationConfig.for_sources``); ``copy_rows``: the
    same rows with PAD where the copy mask forbids copying (``reading.copy_sources``)."""
    device = next(model.parameters()).device
    width = max(map(len, rows))
    pad = model.config.pad_id

    def padded(table: Sequence[Sequence[int]]) -> Tensor:
        return torch.tensor([[*row, *[pad] * (width - len(row))] for row in table], device=device)  # (B, S)

    source_lengths = torch.tensor([len(row) for row in rows], device=device)  # (B,)
    capped = generation.for_sources([len(row) for row in rows])
    copy_source = padded(copy_rows) if copy_rows is not None else None
    return model.generate(padded(rows), source_lengths, capped, return_attention=explain,
                          return_gates=explain, copy_source=copy_source)  # fmt: skip


def source_memory_trace(
    bundle: Bundle, source_ids: list[int], gates: dict[str, Tensor] | None = None
) -> list[float]:
    """Retention of each source token at the end of the document (see model/memory.py), for
    the encoder's top layer, forward direction. LSTM/GRU: from ``gates`` when the caller has
    them (no second encoder pass); plain RNN: a Jacobian norm, so the encoder runs under autograd."""
    model = bundle.model
    cell = model.config.encoder_cell
    if gates and cell in ("lstm", "gru"):
        retention = gate_retention(cell, {name: values.unsqueeze(0) for name, values in gates.items()})
    else:
        device = next(model.parameters()).device
        embedded = model.embedding(torch.tensor([source_ids], device=device))  # (1, S, E)
        with torch.enable_grad():
            retention = memory_trace(model.encoder.recurrent, embedded.detach(), None)
    return retention[0].detach().cpu().tolist()


def top_forward_gates(gates: list | None, bundle: Bundle, row: int, length: int) -> dict[str, Tensor] | None:
    """The gates of the encoder's top layer, forward direction: what reaches the document's end."""
    if not gates:
        return None
    recurrent = bundle.model.encoder.recurrent
    top_forward = gates[(recurrent.num_layers - 1) * recurrent.num_directions]
    return {name: values[row, :length].cpu() for name, values in top_forward.items()}


HUB_PREFIX = "hf://"


class Pipeline:
    """A loaded bundle, ready to summarize: what ``gatesum.load`` returns.

        import gatesum
        summarizer = gatesum.load()                      # the bundled model, on the CPU
        summaries = summarizer.summarize(["Text one ...", "Text two ..."], beam_size=4)
        print(summaries[0].summary)

    ``summarize`` takes a ``GenerationConfig`` and/or its fields as keywords; every entry point
    (the CLI, the REST service) decodes through the same ``summarize_texts``.
    """

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def device(self) -> torch.device:
        return next(self.bundle.model.parameters()).device

    def summarize(
        self,
        texts: str | Sequence[str],
        generation: GenerationConfig | None = None,
        *,
        mode: str = DEFAULT_MODE,
        batch_size: int = 16,
        **settings: Any,
    ) -> list[Summary]:
        """Summaries of ``texts`` in order (one text: a list of one). ``mode``: "abstractive" or
        "extractive" (the selector's best sentences; needs a bundle with a selector).
        ``settings`` are fields of ``GenerationConfig`` (beam_size, max_length, ...) applied over
        ``generation``."""
        if isinstance(texts, str):
            texts = [texts]
        generation = generation or GenerationConfig()
        names = {field.name for field in fields(GenerationConfig)} - {"source_lengths"}  # set per batch
        if unknown := sorted(set(settings) - names):
            raise TypeError(f"unknown generation settings {unknown}; choose from {sorted(names)}")
        return summarize_texts(
            self.bundle, list(texts), replace(generation, **settings), batch_size=batch_size, mode=mode
        )

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, device={str(self.device)!r})"


def load(
    model: str | Path | None = None, device: str | torch.device = "cpu", *, device_option: str = "device"
) -> Pipeline:
    """Load a model bundle for summarizing: the bundled model when ``model`` is None, a bundle
    directory, or ``hf://owner/name[@revision]`` for a bundle published on the Hugging Face Hub
    (downloaded once into the Hub's cache), on ``device`` ("cpu", "cuda", "cuda:1", "mps" or
    "auto"). Raises ``GatesumError`` naming what is wrong (``device_option``: the flag or
    setting the device came from, for that message)."""
    if isinstance(device, str):
        device = resolve_device(device, device_option)
    if model is None:
        return Pipeline(load_bundle(BUNDLED_MODEL, device))
    if isinstance(model, str) and model.startswith(HUB_PREFIX):
        return Pipeline(load_bundle(_download(model.removeprefix(HUB_PREFIX)), device))
    return Pipeline(load_bundle(Path(model), device))


def _download(repo: str) -> Path:
    """A bundle from the Hugging Face Hub: its files (config.json, model.safetensors,
    tokenizer.model) in the local Hub cache, fetched if missing."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    try:
        path = snapshot_download(
            repo_id, revision=revision or None, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE]
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        raise GatesumError(f"{HUB_PREFIX}{repo}: could not fetch the bundle from the Hub ({error})") from None
    return Path(path)
