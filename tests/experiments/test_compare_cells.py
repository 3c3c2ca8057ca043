"""gatesum memory compare, end to end on a tiny setting: trains, scores, tabulates."""

import argparse
import json

import pytest

from gatesum.cli import main
from gatesum.experiments.compare_cells import add_arguments, run_options
from gatesum.model.errors import GatesumError
from tests.helpers import write_pairs

CONFIG = """
[model]
embedding_size = 16
encoder_hidden_size = 16
decoder_hidden_size = 32
attention_size = 16
[data]
data_files = ["{data}"]
batch_tokens = 400
[tokenizer]
vocab_size = 300
[train]
validation_size = 6
eval_every = 1000
eval_batches = 2
eval_rouge_samples = 4
threads = 1
learning_rate = 0.01
"""


@pytest.mark.slow
def test_compare_trains_and_tabulates_every_cell_and_attention(tmp_path, capsys):
    data = write_pairs(tmp_path / "pairs.jsonl", 60)
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG.format(data=data))
    output = tmp_path / "compare"
    argv = ["memory", "compare", "--config", str(config), "--cells", "rnn,lstm", "--attention", "mlp,none",
            "--max-steps", "3", "--budget-minutes", "5", "--test-files", str(data), "--test-limit", "5",
            "--beam-size", "2", "--output-dir", str(output)]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((output / "compare.json").read_text())
    runs = {(entry["cell"], entry["attention"]): entry for entry in results["runs"]}
    assert set(runs) == {("rnn", "mlp"), ("rnn", "none"), ("lstm", "mlp"), ("lstm", "none")}
    assert all(entry["steps"] == 3 and entry["documents"] == 5 for entry in runs.values())
    cards = {name: json.loads((output / name / "best" / "config.json").read_text())["model"]
             for name in ("rnn-none", "lstm-mlp")}  # fmt: skip
    assert cards["rnn-none"]["encoder_cell"] == "rnn" and cards["rnn-none"]["copy"] is False
    assert cards["lstm-mlp"]["bidirectional"] is False and cards["lstm-mlp"]["copy"] is True
    assert "| lstm | none |" in (output / "compare.md").read_text()
    assert (output / "compare.png").read_bytes().startswith(b"\x89PNG")
    # Again, led by a run that was handed the shared tokenizer: it resumes, and so do the rest.
    argv[argv.index("rnn,lstm")] = "lstm,rnn"
    assert main(argv) == 0


def test_set_parses_typed_values_and_refuses_malformed_ones(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def options(*assignments: str):
        argv = ["--test-files", "t.jsonl", "--output-dir", str(tmp_path)]
        for assignment in assignments:
            argv += ["--set", assignment]
        return run_options(parser.parse_args(argv), "gru", "none", None)

    chosen = options("data.limit=2000", "tokenizer.path=runs/x/tokenizer.model", "model.dropout=0.3")
    assert chosen.data.limit == 2000 and chosen.tokenizer.path == "runs/x/tokenizer.model"
    assert chosen.model.dropout == 0.3 and chosen.model.encoder_cell == "gru" and chosen.model.copy is False
    for bad in ("limit", "data.nope=1", "nosection.limit=1", "data.limit="):
        with pytest.raises(GatesumError, match=r"SECTION\.FIELD=VALUE"):
            options(bad)
