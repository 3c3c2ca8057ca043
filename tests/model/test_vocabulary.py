"""The fused target log-probability gives log_softmax + gather's numbers and gradients, and the
training loss built on it is the NLL of the full pointer-generator mixture."""

import pytest
import torch
import torch.nn.functional as F

from gatesum.model import vocabulary
from gatesum.model.config import ModelConfig
from gatesum.model.decoder import DecoderOutput
from gatesum.model.summarizer import Summarizer
from gatesum.model.vocabulary import target_log_probs
from tests.model.test_parallel_decoder import BATCH, parallel_model, set_coverage_weight
from tests.model.test_summarizer import tiny_config


@pytest.fixture(params=["compiled", "torch-ops"])
def path(request, monkeypatch, compiled_kernels) -> str:
    """Both ways the log-probability is computed: the C++ loops, and torch ops without them."""
    if request.param == "compiled":
        compiled_kernels()  # skips in the GATESUM_KERNELS=off lane, fails if the build failed
    else:
        monkeypatch.setattr(vocabulary, "_kernels", lambda like: None)
    return request.param


def reference(hidden, weight, bias, target):
    return torch.log_softmax(F.linear(hidden, weight, bias), -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)


def inputs(B: int, T: int, K: int, V: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, K, generator=generator)
    weight = 2 * torch.randn(V, K, generator=generator) / K**0.5  # logits of a few units: a peaked softmax
    bias = torch.randn(V, generator=generator)
    target = torch.randint(0, V, (B, T), generator=generator)
    return [hidden, weight, bias, target]


def value_and_gradients(function, hidden, weight, bias, target, grad):
    leaves = [t.clone().requires_grad_() for t in (hidden, weight) + ((bias,) if bias is not None else ())]
    value = function(leaves[0], leaves[1], leaves[2] if bias is not None else None, target)
    value.backward(grad)
    return value.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_log_prob_and_gradients_equal_log_softmax_and_gather(path, with_bias):
    for seed in range(2):  # twice: the second step writes into the first one's spare buffer
        hidden, weight, bias, target = inputs(3, 5, 8, 300, seed)
        bias = bias if with_bias else None
        grad = torch.randn(3, 5)
        grad[0, 3:] = 0  # padded positions: no gradient, as the loss selects them away
        fused, fused_grads = value_and_gradients(target_log_probs, hidden, weight, bias, target, grad)
        plain, plain_grads = value_and_gradients(reference, hidden, weight, bias, target, grad)
        assert fused.shape == (3, 5)
        torch.testing.assert_close(fused, plain, atol=1e-5, rtol=0)
        for name, a, b in zip(("hidden", "weight", "bias"), fused_grads, plain_grads):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


def test_bfloat16_matmuls_give_the_float32_numbers_to_bfloat16_precision(path):
    """Training's bfloat16 output layer (CPU matrix units): float32 results and gradients, within
    what rounding the matmuls' inputs and the stored logits to 8 bits of mantissa allows."""
    hidden, weight, bias, target = inputs(3, 5, 64, 300, 0)
    grad = torch.randn(3, 5)
    grad[0, 3:] = 0

    def low(h, w, b, y):
        return target_log_probs(h, w, b, y, matmul_dtype=torch.bfloat16)

    for _ in range(2):  # the second step writes into the first one's spare buffer
        fused, fused_grads = value_and_gradients(low, hidden, weight, bias, target, grad)
        plain, plain_grads = value_and_gradients(reference, hidden, weight, bias, target, grad)
        assert fused.dtype == torch.float32 and all(g.dtype == torch.float32 for g in fused_grads)
        torch.testing.assert_close(fused, plain, atol=0.05, rtol=0)
        for name, a, b in zip(("hidden", "weight", "bias"), fused_grads, plain_grads):
            torch.testing.assert_close(a, b, atol=0.02, rtol=0.02, msg=name)
        assert not torch.equal(fused, plain)  # it did compute in bfloat16


def test_a_second_backward_through_the_same_graph_is_refused(path):
    hidden, weight, bias, target = inputs(2, 3, 4, 50, 0)
    value = target_log_probs(hidden.requires_grad_(), weight, bias, target).sum()
    value.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran once already"):
        value.backward()


def test_target_ids_outside_the_vocabulary_are_refused(compiled_kernels):
    ops = compiled_kernels()
    with pytest.raises(RuntimeError, match="outside the vocabulary"):
        ops.vocabulary_log_prob(torch.zeros(2, 10), None, torch.tensor([3, 10]))


def mixture_nll(model: Summarizer, weight: float) -> torch.Tensor:
    """The loss the long way: the full (B, T, V) mixture p_gen P_vocab + (1 − p_gen) scatter of the
    attention (``Decoder.log_probs``, what inference reads), then −log P(y) per token."""
    source, lengths, target_input, target_output = BATCH
    decoder = model.decoder
    encoded = model.encoder(source, lengths)
    state = decoder.initial_state(encoded, model.bridge(encoded), track_coverage=True)
    decoded = decoder(target_input, state, encoded, decoder.keys(encoded))
    log_probs = decoder.log_probs(decoded, source)  # (B, T, V)
    nll = -log_probs.gather(2, target_output.unsqueeze(-1)).squeeze(-1)  # (B, T)
    mask = target_output != model.config.pad_id
    loss = nll[mask].mean()
    if weight > 0:
        loss = loss + weight * (torch.minimum(decoded.attention, decoded.coverage).sum(-1)[mask]).mean()
    return loss


@pytest.mark.parametrize("input_feeding", [False, True], ids=["parallel", "input-feeding"])
@pytest.mark.parametrize("copy", [True, False], ids=["copy", "no-copy"])
def test_training_loss_is_the_nll_of_the_full_mixture(path, input_feeding, copy):
    if input_feeding:
        torch.manual_seed(0)
        model = Summarizer(tiny_config(coverage=True, copy=copy)).train()
    else:
        model = parallel_model(copy=copy, dropout=0.0).train()
    set_coverage_weight(model, 0.7)
    losses, gradients = [], []
    for function in (lambda: model(*BATCH, coverage_loss_weight=1.0)[0], lambda: mixture_nll(model, 1.0)):
        model.zero_grad()
        loss = function()
        loss.backward()
        losses.append(loss.item())
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert abs(losses[0] - losses[1]) < 1e-5
    assert gradients[0].keys() == gradients[1].keys()
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradient, gradients[1][name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.usefixtures("kernels_required")
def test_the_compiled_step_distribution_is_the_torch_ops_one(monkeypatch):
    """``Decoder.log_probs`` for one step: the kernel (log P = z − lse + log p_gen outside the
    source's ids) against the torch ops, with repeated source ids, padding, p_gen 0 and 1."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=300, embedding_size=8, encoder_hidden_size=8, decoder_hidden_size=16,
                         attention="general", input_feeding=False)  # fmt: skip
    decoder = Summarizer(config).eval().decoder
    N, S = 6, 20
    source = torch.randint(4, 300, (N, S))
    source[:, :5] = source[:, 5:10]  # ids that repeat
    source[2, 15:] = config.pad_id
    attention = torch.softmax(torch.randn(N, S), -1)
    attention[2, 15:] = 0.0
    copy_gate = torch.rand(N, 1)
    copy_gate[0], copy_gate[1] = 0.0, 1.0
    output = DecoderOutput(torch.randn(N, 16), attention, copy_gate, None)
    with torch.no_grad():
        got = decoder.log_probs(output, source)
        monkeypatch.setenv("GATESUM_KERNELS", "off")
        want = decoder.log_probs(output, source)
        assert decoder._compiled_log_probs(output, source) is None  # kernels off: the torch ops ran
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
