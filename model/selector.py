"""Content selector (Gehrmann et al. 2018, "Bottom-Up Abstractive Summarization", §3).

A tagger with no decoder: it reads the whole document and gives each source token the
probability that the summary copies it,

    e_i = emb(x_i)                            (B, T, E)
    h_i = BiLSTM(e_1 .. e_T)_i                (B, T, D·H)   on our own cells (``Recurrent``)
    q_i = σ(w · h_i + b)                      (B, T)        P(x_i is copied into the summary)

and the sentence-level tools built on those probabilities, for long documents
(select-then-summarize: keep the best sentences until the summarizer's window is full) and for
an extractive summary (the best sentences, with trigram blocking between them).

Everything below works on token ids and on sentence spans over those ids, so any caller that
can tokenize (the pipeline, the training code) can use it. Text is expected to be normalized
(``model.text.normalize``: lowercased, PTB-tokenized), which is what makes ``split_sentences``
reliable without a trained splitter: PTB tokenization turns a sentence-final period into a
standalone " ." while abbreviations keep theirs ("u.s.", "mr."), so a standalone . ! ? ends a
sentence. (nltk's punkt would need a model download, which an offline machine does not have.)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatesum.model.cells import CELLS
from gatesum.model.recurrent import Recurrent, padding_mask
from gatesum.model.tokenizer import PAD_ID, Tokenizer


@dataclass
class SelectorConfig:
    """Every architectural choice of a content selector; saved in the bundle's "selector" section."""

    vocab_size: int = 16000  # the summarizer's tokenizer: the selector tags the same ids
    embedding_size: int = 128
    cell: str = "lstm"  # rnn | gru | lstm
    hidden_size: int = 128  # per direction
    num_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.1  # on the embeddings, between layers and before the output layer
    pad_id: int = PAD_ID

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, not {self.cell!r}")
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SelectorConfig:
        """Builds the config, refusing unknown keys (a sign of a bundle from another version)."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown selector config keys: {unknown}")
        return cls(**values)


@dataclass
class SelectorOutput:
    logits: Tensor  # (B, T): log-odds that each token is copied; -inf at padding (σ gives 0)
    mask: Tensor  # (B, T) bool, True at real tokens
    loss: Tensor | None = None  # mean binary cross-entropy over real tokens, when labels are given


class ContentSelector(nn.Module):
    """forward(source (B, T), source_lengths (B,), labels (B, T) or None) -> SelectorOutput."""

    def __init__(self, config: SelectorConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_id)
        self.dropout = nn.Dropout(config.dropout)
        self.recurrent = Recurrent(
            config.cell,
            config.embedding_size,
            config.hidden_size,
            config.num_layers,
            config.bidirectional,
            config.dropout if config.num_layers > 1 else 0.0,
        )
        self.output = nn.Linear(config.output_size, 1)

    def forward(self, source: Tensor, source_lengths: Tensor, labels: Tensor | None = None) -> SelectorOutput:
        embedded = self.dropout(self.embedding(source))  # (B, T, E)
        states, _ = self.recurrent(embedded, source_lengths)  # (B, T, D·H), zero at padding
        logits = self.output(self.dropout(states)).squeeze(-1)  # (B, T)
        mask = padding_mask(source_lengths.to(source.device), source.shape[1])  # (B, T)
        logits = torch.where(mask, logits, float("-inf"))
        loss = None
        if labels is not None:
            # Padding is left out by selection: only real tokens enter the mean.
            loss = F.binary_cross_entropy_with_logits(logits[mask], labels[mask].to(logits.dtype))
        return SelectorOutput(logits, mask, loss)


# --- token probabilities --------------------------------------------------------------------------


@torch.no_grad()
def token_probabilities_batch(
    selector: ContentSelector, rows: Sequence[Sequence[int]], batch_size: int = 16
) -> list[Tensor]:
    """P(copied) for every token of every row: one (T_row,) float tensor on the CPU per row.

    Rows are sorted by length into batches so that a batch pads little; the selector runs in
    eval mode (no dropout) and is put back in the mode it was in.
    """
    device = next(selector.parameters()).device
    was_training = selector.training
    selector.eval()
    results: list[Tensor] = [torch.zeros(0) for _ in rows]
    order = sorted((i for i in range(len(rows)) if len(rows[i])), key=lambda i: len(rows[i]))
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        lengths = torch.tensor([len(rows[i]) for i in chunk])
        source = torch.full((len(chunk), int(lengths.max())), selector.config.pad_id, dtype=torch.long)
        for position, index in enumerate(chunk):
            source[position, : lengths[position]] = torch.as_tensor(rows[index], dtype=torch.long)
        probabilities = torch.sigmoid(selector(source.to(device), lengths.to(device)).logits).cpu()
        for position, index in enumerate(chunk):
            results[index] = probabilities[position, : lengths[position]]
    selector.train(was_training)
    return results


def token_probabilities(selector: ContentSelector, ids: Sequence[int]) -> Tensor:
    """P(copied) for each token of one document: (T,)."""
    return token_probabilities_batch(selector, [ids])[0]


# --- sentences ------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"\.|[!?][!?.]*")  # a standalone . ! ? ?! !!! (not "...": often mid-sentence)
_CLOSERS = frozenset({'"', "''", "'", ")", "]", "}", "-rrb-", "-rsb-", "-rcb-"})  # stay with the sentence


def split_sentences(normalized_text: str, max_words: int | None = None) -> list[str]:
    """Sentences of normalized text (``model.text.normalize``), each a string of its words.

    A line break always ends a sentence (highlights, paragraphs, titles); within a line a
    sentence ends after a standalone ``.``, ``!`` or ``?`` (and the closing quotes or brackets
    right after it). ``max_words`` cuts longer sentences into pieces of at most that many
    words, so that an unpunctuated transcript line still fits a token budget. Joining the
    result with spaces gives the text's words back, in order.
    """
    sentences: list[str] = []
    for line in normalized_text.splitlines():
        words = line.split()
        start, ending, quoted = 0, False, False
        for index, word in enumerate(words):
            is_end = bool(_SENTENCE_END.fullmatch(word))
            # a " closes a quotation when one is open (counted along the line), else it opens one
            closes = word in _CLOSERS and (word != '"' or quoted)
            if ending and not is_end and not closes:  # the first word of the next sentence
                sentences += _pieces(words[start:index], max_words)
                start = index
            ending = is_end or (ending and closes)
            if word in ('"', "``", "''"):
                quoted = word == "``" or (word == '"' and not quoted)
        if start < len(words):
            sentences += _pieces(words[start:], max_words)
    return sentences


def _pieces(words: list[str], max_words: int | None) -> list[str]:
    step = max_words or len(words)
    return [" ".join(words[begin : begin + step]) for begin in range(0, len(words), step)]


def encode_sentences(
    tokenizer: Tokenizer, sentences: Sequence[str]
) -> tuple[list[int], list[tuple[int, int]]]:
    """The document's ids and each sentence's (start, end) span in them.

    Sentencepiece never joins pieces across a space, so encoding the sentences one by one and
    concatenating gives exactly ``tokenizer.encode(" ".join(sentences))``.
    """
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    for sentence_ids in tokenizer.encode_batch(list(sentences)):
        spans.append((len(ids), len(ids) + len(sentence_ids)))
        ids += sentence_ids
    return ids, spans


def sentence_scores(
    token_probs: Tensor | Sequence[float], sentence_spans: Sequence[tuple[int, int]], top_k: int | None = None
) -> list[float]:
    """One score per sentence: the mean of its tokens' probabilities, or with ``top_k`` the mean
    of its k most probable tokens (all of them in a shorter sentence).

    The plain mean is length-neutral: a long sentence neither wins by having many tokens (a sum
    would favour it) nor loses for its filler; ``top_k`` instead asks whether the sentence holds
    a strongly selected phrase of about k tokens, however long the rest of it is. A span past
    the end of ``token_probs`` (a document the selector read truncated) counts what it has; an
    empty span scores 0.
    """
    probabilities = torch.as_tensor(token_probs, dtype=torch.float32)
    scores = []
    for start, end in sentence_spans:
        values = probabilities[start:end]
        if values.numel() == 0:
            scores.append(0.0)
            continue
        if top_k is not None:
            values = values.topk(min(top_k, values.numel())).values
        scores.append(float(values.mean()))
    return scores


def _best_first(scores: Sequence[float]) -> list[int]:
    """Sentence indices by descending score; ties go to the earlier sentence."""
    return sorted(range(len(scores)), key=lambda index: (-scores[index], index))


def select_sentences(
    scores: Sequence[float],
    sentence_token_counts: Sequence[int],
    budget_tokens: int,
    lead_tokens: int = 0,
    segments: int = 1,
) -> list[int]:
    """The sentences to keep for a summarizer that reads ``budget_tokens`` tokens, in document order.

    First the document's opening sentences, in order, while they fit in ``lead_tokens`` (news puts
    its main facts first, and a summarizer trained on article openings reads them best); then the
    rest best first: each sentence is kept if it still fits in what is left of the budget, and
    skipped otherwise (a shorter one further down may still fit), so the kept sentences never
    exceed the budget. With ``segments`` > 1 the rest of the document is cut into that many
    stretches of about equal tokens, each with an equal share of what is left, so that the kept
    sentences come from across a document far longer than those the selector was trained on
    (its scores there are comparable within a stretch, less so across). A sentence longer than
    the whole budget is never kept: the caller cuts long sentences first
    (``split_sentences(max_words=...)``) or falls back to truncation when nothing is kept.
    """
    if len(scores) != len(sentence_token_counts):
        raise ValueError(f"{len(scores)} scores for {len(sentence_token_counts)} sentences")
    kept, left = [], budget_tokens
    lead_left = min(lead_tokens, budget_tokens)
    for index, count in enumerate(sentence_token_counts):
        if count > lead_left:
            break
        kept.append(index)
        lead_left -= count
        left -= count
    rest = list(range(len(kept), len(scores)))
    stretches = _stretches(rest, sentence_token_counts, max(1, segments))
    share = left // len(stretches) if len(stretches) > 1 else left
    for stretch in stretches:
        room = share
        for index in sorted(stretch, key=lambda i: (-scores[i], i)):
            if 0 < sentence_token_counts[index] <= room:
                kept.append(index)
                room -= sentence_token_counts[index]
    return sorted(kept)


def _stretches(indices: list[int], counts: Sequence[int], segments: int) -> list[list[int]]:
    """``indices`` (consecutive sentences) cut into up to ``segments`` runs of about equal tokens."""
    total = sum(counts[i] for i in indices)
    if segments <= 1 or not indices:
        return [indices]
    size = total / segments
    stretches: list[list[int]] = [[]]
    filled = 0
    for index in indices:
        if filled >= size * len(stretches) and len(stretches) < segments:
            stretches.append([])
        stretches[-1].append(index)
        filled += counts[index]
    return stretches


def trigrams(words: Sequence[str]) -> set[tuple[str, str, str]]:
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def extractive_summary(
    sentences: Sequence[str],
    scores: Sequence[float],
    max_sentences: int | None = None,
    max_words: int | None = None,
    trigram_blocking: bool = True,
) -> list[int]:
    """The indices of an extractive summary's sentences, in document order.

    Sentences (normalized text, words separated by spaces) are taken best first; with
    ``trigram_blocking`` a sentence sharing a word trigram with one already taken is skipped
    (Paulus et al. 2018; Liu & Lapata 2019's extractive BertSum: it keeps two sentences that
    say the same thing out of one summary). Taking stops at ``max_sentences`` sentences or once
    the summary has ``max_words`` words (the last sentence may cross that length); at least one
    of the two must be given.
    """
    if max_sentences is None and max_words is None:
        raise ValueError("give max_sentences, max_words or both")
    if len(scores) != len(sentences):
        raise ValueError(f"{len(scores)} scores for {len(sentences)} sentences")
    kept: list[int] = []
    seen: set[tuple[str, str, str]] = set()
    words_taken = 0
    for index in _best_first(scores):
        if (max_sentences is not None and len(kept) >= max_sentences) or (
            max_words is not None and words_taken >= max_words
        ):
            break
        words = sentences[index].split()
        if not words:
            continue
        sentence_trigrams = trigrams(words)
        if trigram_blocking and sentence_trigrams & seen:
            continue
        kept.append(index)
        seen |= sentence_trigrams
        words_taken += len(words)
    return sorted(kept)
