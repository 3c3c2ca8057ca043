"""One document through a recall model: the recall after every token, the key the readout names,
and the memory trace, in as few passes over the text as the cell allows.

``recall_curve`` and ``recall_trace`` (``model/recall.py``) each read the document once. For the
gated cells one pass gives both — the outputs feed the readout, the gates the trace (LSTM ∏f,
GRU ∏(1 − z), ``model/memory.py``) — so ``read_document`` takes one pass for them and two for
the plain RNN, whose trace needs autograd (‖∂h_T/∂h_t‖). Either way the work is linear in the
length of the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gatesum.model.errors import GatesumError
from gatesum.model.memory import gate_retention, memory_trace
from gatesum.model.recall import RecallModel


@dataclass
class RecallReadout:
    """What ``read_document`` returns, for a key of k symbols and a text of T tokens."""

    recall: Tensor  # (T,): P(right key) had the document ended after token t
    answers: Tensor  # (T, k): the key the readout names after token t
    trace: Tensor  # (k + T,): the share of what was written at each position left at the end
    key: Tensor  # (k,): the key planted

    @property
    def correct(self) -> Tensor:
        """(T,) bool: the readout names the whole key after token t."""
        return (self.answers == self.key).all(-1)


def key_symbols(model: RecallModel, key: int | Sequence[int]) -> Tensor:
    """The key as a (1, k) tensor of symbols; GatesumError when it does not fit the model."""
    key = [key] if isinstance(key, int) else list(key)
    config = model.config
    if len(key) != config.key_length or not all(0 <= symbol < config.key_symbols for symbol in key):
        raise GatesumError(f"the key must be {config.key_length} symbol(s) in [0, {config.key_symbols})")
    return torch.tensor([key])


@torch.no_grad()
def read_document(
    model: RecallModel, token_ids: Sequence[int] | Tensor, key: int | Sequence[int]
) -> RecallReadout:
    """Plant ``key`` before ``token_ids`` (tokenizer ids, (T,)) and read the document once (twice
    for the plain RNN). ``recall`` equals ``recall_curve(model, token_ids, key)`` and ``trace``
    equals ``recall_trace(model, token_ids, key)``."""
    was_training = model.training
    model.eval()
    key_row = key_symbols(model, key)  # (1, k)
    ids = torch.as_tensor(token_ids, dtype=torch.int64).view(1, -1)  # (1, T)
    inputs = model.embedding(model.document(key_row, ids))  # (1, k + T, E)
    encoder = model.encoder
    if encoder.cell_kind == "rnn":
        outputs, _ = encoder(inputs)  # (1, k + T, H)
        trace = memory_trace(encoder, inputs)[0]
    else:
        run = encoder.forward_with_gates(inputs)
        outputs = run.outputs
        top_forward = (encoder.num_layers - 1) * encoder.num_directions  # memory_trace's default
        trace = gate_retention(encoder.cell_kind, run.gates[top_forward])[0]
    model.train(was_training)
    k, K = model.config.key_length, model.config.key_symbols
    logits = model.readout(outputs[0, k:]).view(-1, k, K)  # (T, k, K): after each text token
    symbols = key_row.view(1, k, 1).expand(len(logits), k, 1)  # (T, k, 1)
    recall = logits.log_softmax(-1).gather(-1, symbols).squeeze(-1).sum(-1).exp()  # (T,)
    return RecallReadout(recall, logits.argmax(-1), trace, key_row[0])
