"""``Summarizer``: the attention encoder-decoder with copy and coverage, composed from parts.

source ids ─► Encoder (embedding + BiLSTM) ─► outputs ──────────────┐
                                 └─► final states ─► Bridge ─► Decoder step ◄─ previous token
                                                               │  attention over outputs
                                                               ▼
                                             p_gen · P_vocab + (1 − p_gen) · copy

Training (``forward``) runs the decoder over all target positions under teacher forcing — at
once when the config has no input feeding; inference (``generate``) steps one token at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from gatesum.model.attention import RowGrid
from gatesum.model.config import ModelConfig
from gatesum.model.copy_mask import copy_masked
from gatesum.model.decoder import PROBABILITY_FLOOR, Decoder, DecoderState
from gatesum.model.encoder import Bridge, Encoder, EncoderOutput
from gatesum.model.search import GenerationConfig, SearchResult, beam_search, greedy_search


@dataclass
class Generation(SearchResult):
    encoder_gates: list | None = None  # per layer·direction, name -> (B, S, H), on request


class Summarizer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_id)
        self.encoder = Encoder(config, self.embedding)
        self.bridge = Bridge(config)
        self.decoder = Decoder(config, self.embedding)

    def forward(
        self,
        source: Tensor,
        source_lengths: Tensor,
        target_input: Tensor,
        target_output: Tensor,
        coverage_loss_weight: float = 0.0,
    ) -> tuple[Tensor, dict[str, float]]:
        """Teacher-forced loss.

        source (B, S), source_lengths (B,), target_input (B, T) = [BOS, y_1..], target_output
        (B, T) = [y_1.., EOS], both padded with PAD. Returns the NLL per non-pad target token
        (+ λ · coverage loss when λ = ``coverage_loss_weight`` > 0, a training setting) and a dict
        of statistics.
        """
        weight = coverage_loss_weight  # λ
        encoded = self.encoder(source, source_lengths)
        track_coverage = weight > 0 or self.decoder.coverage_in_use()
        state = self.decoder.initial_state(encoded, self.bridge(encoded), track_coverage)
        decoded = self.decoder(target_input, state, encoded)  # (B, T, ...)
        log_vocab = self.decoder.target_log_probs(decoded.attentional, target_output).float()  # (B, T)
        target_mask = target_output != self.config.pad_id  # (B, T)
        tokens = target_mask.sum().clamp_min(1)
        attention_t = decoded.attention.float() if decoded.attention is not None else None  # (B, T, S)
        copy_gate_t = decoded.copy_gate.float() if decoded.copy_gate is not None else None  # (B, T, 1)
        if copy_gate_t is not None:
            nll = self._copy_nll(log_vocab, copy_gate_t, attention_t, source, target_output)
        else:
            nll = -log_vocab  # (B, T)
        nll = torch.where(target_mask, nll, 0.0).sum() / tokens  # selection: padding never reaches the loss
        loss, stats = nll, {"nll": nll.item(), "tokens": int(tokens)}
        if decoded.coverage is not None and weight > 0:
            # See et al. eq. 12: Σ_i min(a_t,i, c_t,i), what is attended again after being covered.
            overlap = torch.minimum(attention_t, decoded.coverage).sum(-1)  # (B, T)
            coverage_loss = (overlap * target_mask).sum() / tokens
            loss = loss + weight * coverage_loss
            stats["coverage_loss"] = coverage_loss.item()
        if copy_gate_t is not None:
            stats["p_gen"] = (copy_gate_t.squeeze(-1) * target_mask).sum().item() / int(tokens)
        return loss, stats

    @staticmethod
    def _copy_nll(
        log_vocab: Tensor, copy_gate: Tensor, attention: Tensor, source: Tensor, target: Tensor
    ) -> Tensor:
        """−log P(y_t) under the pointer-generator mixture, without building (B, T, V) mixtures.

        P(y) = p_gen · P_vocab(y) + (1 − p_gen) · Σ_{i: x_i = y} a_i, clamped before the log;
        log_vocab (B, T) = log P_vocab(y_t), copy_gate (B, T, 1), attention (B, T, S).
        """
        vocab_probability = log_vocab.exp()  # (B, T)
        same_token = source.unsqueeze(1) == target.unsqueeze(2)  # (B, T, S)
        copy_probability = (attention * same_token).sum(-1)  # (B, T)
        p_gen = copy_gate.squeeze(-1)
        probability = p_gen * vocab_probability + (1 - p_gen) * copy_probability
        return -probability.clamp_min(PROBABILITY_FLOOR).log()

    @torch.no_grad()
    def generate(
        self,
        source: Tensor,
        source_lengths: Tensor,
        config: GenerationConfig | None = None,
        return_attention: bool = False,
        return_gates: bool = False,
        copy_source: Tensor | None = None,
    ) -> Generation:
        """Summaries of a batch of sources (B, S): token ids without BOS/EOS, best first.
        ``copy_source`` (B, S): the bottom-up copy mask, ids with PAD where copying is not
        allowed (model/copy_mask.py); None: copy from every source token."""
        config = config or GenerationConfig()
        encoded = self.encoder(source, source_lengths, return_gates=return_gates)
        gates = encoded.gates
        masked = copy_source is not None and self.config.copy
        if masked:
            encoded = replace(encoded, source=copy_source)  # only the copy term reads it
        B, K = source.shape[0], config.beam_size
        keys = self.decoder.keys(encoded)  # (B, S, A): once per example, as the memory
        layers, grid = self.bridge(encoded), None
        if K > 1:  # K rows per example, each example's memory shared by its rows (``RowGrid``)
            encoded, layers = beam_rows(encoded, layers, K)
            grid = RowGrid(None, K)
        state = self.decoder.initial_state(encoded, layers, self.decoder.coverage_in_use())

        def step(tokens: Tensor, state: DecoderState):
            output, state = self.decoder.step(tokens, state, encoded, keys, grid)
            copied = copy_masked(output, encoded, self.config.pad_id) if masked else output
            return self.decoder.log_probs(copied, encoded.source), output.attention, state

        ids = {"bos": self.config.bos_id, "eos": self.config.eos_id, "pad": self.config.pad_id}
        if K == 1:
            result = greedy_search(
                step, state, B, config, device=source.device, return_attention=return_attention, **ids
            )
        else:
            result = beam_search(
                step,
                DecoderState.index_select,
                state,
                B,
                config,
                device=source.device,
                return_attention=return_attention,
                **ids,
            )
        return Generation(result.tokens, result.scores, result.attention, gates)


def beam_rows(encoded: EncoderOutput, layers: list, beams: int) -> tuple[EncoderOutput, list]:
    """Per example (B) -> per decoding row (B·K, example by example): the source ids and mask
    (what the copy term and the attention weights read per row) and the decoder's starting state
    per layer, repeated K = ``beams`` times; the memory stays one per example (``RowGrid``)."""
    rows = torch.arange(encoded.mask.shape[0], device=encoded.mask.device).repeat_interleave(beams)
    mask, source = encoded.mask.index_select(0, rows), encoded.source.index_select(0, rows)  # (B·K, S)
    encoded = replace(encoded, mask=mask, source=source)
    return encoded, DecoderState(layers, None, None).index_select(rows).layers
