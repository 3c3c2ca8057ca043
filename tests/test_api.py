"""The public Python API: ``gatesum.load(...)`` and ``.summarize([...])``, as the README shows it."""

from pathlib import Path

import pytest

import gatesum
from gatesum.model.errors import GatesumError
from gatesum.model.pipeline import Pipeline

TEXT = (
    "The city of Lyon will close its oldest bridge to traffic for two years from next March, officials "
    "said on Thursday. The Pont Wilson, which carries about 40,000 cars a day across the Rhône, has "
    "cracks in two of its arches that engineers found during a routine inspection in October."
)


def test_the_readme_example_runs_on_the_bundled_model():
    summarizer = gatesum.load()
    (summary,) = summarizer.summarize([TEXT], beam_size=4)
    assert "Lyon" in summary.summary and "bridge" in summary.summary
    assert len(summary.token_ids) <= summary.input_tokens  # never longer than the input
    assert summarizer.summarize(TEXT, beam_size=1)[0].summary  # one text: a list of one


def test_a_bundle_directory_and_generation_settings(tiny_bundle: Path):
    summarizer = gatesum.load(tiny_bundle)
    assert isinstance(summarizer, Pipeline) and summarizer.name == "tiny-untrained"
    config = gatesum.GenerationConfig(beam_size=2, max_length=5)
    summaries = summarizer.summarize(
        ["police said . court found .", "storm hit coast ."], config, min_length=2
    )
    assert len(summaries) == 2 and all(len(s.token_ids) <= 5 for s in summaries)
    with pytest.raises(TypeError, match="unknown generation settings \\['beam'\\]"):
        summarizer.summarize(["x"], beam=3)


def test_a_hub_bundle_is_fetched_into_the_cache_and_loaded(tiny_bundle: Path, monkeypatch):
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return str(tiny_bundle)  # what the Hub cache would hold

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    summarizer = gatesum.load("hf://someone/gatesum-small@v1")
    assert summarizer.name == "tiny-untrained"
    assert calls == [("someone/gatesum-small", "v1", ("config.json", "model.safetensors", "tokenizer.model"))]


def test_an_unreachable_hub_or_a_missing_directory_is_one_clear_error(tmp_path: Path, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("no connection and nothing in the cache")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    with pytest.raises(GatesumError, match="hf://someone/absent: could not fetch the bundle from the Hub"):
        gatesum.load("hf://someone/absent")
    with pytest.raises(GatesumError, match="absent"):
        gatesum.load(tmp_path / "absent")
