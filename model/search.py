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
with it, and to ``MIN_LENGTH_SOURCE_SHARE`` of the source's tokens: the default minimum (tuned
on news articles of several hundred tokens) does not stretch the summary of a short text to
nearly its own length. ``summarize_texts`` (model/pipeline.py) sets it for every batch it decodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

NEG_INF = float("-inf")


def _setting(default: float, minimum: float, maximum: float, help: str) -> Any:
    """A generation setting: its default, its bounds and its help, the one place each is written."""
    return field(default=default, metadata={"minimum": minimum, "maximum": maximum, "help": help})


MIN_LENGTH_SOURCE_SHARE = 0.5  # min_length never asks for more than this share of the source's tokens


@dataclass(frozen=True)
class GenerationConfig:
    """The search settings of one ``generate`` call; frozen, so it is hashable (the service's
    micro-batch key). The command-line flags, the request schema and the service's settings
    are all built from these fields (``GENERATION_SETTINGS``)."""

    beam_size: int = _setting(4, 1, 16, "beam width; 1 is greedy search (fastest)")
    max_length: int = _setting(
        100, 1, 256, "most summary tokens generated, EOS included; never more than the source's own tokens"
    )
    # 75: chosen on 500 validation documents (benchmarks/results/tune-step4200, tune-step5400)
    min_length: int = _setting(
        75,
        0,
        256,
        "EOS is forbidden before this many tokens (lowered to max_length and to half the "
        "source's tokens, so that a short text may keep a short summary)",
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
    # 0.15 and 0.5: chosen together on 500 validation documents (benchmarks/results/select-validation)
    copy_mask_threshold: float = _setting(
        0.15,
        0.0,
        1.0,
        "bottom-up copy mask (Gehrmann et al. 2018): copy only source words whose content-selector "
        "probability (a word's best piece) is above this (0: off); the default applies where the "
        "model has a selector, other values need one",
    )
    lead_share: float = _setting(
        0.5,
        0.0,
        1.0,
        "select-then-summarize (a text longer than the model reads, a model with a selector): the "
        "share of the window kept for the text's opening sentences; the selector's best others "
        "fill the rest (0: the selector alone chooses)",
    )
    # 2: chosen on 500 validation documents over 3, 4 and 5 (benchmarks/results/select-validation)
    extract_sentences: int = _setting(
        2, 1, 20, "extractive mode: the most sentences in a summary (best first, trigram-blocked)"
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


def repeated_ngrams(tokens: Tensor, n: int, pad: int | None = None) -> tuple[Tensor, Tensor]:
    """(N, t) generated so far -> (rows, next tokens): the pairs that would repeat an n-gram of
    their row. With ``pad``, n-grams that contain it do not count (the PAD left of a row younger
    than t, see ``Search``)."""
    t = tokens.shape[1]
    if n <= 0 or t < n:
        nothing = tokens.new_zeros(0)
        return nothing, nothing
    windows = tokens.unfold(1, n, 1)  # (N, t − n + 1, n): every n-gram so far
    last = tokens[:, t - n + 1 :].unsqueeze(1)  # (N, 1, n − 1): the prefix about to be extended
    matches = (windows[:, :, :-1] == last).all(-1)  # (N, t − n + 1)
    if pad is not None:
        matches &= (windows != pad).all(-1)
    rows, starts = matches.nonzero(as_tuple=True)
    return rows, windows[rows, starts, -1]


def banned_ngram_tokens(tokens: Tensor, n: int, vocab_size: int, pad: int | None = None) -> Tensor:
    """(N, t) generated so far -> (N, V) bool: tokens that would repeat an n-gram."""
    banned = torch.zeros(tokens.shape[0], vocab_size, dtype=torch.bool, device=tokens.device)
    rows, next_tokens = repeated_ngrams(tokens, n, pad)
    banned[rows, next_tokens] = True
    return banned


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
    minimum = torch.full((batch_size,), config.min_length, dtype=torch.long, device=device)
    if config.source_lengths is not None:
        if len(config.source_lengths) != batch_size:
            raise ValueError(f"{len(config.source_lengths)} source_lengths for a batch of {batch_size}")
        sources = torch.tensor(config.source_lengths, dtype=torch.long, device=device)
        caps = caps.clamp_max(sources)
        minimum = minimum.clamp_max((sources * MIN_LENGTH_SOURCE_SHARE).long())
    minimum = minimum.clamp_max(caps)
    return RowLimits(minimum.repeat_interleave(rows_per_example), caps.repeat_interleave(rows_per_example))


def constrain(
    log_probs: Tensor,
    tokens: Tensor,
    config: GenerationConfig,
    limits: RowLimits,
    eos: int,
    never: tuple[int, ...],
    generated: Tensor | None = None,
    pad: int | None = None,
) -> Tensor:
    """Apply the length limits and n-gram blocking to one step's log_probs (N, V), in place (a
    step's log_probs are read once: no (N, V) copy); the ids in ``never`` (PAD, BOS) are never
    generated. ``generated`` (N,): tokens each row has generated, when rows differ (``Search``);
    else every row has ``tokens.shape[1]``."""
    generated = tokens.shape[1] if generated is None else generated
    eos_log_prob = log_probs[:, eos].clone()  # (N,) the model's own, kept for rows forced to stop
    log_probs.index_fill_(1, torch.tensor(never, device=log_probs.device), NEG_INF)
    log_probs[:, eos] = log_probs[:, eos].masked_fill(generated < limits.min_tokens, NEG_INF)
    if config.no_repeat_ngram_size > 0:
        rows, next_tokens = repeated_ngrams(tokens, config.no_repeat_ngram_size, pad)
        log_probs[rows, next_tokens] = NEG_INF
    # A row that has as many tokens as its source may only end: a summary is never longer.
    at_most = generated >= limits.max_tokens  # (N,)
    if not at_most.any():  # most steps: no (N, V) pass for it
        return log_probs
    eos_only = torch.full_like(log_probs, NEG_INF)
    eos_only[:, eos] = eos_log_prob
    return torch.where(at_most.unsqueeze(1), eos_only, log_probs)


def _strip(row: list[int], eos: int, pad: int) -> list[int]:
    out = []
    for token in row:
        if token in (eos, pad):
            break
        out.append(token)
    return out


def fit_width(values: Tensor, width: int) -> Tensor:
    """(..., S) -> (..., width): zeros added on the right, or columns beyond ``width`` dropped
    (the caller knows they are padding: attention and coverage there are 0)."""
    if values.shape[-1] < width:
        return F.pad(values, (0, width - values.shape[-1]))
    return values[..., :width]


class Search:
    """The search state of a changing set of examples that share one ``GenerationConfig``: one
    step at a time, for ``greedy_search``/``beam_search`` and for the service's running batch
    (model/running.py), where examples join (``add``) and leave (``remove``) between steps.

    Rows are example-major, K = beam_size per example (K = 1: greedy search). Each example keeps
    its own step count, so it decodes exactly as it would alone: ``tokens`` (N, T) is
    right-aligned (the last column holds every row's latest token) and a row younger than T has
    PAD on its left, which the n-gram blocking skips.

        search.add(B, source_lengths)
        while ...: rows = search.advance(*step(search.last)); reorder the model's state by rows
        done = search.done(); results = search.results(done); kept_rows = search.remove(done)
    """

    def __init__(self, config: GenerationConfig, bos: int, eos: int, pad: int, device: torch.device,
                 return_attention: bool = False) -> None:  # fmt: skip
        self.config, self.K = config, config.beam_size
        self.bos, self.eos, self.pad, self.device = bos, eos, pad, device
        self.return_attention = return_attention
        self.tokens = torch.empty(0, 0, dtype=torch.long, device=device)  # (N, T)
        self.last = torch.empty(0, dtype=torch.long, device=device)  # (N,) the next step's input
        self.steps = torch.empty(0, dtype=torch.long, device=device)  # (E,) steps taken per example
        self.scores = torch.empty(0, self.K, device=device)  # (E, K) log-probability so far
        self.lengths = torch.empty(0, self.K, dtype=torch.long, device=device)  # (E, K) without padding
        self.finished = torch.empty(0, self.K, dtype=torch.bool, device=device)  # (E, K)
        self.limits = RowLimits(self.last, self.last)
        self.coverage: Tensor | None = None  # (N, S) attention received, for β (beam search only)
        self.history: Tensor | None = None  # (N, T, S) attention at every step, on request

    @property
    def examples(self) -> int:
        return self.steps.shape[0]

    @property
    def reads_attention(self) -> bool:
        """Whether ``advance`` uses the attention (β or explain); else it may be None."""
        return self.return_attention or (self.K > 1 and self.config.coverage_penalty > 0)

    @property
    def rows(self) -> int:
        return self.last.shape[0]

    def add(self, count: int, source_lengths: Sequence[int] | None = None) -> None:
        """``count`` new examples after the others, capped by their sources' token counts."""
        K, device = self.K, self.device
        limits = row_limits(replace(self.config, source_lengths=source_lengths), count, device, K)
        self.limits = RowLimits(*(torch.cat([old, new]) for old, new in
                                  zip((self.limits.min_tokens, self.limits.max_tokens),
                                      (limits.min_tokens, limits.max_tokens), strict=True)))  # fmt: skip
        scores = torch.full((count, K), NEG_INF, device=device)
        scores[:, 0] = 0.0  # all K rows start identical: expand only the first
        self.scores = torch.cat([self.scores, scores])
        self.lengths = torch.cat([self.lengths, torch.zeros(count, K, dtype=torch.long, device=device)])
        self.finished = torch.cat([self.finished, torch.zeros(count, K, dtype=torch.bool, device=device)])
        self.steps = torch.cat([self.steps, torch.zeros(count, dtype=torch.long, device=device)])
        rows = count * K
        self.tokens = torch.cat([self.tokens, self.tokens.new_full((rows, self.tokens.shape[1]), self.pad)])
        self.last = torch.cat([self.last, self.last.new_full((rows,), self.bos)])
        if self.coverage is not None:
            self.coverage = torch.cat([self.coverage, self.coverage.new_zeros(rows, self.coverage.shape[1])])
        if self.history is not None:
            self.history = torch.cat([self.history, self.history.new_zeros(rows, *self.history.shape[1:])])

    def advance(self, log_probs: Tensor, attention: Tensor | None) -> Tensor:
        """One step: log_probs (N, V) and attention (N, S) of every row -> the rows (N,) whose
        state each row continues (beam search reorders; greedy keeps them). Writes into
        ``log_probs`` (the constraints)."""
        generated = self.steps.repeat_interleave(self.K)  # (N,)
        never = (self.pad, self.bos)
        log_probs = constrain(log_probs, self.tokens, self.config, self.limits, self.eos, never, generated,
                              self.pad)  # fmt: skip
        rows = self._greedy(log_probs, attention) if self.K == 1 else self._beam(log_probs, attention)
        self.steps += 1
        return rows

    def _greedy(self, log_probs: Tensor, attention: Tensor | None) -> Tensor:
        """Take the most probable allowed token; a row that has emitted EOS continues with PAD."""
        finished = self.finished.view(-1)
        best_score, best = log_probs.max(-1)
        best = best.masked_fill(finished, self.pad)
        self.scores += best_score.masked_fill(finished, 0.0).unsqueeze(1)
        self.tokens = torch.cat([self.tokens, best.unsqueeze(1)], 1)
        if self.return_attention and attention is not None:
            self._record(attention.unsqueeze(1), None)
        self.finished = (finished | (best == self.eos)).unsqueeze(1)
        self.last = best
        return torch.arange(best.shape[0], device=self.device)

    def _beam(self, log_probs: Tensor, attention: Tensor | None) -> Tensor:
        """Keep the K best extensions of each example's K hypotheses (GNMT length penalty).

        A hypothesis contributes at most K of its example's K survivors, and within one row the
        rank follows the log-probability (its score and length penalty are the row's own), so the
        K best of each row (N, K) hold the survivors: the ranking then reads K·K candidates per
        example, not K·V."""
        K, config = self.K, self.config
        E, N = self.examples, self.rows
        finished = self.finished.view(N)
        top_log_probs, top_tokens = log_probs.topk(K, dim=1)  # (N, K)
        if finished.any():  # a finished hypothesis continues only with PAD, at no cost
            pad_only = torch.full_like(top_log_probs[:1], NEG_INF)
            pad_only[0, 0] = 0.0
            top_log_probs = torch.where(finished.unsqueeze(1), pad_only, top_log_probs)
            top_tokens = top_tokens.masked_fill(finished.unsqueeze(1), self.pad)
        candidates = self.scores.view(N, 1) + top_log_probs  # (N, K)
        candidate_lengths = (self.lengths + (~self.finished).long()).view(N, 1)  # (N, 1)
        ranked = candidates / length_penalty(candidate_lengths, config.length_penalty)
        _, best = ranked.view(E, K * K).topk(K, dim=1)  # (E, K) among each example's K·K candidates
        example_start = (torch.arange(E, device=self.device) * K).unsqueeze(1)  # (E, 1)
        rows = (example_start + best // K).view(N)  # which hypothesis each survivor extends
        new_tokens = top_tokens.view(E, K * K).gather(1, best).view(N)
        self.scores = candidates.view(E, K * K).gather(1, best)
        self.lengths = candidate_lengths.view(N)[rows].view(E, K)
        was_finished = finished[rows]  # (N,) ended before this step: this step's token is PAD
        self.finished = was_finished.view(E, K) | (new_tokens == self.eos).view(E, K)
        self.tokens = torch.cat([self.tokens[rows], new_tokens.unsqueeze(1)], 1)
        if attention is not None and (config.coverage_penalty > 0 or self.return_attention):
            attention = attention.float()[rows]
            # a finished hypothesis reads nothing more: its PAD steps' attention is not coverage
            spent = attention.masked_fill(was_finished.unsqueeze(1), 0.0)
            self._record(attention.unsqueeze(1) if self.return_attention else None, spent, rows)
        self.last = new_tokens
        return rows

    def _record(
        self, step_attention: Tensor | None, spent: Tensor | None, rows: Tensor | None = None
    ) -> None:
        """Append one step's attention (N, 1, S) to the history and add ``spent`` (N, S) to the
        coverage, after following ``rows``; the source width S may have changed since the last step."""
        width = (step_attention if step_attention is not None else spent).shape[-1]
        if spent is not None:
            coverage = (
                spent.new_zeros(spent.shape) if self.coverage is None else fit_width(self.coverage, width)
            )
            self.coverage = (coverage if rows is None else coverage[rows]) + spent
        if step_attention is not None:
            T = self.tokens.shape[1] - 1  # the steps before this one
            history = self.history
            if history is None:
                history = step_attention.new_zeros(step_attention.shape[0], T, width)
            history = fit_width(history, width)
            history = history if rows is None else history[rows]
            self.history = torch.cat([history, step_attention], 1)

    def done(self) -> list[int]:
        """The examples whose search is over: every hypothesis ended, or max_length steps taken."""
        over = self.finished.all(1) | (self.steps >= self.config.max_length)
        return over.nonzero().flatten().tolist()

    def results(self, examples: Sequence[int]) -> SearchResult:
        """The best hypothesis of each of these examples, in the order given."""
        index = torch.tensor(examples, dtype=torch.long, device=self.device)
        K, T = self.K, self.tokens.shape[1]
        if K == 1:
            best_score, chosen = self.scores[index, 0], index
        else:
            final = self.scores[index] / length_penalty(
                self.lengths[index].clamp_min(1), self.config.length_penalty
            )
            if self.coverage is not None and self.config.coverage_penalty > 0:
                # OpenNMT's "summary" penalty: attention a source token received beyond 1 in total.
                coverage = self.coverage.view(self.examples, K, -1)[index]  # (n, K, S)
                final = final - self.config.coverage_penalty * (coverage - 1.0).clamp_min(0.0).sum(-1)
            best_score, best_beam = final.max(1)  # (n,)
            chosen = index * K + best_beam
        starts = [T - steps for steps in self.steps[index].tolist()]  # each example's first column
        rows = [_strip(row[start:], self.eos, self.pad)
                for row, start in zip(self.tokens[chosen].tolist(), starts, strict=True)]  # fmt: skip
        attention = None
        if self.history is not None:  # keep the steps that produced the tokens (and the EOS)
            history = self.history[chosen]
            attention = [history[i, start : start + len(row) + 1].cpu()
                         for i, (row, start) in enumerate(zip(rows, starts, strict=True))]  # fmt: skip
        return SearchResult(rows, best_score.tolist(), attention)

    def remove(self, examples: Sequence[int]) -> Tensor:
        """Drop these examples; returns the rows (N',) that stay, in order, for the caller's state."""
        keep = torch.ones(self.examples, dtype=torch.bool, device=self.device)
        keep[list(examples)] = False
        kept_rows = keep.repeat_interleave(self.K).nonzero().flatten()
        for name in ("steps", "scores", "lengths", "finished"):
            setattr(self, name, getattr(self, name)[keep])
        self.limits = RowLimits(self.limits.min_tokens[kept_rows], self.limits.max_tokens[kept_rows])
        self.last = self.last[kept_rows]
        oldest = int(self.steps.max()) if self.examples else 0
        T = self.tokens.shape[1]
        self.tokens = self.tokens[kept_rows, T - oldest :]  # columns older than every example go
        if self.coverage is not None:
            self.coverage = self.coverage[kept_rows]
        if self.history is not None:
            self.history = self.history[kept_rows, T - oldest :]
        return kept_rows


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
    search = Search(replace(config, beam_size=1), bos, eos, pad, device, return_attention)
    search.add(batch_size, config.source_lengths)
    for _ in range(config.max_length):
        log_probs, attention, state = step(search.last, state)
        search.advance(log_probs, attention)
        if search.finished.all():
            break
    return search.results(range(batch_size))


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
    search = Search(config, bos, eos, pad, device, return_attention)
    search.add(batch_size, config.source_lengths)
    for _ in range(config.max_length):
        log_probs, attention, state = step(search.last, state)
        state = reorder(state, search.advance(log_probs, attention))
        if search.finished.all():
            break
    return search.results(range(batch_size))
