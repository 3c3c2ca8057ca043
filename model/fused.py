"""The LSTM recurrence of one layer, all directions at once, with a hand-written backward.

``Recurrent`` uses it for plain LSTM cells (no peepholes, no gates asked for); every other case
runs the generic ``scan`` under autograd. Why it is faster than autograd over ``LSTMCell.step``:

* both directions of a bidirectional layer step together: one ``baddbmm`` over the stacked
  weights (D, 4H, H) and one set of pointwise ops on (D, B, ·) instead of two of each;
* no masking in the loop. Padding is always at the end of a sequence (``reverse_padded`` keeps
  it there for the backward direction), so steps past a sequence's end only change values at
  padded positions: the caller zeroes those outputs and reads the final state at ``length − 1``;
* forward writes every step into preallocated buffers and records no graph; backward walks the
  steps in reverse with the LSTM derivatives written out, and computes the gradient of U = W_hh
  as ONE matmul over all steps at the end instead of a small one per step;
* the bias is added inside the step's matmul (a oneDNN post-op), so the input projection is a
  plain matmul that never copies the bias into a (T, B, 4H) buffer first;
* without autograd, the input projection runs ``chunk`` steps at a time into one reused buffer
  that stays in cache, instead of writing all T steps (52 MB at B=32, T=400, H=256) up front.

Equations (gate order [i, f, o, ~C], as in ``LSTMCell``), with a_t = W x_t + U h_{t−1} + b:
    i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_c)
    C_t = f ⊙ C_{t−1} + i ⊙ g;         h_t = o ⊙ tanh(C_t)
Backward, given dh_t and dC_t (from above and from step t+1):
    do = dh ⊙ tanh(C_t);               dC = dC + dh ⊙ o ⊙ (1 − tanh²(C_t))
    di = dC ⊙ g;  df = dC ⊙ C_{t−1};   dg = dC ⊙ i;   da = [di, df, do]·σ'(·) ++ dg·(1 − g²)
    dC_{t−1} = dC ⊙ f;                 dh_{t−1} = da U;   dU = Σ_t da_tᵀ h_{t−1};   db = Σ_t da_t
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # out= forms: no extra copy
_tanh_backward = torch.ops.aten.tanh_backward.grad_input
_MINUS_ONE = torch.tensor(-1.0)  # a 0-dim tensor: ops with it skip wrapping a Python scalar (~3 µs)


def lstm_recurrence(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor,
                    chunk: int = 32) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Run the LSTM recurrence from (h0, C0) over all steps of every direction.

    x (D, T, B, I) time major, weight_ih (D, 4H, I), weight_hh (D, 4H, H), bias (D, 4H), h0 and
    c0 (D, B, H) -> hs, cs (D, T, B, H): h_t and C_t after every step. Differentiable in all
    inputs; without autograd the projection goes ``chunk`` steps at a time.
    """
    D, T, B, features = x.shape
    weight = weight_ih.transpose(1, 2)  # (D, I, 4H)
    inputs = (x, weight, weight_hh, bias, h0, c0)
    training = torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs)
    if training or torch.is_autocast_enabled(x.device.type) or x.dtype != weight.dtype:
        projected = torch.matmul(x.reshape(D, T * B, features), weight).view(D, T, B, -1)  # W x_t for every t
        # Everything in projected's dtype: under autocast the input projection comes out in bf16/fp16.
        inputs = (projected, *(tensor.to(projected.dtype) for tensor in (weight_hh, bias, h0, c0)))
        if training:
            return _LSTMRecurrence.apply(*inputs)
        hs, cs, _, _ = _forward(*inputs, keep_gates=False)
        return hs[:, 1:], cs[:, 1:]
    buffer = x.new_empty(D, min(chunk, T), B, weight.shape[-1])  # (D, C, B, 4H), refilled every C steps

    def project(t: int) -> None:
        n = min(T - t, buffer.shape[1])
        torch.bmm(x[:, t : t + n].reshape(D, n * B, features), weight, out=buffer[:, :n].view(D, n * B, -1))

    hs, cs, _, _ = _forward(buffer, weight_hh, bias, h0, c0, keep_gates=False, project=project, steps=T)
    return hs[:, 1:], cs[:, 1:]


def _matmul_add(
    weight: Tensor, batch_size: int, bias: Tensor | None = None
) -> Callable[[Tensor, Tensor], Tensor]:
    """f(x, added) = added + x Wᵀ (+ bias) for weight (N, K), x (B, K), added (B, N), bias (N,).

    On CPU float32 the weight is packed once for oneDNN: 182 vs 205 µs per step for
    (32×256)·(256×1024) on one thread, partly because addmm first copies ``added`` into its
    output, while oneDNN adds it as a post-op. Anything else (float64, CUDA) takes addmm.
    """
    if weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch_size)
            return lambda x, added: torch.ops.mkldnn._linear_pointwise.binary(x, added, packed, bias, "add")
        except (AttributeError, RuntimeError):  # a torch build without these private ops
            pass
    weight_t = weight.t()
    if bias is None:
        return lambda x, added: torch.addmm(added, x, weight_t)
    return lambda x, added: torch.addmm(added, x, weight_t).add_(bias)


def _tanh(x: Tensor, out: Tensor) -> Tensor:
    """tanh(x) = 2σ(2x) − 1: three cheap ops beat torch's CPU tanh, which takes 22 µs on 32×256
    floats where sigmoid takes 4 (measured); the result differs from tanh by ~1e-7."""
    torch.add(x, x, out=out)
    torch.sigmoid(out, out=out)
    return torch.add(_MINUS_ONE, out, alpha=2, out=out)


def _join(parts: list[Tensor]) -> Tensor:
    """D tensors (B, K) -> (D, B, K); a view when D = 1."""
    return parts[0].unsqueeze(0) if len(parts) == 1 else torch.stack(parts)


def _forward(projected: Tensor, weight_hh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor, keep_gates: bool,
             project: Callable[[int], None] | None = None, steps: int | None = None):  # fmt: skip
    """The time loop. ``projected`` (D, T, B, 4H) holds W x_t for every step, or, with ``project``,
    it is a (D, C, B, 4H) buffer that ``project(t)`` refills with steps t … t+C−1 (``steps`` in all).
    Returns hs, cs (D, T+1, B, H) with h0, C0 first, and (when ``keep_gates``) the activations
    [i, f, o, g] (D, T, B, 4H) and tanh(C_t) (D, T, B, H) for backward."""
    D, C, B, G = projected.shape
    T, H = steps or C, G // 4
    hs, cs = projected.new_empty(D, T + 1, B, H), projected.new_empty(D, T + 1, B, H)
    hs[:, 0], cs[:, 0] = h0, c0
    # Without backward, one reused buffer stays in cache; with it, every step keeps its own.
    kept = T if keep_gates else 1
    gates, tanh_cs = projected.new_empty(D, kept, B, G), projected.new_empty(D, kept, B, H)
    matmul_adds = [_matmul_add(weight, B, b) for weight, b in zip(weight_hh, bias, strict=True)]
    # Views made once, outside the loop: indexing costs ~1 µs a call.
    step_inputs = [p.unbind(0) for p in projected]  # D × C × (B, 4H)
    step_hs = [h.unbind(0) for h in hs]  # D × (T+1) × (B, H)
    step_gates = [gate.unbind(0) for gate in gates]  # D × kept × (B, 4H)
    i, f, o, g = (part.unbind(1) for part in gates.chunk(4, -1))  # kept × (D, B, H) each
    c_steps, h_steps, tanh_steps = cs.unbind(1), hs.unbind(1), tanh_cs.unbind(1)
    for t in range(T):
        s, k = (t if keep_gates else 0), t % C
        if project is not None and k == 0:
            project(t)
        for d in range(D):
            a = matmul_adds[d](step_hs[d][t], step_inputs[d][k])  # (B, 4H)
            torch.add(a[:, 3 * H :], a[:, 3 * H :], out=a[:, 3 * H :])
            torch.sigmoid(a, out=step_gates[d][s])  # σ(a_i), σ(a_f), σ(a_o), σ(2a_c): one call
        torch.add(_MINUS_ONE, g[s], alpha=2, out=g[s])  # g = tanh(a_c) = 2σ(2a_c) − 1
        torch.mul(f[s], c_steps[t], out=c_steps[t + 1])
        c_steps[t + 1].addcmul_(i[s], g[s])  # C_t = f ⊙ C_{t−1} + i ⊙ g
        torch.mul(o[s], _tanh(c_steps[t + 1], out=tanh_steps[s]), out=h_steps[t + 1])
    return hs, cs, gates, tanh_cs


class _LSTMRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, projected: Tensor, weight_hh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor):
        hs, cs, gates, tanh_cs = _forward(projected, weight_hh, bias, h0, c0, keep_gates=True)
        ctx.save_for_backward(weight_hh, hs, cs, gates, tanh_cs)
        ctx.set_materialize_grads(False)
        return hs[:, 1:], cs[:, 1:]

    @staticmethod
    def backward(ctx, grad_hs: Tensor | None, grad_cs: Tensor | None):
        weight_hh, hs, cs, gates, tanh_cs = ctx.saved_tensors
        D, T, B, G = gates.shape
        H = G // 4
        grad_a = torch.empty_like(gates)  # (D, T, B, 4H): da_t, also the grad of ``projected``
        grad_sigmoid = gates.new_empty(D, B, 3 * H)  # [di, df, do] before σ'
        # dh_{t−1} = da_t U (+ the gradient from the output at t−1, added by oneDNN as a post-op)
        matmul_adds = [_matmul_add(weight.t(), B) for weight in weight_hh]
        zero = gates.new_zeros(B, H)
        grad_h = [grad.unbind(0) for grad in grad_hs] if grad_hs is not None else [[zero] * T] * D
        dh = _join([grad_h[d][T - 1] for d in range(D)])  # (D, B, H)
        dc = (
            grad_cs[:, T - 1].clone() if grad_cs is not None else gates.new_zeros(D, B, H)
        )  # updated in place
        # Per-step views made once, outside the loop (as in ``_forward``).
        i, f, o, g = (part.unbind(1) for part in gates.chunk(4, -1))  # T × (D, B, H) each
        sigmoids, tanh_c, c = gates[..., : 3 * H].unbind(1), tanh_cs.unbind(1), cs.unbind(1)
        grad_sigmoids, grad_candidates = grad_a[..., : 3 * H].unbind(1), grad_a[..., 3 * H :].unbind(1)
        grad_a_steps = [grad.unbind(0) for grad in grad_a]  # D × T × (B, 4H)
        di, df, do = grad_sigmoid.chunk(3, -1)  # (D, B, H) views
        scratch = gates.new_empty(D, B, H)
        for t in reversed(range(T)):
            dc.add_(_tanh_backward(torch.mul(dh, o[t], out=scratch), tanh_c[t], grad_input=scratch))
            torch.mul(dc, g[t], out=di)
            torch.mul(dc, c[t], out=df)  # c[t] is C_{t−1}: cs starts with C_0
            torch.mul(dh, tanh_c[t], out=do)
            _sigmoid_backward(grad_sigmoid, sigmoids[t], grad_input=grad_sigmoids[t])
            _tanh_backward(torch.mul(dc, i[t], out=scratch), g[t], grad_input=grad_candidates[t])
            dc.mul_(f[t])
            if grad_cs is not None and t > 0:
                dc.add_(grad_cs[:, t - 1])
            added = [grad_h[d][t - 1] if t > 0 else zero for d in range(D)]
            dh = _join([matmul_adds[d](grad_a_steps[d][t], added[d]) for d in range(D)])
        # dU = Σ_t da_tᵀ h_{t−1}: all steps in one (4H, T·B) @ (T·B, H) matmul per direction.
        grad_weight = None
        if ctx.needs_input_grad[1]:
            previous_h = hs[:, :T].reshape(D, T * B, H)
            grad_weight = torch.bmm(grad_a.view(D, T * B, G).transpose(1, 2), previous_h)
        grad_bias = grad_a.sum((1, 2)) if ctx.needs_input_grad[2] else None
        return grad_a, grad_weight, grad_bias, dh, dc
