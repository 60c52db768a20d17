"""Frame scheduling: a bounded queue across gates, a fixed pool of compute workers, micro-batches,
and shedding under overload.

Cameras never wait: ``submit`` only enqueues. When a gate already has ``per_gate_limit`` frames
waiting, its *oldest* waiting frame is shed (a late decision is worthless) while the gate keeps
its places in line (so every gate gets its share under overload), and a frame that has
waited longer than ``max_wait_ms`` is shed when a worker reaches it; a shed frame's future fails
with ``OverloadedError`` so its stream answers it with RESOURCE_EXHAUSTED and carries on.

Workers take frames oldest first across all gates, up to ``max_batch`` at a time (size or
timeout: a worker that finds fewer waits at most ``batch_wait_ms`` for more). A failure in a
batch fails every frame of that batch; results are checked against the batch length. The number
of workers bounds the concurrent inference: on a CPU node, one worker per core with one
onnxruntime thread each is the measured optimum (``models.intra_op_threads``).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from smartgate.config import CaptureConfig
from smartgate.errors import OverloadedError

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Job(Generic[In, Out]):
    gate: str
    item: In
    enqueued: float
    future: Future[Out] = field(default_factory=Future)


@dataclass
class SchedulerStats:
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    shed: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batch_frames: int = 0


class FrameScheduler(Generic[In, Out]):
    """Runs ``process(batch) -> results`` on worker threads; see the module docstring."""

    def __init__(
        self,
        process: Callable[[Sequence[In]], Sequence[Out | BaseException]],
        config: CaptureConfig,
        *,
        on_shed: Callable[[str], None] | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.process = process
        self.config = config
        workers = config.workers or os.cpu_count() or 1
        self.stats = SchedulerStats()
        self._on_shed = on_shed
        self._on_batch = on_batch
        self._queue: deque[_Job[In, Out]] = deque()
        self._waiting: dict[str, int] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"frames-{i}", daemon=True)
            for i in range(workers)
        ]
        for w in self._workers:
            w.start()

    @property
    def depth(self) -> int:
        """Frames waiting for a worker."""
        return len(self._queue)

    def submit(self, gate: str, item: In) -> Future[Out]:
        """Enqueue ``item`` for ``gate``; never blocks. The returned future fails with
        ``OverloadedError`` if the frame is shed."""
        job: _Job[In, Out] = _Job(gate, item, time.monotonic())
        shed: list[_Job[In, Out]] = []
        with self._cond:
            if self._closed:
                job.future.set_exception(OverloadedError("the node is shutting down"))
                return job.future
            self.stats.submitted += 1
            if self._waiting.get(gate, 0) >= self.config.per_gate_limit:
                shed.append(self._replace_oldest(gate, job))
            else:
                if len(self._queue) >= self.config.max_queue:
                    shed.append(self._remove_at(0))
                self._queue.append(job)
                self._waiting[gate] = self._waiting.get(gate, 0) + 1
            self._cond.notify()
        for old in shed:
            self._shed(old, "the gate sends frames faster than the node answers them")
        return job.future

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking frames, fail the waiting ones, let the running batches finish."""
        with self._cond:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            self._waiting.clear()
            self._cond.notify_all()
        for job in waiting:
            job.future.set_exception(OverloadedError("the node is shutting down"))
        for w in self._workers:
            w.join(timeout)

    # -- internals -------------------------------------------------------------------------

    def _replace_oldest(self, gate: str, job: _Job[In, Out]) -> _Job[In, Out]:
        """Drop ``gate``'s oldest waiting frame and let ``job`` join the gate's frames without
        losing their places in line: each moves up into the slot of the one before it and
        ``job`` takes the last. Appending it at the back instead starved gates under overload
        (a gate whose frame was always replaced before a worker reached it never got one)."""
        slots = [i for i, waiting in enumerate(self._queue) if waiting.gate == gate]
        if not slots:  # pragma: no cover - the count says otherwise
            raise RuntimeError(f"gate {gate} counted waiting frames but has none")
        oldest = self._queue[slots[0]]
        for here, nxt in itertools.pairwise(slots):
            self._queue[here] = self._queue[nxt]
        self._queue[slots[-1]] = job
        return oldest

    def _remove_at(self, index: int) -> _Job[In, Out]:
        job = self._queue[index]
        del self._queue[index]
        self._uncount(job.gate)
        return job

    def _uncount(self, gate: str) -> None:
        left = self._waiting[gate] - 1
        if left:
            self._waiting[gate] = left
        else:
            del self._waiting[gate]

    def _shed(self, job: _Job[In, Out], why: str) -> None:
        self.stats.shed[job.gate] = self.stats.shed.get(job.gate, 0) + 1
        if self._on_shed is not None:
            self._on_shed(job.gate)
        waited = (time.monotonic() - job.enqueued) * 1e3
        job.future.set_exception(
            OverloadedError(f"frame shed after {waited:.0f} ms waiting: {why}")
        )

    def _take(self) -> list[_Job[In, Out]] | None:
        """Up to ``max_batch`` fresh jobs, oldest first; None once closed."""
        cfg = self.config
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if cfg.max_batch > 1 and len(self._queue) < cfg.max_batch and cfg.batch_wait_ms > 0:
                self._cond.wait_for(
                    lambda: len(self._queue) >= cfg.max_batch or self._closed,
                    timeout=cfg.batch_wait_ms / 1e3,
                )
            now = time.monotonic()
            batch: list[_Job[In, Out]] = []
            stale: list[_Job[In, Out]] = []
            while self._queue and len(batch) < cfg.max_batch:
                job = self._queue.popleft()
                self._uncount(job.gate)
                if (now - job.enqueued) * 1e3 > cfg.max_wait_ms:
                    stale.append(job)
                else:
                    batch.append(job)
        for job in stale:
            self._shed(job, f"it waited longer than {cfg.max_wait_ms:.0f} ms")
        return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = self.process([job.item for job in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(batch)} frames gave {len(results)} results")
            except BaseException as exc:  # the whole batch fails, every caller hears it
                log.exception("frame batch failed")
                results = [exc] * len(batch)
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)
            with self._cond:
                self.stats.batches += 1
                self.stats.batch_frames += len(batch)
            for job, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    self.stats.failed += 1
                    job.future.set_exception(result)
                else:
                    self.stats.completed += 1
                    job.future.set_result(result)
