"""``gatesum bench``: benchmarks that time ours against a reference side by side in one run.

Targets (speed, memory) live here, not in the tests: each benchmark prints the measured
ratio so that a reader can judge it on their own machine.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "cells": (
        "gatesum.benchmarks.cells",
        "our Recurrent(LSTM) against torch.nn.LSTM: train step and inference",
    ),
    "train": (
        "gatesum.benchmarks.train",
        "full training steps: the input-feeding decoder against the parallel one, additive and bilinear",
    ),
    "decode": (
        "gatesum.benchmarks.decode",
        "documents/s of bundles side by side on the same articles (beam search, 400-token sources)",
    ),
    "select": (
        "gatesum.benchmarks.select",
        "the content selector's time and memory on 1,000 to 25,000-token documents",
    ),
    "long": (
        "gatesum.benchmarks.long",
        "POST /v1/summarize on a 10,000-word transcript and a 100,000-character text beside a news article",
    ),
    "serve": (
        "gatesum.benchmarks.serve",
        "the REST service under concurrent load, micro-batching on and off",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        sub = which.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(benchmark_module=module_name)
        importlib.import_module(module_name).add_arguments(sub)


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(args.benchmark_module).run(args)
