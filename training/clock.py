"""The training clock: what ``max_minutes`` and the logs' ``elapsed_s`` count.

``wall`` counts all time since the run started (over every session of a resumed run). ``cpu``
counts this process's CPU time and leaves out validation and checkpoint saves, so two runs that
share a machine (and slow each other down) still get equal training budgets: the equal-CPU-time
comparison of decoders (issue #14) runs its candidates side by side with ``clock = "cpu"``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

CLOCKS = {"wall": time.monotonic, "cpu": time.process_time}


class TrainingClock:
    """Seconds trained, continuing from ``elapsed`` (the seconds saved by an earlier session)."""

    def __init__(self, kind: str, elapsed: float = 0.0) -> None:
        self.kind = kind
        self._read = CLOCKS[kind]
        self._origin = self._read() - elapsed

    def seconds(self) -> float:
        return self._read() - self._origin

    @contextmanager
    def excluded(self) -> Iterator[None]:
        """Time spent inside is not training time on the cpu clock (validation, checkpoint saves)."""
        if self.kind == "wall":
            yield
            return
        start = self._read()
        try:
            yield
        finally:
            self._origin += self._read() - start
