"""The LSTM recurrence of one layer, all directions at once, with a hand-written backward.

``Recurrent`` uses it for plain LSTM cells (no peepholes, no gates asked for); every other case
runs the generic ``scan`` under autograd. Why it is faster than autograd over ``LSTMCell.step``:

* both directions of a bidirectional layer run in one loop; in the compiled loops each thread
  takes one direction, whose weights then stay in its core's cache;
* no masking in the loop. Padding is always at the end of a sequence (``reverse_padded`` keeps
  it there for the backward direction), so steps past a sequence's end only change values at
  padded positions: the caller (``Recurrent``) zeroes the padded inputs beforehand and selects
  the outputs afterwards (``torch.where``, never a multiplied mask, so nothing the padding held
  can turn into NaN), and reads the final state at ``length − 1``;
* forward writes every step into preallocated buffers and records no graph; backward walks the
  steps in reverse with the LSTM derivatives written out, and computes the gradient of U = W_hh
  as ONE matmul over all steps at the end instead of a small one per step;
* the input projection W x_t + b runs ``chunk`` steps at a time into one reused buffer that
  stays in cache, instead of writing all T steps (52 MB at B=32, T=400, H=256) up front:
  backward needs the gates, not the pre-activations, so training projects in chunks too; each
  step then adds U h_{t−1} into that buffer in place (``addmm_`` on Uᵀ made contiguous once);
* on CPU float32 the loops run in C++ (``csrc/lstm.cpp``, built by ``model.kernels``), each
  step's pointwise work one pass over the data; without autograd ``lstm_inference`` runs a
  whole layer as one team of threads that meets once a step and writes the batch-first output
  directly. The Python loops below are the same algorithm in torch ops, used where the
  compiled loops are not available (float64, CUDA, autocast, no compiler) and tested against them.

Equations (gate order [i, f, o, ~C], as in ``LSTMCell``), with a_t = W x_t + U h_{t−1} + b:
    i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_c)
    C_t = f ⊙ C_{t−1} + i ⊙ g;         h_t = o ⊙ tanh(C_t)
Backward, given dh_t and dC_t (from above and from step t+1):
    do = dh ⊙ tanh(C_t);               dC = dC + dh ⊙ o ⊙ (1 − tanh²(C_t))
    di = dC ⊙ g;  df = dC ⊙ C_{t−1};   dg = dC ⊙ i;   da = [di, df, do]·σ'(·) ++ dg·(1 − g²)
    dC_{t−1} = dC ⊙ f;                 dh_{t−1} = da U;   dU = Σ_t da_tᵀ h_{t−1};   db = Σ_t da_t
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gatesum.model.kernels import lstm_ops

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # out= forms: no extra copy
_tanh_backward = torch.ops.aten.tanh_backward.grad_input
_MINUS_ONE = torch.tensor(-1.0)  # a 0-dim tensor: ops with it skip wrapping a Python scalar (~3 µs)


def lstm_recurrence(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor,
                    chunk: int = 16) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Run the LSTM recurrence from (h0, C0) over all steps of every direction.

    x (D, T, B, I) time major, weight_ih (D, 4H, I), weight_hh (D, 4H, H), bias (D, 4H), h0 and
    c0 (D, B, H) -> hs, cs (D, T, B, H): h_t and C_t after every step. Differentiable in all
    inputs; the input projection goes ``chunk`` steps at a time.
    """
    hs, cs, _, _ = _recurrence(x, weight_ih, weight_hh, bias, h0, c0, None, chunk)
    return hs, cs


def lstm_layer(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor,
               last: Tensor | None, chunk: int = 16) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """``lstm_recurrence`` for a layer that reads h_t and each row's final state, but not C_t.

    Arguments as ``lstm_recurrence``, and last (B,) int64: the step after which each row's final
    state is taken (its length − 1), or None for the last step. Returns hs (D, T, B, H) and h_n,
    c_n (D, B, H). Indexing hs[:, last, batch] outside would make backward zero-fill a
    (D, T, B, H) gradient per index and add it to the outputs' (measured: ~7 ms a step at
    D=2, T=400, B=16, H=128 on one thread); here the final-state gradients enter the backward
    loop at each row's own step.
    """
    hs, _, h_n, c_n = _recurrence(x, weight_ih, weight_hh, bias, h0, c0, last, chunk)
    return hs, h_n, c_n


def _recurrence(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor,
                last: Tensor | None, chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """hs, cs (D, T, B, H) and h_n, c_n (D, B, H) after step ``last`` (B,) (None: the last step)."""
    D, T, B, features = x.shape
    if last is None:
        last = torch.full((B,), T - 1, dtype=torch.long, device=x.device)
    weight: Tensor | None = weight_ih.transpose(1, 2)  # (D, I, 4H)
    if torch.is_autocast_enabled(x.device.type) or x.dtype != weight.dtype:
        # Under autocast the input projection comes out in bf16/fp16: the loop runs in its dtype.
        x = torch.matmul(x.reshape(D, T * B, features), weight).view(D, T, B, -1)  # W x_t for every t
        weight_hh, bias, h0, c0 = (tensor.to(x.dtype) for tensor in (weight_hh, bias, h0, c0))
        weight = None  # x holds W x_t already
    inputs = (x, weight, weight_hh, bias, h0, c0)
    if torch.is_grad_enabled() and any(tensor is not None and tensor.requires_grad for tensor in inputs):
        return _LSTMRecurrence.apply(*inputs, chunk, last)
    hs, cs, _, _ = _run(*inputs, keep_gates=False, chunk=chunk)
    return hs[:, 1:], cs[:, 1:], *_finals(hs, cs, last)


def _finals(hs: Tensor, cs: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
    """hs, cs (D, T+1, B, H) with h0, C0 first -> each row's state after step last[b] (D, B, H)."""
    step = (last + 1).to(hs.device)  # (B,): hs[:, 0] holds h0
    batch = torch.arange(hs.shape[2], device=hs.device)
    return hs[:, step, batch], cs[:, step, batch]


def lstm_inference(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor,
                   lengths: Tensor | None, weight_hh_t: Tensor | None = None,
                   weight_hh_blocks: Tensor | None = None,
                   chunk: int | None = None) -> tuple[Tensor, ...] | None:  # fmt: skip
    """A whole layer without autograd, in the compiled loop; None where that loop cannot run it
    (autograd wanted, autocast, not CPU float32, kernel unavailable): then use ``lstm_recurrence``.

    Arguments as ``lstm_recurrence``, with direction 1 of x already reversed within each row's
    length, and lengths (B,) or None. Returns outputs (B, T, D·H) batch first, each direction's
    h_t at the position it read (padding zeroed), and the final h, C (D, B, H) at length − 1.
    Unlike ``lstm_recurrence`` it keeps no (D, T, B, H) buffers of h_t and C_t to copy from.
    ``weight_hh_t``: Uᵀ (D, H, 4H) contiguous, and ``weight_hh_blocks``: Uᵀ in column blocks
    (``column_blocks``), when the caller keeps them between calls (else the loop makes what it
    needs at every call: a transpose is ~0.14 ms a direction at H 128). ``chunk``: the steps of
    each input projection call, by default ``inference_chunk(B)``.
    """
    inputs = (x, weight_ih, weight_hh, bias, h0, c0)
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs):
        return None
    if torch.is_autocast_enabled(x.device.type) or any(tensor.dtype != torch.float32 for tensor in inputs):
        return None
    if (ops := _kernels(x)) is None:
        return None
    pack = _can_pack(weight_hh) and _packing_pays(x.shape[2], weight_hh.shape[-1])
    blocks = None
    if not pack and x.shape[2] <= SMALL_ROWS and weight_hh.shape[1] % BLOCK == 0:
        blocks = weight_hh_blocks if weight_hh_blocks is not None else column_blocks(weight_hh)
    lengths = lengths.cpu() if lengths is not None else None
    chunk = chunk or inference_chunk(x.shape[2])
    return ops.lstm_inference(x, weight_ih, weight_hh, bias, h0, c0, lengths, pack, chunk, weight_hh_t,
                              blocks)  # fmt: skip


def inference_chunk(batch: int) -> int:
    """Steps per input projection call in ``lstm_inference``: 16, or more for few rows, so that
    each call projects at least ``PROJECTION_ROWS`` rows (MKL repacks W at every call). Always a
    divisor of ``MAX_INFERENCE_CHUNK``."""
    return 16 * max(1, PROJECTION_ROWS // (16 * max(batch, 1)))


def column_blocks(weight_hh: Tensor) -> Tensor:
    """U (D, 4H, H) -> Uᵀ (D, H, 4H) in blocks of ``BLOCK`` columns, (D, 4H / BLOCK, H, BLOCK)
    contiguous: the layout lstm.cpp's ``small_matmul_add`` streams through in order."""
    D, G, H = weight_hh.shape
    return weight_hh.reshape(D, G // BLOCK, BLOCK, H).transpose(2, 3).contiguous()


def _run(x: Tensor, weight: Tensor | None, weight_hh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor,
         keep_gates: bool, chunk: int):  # fmt: skip
    """``_forward`` over x (D, T, B, ·): W x_t already (``weight`` None), or projected by ``weight``
    (D, I, 4H) ``chunk`` steps at a time into one reused buffer that stays in cache."""
    if weight is None:
        return _forward(x, weight_hh, bias, h0, c0, keep_gates)
    D, T, B, _ = x.shape
    buffer = x.new_empty(D, min(chunk, T), B, weight.shape[-1])  # (D, C, B, 4H), refilled every C steps
    return _forward(buffer, weight_hh, bias, h0, c0, keep_gates, x=x, weight_ih=weight)


def _kernels(like: Tensor) -> Any | None:
    """``torch.ops.gatesum`` (our compiled loops) for CPU float32 when it could be built, else None."""
    return lstm_ops() if like.device.type == "cpu" and like.dtype == torch.float32 else None


def _transposed(weights: Tensor) -> list[Tensor]:
    """D weights (D, N, K) -> D × Wᵀ (K, N), each contiguous, for ``addmm``. At one CPU thread
    MKL's addmm on these beats oneDNN's packed weight with the sum as a post-op at every size we
    measured: 17 vs 55 µs for (16×128)·(128×512) in place, 119 vs 188 µs for (32×256)·(256×1024);
    addmm on the transposed view ``W.t()`` took 33 µs at the first size."""
    return [weight.t().contiguous() for weight in weights]


# oneDNN's packed weight in ``lstm_inference`` against MKL's addmm, whole layers without autograd
# at 1 and 2 threads (the weight is packed at every call, ~0.45 ms a direction): packed runs
# 1.04–1.12× as fast for 16–32 rows of H 256 over 100–400 steps, but 0.85–0.91× for 16–32 rows
# of H 128 and 0.38–0.46× for one row (the content selector reading one text, H 128).
PACK_MIN_BATCH, PACK_MIN_HIDDEN = 16, 256
# Up to this many rows the compiled loop multiplies h_{t−1} by Uᵀ in its own loop over Uᵀ's
# column blocks (lstm.cpp's small_matmul_add) rather than by MKL's addmm, whose fixed cost per
# call dominates there. Whole bidirectional layers of 118 steps, one thread, time with the blocks
# over time with addmm (both on a Uᵀ kept between calls): H 128 0.81 / 0.91 / 1.11 at 1 / 2 / 3
# rows (input 128), 0.86 / 0.93 / 1.09 (input 256); H 256 0.87 / 0.74 / 1.08.
SMALL_ROWS = 2
BLOCK = 64  # columns of Uᵀ per block in that loop (lstm.cpp's BLOCK: four 16-float registers)
# Rows per input projection call in inference for few rows (``inference_chunk``): one text read
# alone had its W x_t projected 16 steps at a time, and MKL packed W at each call, which took as
# long as the product itself. A bidirectional layer of 118 steps, one row, H 128, input 256:
# 1.90 ms projecting 16 steps a call, 1.39 ms at 128 (input 128: 1.30 and 1.18 ms).
PROJECTION_ROWS = 128
MAX_INFERENCE_CHUNK = PROJECTION_ROWS  # ``inference_chunk`` at one row


def _packing_pays(batch: int, hidden: int) -> bool:
    """Whether ``lstm_inference`` gains by packing U for ``batch`` rows of ``hidden`` units."""
    return batch >= PACK_MIN_BATCH and hidden >= PACK_MIN_HIDDEN


def _can_pack(weights: Tensor) -> bool:
    """Whether oneDNN can take these weights packed: CPU float32, and a torch built with oneDNN
    and the (private) ops that pack a weight and multiply by it."""
    if (
        weights.device.type != "cpu"
        or weights.dtype != torch.float32
        or not torch.backends.mkldnn.is_available()
    ):
        return False
    return hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(
        torch.ops.mkldnn, "_linear_pointwise"
    )


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
             x: Tensor | None = None, weight_ih: Tensor | None = None):  # fmt: skip
    """The time loop. ``projected`` (D, T, B, 4H) holds W x_t for every step, or, given x
    (D, T, B, I) and weight_ih (D, I, 4H), it is a (D, C, B, 4H) buffer refilled C steps at a time.
    Returns hs, cs (D, T+1, B, H) with h0, C0 first, and (when ``keep_gates``) the activations
    [i, f, o, g] (D, T, B, 4H) and tanh(C_t) (D, T, B, H) for backward."""
    D, C, B, G = projected.shape
    if (ops := _kernels(projected)) is not None:
        return ops.lstm_forward(projected, x, weight_ih, weight_hh, bias, h0, c0, keep_gates)
    weights = _transposed(weight_hh)  # D × Uᵀ (H, 4H)
    T, H = (C if x is None else x.shape[1]), G // 4
    hs, cs = projected.new_empty(D, T + 1, B, H), projected.new_empty(D, T + 1, B, H)
    hs[:, 0], cs[:, 0] = h0, c0
    # Without backward, one reused buffer stays in cache; with it, every step keeps its own.
    kept = T if keep_gates else 1
    gates, tanh_cs = projected.new_empty(D, kept, B, G), projected.new_empty(D, kept, B, H)
    # Views made once, outside the loop: indexing costs ~1 µs a call.
    step_inputs = [p.unbind(0) for p in projected]  # D × C × (B, 4H)
    step_hs = [h.unbind(0) for h in hs]  # D × (T+1) × (B, H)
    gate_steps, tanh_steps = gates.unbind(1), tanh_cs.unbind(1)  # kept × (D, B, ·)
    c_steps, h_steps = cs.unbind(1), hs.unbind(1)  # (T+1) × (D, B, H)
    for t in range(T):
        s, k = (t if keep_gates else 0), t % C
        if x is not None and k == 0:  # W x_t + b for the next C steps, written into the buffer
            n = min(T - t, C)
            torch.baddbmm(
                bias.unsqueeze(1),
                x[:, t : t + n].reshape(D, n * B, x.shape[-1]),
                weight_ih,
                out=projected[:, :n].view(D, n * B, G),
            )
        if x is not None:  # a_t = (W x_t + b) + U h_{t−1}, in our buffer in place
            pre = [step_inputs[d][k].addmm_(step_hs[d][t], weights[d]) for d in range(D)]
        else:  # the caller's W x_t: left as it is
            pre = [torch.addmm(step_inputs[d][k], step_hs[d][t], weights[d]).add_(bias[d]) for d in range(D)]
        _forward_pointwise(pre, c_steps[t], gate_steps[s], c_steps[t + 1], tanh_steps[s], h_steps[t + 1])
    return hs, cs, gates, tanh_cs


def _forward_pointwise(
    pre: list[Tensor], c_prev: Tensor, gates: Tensor, c: Tensor, tanh_c: Tensor, h: Tensor
):
    """One step's pointwise work: pre-activations pre (D × (B, 4H)) and C_{t−1} (D, B, H) ->
    gates [i, f, o, g] (D, B, 4H), C_t, tanh(C_t), h_t (D, B, H), written in place."""
    H = c.shape[-1]
    for a, out in zip(pre, gates, strict=True):
        torch.add(a[:, 3 * H :], a[:, 3 * H :], out=a[:, 3 * H :])
        torch.sigmoid(a, out=out)  # σ(a_i), σ(a_f), σ(a_o), σ(2a_c): one call
    i, f, o, g = gates.chunk(4, -1)
    torch.add(_MINUS_ONE, g, alpha=2, out=g)  # g = tanh(a_c) = 2σ(2a_c) − 1
    torch.mul(f, c_prev, out=c)
    c.addcmul_(i, g)  # C_t = f ⊙ C_{t−1} + i ⊙ g
    torch.mul(o, _tanh(c, out=tanh_c), out=h)


def _backward(weight_hh: Tensor, cs: Tensor, gates: Tensor, tanh_cs: Tensor, grad_hs: Tensor | None,
              grad_cs: Tensor | None, grad_h_n: Tensor | None, grad_c_n: Tensor | None,
              last: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Backward through the time loop: da_t (D, T, B, 4H) for every step, dh_0 and dC_0 (D, B, H).

    grad_h_n, grad_c_n (D, B, H) or None: the final states' gradients, of the state after step
    last[b]. The compiled loop adds them in at those steps; here they are scattered into the
    (D, T, B, H) gradients first (this path is for correctness, not speed).
    """
    D, T, B, G = gates.shape
    H = G // 4
    if (ops := _kernels(gates)) is not None:  # CPU: ``last`` is read on the host
        finals = (grad_h_n, grad_c_n, last.long())
        return ops.lstm_backward(weight_hh, cs, gates, tanh_cs, grad_hs, grad_cs, *finals)
    batch = torch.arange(B, device=gates.device)
    step = last.to(gates.device)
    if grad_h_n is not None:
        grad_hs = grad_hs.clone() if grad_hs is not None else gates.new_zeros(D, T, B, H)
        grad_hs[:, step, batch] += grad_h_n  # (step, b) pairs are distinct: no index repeats
    if grad_c_n is not None:
        grad_cs = grad_cs.clone() if grad_cs is not None else gates.new_zeros(D, T, B, H)
        grad_cs[:, step, batch] += grad_c_n
    weights = weight_hh.contiguous().unbind(0)  # D × U (4H, H): dh_{t−1} = da_t U
    grad_a = torch.empty_like(gates)  # (D, T, B, 4H): da_t, also the grad of ``projected``
    zero = gates.new_zeros(B, H)
    grad_h = [grad.unbind(0) for grad in grad_hs] if grad_hs is not None else [[zero] * T] * D
    dh = [grad_h[d][T - 1] for d in range(D)]  # D × (B, H)
    dc = grad_cs[:, T - 1].clone() if grad_cs is not None else gates.new_zeros(D, B, H)  # updated in place
    # Per-step views made once, outside the loop (as in ``_forward``).
    gate_steps, tanh_c, c, grad_a_steps = gates.unbind(1), tanh_cs.unbind(1), cs.unbind(1), grad_a.unbind(1)
    grad_a_rows = [grad.unbind(0) for grad in grad_a]  # D × T × (B, 4H)
    for t in reversed(range(T)):
        grad_c_prev = grad_cs[:, t - 1] if grad_cs is not None and t > 0 else None
        # c[t] is C_{t−1}: cs starts with C_0
        _backward_pointwise(dh, dc, gate_steps[t], tanh_c[t], c[t], grad_c_prev, grad_a_steps[t])
        added = [grad_h[d][t - 1] if t > 0 else zero for d in range(D)]
        dh = [torch.addmm(added[d], grad_a_rows[d][t], weights[d]) for d in range(D)]
    return grad_a, _join(dh), dc


def _backward_pointwise(dh: list[Tensor], dc: Tensor, gates: Tensor, tanh_c: Tensor, c_prev: Tensor,
                        grad_c_prev: Tensor | None, grad_pre: Tensor):  # fmt: skip
    """One step's backward pointwise work: dh_t (D × (B, H)), dC (D, B, H) and the step's saved
    values -> da_t into grad_pre (D, B, 4H); dC becomes dC_{t−1} (+ grad_c_prev)."""
    H = dc.shape[-1]
    dh_joined, scratch = _join(dh), torch.empty_like(dc)
    i, f, o, g = gates.chunk(4, -1)
    di, df, do, dg = grad_pre.chunk(4, -1)
    dc.add_(_tanh_backward(torch.mul(dh_joined, o, out=scratch), tanh_c, grad_input=scratch))
    torch.mul(dc, g, out=di)
    torch.mul(dc, c_prev, out=df)
    torch.mul(dh_joined, tanh_c, out=do)
    sigmoid_part = grad_pre[..., : 3 * H]  # [di, df, do] -> times σ' in place
    _sigmoid_backward(sigmoid_part, gates[..., : 3 * H], grad_input=sigmoid_part)
    _tanh_backward(torch.mul(dc, i, out=scratch), g, grad_input=dg)
    dc.mul_(f)
    if grad_c_prev is not None:
        dc.add_(grad_c_prev)


class _LSTMRecurrence(torch.autograd.Function):
    """Outputs hs, cs (D, T, B, H) and the final states h_n, c_n (D, B, H) after step last (B,)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, weight_hh: Tensor, bias: Tensor, h0: Tensor,
                c0: Tensor, chunk: int, last: Tensor):  # fmt: skip
        hs, cs, gates, tanh_cs = _run(x, weight, weight_hh, bias, h0, c0, keep_gates=True, chunk=chunk)
        ctx.save_for_backward(x, weight, weight_hh, hs, cs, gates, tanh_cs, last)
        ctx.set_materialize_grads(False)
        return hs[:, 1:], cs[:, 1:], *_finals(hs, cs, last)

    @staticmethod
    def backward(ctx, grad_hs: Tensor | None, grad_cs: Tensor | None, grad_h_n: Tensor | None,
                 grad_c_n: Tensor | None):  # fmt: skip
        x, weight, weight_hh, hs, cs, gates, tanh_cs, last = ctx.saved_tensors
        D, T, B, G = gates.shape
        # Gradients may come expanded or strided; the loops want them contiguous.
        grad_hs, grad_cs, grad_h_n, grad_c_n = (
            grad.contiguous() if grad is not None else None for grad in (grad_hs, grad_cs, grad_h_n, grad_c_n)
        )
        grad_a, dh, dc = _backward(weight_hh, cs, gates, tanh_cs, grad_hs, grad_cs, grad_h_n, grad_c_n, last)
        flat = grad_a.view(D, T * B, G)  # da_t: (D, T, B, 4H)
        grad_x = grad_weight = grad_weight_hh = grad_bias = None
        if weight is None:  # x was W x_t
            grad_x = grad_a
        elif ctx.needs_input_grad[0]:  # dx_t = da_t W
            grad_x = torch.bmm(flat, weight.transpose(1, 2)).view(x.shape)
        if ctx.needs_input_grad[1]:  # dW = Σ_t da_tᵀ x_t, here as its transpose (I, 4H)
            grad_weight = torch.bmm(x.reshape(D, T * B, x.shape[-1]).transpose(1, 2), flat)
        if ctx.needs_input_grad[2]:  # dU = Σ_t da_tᵀ h_{t−1}: all steps in one matmul per direction,
            # as (Σ_t h_{t−1}ᵀ da_t)ᵀ: 14 vs 19 ms at D=2, T·B=6400, H=128 on one thread (measured)
            previous = hs[:, :T].reshape(D, T * B, G // 4)  # h_{t−1} (D, T·B, H)
            grad_weight_hh = torch.bmm(previous.transpose(1, 2), flat).transpose(1, 2)
        if ctx.needs_input_grad[3]:
            grad_bias = grad_a.sum((1, 2))
        return grad_x, grad_weight, grad_weight_hh, grad_bias, dh, dc, None, None
