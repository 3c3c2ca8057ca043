"""Schemathesis, every check, against the live app (uvicorn with ``gatesum serve``'s options):
whatever the OpenAPI schema allows is accepted, whatever it forbids is refused with a documented
4xx, no 5xx, every answer matches its documented status, content type, headers and schema.

Bounded (a fixed seed, a few examples per operation) to stay under a minute. The model is the
tiny bundle with its end-of-summary logit raised, so that each summary ends at once (an untrained
model would run to max_length) and the run measures the HTTP layer, not the decoder. It has a
tiny content selector, so that every mode and the copy mask the schema allows can be served.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import uvicorn

from gatesum.model.bundle import load_bundle, save_bundle
from gatesum.model.selector import ContentSelector, SelectorConfig
from gatesum.model.tokenizer import EOS_ID
from gatesum.service.app import create_app
from gatesum.service.server import connection_options
from tests.service.helpers import make_settings, still_loading

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
# /v1/memory belongs to the memory service, whose recall models the tiny bundle does not have
EXCLUDED = "^/v1/memory"


@pytest.fixture(scope="module")
def quick_bundle(tiny_bundle: Path, tmp_path_factory) -> Path:
    """The tiny bundle, generating (not copying) and preferring end-of-summary above all, with a
    tiny (random) content selector."""
    bundle = load_bundle(tiny_bundle)
    decoder = bundle.model.decoder
    with torch.no_grad():
        if hasattr(decoder, "copy_gate"):
            decoder.copy_gate.bias.fill_(30.0)  # p_gen ~ 1: the vocabulary distribution decides
        bias = decoder.output_bias if hasattr(decoder, "output_bias") else decoder.output.bias
        bias[EOS_ID] = 30.0
    directory = tmp_path_factory.mktemp("quick") / "quick"
    card = {"name": "tiny-quick", "data": bundle.card.get("data", {}), "metrics": {}}
    torch.manual_seed(0)
    selector = ContentSelector(SelectorConfig(vocab_size=bundle.tokenizer.vocab_size, embedding_size=8,
                                              hidden_size=8, num_layers=1))  # fmt: skip
    save_bundle(directory, bundle.model, bundle.tokenizer, bundle.normalizer, card=card, selector=selector)
    return directory


@pytest.fixture(scope="module")
def live_url(quick_bundle: Path) -> Iterator[str]:
    settings = make_settings(quick_bundle)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                            **connection_options(settings))  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started or still_loading(*_get(url + "/readyz")):
        assert time.monotonic() < deadline and thread.is_alive(), "the app did not start"
        time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def _get(url: str) -> tuple[int, bytes]:
    from tests.service.helpers import get

    try:
        return get(url)
    except OSError:
        return 503, b'{"reason": "loading"}'


@pytest.mark.slow
@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed (pip install -e '.[dev]')")
def test_schemathesis_finds_nothing(live_url: str) -> None:
    command = [
        SCHEMATHESIS, "run", f"{live_url}/openapi.json",
        "--checks", "all",
        "--max-examples", "5",
        "--seed", "16",
        "--generation-database", "none",
        "--exclude-path-regex", EXCLUDED,
        "--request-timeout", "30",
        "--no-color",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Tested: 6" in done.stdout  # every operation but the excluded ones
