"""Greedy and beam search, batched: the whole batch × beam moves as tensors at each step.

Both searches drive a model through one function,

    step(tokens (N,), state) -> (log_probs (N, V), attention (N, S) or None, state),

and beam search also needs ``reorder(state, rows)`` to follow the surviving beams. N is the
number of rows being decoded: B for greedy, B·K for a beam of K.

Beam search keeps K hypotheses per example. A hypothesis that emits EOS is finished: its
score freezes (its only continuation is PAD at no cost) and it keeps competing for one of
the K places. Hypotheses are ranked by log-probability divided by the GNMT length penalty
lp(n) = ((5 + n) / 6)^α (Wu et al. 2016); since all live candidates of a step have the same
length, beam size 1 is greedy search. With a coverage penalty β > 0 the final ranking also
subtracts β · Σ_i max(0, c_i − 1), where c_i is the attention source token i received over the
hypothesis's own steps (EOS included, padding not): OpenNMT's "summary" penalty against
re-reading one passage. Greedy search has one hypothesis to rank, so β changes nothing there.

A summary is never longer than its source: ``GenerationConfig.source_lengths`` caps each
example's summary at its own source's token count (EOS not counted), row by row inside one
batch, by allowing only EOS once a row reaches its cap; ``min_length`` is lowered to the cap
with it. ``summarize_texts`` (model/pipeline.py) sets it for every batch it decodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

NEG_INF = float("-inf")


def _setting(default: float, minimum: float, maximum: float, help: str) -> Any:
    """A generation setting: its default, its bounds and its help, the one place each is written."""
    return field(default=default, metadata={"minimum": minimum, "maximum": maximum, "help": help})


@dataclass(frozen=True)
class GenerationConfig:
    """The search settings of one ``generate`` call; frozen, so it is hashable (the service's
    micro-batch key). The command-line flags, the request schema and the service's settings
    are all built from these fields (``GENERATION_SETTINGS``)."""

    beam_size: int = _setting(4, 1, 16, "beam width; 1 is greedy search (fastest)")
    max_length: int = _setting(
        100, 1, 256, "most summary tokens generated, EOS included; never more than the source's own tokens"
    )
    min_length: int = _setting(
        0, 0, 256, "EOS is forbidden before this many tokens (lowered to max_length or the source's length)"
    )
    length_penalty: float = _setting(
        1.0, 0.0, 5.0, "GNMT length penalty α; 0 ranks beams by raw log-probability (favours short output)"
    )
    no_repeat_ngram_size: int = _setting(
        3, 0, 16, "never repeat an n-gram of this size in a summary (0: off; 3: the usual CNN/DailyMail)"
    )
    coverage_penalty: float = _setting(
        0.0,
        0.0,
        5.0,
        "β, beam search only: a finished beam loses β × the attention its source tokens received "
        "beyond 1 in all, so beams that re-read one passage rank lower (0: off)",
    )
    # per example, in batch order: its source's token count, the most summary tokens it may get
    # (EOS not counted); None: no cap. Set per batch with ``for_sources``, never by a user.
    source_lengths: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for setting in GENERATION_SETTINGS:
            value = getattr(self, setting.name)
            problem = setting.problem(value)
            if problem:
                raise ValueError(f"{setting.name} {problem}")
            if setting.kind is float:
                object.__setattr__(self, setting.name, float(value))
        if self.source_lengths is not None and min(self.source_lengths, default=0) < 0:
            raise ValueError("source_lengths must be ≥ 0")

    def for_sources(self, source_lengths: Sequence[int]) -> GenerationConfig:
        """A copy whose summaries are capped by these sources' token counts, one per example."""
        return replace(self, source_lengths=tuple(int(length) for length in source_lengths))


@dataclass(frozen=True)
class GenerationSetting:
    """One user-facing field of ``GenerationConfig``, as flags, schemas and settings need it."""

    name: str
    kind: type  # int or float
    default: float
    minimum: float
    maximum: float
    help: str

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not allowed (a phrase to follow the setting's name), or None."""
        kinds = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return "must be a whole number" if self.kind is int else "must be a number"
        if not self.minimum <= value <= self.maximum:
            return f"must be between {self.minimum} and {self.maximum}, not {value}"
        return None


GENERATION_SETTINGS: tuple[GenerationSetting, ...] = tuple(
    GenerationSetting(item.name, {"int": int, "float": float}[item.type], item.default, **item.metadata)
    for item in dataclasses.fields(GenerationConfig)
    if "help" in item.metadata
)


@dataclass
class SearchResult:
    tokens: list[list[int]]  # per example, EOS and padding removed
    scores: list[float]  # the ranking score of each chosen hypothesis
    attention: list[Tensor] | None = None  # per example (output length, S), on request


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def banned_ngram_tokens(tokens: Tensor, n: int, vocab_size: int) -> Tensor:
    """(N, t) generated so far -> (N, V) bool: tokens that would repeat an n-gram."""
    N, t = tokens.shape
    banned = torch.zeros(N, vocab_size, dtype=torch.bool, device=tokens.device)
    if n <= 0 or t < n:
        return banned
    windows = tokens.unfold(1, n, 1)  # (N, t − n + 1, n): every n-gram so far
    last = tokens[:, t - n + 1 :].unsqueeze(1)  # (N, 1, n − 1): the prefix about to be extended
    matches = (windows[:, :, :-1] == last).all(-1)  # (N, t − n + 1)
    counts = torch.zeros(N, vocab_size, device=tokens.device)
    counts.scatter_add_(1, windows[:, :, -1], matches.float())  # add, not set: indices repeat
    return counts > 0


@dataclass
class RowLimits:
    """Per decoded row (N,): EOS is forbidden before ``min_tokens`` and the only choice at ``max_tokens``."""

    min_tokens: Tensor
    max_tokens: Tensor


def row_limits(
    config: GenerationConfig, batch_size: int, device: torch.device, rows_per_example: int = 1
) -> RowLimits:
    """Each row's limits: ``max_length`` capped by its source's length, ``min_length`` by that cap.
    Rows are example-major (the K beams of example 0, then of example 1, ...)."""
    caps = torch.full((batch_size,), config.max_length, dtype=torch.long, device=device)
    if config.source_lengths is not None:
        if len(config.source_lengths) != batch_size:
            raise ValueError(f"{len(config.source_lengths)} source_lengths for a batch of {batch_size}")
        caps = caps.clamp_max(torch.tensor(config.source_lengths, dtype=torch.long, device=device))
    caps = caps.repeat_interleave(rows_per_example)
    return RowLimits(caps.clamp_max(config.min_length), caps)


def constrain(
    log_probs: Tensor,
    tokens: Tensor,
    config: GenerationConfig,
    limits: RowLimits,
    eos: int,
    never: tuple[int, ...],
) -> Tensor:
    """Apply the length limits and n-gram blocking to one step's log_probs (N, V); the ids in
    ``never`` (PAD, BOS) are never generated."""
    generated = tokens.shape[1]
    eos_log_prob = log_probs[:, eos].clone()  # (N,) the model's own, kept for rows forced to stop
    log_probs = log_probs.index_fill(1, torch.tensor(never, device=log_probs.device), NEG_INF)
    log_probs[:, eos] = log_probs[:, eos].masked_fill(generated < limits.min_tokens, NEG_INF)
    if config.no_repeat_ngram_size > 0:
        banned = banned_ngram_tokens(tokens, config.no_repeat_ngram_size, log_probs.shape[1])
        log_probs = log_probs.masked_fill(banned, NEG_INF)
    # A row that has as many tokens as its source may only end: a summary is never longer.
    eos_only = torch.full_like(log_probs, NEG_INF)
    eos_only[:, eos] = eos_log_prob
    return torch.where((generated >= limits.max_tokens).unsqueeze(1), eos_only, log_probs)


def _strip(row: list[int], eos: int, pad: int) -> list[int]:
    out = []
    for token in row:
        if token in (eos, pad):
            break
        out.append(token)
    return out


@torch.no_grad()
def greedy_search(
    step: Callable,
    state,
    batch_size: int,
    config: GenerationConfig,
    bos: int,
    eos: int,
    pad: int,
    device: torch.device,
    return_attention: bool = False,
) -> SearchResult:
    """Take the most probable allowed token at every step until every row has emitted EOS."""
    tokens = torch.empty(batch_size, 0, dtype=torch.long, device=device)
    last = torch.full((batch_size,), bos, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    scores = torch.zeros(batch_size, device=device)
    limits = row_limits(config, batch_size, device)
    attentions = []
    for _ in range(config.max_length):
        log_probs, attention, state = step(last, state)
        log_probs = constrain(log_probs, tokens, config, limits, eos, (pad, bos))
        best_score, best = log_probs.max(-1)
        best = best.masked_fill(finished, pad)
        scores += best_score.masked_fill(finished, 0.0)
        tokens = torch.cat([tokens, best.unsqueeze(1)], 1)
        if return_attention and attention is not None:
            attentions.append(attention)
        finished |= best == eos
        last = best
        if finished.all():
            break
    history = torch.stack(attentions, 1) if attentions else None
    return _result(tokens, scores, history, eos, pad)


def _result(tokens: Tensor, scores: Tensor, history: Tensor | None, eos: int, pad: int) -> SearchResult:
    """history (N, t, S): each row's attention at every step, or None."""
    rows = [_strip(row, eos, pad) for row in tokens.tolist()]
    attention = None
    if history is not None:  # keep the steps that produced the tokens (and the EOS)
        attention = [history[i, : len(row) + 1].cpu() for i, row in enumerate(rows)]
    return SearchResult(rows, scores.tolist(), attention)


@torch.no_grad()
def beam_search(
    step: Callable,
    reorder: Callable,
    state,
    batch_size: int,
    config: GenerationConfig,
    bos: int,
    eos: int,
    pad: int,
    device: torch.device,
    return_attention: bool = False,
) -> SearchResult:
    """``state`` must already hold K = beam_size rows per example, example-major."""
    B, K = batch_size, config.beam_size
    N = B * K
    tokens = torch.empty(N, 0, dtype=torch.long, device=device)
    last = torch.full((N,), bos, dtype=torch.long, device=device)
    scores = torch.full((B, K), NEG_INF, device=device)
    scores[:, 0] = 0.0  # all K rows start identical: expand only the first
    lengths = torch.zeros(B, K, dtype=torch.long, device=device)
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    coverage = None
    history = None  # (N, t, S) attention of each hypothesis, on request
    example_start = (torch.arange(B, device=device) * K).unsqueeze(1)  # (B, 1)
    limits = row_limits(config, B, device, rows_per_example=K)  # the same for an example's K rows
    for _ in range(config.max_length):
        log_probs, attention, state = step(last, state)
        V = log_probs.shape[1]
        log_probs = constrain(log_probs, tokens, config, limits, eos, (pad, bos))
        # A finished hypothesis continues only with PAD, at no cost.
        pad_only = torch.full_like(log_probs[:1], NEG_INF)
        pad_only[0, pad] = 0.0
        log_probs = torch.where(finished.view(N, 1), pad_only, log_probs)
        candidates = scores.view(N, 1) + log_probs  # (N, V)
        candidate_lengths = (lengths + (~finished).long()).view(N, 1)  # (N, 1)
        ranked = candidates / length_penalty(candidate_lengths, config.length_penalty)
        _, best = ranked.view(B, K * V).topk(K, dim=1)  # (B, K)
        rows = (example_start + best // V).view(N)  # which hypothesis each survivor extends
        new_tokens = (best % V).view(N)
        scores = candidates.view(B, K * V).gather(1, best)
        lengths = candidate_lengths.view(N)[rows].view(B, K)
        was_finished = finished.view(N)[rows]  # (N,) ended before this step: this step's token is PAD
        finished = was_finished.view(B, K) | (new_tokens == eos).view(B, K)
        tokens = torch.cat([tokens[rows], new_tokens.unsqueeze(1)], 1)
        state = reorder(state, rows)
        if attention is not None and (config.coverage_penalty > 0 or return_attention):
            attention = attention.float()[rows]
            # a finished hypothesis reads nothing more: its PAD steps' attention is not coverage
            spent = attention.masked_fill(was_finished.unsqueeze(1), 0.0)
            coverage = spent if coverage is None else coverage[rows] + spent
            if return_attention:
                step_attention = attention.unsqueeze(1)
                history = step_attention if history is None else torch.cat([history[rows], step_attention], 1)
        last = new_tokens
        if finished.all():
            break
    final = scores / length_penalty(lengths.clamp_min(1), config.length_penalty)
    if coverage is not None and config.coverage_penalty > 0:
        # OpenNMT's "summary" penalty: attention a source token received beyond 1 in total.
        over_attention = (coverage - 1.0).clamp_min(0.0).sum(-1).view(B, K)
        final = final - config.coverage_penalty * over_attention
    best_score, best_beam = final.max(1)  # (B,)
    chosen = example_start.squeeze(1) + best_beam  # (B,)
    return _result(tokens[chosen], best_score, history[chosen] if history is not None else None, eos, pad)
