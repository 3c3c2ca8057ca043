"""What ``/v1/explain`` adds to a summary: token strings, the cross-attention matrix, the
encoder's memory trace and the content selector's scores, as plain lists for JSON (rounded: the
page draws them, nobody needs 1e-7)."""

from __future__ import annotations

from typing import Any

import torch

from gatesum.model.bundle import Bundle
from gatesum.model.pipeline import Summary

DIGITS = 4


def explanation(bundle: Bundle, summary: Summary) -> dict[str, Any]:
    """source_tokens, summary_tokens (EOS included when generated), attention, memory, selection
    (None without a selector; an extractive summary has no attention, summary tokens or memory)."""
    source_ids = summary.source_ids or []
    attention = summary.attention if summary.attention is not None else torch.zeros(0, len(source_ids))
    rows = attention.shape[0]  # summary tokens + EOS, or fewer when max_length cut it short
    summary_ids = [*summary.token_ids, bundle.model.config.eos_id][:rows]
    memory = summary.memory_trace
    return {
        "source_tokens": bundle.tokenizer.id_to_piece(source_ids),
        "summary_tokens": bundle.tokenizer.id_to_piece(summary_ids),
        "attention": [[round(value, DIGITS) for value in row] for row in attention.float().tolist()],
        # significant digits, not decimals: the page draws the trace on a log scale, 3e-7 is not 0
        "memory": [float(f"{value:.{DIGITS}g}") for value in memory] if memory else None,
        "selection": [round(value, DIGITS) for value in summary.selection] if summary.selection else None,
    }
