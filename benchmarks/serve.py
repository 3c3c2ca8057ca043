"""``gatesum bench serve``: the REST service under concurrent load, micro-batching on and off.

Starts ``gatesum serve`` on loopback twice in one run (once with the batching flags given, once
with ``--max-batch-size 1``), sends N ``/v1/summarize`` requests at concurrency C to each, and
prints throughput, p50/p95 latency and the mean texts per model call (from ``/metrics``), and
the ratio of the two throughputs. The model defaults to the bundled one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gatesum.model.bundle import BUNDLED_MODEL

DOCUMENT = (
    "The city council voted on Tuesday to build a new bridge across the river, ending a debate "
    "that lasted more than a decade. Construction will begin next spring and is expected to take "
    "two years. The mayor said the bridge would cut commuting times by half and bring new "
    "business to the east bank. Opponents said the cost, estimated at 120 million dollars, was "
    "too high and that the money should go to schools and hospitals instead. Story {i}."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=200, help="requests per run (N)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (C)")
    parser.add_argument(
        "--model",
        type=Path,
        default=BUNDLED_MODEL,
        help="model bundle (default: the bundled model)",
    )
    parser.add_argument("--max-batch-size", type=int, default=16, help="texts per model call when batching")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="batching wait for company")
    parser.add_argument("--beam-size", type=int, default=4, help="beam size of every request")
    parser.add_argument("--max-length", type=int, default=60, help="summary tokens of every request, at most")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")


def run(args: argparse.Namespace) -> int:
    model = args.model
    print(
        f"model {model}; {args.requests} requests at concurrency {args.concurrency}, "
        f"beam {args.beam_size}, max_length {args.max_length}"
    )
    results = {}
    for name, batch_size in (("batching on", args.max_batch_size), ("batching off", 1)):
        with _server(model, batch_size, args.max_wait_ms) as url:
            results[name] = asyncio.run(_load(url, args))
        _print(name, results[name])
    ratio = results["batching on"]["throughput"] / results["batching off"]["throughput"]
    print(f"throughput ratio, on / off: {ratio:.2f}×")
    if args.json:
        Path(args.json).write_text(json.dumps({**results, "ratio": ratio}, indent=2) + "\n")
    return 0


class _server:
    """``gatesum serve`` in a child process on a free loopback port, until the block ends."""

    def __init__(self, model: Path, max_batch_size: int, max_wait_ms: float) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.command = [sys.executable, "-m", "gatesum", "serve", "--port", str(self.port),
                        "--model", str(model), "--max-batch-size", str(max_batch_size),
                        "--max-wait-ms", str(max_wait_ms), "--max-queue", "100000",
                        "--log-level", "warning"]  # fmt: skip

    def __enter__(self) -> str:
        self.process = subprocess.Popen(self.command)
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server was not ready within 120 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def _load(url: str, args: argparse.Namespace) -> dict[str, float]:
    options = {"beam_size": args.beam_size, "max_length": args.max_length}
    latencies: list[float] = []
    semaphore = asyncio.Semaphore(args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await client.post("/v1/summarize", json={"text": DOCUMENT.format(i=-1), **options})  # warm-up

        async def one(i: int) -> None:
            async with semaphore:
                started = time.perf_counter()
                response = await client.post("/v1/summarize", json={"text": DOCUMENT.format(i=i), **options})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        before = _batch_totals((await client.get("/metrics")).text)
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.requests)))
        elapsed = time.perf_counter() - started
        after = _batch_totals((await client.get("/metrics")).text)
    latencies.sort()
    texts, calls = after[0] - before[0], after[1] - before[1]
    return {
        "throughput": args.requests / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "mean_batch_size": texts / max(calls, 1),
        "model_calls": calls,
        "seconds": elapsed,
    }


def _batch_totals(metrics: str) -> tuple[float, float]:
    """(texts, model calls) so far, from the gatesum_batch_size histogram."""
    total = re.search(r"^gatesum_batch_size_sum ([0-9.e+]+)$", metrics, re.M)
    count = re.search(r"^gatesum_batch_size_count ([0-9.e+]+)$", metrics, re.M)
    return float(total.group(1)), float(count.group(1))


def _print(name: str, result: dict[str, float]) -> None:
    print(
        f"{name:>13}: {result['throughput']:7.2f} req/s   p50 {result['p50_ms']:8.1f} ms   "
        f"p95 {result['p95_ms']:8.1f} ms   mean batch {result['mean_batch_size']:5.2f} "
        f"({result['model_calls']:.0f} model calls)"
    )
