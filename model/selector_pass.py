"""``SelectorPass``: the content selector (model/selector.py) over one long document, a stretch
of time steps at a time, so that a scheduler can put other work between the stretches and stop
between any two of them (the service's long lane, issue #16).

A document of 100,000 characters is ~30,000 tokens; a BiLSTM tagger reads it in one pass of
several seconds. Here each layer reads it in stretches: the forward direction from the start,
the backward one from the end, each carrying its state (h, C) from one stretch to the next, so

    layer ℓ, stretch k:   forward  reads x[k·s : (k+1)·s]          from its state after stretch k − 1
                          backward reads x[T − (k+1)·s : T − k·s]   from its state after stretch k − 1
    after the last stretch of layer ℓ: its outputs (T, D·H) are the input of layer ℓ + 1

and after the last layer, q_i = σ(w · h_i + b) as ``ContentSelector.forward``. Each step still
sees the whole document on both sides: the probabilities equal one pass's
(``token_probabilities``) bit for bit (tests/model/test_selector_pass.py: LSTM and GRU, one or
two directions; ``Recurrent.run_stretch`` keeps the fused loop's projection chunks). The cost is
memory: one layer's outputs of the document, (T, D·H) floats (~36 MB for 35,000 tokens at the
default sizes), held from one stretch to the next.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gatesum.model.recurrent import STRETCH_MULTIPLE, State
from gatesum.model.selector import ContentSelector

DEFAULT_STEPS = 1024  # time steps read by one ``advance``: ~10 ms at the default sizes, 1 CPU thread


class SelectorPass:
    """P(copied) of every token of ``ids``, read a few stretches at a time (``advance``); always
    as in eval mode (no dropout)."""

    def __init__(self, selector: ContentSelector, ids: Sequence[int]) -> None:
        self.selector = selector
        self.length = len(ids)
        self.layers = selector.recurrent.num_layers
        self.layer = 0  # the layer being read
        self.position = 0  # its time steps read, in each direction: a multiple of STRETCH_MULTIPLE
        self.states: list[State] | None = None  # per direction, after the last stretch read
        device = next(selector.parameters()).device
        with torch.no_grad():
            ids_tensor = torch.as_tensor(ids, dtype=torch.long, device=device)[None]  # (1, T)
            self.inputs = selector.embedding(ids_tensor)  # (1, T, E): the layer's input
        self.outputs = self.inputs.new_empty(1, self.length, selector.config.output_size)  # (1, T, D·H)
        self.probabilities: Tensor | None = torch.zeros(0) if not self.length else None

    @property
    def done(self) -> bool:
        return self.probabilities is not None

    @property
    def tokens_left(self) -> float:
        """The work left, in tokens of a whole pass (T before the first ``advance``, 0 when done)."""
        if self.done:
            return 0.0
        return ((self.layers - self.layer) * self.length - self.position) / self.layers

    @torch.no_grad()
    def advance(self, steps: int = DEFAULT_STEPS) -> Tensor | None:
        """Read about ``steps`` more time steps (each direction; ≥ one stretch of
        ``STRETCH_MULTIPLE``), into the next layer when one ends; returns the probabilities (T,)
        on the CPU once the last layer is read, else None."""
        left = max(steps, STRETCH_MULTIPLE)
        while self.probabilities is None and left >= STRETCH_MULTIPLE:
            stretch = min(self.length - self.position, left - left % STRETCH_MULTIPLE)
            self._read(stretch)
            left -= stretch
        return self.probabilities

    def _read(self, stretch: int) -> None:
        """One stretch of the current layer: forward at the start's side, backward at the end's."""
        T, begin = self.length, self.position
        end = begin + stretch
        directions = [self.inputs[:, begin:end]]
        if self.selector.recurrent.bidirectional:
            directions.append(self.inputs[:, T - end : T - begin])
        outputs, self.states = self.selector.recurrent.run_stretch(self.layer, directions, self.states)
        H = self.selector.config.hidden_size
        self.outputs[:, begin:end, :H] = outputs[0]
        if len(outputs) == 2:
            self.outputs[:, T - end : T - begin, H:] = outputs[1]
        self.position = end
        if end == T:
            self._next_layer()

    def _next_layer(self) -> None:
        """The layer is read: its outputs feed the next one, or the output layer after the last."""
        self.layer, self.position, self.states = self.layer + 1, 0, None
        if self.layer < self.layers:
            self.inputs, self.outputs = self.outputs, self.inputs.new_empty(self.outputs.shape)
            return
        logits = self.selector.output(self.outputs).squeeze(-1)  # (1, T)
        self.probabilities = torch.sigmoid(logits)[0].cpu()
        self.inputs = self.outputs = None  # the memory goes back at once

    def run(self) -> Tensor:
        """Every stretch at once: the probabilities (T,)."""
        while (probabilities := self.advance(self.length * self.layers + STRETCH_MULTIPLE)) is None:
            pass
        return probabilities
