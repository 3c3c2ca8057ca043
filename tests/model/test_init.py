"""Gate-bias initializations: the biases they set, and the memory they give an untrained cell."""

import math

import pytest
import torch

from gatesum.model.cells import GRUCell, LSTMCell, RNNCell
from gatesum.model.init import apply_gate_init, chrono_init
from gatesum.model.memory import memory_trace
from gatesum.model.recurrent import Recurrent

H = 64


def test_lstm_chrono_biases():
    cell = LSTMCell(5, H)
    before = cell.bias.detach().clone()
    chrono_init(cell, max_lag=1000, generator=torch.Generator().manual_seed(0))
    input_bias, forget_bias = cell.bias[:H].detach(), cell.bias[H : 2 * H].detach()
    torch.testing.assert_close(input_bias, -forget_bias)
    memory_time = 1 / (1 - torch.sigmoid(forget_bias))  # 1 + u, u ~ U(1, 999)
    assert memory_time.min() >= 2 - 1e-4 and memory_time.max() <= 1000 + 1e-2
    assert memory_time.max() > 500 and memory_time.min() < 100  # spread over the range
    torch.testing.assert_close(cell.bias[2 * H :].detach(), before[2 * H :])  # o and ~C untouched


def test_gru_chrono_biases_keep_the_past():
    cell = GRUCell(5, H)
    before = cell.bias.detach().clone()
    chrono_init(cell, max_lag=200, generator=torch.Generator().manual_seed(0))
    update = torch.sigmoid(cell.bias[H : 2 * H].detach())  # z = 1 / (1 + u)
    assert update.min() >= 1 / 200 - 1e-6 and update.max() <= 0.5 + 1e-6
    assert (1 / update).max() > 100  # some units remember for over 100 steps
    torch.testing.assert_close(cell.bias[:H].detach(), before[:H])  # reset gate untouched
    torch.testing.assert_close(cell.bias[2 * H :].detach(), before[2 * H :])


def test_chrono_reaches_every_cell_of_a_layer():
    layer = Recurrent("lstm", 5, 8, num_layers=2, bidirectional=True)
    apply_gate_init(layer, "chrono", max_lag=50)
    for cell in layer.cells:
        torch.testing.assert_close(cell.bias[:8], -cell.bias[8:16])
        assert cell.bias[8:16].max() <= math.log(49) + 1e-5


def test_plain_rnn_has_no_gate_to_initialize():
    with pytest.raises(TypeError, match="gated cell"):
        chrono_init(RNNCell(3, 4), max_lag=10)
    layer = Recurrent("rnn", 3, 4)
    before = [p.detach().clone() for p in layer.parameters()]
    apply_gate_init(layer, "chrono", max_lag=10)
    for old, new in zip(before, layer.parameters()):
        assert torch.equal(old, new)


def test_default_restores_the_cells_own_initialization():
    layer = apply_gate_init(Recurrent("lstm", 3, 4), "chrono", max_lag=100)
    apply_gate_init(layer, "default")
    torch.testing.assert_close(layer.cells[0].bias[4:8].detach(), torch.ones(4))  # forget bias 1
    assert layer.cells[0].bias[:4].abs().max() <= 0.5  # Uniform(−1/√H, 1/√H)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_chrono_makes_an_untrained_cell_remember_a_long_document(kind):
    torch.manual_seed(0)
    inputs = torch.randn(4, 300, 16)
    default = Recurrent(kind, 16, H)
    chrono = apply_gate_init(Recurrent(kind, 16, H), "chrono", max_lag=300)
    start_default = memory_trace(default, inputs)[:, 0].mean()
    start_chrono = memory_trace(chrono, inputs)[:, 0].mean()
    assert start_default < 1e-6  # forgets a document's start within its first steps
    assert start_chrono > 0.05  # the slowest units still hold a good part of it


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        apply_gate_init(Recurrent("gru", 3, 4), "orthogonal")
    with pytest.raises(ValueError, match="max_lag"):
        chrono_init(LSTMCell(3, 4), max_lag=1)
