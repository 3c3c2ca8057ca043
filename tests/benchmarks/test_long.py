"""gatesum bench long: /v1/summarize on long documents beside a news article, with how each was read."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from tests.helpers import make_sentence


def write_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)


def test_long_documents_are_read_by_the_selector_and_timed(
    gatesum, make_selector_bundle, tmp_path: Path
) -> None:
    rng = random.Random(0)

    def text(sentences: int) -> str:
        return " ".join(make_sentence(rng) for _ in range(sentences))

    data = tmp_path / "data"
    write_gz(data / "cnndm" / "test.jsonl.gz", [{"id": "n1", "article": text(40), "highlights": "x"}])
    write_gz(data / "long" / "qmsum.jsonl.gz", [
        {"id": f"m{i}", "split": split, "article": text(count), "summary": "y"}
        for i, (split, count) in enumerate([("test", 300), ("train", 50), ("test", 900)])
    ])  # fmt: skip
    output = tmp_path / "long.json"
    result = gatesum("bench", "long", "--model", make_selector_bundle(), "--data", data, "--repeats", "1",
                     "--output", output)  # fmt: skip
    assert result.code == 0, result.err
    record = json.loads(output.read_text())
    assert record["command"].startswith("gatesum bench long")
    requests = record["requests"]
    assert requests["transcript"]["source"] == "qmsum test m2"  # nearest to 10,000 words of the test ones
    assert requests["limit"]["characters"] <= 100_000
    for name in ("transcript", "limit"):
        assert requests[name]["read"] == "selected"
        assert requests[name]["seconds"][0] > 0 and requests[name]["summary"]
        positions = requests[name]["positions"]
        assert positions == sorted(positions) and all(0 <= p <= 1 for p in positions)
