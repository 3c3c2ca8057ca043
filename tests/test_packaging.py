"""The installed distribution: one import package, ``gatesum``, with its data, and the command
reachable both as ``gatesum`` and as ``python -m gatesum`` (what ``torchrun -m gatesum`` runs)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package_with_its_data(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("gatesum-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"gatesum", wheel.name.rsplit("-", 3)[0] + ".dist-info"}
    top_level = next(name for name in names if name.endswith("top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["gatesum"]
    for data in (
        "gatesum/model/csrc/lstm.cpp",
        "gatesum/service/static/index.html",
        "gatesum/pretrained/cnndm-lstm-small/model.safetensors",
        "gatesum/pretrained/cnndm-lstm-small/tokenizer.model",
    ):
        assert data in names


def test_python_dash_m_gatesum_is_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "gatesum", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: gatesum" in result.stdout
    for command in ("train", "eval", "summarize", "serve", "memory", "export", "bench"):
        assert command in result.stdout


def test_the_bundled_model_resolves_from_the_package():
    from gatesum.model.bundle import BUNDLED_MODEL

    assert (BUNDLED_MODEL / "config.json").is_file()
    assert BUNDLED_MODEL.parent.name == "pretrained"
