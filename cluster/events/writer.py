"""``EventWriter``: the capture path's way into the event log, without waiting for the disk.

``submit`` puts ``(event, thumbnail)`` on a bounded queue and returns at once (microseconds; it
never blocks): ``True`` when queued, ``False`` when the queue is full (the event is dropped,
``overflow`` counts it and a warning with the running count is logged, at most every
``WARN_EVERY_S``) or the writer is closed. One background thread drains the queue in batches,
each batch one ``EventStore.put_many`` transaction (one bad event is retried alone so it cannot
take its batch down), then hands the newly stored events to ``on_written`` (the alert
detectors). ``flush`` waits until everything submitted so far is stored and handed on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from cluster.events.model import Event
from cluster.events.store import EventStore
from smartgate.errors import InvalidInputError

log = logging.getLogger(__name__)

WARN_EVERY_S: Final = 5.0
_Item = tuple[Event, bytes | None]


@dataclass(frozen=True)
class WriterStats:
    """``queued``: waiting now; ``written``: new events stored; ``duplicates``: ids stored
    already (ignored); ``overflow``: dropped because the queue was full; ``rejected``: submitted
    after ``close``; ``failed``: could not be stored (``last_error`` says why)."""

    queued: int
    written: int
    duplicates: int
    overflow: int
    rejected: int
    failed: int
    last_error: str | None


class EventWriter:
    """A bounded queue in front of ``store`` and the thread that empties it."""

    def __init__(
        self,
        store: EventStore,
        queue_size: int = 10_000,
        *,
        on_written: Callable[[Sequence[Event]], object] | None = None,
        batch: int = 256,
    ) -> None:
        if queue_size < 1 or batch < 1:
            raise InvalidInputError(f"queue_size and batch must be >= 1, got {queue_size}, {batch}")
        self._store = store
        self._on_written = on_written
        self._batch = batch
        self._queue: queue.Queue[_Item | None] = queue.Queue(queue_size)
        self._closed = False
        self._count_lock = threading.Lock()
        self._overflow = 0
        self._rejected = 0
        self._warned_at = -WARN_EVERY_S
        self._written = 0
        self._duplicates = 0
        self._failed = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self._thread.start()

    # -- the capture path ------------------------------------------------------------------

    def submit(self, event: Event, thumbnail: bytes | None = None) -> bool:
        """Queue one passage for storage; never blocks. ``False``: dropped and counted."""
        if self._closed:
            with self._count_lock:
                self._rejected += 1
            return False
        try:
            self._queue.put_nowait((event, thumbnail))
        except queue.Full:
            self._count_overflow()
            return False
        return True

    def _count_overflow(self) -> None:
        with self._count_lock:
            self._overflow += 1
            count = self._overflow
            now = time.monotonic()
            warn = now - self._warned_at >= WARN_EVERY_S
            if warn:
                self._warned_at = now
        if warn:
            log.warning(
                "event queue full (%d places): passage dropped, %d dropped so far",
                self._queue.maxsize,
                count,
            )

    # -- control --------------------------------------------------------------------------

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            queued=self._queue.qsize(),
            written=self._written,
            duplicates=self._duplicates,
            overflow=self._overflow,
            rejected=self._rejected,
            failed=self._failed,
            last_error=self._last_error,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every passage submitted before the call is stored and handed to
        ``on_written``; ``False`` when ``timeout`` seconds passed first."""
        done = self._queue.all_tasks_done
        with done:
            return done.wait_for(lambda: self._queue.unfinished_tasks == 0, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop accepting, store what is queued (up to ``timeout`` seconds), stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)  # may wait for a place: the thread is draining
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "event writer did not finish within %.1f s; %d queued", timeout, self._queue.qsize()
            )

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            taken = [self._queue.get()]
            while len(taken) < self._batch:
                try:
                    taken.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [t for t in taken if t is not None]
            stop = len(items) != len(taken)
            try:
                if items:
                    self._write(items)
            finally:
                for _ in taken:
                    self._queue.task_done()
        # Submissions that raced with close(): counted, never silently lost.
        while True:
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if left is not None:
                with self._count_lock:
                    self._rejected += 1
            self._queue.task_done()

    def _write(self, items: list[_Item]) -> None:
        flags: list[bool | None]
        try:
            flags = list(self._store.put_many(items))
        except Exception:
            flags = [self._put_one(item) for item in items]
        new = [event for (event, _), flag in zip(items, flags, strict=True) if flag]
        self._written += len(new)
        self._duplicates += sum(1 for f in flags if f is False)
        if new and self._on_written is not None:
            try:
                self._on_written(new)
            except Exception as exc:
                self._last_error = f"on_written: {exc}"
                log.exception("event writer: on_written failed for %d events", len(new))

    def _put_one(self, item: _Item) -> bool | None:
        try:
            return self._store.put(*item)
        except Exception as exc:
            self._failed += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.error("event %s not stored: %s", getattr(item[0], "id", "?"), self._last_error)
            return None
