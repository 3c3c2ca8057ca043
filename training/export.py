"""``gatesum export``: copy a trained bundle into a shippable one (float16 weights, a name).

    gatesum export --model runs/cnndm-small/best --output pretrained/cnndm-lstm-small \
        --name cnndm-lstm-small --dtype float16

``--average`` makes the weights the mean of several bundles of one model and tokenizer, e.g. a
run's last kept checkpoints (checkpoint averaging: the mean of nearby points on the training path
is usually a little better than any one of them, Vaswani et al. 2017):

    gatesum export --model runs/cnndm-small/checkpoints/step-007200 \
        --average runs/cnndm-small/checkpoints/step-006800 runs/cnndm-small/checkpoints/step-006400 \
        --output runs/cnndm-small/averaged

``--selector`` ships a content selector inside the bundle (one bundle, one config.json): the
selector of another bundle, e.g. the best/ that ``gatesum select train`` writes, trained on the
same tokenizer:

    gatesum export --model pretrained/cnndm-lstm-small --selector runs/selector/best \
        --output runs/cnndm-lstm-small-selector

Weights are stored in float16 (half the size) and loaded back as float32, so the shipped
model computes in float32 like the one that was trained. A content selector in the bundle
(``selector.safetensors`` and config.json's "selector" section) comes along, in float32.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from gatesum.model.bundle import Bundle, load_bundle, save_bundle
from gatesum.model.errors import GatesumError
from gatesum.model.selector import ContentSelector

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the trained bundle (e.g. runs/NAME/best)")
    parser.add_argument("--output", type=Path, required=True, help="where the shippable bundle goes")
    parser.add_argument("--name", help="the model's name in its card and in API answers")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="weight storage type")
    parser.add_argument("--average", type=Path, nargs="+", default=[], metavar="DIR",
                        help="bundles of the same model and tokenizer (e.g. a run's checkpoints/step-N): "
                        "the exported weights are the mean of --model's and theirs")  # fmt: skip
    parser.add_argument("--selector", type=Path, metavar="DIR",
                        help="a bundle with a content selector (e.g. runs/selector/best): its selector "
                        "and the selector's facts replace --model's")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.model)
    if args.output.resolve() == args.model.resolve():
        raise GatesumError("--output must differ from --model")
    card = {key: value for key, value in bundle.card.items() if key not in ("format", "version")}
    card["name"] = args.name or card.get("name") or args.output.name
    card["exported_from"] = str(args.model)
    if args.average:
        average_weights(bundle, [load_bundle(directory) for directory in args.average])
        card["averaged_from"] = [str(directory) for directory in (args.model, *args.average)]
    selector = bundle.selector
    if args.selector is not None:
        selector, card["selector"] = selector_of(load_bundle(args.selector), bundle)
        card["selector_from"] = str(args.selector)
    card = relative_paths(card, f"{Path.cwd()}/")
    save_bundle(args.output, bundle.model, bundle.tokenizer, bundle.normalizer, card,
                dtype=DTYPES[args.dtype], selector=selector)  # fmt: skip
    size = sum(file.stat().st_size for file in args.output.iterdir())
    selector = ", with its content selector" if selector is not None else ""
    averaged = f", the mean of {len(args.average) + 1} bundles" if args.average else ""
    print(f"wrote {args.output} ({size / 2**20:.1f} MiB, {args.dtype} weights{averaged}{selector})")
    return 0


def relative_paths(value: Any, prefix: str) -> Any:
    """The card with ``prefix`` (this machine's working directory) cut from every string that
    starts with it: a run started with an absolute --output-dir records where it ran."""
    if isinstance(value, dict):
        return {key: relative_paths(item, prefix) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_paths(item, prefix) for item in value]
    return value.removeprefix(prefix) if isinstance(value, str) else value


def average_weights(bundle: Bundle, others: list[Bundle]) -> None:
    """Set ``bundle``'s summarizer weights to the mean of its own and ``others``' (in place).
    They must be the same model (config.json's "model" settings) with the same tokenizer."""
    for other in others:
        if other.card.get("model") != bundle.card.get("model"):
            raise GatesumError(f"--average: {other.path} has other model settings than --model")
        if other.tokenizer.fingerprint != bundle.tokenizer.fingerprint:
            raise GatesumError(f"--average: {other.path} has another tokenizer than --model")
    # named_parameters: a tied weight (embedding and output layer) once, not once per name
    weights = [dict(other.model.named_parameters()) for other in others]
    with torch.no_grad():
        for name, parameter in bundle.model.named_parameters():
            parameter.add_(sum(state[name] for state in weights)).div_(len(others) + 1)


def selector_of(source: Bundle, bundle: Bundle) -> tuple[ContentSelector, dict[str, Any]]:
    """``source``'s content selector and its config.json facts, for shipping in ``bundle``: it
    must tag ``bundle``'s token ids, so both must have the same tokenizer."""
    if source.selector is None:
        raise GatesumError(f"--selector: {source.path} has no content selector")
    if source.tokenizer.fingerprint != bundle.tokenizer.fingerprint:
        raise GatesumError(f"--selector: {source.path} was trained with another tokenizer than --model")
    return source.selector, dict(source.card["selector"])
