"""The ``gatesum`` command: one console script, one subcommand per job.

Each subcommand lives in the module that does the work and registers its own flags there
(``add_arguments(parser)`` + ``run(args)``); this file, at the root of the package, composes
them. Each module is imported only when its subcommand runs, so that ``gatesum --help`` stays
fast (importing torch alone takes seconds).
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from gatesum.model.errors import GatesumError

# subcommand -> one-line help; ``_module`` below says where each one lives
COMMANDS: dict[str, str] = {
    "train": "train a summarizer (config file + flags), resumable",
    "eval": "ROUGE of a model beside Lead-3, by source length",
    "tune": "decoding settings as a grid on validation documents",
    "summarize": "summarize JSON Lines or plain text documents",
    "serve": "start the REST service and web page",
    "compare": "training runs given equal CPU time, judged by beam ROUGE on validation",
    "memory": "the long-document memory experiment and traces",
    "export": "copy a trained bundle into a shippable one (float16 weights)",
    "select": "the content selector: gatesum select train (resumable), gatesum select compare (cells)",
    "bench": "benchmarks side by side: cells, train, decode, select, long, serve",
}


def _module(command: str) -> ModuleType:
    """The module that implements ``command`` (its ``add_arguments`` and ``run``)."""
    if command == "train":
        from gatesum.training import train as module
    elif command == "eval":
        from gatesum.training import evaluate as module
    elif command == "tune":
        from gatesum.training import tune as module
    elif command == "summarize":
        from gatesum.training import summarize as module
    elif command == "serve":
        from gatesum.service import server as module
    elif command == "compare":
        from gatesum.experiments import equal_time as module
    elif command == "memory":
        from gatesum.experiments import memory as module
    elif command == "export":
        from gatesum.training import export as module
    elif command == "select":  # train: training/selector.py; compare, an experiment, adds itself to it
        from gatesum.experiments import compare_selectors as module
    else:
        import gatesum.benchmarks as module
    return module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatesum", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    requested = sys.argv[1] if len(sys.argv) > 1 else None
    for name, help_text in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == requested:  # import only the module that will run
            module = _module(name)
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = build_parser().parse_args()
    try:
        return int(args.run(args) or 0)
    except GatesumError as error:  # bad input: one line, no traceback
        print(f"gatesum {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gatesum {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
