"""Attention of the decoder state over the encoder outputs.

Scores e_i for each source position i, turned into weights a = softmax(e) over the real
(non-padding) positions only:

    mlp      e_i = v · tanh(W_h h_i + W_s s_t [+ w_c c_i] + b)     Bahdanau et al. 2015
    general  e_i = s_t · (W_a h_i) [+ w_c c_i]                       Luong et al. 2015
    dot      e_i = s_t · h_i [+ w_c c_i]                             Luong et al. 2015

h_i is the encoder output at i, s_t the decoder state, c_i the coverage (the sum of the
attention weights the source position has already received, See et al. 2017): it lets the
model see what it has already summarized, which fights repetition. The coverage weight w_c
starts at 0, so switching coverage on late in training starts from the model as it was.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

KINDS = ("mlp", "general", "dot", "none")


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dim of scores (B, S) where mask (B, S) is True.

    Uses the dtype's most negative finite value rather than -inf, so that a row with no real
    position gives uniform weights instead of NaN.
    """
    scores = scores.float().masked_fill(~mask, torch.finfo(torch.float32).min)
    return torch.softmax(scores, dim=-1)


class Attention(nn.Module):
    """Scores over a memory bank of encoder outputs (B, S, M) for a query (B, Q).

    ``keys(memory)`` precomputes the part that does not depend on the query (once per
    source); ``forward(query, keys, memory, mask, coverage)`` returns the weights (B, S)
    and the context vector (B, M).
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
        self.coverage_weight = nn.Parameter(torch.zeros(coverage_size)) if coverage else None  # w_c

    def keys(self, memory: Tensor) -> Tensor:
        """memory (B, S, M) -> keys (B, S, A): mlp 2·(W_h h + b) (see ``forward``), general W_a h, dot h."""
        if self.kind == "mlp":
            return 2 * self.memory_projection(memory)
        return memory if self.kind == "dot" else self.memory_projection(memory)

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, coverage: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """query (B, Q), keys (B, S, A), memory (B, S, M), mask (B, S), coverage (B, S) or None
        -> weights (B, S), context (B, M)."""
        use_coverage = coverage is not None and self.coverage_weight is not None
        if self.kind == "mlp":
            # v·tanh(u) computed as 2·v·σ(2u) − Σv, the same number: tanh(u) = 2σ(2u) − 1, and on
            # the CPU torch's tanh over this (B, S, A) tensor is several times slower than sigmoid.
            # The keys are already doubled; u is W_h h + b + W_s s [+ w_c c].
            doubled = keys + 2 * self.query_projection(query).unsqueeze(1)  # 2u (B, S, A)
            if use_coverage:
                doubled = torch.addcmul(doubled, coverage.unsqueeze(-1), 2 * self.coverage_weight)
            v = self.score_vector.weight.squeeze(0)  # (A,)
            scores = 2 * torch.sigmoid(doubled).matmul(v) - v.sum()  # (B, S)
        else:
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (B, S)
            if use_coverage:
                scores = scores + coverage * self.coverage_weight
        weights = masked_softmax(scores, mask).to(memory.dtype)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, M)
        return weights, context
