"""Attention over memory shared by several rows (``RowGrid``): the same weights and context as
over the memory repeated once per row."""

from __future__ import annotations

import pytest
import torch

from gatesum.model.attention import Attention, RowGrid


@pytest.mark.parametrize("kind", ["mlp", "general", "dot"])
@pytest.mark.parametrize("layout", ["in-order", "scattered"])
def test_rows_sharing_an_examples_memory_see_what_repeated_memory_shows(kind: str, layout: str) -> None:
    torch.manual_seed(0)
    E, G, S, size = 3, 4, 7, 6
    attention = Attention(kind, size, size, 5, coverage=True)
    with torch.no_grad():
        attention.w_c.normal_()  # coverage feeds the scores
    memory = torch.randn(E, S, size)
    keys = attention.keys(memory)
    if layout == "in-order":  # R = E·G rows, example by example
        example = torch.arange(E).repeat_interleave(G)
        grid = RowGrid(None, G)
    else:  # rows anywhere, an example with fewer rows than G, grid places left empty
        example = torch.tensor([2, 0, 1, 0, 2, 1, 0])
        beam = torch.tensor([0, 0, 0, 1, 1, 1, 2])
        grid = RowGrid(example * G + beam, G)
    R = len(example)
    query, coverage = torch.randn(R, size), torch.rand(R, S)
    mask = torch.ones(R, S, dtype=torch.bool)
    mask[:, 5:] = example.unsqueeze(1) != 1  # example 1 is shorter
    with torch.no_grad():
        weights, context = attention(query, keys, memory, mask, coverage, grid)
        want_weights, want_context = attention(query, keys[example], memory[example], mask, coverage)
    torch.testing.assert_close(weights, want_weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(context, want_context, atol=1e-6, rtol=1e-5)
    assert (weights[example == 1, 5:] == 0).all()
