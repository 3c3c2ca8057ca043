"""The memory experiment: a tiny end-to-end sweep, and a chrono LSTM that learns to remember."""

import json

import pytest
import torch

from gatesum.cli import main
from gatesum.experiments.memory import QUICK, sweep_points
from gatesum.experiments.memory_report import markdown_report, plot_trace
from gatesum.experiments.recall import MemoryConfig, recall_batch, synthetic_filler, train_point
from gatesum.model.recall import CELL_NAMES, load_recall_models, recall_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_tiny_sweep_end_to_end(tmp_path, workers):
    argv = [
        "memory",
        "--workers",
        workers,
        "--quick",
        "--synthetic",
        "--cells",
        "rnn,gru,lstm,lstm-peephole",
        "--lags",
        "5,12",
        "--default-init-lags",
        "12",
        "--seeds",
        "2",
        "--hidden-size",
        "8",
        "--batch-size",
        "8",
        "--max-steps",
        "15",
        "--output-dir",
        str(tmp_path),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "memory.json").read_text())
    runs = payload["results"]
    # rnn: 2 lags × 2 seeds; gated cells: chrono at 2 lags + default at L = 12, × 2 seeds
    assert len(runs) == 4 + 3 * (2 + 1) * 2
    pairs = {(r["cell"], r["init"]) for r in runs}
    assert pairs == {
        ("rnn", "default"),
        *((cell, init) for cell in ("gru", "lstm", "lstm-peephole") for init in ("chrono", "default")),
    }
    for record in runs:
        assert 1 <= record["steps"] <= 15
        assert 0.0 <= record["accuracy"] <= 1.0 and record["chance"] == pytest.approx(1 / 8)
        assert record["solved"] == (record["steps_to_solve"] is not None)
        assert record["solved"] == (record["stopped_by"] == "solved")
    report = (tmp_path / "memory.md").read_text()
    assert "| lstm, chrono init |" in report and "| rnn (no gates) |" in report
    assert "| lstm-peephole, chrono init |" in report
    assert f"Made by `gatesum memory --workers {workers} --quick" in report
    assert payload["command"].startswith("gatesum memory --workers")
    assert "L = 5 | L = 12" in report
    assert (tmp_path / "memory.png").read_bytes().startswith(PNG_MAGIC)


def test_chrono_lstm_solves_a_short_lag_quickly():
    config = MemoryConfig(hidden_size=32, batch_size=32, max_steps=400, eval_size=256)
    record = train_point(config, synthetic_filler(config.filler_vocab), "lstm", "chrono", lag=20, seed=0)
    assert record["solved"], record
    assert record["steps_to_solve"] <= 300
    assert record["accuracy"] >= 0.99  # on 256 held-out documents, 32 chance hits expected
    assert record["loss"] < 0.5


def test_a_budget_too_small_is_reported_unsolved():
    config = MemoryConfig(hidden_size=8, batch_size=8, max_steps=3, eval_size=256)
    record = train_point(config, synthetic_filler(config.filler_vocab), "rnn", "default", lag=50, seed=0)
    assert not record["solved"] and record["steps_to_solve"] is None
    assert record["steps"] == 3 and record["stopped_by"] == "steps"
    assert record["accuracy"] < 0.5  # three steps cannot teach recall across 50 tokens


def test_recall_batch_places_the_key_only_at_the_start():
    config = MemoryConfig(key_length=3)
    tokens, keys = recall_batch(config, synthetic_filler(10), 40, 16, torch.Generator().manual_seed(0))
    assert tokens.shape == (16, 43) and keys.shape == (16, 3)
    assert torch.equal(tokens[:, :3], keys)
    assert tokens[:, 3:].min() >= config.key_symbols  # filler never looks like a key symbol


def test_quick_sweep_reaches_a_thousand_tokens_and_compares_inits():
    points = sweep_points(QUICK)
    assert max(lag for _, _, lag, _ in points) >= 1000
    assert {cell for cell, _, _, _ in points} == set(CELL_NAMES)  # the peephole LSTM is a row
    for cell in ("gru", "lstm", "lstm-peephole"):
        assert {init for c, init, _, _ in points if c == cell} == {"chrono", "default"}
    assert {init for c, init, _, _ in points if c == "rnn"} == {"default"}


def test_markdown_table_reports_mean_std_and_steps():
    records = [
        {"cell": "lstm", "init": "chrono", "lag": 100, "seed": s, "accuracy": a, "solved": a >= 0.99,
         "steps_to_solve": n if a >= 0.99 else None}
        for s, (a, n) in enumerate([(1.0, 120), (1.0, 160), (0.5, None)])
    ]  # fmt: skip
    report = markdown_report(MemoryConfig(), records, "random tokens", 60.0)
    assert "| lstm, chrono init | 0.83 ± 0.24 |" in report
    assert "| lstm, chrono init | 140 (2/3) |" in report


def test_plot_trace_writes_a_png(tmp_path):
    tokens = ["the", "key", "is", "7", "and", "then", "much", "filler"]
    path = plot_trace(tokens, {"lstm": torch.linspace(0, 1, 8), "rnn": [0.0] * 7 + [1.0]}, tmp_path / "t.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="8 tokens"):
        plot_trace(tokens, [1.0, 2.0], tmp_path / "bad.png")


def test_trace_of_a_bundle_writes_a_png(tiny_bundle, tmp_path, capsys):
    document = tmp_path / "doc.txt"
    document.write_text("The police said the storm hit the coast. The court found the report new.")
    argv = ["memory", "trace", "--model", str(tiny_bundle), "--input", str(document),
            "--output", str(tmp_path / "trace.png")]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "trace.png").read_bytes().startswith(PNG_MAGIC)
    assert "source tokens" in capsys.readouterr().out


def test_trace_of_a_missing_document_is_a_one_line_error(tiny_bundle, tmp_path, capsys):
    argv = ["memory", "trace", "--model", str(tiny_bundle), "--input", str(tmp_path / "missing.txt"),
            "--output", str(tmp_path / "trace.png")]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "missing.txt" in error and "Traceback" not in error


def test_ship_trains_writes_and_loads_one_model_per_cell(tmp_path):
    output, report = tmp_path / "models", tmp_path / "results" / "memory-ship"
    argv = ["memory", "ship", "--synthetic", "--output", str(output), "--report", str(report),
            "--train-length", "12", "--max-steps", "3", "--eval-lags", "1,5,30", "--eval-size", "16",
            "--hidden-size", "8", "--batch-size", "4", "--workers", "1", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    models = load_recall_models(output)
    assert list(models) == list(CELL_NAMES)
    for name, loaded in models.items():
        assert loaded.card["training"]["steps"] == 3
        assert set(loaded.card["recall"]) == {"1", "5", "30"}  # scored past the training length
        curve = recall_curve(loaded.model, [3, 1, 4, 1, 5], key=2)
        assert curve.shape == (5,), name
    card = (output / "README.md").read_text()
    assert "`gatesum memory ship --synthetic" in card and "| lstm-peephole |" in card
    payload = json.loads(report.with_suffix(".json").read_text())
    assert payload["command"].startswith("gatesum memory ship") and len(payload["models"]) == 4
    assert "| rnn |" in report.with_suffix(".md").read_text()
    assert report.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)
