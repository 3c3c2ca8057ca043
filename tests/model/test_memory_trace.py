"""Memory traces on hand-set cells, against finite differences, and with padding."""

import pytest
import torch

from gatesum.model.memory import gate_retention, memory_trace, rnn_retention
from gatesum.model.recurrent import Recurrent

SATURATED = 50.0  # σ(50) rounds to 1 and σ(−50) ≈ 2e−22: a gate forced open or shut


def forced(kind: str, keep: bool, hidden_size: int = 3, **options) -> Recurrent:
    """A layer whose keep gate (LSTM forget, GRU 1 − update) is forced to 1 or 0."""
    layer = Recurrent(kind, 4, hidden_size, **options)
    H = hidden_size
    with torch.no_grad():
        for cell in layer.cells:
            rows = slice(H, 2 * H)  # forget gate (LSTM), update gate (GRU)
            cell.weight_ih[rows] = 0
            cell.weight_hh[rows] = 0
            # LSTM keeps with a large forget bias; GRU keeps with a very negative update bias
            cell.bias[rows] = SATURATED if (kind == "lstm") == keep else -SATURATED
    return layer


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gate_forced_open_retains_everything(kind):
    torch.manual_seed(0)
    trace = memory_trace(forced(kind, keep=True), torch.randn(2, 7, 4), per_unit=True)
    assert trace.shape == (2, 7, 3)
    torch.testing.assert_close(trace, torch.ones(2, 7, 3), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gate_forced_shut_keeps_only_the_last_step(kind):
    torch.manual_seed(0)
    trace = memory_trace(forced(kind, keep=False), torch.randn(2, 7, 4))
    assert trace.shape == (2, 7)
    torch.testing.assert_close(trace[:, -1], torch.ones(2))
    assert trace[:, :-1].abs().max() < 1e-20


def test_gate_retention_is_the_product_of_later_gates():
    torch.manual_seed(1)
    forget = torch.rand(2, 6, 5)
    trace = gate_retention("lstm", {"forget": forget}, per_unit=True)
    for t in range(6):
        torch.testing.assert_close(trace[:, t], forget[:, t + 1 :].prod(1))
    update = torch.rand(2, 6, 5)
    gru_trace = gate_retention("gru", {"update": update})
    torch.testing.assert_close(gru_trace[:, 2], (1 - update[:, 3:]).prod(1).mean(-1))


def test_long_document_does_not_underflow_before_its_time():
    """5,000 steps of f = 0.999: the product is e^{−5} ≈ 0.0067, not 0 or nan."""
    forget = torch.full((1, 5001, 2), 0.999)
    trace = gate_retention("lstm", {"forget": forget})
    torch.testing.assert_close(trace[0, 0], torch.tensor(0.999**5000), rtol=1e-3, atol=0)


def rnn_jacobian_by_finite_differences(cell, x, t, epsilon=1e-6):
    """∂h_T/∂h_t (H, H) for one sequence x (T, I), float64, central differences."""
    H = cell.hidden_size
    with torch.no_grad():
        h = torch.zeros(1, H, dtype=x.dtype)
        for s in range(t + 1):
            h = cell(x[s : s + 1], h)

        def final(start):
            for s in range(t + 1, x.shape[0]):
                start = cell(x[s : s + 1], start)
            return start[0]

        columns = []
        for j in range(H):
            step = torch.zeros(1, H, dtype=x.dtype)
            step[0, j] = epsilon
            columns.append((final(h + step) - final(h - step)) / (2 * epsilon))
    return torch.stack(columns, 1)


@pytest.mark.parametrize("probes", [None, 4000], ids=["exact", "random"])
def test_rnn_trace_matches_finite_differences(probes):
    torch.manual_seed(2)
    layer = Recurrent("rnn", 3, 4).double()
    with torch.no_grad():
        layer.cells[0].weight_hh.mul_(6)  # a recurrent gain large enough to matter
    x = torch.randn(1, 6, 3, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    trace = rnn_retention(layer.cells[0], x, probes=probes, generator=generator)
    per_unit = rnn_retention(layer.cells[0], x, per_unit=True)
    tolerance = 1e-6 if probes is None else 0.05
    for t in range(6):
        jacobian = rnn_jacobian_by_finite_differences(layer.cells[0], x[0], t)
        want = jacobian.norm() / 2  # ‖J‖_F / √H, H = 4
        torch.testing.assert_close(trace[0, t], want, rtol=tolerance, atol=1e-9)
        torch.testing.assert_close(per_unit[0, t], jacobian.norm(dim=1), rtol=1e-6, atol=1e-9)
    assert trace[0, -1].item() == pytest.approx(1.0, rel=tolerance)
    assert 0 < trace[0, 0] < 0.9  # the trace is not trivially 1


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_padded_batch_gives_each_sequence_its_own_trace(kind, bidirectional):
    torch.manual_seed(3)
    layer = Recurrent(kind, 4, 5, num_layers=2, bidirectional=bidirectional).eval()
    lengths = torch.tensor([7, 3, 5])
    x = torch.randn(3, 7, 4)
    x[1, 3:] = 100.0  # garbage in the padding must not matter
    for direction in range(layer.num_directions):
        batch = memory_trace(layer, x, lengths, direction=direction)
        for b, length in enumerate(lengths.tolist()):
            alone = memory_trace(layer, x[b : b + 1, :length], direction=direction)
            torch.testing.assert_close(batch[b, :length], alone[0], atol=1e-6, rtol=1e-5)
            assert torch.all(batch[b, length:] == 0)
            end = length - 1 if direction == 0 else 0  # where the direction finishes reading
            assert batch[b, end].item() == pytest.approx(1.0)


def test_retention_decreases_into_the_past_for_a_gated_cell():
    torch.manual_seed(4)
    trace = memory_trace(Recurrent("lstm", 4, 8), torch.randn(2, 20, 4))
    assert torch.all(trace[:, 1:] >= trace[:, :-1])  # a product of factors ≤ 1
    assert trace[:, 0].max() < 0.5
