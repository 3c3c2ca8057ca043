"""``MicroBatcher``: gathers concurrent requests into few model calls, off the event loop.

Requests put their texts in one bounded queue and await futures. One worker takes the oldest
texts, waits up to ``max_wait_ms`` after the oldest arrived for more (up to ``max_batch_size``),
then runs one model call per distinct generation setting (beam size, lengths... cannot differ
inside one ``generate`` call) on a single worker thread, so that the event loop keeps accepting
requests while the model works and texts that arrive meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gatesum.service.metrics import Metrics

# run_batch(texts, key) -> one result per text, in order; key is the group's generation setting
BatchFunction = Callable[[list[str], Any], list[Any]]


class QueueFull(Exception):
    """More texts are waiting than the queue holds; the client should retry later."""


class BatcherStopped(Exception):
    """The service is shutting down."""


@dataclass
class _Job:
    text: str
    key: Hashable
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    def __init__(self, run_batch: BatchFunction, max_batch_size: int, max_wait_ms: float,
                 max_queue: int, metrics: Metrics | None = None) -> None:  # fmt: skip
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.metrics = metrics
        self.model_calls = 0  # read by tests and the benchmark
        self._pending: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatesum-model")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="gatesum-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(BatcherStopped("the service is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def submit(self, texts: list[str], key: Hashable) -> list[Any]:
        """Results for ``texts`` (all run with the setting ``key``), in order. Raises QueueFull."""
        if len(self._pending) + len(texts) > self.max_queue:
            raise QueueFull(f"{len(self._pending)} texts are waiting (the queue holds {self.max_queue})")
        loop = asyncio.get_running_loop()
        jobs = [_Job(text, key, loop.create_future()) for text in texts]
        self._pending.extend(jobs)
        self._observe_depth()
        self._arrived.set()
        return list(await asyncio.gather(*(job.future for job in jobs)))

    async def _work(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._pending:
                await self._wait_for_company()
                await self._run(self._take())

    async def _wait_for_company(self) -> None:
        """Wait until a batch is full or the oldest waiting text has waited ``max_wait``."""
        while len(self._pending) < self.max_batch_size:
            remaining = self._pending[0].arrived + self.max_wait - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Job]:
        jobs = []
        while self._pending and len(jobs) < self.max_batch_size:
            job = self._pending.popleft()
            if not job.future.done():  # a request that timed out or went away is skipped
                jobs.append(job)
        self._observe_depth()
        return jobs

    async def _run(self, jobs: list[_Job]) -> None:
        groups: dict[Hashable, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.key, []).append(job)
        loop = asyncio.get_running_loop()
        for key, group in groups.items():
            started = time.perf_counter()
            self.model_calls += 1
            try:
                results = await loop.run_in_executor(
                    self._executor, self.run_batch, [job.text for job in group], key
                )
            except Exception as error:  # the requests get a 500; the worker keeps serving
                results = [error] * len(group)
            if self.metrics is not None:
                self.metrics.observe_model_call(len(group), time.perf_counter() - started)
            for job, result in zip(group, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _observe_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._pending))
