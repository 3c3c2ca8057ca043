"""Attention of the decoder state over the encoder outputs.

Scores e_i for each source position i, turned into weights a = softmax(e) over the real
(non-padding) positions only:

    mlp      e_i = v · tanh(W_h h_i + W_s s_t [+ w_c c_i] + b)     Bahdanau et al. 2015
    general  e_i = s_t · (W_a h_i) [+ w_c c_i]   (bilinear)         Luong et al. 2015
    dot      e_i = s_t · h_i [+ w_c c_i]                             Luong et al. 2015

h_i is the encoder output at i, s_t the decoder state, c_i the coverage (the sum of the
attention weights the source position has already received, See et al. 2017): it lets the
model see what it has already summarized, which fights repetition. The coverage weight w_c
starts at 0, so switching coverage on late in training starts from the model as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

KINDS = ("mlp", "general", "dot", "none")
ADDITIVE_CHUNK_ELEMENTS = 1 << 20  # of the (B, t, S, A) tensor: ~4 MB, about one core's L2 cache


@dataclass(frozen=True)
class RowGrid:
    """Where decoding rows sit when several share one source (the K beams of an example): the
    memory and keys are then held once per example, (E, S, ·), not once per row, and a step's
    attention reads each example's memory once for all its rows: one (G, Q)·(Q, S) product per
    example instead of G (1, Q)·(Q, S) ones, which read the same memory G times. At 16 articles ×
    4 beams × 400 positions that was 26 MB of memory and as much of keys per step, and the two
    products took 22% of the decoding time (torch.profiler, one thread); read once per example,
    5%.

    Row r sits at ``index[r]`` of an (E, G) grid, G = ``width``, so it reads example
    ``index[r] // G``; ``index`` None: the rows are the grid itself, in order (R = E·G, as
    ``Summarizer.generate`` lays out its beams). Grid places without a row compute on zeros.
    """

    index: Tensor | None  # (R,) long
    width: int  # G

    def spread(self, rows: Tensor, examples: int) -> Tensor:
        """(R, X) -> (E, G, X), zeros where no row sits."""
        if self.index is None:
            return rows.view(examples, self.width, -1)
        grid = rows.new_zeros(examples * self.width, rows.shape[-1])
        return grid.index_copy_(0, self.index, rows).view(examples, self.width, -1)

    def collect(self, grid: Tensor) -> Tensor:
        """(E, G, X) -> (R, X): each row's entry."""
        flat = grid.reshape(-1, grid.shape[-1])
        return flat if self.index is None else flat.index_select(0, self.index)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dim of scores (B, S) or (B, T, S) where mask (B, S) or (B, 1, S)
    is True.

    Uses the dtype's most negative finite value rather than -inf, so that a row with no real
    position gives uniform weights instead of NaN.
    """
    scores = scores.float().masked_fill(~mask, torch.finfo(torch.float32).min)
    return torch.softmax(scores, dim=-1)


class Attention(nn.Module):
    """Scores over a memory bank of encoder outputs (B, S, M) for a query (B, Q).

    ``keys(memory)`` precomputes the part that does not depend on the query (once per
    source); ``forward(query, keys, memory, mask, coverage)`` returns the weights (B, S)
    and the context vector (B, M) for one query per row, or (B, T, S) and (B, T, M) for T.

    For general attention, keys=None projects the queries instead of the memory:
    e_t,i = s_t · (W_a h_i) = (s_tᵀ W_a) · h_i, the same scores from T projected rows instead
    of S (teacher forcing reads T = 60 positions of S = 400: 7× less matmul, forward and back).
    """

    def __init__(
        self, kind: str, query_size: int, memory_size: int, attention_size: int, coverage: bool = False
    ) -> None:
        super().__init__()
        if kind not in KINDS or kind == "none":
            raise ValueError(f"attention must be one of {KINDS[:-1]}, not {kind!r}")
        if kind == "dot" and query_size != memory_size:
            raise ValueError(f"dot attention needs equal sizes, got query {query_size}, memory {memory_size}")
        self.kind = kind
        if kind == "mlp":
            self.memory_projection = nn.Linear(memory_size, attention_size, bias=True)  # W_h, b
            self.query_projection = nn.Linear(query_size, attention_size, bias=False)  # W_s
            self.score_vector = nn.Linear(attention_size, 1, bias=False)  # v
            coverage_size = attention_size
        elif kind == "general":
            self.memory_projection = nn.Linear(memory_size, query_size, bias=False)  # W_a
            coverage_size = 1
        else:
            coverage_size = 1
        # w_c (See et al. 2017, eq. 11): how the coverage c_i enters the scores. Not to be confused
        # with λ, the coverage loss weight (a training setting), or β, the decoding penalty.
        self.w_c = nn.Parameter(torch.zeros(coverage_size)) if coverage else None

    def keys(self, memory: Tensor) -> Tensor:
        """memory (B, S, M) -> keys (B, S, A): mlp 2·(W_h h + b) (see ``forward``), general W_a h, dot h."""
        if self.kind == "mlp":
            return 2 * self.memory_projection(memory)
        return memory if self.kind == "dot" else self.memory_projection(memory)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        memory: Tensor,
        mask: Tensor,
        coverage: Tensor | None = None,
        grid: RowGrid | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One query per row, or T of them at once.

        query (B, Q), keys (B, S, A) or None (general/dot: see the class docs), memory (B, S, M),
        mask (B, S), coverage (B, S) or None -> weights (B, S), context (B, M). With query
        (B, T, Q) and coverage (B, T, S): weights (B, T, S), context (B, T, M), each position t
        scored on its own (teacher forcing). With ``grid`` (one query per row only): keys and
        memory are per example, (E, S, ·), and the rows (R) sit in the grid; mask and coverage
        stay per row, (R, S).
        """
        if grid is not None:
            return self._shared(query, keys, memory, mask, coverage, grid)
        single = query.dim() == 2
        if single:
            query = query.unsqueeze(1)  # (B, 1, Q)
            coverage = coverage.unsqueeze(1) if coverage is not None else None  # (B, 1, S)
        if coverage is None or self.w_c is None:
            coverage = None
        if self.kind == "mlp":
            scores = self._additive_scores(2 * self.query_projection(query), keys, coverage)  # (B, T, S)
        else:  # general (bilinear) / dot: e_t,i = s_t · k_i for every (t, i) in one bmm
            query, keys = self._bilinear_operands(query, keys, memory)
            scores = torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)
            if coverage is not None:
                scores = scores + coverage * self.w_c
        weights = masked_softmax(scores, mask.unsqueeze(1)).to(memory.dtype)  # (B, T, S)
        context = torch.bmm(weights, memory)  # (B, T, M)
        if single:
            return weights.squeeze(1), context.squeeze(1)
        return weights, context

    def _shared(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, coverage: Tensor | None,
        grid: RowGrid,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """``forward`` for rows sharing their example's keys (E, S, A) and memory (E, S, M): query
        (R, Q), mask (R, S), coverage (R, S) or None -> weights (R, S), context (R, M). The same
        numbers as ``forward`` on keys and memory repeated per row."""
        E = memory.shape[0]
        if self.kind == "mlp":
            doubled = grid.spread(2 * self.query_projection(query), E)  # (E, G, A)
            spread = grid.spread(coverage, E) if coverage is not None and self.w_c is not None else None
            scores = grid.collect(self._additive_scores(doubled, keys, spread))  # (R, S)
        else:
            projected, keys = self._bilinear_operands(query.unsqueeze(1), keys, memory)
            scores = grid.collect(torch.bmm(grid.spread(projected.squeeze(1), E), keys.transpose(1, 2)))
            if coverage is not None and self.w_c is not None:
                scores = scores + coverage * self.w_c
        weights = masked_softmax(scores, mask).to(memory.dtype)  # (R, S)
        context = grid.collect(torch.bmm(grid.spread(weights, E), memory))  # (R, M)
        return weights, context

    def with_running_coverage(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, coverage: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """All T positions where coverage feeds the scores: a_t reads coverage_t = coverage_1 +
        Σ_{k<t} a_k, so the weights go position by position; the rest is batched (general/dot:
        the query part of every score in one bmm, only + w_c c_t in the loop; the context in one
        bmm at the end).

        query (B, T, Q), keys (B, S, A), memory (B, S, M), mask (B, S), coverage (B, S) before
        position 1 -> weights (B, T, S), context (B, T, M), coverage before each position (B, T, S).
        """
        mask = mask.unsqueeze(1)  # (B, 1, S)
        if self.kind == "mlp":
            per_position = (2 * self.query_projection(query)).unbind(1)  # T × 2 W_s s_t (B, A)
        else:
            query, keys = self._bilinear_operands(query, keys, memory)
            per_position = torch.bmm(query, keys.transpose(1, 2)).unbind(1)  # T × s_t · k_i (B, S)
        weights, coverages = [], []
        # unbind, not indexing in the loop: backward then writes no (B, T, ·) buffer per position
        for position in per_position:
            coverages.append(coverage)
            if self.kind == "mlp":
                scores = self._additive_scores(position.unsqueeze(1), keys, coverage.unsqueeze(1))
            else:
                scores = (position + coverage * self.w_c).unsqueeze(1)
            weight = masked_softmax(scores, mask).to(memory.dtype)  # (B, 1, S)
            weights.append(weight)
            coverage = coverage + weight.squeeze(1)
        weights = torch.cat(weights, 1)  # (B, T, S)
        return weights, torch.bmm(weights, memory), torch.stack(coverages, 1)

    def _bilinear_operands(self, query: Tensor, keys: Tensor | None, memory: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, T, Q), keys (B, S, Q) or None, memory (B, S, M) -> the two sides of the score
        bmm: (query, keys) as given, or, without keys, (s_tᵀ W_a (B, T, M), memory)."""
        if keys is not None:
            return query, keys
        if self.kind == "general":
            query = query.matmul(self.memory_projection.weight)  # W_a (Q, M): (B, T, M)
        return query, memory

    def _additive_scores(self, doubled_queries: Tensor, keys: Tensor, coverage: Tensor | None) -> Tensor:
        """2 W_s s_t (B, T, A), keys (B, S, A), coverage (B, T, S) or None -> scores (B, T, S).

        v·tanh(u) computed as 2·v·σ(2u) − Σv, the same number: tanh(u) = 2σ(2u) − 1, and on the
        CPU torch's tanh over this (B, S, A) tensor is several times slower than sigmoid. The
        keys are already doubled; u is W_h h + b + W_s s [+ w_c c]. The (B, T, S, A) tensor is
        built a few positions at a time (``ADDITIVE_CHUNK_ELEMENTS``): measured on the CPU,
        chunks that stay in cache made fwd + bwd 2.2× faster than one tensor for all T.
        """
        B, T, _ = doubled_queries.shape
        v = self.score_vector.weight.squeeze(0)  # (A,)
        chunk = max(1, ADDITIVE_CHUNK_ELEMENTS // keys[0].numel() // B)
        scores = []
        for start in range(0, T, chunk):
            queries = doubled_queries[:, start : start + chunk].unsqueeze(2)  # (B, t, 1, A)
            doubled = keys.unsqueeze(1) + queries  # 2u (B, t, S, A)
            if coverage is not None:
                part = coverage[:, start : start + chunk].unsqueeze(-1)  # (B, t, S, 1)
                doubled = torch.addcmul(doubled, part, 2 * self.w_c)
            scores.append(2 * torch.sigmoid(doubled).matmul(v) - v.sum())  # (B, t, S)
        return scores[0] if len(scores) == 1 else torch.cat(scores, 1)
