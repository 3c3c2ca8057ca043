"""How a document is read, for both modes (issue #15): the content selector's side of the one
inference path (model/pipeline.py).

    text ─► normalize ─► sentences (long ones cut) ─► ids + each sentence's span in them
      abstractive:
        ├─ fits the summarizer's window ────────────────────────────────────► read "whole"
        ├─ longer, the bundle has a selector ─► P(copied) for every token of the WHOLE document
        │      ─► sentence scores ─► the opening sentences up to lead_share of the window,
        │         then the best others until it is full, in document order
        │         ─► the summarizer reads those                              ► read "selected"
        └─ longer, no selector ─► the first window of tokens                 ► read "truncated"
      extractive (needs a selector): P(copied) ─► sentence scores ─► the best sentences with
        trigram blocking between them, in document order, are the summary    ► read "whole"

Every reading names the sentences it used (indices into the document's sentences, with their
character offsets in the text as given and, when the selector ran, their scores), so that a
caller can show where a summary came from. The selector's probabilities of the tokens the
summarizer reads also feed the bottom-up copy mask (``copy_sources``; Gehrmann et al. 2018).

``read_documents`` reads texts at once; ``DocumentReader`` reads one text the same way in
pieces (tokenizing, then a stretch of the selector's pass at a time), for a scheduler that must
keep other work moving beside a 100,000-character document (the service, issue #16).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gatesum.model.bundle import Bundle
from gatesum.model.errors import GatesumError
from gatesum.model.search import GenerationConfig
from gatesum.model.selector import (
    encode_sentences,
    extractive_summary,
    select_sentences,
    sentence_scores,
    split_sentences,
    token_probabilities_batch,
)
from gatesum.model.selector_pass import DEFAULT_STEPS, SelectorPass
from gatesum.model.text import CHARACTER_MAP, normalize

DEFAULTS = GenerationConfig()  # the reading settings' defaults: extract_sentences, lead_share
MODES = ("abstractive", "extractive")
DEFAULT_MODE = "abstractive"
DEFAULT_SOURCE_MAX_TOKENS = 400
DEFAULT_SELECTOR_TRAINED_TOKENS = 2000  # training.selector.SelectorDataConfig.max_tokens's default
# A sentence longer than this many words is cut into pieces: an unpunctuated transcript line
# must still fit the summarizer's window when selected (400 tokens hold several of them).
SENTENCE_MAX_WORDS = 80
LOOKAHEAD = 40  # characters: how far ``sentence_offsets`` looks for a word before skipping it
_WORD = re.compile(r"\S+")


@dataclass
class SentenceUse:
    """One sentence of the document that a summary used."""

    index: int  # in the document's sentences (``document_sentences``)
    start: int  # [start, end): character offsets in the text as given (Python str indices)
    end: int
    score: float | None = None  # the selector's sentence score (mean token P(copied)), when it ran


@dataclass
class Reading:
    """What the summarizer reads of one document, and how it was chosen."""

    read: str  # "whole" | "selected" | "truncated"
    source_ids: list[int]  # the ids the summarizer reads (extractive: the whole document's)
    input_tokens: int  # the whole document, in tokens
    sentences: list[SentenceUse]  # the sentences read (extractive: the summary's), in document order
    sentence_count: int  # sentences in the document
    source_probabilities: Tensor | None = None  # (S,) P(copied) of each id read, when the selector ran
    extract: list[str] | None = None  # extractive: the summary's sentences, normalized


def source_max_tokens(bundle: Bundle) -> int:
    """The summarizer's window: the most source tokens it reads (its training's limit)."""
    return int(bundle.card.get("data", {}).get("source_max_tokens", DEFAULT_SOURCE_MAX_TOKENS))


def selector_trained_length(bundle: Bundle) -> int:
    """The most tokens of a document the bundle's selector read in training (its config.json
    facts; ``DEFAULT_SELECTOR_TRAINED_TOKENS`` for a selector saved without them)."""
    section = bundle.card.get("selector", {})
    data = section.get("training", {}).get("options", {}).get("data", {})
    return int(data.get("max_tokens") or DEFAULT_SELECTOR_TRAINED_TOKENS)


def check_mode(bundle: Bundle, mode: str, copy_mask_threshold: float = 0.0) -> None:
    """GatesumError, in one line, for a mode or copy mask this bundle cannot serve."""
    if mode not in MODES:
        raise GatesumError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if bundle.selector is None and mode == "extractive":
        raise GatesumError(
            f"the extractive mode needs a content selector, and the model {bundle.name} has none"
        )
    if (
        bundle.selector is None
        and copy_mask_threshold > 0
        and copy_mask_threshold != DEFAULTS.copy_mask_threshold
    ):
        # the default threshold is for models with a selector: one without reads with no mask
        raise GatesumError(
            f"the copy mask (copy_mask_threshold > 0) needs a content selector, and the model "
            f"{bundle.name} has none"
        )


def read_documents(
    bundle: Bundle,
    texts: Sequence[str],
    mode: str = DEFAULT_MODE,
    copy_mask_threshold: float = 0.0,
    extract_sentences: int = DEFAULTS.extract_sentences,
    batch_size: int = 16,
    lead_share: float = DEFAULTS.lead_share,
) -> list[Reading]:
    """How each text is read (see the module docs). The selector runs, over each whole
    document, where it changes something (``needs_selector``); the tokens of a text are exactly
    ``tokenizer.encode(normalize(text))``."""
    check_mode(bundle, mode, copy_mask_threshold)
    readers = [DocumentReader(bundle, text, mode, copy_mask_threshold, extract_sentences, lead_share)
               for text in texts]  # fmt: skip
    readings = read_together(readers, None, batch_size)
    return [reading for reading in readings if reading is not None]  # no piece limit: none is None


def needs_selector(bundle: Bundle, tokens: int, mode: str, copy_mask_threshold: float) -> bool:
    """Whether the selector reads a document of ``tokens`` tokens: when the bundle has one and
    it changes something (the extractive mode, the copy mask, a document past the window)."""
    if bundle.selector is None:
        return False
    return mode == "extractive" or copy_mask_threshold > 0 or tokens > source_max_tokens(bundle)


class DocumentReader:
    """One text read as ``read_documents`` reads it, in pieces that a scheduler can put other
    work between (the service's long lane): the first ``advance`` splits and tokenizes the text,
    and each ``advance`` reads ``steps`` time steps of the selector's pass over the document
    (model/selector_pass.py) where it needs one; the last returns the same Reading. Short texts
    are better read many at once: ``read_together``."""

    def __init__(self, bundle: Bundle, text: str, mode: str = DEFAULT_MODE, copy_mask_threshold: float = 0.0,
                 extract_sentences: int = DEFAULTS.extract_sentences,
                 lead_share: float = DEFAULTS.lead_share) -> None:  # fmt: skip
        check_mode(bundle, mode, copy_mask_threshold)
        self.bundle, self.text, self.mode = bundle, text, mode
        self.copy_mask_threshold, self.extract_sentences = copy_mask_threshold, extract_sentences
        self.lead_share = lead_share
        self.document: tuple[list[str], list[int], list[tuple[int, int]]] | None = None  # once split
        self.needs_pass = False  # whether the selector reads the document (known once split)
        self.selector_pass: SelectorPass | None = None  # its pass, from the first piece read

    @property
    def selector_tokens_left(self) -> float:
        """Tokens of the selector's pass still to read (0 where it does not run); once tokenized."""
        if self.selector_pass is not None:
            return self.selector_pass.tokens_left
        return float(len(self.document[1])) if self.needs_pass and self.document is not None else 0.0

    def split(self) -> list[int]:
        """Split and tokenize the text (once); its ids."""
        if self.document is None:
            self.document = document_sentences(self.bundle, self.text)
            tokens = len(self.document[1])
            self.needs_pass = needs_selector(self.bundle, tokens, self.mode, self.copy_mask_threshold)
        return self.document[1]

    def advance(self, steps: int = DEFAULT_STEPS) -> Reading | None:
        """The next piece; the Reading once the text is read, else None."""
        ids = self.split()
        probabilities = None
        if self.needs_pass:
            if self.selector_pass is None:
                self.selector_pass = SelectorPass(self.bundle.selector, ids)
            probabilities = self.selector_pass.advance(steps)
            if probabilities is None:
                return None  # more of the pass at the next call
        return self.finish(probabilities)

    def finish(self, probabilities: Tensor | None) -> Reading:
        """The Reading, from the selector's probabilities of the whole document where it ran."""
        return _reading(self.bundle, self.text, self.document, probabilities, self.mode,
                        self.extract_sentences, self.lead_share)  # fmt: skip


def read_together(
    readers: Sequence[DocumentReader], max_tokens: int | None, batch_size: int = 16
) -> list[Reading | None]:
    """Read, at once, the texts whose selector pass is at most ``max_tokens`` tokens (one piece;
    None: any length) or that need none: one batched pass (``token_probabilities_batch``)
    instead of one per text (the per-step cost of a small recurrent layer hardly grows with the
    batch). Each Reading is the one its reader's ``advance`` would give (the probabilities
    within float rounding). A longer text gets None: it is tokenized, and its reader reads it
    in pieces as before."""
    for reader in readers:
        reader.split()
    passes = [i for i, reader in enumerate(readers) if reader.needs_pass and reader.selector_pass is None
              and (max_tokens is None or len(reader.document[1]) <= max_tokens)]  # fmt: skip
    probabilities: dict[int, Tensor] = {}
    if passes:
        rows = [readers[i].document[1] for i in passes]
        scored = token_probabilities_batch(readers[passes[0]].bundle.selector, rows, batch_size)
        probabilities = dict(zip(passes, scored, strict=True))
    readings: list[Reading | None] = []
    for i, reader in enumerate(readers):
        if reader.needs_pass and i not in probabilities:
            readings.append(None)  # read in pieces (too long for one, or its pass already begun)
        else:
            readings.append(reader.finish(probabilities.get(i)))
    return readings


def _reading(bundle: Bundle, text: str, document: tuple[list[str], list[int], list[tuple[int, int]]],
             probabilities: Tensor | None, mode: str, extract_sentences: int,
             lead_share: float) -> Reading:  # fmt: skip
    """The Reading of one split document, with the selector's probabilities where it ran."""
    sentences, ids, spans = document
    scores = sentence_scores(probabilities, spans) if probabilities is not None else None
    if mode == "extractive":
        reading = _extract(sentences, ids, probabilities, scores, extract_sentences)
    else:
        reading = _abstractive(
            ids,
            spans,
            probabilities,
            scores,
            source_max_tokens(bundle),
            lead_share,
            selector_trained_length(bundle),
        )
    last = reading.sentences[-1].index + 1 if reading.sentences else 0
    offsets = sentence_offsets(text, sentences[:last])  # consecutive: up to the last one used
    for use in reading.sentences:
        use.start, use.end = offsets[use.index]
    reading.sentence_count = len(sentences)
    return reading


def document_sentences(bundle: Bundle, text: str) -> tuple[list[str], list[int], list[tuple[int, int]]]:
    """The document's sentences (normalized), its ids and each sentence's (start, end) in them;
    a text with no words reads as one unknown token, so that the model still has a source."""
    sentences = split_sentences(normalize(text, bundle.normalizer), SENTENCE_MAX_WORDS)
    ids, spans = encode_sentences(bundle.tokenizer, sentences)
    return sentences, ids or [bundle.model.config.unk_id], spans


def _abstractive(ids: list[int], spans: list[tuple[int, int]], probabilities: Tensor | None,
                 scores: list[float] | None, limit: int, lead_share: float,
                 trained_length: int) -> Reading:  # fmt: skip
    """Whole when it fits; else the opening sentences up to ``lead_share`` of the window and the
    selector's best others (from each stretch of ``trained_length`` tokens, the longest document
    the selector was trained on, when the text is longer), or the first ``limit`` tokens."""

    def used(indices: Sequence[int]) -> list[SentenceUse]:
        return [SentenceUse(i, 0, 0, round(scores[i], 4) if scores else None) for i in indices]

    if len(ids) <= limit:
        return Reading("whole", ids, len(ids), used(range(len(spans))), 0, probabilities)
    if probabilities is not None:
        counts = [end - start for start, end in spans]
        segments = math.ceil(len(ids) / trained_length) if len(ids) > trained_length else 1
        kept = select_sentences(scores, counts, limit, round(lead_share * limit), segments)
        if kept:  # nothing kept: every sentence is longer than the window (cut ones never are)
            source = [token for i in kept for token in ids[spans[i][0] : spans[i][1]]]
            selected = torch.cat([probabilities[spans[i][0] : spans[i][1]] for i in kept])  # (S,)
            return Reading("selected", source, len(ids), used(kept), 0, selected)
    read = [i for i, (start, _) in enumerate(spans) if start < limit]  # the last one maybe in part
    window = probabilities[:limit] if probabilities is not None else None
    return Reading("truncated", ids[:limit], len(ids), used(read), 0, window)


def _extract(sentences: list[str], ids: list[int], probabilities: Tensor, scores: list[float],
             count: int) -> Reading:  # fmt: skip
    """The extractive summary: the best ``count`` sentences, trigram-blocked, in document order."""
    kept = extractive_summary(sentences, scores, max_sentences=count) if sentences else []
    uses = [SentenceUse(i, 0, 0, round(scores[i], 4)) for i in kept]
    return Reading("whole", ids, len(ids), uses, 0, probabilities, [sentences[i] for i in kept])


def copy_sources(readings: Sequence[Reading], threshold: float, pad_id: int,
                 word_starts: Sequence[bool] | None = None) -> list[list[int]] | None:  # fmt: skip
    """The bottom-up copy mask (Gehrmann et al. 2018, §4) as source ids for the copy term: each
    id read, or PAD where the selector's P(copied) is not above ``threshold``; None when off.
    With ``word_starts`` (per vocabulary id: whether its piece begins a word,
    ``Tokenizer.word_starts``) the mask decides per word: a word's pieces are all kept when any
    of them is above the threshold."""
    if threshold <= 0:
        return None
    masked = []
    for reading in readings:
        probabilities = reading.source_probabilities
        if probabilities is None:  # the selector did not run (extractive readings never decode)
            masked.append(list(reading.source_ids))
            continue
        if word_starts is not None:
            probabilities = word_maxima(reading.source_ids, probabilities, word_starts)
        allowed = (probabilities > threshold).tolist()
        masked.append([token if keep else pad_id for token, keep in zip(reading.source_ids, allowed)])
    return masked


def word_maxima(ids: Sequence[int], probabilities: Tensor, word_starts: Sequence[bool]) -> Tensor:
    """(S,) -> (S,): each piece's value replaced by the largest of its word's pieces (a word: a
    piece that begins one and the continuation pieces after it)."""
    if not len(ids):
        return probabilities
    starts = torch.tensor([bool(word_starts[token]) for token in ids])
    words = (torch.cumsum(starts.long(), 0) - 1).clamp_min(0)  # (S,) each piece's word
    maxima = probabilities.new_full((int(words[-1]) + 1,), float("-inf"))
    maxima = maxima.scatter_reduce(0, words, probabilities, reduce="amax")
    return maxima[words]


def sentence_offsets(text: str, sentences: Sequence[str]) -> list[tuple[int, int]]:
    """[start, end) character offsets in ``text`` (raw, as given) of consecutive normalized
    sentences of it, for showing them in place.

    The words of normalized text are the raw text's characters, lowercased, with curly quotes
    and dashes made plain and split at punctuation: each word is looked for in the raw text's
    non-space characters folded the same way, a little ahead of the previous one. A word not
    found there (a Unicode composition the normalizer changed) is skipped; a sentence with no
    word found gets an empty span where the previous one ended. Linear in the text.
    """
    pieces: list[str] = []
    origins: list[int] = []  # per folded character: its position in ``text``
    for match in _WORD.finditer(text):
        word, start = match.group(), match.start()
        folded = word.translate(CHARACTER_MAP).lower()
        if len(folded) == len(word) and folded.isascii():  # most words: one folded char per char
            pieces.append(folded)
            origins.extend(range(start, match.end()))
            continue
        for offset, character in enumerate(word):  # the rest character by character
            for char in unicodedata.normalize("NFC", character).translate(CHARACTER_MAP).lower():
                if not char.isspace():
                    pieces.append(char)
                    origins.append(start + offset)
    stream = "".join(pieces)
    cursor, previous_end, offsets = 0, 0, []
    for sentence in sentences:
        first = last = None
        for word in sentence.split():
            word = _RAW_FORMS.get(word, word)
            at = stream.find(word, cursor, cursor + len(word) + LOOKAHEAD)
            if at < 0:
                continue
            first = at if first is None else first
            cursor = last = at + len(word)
        if first is None:
            offsets.append((previous_end, previous_end))
        else:
            previous_end = origins[last - 1] + 1
            offsets.append((origins[first], previous_end))
    return offsets


# normalized words that the raw text writes otherwise (NormalizerConfig.ptb_escapes)
_RAW_FORMS = {"-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "-lcb-": "{", "-rcb-": "}",
              "``": '"', "''": '"'}  # fmt: skip
