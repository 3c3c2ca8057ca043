"""The selector's pass in pieces (model/selector_pass.py): exactly one whole pass's
probabilities, for every cell, direction and piece size, and its work left going down to 0."""

from __future__ import annotations

import pytest
import torch

from gatesum.model.recurrent import STRETCH_MULTIPLE
from gatesum.model.selector import ContentSelector, SelectorConfig, token_probabilities
from gatesum.model.selector_pass import SelectorPass


@pytest.mark.parametrize(
    ("cell", "bidirectional", "layers"), [("lstm", True, 2), ("lstm", False, 1), ("gru", True, 2)]
)
def test_pieces_give_exactly_the_whole_passs_probabilities(
    cell: str, bidirectional: bool, layers: int
) -> None:
    torch.manual_seed(0)
    config = SelectorConfig(vocab_size=50, embedding_size=8, cell=cell, hidden_size=8, num_layers=layers,
                            bidirectional=bidirectional)  # fmt: skip
    selector = ContentSelector(config).eval()
    for length in (1, 16, 37, 300, 700):
        ids = torch.randint(4, 50, (length,)).tolist()
        whole = token_probabilities(selector, ids)
        for steps in (16, STRETCH_MULTIPLE + 40, 1024):
            selector_pass, calls, left = SelectorPass(selector, ids), 0, []
            while selector_pass.advance(steps) is None:
                calls += 1
                left.append(selector_pass.tokens_left)
            assert torch.equal(selector_pass.probabilities, whole), (length, steps)
            assert calls >= length * layers // max(steps, STRETCH_MULTIPLE) - 1
            assert left == sorted(left, reverse=True) and selector_pass.tokens_left == 0
