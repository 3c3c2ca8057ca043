"""The ``gatesum`` command: one console script, one subcommand per job.

Each subcommand lives in the module that does the work and registers its own flags there
(``add_arguments(parser)`` + ``run(args)``); this file only wires them together, importing
each module lazily so that ``gatesum --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from model.errors import GatesumError

# subcommand -> (module with add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("training.train", "train a summarizer (config file + flags), resumable"),
    "eval": ("training.evaluate", "ROUGE of a model beside Lead-3, by source length"),
    "summarize": ("training.summarize", "summarize JSON Lines or plain text documents"),
    "serve": ("service.server", "start the REST service and web page"),
    "memory": ("training.memory", "the long-document memory experiment and traces"),
    "export": ("training.export", "copy a trained bundle into a shippable one (float16 weights)"),
    "bench": ("benchmarks", "benchmarks: cells, serve"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatesum", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    requested = sys.argv[1] if len(sys.argv) > 1 else None
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == requested:  # import only the module that will run
            module = importlib.import_module(module_name)
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
