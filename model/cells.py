"""Our own recurrent cells: plain RNN, GRU and LSTM, with the gate equations written out.

Every cell is split in two so that a layer can run fast:

* ``input_projection(x)`` computes the input part of all gates, ``W x + b``, in one matmul.
  A layer calls it once for every time step of a sequence before its time loop.
* ``step(projected_x, state)`` adds the recurrent part, ``U h_{t-1}``, with one more matmul,
  and does the pointwise gate work.

``forward(x, state)`` chains the two for a single step, with the same call signature as the
matching ``torch.nn`` cell. Gate weights are fused: ``weight_ih`` stacks the input weights of
every gate, ``weight_hh`` the recurrent ones. Notation: ``σ`` is the logistic sigmoid and ``⊙``
the Hadamard (element-wise) product.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]
Gates = dict[str, Tensor]


class _Cell(nn.Module):
    """Weights shared by all cells: ``gate_count`` gates of ``hidden_size`` units each."""

    gate_count = 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        rows = self.gate_count * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))  # W, all gates stacked
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))  # U, all gates stacked
        self.bias = nn.Parameter(torch.empty(rows))  # b
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/√H, 1/√H), the initialization torch.nn uses for its recurrent cells."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def input_projection(self, x: Tensor) -> Tensor:
        """``W x + b`` for every gate: (..., I) -> (..., gate_count·H)."""
        return F.linear(x, self.weight_ih, self.bias)

    def initial_state(self, batch_size: int, like: Tensor):
        """The all-zero state for ``batch_size`` sequences, on ``like``'s device and dtype."""
        return like.new_zeros(batch_size, self.hidden_size)

    @staticmethod
    def hidden(state) -> Tensor:
        """The part of the state that is the cell's output h_t."""
        return state

    def forward(self, x: Tensor, state=None):
        """One step on x (B, I); ``state`` defaults to zeros. Returns the new state, as torch's
        cells do: h (B, H), or (h, C) for the LSTM."""
        return self.with_gates(x, state)[0]

    def with_gates(self, x: Tensor, state=None) -> tuple[Any, dict[str, Tensor]]:
        """One step on x (B, I), as ``forward``: the new state and the gate activations (name ->
        (B, H)) that made it."""
        if state is None:
            state = self.initial_state(x.shape[0], x)
        new_state, gates = self.step(self.input_projection(x), state, return_gates=True)
        return new_state, gates


class RNNCell(_Cell):
    """The plain (Elman) recurrent cell.

        h_t = tanh(W x_t + U h_{t−1} + b)

    The whole state is rewritten at every step: nothing decides what to keep, so what was
    read long ago fades (or explodes) through repeated multiplication by U.
    """

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size)

    def step(self, projected_x: Tensor, h: Tensor, return_gates: bool = False):
        """projected_x (B, H) = W x_t + b, h (B, H) -> (h_t, gates)."""
        pre_activation = torch.addmm(projected_x, h, self.weight_hh.t())  # (B, H)
        h = torch.tanh(pre_activation) if self.nonlinearity == "tanh" else F.relu(pre_activation)
        return h, ({"hidden": h} if return_gates else None)

    @classmethod
    def from_torch(cls, cell: nn.Module) -> RNNCell:
        """The numerically equivalent cell of torch's ``RNNCell``."""
        ours = cls(cell.input_size, cell.hidden_size, cell.nonlinearity)
        ours.load_torch_weights(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        return ours

    @torch.no_grad()
    def load_torch_weights(self, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> None:
        self.weight_ih.copy_(w_ih)
        self.weight_hh.copy_(w_hh)
        self.bias.copy_(b_ih + b_hh)


class GRUCell(_Cell):
    """The gated recurrent unit (Cho et al. 2014), update gate in the material's sense.

        z_t  = σ(W_z x_t + U_z h_{t−1} + b_z)        update gate: how much new content to take
        r_t  = σ(W_r x_t + U_r h_{t−1} + b_r)        reset gate: how much of the past feeds ~h_t
        ~h_t = tanh(W x_t + U (r_t ⊙ h_{t−1}) + b)            reset_after=False (textbook)
        ~h_t = tanh(W x_t + b + r_t ⊙ (U h_{t−1} + b_U))      reset_after=True  (cuDNN, torch)
        h_t  = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ ~h_t

    z near 0 keeps the past, z near 1 takes the new content. torch's ``GRUCell`` writes
    h' = (1 − z)·n + z·h, the opposite sense of z; ``from_torch`` converts by negating the
    update gate's weights and biases, since 1 − σ(a) = σ(−a).

    Weight rows are stacked [r, z, candidate]. The textbook form needs the reset gate before
    it can multiply U by r ⊙ h, so its recurrent part takes two matmuls instead of one.
    """

    gate_count = 3

    def __init__(self, input_size: int, hidden_size: int, reset_after: bool = True) -> None:
        super().__init__(input_size, hidden_size)
        self.reset_after = reset_after
        # b_U, the candidate's recurrent bias, sits inside r_t ⊙ (·) in the cuDNN form.
        self.bias_hh_candidate = nn.Parameter(torch.zeros(hidden_size)) if reset_after else None
        self.reset_parameters()

    def step(self, projected_x: Tensor, h: Tensor, return_gates: bool = False):
        """projected_x (B, 3H) = W x_t + b, h (B, H) -> (h_t, gates)."""
        H = self.hidden_size
        x_gates, x_candidate = projected_x[:, : 2 * H], projected_x[:, 2 * H :]
        if self.reset_after:
            recurrent = h.matmul(self.weight_hh.t())  # (B, 3H)
            reset, update = torch.sigmoid(x_gates + recurrent[:, : 2 * H]).chunk(2, 1)
            recurrent_candidate = recurrent[:, 2 * H :] + self.bias_hh_candidate
            candidate = torch.tanh(torch.addcmul(x_candidate, reset, recurrent_candidate))
        else:
            gate_weights, candidate_weights = self.weight_hh[: 2 * H], self.weight_hh[2 * H :]
            reset, update = torch.sigmoid(torch.addmm(x_gates, h, gate_weights.t())).chunk(2, 1)
            candidate = torch.tanh(torch.addmm(x_candidate, reset * h, candidate_weights.t()))
        h = torch.lerp(h, candidate, update)  # (1 − z) ⊙ h + z ⊙ ~h
        gates = {"reset": reset, "update": update, "candidate": candidate} if return_gates else None
        return h, gates

    @classmethod
    def from_torch(cls, cell: nn.Module) -> GRUCell:
        """The numerically equivalent cell (``reset_after=True``) of torch's ``GRUCell``."""
        ours = cls(cell.input_size, cell.hidden_size, reset_after=True)
        ours.load_torch_weights(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        return ours

    @torch.no_grad()
    def load_torch_weights(self, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> None:
        H = self.hidden_size
        # torch stacks rows [r, z, n] with z in the opposite sense: negate the z rows.
        sign = torch.ones(3 * H, 1, dtype=w_ih.dtype, device=w_ih.device)
        sign[H : 2 * H] = -1
        self.weight_ih.copy_(w_ih * sign)
        self.weight_hh.copy_(w_hh * sign)
        bias = b_ih.clone()
        bias[: 2 * H] += b_hh[: 2 * H]
        self.bias.copy_(bias * sign.squeeze(1))
        self.bias_hh_candidate.copy_(b_hh[2 * H :])


class LSTMCell(_Cell):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), with optional peepholes.

        i_t  = σ(W_i x_t + U_i h_{t−1} [+ p_i ⊙ C_{t−1}] + b_i)    input gate
        f_t  = σ(W_f x_t + U_f h_{t−1} [+ p_f ⊙ C_{t−1}] + b_f)    forget gate
        ~C_t = tanh(W_c x_t + U_c h_{t−1} + b_c)                     cell candidate
        C_t  = f_t ⊙ C_{t−1} + i_t ⊙ ~C_t                            long-term memory
        o_t  = σ(W_o x_t + U_o h_{t−1} [+ p_o ⊙ C_t] + b_o)          output gate
        h_t  = o_t ⊙ tanh(C_t)                                       short-term memory, read out

    The bracketed peephole terms (Gers & Schmidhuber 2000, the "extended form") are there
    when ``peephole=True``. The forget-gate bias starts at 1 (Gers et al. 2000; Jozefowicz
    et al. 2015) so that an untrained cell remembers rather than forgets.

    Weight rows are stacked [i, f, o, ~C] (torch stacks [i, f, ~C, o]): the three sigmoid
    gates then sit side by side and take one sigmoid call.
    """

    gate_count = 4

    def __init__(self, input_size: int, hidden_size: int, peephole: bool = False) -> None:
        super().__init__(input_size, hidden_size)
        self.peephole = peephole
        # p_i, p_f, p_o: diagonal peephole weights, one vector each.
        self.peephole_weight = nn.Parameter(torch.zeros(3, hidden_size)) if peephole else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            H = self.hidden_size
            self.bias[H : 2 * H].fill_(1.0)

    def initial_state(self, batch_size: int, like: Tensor) -> LSTMState:
        zeros = like.new_zeros(batch_size, self.hidden_size)
        return zeros, zeros

    @staticmethod
    def hidden(state: LSTMState) -> Tensor:
        return state[0]

    def step(self, projected_x: Tensor, state: LSTMState, return_gates: bool = False):
        """projected_x (B, 4H) = W x_t + b, state (h, C) each (B, H) -> ((h_t, C_t), gates)."""
        h, c = state
        H = self.hidden_size
        pre_activation = torch.addmm(projected_x, h, self.weight_hh.t())  # (B, 4H)
        if self.peephole:
            p_i, p_f, p_o = self.peephole_weight
            input_gate = torch.sigmoid(torch.addcmul(pre_activation[:, :H], p_i, c))
            forget_gate = torch.sigmoid(torch.addcmul(pre_activation[:, H : 2 * H], p_f, c))
            candidate = torch.tanh(pre_activation[:, 3 * H :])
            c = torch.addcmul(forget_gate * c, input_gate, candidate)
            output_gate = torch.sigmoid(torch.addcmul(pre_activation[:, 2 * H : 3 * H], p_o, c))
        else:
            input_gate, forget_gate, output_gate = torch.sigmoid(pre_activation[:, : 3 * H]).chunk(3, 1)
            candidate = torch.tanh(pre_activation[:, 3 * H :])
            c = torch.addcmul(forget_gate * c, input_gate, candidate)
        h = output_gate * torch.tanh(c)
        gates = None
        if return_gates:
            gates = {
                "input": input_gate,
                "forget": forget_gate,
                "output": output_gate,
                "candidate": candidate,
                "cell": c,
            }
        return (h, c), gates

    @classmethod
    def from_torch(cls, cell: nn.Module) -> LSTMCell:
        """The numerically equivalent cell of torch's ``LSTMCell``."""
        ours = cls(cell.input_size, cell.hidden_size)
        ours.load_torch_weights(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        return ours

    @torch.no_grad()
    def load_torch_weights(self, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> None:
        H = self.hidden_size
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
        self.weight_ih.copy_(w_ih[order])
        self.weight_hh.copy_(w_hh[order])
        self.bias.copy_((b_ih + b_hh)[order])


CELLS: dict[str, type[_Cell]] = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}
