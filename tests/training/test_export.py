"""gatesum export: float16 storage, float32 compute, same summaries."""

import json

import torch

from gatesum.model.bundle import load_bundle
from gatesum.model.pipeline import summarize_texts
from gatesum.model.search import GenerationConfig
from gatesum.training.export import relative_paths


def test_export_halves_the_weights_and_keeps_the_summaries(tiny_bundle, tmp_path, gatesum):
    output = tmp_path / "shipped"
    result = gatesum("export", "--model", tiny_bundle, "--output", output, "--name", "tiny-shipped")
    assert result.code == 0, result.err
    original, shipped = load_bundle(tiny_bundle), load_bundle(output)
    assert shipped.name == "tiny-shipped"
    assert json.loads((output / "config.json").read_text())["weights_dtype"] == "float16"
    assert (output / "model.safetensors").stat().st_size < 0.6 * (
        tiny_bundle / "model.safetensors"
    ).stat().st_size
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in shipped.model.parameters())
    texts = ["The police said the storm hit the coast. The court found the report new."]
    config = GenerationConfig(beam_size=2, max_length=12)
    assert (
        summarize_texts(shipped, texts, config)[0].token_ids
        == summarize_texts(original, texts, config)[0].token_ids
    )


def test_export_onto_itself_is_refused(tiny_bundle, gatesum):
    result = gatesum("export", "--model", tiny_bundle, "--output", tiny_bundle)
    assert result.code == 2 and "must differ" in result.err


def test_a_shipped_bundle_is_readable_by_other_users(tiny_bundle, tmp_path, gatesum):
    """Temporary files and folders start private (0600/0700); a bundle served from a container
    by a non-root user must not stay that way."""
    output = tmp_path / "shipped"
    assert gatesum("export", "--model", tiny_bundle, "--output", output).code == 0
    assert output.stat().st_mode & 0o777 == 0o755
    assert {path.name: path.stat().st_mode & 0o777 for path in output.iterdir()} == {
        "config.json": 0o644,
        "model.safetensors": 0o644,
        "tokenizer.model": 0o644,
    }


def test_export_carries_the_content_selector(make_selector_bundle, tmp_path, gatesum):
    source = make_selector_bundle()
    output = tmp_path / "shipped"
    result = gatesum("export", "--model", source, "--output", output)
    assert result.code == 0, result.err
    assert "with its content selector" in result.out
    original, shipped = load_bundle(source), load_bundle(output)
    assert shipped.selector is not None and shipped.selector.config == original.selector.config
    for name, weight in shipped.selector.state_dict().items():
        assert torch.equal(weight, original.selector.state_dict()[name])  # float32: exactly
    card = json.loads((output / "config.json").read_text())
    assert card["selector"]["tokenizer_fingerprint"] == shipped.tokenizer.fingerprint
    long = " ".join(["The police said the storm hit the coast."] * 30)
    [summary] = summarize_texts(shipped, [long], GenerationConfig(beam_size=1, max_length=6))
    assert summary.read == "selected"


def test_selector_ships_another_bundles_selector(tiny_bundle, make_selector_bundle, tmp_path, gatesum):
    """A summarizer bundle plus the selector of a ``gatesum select train`` best/: one bundle."""
    source = make_selector_bundle()
    output = tmp_path / "shipped"
    result = gatesum("export", "--model", tiny_bundle, "--selector", source, "--output", output)
    assert result.code == 0, result.err
    assert "with its content selector" in result.out
    shipped, original = load_bundle(output), load_bundle(source)
    for name, weight in shipped.selector.state_dict().items():
        assert torch.equal(weight, original.selector.state_dict()[name])
    card = json.loads((output / "config.json").read_text())
    assert card["selector"] == json.loads((source / "config.json").read_text())["selector"]
    assert card["selector_from"] == str(source)


def test_selector_from_a_bundle_without_one_is_refused(tiny_bundle, tmp_path, gatesum):
    output = tmp_path / "out"
    result = gatesum("export", "--model", tiny_bundle, "--selector", tiny_bundle, "--output", output)
    assert result.code == 2 and "has no content selector" in result.err and not output.exists()


def _shifted_copy(bundle_dir, directory, shift: float, **model_changes):
    """The bundle at ``bundle_dir`` with every weight + ``shift`` (and model settings changed)."""
    from dataclasses import replace

    from gatesum.model.bundle import save_bundle
    from gatesum.model.summarizer import Summarizer

    bundle = load_bundle(bundle_dir)
    model = Summarizer(replace(bundle.model.config, **model_changes)) if model_changes else bundle.model
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(shift)
    card = {key: value for key, value in bundle.card.items() if key not in ("format", "version", "model")}
    save_bundle(directory, model, bundle.tokenizer, bundle.normalizer, card)
    return directory


def test_average_exports_the_mean_of_the_bundles(tiny_bundle, tmp_path, gatesum):
    plus, minus = (
        _shifted_copy(tiny_bundle, tmp_path / "plus", 0.5),
        _shifted_copy(tiny_bundle, tmp_path / "minus", 2.0),
    )
    output = tmp_path / "averaged"
    result = gatesum("export", "--model", tiny_bundle, "--average", plus, minus, "--output", output,
                     "--dtype", "float32")  # fmt: skip
    assert result.code == 0, result.err
    assert "the mean of 3 bundles" in result.out
    original, averaged = load_bundle(tiny_bundle), load_bundle(output)
    for (name, before), after in zip(original.model.named_parameters(), averaged.model.parameters()):
        torch.testing.assert_close(after, before + 2.5 / 3, msg=name)
    assert json.loads((output / "config.json").read_text())["averaged_from"] == [
        str(tiny_bundle),
        str(plus),
        str(minus),
    ]


def test_average_refuses_another_model(tiny_bundle, tmp_path, gatesum):
    other = _shifted_copy(tiny_bundle, tmp_path / "other", 0.0, decoder_hidden_size=24)
    result = gatesum("export", "--model", tiny_bundle, "--average", other, "--output", tmp_path / "out")
    assert result.code == 2 and "other model settings" in result.err and not (tmp_path / "out").exists()


def test_paths_under_the_working_directory_are_made_relative():
    """A run started with an absolute --output-dir records where it ran; the shipped card says
    runs/x, not /home/me/work/runs/x. Other strings and paths stay as they are."""
    card = {"training": {"options": {"train": {"output_dir": "/home/me/work/runs/x"}}, "step": 5},
            "averaged_from": ["/home/me/work/runs/a", "runs/b", "/elsewhere/c"], "name": "m"}  # fmt: skip
    assert relative_paths(card, "/home/me/work/") == {
        "training": {"options": {"train": {"output_dir": "runs/x"}}, "step": 5},
        "averaged_from": ["runs/a", "runs/b", "/elsewhere/c"],
        "name": "m",
    }
