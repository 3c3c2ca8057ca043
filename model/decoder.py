"""Decoder: our cells with attention, copy and coverage; input feeding optional.

Position t, given the previous token y_{t−1} (and with input feeding the previous attentional
vector ~s_{t−1}):

    s_t   = cell([emb(y_{t−1}); ~s_{t−1}], s_{t−1})        input feeding (Luong et al. 2015)
    s_t   = cell(emb(y_{t−1}), s_{t−1})                      without it
    a_t, ctx_t = attention(s_t, encoder outputs, coverage_t)
    ~s_t  = tanh(W_o [ctx_t; s_t])                          the attentional vector
    P_vocab = softmax(V ~s_t)                               V tied to the embedding if asked
    p_gen = σ(w [ctx_t; s_t; emb(y_{t−1})])                  See et al. 2017, eq. 8
    P(w)  = p_gen P_vocab(w) + (1 − p_gen) Σ_{i: x_i = w} a_t,i
    coverage_t = Σ_{k<t} a_k                                 (coverage_1 = 0)

The copy term scatters attention onto the source token ids themselves. The tokenizer has
byte fallback, so every source word has ids inside the vocabulary: no extended vocabulary
of source-only words is needed, and the scatter never goes out of range.

Inference calls ``step``, one position at a time, in both modes. Teacher-forced training
calls ``forward`` for all T positions:

* with input feeding, s_t needs ~s_{t−1}, i.e. step t−1's attention: ``forward`` steps;
* without it, s_1..s_T depend only on the known y_0..y_{T−1}: the decoder layers run over all
  positions in one ``Recurrent`` call (plain LSTM: the fused C++ loops the encoder uses), then
  attention, ~s_t, p_gen and coverage for all positions as batched tensor ops, coverage as an
  exclusive cumulative sum of a over t. Where coverage feeds the scores (w_c ≠ 0, or w_c is
  being trained), a_t depends on coverage_t and so on every a_k before it: the attention
  weights alone then go position by position after the parallel recurrence (exact; the
  context and everything after it stay batched; ``Attention.with_running_coverage``).

With attention "none" the decoder sees only the encoder's final state, through the bridge.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatesum.model.attention import Attention, RowGrid
from gatesum.model.cells import CELLS
from gatesum.model.config import ModelConfig
from gatesum.model.encoder import EncoderOutput
from gatesum.model.kernels import lstm_ops
from gatesum.model.recurrent import Recurrent
from gatesum.model.vocabulary import target_log_probs

PROBABILITY_FLOOR = 1e-12  # clamp before the log: p_gen reaching 0 or 1 must not give -inf


@dataclass
class DecoderState:
    """Everything carried from one step to the next, batch first."""

    layers: list  # per layer: h (B, H) or (h, C)
    attentional: Tensor | None  # ~s_{t−1} (B, H) fed to the next input; None without input feeding
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
class DecoderOutput:
    """One step (``step``: shapes as below) or all T positions (``forward``: (B, T, ...))."""

    attentional: Tensor  # (B, H) ~s_t, input to the output projection
    attention: Tensor | None  # (B, S) a_t
    copy_gate: Tensor | None  # (B, 1) p_gen
    coverage: Tensor | None  # (B, S) coverage before this step (for the coverage loss)


def stack_layer_states(layers: list) -> Tensor | tuple[Tensor, Tensor]:
    """Per layer h (B, H) or (h, C) -> ``Recurrent``'s state: (L, B, H) or a pair of them."""
    if isinstance(layers[0], tuple):
        return tuple(torch.stack(part) for part in zip(*layers, strict=True))
    return torch.stack(layers)


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.config = config
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        H = config.decoder_hidden_size
        self.uses_attention = config.attention != "none"
        self.feeds_input = config.input_feeding and self.uses_attention
        options = {"peephole": config.peephole} if config.decoder_cell == "lstm" else {}
        if config.input_feeding:  # the cells stepped one at a time (parameter names as in v1 bundles)
            input_size = config.embedding_size + (H if self.feeds_input else 0)
            self.cells = nn.ModuleList(
                CELLS[config.decoder_cell](input_size if layer == 0 else H, H, **options)
                for layer in range(config.decoder_layers)
            )
        else:  # the same cells inside a Recurrent layer, which can also run all positions at once
            between_layers = config.dropout if config.decoder_layers > 1 else 0.0
            self.recurrent = Recurrent(config.decoder_cell, config.embedding_size, H, config.decoder_layers,
                                       dropout=between_layers, **options)  # fmt: skip
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
        # A training setting, not part of the model: the dtype of the output layer's matmuls in
        # the teacher-forced loss (None: the weights'; torch.bfloat16 on CPUs with bfloat16 matrix
        # units, ``model/vocabulary.py``). Inference always computes in the weights' dtype.
        self.output_matmul_dtype: torch.dtype | None = None

    @property
    def layer_cells(self) -> nn.ModuleList:
        """The decoder's cells, one per layer, bottom first."""
        return self.cells if self.config.input_feeding else self.recurrent.cells

    def initial_state(
        self, encoded: EncoderOutput, layers: list, track_coverage: bool = True
    ) -> DecoderState:
        """The state before the first step. ``track_coverage=False`` skips the coverage input,
        which is exact while its weight w_c is still 0 (see ``coverage_in_use``)."""
        B = encoded.mask.shape[0]  # rows (the memory may be per example: see ``step``)
        H = self.config.decoder_hidden_size
        attentional = encoded.outputs.new_zeros(B, H) if self.feeds_input else None
        coverage = None
        if self.config.coverage and track_coverage:
            coverage = encoded.mask.new_zeros(encoded.mask.shape, dtype=torch.float32)
        return DecoderState(layers, attentional, coverage)

    def coverage_in_use(self) -> bool:
        """Whether the coverage input changes anything: w_c starts at 0 and stays there until a
        coverage phase trains it, and until then the (costly) coverage feature can be skipped."""
        weight = self.attention.w_c if self.uses_attention else None
        return weight is not None and bool(weight.detach().ne(0).any())

    def keys(self, encoded: EncoderOutput) -> Tensor | None:
        """The query-independent part of attention, computed once per source."""
        return self.attention.keys(encoded.outputs) if self.uses_attention else None

    def step(
        self,
        previous_token: Tensor,
        state: DecoderState,
        encoded: EncoderOutput,
        keys: Tensor | None,
        grid: RowGrid | None = None,
    ) -> tuple[DecoderOutput, DecoderState]:
        """previous_token (B,) -> (this step's outputs, the next state). With ``grid``, rows share
        their example's memory: ``encoded.outputs`` and ``keys`` are (E, S, ·), one per example,
        while its mask and source are per row, (B, S), as the state is."""
        embedded = self.dropout(self.embedding(previous_token))  # (B, E)
        layer_input = embedded if state.attentional is None else torch.cat([embedded, state.attentional], -1)
        new_layers = []
        for layer, cell in enumerate(self.layer_cells):
            if layer > 0:
                layer_input = self.dropout(layer_input)
            new = cell(layer_input, state.layers[layer])
            new_layers.append(new)
            layer_input = cell.hidden(new)
        top = layer_input  # s_t (B, H)
        if not self.uses_attention:
            return DecoderOutput(top, None, None, None), DecoderState(new_layers, None, None)
        weights, context = self.attention(top, keys, encoded.outputs, encoded.mask, state.coverage, grid)
        attentional, copy_gate = self._read_out(top, context, embedded)
        coverage = state.coverage + weights if state.coverage is not None else None
        output = DecoderOutput(attentional, weights, copy_gate, state.coverage)
        return output, DecoderState(new_layers, attentional if self.feeds_input else None, coverage)

    def forward(
        self, target_input: Tensor, state: DecoderState, encoded: EncoderOutput, keys: Tensor | None = None
    ) -> DecoderOutput:
        """Teacher forcing: target_input (B, T) = [BOS, y_1, ..] -> every position's outputs,
        (B, T, ...), all positions at once where the mode allows (see the module docs). keys:
        ``self.keys(encoded)``, or None to leave them to this method (for general attention over
        all positions at once it then projects the T queries, not the S keys)."""
        if self.config.input_feeding:
            return self.stepped(target_input, state, encoded, keys)
        embedded = self.dropout(self.embedding(target_input))  # (B, T, E)
        top, _ = self.recurrent(embedded, None, stack_layer_states(state.layers))  # s_1..s_T (B, T, H)
        if not self.uses_attention:
            return DecoderOutput(top, None, None, None)
        if keys is None and self.attention.kind == "mlp":
            keys = self.keys(encoded)  # (B, S, A)
        coverage = state.coverage  # (B, S) or None
        if coverage is not None and (self.coverage_in_use() or self._trains_w_c()):
            weights, context, coverage = self.attention.with_running_coverage(
                top, keys, encoded.outputs, encoded.mask, coverage
            )  # (B, T, S), (B, T, M), (B, T, S)
        else:
            # (B, T, S), (B, T, M): one bmm for general/dot, cache-sized chunks of t for mlp
            weights, context = self.attention(top, keys, encoded.outputs, encoded.mask)
            if coverage is not None:  # w_c = 0 and frozen: a_t does not read coverage_t
                earlier = F.pad(weights[:, :-1].float().cumsum(1), (0, 0, 1, 0))  # Σ_{k<t} a_k (B, T, S)
                coverage = coverage.unsqueeze(1) + earlier
        attentional, copy_gate = self._read_out(top, context, embedded)
        return DecoderOutput(attentional, weights, copy_gate, coverage)

    def stepped(
        self, target_input: Tensor, state: DecoderState, encoded: EncoderOutput, keys: Tensor | None = None
    ) -> DecoderOutput:
        """``forward`` by calling ``step`` once per position: (B, T) -> outputs (B, T, ...)."""
        keys = self.keys(encoded) if keys is None else keys
        steps = []
        for token in target_input.unbind(1):
            output, state = self.step(token, state, encoded, keys)
            steps.append(output)

        def stacked(name: str) -> Tensor | None:
            values = [getattr(output, name) for output in steps]
            return None if values[0] is None else torch.stack(values, 1)

        names = ("attentional", "attention", "copy_gate", "coverage")
        return DecoderOutput(*(stacked(name) for name in names))

    def _trains_w_c(self) -> bool:
        weight = self.attention.w_c
        return weight is not None and weight.requires_grad and torch.is_grad_enabled()

    def _read_out(self, top: Tensor, context: Tensor, embedded: Tensor) -> tuple[Tensor, Tensor | None]:
        """s_t (.., H), ctx_t (.., M), emb(y_{t−1}) (.., E) -> ~s_t (.., H), p_gen (.., 1) or None."""
        features = torch.cat([context, top], -1)  # (.., M + H)
        attentional = torch.tanh(self.combine(features))  # ~s_t
        if not self.config.copy:
            return attentional, None
        return attentional, torch.sigmoid(self.copy_gate(torch.cat([features, embedded], -1)))

    def _output_layer(self, attentional: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """~s_t (..., H) -> what the vocabulary logits are made of, z = x Wᵀ + b: x (..., K), W
        (V, K), b (V,); tied, x = P ~s_t and W = E (K the embedding size), else x = ~s_t."""
        if self.config.tie_embeddings:
            return self.to_embedding(attentional), self.embedding.weight, self.output_bias
        return attentional, self.output.weight, self.output.bias

    def logits(self, attentional: Tensor) -> Tensor:
        """(..., H) -> vocabulary logits (..., V)."""
        return F.linear(*self._output_layer(self.dropout(attentional)))

    def target_log_probs(self, attentional: Tensor, target: Tensor) -> Tensor:
        """~s_t (B, T, H), target (B, T) -> log P_vocab(target) (B, T): what training reads of
        ``logits``, without writing the (B, T, V) distribution (``model/vocabulary.py``)."""
        hidden, weight, bias = self._output_layer(self.dropout(attentional))
        return target_log_probs(hidden, weight, bias, target, self.output_matmul_dtype)

    def log_probs(self, output: DecoderOutput, source: Tensor) -> Tensor:
        """The full next-token distribution as log-probabilities: (B, V) for one step, (B, T, V)
        for ``forward``'s T positions; source (B, S)."""
        if (compiled := self._compiled_log_probs(output, source)) is not None:
            return compiled
        logits = self.logits(output.attentional).float()
        if output.copy_gate is None:
            return torch.log_softmax(logits, -1)
        p_gen = output.copy_gate.float()
        mixed = p_gen * torch.softmax(logits, -1)  # (B, [T,] V)
        index = source if logits.dim() == 2 else source.unsqueeze(1).expand(-1, logits.shape[1], -1)
        mixed = mixed.scatter_add(-1, index, (1 - p_gen) * output.attention.float())
        return mixed.clamp_min(PROBABILITY_FLOOR).log()

    def _compiled_log_probs(self, output: DecoderOutput, source: Tensor) -> Tensor | None:
        """``log_probs`` of one decoding step with copy, in one pass over each row after its
        logits (``csrc/vocabulary.cpp`` ``mixed_log_probs``: outside the source's ids log P is
        z − lse + log p_gen), where that kernel runs: CPU float32, no autograd, no dropout, the
        library built. Else None: the torch ops below."""
        attentional = output.attentional
        if (
            output.copy_gate is None
            or attentional.dim() != 2
            or attentional.device.type != "cpu"
            or attentional.dtype != torch.float32
            or self.training
            or torch.is_grad_enabled()
            or (ops := lstm_ops()) is None
        ):
            return None
        hidden, weight, bias = self._output_layer(attentional)  # no dropout: eval mode only here
        logits = torch.mm(hidden, weight.t())  # (B, V), the bias added in the kernel
        copy_gate = output.copy_gate.reshape(-1).contiguous()  # (B,)
        attention, source = output.attention.contiguous(), source.contiguous()  # (B, S) each
        return ops.mixed_log_probs(logits, bias, copy_gate, attention, source, PROBABILITY_FLOOR)
