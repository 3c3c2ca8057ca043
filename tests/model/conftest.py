"""Fixtures for the model tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gatesum.model import kernels


@pytest.fixture
def compiled_kernels() -> Callable[[], Any]:
    """A function that returns our compiled LSTM loops (``torch.ops.gatesum``).

    The compiled loops ship, so their tests never skip for a missing compiler: where they cannot
    be built the test fails (CI installs g++). The one exception is an explicit
    ``GATESUM_KERNELS=off`` run, which tests the torch-ops fallback on purpose.
    """

    def get() -> Any:
        if not kernels.kernels_enabled():
            pytest.skip("GATESUM_KERNELS=off: this run tests the torch-ops fallback")
        ops = kernels.lstm_ops()
        assert ops is not None, "the compiled LSTM loops could not be built (see the warning above)"
        return ops

    return get


@pytest.fixture
def kernels_required(compiled_kernels: Callable[[], Any]) -> Any:
    """For tests of the compiled loops themselves: fail (or, under GATESUM_KERNELS=off, skip)
    before the test runs when they are not there."""
    return compiled_kernels()
