"""Example texts for the page's Memory view, read at runtime from the data folder, never stored in
the repository (the datasets' licences do not let us ship their text): a long CNN/DailyMail news
article and an excerpt of a QMSum meeting transcript. A file that is absent (a fresh clone has
no ``../shared/data``) or unreadable gives no example, and the page hides its entry.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from gatesum.service.memory_schemas import MemoryExample

log = logging.getLogger("gatesum.service")
NEWS_FILE = Path("cnndm") / "test.jsonl.gz"
MEETING_FILE = Path("long") / "qmsum.jsonl.gz"
NEWS_SCANNED = 300  # the longest of the first 300 test articles: read in well under a second
MEETING_CHARS = 50_000  # about 12,000 tokens: long enough for the gated cells to be tested


def _rows(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def _news(data: Path) -> MemoryExample:
    rows = (row for _, row in zip(range(NEWS_SCANNED), _rows(data / NEWS_FILE)))
    article = max(rows, key=lambda row: len(row["article"]))["article"]
    words = len(article.split())
    title = f"A long news article ({words:,} words; CNN/DailyMail test set, lowercased as it is stored)"
    return MemoryExample(id="news", title=title, text=article)


def _meeting(data: Path, max_chars: int) -> MemoryExample:
    row = next(row for row in _rows(data / MEETING_FILE) if row.get("split") == "test")
    text = row["article"]
    if len(text) > max_chars:
        cut = text.rfind("\n", 0, max_chars)
        text = text[: cut if cut > 0 else max_chars]
    title = f"A meeting transcript ({len(text.split()):,} words; an excerpt of QMSum, test split)"
    return MemoryExample(id="meeting", title=title, text=text)


def read_examples(data: Path, max_chars: int) -> list[MemoryExample]:
    """The examples whose files are in ``data``; texts cut to ``max_chars`` (the request limit)."""
    examples = []
    for read in (_news, lambda folder: _meeting(folder, min(MEETING_CHARS, max_chars))):
        try:
            example = read(data)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as error:
            log.warning("memory examples: %s unreadable (%s)", data, type(error).__name__)
            continue
        if len(example.text) <= max_chars:
            examples.append(example)
    return examples
