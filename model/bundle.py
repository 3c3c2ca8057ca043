"""Model bundles: a directory that holds everything needed to summarize, and nothing pickled.

    bundle/
      config.json         model, tokenizer, normalizer, data and metrics (the model card's facts)
      model.safetensors   weights (float32, or float16 for shipping; loaded as float32)
      tokenizer.model     the sentencepiece model

A directory is written whole or not at all: it is built under a temporary name, then swapped
in by renames, so a crash (even ``kill -9``) at any moment leaves the previous bundle intact.
Loading never unpickles anything and names the file at fault when one is missing or corrupt.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gatesum.model.config import ModelConfig
from gatesum.model.errors import GatesumError
from gatesum.model.summarizer import Summarizer
from gatesum.model.text import NormalizerConfig
from gatesum.model.tokenizer import Tokenizer

FORMAT = "gatesum-bundle"
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.model"
# The model that ships with the package (package data of ``gatesum.pretrained``): the default of
# the service, ``gatesum summarize``/``eval`` and ``gatesum.load()``.
BUNDLED_MODEL = Path(str(resources.files("gatesum.pretrained") / "cnndm-lstm-small"))


@dataclass
class Bundle:
    model: Summarizer
    tokenizer: Tokenizer
    normalizer: NormalizerConfig
    card: dict[str, Any]  # the whole config.json
    path: Path

    @property
    def name(self) -> str:
        return self.card.get("name") or self.path.name


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling and a rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600: unreadable to a container's other user
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def replace_directory(built: Path, target: Path) -> None:
    """Swap a fully written directory ``built`` in at ``target``.

    target -> target.old, built -> target, then target.old is removed. A crash between the two
    renames leaves target.old whole; ``recover_directory`` puts it back.
    """
    old = target.with_name(target.name + ".old")
    if old.exists() and target.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(built, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_directory(target: Path) -> None:
    """Undo a swap that a crash interrupted (see ``replace_directory``)."""
    old = target.with_name(target.name + ".old")
    if not target.exists() and old.exists():
        os.replace(old, target)


def save_bundle(
    directory: Path,
    model: Summarizer,
    tokenizer: Tokenizer,
    normalizer: NormalizerConfig,
    card: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    extra_files: dict[str, bytes] | None = None,
) -> None:
    """Write a bundle to ``directory`` atomically. ``card`` adds facts (data, metrics, ...) to
    config.json; ``extra_files`` are written inside the same atomic swap (training state)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        # named_parameters lists the shared embedding once (state_dict would list it three times)
        weights = {name: p.detach().to("cpu", dtype).contiguous() for name, p in model.named_parameters()}
        save_file(weights, str(built / WEIGHTS_FILE))
        shutil.copyfile(tokenizer.path, built / TOKENIZER_FILE)
        config = {
            **(card or {}),
            "format": FORMAT,
            "version": 1,
            "model": model.config.to_dict(),
            "tokenizer": {
                "file": TOKENIZER_FILE,
                "vocab_size": tokenizer.vocab_size,
                "fingerprint": tokenizer.fingerprint,
            },
            "normalizer": asdict(normalizer),
            "weights_dtype": str(dtype).removeprefix("torch."),
        }
        (built / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        for name, data in (extra_files or {}).items():
            (built / name).write_bytes(data)
        for file in built.iterdir():  # data on disk before the rename makes it visible
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
            file.chmod(0o644)
        built.chmod(0o755)  # mkdtemp makes it 0700: a bundle is read by whichever user serves it
        replace_directory(built, directory)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise


def read_card(directory: Path) -> dict[str, Any]:
    """config.json of a bundle, checked to be one."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise GatesumError(f"model bundle not found: {directory} is not a directory")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GatesumError(f"{path}: missing; is {directory} a gatesum model bundle?") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GatesumError(f"{path}: not valid JSON ({error}); the bundle is corrupt") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise GatesumError(f"{path}: not a gatesum bundle config (format is not {FORMAT!r})")
    return card


def load_bundle(directory: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle for inference (eval mode, float32). Raises GatesumError naming the bad file."""
    directory = Path(directory)
    recover_directory(directory)
    card = read_card(directory)
    try:
        config = ModelConfig.from_dict(card["model"])
        normalizer = NormalizerConfig(**card.get("normalizer", {}))
    except (KeyError, TypeError, ValueError) as error:
        raise GatesumError(f"{directory / CONFIG_FILE}: invalid model settings ({error})") from None
    tokenizer = Tokenizer.load(directory / TOKENIZER_FILE)
    if tokenizer.vocab_size != config.vocab_size:
        raise GatesumError(
            f"{directory / TOKENIZER_FILE}: vocabulary of {tokenizer.vocab_size} "
            f"does not match the model's {config.vocab_size}"
        )
    model = Summarizer(config)
    load_weights(model, directory / WEIGHTS_FILE)
    return Bundle(model.to(device).eval(), tokenizer, normalizer, card, directory)


def load_weights(model: Summarizer, path: Path) -> None:
    """Read safetensors weights into ``model`` (cast to its dtype), naming the file on failure."""
    try:
        weights = load_file(str(path))
    except FileNotFoundError:
        raise GatesumError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise GatesumError(
            f"{path}: unreadable weights ({error}); the file is truncated or corrupt"
        ) from None
    expected = dict(model.named_parameters())
    if set(weights) != set(expected):
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise GatesumError(
            f"{path}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise GatesumError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, "
                f"the config wants {tuple(expected[name].shape)}"
            )
    with torch.no_grad():
        for name, tensor in weights.items():
            expected[name].copy_(tensor)
