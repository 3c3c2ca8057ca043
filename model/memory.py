"""Memory traces: how much of what an encoder wrote at each source position survives to the end.

For source position t of a document of length T (positions 0 … T−1), the retention r_t is

* LSTM:  r_t = ∏_{s=t+1}^{T−1} f_s          the forget gates between t and the end, since
         C_T = (∏ f_s) ⊙ C_t + (what was written after t);
* GRU:   r_t = ∏_{s=t+1}^{T−1} (1 − z_s)    since h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ ~h_t;
* RNN:   r_t = ‖∂h_T / ∂h_t‖_F / √H         nothing gates the state, so we ask autograd how
         strongly the final state still depends on it (the root-mean-square singular value
         of the Jacobian: 1 for the identity, so r_{T−1} = 1 for every cell).

Every trace is 1 at the last position (an empty product). Gated traces are per unit products,
averaged over units (``per_unit=True`` keeps them apart: (B, T, H)); for the RNN, unit k's
trace is the norm of row k of the Jacobian, how much of h_t reaches unit k of h_T.

Padding: positions at or past a sequence's length get retention 0. Gates computed there (the
layer keeps running on padding) are ignored, so a padded batch gives each sequence the trace
it would get alone.

Bidirectional and multi-layer encoders: by default the trace is that of the forward direction
of the top layer, what survives to the end of the document in the state a decoder starts from.
``direction=1`` traces the backward direction, whose "end" is the start of the document;
its trace is returned in source order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gatesum.model.recurrent import Recurrent, padding_mask, reverse_padded, scan

# name of the gate whose product is the retention, and whether that gate keeps (f) or writes (z)
_KEEP_GATES = {"lstm": ("forget", True), "gru": ("update", False)}


def gate_retention(kind: str, gates: dict[str, Tensor], lengths: Tensor | None = None,
                   per_unit: bool = False) -> Tensor:  # fmt: skip
    """Retention from one layer·direction's gates (name -> (B, T, H), reading order).

    Returns (B, T), or (B, T, H) with ``per_unit``. The product over the steps after t is an
    exponentiated reverse cumulative sum of logs: no underflow of partial products in the
    middle of a long document, and a gate of exactly 0 gives exactly 0.
    """
    if kind not in _KEEP_GATES:
        raise ValueError(f"gate retention needs an lstm or gru, not {kind!r}")
    name, keeps = _KEEP_GATES[kind]
    gate = gates[name]
    B, T, H = gate.shape
    log_keep = torch.log(gate) if keeps else torch.log1p(-gate)  # log f_s or log(1 − z_s), ≤ 0
    mask = None
    if lengths is not None:
        mask = padding_mask(lengths.to(gate.device), T).unsqueeze(-1)  # (B, T, 1)
        log_keep = torch.where(mask, log_keep, torch.zeros_like(log_keep))  # padding keeps all
    # suffix[t] = Σ_{s ≥ t} log_keep[s]; retention[t] = exp(suffix[t + 1]), and 1 at the end
    suffix = log_keep.flip(1).cumsum(1).flip(1)  # (B, T, H)
    after = torch.cat([suffix[:, 1:], suffix.new_zeros(B, 1, H)], 1)  # (B, T, H)
    retention = torch.exp(after)
    if mask is not None:
        retention = torch.where(mask, retention, 0.0)  # selection: 0 · NaN would be NaN
    return retention if per_unit else retention.mean(-1)


def rnn_retention(cell: nn.Module, inputs: Tensor, lengths: Tensor | None = None,
                  per_unit: bool = False, probes: int | None = None,
                  generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """‖∂h_T / ∂h_t‖_F / √H for every t, for a cell run over inputs (B, T, I) from zeros.

    One backward pass through time gives vᵀ ∂h_T/∂h_t for every t at once. With
    ``probes=None`` (exact) the batch is replicated H times and replica k starts its backward
    pass from e_k: one forward and one backward at batch B·H yield every row of every
    Jacobian, so ‖J‖_F² = Σ_k ‖e_kᵀ J‖². With ``probes=P`` the P rows are Gaussian
    v ~ N(0, I) and E‖vᵀ J‖² = ‖J‖_F² (Hutchinson), cheaper for large H; ``per_unit`` needs
    the exact form. Returns (B, T), or (B, T, H) with ``per_unit``.
    """
    B, T, _ = inputs.shape
    H = cell.hidden_size
    if probes is None:
        vectors = torch.eye(H, dtype=inputs.dtype, device=inputs.device)  # (P=H, H)
    elif per_unit:
        raise ValueError("per_unit needs the exact trace (probes=None)")
    else:
        vectors = torch.randn(probes, H, generator=generator, dtype=inputs.dtype).to(inputs.device)
    P = vectors.shape[0]
    with torch.enable_grad():
        x = inputs.detach().unsqueeze(0).expand(P, B, T, inputs.shape[-1]).reshape(P * B, T, -1)
        mask = None
        if lengths is not None:
            mask = padding_mask(lengths.to(x.device).repeat(P), T).unsqueeze(-1)  # (P·B, T, 1)
        state = x.new_zeros(P * B, H, requires_grad=True)  # keeps every state in the graph
        states = []
        for t, projected_t in enumerate(cell.input_projection(x).unbind(1)):
            new_state, _ = cell.step(projected_t, state)
            state = new_state if mask is None else torch.where(mask[:, t], new_state, state)
            states.append(state)
        seeds = vectors.unsqueeze(1).expand(P, B, H).reshape(P * B, H)  # replica p starts from v_p
        rows = torch.autograd.grad(state, states, grad_outputs=seeds, allow_unused=True)
    rows = torch.stack([r if r is not None else torch.zeros_like(seeds) for r in rows], 1)
    squared = rows.pow(2).sum(-1).view(P, B, T)  # ‖v_pᵀ ∂h_T/∂h_t‖²
    if per_unit:
        retention = squared.sqrt().permute(1, 2, 0)  # (B, T, H): row k = output unit k
    else:
        retention = (squared.mean(0) if probes is None else squared.mean(0) / H).sqrt()  # (B, T)
    if lengths is not None:
        valid = padding_mask(lengths.to(retention.device), T)  # (B, T)
        retention = retention * (valid.unsqueeze(-1) if per_unit else valid).to(retention.dtype)
    return retention.detach()


def _layer_input(encoder: Recurrent, inputs: Tensor, lengths: Tensor | None, layer: int) -> Tensor:
    """The input (B, T, D·H) that ``layer`` of ``encoder`` reads: the lower layers' outputs,
    run as ``Recurrent.forward`` runs them in eval mode (no dropout)."""
    mask = padding_mask(lengths.to(inputs.device), inputs.shape[1]) if lengths is not None else None
    layer_input = inputs
    for lower in range(layer):
        outputs = []
        for direction in range(encoder.num_directions):
            cell = encoder.cells[lower * encoder.num_directions + direction]
            source = reverse_padded(layer_input, lengths) if direction else layer_input
            start = cell.initial_state(inputs.shape[0], inputs)
            output, _, _ = scan(cell, source, start, mask)
            outputs.append(reverse_padded(output, lengths) if direction else output)
        layer_input = torch.cat(outputs, -1)
    return layer_input


@torch.no_grad()
def memory_trace(encoder: Recurrent, inputs: Tensor, lengths: Tensor | None = None, *,
                 layer: int = -1, direction: int = 0, per_unit: bool = False,
                 probes: int | None = None) -> Tensor:  # fmt: skip
    """Retention of each source position at the end of the document, for ``encoder`` reading
    inputs (B, T, I) (embedded tokens) with optional lengths (B,).

    Returns (B, T) in source order, or (B, T, H) with ``per_unit``; 0 on padding. LSTM and
    GRU traces come from the gates the encoder returns; the RNN trace from autograd (see
    ``rnn_retention``; ``probes`` picks its random-projection estimate).
    """
    layer = layer % encoder.num_layers
    if direction not in range(encoder.num_directions):
        raise ValueError(f"direction must be 0 or {encoder.num_directions - 1}, not {direction}")
    index = layer * encoder.num_directions + direction
    if encoder.cell_kind == "rnn":
        layer_input = _layer_input(encoder, inputs, lengths, layer)
        if direction:
            layer_input = reverse_padded(layer_input, lengths)
        retention = rnn_retention(encoder.cells[index], layer_input, lengths, per_unit, probes)
    else:
        gates = encoder.forward_with_gates(inputs, lengths).gates
        retention = gate_retention(encoder.cell_kind, gates[index], lengths, per_unit)
    return reverse_padded(retention, lengths) if direction else retention
