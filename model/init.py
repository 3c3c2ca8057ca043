"""Gate-bias initializations: how long an untrained gated cell remembers.

Before it has learned anything, a gated cell's memory time is set by its gate biases alone.
An LSTM unit whose forget gate sits at f keeps a fraction f of its memory cell per step, so
what was written decays like f^k and is gone after about 1 / (1 − f) steps. With the usual
small biases (f ≈ σ(0) = 0.5, or σ(1) ≈ 0.73 for our cells' default) that is 2–4 steps: the
gradient from a loss at the end of a 1,000-token document never reaches the start, and the
network cannot discover that the start mattered. Setting the biases so that memory times
already span the lags of the task lets the gradient through from the first step.

Chrono initialization (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?"):

    b_f ~ log U(1, T_max − 1),   b_i = −b_f

gives each LSTM unit a characteristic forgetting time 1 / (1 − σ(b_f)) = 1 + u, spread
between 2 and T_max steps, and a matching small input gate so that new content does not wash
out the memory. For our GRU, h_t = (1 − z) ⊙ h_{t−1} + z ⊙ ~h_t: z plays the part of 1 − f
and the analogue is

    b_z = −log U(1, T_max − 1)

so that z = σ(b_z) = 1 / (1 + u) and the memory time 1 / z = 1 + u spans the same range.
A plain RNN has no gate to bias; its memory is set by the spectrum of its recurrent weights.
"""

from __future__ import annotations

import torch
from torch import nn

from gatesum.model.cells import GRUCell, LSTMCell, RNNCell
from gatesum.model.recurrent import Recurrent

GATE_INITS = ("chrono", "default")


def _chrono_biases(hidden_size: int, max_lag: int, like: torch.Tensor, generator=None) -> torch.Tensor:
    """log U(1, max_lag − 1) for ``hidden_size`` units: memory times 1 + u in [2, max_lag]."""
    if max_lag < 2:
        raise ValueError(f"max_lag must be at least 2, not {max_lag}")
    uniform = torch.rand(hidden_size, generator=generator, dtype=like.dtype)
    return torch.log1p(uniform * (max_lag - 2)).to(like.device)  # log(1 + (max_lag − 2)·U(0,1))


@torch.no_grad()
def chrono_init(layer_or_cell: nn.Module, max_lag: int, generator: torch.Generator | None = None) -> None:
    """Chrono-initialize the gate biases of an LSTM or GRU cell, or of every cell of a
    ``Recurrent`` layer, in place.

    LSTM (rows [i, f, o, ~C]): b_f = log u, b_i = −log u, u ~ U(1, max_lag − 1).
    GRU (rows [r, z, ~h]):     b_z = −log u: z starts near 1 / (1 + u), keeping the past.

    ``max_lag`` is the longest dependency the task is expected to need (in steps). The other
    biases and all weights are left as they are. Raises ``TypeError`` for a plain RNN cell.
    """
    cells = layer_or_cell.cells if isinstance(layer_or_cell, Recurrent) else [layer_or_cell]
    for cell in cells:
        H = cell.hidden_size
        log_u = _chrono_biases(H, max_lag, cell.bias, generator)
        if isinstance(cell, LSTMCell):
            cell.bias[:H] = -log_u  # input gate
            cell.bias[H : 2 * H] = log_u  # forget gate
        elif isinstance(cell, GRUCell):
            cell.bias[H : 2 * H] = -log_u  # update gate, our sense: z → 0 keeps the past
        else:
            raise TypeError(f"chrono initialization needs a gated cell, not {type(cell).__name__}")


@torch.no_grad()
def apply_gate_init(recurrent: Recurrent, kind: str = "chrono", max_lag: int = 1000,
                    generator: torch.Generator | None = None) -> Recurrent:  # fmt: skip
    """Initialize ``recurrent``'s gate biases in place and return it.

    ``kind="chrono"``: ``chrono_init`` with ``max_lag``; a plain RNN has no gates and is left
    as it is. ``kind="default"``: every cell's own ``reset_parameters`` (torch's
    Uniform(−1/√H, 1/√H), with the LSTM forget bias at 1), which remembers for a few steps.
    """
    if kind not in GATE_INITS:
        raise ValueError(f"kind must be one of {GATE_INITS}, not {kind!r}")
    if kind == "default":
        for cell in recurrent.cells:
            cell.reset_parameters()
    elif not all(isinstance(cell, RNNCell) for cell in recurrent.cells):
        chrono_init(recurrent, max_lag, generator)
    return recurrent
