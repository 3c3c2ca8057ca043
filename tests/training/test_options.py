"""Config file + flags: precedence, validation, one-line errors."""

import argparse

import pytest

from gatesum.model.errors import GatesumError
from gatesum.training.options import add_arguments, load_options


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_options(parser.parse_args(list(argv)))


def test_flags_override_the_config_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[model]\nencoder_cell = "gru"\n[data]\ndata_files = ["a.jsonl"]\n[train]\nseed = 3\n')
    options = parse(
        "--config",
        str(config),
        "--seed",
        "7",
        "--model",
        'attention="dot"',
        "--model",
        "encoder_hidden_size=256",
        "--model",
        "bidirectional=false",
    )
    assert options.model.encoder_cell == "gru" and options.model.attention == "dot"
    assert options.model.encoder_hidden_size == 256 and options.model.bidirectional is False
    assert options.train.seed == 7 and options.data.data_files == ["a.jsonl"]


def test_hub_dataset_flag_replaces_the_configs_local_files(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndata_files = ["a.jsonl"]\n')
    options = parse("--config", str(config), "--dataset", "abisee/cnn_dailymail", "--dataset-config", "3.0.0")
    assert options.data.data_files == [] and options.data.dataset == "abisee/cnn_dailymail"


@pytest.mark.parametrize(
    "text,message",
    [("[model]\nencoder_cell = \"transformer\"\n", "encoder_cell"), ("[modle]\n", "unknown tables"),
     ("[train]\nlearning_rat = 1\n", "unknown settings"), ("not toml [", "invalid TOML")],
)  # fmt: skip
def test_bad_config_files_give_one_clear_error(tmp_path, text, message):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(GatesumError, match=message):
        parse("--config", str(config))


def test_missing_config_file(tmp_path):
    with pytest.raises(GatesumError, match="not found"):
        parse("--config", str(tmp_path / "nope.toml"))


def test_coverage_weight_is_read_under_its_old_name_with_a_warning(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("[train]\ncoverage_weight = 0.25\n")
    assert parse("--config", str(config)).train.coverage_loss_weight == 0.25
    warning = "gatesum train: warning: [train] coverage_weight (--coverage-weight) is deprecated; "
    assert capsys.readouterr().err == warning + "call it coverage_loss_weight (--coverage-loss-weight)\n"
    assert parse("--coverage-weight", "0.5").train.coverage_loss_weight == 0.5  # the old flag, too
    assert capsys.readouterr().err.startswith(warning)
    assert parse("--coverage-loss-weight", "0.75").train.coverage_loss_weight == 0.75
    assert parse().train.coverage_loss_weight == 1.0 and capsys.readouterr().err == ""
    with pytest.raises(GatesumError, match="both coverage_weight and coverage_loss_weight are set"):
        parse("--config", str(config), "--coverage-loss-weight", "0.5")


def test_model_flags_are_kept_apart_from_the_config_files_model_table(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[model]\nencoder_cell = "gru"\n')
    options = parse("--config", str(config), "--model", "dropout=0.3", "--model", "bidirectional=false")
    assert options.model_flags == {"dropout": 0.3, "bidirectional": False}
    assert options.model.encoder_cell == "gru" and options.model.dropout == 0.3
