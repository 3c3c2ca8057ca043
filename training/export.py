"""``gatesum export``: copy a trained bundle into a shippable one (float16 weights, a name).

    gatesum export --model runs/cnndm-small/best --output pretrained/cnndm-lstm-small \
        --name cnndm-lstm-small --dtype float16

Weights are stored in float16 (half the size) and loaded back as float32, so the shipped
model computes in float32 like the one that was trained. A content selector in the bundle
(``selector.safetensors`` and config.json's "selector" section) comes along, in float32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gatesum.model.bundle import load_bundle, save_bundle
from gatesum.model.errors import GatesumError

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the trained bundle (e.g. runs/NAME/best)")
    parser.add_argument("--output", type=Path, required=True, help="where the shippable bundle goes")
    parser.add_argument("--name", help="the model's name in its card and in API answers")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="weight storage type")


def run(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.model)
    if args.output.resolve() == args.model.resolve():
        raise GatesumError("--output must differ from --model")
    card = {key: value for key, value in bundle.card.items() if key not in ("format", "version")}
    card["name"] = args.name or card.get("name") or args.output.name
    card["exported_from"] = str(args.model)
    save_bundle(args.output, bundle.model, bundle.tokenizer, bundle.normalizer, card,
                dtype=DTYPES[args.dtype], selector=bundle.selector)  # fmt: skip
    size = sum(file.stat().st_size for file in args.output.iterdir())
    selector = ", with its content selector" if bundle.selector is not None else ""
    print(f"wrote {args.output} ({size / 2**20:.1f} MiB, {args.dtype} weights{selector})")
    return 0
