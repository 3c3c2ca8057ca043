"""Decoder: one step at a time on our cells, with attention, input feeding and copy.

One step t, given the previous token y_{t−1} and the previous attentional vector ~s_{t−1}:

    s_t   = cell([emb(y_{t−1}); ~s_{t−1}], s_{t−1})        input feeding (Luong et al. 2015)
    a_t, ctx_t = attention(s_t, encoder outputs, coverage_t)
    ~s_t  = tanh(W_o [ctx_t; s_t])                          the attentional vector
    P_vocab = softmax(V ~s_t)                               V tied to the embedding if asked
    p_gen = σ(w [ctx_t; s_t; emb(y_{t−1})])                  See et al. 2017, eq. 8
    P(w)  = p_gen P_vocab(w) + (1 − p_gen) Σ_{i: x_i = w} a_t,i
    coverage_{t+1} = coverage_t + a_t

The copy term scatters attention onto the source token ids themselves. The tokenizer has
byte fallback, so every source word has ids inside the vocabulary: no extended vocabulary
of source-only words is needed, and the scatter never goes out of range.

With attention "none" the decoder sees only the encoder's final state, through the bridge.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatesum.model.attention import Attention
from gatesum.model.cells import CELLS
from gatesum.model.config import ModelConfig
from gatesum.model.encoder import EncoderOutput

PROBABILITY_FLOOR = 1e-12  # clamp before the log: p_gen reaching 0 or 1 must not give -inf


@dataclass
class DecoderState:
    """Everything carried from one step to the next, batch first."""

    layers: list  # per layer: h (B, H) or (h, C)
    attentional: Tensor | None  # ~s_{t−1} (B, H), fed to the next input; None without attention
    coverage: Tensor | None  # (B, S) sum of past attention weights; None without coverage

    def index_select(self, index: Tensor) -> DecoderState:
        def pick(t):
            if t is None:
                return None
            if isinstance(t, tuple):
                return tuple(x.index_select(0, index) for x in t)
            return t.index_select(0, index)

        return replace(
            self,
            layers=[pick(s) for s in self.layers],
            attentional=pick(self.attentional),
            coverage=pick(self.coverage),
        )


@dataclass
class StepOutput:
    attentional: Tensor  # (B, H) ~s_t, input to the output projection
    attention: Tensor | None  # (B, S) a_t
    copy_gate: Tensor | None  # (B, 1) p_gen
    coverage: Tensor | None  # (B, S) coverage before this step (for the coverage loss)


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.config = config
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        H = config.decoder_hidden_size
        self.uses_attention = config.attention != "none"
        feed_size = H if self.uses_attention else 0
        cell_class = CELLS[config.decoder_cell]
        options = {"peephole": config.peephole} if config.decoder_cell == "lstm" else {}
        self.cells = nn.ModuleList(
            cell_class(config.embedding_size + feed_size if layer == 0 else H, H, **options)
            for layer in range(config.decoder_layers)
        )
        if self.uses_attention:
            self.attention = Attention(
                config.attention, H, config.encoder_output_size, config.attention_size, config.coverage
            )
            self.combine = nn.Linear(config.encoder_output_size + H, H, bias=False)  # W_o
        if config.copy:
            self.copy_gate = nn.Linear(config.encoder_output_size + H + config.embedding_size, 1)
        if config.tie_embeddings:  # V = E·P: project to the embedding size, then share E
            self.to_embedding = nn.Linear(H, config.embedding_size, bias=False)
            self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        else:
            self.output = nn.Linear(H, config.vocab_size)

    def initial_state(
        self, encoded: EncoderOutput, layers: list, track_coverage: bool = True
    ) -> DecoderState:
        """The state before the first step. ``track_coverage=False`` skips the coverage input,
        which is exact while its weight w_c is still 0 (see ``coverage_in_use``)."""
        B = encoded.outputs.shape[0]
        H = self.config.decoder_hidden_size
        attentional = encoded.outputs.new_zeros(B, H) if self.uses_attention else None
        coverage = None
        if self.config.coverage and track_coverage:
            coverage = encoded.mask.new_zeros(encoded.mask.shape, dtype=torch.float32)
        return DecoderState(layers, attentional, coverage)

    def coverage_in_use(self) -> bool:
        """Whether the coverage input changes anything: w_c starts at 0 and stays there until a
        coverage phase trains it, and until then the (costly) coverage feature can be skipped."""
        weight = self.attention.coverage_weight if self.uses_attention else None
        return weight is not None and bool(weight.detach().ne(0).any())

    def keys(self, encoded: EncoderOutput) -> Tensor | None:
        """The query-independent part of attention, computed once per source."""
        return self.attention.keys(encoded.outputs) if self.uses_attention else None

    def step(
        self, previous_token: Tensor, state: DecoderState, encoded: EncoderOutput, keys: Tensor | None
    ) -> tuple[StepOutput, DecoderState]:
        """previous_token (B,) -> (this step's outputs, the next state)."""
        embedded = self.dropout(self.embedding(previous_token))  # (B, E)
        layer_input = embedded if state.attentional is None else torch.cat([embedded, state.attentional], -1)
        new_layers = []
        for layer, cell in enumerate(self.cells):
            if layer > 0:
                layer_input = self.dropout(layer_input)
            new = cell(layer_input, state.layers[layer])
            new_layers.append(new)
            layer_input = cell.hidden(new)
        top = layer_input  # s_t (B, H)
        if not self.uses_attention:
            return StepOutput(top, None, None, None), DecoderState(new_layers, None, None)
        weights, context = self.attention(top, keys, encoded.outputs, encoded.mask, state.coverage)
        features = torch.cat([context, top], -1)  # (B, M + H)
        attentional = torch.tanh(self.combine(features))  # ~s_t (B, H)
        copy_gate = None
        if self.config.copy:
            copy_gate = torch.sigmoid(self.copy_gate(torch.cat([features, embedded], -1)))  # (B, 1)
        coverage = state.coverage + weights if state.coverage is not None else None
        output = StepOutput(attentional, weights, copy_gate, state.coverage)
        return output, DecoderState(new_layers, attentional, coverage)

    def logits(self, attentional: Tensor) -> Tensor:
        """(..., H) -> vocabulary logits (..., V)."""
        attentional = self.dropout(attentional)
        if self.config.tie_embeddings:
            return F.linear(self.to_embedding(attentional), self.embedding.weight, self.output_bias)
        return self.output(attentional)

    def log_probs(self, step: StepOutput, source: Tensor) -> Tensor:
        """The full next-token distribution of one step, as log-probabilities (B, V)."""
        logits = self.logits(step.attentional).float()
        if step.copy_gate is None:
            return torch.log_softmax(logits, -1)
        p_gen = step.copy_gate.float()
        mixed = p_gen * torch.softmax(logits, -1)  # (B, V)
        mixed = mixed.scatter_add(1, source, (1 - p_gen) * step.attention.float())
        return mixed.clamp_min(PROBABILITY_FLOOR).log()
