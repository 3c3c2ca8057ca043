"""Model bundles: a directory that holds everything needed to summarize, and nothing pickled.

    bundle/
      config.json         model, tokenizer, normalizer, data and metrics (the model card's facts)
      model.safetensors   weights (float32, or float16 for shipping; loaded as float32)
      tokenizer.model     the sentencepiece model
      selector.safetensors  optional: a content selector's weights (model/selector.py); its
                          settings are config.json's "selector" section. Bundles without it load
                          as before, with ``Bundle.selector`` None.

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
from gatesum.model.selector import ContentSelector, SelectorConfig
from gatesum.model.summarizer import Summarizer
from gatesum.model.text import NormalizerConfig
from gatesum.model.tokenizer import Tokenizer

FORMAT = "gatesum-bundle"
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.model"
SELECTOR_WEIGHTS_FILE = "selector.safetensors"
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
    selector: ContentSelector | None = None  # when the bundle has one (config.json "selector")

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
    selector: ContentSelector | None = None,
) -> None:
    """Write a bundle to ``directory`` atomically. ``card`` adds facts (data, metrics, ...) to
    config.json; ``extra_files`` are written inside the same atomic swap (training state).

    ``selector`` adds a content selector (its facts from ``card["selector"]``, if any); without
    one, a "selector" section in ``card`` is dropped, since its weights are not written.
    """
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
        facts = config.pop("selector", None)
        if selector is not None:
            config["selector"] = _write_selector(built, selector, tokenizer, facts)
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
    selector = load_selector(directory, card, tokenizer)
    if selector is not None:
        selector = selector.to(device).eval()
    return Bundle(model.to(device).eval(), tokenizer, normalizer, card, directory, selector)


# Weights that older bundles and checkpoints store under another name: old -> current.
RENAMED_WEIGHTS = {"decoder.attention.coverage_weight": "decoder.attention.w_c"}


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
    weights = {RENAMED_WEIGHTS.get(name, name): tensor for name, tensor in weights.items()}
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


# --- the optional content selector ----------------------------------------------------------------


def load_selector(directory: Path, card: dict[str, Any], tokenizer: Tokenizer) -> ContentSelector | None:
    """The bundle's content selector (float32, train mode as built), or None when it has none.

    The selector tags the summarizer's token ids, so it must have been trained with this very
    tokenizer: the fingerprint saved beside it is checked.
    """
    section = card.get("selector")
    if section is None:
        return None
    where = Path(directory) / CONFIG_FILE
    try:
        config = SelectorConfig.from_dict(section["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise GatesumError(f"{where}: invalid selector settings ({error})") from None
    if section.get("tokenizer_fingerprint") not in (None, tokenizer.fingerprint):
        raise GatesumError(
            f"{where}: the selector was trained with another tokenizer "
            f"({section['tokenizer_fingerprint']}, the bundle's is {tokenizer.fingerprint})"
        )
    if config.vocab_size != tokenizer.vocab_size:
        raise GatesumError(
            f"{where}: the selector's vocabulary of {config.vocab_size} "
            f"does not match the tokenizer's {tokenizer.vocab_size}"
        )
    selector = ContentSelector(config)
    load_weights(selector, Path(directory) / section.get("file", SELECTOR_WEIGHTS_FILE))
    return selector


def save_with_selector(
    source: Path, directory: Path, selector: ContentSelector, facts: dict[str, Any] | None = None
) -> None:
    """Write ``directory``: the bundle at ``source`` with ``selector`` added (or replaced).

    The summarizer's files are copied unchanged; config.json gains a "selector" section (the
    selector's settings, the tokenizer fingerprint it was trained with, and ``facts``: training
    details, metrics). ``directory`` may be ``source`` itself. Written whole or not at all,
    like ``save_bundle``.
    """
    source, directory = Path(source), Path(directory)
    recover_directory(source)
    card = read_card(source)
    tokenizer = Tokenizer.load(source / TOKENIZER_FILE)
    if selector.config.vocab_size != tokenizer.vocab_size:
        raise GatesumError(
            f"{source}: the selector's vocabulary of {selector.config.vocab_size} "
            f"does not match the bundle's tokenizer ({tokenizer.vocab_size})"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        for file in source.iterdir():
            if file.is_file() and file.name not in (CONFIG_FILE, SELECTOR_WEIGHTS_FILE):
                shutil.copyfile(file, built / file.name)
        card["selector"] = _write_selector(built, selector, tokenizer, facts)
        (built / CONFIG_FILE).write_text(json.dumps(card, indent=2) + "\n")
        for file in built.iterdir():  # data on disk before the rename makes it visible
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
            file.chmod(0o644)
        built.chmod(0o755)
        replace_directory(built, directory)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise


def _write_selector(
    built: Path, selector: ContentSelector, tokenizer: Tokenizer, facts: dict[str, Any] | None
) -> dict[str, Any]:
    """Write selector.safetensors (float32: it is small) into ``built``; -> config.json's section."""
    weights = {
        name: p.detach().to("cpu", torch.float32).contiguous() for name, p in selector.named_parameters()
    }
    save_file(weights, str(built / SELECTOR_WEIGHTS_FILE))
    return {
        **(facts or {}),
        "file": SELECTOR_WEIGHTS_FILE,
        "model": selector.config.to_dict(),
        "tokenizer_fingerprint": tokenizer.fingerprint,
    }
