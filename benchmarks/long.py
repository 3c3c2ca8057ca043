"""``gatesum bench long``: ``POST /v1/summarize`` on long documents beside a news article.

    gatesum bench long --threads 1 --output benchmarks/results/serve-long.json

Sends three texts, one request at a time, ``--repeats`` times each, through the app in-process
(``TestClient``: routing, validation, the admission and cost model, the worker thread and JSON
included, no network), with the service's default settings and the model of ``--model``:

    news          a CNN/DailyMail test article of about 400 words (the model's window)
    transcript    the QMSum test transcript nearest to 10,000 words that fits the request limit
    limit         QMSum test transcripts joined and cut at the request limit (100,000 characters)

For each it stores the latency of every request, how the source was read (whole, selected,
truncated), the sentences the summary was made from and where they lie in the document (their
positions as a share of its sentences: a summary drawn from across the document spreads from
near 0 to near 1), the summary itself, and the process's peak memory before and after. The
texts come from ``--data`` (``../shared/data``), read as the service reads user text: raw.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from gatesum.benchmarks.memory_endpoint import peak_rss_mb
from gatesum.benchmarks.train import _cpu_name
from gatesum.model.bundle import BUNDLED_MODEL
from gatesum.model.errors import GatesumError

NEWS_WORDS = 400  # the news article nearest this length
TRANSCRIPT_WORDS = 10_000  # the QMSum transcript nearest this length (issue #15's "Done when")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL, metavar="DIR",
                        help="the bundle to serve (default: the bundled model)")  # fmt: skip
    parser.add_argument("--data", type=Path, default=Path("..") / "shared" / "data",
                        help="the data folder with cnndm/test.jsonl.gz and long/qmsum.jsonl.gz")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="requests per text")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the service")
    parser.add_argument("--output", type=Path, metavar="PATH", help="also write the results to JSON")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise GatesumError(f"{path}: file not found (--data names the shared data folder)")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def texts(data: Path, limit: int) -> dict[str, dict[str, Any]]:
    """name -> {"text", "source"}: the three documents, each within ``limit`` characters."""
    news = min(read_jsonl(data / "cnndm" / "test.jsonl.gz")[:500],
               key=lambda row: abs(len(row["article"].split()) - NEWS_WORDS))  # fmt: skip
    transcripts = [row for row in read_jsonl(data / "long" / "qmsum.jsonl.gz") if row["split"] == "test"]
    fitting = [row for row in transcripts if len(row["article"]) <= limit]
    transcript = min(fitting, key=lambda row: abs(len(row["article"].split()) - TRANSCRIPT_WORDS))
    joined = "\n".join(row["article"] for row in transcripts)[:limit]
    return {
        "news": {"text": news["article"], "source": f"cnndm test {news['id']}"},
        "transcript": {"text": transcript["article"], "source": f"qmsum test {transcript['id']}"},
        "limit": {"text": joined, "source": "qmsum test transcripts joined, cut at the request limit"},
    }


def describe(body: dict[str, Any]) -> dict[str, Any]:
    """How the text was read and where the used sentences lie in it."""
    sentences = body["sentences"]
    count = max(1, body["sentence_count"])
    return {
        "read": body["read"],
        "input_tokens": body["input_tokens"],
        "sentence_count": body["sentence_count"],
        "sentences_used": [use["index"] for use in sentences],
        "positions": [round(use["index"] / count, 3) for use in sentences],
        "summary": body["summary"],
    }


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.threads < 1:
        print("gatesum bench long: error: --repeats and --threads must be positive", file=sys.stderr)
        return 2
    os.environ["GATESUM_MODEL"] = str(args.model)
    os.environ["GATESUM_TORCH_THREADS"] = str(args.threads)
    from fastapi.testclient import TestClient

    from gatesum.service.app import create_app  # reads the environment when the app starts
    from gatesum.service.settings import Settings

    settings = Settings()
    documents = texts(args.data, settings.max_text_chars)
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with TestClient(create_app()) as client:
        deadline = time.monotonic() + 300
        while client.get("/readyz").status_code != 200:  # the model loads in the background
            if time.monotonic() > deadline:
                raise GatesumError(f"{args.model}: the service was not ready after 300 s")
            time.sleep(0.2)
        client.post("/v1/summarize", json={"text": "Warm up the model. It reads this first."})
        rss_before = peak_rss_mb()
        for name, document in documents.items():
            seconds, body = [], {}
            for _ in range(args.repeats):
                started = time.perf_counter()
                response = client.post("/v1/summarize", json={"text": document["text"]})
                seconds.append(round(time.perf_counter() - started, 3))
                body = response.json()
                if response.status_code != 200:
                    raise GatesumError(f"{name}: HTTP {response.status_code}: {body}")
            results[name] = {
                "source": document["source"],
                "characters": len(document["text"]),
                "words": len(document["text"].split()),
                "seconds": seconds,
                "median_seconds": statistics.median(seconds),
                **describe(body),
            }
            print(f"{name:<11} {results[name]['words']:>6} words {len(document['text']):>7} chars  "
                  f"read {body['read']:<9} median {results[name]['median_seconds']:.2f} s  "
                  f"sentences at {results[name]['positions']}")  # fmt: skip
        rss_after = peak_rss_mb()
        model_name = client.get("/v1/model").json().get("name")
    machine = {"processor": _cpu_name(), "cpus": os.cpu_count(), "torch_threads": args.threads,
               "torch": torch.__version__,
               "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()}}  # fmt: skip
    record = {
        "command": shlex.join(["gatesum", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "what": "POST /v1/summarize in-process (TestClient), one request at a time, the service's "
        "default settings; seconds per request",
        "model": str(args.model),
        "model_name": model_name,
        "machine": machine,
        "requests": results,
        "peak_rss_mb": {"before_the_requests": round(rss_before), "after": round(rss_after)},
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0
