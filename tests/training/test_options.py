"""Config file + flags: precedence, validation, one-line errors."""

import argparse
import dataclasses
import json

import pytest

from gatesum.cli import main
from gatesum.model.errors import GatesumError
from gatesum.training.options import (
    RESUME_FIXED,
    RESUME_MAY_CHANGE,
    RESUME_NOT_COMPARED,
    SECTIONS,
    ResumeChanges,
    add_arguments,
    load_options,
    resume_changes,
    resume_rule,
)


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


# --- one check for config values and flags --------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "flags", "config_line", "flag_line"),
    [
        ("[train]\nlearning_rate = -1\n", ["--learning-rate", "-1"],
         "[train] learning_rate = -1: must be more than 0", "--learning-rate -1: must be more than 0"),
        ("[train]\neval_every = 0\n", ["--eval-every", "0"],
         "[train] eval_every = 0: must be at least 1", "--eval-every 0: must be at least 1"),
        ('[train]\noptimizer = "sgd"\n', ["--optimizer", "sgd"],
         "[train] optimizer = sgd: must be one of adam, adagrad",
         "--optimizer sgd: must be one of adam, adagrad"),
        ('[data]\nbatch_tokens = "many"\n', ["--batch-tokens", "many"],
         "[data] batch_tokens = many: expected an integer, not 'many'",
         "--batch-tokens many: expected an integer, not 'many'"),
        ("[tokenizer]\nvocab_size = 0\n", ["--tokenizer-vocab-size", "0"],
         "[tokenizer] vocab_size = 0: must be at least 1", "--tokenizer-vocab-size 0: must be at least 1"),
        ("[model]\nencoder_hidden_size = 1.5\n", ["--model", "encoder_hidden_size=1.5"],
         "[model] encoder_hidden_size = 1.5: expected an integer, not 1.5",
         "--model encoder_hidden_size=1.5: expected an integer, not 1.5"),
    ],
)  # fmt: skip
def test_a_config_value_and_a_flag_meet_the_same_check(tmp_path, capsys, toml, flags, config_line, flag_line):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    assert main(["train", "--config", str(config)]) == 2
    assert capsys.readouterr().err == f"gatesum train: error: {config}: {config_line}\n"
    assert main(["train", *flags]) == 2
    assert capsys.readouterr().err == f"gatesum train: error: {flag_line}\n"


def test_checked_values_reach_the_options_converted(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[train]\nlearning_rate = 1\nmax_minutes = 2\n")
    options = parse("--config", str(config), "--seed", "5", "--grad-clip", "0.5")
    assert options.train.learning_rate == 1.0 and isinstance(options.train.learning_rate, float)
    assert (options.train.seed, options.train.grad_clip, options.train.max_minutes) == (5, 0.5, 2.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [("train = 3\n", "train must be a table"),
     ("[train]\nbf16 = \"yes\"\n", "bf16 = yes: expected true or false"),
     ("[train]\nvalidation_files = \"v.jsonl\"\n", "validation_files = v.jsonl: expected a list"),
     ('[train]\ndecay = "linear"\n', "decay = linear counts down to max_steps")],
)  # fmt: skip
def test_more_bad_config_values_are_one_line(tmp_path, capsys, text, message):
    config = tmp_path / "c.toml"
    config.write_text(text)
    assert main(["train", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error


# --- what --resume compares -----------------------------------------------------------------------


def test_every_setting_has_one_resume_rule():
    names = [
        f"{section}.{item.name}" for section, cls in SECTIONS.items() for item in dataclasses.fields(cls)
    ]
    for name in names:
        section = name.split(".")[0]
        lists = [RESUME_FIXED, RESUME_MAY_CHANGE, RESUME_NOT_COMPARED]
        homes = [rule for rule in lists if name in rule or section in rule]
        assert len(homes) == 1, f"{name} is in {len(homes)} of the resume lists"
    listed = {*RESUME_FIXED, *RESUME_MAY_CHANGE, *RESUME_NOT_COMPARED}
    assert listed <= {*names, *SECTIONS}, listed - {*names, *SECTIONS}  # no stale names
    for name in ("model.encoder_hidden_size", "tokenizer.vocab_size", "data.source_max_tokens",
                 "data.data_files", "data.batch_tokens", "train.seed", "train.optimizer"):  # fmt: skip
        assert resume_rule(name) == "fixed", name
    for name in ("train.learning_rate", "train.max_minutes", "train.max_steps", "train.eval_every",
                 "train.coverage_from_step"):  # fmt: skip
        assert resume_rule(name) == "may change", name


def test_resume_changes_splits_refused_from_allowed_and_reads_old_names():
    saved = parse("--learning-rate", "0.01", "--coverage-loss-weight", "0.5").to_dict()
    saved["train"]["coverage_weight"] = saved["train"].pop("coverage_loss_weight")  # an older card
    del saved["data"]["limit"]  # a setting newer than the checkpoint: not compared
    current = parse("--learning-rate", "0.02", "--coverage-loss-weight", "0.5", "--source-max-tokens",
                    "300", "--tokenizer-vocab-size", "900", "--limit", "5",
                    "--output-dir", "elsewhere").to_dict()  # fmt: skip
    changes = resume_changes(saved, current)
    assert changes.fixed == {"data.source_max_tokens": (400, 300), "tokenizer.vocab_size": (16000, 900)}
    assert changes.allowed == {"train.learning_rate": (0.01, 0.02)}
    assert changes.refusal() == (
        "--resume: these settings differ from the checkpoint's: data.source_max_tokens 400 → 300, "
        "tokenizer.vocab_size 16000 → 900 (resume with the checkpoint's values, or train into another "
        "--output-dir)"
    )
    same = parse().to_dict()
    assert resume_changes(json.loads(json.dumps(same)), same) == ResumeChanges(fixed={}, allowed={})
