"""``Recurrent`` against torch.nn.LSTM/GRU/RNN, and padding that never leaks."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gatesum.model.recurrent import Recurrent, reverse_padded

TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
LENGTHS = torch.tensor([9, 3, 1, 6])


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_matches_torch_with_variable_lengths(kind, bidirectional):
    torch.manual_seed(0)
    reference = TORCH[kind](7, 11, num_layers=2, bidirectional=bidirectional, batch_first=True)
    ours = Recurrent.from_torch(reference)
    x = torch.randn(4, 9, 7)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    want_out, want_state = reference(packed)
    want_out, _ = pad_packed_sequence(want_out, batch_first=True, total_length=9)
    got_out, got_state = ours(x, LENGTHS)
    torch.testing.assert_close(got_out, want_out, atol=1e-5, rtol=0)
    if kind == "lstm":
        for got, want in zip(got_state, want_state):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(got_state, want_state, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_matches_torch_without_lengths_and_with_initial_state(kind):
    torch.manual_seed(1)
    reference = TORCH[kind](5, 6, num_layers=2, bidirectional=True, batch_first=True)
    ours = Recurrent.from_torch(reference)
    x = torch.randn(3, 8, 5)
    h0 = torch.randn(4, 3, 6)
    state = (h0, torch.randn(4, 3, 6)) if kind == "lstm" else h0
    want_out, _ = reference(x, state)
    got_out, _ = ours(x, None, state)
    torch.testing.assert_close(got_out, want_out, atol=1e-5, rtol=0)


FILLS = [100.0, 1e30, float("inf"), float("nan")]


@pytest.fixture(params=["compiled", "torch-ops"])
def loops(request, monkeypatch, compiled_kernels):
    """Both paths of the fused LSTM: our compiled C++ loops and the same algorithm in torch ops."""
    if request.param == "compiled":
        compiled_kernels()  # fails where they cannot be built (skips only under GATESUM_KERNELS=off)
    else:
        monkeypatch.setenv("GATESUM_KERNELS", "off")
    return request.param


@pytest.mark.parametrize("fill", FILLS, ids=["100", "1e30", "inf", "nan"])
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_padding_never_leaks(kind, bidirectional, num_layers, training, fill, loops):
    """Whatever the padding holds (huge, inf, NaN): real positions equal each sequence run alone,
    padded outputs are exactly 0, and every gradient is finite."""
    torch.manual_seed(2)
    layer = Recurrent(kind, 5, 6, num_layers=num_layers, bidirectional=bidirectional).eval()
    x = torch.randn(4, 9, 5)
    for b, length in enumerate(LENGTHS.tolist()):
        x[b, length:] = fill
    x.requires_grad_(training)
    with torch.set_grad_enabled(training):
        batch_out, batch_state = layer(x, LENGTHS)
    assert torch.all(batch_out[:, :].isfinite())
    for b, length in enumerate(LENGTHS.tolist()):
        with torch.no_grad():
            alone_out, alone_state = layer(x[b : b + 1, :length].detach())
        torch.testing.assert_close(batch_out[b, :length], alone_out[0], atol=1e-6, rtol=0)
        assert torch.all(batch_out[b, length:] == 0)
        h_batch = batch_state[0] if kind == "lstm" else batch_state
        h_alone = alone_state[0] if kind == "lstm" else alone_state
        torch.testing.assert_close(h_batch[:, b], h_alone[:, 0], atol=1e-6, rtol=0)
    if training:
        h_n = batch_state[0] if kind == "lstm" else batch_state
        (batch_out.sum() + h_n.sum()).backward()
        assert torch.isfinite(x.grad).all()
        assert torch.all(x.grad[1, 3:] == 0)  # padding gets no gradient either
        for name, parameter in layer.named_parameters():
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_gates_are_returned_per_step():
    layer = Recurrent("lstm", 5, 6, bidirectional=True)
    x = torch.randn(2, 4, 5)
    gates = layer.forward_with_gates(x, torch.tensor([4, 2])).gates
    assert len(gates) == 2
    assert gates[0]["forget"].shape == (2, 4, 6)
    assert torch.all((gates[0]["forget"] > 0) & (gates[0]["forget"] < 1))


def test_reverse_padded_reverses_within_each_length():
    x = torch.arange(8.0).view(2, 4, 1)
    got = reverse_padded(x, torch.tensor([4, 2]))[..., 0]
    assert got.tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    lengths = torch.tensor([4, 2])
    torch.testing.assert_close(reverse_padded(reverse_padded(x, lengths), lengths), x)


def test_gradients_flow_to_every_parameter():
    layer = Recurrent("gru", 3, 4, num_layers=2, bidirectional=True, dropout=0.1)
    out, _ = layer(torch.randn(2, 5, 3), torch.tensor([5, 3]))
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_unknown_cell_is_refused():
    with pytest.raises(ValueError, match="cell must be one of"):
        Recurrent("transformer", 3, 4)


def test_reverse_padded_backward_is_the_gather_autograd_would_give():
    x, lengths = torch.randn(3, 6, 2, dtype=torch.float64, requires_grad=True), torch.tensor([6, 4, 1])
    torch.autograd.gradcheck(lambda x: reverse_padded(x, lengths), (x,))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_inference_follows_a_weight_changed_in_place(bidirectional):
    """Without autograd the fused LSTM keeps its weights stacked between calls: a weight changed
    in place (an optimizer step, a loaded state dict) is seen by the next call."""
    torch.manual_seed(0)
    ours = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=bidirectional)
    reference = nn.LSTM(3, 4, num_layers=2, bidirectional=bidirectional, batch_first=True)
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        ours(x)  # stacks and keeps the weights
        ours.load_state_dict(Recurrent.from_torch(reference).state_dict())
        got, _ = ours(x)
        want, _ = reference(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
