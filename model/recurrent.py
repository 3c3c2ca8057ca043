"""``Recurrent``: a multi-layer, optionally bidirectional layer on our own cells.

The drop-in for torch's ``LSTM`` / ``GRU`` / ``RNN`` modules (batch first) that gatesum builds on.
Speed comes from three choices:

* the input projections of all time steps are one matmul before the time loop;
* the loop walks ``unbind``-ed views: indexing a large tensor inside the loop would make
  backward write a full-size gradient at every step;
* each step is one matmul plus the cell's fused pointwise work.

Padding never leaks: a padded step leaves the state unchanged, the backward direction starts
at each sequence's own last token, and outputs at padded positions are zero. Padding is masked
by selection (``torch.where``), never by multiplication: 0 · inf and 0 · NaN are NaN, so a
multiplied mask lets whatever the padding holds reach the outputs and, through backward, every
gradient. The input at padded positions is replaced by zeros before any cell sees it, so no
path (generic, fused, compiled; training or inference) computes on padding values at all.

Plain LSTM layers (no peepholes, no gates asked for) take a faster path, ``model.fused``: both
directions in one loop, a hand-written backward, and on CPU float32 the loops compiled from our
C++ (``model/csrc/lstm.cpp``). Set ``fused = False`` on a layer to force the generic path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatesum.model.cells import CELLS
from gatesum.model.fused import (
    BLOCK,
    MAX_INFERENCE_CHUNK,
    column_blocks,
    lstm_inference,
    lstm_layer,
    lstm_recurrence,
)

State = Tensor | tuple[Tensor, Tensor]  # h_n, or (h_n, c_n) for LSTM; each (L·D, B, H)
# Stretch lengths: a multiple of every input projection chunk of the fused loops (model/fused.py)
STRETCH_MULTIPLE = MAX_INFERENCE_CHUNK


@dataclass
class RecurrentOutput:
    """What ``Recurrent.forward_with_gates`` returns."""

    outputs: Tensor  # (B, T, D·H), zero at padded positions
    state: State  # the final state, ordered like torch: index layer·D + direction
    gates: list[dict[str, Tensor]]  # per layer·direction: name -> (B, T, H), in its reading order


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of x (B, T, ...) within its own length; padding stays at the end.

    Applying it twice gives x back, so the same call also un-reverses the outputs.
    """
    if lengths is None:
        return x.flip(1)
    T = x.shape[1]
    steps = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
    last = lengths.to(x.device).unsqueeze(1) - 1  # (B, 1)
    index = torch.where(steps <= last, last - steps, steps)  # (B, T)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return _Reverse.apply(x, index)


class _Reverse(torch.autograd.Function):
    """x.gather(1, index) for an index that reverses within each length: a permutation that is
    its own inverse, so backward is the same gather. Autograd's own backward of gather zeroes a
    tensor of x's size and scatter-adds into it: 2.5 vs 3.2 ms at (16, 400, 128) on one thread."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        return x.gather(1, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return grad.gather(1, index), None


def padding_mask(lengths: Tensor, max_length: int) -> Tensor:
    """(B,) lengths -> (B, T) bool, True at real tokens."""
    return torch.arange(max_length, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def _batch_first(hs: Tensor, lengths: Tensor | None, mask: Tensor | None) -> Tensor:
    """hs (D, T, B, H) in each direction's reading order -> outputs (B, T, D·H), padding zeroed.

    Without autograd each direction is written straight into its half of the output, with no
    intermediate ``cat``.
    """
    D, T, B, H = hs.shape
    # unbind, not hs[0] and hs[1]: the backward of each index zero-fills a (D, T, B, H) gradient
    # and the two are then added; unbind's backward stacks the two halves once
    directions = hs.unbind(0)  # D × (T, B, H)
    outputs = [directions[0].transpose(0, 1)]  # (B, T, H)
    if D == 2:
        outputs.append(reverse_padded(directions[1].transpose(0, 1), lengths))
    mask = mask.unsqueeze(-1) if mask is not None else None  # (B, T, 1) bool
    if torch.is_grad_enabled() and hs.requires_grad:
        if D == 1:
            return torch.where(mask, outputs[0], 0.0) if mask is not None else outputs[0].contiguous()
        joined = torch.cat(outputs, -1)  # a fresh tensor: mask it in place (same values and gradient
        # as ``where``, without a second (B, T, D·H) tensor: 5.6 vs 7.8 ms fwd+bwd at (16, 400, 256))
        return joined.masked_fill_(~mask, 0.0) if mask is not None else joined
    joined = hs.new_empty(B, T, D * H)
    for direction, output in enumerate(outputs):
        part = joined[..., direction * H : (direction + 1) * H]
        if mask is None:
            part.copy_(output)
        else:
            torch.where(mask, output, output.new_zeros(()), out=part)
    return joined


def _where(mask: Tensor, new: State, old: State) -> State:
    if isinstance(new, tuple):
        return tuple(torch.where(mask, n, o) for n, o in zip(new, old, strict=True))
    return torch.where(mask, new, old)


def scan(cell: nn.Module, x: Tensor, state: State, mask: Tensor | None, return_gates: bool = False):
    """Run ``cell`` over x (B, T, I) from ``state``.

    mask (B, T) bool or None. Returns outputs (B, T, H), the final state, and the gates
    stacked over time (name -> (B, T, H)) when ``return_gates``, else None.
    """
    projected = cell.input_projection(x)  # (B, T, G·H): every step's input part in one matmul
    step_masks = mask.unsqueeze(-1).unbind(1) if mask is not None else None  # T × (B, 1)
    outputs, gate_steps = [], []
    for t, projected_t in enumerate(projected.unbind(1)):
        new_state, gates = cell.step(projected_t, state, return_gates)
        state = new_state if step_masks is None else _where(step_masks[t], new_state, state)
        outputs.append(cell.hidden(state))
        if return_gates:
            gate_steps.append(gates)
    output = torch.stack(outputs, 1)  # (B, T, H)
    if mask is not None:
        output = torch.where(mask.unsqueeze(-1), output, 0.0)
    stacked = None
    if return_gates:
        stacked = {name: torch.stack([g[name] for g in gate_steps], 1) for name in gate_steps[0]}
    return output, state, stacked


class Recurrent(nn.Module):
    """Layers × directions of one cell kind, batch first.

    forward(x (B, T, I), lengths (B,) or None, state=None) ->
        outputs (B, T, H·D), final state: h_n (L·D, B, H), or (h_n, c_n) for LSTM,
    ordered like torch: index ``layer·D + direction``.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, **cell_options) -> None:  # fmt: skip
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, not {cell!r}")
        self.cell_kind = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.dropout = dropout
        cells = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for _ in range(self.num_directions):
                cells.append(CELLS[cell](layer_input, hidden_size, **cell_options))
        self.cells = nn.ModuleList(cells)
        self.fused = cell == "lstm" and not cell_options.get("peephole", False)
        self._stacked: dict[int, tuple[tuple, tuple]] = {}  # see _layer_weights

    @property
    def bidirectional(self) -> bool:
        return self.num_directions == 2

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        """x (B, T, I), lengths (B,) or None, state or None -> (outputs (B, T, D·H), final state),
        as torch's modules return them."""
        result = self._run(x, lengths, state, return_gates=False)
        return result.outputs, result.state

    def forward_with_gates(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> RecurrentOutput:
        """As ``forward``, with every layer's and direction's gate activations over time (the
        generic loop: the fused path keeps no gates)."""
        return self._run(x, lengths, state, return_gates=True)

    def _run(
        self, x: Tensor, lengths: Tensor | None, state: State | None, return_gates: bool
    ) -> RecurrentOutput:
        B, T, _ = x.shape
        mask = padding_mask(lengths.to(x.device), T) if lengths is not None else None
        if mask is not None:  # no cell ever computes on padding (inf or NaN there would leak)
            x = torch.where(mask.unsqueeze(-1), x, 0.0)
        initial = self._split_state(state)
        finals, all_gates = [], []
        layer_input = x
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
            if self.fused and not return_gates:
                layer_input, layer_finals = self._fused_layer(layer, layer_input, lengths, mask, initial)
                finals.extend(layer_finals)
                continue
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                cell = self.cells[index]
                start = initial[index] if initial is not None else cell.initial_state(B, x)
                reverse = direction == 1
                source = reverse_padded(layer_input, lengths) if reverse else layer_input
                output, final, gates = scan(cell, source, start, mask, return_gates)
                outputs.append(reverse_padded(output, lengths) if reverse else output)
                finals.append(final)
                if gates is not None:
                    all_gates.append(gates)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
        return RecurrentOutput(layer_input, self._join_state(finals), all_gates)

    def run_stretch(
        self, layer: int, inputs: list[Tensor], states: list[State] | None
    ) -> tuple[list[Tensor], list[State]]:
        """One layer over a stretch of a sequence too long to read at once, for a caller that
        reads it in pieces, layer by layer (model/selector_pass.py); no padding, no dropout.

        inputs: per direction (B, T, I) in sequence order, the backward direction's stretch read
        from its last position to its first; states: per direction h (B, H), or (h, C) for LSTM,
        from where the previous stretch left it, None at the sequence's ends. Returns per
        direction the outputs (B, T, H) in sequence order and the state after the stretch.
        Stretches whose lengths are multiples of ``STRETCH_MULTIPLE`` give a fused LSTM layer
        exactly the outputs of one pass over the whole sequence (its input projection goes
        ``fused.inference_chunk`` steps at a time either way, a divisor of that multiple).
        """
        D, H = self.num_directions, self.hidden_size
        cells = self.cells[layer * D : (layer + 1) * D]
        if states is None:
            states = [cell.initial_state(inputs[0].shape[0], inputs[0]) for cell in cells]
        if not self.fused:
            outputs, finals = [], []
            for direction, (cell, source, state) in enumerate(zip(cells, inputs, states, strict=True)):
                reverse = direction == 1
                output, final, _ = scan(cell, source.flip(1) if reverse else source, state, None)
                outputs.append(output.flip(1) if reverse else output)
                finals.append(final)
            return outputs, finals
        sources = [inputs[0], *(source.flip(1) for source in inputs[1:])]  # each in its reading order
        x = torch.stack([source.transpose(0, 1) for source in sources])  # time major (D, T, B, I)
        h0, c0 = (torch.stack(part) for part in zip(*states, strict=True))  # (D, B, H) each
        weight_ih, weight_hh, bias, transposed, blocks = self._layer_weights(layer)
        inferred = lstm_inference(x, weight_ih, weight_hh, bias, h0, c0, None, transposed, blocks)
        if inferred is not None:
            output, h_n, c_n = inferred  # (B, T, D·H): the loop writes direction 1 in sequence order
            outputs = list(output.split(H, -1))
        else:
            hs, cs = lstm_recurrence(x, weight_ih, weight_hh, bias, h0, c0)  # (D, T, B, H) each
            h_n, c_n = hs[:, -1], cs[:, -1]
            outputs = [hs[0].transpose(0, 1), *(h.flip(0).transpose(0, 1) for h in hs[1:])]
        return outputs, list(zip(h_n.unbind(0), c_n.unbind(0), strict=True))

    def _fused_layer(self, layer: int, x: Tensor, lengths: Tensor | None, mask: Tensor | None, initial):
        """One LSTM layer, all directions at once, through ``lstm_layer``.

        x (B, T, I) -> outputs (B, T, D·H), and [(h_n, c_n)] per direction, each (B, H).
        """
        B = x.shape[0]
        D, H = self.num_directions, self.hidden_size
        first = layer * D
        sources = [x, reverse_padded(x, lengths)] if D == 2 else [x]
        x = torch.stack([source.transpose(0, 1) for source in sources])  # time major (D, T, B, I)
        if initial is None:
            h0 = c0 = x.new_zeros(D, B, H)
        else:
            h0, c0 = (torch.stack(part) for part in zip(*initial[first : first + D], strict=True))
        weight_ih, weight_hh, bias, transposed, blocks = self._layer_weights(layer)
        inferred = lstm_inference(x, weight_ih, weight_hh, bias, h0, c0, lengths, transposed, blocks)
        if inferred is not None:
            output, h_n, c_n = inferred  # without autograd, in our compiled loop
            return output, list(zip(h_n.unbind(0), c_n.unbind(0), strict=True))
        # Steps past a sequence's end ran on padding: its final state is the one after step length − 1.
        lengths = lengths.to(x.device) if lengths is not None else None
        last = (lengths - 1).clamp(min=0) if lengths is not None else None  # (B,)
        hs, h_n, c_n = lstm_layer(x, weight_ih, weight_hh, bias, h0, c0, last)  # (D, T, B, H), (D, B, H) ×2
        if lengths is not None:
            empty = (lengths == 0).unsqueeze(1)  # (B, 1): no step read, the state stays the initial one
            h_n, c_n = torch.where(empty, h0, h_n), torch.where(empty, c0, c_n)
        return _batch_first(hs, lengths, mask), list(zip(h_n.unbind(0), c_n.unbind(0), strict=True))

    def _layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        """The fused loops' W (D, 4H, I), U (D, 4H, H), b (D, 4H): the layer's cells' weights
        stacked over directions; then what the compiled inference loop multiplies h_{t−1} by, Uᵀ
        (D, H, 4H) and Uᵀ in column blocks (``fused.column_blocks``, None where 4H is not a
        multiple of ``fused.BLOCK``). Without autograd all five are kept until a weight changes
        (its storage or version), so that inference, one call per text, does not copy them each
        time; under autograd (training) the stack goes through it and the last two are None."""
        cells = self.cells[layer * self.num_directions : (layer + 1) * self.num_directions]
        weights = [[getattr(cell, name) for cell in cells] for name in ("weight_ih", "weight_hh", "bias")]
        if torch.is_grad_enabled() and any(weight.requires_grad for group in weights for weight in group):
            return (*(torch.stack(group) for group in weights), None, None)
        key = tuple((weight.data_ptr(), weight._version, weight.device)
                    for group in weights for weight in group)  # fmt: skip
        kept = self._stacked.get(layer)
        if kept is None or kept[0] != key:
            with torch.no_grad():
                stacked = tuple(torch.stack(group) for group in weights)
                weight_hh = stacked[1]
                blocks = column_blocks(weight_hh) if weight_hh.shape[1] % BLOCK == 0 else None
                kept = key, (*stacked, weight_hh.transpose(1, 2).contiguous(), blocks)
            self._stacked[layer] = kept
        return kept[1]

    def _split_state(self, state: State | None):
        if state is None:
            return None
        if isinstance(state, tuple):
            return list(zip(state[0].unbind(0), state[1].unbind(0), strict=True))
        return list(state.unbind(0))

    def _join_state(self, finals: list) -> State:
        if isinstance(finals[0], tuple):
            return torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals])
        return torch.stack(finals)

    @classmethod
    def from_torch(cls, module: nn.Module) -> Recurrent:
        """The numerically equivalent layer of torch's ``LSTM`` / ``GRU`` / ``RNN`` (any ``RNNBase``)."""
        kinds = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}
        if module.mode not in kinds or not module.bias or getattr(module, "proj_size", 0):
            raise ValueError(f"cannot convert {module!r}: needs bias=True and no projection")
        options = {"nonlinearity": "relu"} if module.mode == "RNN_RELU" else {}
        ours = cls(kinds[module.mode], module.input_size, module.hidden_size, module.num_layers,
                   module.bidirectional, module.dropout, **options)  # fmt: skip
        for layer in range(module.num_layers):
            for direction in range(ours.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                weights = [getattr(module, f"{name}{suffix}") for name in
                           ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]  # fmt: skip
                ours.cells[layer * ours.num_directions + direction].load_torch_weights(*weights)
        return ours.to(module.weight_ih_l0.device)
