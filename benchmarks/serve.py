"""``gatesum bench serve``: the REST service under concurrent load.

``--mode throughput`` (the default) starts ``gatesum serve`` on loopback twice per model in one
run (once with the batching flags given, once with ``--max-batch-size 1``), sends N
``/v1/summarize`` requests at concurrency C to each, and prints throughput, p50/p95 latency, the
mean texts per decoder step (from ``/metrics``) and the ratio of the two throughputs, beside the
figures the issue #16 audit measured before continuous batching. Several ``--model`` bundles run
side by side (each phase runs every model before the next phase), and each one's throughput is
also given relative to the first's: a new bundle against the one it replaces.

    gatesum bench serve --model OLD_BUNDLE --model pretrained/cnndm-lstm-small --rounds 5

One burst per model is noisy on a shared machine, and one server process may run faster than
another of the same bundle. With ``--rounds R`` each round starts every model's server afresh,
one after the other, the order reversed every round, so that both the minute and the process
vary; a model's figures are those of its median round, and its ratio to the first model is the
median of the rounds' ratios (an odd R gives one middle round). Passing the same bundle twice
measures the method's own spread: on the 2-core development machine the shipped bundle against
itself gave rounds from 0.93 to 1.27, median 1.08
(benchmarks/results/serve-v3-v3-rounds-same-bundle.json).

``--mode mixed`` starts one server and, for ``--duration`` seconds, mixes C clients sending
short requests one after another (0.5 s apart after a refusal) with maximal legal requests (32
texts of 100,000 characters, beam 16, min_length = max_length = 256), large ones that fit a
client's share, and abandoned ones (clients that hang up after 0.5 s); it prints the p95 of the
short requests, the answers by kind and status, what /metrics counted (cancelled, refused, model
time) and the server's RSS before and after. The model defaults to the bundled one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
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
# issue #16's audit, before continuous batching: 200 requests at concurrency 16, beam 4, max_length 60
BEFORE = {"batching on": 11.75, "batching off": 3.21, "ratio": 3.66, "p95_ms": 1420.0}
MAXIMAL = {"beam_size": 16, "max_length": 256, "min_length": 256}  # the schema's bounds
BACK_OFF_S = 0.5  # a short client refused (429/503) waits this long before its next request
# the mixed load before the two lanes (commit 790fd85, idle machine, GATESUM_TORCH_THREADS=1,
# --duration 60 --max-batch-size 32): short requests' p50 / p95
MIXED_BEFORE = {"short_p50_ms": 1790.0, "short_p95_ms": 2099.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("throughput", "mixed"), default="throughput",
                        help="throughput: batching on against off; mixed: short requests beside maximal, "
                        "large and abandoned ones")  # fmt: skip
    parser.add_argument("--requests", type=int, default=200, help="requests per run (N; throughput)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="fresh servers and bursts per model and phase, taking turns"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (C)")
    parser.add_argument("--model", type=Path, action="append", dest="models", metavar="DIR",
                        help="model bundle (repeat to compare; the first is the reference; "
                        "default: the bundled model)")  # fmt: skip
    parser.add_argument(
        "--max-batch-size", type=int, default=16, help="texts in the running batch when batching"
    )
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="batching wait for company")
    parser.add_argument("--beam-size", type=int, default=4, help="beam size of every short request")
    parser.add_argument(
        "--max-length", type=int, default=60, help="summary tokens of a short request, at most"
    )
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="the servers' torch threads (0: torch's)"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of mixed load (mixed)")
    parser.add_argument(
        "--large-texts", type=int, default=2, help="100,000-character texts of a large request (mixed)"
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results, with this command, to a JSON file"
    )


def run(args: argparse.Namespace) -> int:
    args.models = args.models or [BUNDLED_MODEL]
    if args.mode == "mixed" and len(args.models) > 1:
        print("gatesum bench serve: error: --mode mixed takes one --model", file=sys.stderr)
        return 2
    args.model = args.models[0]  # the server of a single-model run (mixed)
    names = ", ".join(str(model) for model in args.models)
    print(f"model {names}; concurrency {args.concurrency}, beam {args.beam_size}, max_length "
          f"{args.max_length}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    results = _throughput(args) if args.mode == "throughput" else _mixed(args)
    if args.json:
        record = {
            "command": "gatesum bench serve " + " ".join(sys.argv[3:]),
            "cpus": os.cpu_count(),
            **results,
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


def _throughput(args: argparse.Namespace) -> dict:
    """One run of each model per phase: {"models": [per model: model, batching on/off, ratio,
    relative_to_first], "before"}; with one model its figures are also at the top level."""
    runs = [{"model": str(model)} for model in args.models]
    relative: dict[str, list[float]] = {}  # per phase: each model's median ratio to the first
    for name, batch_size in (("batching on", args.max_batch_size), ("batching off", 1)):
        if args.rounds <= 1:
            for record, model in zip(runs, args.models):
                with _server(args, batch_size, model, one_client_may_fill=True) as server:
                    record[name] = asyncio.run(_load(server.url, args))
                _print(name if len(runs) == 1 else f"{name}, {model.name}", record[name])
            relative[name] = [record[name]["throughput"] / runs[0][name]["throughput"] for record in runs]
            continue
        rounds: list[list[dict]] = [[] for _ in runs]
        for turn in range(args.rounds):
            order = range(len(runs)) if turn % 2 == 0 else reversed(range(len(runs)))
            for index in order:
                with _server(args, batch_size, args.models[index], one_client_may_fill=True) as server:
                    rounds[index].append(asyncio.run(_load(server.url, args)))
        ratios = [[mine["throughput"] / first["throughput"]
                   for mine, first in zip(results, rounds[0], strict=True)]
                  for results in rounds]  # fmt: skip
        relative[name] = [statistics.median(each) for each in ratios]
        for record, model, results, each in zip(runs, args.models, rounds, ratios, strict=True):
            by_speed = sorted(results, key=lambda result: result["throughput"])
            throughputs = [result["throughput"] for result in results]
            median = by_speed[len(by_speed) // 2]
            record[name] = {**median, "rounds": throughputs, "ratio_to_first_by_round": each}
            _print(f"{name}, {model.name}, median of {args.rounds} rounds", record[name])
    reference = runs[0]
    for index, record in enumerate(runs):
        record["ratio"] = record["batching on"]["throughput"] / record["batching off"]["throughput"]
        record["relative_to_first"] = {name: relative[name][index] for name in relative}
        p95 = record["batching on"]["p95_ms"]
        print(f"{record['model']}: throughput ratio, on / off: {record['ratio']:.2f}×   p95 with "
              f"batching {p95:.0f} ms")  # fmt: skip
        if record is not reference:
            relative = record["relative_to_first"]
            print(f"   against {reference['model']}: {relative['batching on']:.2f}× batched, "
                  f"{relative['batching off']:.2f}× unbatched")  # fmt: skip
    print(f"   before (issue #16 audit): {BEFORE['batching on']:.2f} / {BEFORE['batching off']:.2f} req/s = "
          f"{BEFORE['ratio']:.2f}×, p95 {BEFORE['p95_ms']:.0f} ms")  # fmt: skip
    single = {key: value for key, value in reference.items() if key != "model"} if len(runs) == 1 else {}
    return {"models": runs, **single, "before": BEFORE}


class _server:
    """``gatesum serve`` in a child process on a free loopback port, until the block ends."""

    def __init__(
        self, args: argparse.Namespace, max_batch_size: int, model: Path, one_client_may_fill: bool = False
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "gatesum", "serve", "--port", str(self.port),
                        "--model", str(model), "--max-batch-size", str(max_batch_size),
                        "--max-wait-ms", str(args.max_wait_ms), "--max-queue", "100000",
                        "--log-level", "warning"]  # fmt: skip
        if args.torch_threads:  # else GATESUM_TORCH_THREADS, or torch's default
            self.command += ["--torch-threads", str(args.torch_threads)]
        # The throughput clients all come from one address, so the server sees one client: with
        # the default share (half the timeout's model time) the unbatched server, whose queue
        # drains slowly, answers most of them 429, and the ratio would count refusals.
        self.env = {**os.environ, "GATESUM_REQUEST_SHARE": "1"} if one_client_may_fill else None

    def __enter__(self) -> _server:
        self.process = subprocess.Popen(self.command, env=self.env)
        deadline = time.monotonic() + 300  # a loaded machine may first build the LSTM loops
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()  # not left running behind the error
        raise RuntimeError("the server was not ready within 300 s")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def _load(url: str, args: argparse.Namespace) -> dict[str, float]:
    options = {"beam_size": args.beam_size, "max_length": args.max_length}
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    semaphore = asyncio.Semaphore(args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await client.post("/v1/summarize", json={"text": DOCUMENT.format(i=-1), **options})  # warm-up

        async def one(i: int) -> None:
            async with semaphore:
                started = time.perf_counter()
                response = await client.post("/v1/summarize", json={"text": DOCUMENT.format(i=i), **options})
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)

        before = _counters((await client.get("/metrics")).text)
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.requests)))
        elapsed = time.perf_counter() - started
        after = _counters((await client.get("/metrics")).text)
    texts = after["gatesum_batch_size_sum"] - before["gatesum_batch_size_sum"]
    steps = after["gatesum_batch_size_count"] - before["gatesum_batch_size_count"]
    return {
        "throughput": statuses[200] / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * _p95(latencies),
        "mean_batch_size": texts / max(steps, 1),
        "decoder_steps": steps,
        # the model thread's seconds: decoder steps, and reading (tokenizing, the selector, encoding)
        "model_seconds": after["gatesum_model_seconds_total"] - before["gatesum_model_seconds_total"],
        "reading_seconds": after["gatesum_reading_seconds_total"] - before["gatesum_reading_seconds_total"],
        "statuses": dict(statuses),
        "seconds": elapsed,
    }


def _mixed(args: argparse.Namespace) -> dict:
    long_text = " ".join(DOCUMENT.format(i=i) for i in range(250))[:100_000]
    kinds = {
        "maximal": {"texts": [long_text] * 32, **MAXIMAL},
        "large": {"texts": [long_text] * args.large_texts, **MAXIMAL},
        "abandoned": {"texts": [long_text] * 4, "beam_size": 8, "max_length": 200, "min_length": 200},
    }
    with _server(args, args.max_batch_size, args.model) as server:
        rss_before = server.rss_mb()
        results = asyncio.run(_mixed_load(server.url, args, kinds))
        results["rss_mb"] = {"before": rss_before, "after": server.rss_mb()}
    short = results["short_latencies"]
    print(f"{args.duration:.0f} s of mixed load: {len(short)} short requests answered 200, "
          f"p50 {1000 * statistics.median(short):.0f} ms, p95 {1000 * _p95(short):.0f} ms, "
          f"max {1000 * max(short):.0f} ms")  # fmt: skip
    print(f"  before (one shared row budget, idle machine): p50 {MIXED_BEFORE['short_p50_ms']:.0f} ms, "
          f"p95 {MIXED_BEFORE['short_p95_ms']:.0f} ms")  # fmt: skip
    for kind, statuses in results["statuses"].items():
        answers = sorted(statuses.items(), key=lambda item: str(item[0]))  # 200, 429 ... "gave up"
        print(f"  {kind:>9}: " + ", ".join(f"{count} × {status}" for status, count in answers))
    print("  server counted: " + ", ".join(f"{name} {value:g}" for name, value in results["server"].items()))
    rss = results["rss_mb"]
    print(f"  server RSS: {rss['before']:.0f} MB before, {rss['after']:.0f} MB after")
    results["short_p50_ms"] = 1000 * statistics.median(short)
    results["short_p95_ms"] = 1000 * _p95(short)
    results["short_latencies"] = [round(1000 * value, 1) for value in short]
    results["before"] = MIXED_BEFORE
    return results


async def _mixed_load(url: str, args: argparse.Namespace, kinds: dict[str, dict]) -> dict:
    options = {"beam_size": args.beam_size, "max_length": args.max_length}
    statuses: dict[str, Counter] = {kind: Counter() for kind in ("short", *kinds)}
    latencies: list[float] = []
    bodies = {kind: json.dumps(body) for kind, body in kinds.items()}  # 6.4 MB for the maximal one
    async with httpx.AsyncClient(
        base_url=url, timeout=600, limits=httpx.Limits(max_connections=256)
    ) as client:
        await client.post("/v1/summarize", json={"text": DOCUMENT.format(i=-1), **options})  # warm-up
        before = _counters((await client.get("/metrics")).text)
        end = time.monotonic() + args.duration

        async def shorts(worker: int) -> None:
            i = 0
            while time.monotonic() < end:
                started = time.perf_counter()
                body = {"text": DOCUMENT.format(i=f"{worker}-{i}"), **options}
                response = await client.post("/v1/summarize", json=body)
                statuses["short"][response.status_code] += 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:  # refused (an overloaded machine): back off instead of asking again at once
                    await asyncio.sleep(BACK_OFF_S)
                i += 1

        async def every(kind: str, period: float, give_up: float | None = None) -> None:
            while time.monotonic() < end:
                try:
                    response = await client.post("/v1/summarize/batch", content=bodies[kind],
                                                 headers={"content-type": "application/json"},
                                                 timeout=give_up or 600)  # fmt: skip
                    statuses[kind][response.status_code] += 1
                except httpx.TimeoutException:
                    statuses[kind]["gave up"] += 1
                await asyncio.sleep(period)

        await asyncio.gather(
            *(shorts(worker) for worker in range(args.concurrency)),
            every("maximal", 5.0),
            every("large", 1.0),
            every("abandoned", 2.0, give_up=0.5),
        )
        await asyncio.sleep(1.0)  # let the server notice the last hang-up
        after = _counters((await client.get("/metrics")).text)
    counted = ("gatesum_cancelled_total", "gatesum_rejected_total", "gatesum_model_seconds_total")
    server = {name.removeprefix("gatesum_"): value - before.get(name, 0.0)
              for name, value in after.items() if name.startswith(counted)}  # fmt: skip
    answers = {kind: dict(counts) for kind, counts in statuses.items()}
    return {"short_latencies": latencies, "statuses": answers, "server": server}


def _counters(metrics: str) -> dict[str, float]:
    """Every sample of the /metrics text, name{labels} -> value."""
    samples = re.findall(r"^(gatesum_[^\s]+) ([0-9.e+-]+)$", metrics, re.M)
    return {name: float(value) for name, value in samples}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))]


def _print(name: str, result: dict) -> None:
    print(
        f"{name:>13}: {result['throughput']:7.2f} req/s   p50 {result['p50_ms']:8.1f} ms   "
        f"p95 {result['p95_ms']:8.1f} ms   mean batch {result['mean_batch_size']:5.2f} texts "
        f"({result['decoder_steps']:.0f} decoder steps)   model thread: steps "
        f"{result['model_seconds']:.1f} s, reading {result['reading_seconds']:.1f} s   "
        f"statuses {result['statuses']}"
        + (f"   rounds {', '.join(f'{each:.2f}' for each in result['rounds'])}" if "rounds" in result else "")
    )
