"""Our compiled kernels: the LSTM loops (``csrc/lstm.cpp``), forward and backward, the
target's vocabulary log-probability in training and a decoding step's whole distribution
(``csrc/vocabulary.cpp``), one library.

``lstm_ops()`` builds it the first time it is asked for on a machine (about 10 s with
g++ and ninja; torch caches the library under ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``) and returns ``torch.ops.gatesum``, or None when it cannot be
had: no compiler, a read-only cache, or ``GATESUM_KERNELS=off``. Callers then run the same
algorithm in Python and torch ops (``model/fused.py``), so the kernel only ever changes speed.

The library is built for the CPU's vector instruction set as torch reports it (AVX-512,
AVX2 or plain x86-64), one build per set, so a cache shared between machines never hands a
machine instructions it lacks.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import sysconfig
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SOURCES = [Path(__file__).with_name("csrc") / name for name in ("lstm.cpp", "vocabulary.cpp")]
STALE_LOCK_S = 300.0  # a build takes ~12 s; a lock this old was left by a killed build
_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}


def can_build() -> bool:
    """Whether this machine has what the build needs: a C++ compiler and ninja."""
    return shutil.which(os.environ.get("CXX", "c++")) is not None and _ninja() is not None


def _ninja() -> str | None:
    """ninja's path. torch runs it from PATH; the pip package puts it in the environment's scripts
    folder, which is not on PATH when the environment is used without activating it."""
    return shutil.which("ninja") or shutil.which("ninja", path=sysconfig.get_path("scripts"))


def kernels_enabled() -> bool:
    """False when ``GATESUM_KERNELS`` is off, 0 or false (read at each call)."""
    return os.environ.get("GATESUM_KERNELS", "auto").strip().lower() not in {"off", "0", "false", "no"}


@functools.cache
def _build() -> Any | None:
    ninja = _ninja()
    if ninja is not None and shutil.which("ninja") is None:
        os.environ["PATH"] = os.path.dirname(ninja) + os.pathsep + os.environ.get("PATH", "")
    capability = torch.backends.cpu.get_cpu_capability()
    flags = _FLAGS.get(capability, [])
    try:
        from torch.utils import cpp_extension

        name = f"gatesum_kernels_{capability.lower()}_{_sources_digest(flags)}"
        _remove_stale_lock(
            Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()) / name
        )
        cpp_extension.load(
            name=name,
            sources=[str(source) for source in SOURCES],
            # -ffast-math lets GCC call glibc's vector exp in the loops (linked from libmvec);
            # -fopenmp makes at::parallel_for use torch's OpenMP threads (its libgomp, already loaded)
            extra_cflags=["-O3", "-ffast-math", "-fopenmp", *flags],
            extra_ldflags=["-lmvec"],
            is_python_module=False,
        )
    except Exception as error:  # any build or load failure means: use torch ops
        log.warning(
            "compiled LSTM loops unavailable, using torch ops instead (%s)",
            _first_error(error),
        )
        return None
    return torch.ops.gatesum


def _sources_digest(flags: list[str]) -> str:
    """8 hex digits of the sources' contents and the flags: the build's name carries them, so two
    checkouts with different sources never share a build folder. (torch's own check is per
    process; across processes ninja compares file times, and another checkout's older sources
    would load a library built from newer ones, with other op signatures.)"""
    digest = hashlib.sha256(" ".join(flags).encode())
    for source in SOURCES:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:8]


def _remove_stale_lock(build_directory: Path) -> None:
    """Remove a build lock left by a process killed mid-build. torch waits on that file forever
    (a test run or a server start then hangs without a word); a build takes seconds, so a lock
    older than ``STALE_LOCK_S`` belongs to no one."""
    lock = build_directory / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_S:
        log.warning("removing a stale build lock (%.0f s old) left by an interrupted build: %s", age, lock)
        lock.unlink(missing_ok=True)


def _first_error(error: Exception) -> str:
    """The compiler's first "error:" line when there is one, else the exception's first line."""
    lines = str(error).splitlines() or [repr(error)]
    return next((line for line in lines if "error:" in line), lines[0])


def lstm_ops() -> Any | None:
    """``torch.ops.gatesum`` (``lstm_forward``, ``lstm_backward``, ``lstm_inference``,
    ``vocabulary_log_prob`` and its backward), or None."""
    return _build() if kernels_enabled() else None
