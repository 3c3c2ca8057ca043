"""Encoder: embedding + bidirectional ``Recurrent`` on our cells, and the bridge to the decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gatesum.model.config import ModelConfig
from gatesum.model.recurrent import Recurrent, padding_mask


@dataclass
class EncoderOutput:
    """What the decoder reads. Every tensor has the batch first, so beams can reorder it."""

    outputs: Tensor  # (B, S, D·H_enc): the memory bank attention reads
    mask: Tensor  # (B, S) bool, True at real tokens
    source: Tensor  # (B, S) token ids, for the copy distribution
    final_hidden: Tensor  # (B, D·H_enc) top layer's final h, directions concatenated
    final_cell: Tensor | None  # (B, D·H_enc) the same for the LSTM memory cell C
    gates: list | None = None  # per layer·direction, name -> (B, S, H), on request

    def index_select(self, index: Tensor) -> EncoderOutput:
        """Rows ``index`` of every tensor (beam search repeats each example K times)."""

        def pick(t):
            return None if t is None else t.index_select(0, index)

        return EncoderOutput(
            pick(self.outputs),
            pick(self.mask),
            pick(self.source),
            pick(self.final_hidden),
            pick(self.final_cell),
        )


class Encoder(nn.Module):
    """forward(source (B, S), source_lengths (B,)) -> EncoderOutput."""

    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        options = {"peephole": config.peephole} if config.encoder_cell == "lstm" else {}
        self.recurrent = Recurrent(
            config.encoder_cell,
            config.embedding_size,
            config.encoder_hidden_size,
            config.encoder_layers,
            config.bidirectional,
            config.dropout if config.encoder_layers > 1 else 0.0,
            **options,
        )
        if config.gate_init != "default":
            from gatesum.model.init import apply_gate_init

            apply_gate_init(self.recurrent, config.gate_init, config.gate_init_max_lag)

    def forward(self, source: Tensor, source_lengths: Tensor, return_gates: bool = False) -> EncoderOutput:
        embedded = self.dropout(self.embedding(source))  # (B, S, E)
        if return_gates:
            result = self.recurrent.forward_with_gates(embedded, source_lengths)
            outputs, state, gates = result.outputs, result.state, result.gates
        else:
            outputs, state = self.recurrent(embedded, source_lengths)  # (B, S, D·H), (L·D, B, H) or a pair
            gates = None
        hidden, cell = state if isinstance(state, tuple) else (state, None)
        directions = self.recurrent.num_directions

        def top_layer(t: Tensor) -> Tensor:  # (L·D, B, H) -> (B, D·H)
            return torch.cat(t[-directions:].unbind(0), dim=-1)

        return EncoderOutput(
            outputs=outputs,
            mask=padding_mask(source_lengths.to(source.device), source.shape[1]),
            source=source,
            final_hidden=top_layer(hidden),
            final_cell=top_layer(cell) if cell is not None else None,
            gates=gates,
        )


class Bridge(nn.Module):
    """Maps the encoder's final states to each decoder layer's initial state.

        h_0 = tanh(W_h [h_fwd; h_bwd] + b_h),   C_0 = W_c [C_fwd; C_bwd] + b_c

    (C_0 from the encoder's h when the encoder has no memory cell.)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layers = config.decoder_layers
        self.size = config.decoder_hidden_size
        self.hidden = nn.Linear(config.encoder_output_size, self.layers * self.size)
        self.lstm = config.decoder_cell == "lstm"
        self.cell = nn.Linear(config.encoder_output_size, self.layers * self.size) if self.lstm else None

    def forward(self, encoded: EncoderOutput) -> list:
        """-> one state per decoder layer: h (B, H) or (h, C) for an LSTM decoder."""
        hidden = torch.tanh(self.hidden(encoded.final_hidden)).chunk(self.layers, -1)
        if not self.lstm:
            return list(hidden)
        cell_source = encoded.final_cell if encoded.final_cell is not None else encoded.final_hidden
        cell = self.cell(cell_source).chunk(self.layers, -1)
        return list(zip(hidden, cell, strict=True))
