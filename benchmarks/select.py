"""``gatesum bench select``: what the content selector costs on long documents (issue #15).

    gatesum bench select --threads 1 --output benchmarks/results/select-cost.json

Reads random token ids of each ``--tokens`` length (default 1,000 / 10,000 / 25,000: the
100,000-character request limit is ~25,000–35,000 tokens) with the selector of ``--model`` (a
bundle with one), or else a freshly initialized selector of ``--config``'s ``[model]`` table: the
cost does not depend on the weights. Two paths, each the median of ``--rounds``:

    one pass      ``token_probabilities``: the whole document in one call (``gatesum eval``)
    in pieces     ``SelectorPass``: ``DEFAULT_STEPS`` time steps per call, the service's long lane

and the memory the pass needs beyond the loaded model (peak RSS minus the RSS before it), each
length in a fresh process so that one length's peak does not hide the next's. The selector is a
recurrent pass, linear in the length: the microseconds per token stay flat as the length grows.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import tomllib

from gatesum.benchmarks.train import _cpu_name
from gatesum.model.bundle import BUNDLED_MODEL, CONFIG_FILE, TOKENIZER_FILE
from gatesum.model.errors import GatesumError

DEFAULT_TOKENS = (1_000, 10_000, 25_000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, metavar="DIR",
                        help="a bundle with a selector (default: a fresh selector of --config)")  # fmt: skip
    parser.add_argument("--config", default="configs/selector.toml",
                        help="selector config whose [model] table sizes a fresh selector")  # fmt: skip
    parser.add_argument("--tokens", type=int, nargs="+", default=list(DEFAULT_TOKENS), metavar="N",
                        help="document lengths in tokens")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per length; the median")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--output", type=Path, metavar="PATH", help="also write the results to JSON")


def run(args: argparse.Namespace) -> int:
    if min(args.tokens) < 1 or args.rounds < 1 or args.threads < 1:
        print("gatesum bench select: error: --tokens, --rounds and --threads must be positive",
              file=sys.stderr)  # fmt: skip
        return 2
    source = "bundle" if args.model else f"fresh selector of {args.config}"
    settings = _selector_settings(args)
    load_before = os.getloadavg()
    print(f"content selector ({source}), {args.threads} thread(s), median of {args.rounds} rounds")
    header = f"{'one pass s':>12}{'µs/token':>10}{'in pieces s':>13}{'µs/token':>10}{'memory MB':>11}"
    print(f"{'tokens':>8}{header}")
    rows = []
    context = multiprocessing.get_context("spawn")
    for length in args.tokens:
        with context.Pool(1) as pool:  # a fresh process: its peak RSS is this length's alone
            row = pool.apply(_measure, (settings, length, args.rounds, args.threads))
        rows.append(row)
        print(f"{length:>8,}{row['one_pass_s']:>12.3f}{row['one_pass_us_per_token']:>10.1f}"
              f"{row['in_pieces_s']:>13.3f}{row['in_pieces_us_per_token']:>10.1f}"
              f"{row['memory_mb']:>11.1f}")  # fmt: skip
    first, last = rows[0], rows[-1]
    growth = last["one_pass_us_per_token"] / first["one_pass_us_per_token"]
    print(f"time per token at {last['tokens']:,} tokens / at {first['tokens']:,}: {growth:.2f} "
          "(1.00 is linear)")  # fmt: skip
    if args.output:
        record = {
            "command": shlex.join(["gatesum", *sys.argv[1:]]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"processor": _cpu_name(), "threads": args.threads, "cpus": os.cpu_count(),
                        "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()}},
            "selector": {"source": source, **settings["config"]},
            "settings": {"rounds": args.rounds},
            "results": rows,
            "per_token_growth": round(growth, 3),
        }  # fmt: skip
        args.output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


def _selector_settings(args: argparse.Namespace) -> dict:
    """What a child process needs to build the same selector: a bundle path, or a config."""
    if args.model:
        card = json.loads((args.model / CONFIG_FILE).read_text(encoding="utf-8"))
        if "selector" not in card:
            raise GatesumError(f"{args.model} has no content selector")
        return {"bundle": str(args.model), "config": card["selector"]["model"]}
    from gatesum.model.tokenizer import Tokenizer

    model = tomllib.loads(Path(args.config).read_text(encoding="utf-8")).get("model", {})
    vocab_size = Tokenizer.load(BUNDLED_MODEL / TOKENIZER_FILE).vocab_size
    return {"bundle": None, "config": {**model, "vocab_size": vocab_size}}


def _measure(settings: dict, length: int, rounds: int, threads: int) -> dict:
    """In a child process: seconds for one pass and in pieces, and the pass's memory."""
    import torch

    from gatesum.model.selector import ContentSelector, SelectorConfig, token_probabilities
    from gatesum.model.selector_pass import DEFAULT_STEPS, SelectorPass

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if settings["bundle"]:
        from gatesum.model.bundle import load_bundle

        selector = load_bundle(Path(settings["bundle"])).selector
    else:
        selector = ContentSelector(SelectorConfig(**settings["config"]))
    selector.eval()
    ids = torch.randint(4, selector.config.vocab_size, (length,)).tolist()
    token_probabilities(selector, ids[:200])  # warm up (and build the compiled loops)
    baseline = _rss_mb("VmRSS")
    one_pass = _median_seconds(lambda: token_probabilities(selector, ids), rounds)
    memory = max(0.0, _rss_mb("VmHWM") - baseline)
    in_pieces = _median_seconds(lambda: SelectorPass(selector, ids).run(), rounds)
    return {
        "tokens": length,
        "one_pass_s": round(one_pass, 4),
        "one_pass_us_per_token": round(1e6 * one_pass / length, 2),
        "in_pieces_s": round(in_pieces, 4),
        "in_pieces_us_per_token": round(1e6 * in_pieces / length, 2),
        "piece_steps": DEFAULT_STEPS,
        "memory_mb": round(memory, 1),
    }


def _median_seconds(work, rounds: int) -> float:
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak so far) of this process, in MB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1)) / 1024
