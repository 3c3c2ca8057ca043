"""Our cells against torch's numbers, autograd's gradcheck, and the equations written out."""

import pytest
import torch
from torch import nn

from gatesum.model.cells import GRUCell, LSTMCell, RNNCell

B, I, H = 5, 7, 11  # noqa: E741 (the equations' symbols)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_rnn_cell_matches_torch():
    for nonlinearity in ("tanh", "relu"):
        reference = nn.RNNCell(I, H, nonlinearity=nonlinearity)
        ours = RNNCell.from_torch(reference)
        x, h = torch.randn(B, I), torch.randn(B, H)
        torch.testing.assert_close(ours(x, h), reference(x, h), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=0)


def test_gru_cell_matches_torch():
    reference = nn.GRUCell(I, H)
    ours = GRUCell.from_torch(reference)
    x, h = torch.randn(B, I), torch.randn(B, H)
    torch.testing.assert_close(ours(x, h), reference(x, h), atol=1e-5, rtol=0)


def test_lstm_cell_matches_torch():
    reference = nn.LSTMCell(I, H)
    ours = LSTMCell.from_torch(reference)
    x, h, c = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    for got, want in zip(ours(x, (h, c)), reference(x, (h, c))):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_gru_update_gate_keeps_the_materials_sense():
    """z near 0 keeps the past: force the update gate shut and h must not move."""
    cell = GRUCell(I, H)
    with torch.no_grad():
        cell.bias[H : 2 * H] = -30.0  # z = σ(-30) ≈ 0
    h = torch.randn(B, H)
    torch.testing.assert_close(cell(torch.randn(B, I), h), h, atol=1e-6, rtol=0)


def test_lstm_forget_bias_starts_at_one():
    cell = LSTMCell(I, H)
    assert torch.all(cell.bias[H : 2 * H] == 1.0)


def _sigmoid(a):
    return 1 / (1 + torch.exp(-a))


def test_textbook_gru_against_hand_written_equations():
    cell = GRUCell(I, H, reset_after=False).double()
    x, h = torch.randn(B, I, dtype=torch.double), torch.randn(B, H, dtype=torch.double)
    W_r, W_z, W_n = cell.weight_ih.chunk(3)
    U_r, U_z, U_n = cell.weight_hh.chunk(3)
    b_r, b_z, b_n = cell.bias.chunk(3)
    r = _sigmoid(x @ W_r.T + h @ U_r.T + b_r)
    z = _sigmoid(x @ W_z.T + h @ U_z.T + b_z)
    candidate = torch.tanh(x @ W_n.T + (r * h) @ U_n.T + b_n)
    expected = (1 - z) * h + z * candidate
    got, gates = cell.with_gates(x, h)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(gates["update"], z)
    torch.testing.assert_close(gates["reset"], r)


def test_peephole_lstm_against_hand_written_equations():
    cell = LSTMCell(I, H, peephole=True).double()
    with torch.no_grad():
        cell.peephole_weight.normal_()
    x = torch.randn(B, I, dtype=torch.double)
    h, c = torch.randn(B, H, dtype=torch.double), torch.randn(B, H, dtype=torch.double)
    W_i, W_f, W_o, W_c = cell.weight_ih.chunk(4)
    U_i, U_f, U_o, U_c = cell.weight_hh.chunk(4)
    b_i, b_f, b_o, b_c = cell.bias.chunk(4)
    p_i, p_f, p_o = cell.peephole_weight
    i = _sigmoid(x @ W_i.T + h @ U_i.T + p_i * c + b_i)
    f = _sigmoid(x @ W_f.T + h @ U_f.T + p_f * c + b_f)
    c_new = f * c + i * torch.tanh(x @ W_c.T + h @ U_c.T + b_c)
    o = _sigmoid(x @ W_o.T + h @ U_o.T + p_o * c_new + b_o)
    h_new = o * torch.tanh(c_new)
    (got_h, got_c), gates = cell.with_gates(x, (h, c))
    torch.testing.assert_close(got_c, c_new, atol=1e-12, rtol=0)
    torch.testing.assert_close(got_h, h_new, atol=1e-12, rtol=0)
    torch.testing.assert_close(gates["forget"], f)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RNNCell(3, 4),
        lambda: RNNCell(3, 4, nonlinearity="relu"),
        lambda: GRUCell(3, 4, reset_after=True),
        lambda: GRUCell(3, 4, reset_after=False),
        lambda: LSTMCell(3, 4),
        lambda: LSTMCell(3, 4, peephole=True),
    ],
    ids=["rnn", "rnn-relu", "gru", "gru-textbook", "lstm", "lstm-peephole"],
)
def test_gradcheck(make):
    cell = make().double()
    if isinstance(cell, LSTMCell) and cell.peephole:
        with torch.no_grad():
            cell.peephole_weight.normal_()
    x = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.double, requires_grad=True)
    params = tuple(cell.parameters())

    if isinstance(cell, LSTMCell):
        c = torch.randn(2, 4, dtype=torch.double, requires_grad=True)

        def function(x, h, c, *weights):
            return torch.cat(torch.func.functional_call(cell, dict(zip(_names(cell), weights)), (x, (h, c))))

        assert torch.autograd.gradcheck(function, (x, h, c, *params))
    else:

        def function(x, h, *weights):
            return torch.func.functional_call(cell, dict(zip(_names(cell), weights)), (x, h))

        assert torch.autograd.gradcheck(function, (x, h, *params))


def _names(cell):
    return [name for name, _ in cell.named_parameters()]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNCell(3, 4, nonlinearity="sigmoid")
