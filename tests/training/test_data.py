"""Loading pairs from local files, cached tokenization, token-budget batching and collation."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from gatesum.model.errors import GatesumError
from gatesum.model.text import NormalizerConfig, normalize
from gatesum.model.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from gatesum.training.data import (
    Batch,
    DataConfig,
    DataReport,
    TokenBatchSampler,
    collate,
    iter_texts_for_tokenizer,
    load_pairs,
    load_split,
    tokenize_pairs,
)
from gatesum.training.options import TrainConfig
from gatesum.training.setup import load_training_pairs

WORDS = ["the", "police", "said", "president", "government", "people", "year", "new", "first", "two", "city"]


def make_rows(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        article = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
        summary = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
        rows.append(
            {
                "id": f"doc-{index}",
                "article": f"(CNN) -- {article.capitalize()}'s news.",
                "highlights": summary,
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def config_for(tmp_path: Path, *files: Path | str, **changes) -> DataConfig:
    return DataConfig(data_files=[str(file) for file in files], cache_dir=str(tmp_path / "cache"), **changes)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    rng = random.Random(0)
    texts = [row["article"].lower() + " " + row["highlights"] for row in make_rows(200, seed=1)]
    texts += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(40)) for _ in range(50)]
    return Tokenizer.train(texts, tmp_path_factory.mktemp("tok") / "tokenizer.model", vocab_size=300)


# --- load_pairs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".csv", ".parquet"])
def test_every_local_format_gives_the_same_pairs(tmp_path: Path, suffix: str) -> None:
    rows = make_rows(12)
    path = tmp_path / f"train{suffix}"
    if suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        write_jsonl(path, rows)
    pairs = load_pairs(config_for(tmp_path, path))
    assert pairs.column_names == ["source", "target", "id"]
    assert pairs["source"] == [row["article"] for row in rows]
    assert pairs["target"] == [row["highlights"] for row in rows]


def test_split_placeholder_limit_and_custom_columns(tmp_path: Path) -> None:
    rows = [{"text": f"article {i}", "summary": f"summary {i}"} for i in range(30)]
    write_jsonl(tmp_path / "validation.jsonl", rows)
    config = config_for(tmp_path, tmp_path / "{split}.jsonl", text_column="text", summary_column="summary",
                        limit=7)  # fmt: skip
    pairs = load_pairs(config, "validation")
    assert len(pairs) == 7 and pairs.column_names == ["source", "target"]
    assert pairs[6] == {"source": "article 6", "target": "summary 6"}
    with pytest.raises(GatesumError, match=r"train\.jsonl: file not found"):
        load_pairs(config)  # config.split is "train"


def test_a_file_of_several_splits_gives_the_rows_of_one(tmp_path: Path) -> None:
    """long/qmsum.jsonl.gz holds train, val and test rows, told apart by a split column."""
    rows = [{"id": str(i), "article": f"meeting {i}", "summary": f"notes {i}", "split": split}
            for i, split in enumerate(["train", "test", "val", "test", "train"])]  # fmt: skip
    write_jsonl(tmp_path / "all.jsonl", rows)
    config = config_for(tmp_path, tmp_path / "all.jsonl", summary_column="summary")
    loaded = load_split(config, "test")
    assert list(loaded.pairs["id"]) == ["1", "3"] and loaded.report.used == 2
    assert "split" not in loaded.pairs.column_names
    with pytest.raises(GatesumError, match=r"no rows of split 'validation'; its 'split' column has test, tr"):
        load_split(config, "validation")


def test_empty_pairs_are_dropped(tmp_path: Path) -> None:
    rows = [{"article": "a b", "highlights": "c"}, {"article": "  ", "highlights": "x"},
            {"article": None, "highlights": "x"}, {"article": "d", "highlights": ""}]  # fmt: skip
    assert load_pairs(config_for(tmp_path, write_jsonl(tmp_path / "t.jsonl", rows)))["source"] == ["a b"]


def test_the_report_counts_rows_read_dropped_by_reason_and_used(tmp_path: Path) -> None:
    rows = make_rows(400)
    for index in range(0, 150):
        rows[index]["article"] = " " if index % 2 else None  # blank or missing: both empty
    for index in range(150, 190):
        rows[index]["highlights"] = ""
    for index in range(190, 200):
        rows[index]["article"], rows[index]["highlights"] = "", "  "
    loaded = load_split(config_for(tmp_path, write_jsonl(tmp_path / "t.jsonl", rows)))
    assert loaded.report == DataReport(
        split="train",
        read=400,
        dropped={"empty article": 150, "empty highlights": 40, "empty article and highlights": 10},
        limited=0,
        used=200,
    )
    assert loaded.report.line() == (
        "train: 400 rows read, 200 dropped (empty article 150, empty highlights 40, "
        "empty article and highlights 10), 200 used"
    )
    assert loaded.pairs["id"] == [row["id"] for row in rows[200:]]
    again = load_split(config_for(tmp_path, write_jsonl(tmp_path / "t.jsonl", rows), limit=30))
    assert again.report.line() == (  # the datasets cache answers this time: the same counts
        "train: 400 rows read, 200 dropped (empty article 150, empty highlights 40, "
        "empty article and highlights 10), 170 past the limit, 30 used"
    )
    clean = load_split(config_for(tmp_path, write_jsonl(tmp_path / "c.jsonl", make_rows(5))), "test")
    assert clean.report.line() == "test: 5 rows read, 0 dropped, 5 used"


def test_training_pairs_report_each_split_and_the_held_out_part(tmp_path: Path) -> None:
    rows = make_rows(40)
    rows[0]["highlights"] = ""
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", [*make_rows(8), {"article": "", "highlights": "x"}])
    train_config = TrainConfig(validation_size=6)
    split = load_training_pairs(config_for(tmp_path, tmp_path / "{split}.jsonl"), train_config)
    assert split.reports == [
        "train: 40 rows read, 1 dropped (empty highlights 1), 39 used",
        "validation: 9 rows read, 1 dropped (empty article 1), 8 used",
    ]
    held = load_training_pairs(config_for(tmp_path, tmp_path / "train.jsonl"), train_config)
    assert (len(held.train), len(held.validation)) == (36, 3)  # at most a tenth is held out
    assert held.reports == [
        "train: 40 rows read, 1 dropped (empty highlights 1), 39 used, of which the last 3 are held out "
        "for validation"
    ]


GOOD_LINE = b'{"article": "a", "highlights": "b"}\n'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (GOOD_LINE + b'{"article": "\xff", "highlights": "b"}\n', r"bad\.jsonl: line 2 is not UTF-8"),
        (GOOD_LINE + b"not json\n", r"bad\.jsonl: line 2 is not a JSON object"),
        (b"", r"bad\.jsonl: file is empty"),
        (b'{"article": "  ", "highlights": "b"}\n', r"bad\.jsonl: no non-empty pairs in split 'train'"),
        (
            GOOD_LINE + b'{"article": 5, "highlights": "b"}\n',
            r"bad\.jsonl: column 'article' holds .*not text",
        ),
        (b'{"text": "a", "highlights": "b"}\n', r"no column 'article'; available: text, highlights"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "bad.jsonl").write_bytes(content)
    with pytest.raises(GatesumError, match=message) as raised:
        load_pairs(config_for(tmp_path, tmp_path / "bad.jsonl"))
    assert "\n" not in str(raised.value)


def test_missing_file_unknown_type_and_no_source(tmp_path: Path) -> None:
    with pytest.raises(GatesumError, match=r"nope\.jsonl: file not found"):
        load_pairs(config_for(tmp_path, tmp_path / "nope.jsonl"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GatesumError, match=r"notes\.txt: unknown file type"):
        load_pairs(config_for(tmp_path, tmp_path / "notes.txt"))
    with pytest.raises(GatesumError, match="set either data_files"):
        load_pairs(DataConfig())


# --- tokenize_pairs -------------------------------------------------------------------------------


class CountingTokenizer(Tokenizer):
    """Counts encode_batch calls: zero new calls means the datasets cache answered."""

    calls = 0

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        CountingTokenizer.calls += 1
        return super().encode_batch(texts)


def test_tokenize_pairs_truncates_flags_and_adds_bos_eos(tmp_path: Path, tokenizer: Tokenizer) -> None:
    pairs = load_pairs(config_for(tmp_path, write_jsonl(tmp_path / "t.jsonl", make_rows(40))))
    tokens = tokenize_pairs(pairs, tokenizer, NormalizerConfig(), source_max_tokens=60, target_max_tokens=8)
    for example in tokens:
        source = tokenizer.encode(normalize(example["source"]))
        target = tokenizer.encode(normalize(example["target"]))
        assert example["source_length"] == len(source)
        assert example["source_ids"] == source[:60]
        assert example["truncated"] == (len(source) > 60)
        assert example["target_ids"] == [BOS_ID, *target[:8], EOS_ID]
        assert example["length"] == len(example["source_ids"]) + len(example["target_ids"])
    assert any(tokens["truncated"]) and not all(tokens["truncated"])
    first = tokens[0]
    assert tokenizer.decode(first["source_ids"]).startswith("( cnn ) --")  # normalized before encoding


def test_second_tokenize_call_is_a_cache_hit(tmp_path: Path, tokenizer: Tokenizer) -> None:
    counting = CountingTokenizer(tokenizer.processor, tokenizer.path)
    path = write_jsonl(tmp_path / "t.jsonl", make_rows(50))
    first = tokenize_pairs(load_pairs(config_for(tmp_path, path)), counting, NormalizerConfig(), 30, 8)
    calls = CountingTokenizer.calls
    assert calls > 0
    again = tokenize_pairs(load_pairs(config_for(tmp_path, path)), counting, NormalizerConfig(), 30, 8)
    assert CountingTokenizer.calls == calls  # nothing was tokenized again
    assert again.cache_files == first.cache_files and again["source_ids"] == first["source_ids"]
    tokenize_pairs(load_pairs(config_for(tmp_path, path)), counting, NormalizerConfig(), 31, 8)
    assert CountingTokenizer.calls > calls  # a new limit is a new fingerprint


def test_iter_texts_for_tokenizer_samples_normalized_text(tmp_path: Path) -> None:
    pairs = load_pairs(config_for(tmp_path, write_jsonl(tmp_path / "t.jsonl", make_rows(40))))
    texts = list(iter_texts_for_tokenizer(pairs, sample_size=10, seed=3))
    assert len(texts) == 20 and texts == list(iter_texts_for_tokenizer(pairs, sample_size=10, seed=3))
    assert texts != list(iter_texts_for_tokenizer(pairs, sample_size=10, seed=4))
    assert all(text == text.lower() for text in texts) and texts[0].startswith("( cnn ) --")
    assert len(list(iter_texts_for_tokenizer(pairs, sample_size=1000, seed=0))) == 80


# --- batching -------------------------------------------------------------------------------------


def random_lengths(count: int = 2000, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(10, 500) for _ in range(count)]


def test_batches_respect_the_budget_and_cover_every_example_once() -> None:
    lengths = random_lengths()
    sampler = TokenBatchSampler(lengths, batch_tokens=4000, shuffle=True, seed=0)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in batch) * len(batch) <= 4000 for batch in batches)
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    assert sum(lengths) / padded > 0.9  # length bucketing: little padding
    assert len(sampler) == len(batches)


def test_an_example_over_the_budget_gets_its_own_batch() -> None:
    batches = list(TokenBatchSampler([10, 5000, 10, 10], batch_tokens=100, shuffle=False))
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2, 3]


def test_same_seed_and_epoch_give_the_same_batches_and_epochs_differ() -> None:
    lengths = random_lengths()
    a = TokenBatchSampler(lengths, 4000, shuffle=True, seed=7)
    b = TokenBatchSampler(lengths, 4000, shuffle=True, seed=7)
    assert a.batches(3) == b.batches(3)
    assert a.batches(3) != a.batches(4)
    assert a.batches(3) != TokenBatchSampler(lengths, 4000, shuffle=True, seed=8).batches(3)
    epoch0, epoch1 = list(a), list(a)  # iterating to the end moves on to the next epoch
    assert epoch0 == b.batches(0) and epoch1 == b.batches(1)


def test_resume_mid_epoch_gives_the_remaining_batches() -> None:
    lengths = random_lengths()
    sampler = TokenBatchSampler(lengths, 4000, shuffle=True, seed=1)
    sampler.set_epoch(2)
    iterator = iter(sampler)
    seen = [next(iterator) for _ in range(5)]
    state = sampler.state_dict()
    assert state == {"epoch": 2, "start": 5, "seed": 1}
    resumed = TokenBatchSampler(lengths, 4000, shuffle=True, seed=99)
    resumed.load_state_dict(state)
    assert seen + list(resumed) == sampler.batches(2)


def test_drop_last_drops_only_underfull_leftovers() -> None:
    lengths = random_lengths(500)
    kept = TokenBatchSampler(lengths, 4000, shuffle=False, drop_last=True).batches(0)
    everything = TokenBatchSampler(lengths, 4000, shuffle=False).batches(0)
    assert 0 < len(everything) - len(kept) <= 1  # one bucket of ~100 batches: at most one leftover
    assert all(max(lengths[i] for i in batch) * len(batch) >= 2000 for batch in kept[-1:])


# --- collate --------------------------------------------------------------------------------------


def test_collate_pads_and_shifts_the_target() -> None:
    examples = [
        {"source_ids": [5, 6, 7], "target_ids": [BOS_ID, 8, 9, EOS_ID]},
        {"source_ids": [5], "target_ids": [BOS_ID, 8, EOS_ID]},
    ]
    batch = collate(examples)
    assert batch.source.tolist() == [[5, 6, 7], [5, PAD_ID, PAD_ID]]
    assert batch.source_lengths.tolist() == [3, 1]
    assert batch.target_input.tolist() == [[BOS_ID, 8, 9], [BOS_ID, 8, PAD_ID]]
    assert batch.target_output.tolist() == [[8, 9, EOS_ID], [8, EOS_ID, PAD_ID]]
    assert batch.num_tokens == 5
    assert batch.source.dtype == batch.target_input.dtype == torch.long
    assert batch.to("cpu").num_tokens == 5


def test_dataloader_yields_batches_within_budget(tmp_path: Path, tokenizer: Tokenizer) -> None:
    pairs = load_pairs(config_for(tmp_path, write_jsonl(tmp_path / "t.jsonl", make_rows(60))))
    tokens = tokenize_pairs(pairs, tokenizer, NormalizerConfig(), 40, 10)
    sampler = TokenBatchSampler(tokens["length"], batch_tokens=400, shuffle=True, seed=0)
    batches = list(DataLoader(tokens, batch_sampler=sampler, collate_fn=collate))
    assert all(isinstance(batch, Batch) for batch in batches)
    assert sum(batch.source.shape[0] for batch in batches) == 60
    for batch in batches:
        lengths = (batch.source != PAD_ID).sum(1) + (batch.target_input != PAD_ID).sum(1) + 1  # (B,)
        assert lengths.max().item() * len(lengths) <= 400
