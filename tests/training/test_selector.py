"""Selector training: the paper's labels, AUC, a loss that falls, and an exact resume."""

from __future__ import annotations

import json
import math

import datasets
import pytest
import torch
from safetensors.torch import load_file

from gatesum.model.bundle import load_bundle
from gatesum.model.selector import ContentSelector, SelectorConfig
from gatesum.model.text import NormalizerConfig, normalize
from gatesum.model.tokenizer import Tokenizer
from gatesum.training import clock
from gatesum.training.selector import SelectorTrainer, align_labels, label_pairs, roc_auc, token_metrics
from tests.helpers import write_pairs


def words(text: str) -> list[str]:
    return text.split()


def test_labels_mark_the_longest_copied_spans():
    source = words("the man said the police found the car in the river .")
    reference = [words("police found the car"), words("the man said")]
    assert align_labels(source, reference) == [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    # "the" at 3 is a span of its own (it does not continue "the man said" in the reference);
    # the second "the" span (at 9) repeats an earlier phrase and is not counted


def test_labels_count_only_the_first_copy_of_a_phrase():
    source = words("a storm hit . later a storm hit again .")
    assert align_labels(source, [words("a storm hit")]) == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]


def test_labels_take_the_longest_span_from_the_left():
    source = words("x b c d y")
    reference = [words("b c"), words("b c d")]  # the span grows into the line that continues it
    assert align_labels(source, reference) == [0, 1, 1, 1, 0]


def test_labels_never_cross_reference_lines_and_match_whole_words():
    source = words("he went home")
    reference = [words("the man went"), words("home")]  # "he" is inside "the" only as characters
    assert align_labels(source, reference) == [0, 1, 1]
    # "went home" is not a span of one line: two spans, "went" and "home"
    assert align_labels(words("went home"), reference, min_span=2) == [0, 0]
    assert align_labels(words("the man went home"), reference, min_span=2) == [1, 1, 1, 0]
    assert align_labels([], reference) == [] and align_labels(source, []) == [0, 0, 0]


def test_label_pairs_gives_each_piece_its_words_label(tiny_bundle):
    tokenizer = Tokenizer.load(tiny_bundle / "tokenizer.model")
    article = "Police said the storm hit the coast. The court found a new school near the city."
    pairs = datasets.Dataset.from_dict(
        {"source": [article], "target": ["The storm hit the coast.\nNew school"]}
    )
    row = label_pairs(pairs, tokenizer, NormalizerConfig(), max_tokens=1000)[0]
    ids = tokenizer.encode(normalize(article))
    assert row["source_ids"] == ids and len(row["labels"]) == len(ids) == row["length"]
    assert sum(row["sentence_lengths"]) == row["source_length"] == len(ids)
    expected = align_labels(
        words(normalize(article)), [words("the storm hit the coast ."), words("new school")]
    )
    per_word = [tokenizer.encode(word) for word in words(normalize(article))]
    assert row["labels"] == [label for label, pieces in zip(expected, per_word) for _ in pieces]
    capped = label_pairs(pairs, tokenizer, NormalizerConfig(), max_tokens=5)[0]
    assert capped["source_ids"] == ids[:5] and capped["labels"] == row["labels"][:5]
    assert capped["source_length"] == len(ids)


def test_auc_by_ranks():
    labels = torch.tensor([1, 1, 0, 0, 1, 0])
    assert roc_auc(torch.tensor([0.9, 0.8, 0.1, 0.2, 0.7, 0.3]), labels) == 1.0
    assert roc_auc(torch.tensor([0.1, 0.2, 0.9, 0.8, 0.3, 0.7]), labels) == 0.0
    assert roc_auc(torch.full((6,), 0.5), labels) == 0.5  # all tied
    # pairs (positive, negative) ranked right: 0.9>all 3, 0.4>0.3 and tie with 0.4, 0.2>none
    assert roc_auc(torch.tensor([0.9, 0.4, 0.4, 0.3, 0.2, 0.6]), labels) == pytest.approx((3 + 1.5 + 0) / 9)
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))
    metrics = token_metrics(torch.tensor([0.9, 0.6, 0.4, 0.1]), torch.tensor([1, 0, 1, 0]))
    assert metrics["precision"] == 0.5 and metrics["recall"] == 0.5 and metrics["f1"] == 0.5


@pytest.fixture
def one_thread():
    """One torch thread: on a busy machine the two directions' threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_loss_falls_on_a_learnable_rule(one_thread):
    """Tokens right after a marker (id 3) are positive: the recurrence must carry one step back."""
    torch.manual_seed(0)
    source = torch.randint(4, 20, (16, 24))
    source[torch.rand(16, 24) < 0.2] = 3
    labels = torch.zeros(16, 24)
    labels[:, 1:] = (source[:, :-1] == 3).float()
    lengths = torch.randint(12, 25, (16,))
    config = SelectorConfig(vocab_size=20, embedding_size=16, hidden_size=16, num_layers=1, dropout=0.0)
    selector = ContentSelector(config)
    optimizer = torch.optim.AdamW(selector.parameters(), lr=0.03)
    losses = []
    for _ in range(60):
        loss = selector(source, lengths, labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.4 and losses[-1] < 0.05


# --- the command: checkpoints, resume, the bundle it writes ---------------------------------------


def selector_arguments(data, output, bundle, steps: int, *extra: str) -> list[str]:
    return [
        "select", "train", "--data-files", str(data), "--output-dir", str(output), "--bundle", str(bundle),
        "--max-steps", str(steps), "--validation-size", "4", "--batch-tokens", "200",
        "--eval-every", "1000", "--eval-documents", "4", "--eval-rouge-documents", "2",
        "--log-every", "1", "--checkpoint-every", "2", "--threads", "1", "--warmup-steps", "0",
        "--cache-dir", str(output.parent / "cache"),
        "--model", "embedding_size=8", "--model", "hidden_size=8", "--model", "dropout=0.2",
        *extra,
    ]  # fmt: skip


def test_resume_continues_exactly_and_refuses_other_settings(gatesum, tiny_bundle, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert gatesum(*selector_arguments(data, straight, tiny_bundle, 6)).code == 0
    assert gatesum(*selector_arguments(data, stopped, tiny_bundle, 3)).code == 0
    refused = gatesum(
        *selector_arguments(data, stopped, tiny_bundle, 6, "--resume", "--model", "hidden_size=4")
    )
    assert refused.code == 2 and "model settings differ" in refused.err
    again = gatesum(*selector_arguments(data, stopped, tiny_bundle, 6))
    assert again.code == 2 and "pass --resume" in again.err
    resumed = gatesum(*selector_arguments(data, stopped, tiny_bundle, 6, "--resume"))
    assert resumed.code == 0 and "resuming from step 3" in resumed.out
    for name, tensor in load_file(str(straight / "checkpoint" / "selector.safetensors")).items():
        other = load_file(str(stopped / "checkpoint" / "selector.safetensors"))[name]
        torch.testing.assert_close(other, tensor, atol=1e-6, rtol=0)
    records = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    steps = [record["step"] for record in records if "event" not in record]
    assert steps[:6] == [1, 2, 3, 3, 4, 5]  # steps 1-3, the validation at 3, then 4-6 resumed
    events = [(record["event"], record["step"]) for record in records if "event" in record]
    assert events == [("start", 0), ("stop", 3), ("start", 3), ("stop", 6)]  # one pair per session
    bundle = load_bundle(stopped / "best")
    assert bundle.selector is not None and bundle.selector.config.hidden_size == 8
    assert "auc" in bundle.card["selector"]["metrics"]["validation"]


def test_the_cpu_clock_counts_training_only_and_is_fixed_on_resume(
    gatesum, tiny_bundle, tmp_path, monkeypatch
):
    """On the cpu clock, max_minutes and elapsed_s count training steps, not validation or saves.

    A fake CPU clock moves 1 s per training step and 1,000 s per validation: a budget of 4 s
    stops after 4 steps although two validations ran on the way (on time that counted them it
    would stop after the first validation, at step 2)."""
    now = [0.0]
    monkeypatch.setitem(clock.CLOCKS, "cpu", lambda: now[0])
    train_step, validation_scores = SelectorTrainer._train_step, SelectorTrainer.validation_scores

    def step(self, batch):
        now[0] += 1.0
        return train_step(self, batch)

    def validate(self):
        now[0] += 1000.0
        return validation_scores(self)

    monkeypatch.setattr(SelectorTrainer, "_train_step", step)
    monkeypatch.setattr(SelectorTrainer, "validation_scores", validate)
    data, output = write_pairs(tmp_path / "pairs.jsonl", 40), tmp_path / "cpu"
    budget = ("--clock", "cpu", "--max-minutes", str(4 / 60), "--eval-every", "2")
    result = gatesum(*selector_arguments(data, output, tiny_bundle, 10, *budget))
    assert result.code == 0, result.err
    assert "stopped at step 4 (max_minutes)" in result.out
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert records[0] == {"event": "start", "step": 0, "clock": "cpu", "max_minutes": 4 / 60, "max_steps": 10,
                          "max_epochs": 1, "elapsed_s": 0.0}  # fmt: skip
    assert [(r["step"], r["elapsed_s"]) for r in records if "loss" in r] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert [r["elapsed_s"] for r in records if "auc" in r] == [2.0, 4.0]  # validations at steps 2 and 4
    assert records[-1] == {"event": "stop", "step": 4, "reason": "max_minutes", "elapsed_s": 4.0}
    assert json.loads((output / "checkpoint" / "selector.json").read_text())["clock"] == "cpu"

    more = ("--max-minutes", str(6 / 60), "--eval-every", "2", "--resume")
    refused = gatesum(*selector_arguments(data, output, tiny_bundle, 10, "--clock", "wall", *more))
    assert refused.code == 2 and "clock settings differ" in refused.err  # 4 s were counted on the cpu clock
    resumed = gatesum(*selector_arguments(data, output, tiny_bundle, 10, "--clock", "cpu", *more))
    assert resumed.code == 0 and "resuming from step 4" in resumed.out
    assert "stopped at step 6 (max_minutes)" in resumed.out  # 4 s saved + 2 more steps


def test_a_bad_clock_is_one_error_line(gatesum, tiny_bundle, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 8)
    result = gatesum(*selector_arguments(data, tmp_path / "out", tiny_bundle, 1, "--clock", "gpu"))
    assert result.code == 2 and "clock must be one of ('wall', 'cpu')" in result.err
