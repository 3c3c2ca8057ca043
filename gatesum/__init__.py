"""gatesum: text summarization on our own RNN, GRU and LSTM cells.

The package is one namespace: ``gatesum.model`` (cells, layers, the summarizer, search,
tokenizer, bundles), ``gatesum.training``, ``gatesum.service``, ``gatesum.experiments``,
``gatesum.benchmarks``, and ``gatesum.cli`` (the ``gatesum`` command) at the root.
"""

__version__ = "0.1.0"
