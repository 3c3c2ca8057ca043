"""gatesum: text summarization on our own RNN, GRU and LSTM cells.

    import gatesum
    summarizer = gatesum.load()                       # the bundled model; a path or "hf://owner/name"
    for summary in summarizer.summarize(["A long news article ...", "Another one ..."], beam_size=4):
        print(summary.summary)

The package is one namespace: ``gatesum.model`` (cells, layers, the summarizer, search,
tokenizer, bundles, the inference pipeline), ``gatesum.training``, ``gatesum.service``,
``gatesum.experiments``, ``gatesum.benchmarks``, and ``gatesum.cli`` (the ``gatesum`` command).
The names below are imported on first use, so ``import gatesum`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["GenerationConfig", "Pipeline", "Summary", "load"]

if TYPE_CHECKING:
    from gatesum.model.pipeline import Pipeline, Summary, load
    from gatesum.model.search import GenerationConfig


def __getattr__(name: str) -> Any:
    if name in ("Pipeline", "Summary", "load"):
        from gatesum.model import pipeline

        return getattr(pipeline, name)
    if name == "GenerationConfig":
        from gatesum.model.search import GenerationConfig

        return GenerationConfig
    raise AttributeError(f"module 'gatesum' has no attribute {name!r}")
