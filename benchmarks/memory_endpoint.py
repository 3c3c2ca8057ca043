"""``python -m gatesum.benchmarks.memory_endpoint``: time and memory of ``POST /v1/memory``.

Sends a 2,000-word text and a 100,000-character text (the request limit) through the app
in-process (``TestClient``: routing, validation, the worker thread and JSON included, no
network), each ``--repeats`` times, and reads each cell's model alone on the long text. Peak
memory is the process's peak resident set (``ru_maxrss``) before and after the long requests.
The texts are QMSum meeting transcripts from the data folder (cased, as people write), else
generated sentences. Writes the results, with the command, to ``--output``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

import torch
from fastapi.testclient import TestClient

from gatesum.model.recall import SHIPPED_RECALL_MODELS
from gatesum.model.recall_readout import read_document
from gatesum.model.text import normalize


def texts(data: Path) -> tuple[str, str, str]:
    """(source, 2,000 words, 100,000 characters)."""
    path = data / "long" / "qmsum.jsonl.gz"
    if path.exists():
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            text = "\n".join(json.loads(line)["article"] for _, line in zip(range(20), lines))
        source = "QMSum meeting transcripts (the first 20, joined)"
    else:
        rng = random.Random(0)
        words = "the council voted to build a new bridge across river next spring mayor said".split()
        text = " ".join(
            " ".join(rng.choice(words) for _ in range(12)).capitalize() + "." for _ in range(20_000)
        )
        source = "generated sentences"
    return source, " ".join(text.split(" ")[:2000]), text[:100_000]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recall-models", type=Path, default=SHIPPED_RECALL_MODELS, help="recall model folder"
    )
    parser.add_argument("--data", type=Path, default=Path("..") / "shared" / "data", help="data folder")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=2, help="requests per text")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/memory-endpoint.json"))
    args = parser.parse_args()
    load_average = [round(x, 1) for x in os.getloadavg()]  # a shared machine: say how busy it was
    torch.set_num_threads(args.threads)
    os.environ["GATESUM_RECALL_MODELS"] = str(args.recall_models)
    from gatesum.service.app import create_app  # reads the environment when the app starts

    source, short, long = texts(args.data)
    results = {}
    with TestClient(create_app()) as client:
        service = client.app.state.memory
        service.loaded.wait(120)
        client.post("/v1/memory", json={"text": "Warm up."})
        rss_before = peak_rss_mb()
        for name, text in (("2,000 words", short), ("100,000 characters", long)):
            seconds, body = [], None
            for _ in range(args.repeats):
                started = time.perf_counter()
                response = client.post("/v1/memory", json={"text": text})
                seconds.append(round(time.perf_counter() - started, 2))
                body = response.json()
                assert response.status_code == 200, body
            results[name] = {
                "characters": len(text),
                "tokens": body["tokens"],
                "seconds": seconds,
                "response_kb": round(len(response.content) / 1024, 1),
                "verdicts": {cell["name"]: cell["correct"] for cell in body["cells"]},
            }
        rss_after = peak_rss_mb()
        ids = service.tokenizer.encode(normalize(long, service.normalizer))
        per_cell = {}
        for name, loaded in service.models.items():
            started = time.perf_counter()
            read_document(loaded.model, ids, 0)
            per_cell[name] = round(time.perf_counter() - started, 2)
        models = {name: loaded.card.get("model") for name, loaded in service.models.items()}
    report = {
        "command": " ".join(["python -m gatesum.benchmarks.memory_endpoint", *sys.argv[1:]]),
        "what": "POST /v1/memory in-process, every loaded cell (rnn, gru, lstm, lstm-peephole), "
        "seconds per request; cell steps per token are fixed (tests/service/test_memory_route.py)",
        "text_source": source,
        "recall_models": str(args.recall_models),
        "model_configs": models,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "load_average_at_start": load_average,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "requests": results,
        "long_text_seconds_per_cell": per_cell,
        "peak_rss_mb": {"before_the_requests": round(rss_before), "after": round(rss_after)},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
