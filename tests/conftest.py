"""Fixtures shared by every test folder: the tiny (untrained) model bundle and a CLI runner."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from gatesum import cli
from tests.helpers import SOURCE_MAX_TOKENS, build_tiny_bundle, build_tiny_selector_bundle


@pytest.fixture(scope="session")
def make_tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """``make_tiny_bundle(source_max_tokens)``: the tiny bundle reading that many source tokens,
    built once per value for the whole session."""
    built: dict[int, Path] = {}

    def make(source_max_tokens: int = SOURCE_MAX_TOKENS) -> Path:
        if source_max_tokens not in built:
            directory = tmp_path_factory.mktemp("tiny-bundle") / "tiny"
            built[source_max_tokens] = build_tiny_bundle(directory, source_max_tokens)
        return built[source_max_tokens]

    return make


@pytest.fixture(scope="session")
def tiny_bundle(make_tiny_bundle: Callable[[int], Path]) -> Path:
    """The tiny bundle, reading up to ``SOURCE_MAX_TOKENS`` source tokens."""
    return make_tiny_bundle(SOURCE_MAX_TOKENS)


@pytest.fixture(scope="session")
def make_selector_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """``make_selector_bundle(source_max_tokens)``: the tiny bundle with a tiny content selector
    inside, built once per value for the whole session."""
    built: dict[int, Path] = {}

    def make(source_max_tokens: int = SOURCE_MAX_TOKENS) -> Path:
        if source_max_tokens not in built:
            directory = tmp_path_factory.mktemp("selector-bundle") / "tiny-selector"
            built[source_max_tokens] = build_tiny_selector_bundle(directory, source_max_tokens)
        return built[source_max_tokens]

    return make


class Result(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def gatesum(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``gatesum ARGS...`` in-process: (exit code, stdout, stderr)."""

    def run(*args: str | Path) -> Result:
        monkeypatch.setattr(sys, "argv", ["gatesum"])  # cli.main rewrites sys.argv; restored after the test
        capsys.readouterr()
        code = cli.main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
