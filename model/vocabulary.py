"""The target's log-probability under the vocabulary softmax, with a hand-written backward.

Teacher-forced training reads one entry of each position's distribution, the target's:

    z = W x + b                          (N, V) logits, N = B·T positions
    log P_vocab(y) = z_y − logsumexp(z)  (N,)
    dL/dz = g (onehot(y) − softmax(z)),  g = dL/d log P_vocab(y)
    dL/dx = (dL/dz) W,   dL/dW = (dL/dz)ᵀ x,   dL/db = Σ_n (dL/dz)_n

``log_softmax`` + ``gather`` under autograd writes four (N, V) tensors a step — the log-
probabilities, the zeros that ``gather``'s backward scatters into, the softmax gradient, a copy
for the weight's matmul — 61 MB each at the small config (960 × 16,000). Each is a fresh
allocation above glibc's mmap threshold, so page faults come on top of the memory traffic.
Here only the logits are written: forward reads each row twice while it is in cache (its
maximum, then the sum of exponentials, the bias added on the fly), and backward turns the
saved logits into dL/dz in place, summing the bias gradient on the way; the logits' buffer is
then kept for the next step (``_spare``). On the CPU (float32) both passes run in C++
(``csrc/vocabulary.cpp``); elsewhere the same steps run as torch ops. Under autocast the
plain path runs (``log_softmax`` + ``gather``), as autocast chooses the matmul's dtype.

``matmul_dtype=torch.bfloat16`` (a training option for CPUs with bfloat16 matrix units, AMX or
AVX512-BF16, where oneDNN runs these matmuls ~3× faster) gives the three matmuls bfloat16 inputs
with float32 accumulation, and stores the logits and dL/dz as bfloat16: half the memory traffic
of the two row passes, which still sum and exponentiate in float32. It is what CUDA's bf16
autocast does to a linear layer; the weights and their gradients stay float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gatesum.model.kernels import lstm_ops


def target_log_probs(hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor,
                     matmul_dtype: torch.dtype | None = None) -> Tensor:  # fmt: skip
    """hidden (..., K), weight (V, K), bias (V,) or None, target (...) ids -> log P_vocab(target)
    (...), as ``log_softmax(F.linear(hidden, weight, bias)).gather(target)`` gives it; with
    ``matmul_dtype`` (torch.bfloat16) the matmuls and the stored logits in that dtype."""
    if torch.is_autocast_enabled(hidden.device.type) or hidden.dtype != weight.dtype:
        logits = F.linear(hidden, weight, bias).float()  # (..., V)
        return torch.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    rows = hidden.reshape(-1, hidden.shape[-1])  # (N, K)
    dtype = matmul_dtype or hidden.dtype
    return _TargetLogProb.apply(rows, weight, bias, target.reshape(-1), dtype).view(target.shape)


def _kernels(like: Tensor):
    """``torch.ops.gatesum`` for CPU float32 or bfloat16 logits when it could be built, else None."""
    supported = like.device.type == "cpu" and like.dtype in (torch.float32, torch.bfloat16)
    return lstm_ops() if supported else None


# One (N, V) buffer that a backward is done with, reused by the next forward of the same shape:
# a fresh one costs a page fault per 4 kB (measured: mm into a used buffer 39 ms, into a fresh one
# 65 ms of CPU time at 960 × 128 × 16,000, one thread). Only backward hands a buffer back, and
# only after its last read of it, so no live graph ever shares one.
_spare: list[Tensor] = []


def _logits_buffer(rows: int, like: Tensor, weight: Tensor) -> Tensor:
    """An (N, V) tensor to write x Wᵀ into: the spare one when it fits, else a new one."""
    shape = (rows, weight.shape[0])
    if (
        _spare
        and _spare[0].shape == shape
        and _spare[0].dtype == like.dtype
        and _spare[0].device == like.device
    ):
        return _spare.pop()
    _spare.clear()
    return like.new_empty(shape)


class _TargetLogProb(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, dtype: torch.dtype
    ) -> Tensor:
        # hidden (N, K), weight (V, K), bias (V,), target (N,) -> log P_vocab(target) (N,)
        hidden_m, weight_m = hidden.to(dtype), weight.to(dtype)  # themselves when already in dtype
        logits = torch.mm(
            hidden_m, weight_m.t(), out=_logits_buffer(hidden.shape[0], hidden_m, weight)
        )  # x Wᵀ (N, V), in dtype
        if (ops := _kernels(logits)) is not None:  # the bias is added on the fly
            log_prob, lse = ops.vocabulary_log_prob(logits, bias, target)  # (N,), (N,) float32
        else:
            z = logits.float()  # the logits themselves when float32
            if bias is not None:
                z.add_(bias)  # z (N, V)
            lse = torch.logsumexp(z, -1)  # (N,)
            log_prob = z.gather(1, target.unsqueeze(1)).squeeze(1) - lse
            if z is not logits:
                logits.copy_(z)  # backward reads z from the saved logits
        ctx.save_for_backward(hidden_m, weight_m, bias, logits, lse, target)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.spent = False
        return log_prob

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.spent:  # backward overwrote the saved logits: a second pass would read gradients
            raise RuntimeError("target_log_probs: backward ran once already (retain_graph is not supported)")
        ctx.spent = True
        hidden, weight, bias, logits, lse, target = ctx.saved_tensors  # hidden, weight, logits in dtype
        hidden_dtype, weight_dtype = ctx.dtypes
        grad = grad.contiguous()  # (N,)
        if (ops := _kernels(logits)) is not None:
            grad_bias = ops.vocabulary_log_prob_backward(logits, bias, lse, target, grad)  # logits := dL/dz
        else:
            z = logits.float()
            grad_logits = z.sub_(lse.unsqueeze(1)).exp_().mul_(-grad.unsqueeze(1))  # −g softmax(z)
            grad_logits.scatter_add_(1, target.unsqueeze(1), grad.unsqueeze(1))  # + g at the target
            grad_bias = grad_logits.sum(0)
            if grad_logits is not logits:
                logits.copy_(grad_logits)
        grad_hidden = (logits @ weight).to(hidden_dtype) if ctx.needs_input_grad[0] else None  # (N, K)
        grad_weight = (logits.t() @ hidden).to(weight_dtype) if ctx.needs_input_grad[1] else None  # (V, K)
        _spare[:] = [logits]
        return grad_hidden, grad_weight, grad_bias if bias is not None else None, None, None
