"""The fused LSTM path: exact gradients, and the same numbers as the generic autograd path."""

import pytest
import torch

from gatesum.model.fused import lstm_recurrence
from gatesum.model.recurrent import Recurrent


def _recurrence_inputs(D: int, T: int, B: int, features: int, H: int) -> list[torch.Tensor]:
    """x (D, T, B, features), weight_ih (D, 4H, features), weight_hh (D, 4H, H), bias (D, 4H),
    h0 and c0 (D, B, H)."""
    x = torch.randn(D, T, B, features)
    weight_ih, weight_hh = 0.5 * torch.randn(D, 4 * H, features), 0.5 * torch.randn(D, 4 * H, H)
    return [x, weight_ih, weight_hh, torch.randn(D, 4 * H), torch.randn(D, B, H), torch.randn(D, B, H)]


@pytest.mark.slow  # trains or gradchecks for seconds: outside the fast lane
def test_hand_written_backward_passes_gradcheck():
    torch.manual_seed(0)
    inputs = [tensor.double().requires_grad_() for tensor in _recurrence_inputs(2, 5, 3, 3, 4)]
    assert torch.autograd.gradcheck(lstm_recurrence, inputs)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_chunked_inference_equals_the_training_forward(chunk):
    torch.manual_seed(4)
    inputs = _recurrence_inputs(2, 7, 3, 5, 4)
    want = lstm_recurrence(*[tensor.clone().requires_grad_() for tensor in inputs])
    with torch.no_grad():
        got = lstm_recurrence(*inputs, chunk=chunk)
    for got_part, want_part in zip(got, want, strict=True):
        torch.testing.assert_close(got_part, want_part, atol=1e-6, rtol=0)


@pytest.mark.slow  # trains or gradchecks for seconds: outside the fast lane
def test_recurrent_passes_gradcheck_with_padding():
    torch.manual_seed(1)
    layer = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True).double()
    x = torch.randn(3, 6, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2, 4])

    def outputs_and_state(x: torch.Tensor):
        output, (h_n, c_n) = layer(x, lengths)
        return output, h_n, c_n

    assert torch.autograd.gradcheck(outputs_and_state, (x,))


def _run(layer: Recurrent, fused: bool, x: torch.Tensor, lengths, state):
    layer.fused = fused
    layer.zero_grad()
    x = x.clone().requires_grad_()
    output, (h_n, c_n) = layer(x, lengths, state)
    weights = torch.linspace(-1, 1, output.numel()).view_as(output)
    ((output * weights).sum() + h_n.sin().sum() + c_n.cos().sum()).backward()
    grads = [x.grad] + [p.grad.clone() for p in layer.parameters()]
    return [output, h_n, c_n], grads


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("lengths", [None, torch.tensor([7, 3, 1, 5, 0])], ids=["full", "padded"])
def test_fused_equals_generic_path(bidirectional, lengths):
    torch.manual_seed(2)
    layer = Recurrent("lstm", 5, 6, num_layers=2, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x = torch.randn(5, 7, 5)
    state = (torch.randn(2 * D, 5, 6), torch.randn(2 * D, 5, 6))
    want_values, want_grads = _run(layer, False, x, lengths, state)
    got_values, got_grads = _run(layer, True, x, lengths, state)
    for got, want in zip(got_values + got_grads, want_values + want_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_inference_equals_training_forward():
    torch.manual_seed(3)
    layer = Recurrent("lstm", 4, 5, bidirectional=True)
    x, lengths = torch.randn(3, 6, 4), torch.tensor([6, 4, 2])
    want, _ = layer(x, lengths)
    with torch.inference_mode():
        got, _ = layer(x, lengths)
    # Two compiled loops (one thread team over hidden-unit slices; one pass per direction) whose
    # vector and scalar exp calls may split the units differently: equal up to float rounding.
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_peephole_and_gates_take_the_generic_path():
    assert not Recurrent("lstm", 3, 4, peephole=True).fused
    assert not Recurrent("gru", 3, 4).fused
    gates = Recurrent("lstm", 3, 4).forward_with_gates(torch.randn(2, 3, 3)).gates
    assert gates[0]["input"].shape == (2, 3, 4)
