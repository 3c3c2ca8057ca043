"""Our compiled LSTM loops (model/csrc/lstm.cpp): they build where a compiler is, they give the
numbers of the torch-ops loops they stand in for, and their absence only changes speed."""

import logging
import os
import time

import pytest
import torch

from gatesum.model import fused, kernels
from gatesum.model.fused import lstm_inference, lstm_layer, lstm_recurrence
from gatesum.model.recurrent import Recurrent

# Never skipped for a missing compiler (they fail: the compiled loops ship); skipped only under an
# explicit GATESUM_KERNELS=off run, which tests the torch-ops fallback (tests/model/conftest.py).
needs_kernels = pytest.mark.usefixtures("kernels_required")


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _inputs(D: int, T: int, B: int, features: int, H: int) -> list[torch.Tensor]:
    x = torch.randn(D, T, B, features)
    weight_ih, weight_hh = 0.5 * torch.randn(D, 4 * H, features), 0.5 * torch.randn(D, 4 * H, H)
    return [x, weight_ih, weight_hh, torch.randn(D, 4 * H), torch.randn(D, B, H), torch.randn(D, B, H)]


def _values_and_grads(inputs: list[torch.Tensor], with_cells: bool) -> list[torch.Tensor]:
    inputs = [tensor.clone().requires_grad_() for tensor in inputs]
    hs, cs = lstm_recurrence(*inputs, chunk=3)
    loss = (hs * torch.linspace(-1, 1, hs.numel()).view_as(hs)).sum()
    if with_cells:
        loss = loss + cs.cos().sum()
    loss.backward()
    return [hs, cs] + [tensor.grad for tensor in inputs]


@needs_kernels
def test_the_kernels_build_where_a_compiler_is():
    assert kernels.lstm_ops() is not None


def test_off_switch(monkeypatch):
    monkeypatch.setenv("GATESUM_KERNELS", "off")
    assert kernels.lstm_ops() is None


def test_a_failed_build_falls_back_with_one_warning(monkeypatch, caplog):
    def fail(**_):
        raise RuntimeError("Error building extension\nlstm.cpp:1:1: error: no compiler today")

    from torch.utils import cpp_extension

    monkeypatch.setenv("GATESUM_KERNELS", "auto")  # a build is tried even in the fallback lane
    monkeypatch.setattr(cpp_extension, "load", fail)
    kernels._build.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="gatesum.model.kernels"):
            assert kernels.lstm_ops() is None
        assert "error: no compiler today" in caplog.text
        # the layer still runs, on torch ops
        output, _ = Recurrent("lstm", 3, 4)(torch.randn(2, 5, 3))
        assert output.shape == (2, 5, 4)
    finally:
        kernels._build.cache_clear()


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2], indirect=True, ids=["1-thread", "2-threads"])
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
@pytest.mark.parametrize("with_cells", [False, True], ids=["h", "h-and-c"])
def test_compiled_training_loops_equal_the_torch_ops_loops(monkeypatch, threads, D, with_cells):
    torch.manual_seed(D + 2 * with_cells)
    inputs = _inputs(D, 7, 5, 3, 6)
    got = _values_and_grads(inputs, with_cells)
    monkeypatch.setenv("GATESUM_KERNELS", "off")
    want = _values_and_grads(inputs, with_cells)
    for got_part, want_part in zip(got, want, strict=True):
        torch.testing.assert_close(got_part, want_part, atol=1e-5, rtol=1e-5)


def _final_state_grads(inputs: list[torch.Tensor], last: torch.Tensor, with_outputs: bool) -> list:
    inputs = [tensor.clone().requires_grad_() for tensor in inputs]
    hs, h_n, c_n = lstm_layer(*inputs, last, chunk=3)
    loss = h_n.sin().sum() + c_n.cos().sum()
    if with_outputs:
        loss = loss + (hs * torch.linspace(-1, 1, hs.numel()).view_as(hs)).sum()
    loss.backward()
    return [hs, h_n, c_n] + [tensor.grad for tensor in inputs]


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2], indirect=True, ids=["1-thread", "2-threads"])
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
@pytest.mark.parametrize("with_outputs", [False, True], ids=["finals", "finals-and-outputs"])
def test_final_state_grads_enter_the_compiled_loop_at_each_rows_step(monkeypatch, threads, D, with_outputs):
    """lstm_layer's h_n, c_n after step last[b]: the compiled backward adds their gradients in at
    those steps; the torch-ops loops and plain indexing of lstm_recurrence's outputs agree."""
    torch.manual_seed(D + 2 * with_outputs)
    inputs = _inputs(D, 7, 5, 3, 6)
    last = torch.tensor([6, 2, 0, 4, 6])  # several rows end at one step, one at the first
    got = _final_state_grads(inputs, last, with_outputs)
    monkeypatch.setenv("GATESUM_KERNELS", "off")
    want = _final_state_grads(inputs, last, with_outputs)
    for got_part, want_part in zip(got, want, strict=True):
        torch.testing.assert_close(got_part, want_part, atol=1e-5, rtol=1e-5)
    leaves = [tensor.clone().requires_grad_() for tensor in inputs]
    hs, cs = lstm_recurrence(*leaves, chunk=3)
    batch = torch.arange(5)
    loss = hs[:, last, batch].sin().sum() + cs[:, last, batch].cos().sum()
    if with_outputs:
        loss = loss + (hs * torch.linspace(-1, 1, hs.numel()).view_as(hs)).sum()
    loss.backward()
    for got_grad, leaf in zip(got[3:], leaves, strict=True):
        torch.testing.assert_close(got_grad, leaf.grad, atol=1e-5, rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True, ids=["1-thread", "2-threads", "3-threads"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("lengths", [None, torch.tensor([7, 3, 1, 5, 0])], ids=["full", "padded"])
# 5: the threads' slices of hidden units are uneven; 16 and 32: 4H a multiple of fused.BLOCK, so
# few rows go through the column blocks (32 at 2 or 3 threads: whole and uneven slices of them)
@pytest.mark.parametrize("hidden", [5, 16, 32])
@pytest.mark.parametrize("matmul", ["addmm", "onednn-packed", "blocks"])
def test_compiled_inference_equals_the_training_path(
    monkeypatch, threads, bidirectional, lengths, hidden, matmul
):
    """The three step matmuls of the compiled loop (oneDNN's packed weight for large batches,
    ``fused._packing_pays``; our own loop over Uᵀ's column blocks for few rows,
    ``fused.SMALL_ROWS``; MKL's addmm between) give what the torch-ops loops give."""
    monkeypatch.setattr(fused, "_packing_pays", lambda batch, hidden: matmul == "onednn-packed")
    monkeypatch.setattr(fused, "SMALL_ROWS", 8 if matmul == "blocks" else 0)
    torch.manual_seed(hidden)
    layer = Recurrent("lstm", 4, hidden, num_layers=2, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x = torch.randn(5, 7, 4)
    state = (torch.randn(2 * D, 5, hidden), torch.randn(2 * D, 5, hidden))
    with torch.inference_mode():
        got_output, (got_h, got_c) = layer(x, lengths, state)
    monkeypatch.setenv("GATESUM_KERNELS", "off")
    with torch.inference_mode():
        want_output, (want_h, want_c) = layer(x, lengths, state)
    for got, want in [(got_output, want_output), (got_h, want_h), (got_c, want_c)]:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@needs_kernels
def test_inference_takes_the_compiled_loop_only_without_autograd():
    inputs = _inputs(1, 4, 2, 3, 5)
    with torch.no_grad():
        assert lstm_inference(*inputs, lengths=None) is not None
    weight_ih = inputs[1].clone().requires_grad_()
    assert lstm_inference(inputs[0], weight_ih, *inputs[2:], lengths=None) is None
    assert lstm_inference(*[tensor.double() for tensor in inputs], lengths=None) is None


@needs_kernels
def test_bad_shapes_are_refused_with_a_message():
    x, weight_ih, weight_hh, bias, h0, c0 = _inputs(1, 4, 2, 3, 5)
    with pytest.raises(RuntimeError, match=r"h0, c0: \(D, B, H\)"):
        kernels.lstm_ops().lstm_inference(x, weight_ih, weight_hh, bias, h0[:, :1], c0, None, False, 4)
    with pytest.raises(RuntimeError, match="lengths"):
        kernels.lstm_ops().lstm_inference(x, weight_ih, weight_hh, bias, h0, c0, torch.ones(3), False, 4)
    with pytest.raises(RuntimeError, match="weight_hh_blocks"):
        blocks = weight_hh  # (D, 4H, H): not (D, 4H / 64, H, 64)
        kernels.lstm_ops().lstm_inference(x, weight_ih, weight_hh, bias, h0, c0, None, False, 4, None, blocks)


@pytest.mark.parametrize("kernels_setting", ["auto", "off"])
def test_an_empty_batch_runs_through_every_path(monkeypatch, kernels_setting):
    monkeypatch.setenv("GATESUM_KERNELS", kernels_setting)
    layer = Recurrent("lstm", 3, 4, bidirectional=True)
    with torch.inference_mode():
        output, (h_n, _) = layer(torch.randn(0, 5, 3))
    assert output.shape == (0, 5, 8) and h_n.shape == (2, 0, 4)
    x = torch.randn(0, 5, 3, requires_grad=True)
    output, _ = layer(x)
    output.sum().backward()
    assert x.grad.shape == (0, 5, 3)


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, caplog):
    lock = tmp_path / "lock"
    lock.touch()
    kernels._remove_stale_lock(tmp_path)
    assert lock.exists()  # a build may be running right now
    old = time.time() - kernels.STALE_LOCK_S - 10
    os.utime(lock, (old, old))
    with caplog.at_level(logging.WARNING, logger="gatesum.model.kernels"):
        kernels._remove_stale_lock(tmp_path)
    assert not lock.exists() and "stale build lock" in caplog.text
    kernels._remove_stale_lock(tmp_path / "absent")  # nothing there: nothing to do


@needs_kernels
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
def test_a_memory_cell_far_past_44_stays_finite(monkeypatch, D):
    """Input and forget gates open, candidate −1: C_t = −t. The compiled loops once gave NaN from
    |C| ≈ 44 (exp overflowing under -ffast-math); they must give what the torch-ops loops give."""
    T, B, H = 120, 3, 8
    x = torch.zeros(D, T, B, 1)
    weight_ih, weight_hh = torch.zeros(D, 4 * H, 1), torch.zeros(D, 4 * H, H)
    bias = torch.cat([torch.full((H,), 30.0), torch.full((H,), 30.0), torch.full((H,), 30.0),
                      torch.full((H,), -30.0)]).repeat(D, 1)  # fmt: skip
    h0 = c0 = torch.zeros(D, B, H)
    inputs = (x, weight_ih, weight_hh, bias, h0, c0)
    with torch.no_grad():
        hs, cs = lstm_recurrence(*inputs)
        inferred = lstm_inference(*inputs, lengths=None)
    assert torch.isfinite(hs).all() and torch.isfinite(cs).all()
    torch.testing.assert_close(cs[:, -1], torch.full((D, B, H), -float(T)))
    assert inferred is not None and torch.isfinite(inferred[0]).all()
    monkeypatch.setenv("GATESUM_KERNELS", "off")
    with torch.no_grad():
        want_hs, _ = lstm_recurrence(*inputs)
    torch.testing.assert_close(hs, want_hs, atol=1e-5, rtol=1e-5)
