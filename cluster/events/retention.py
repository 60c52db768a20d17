"""``RetentionPurger``: enforces a ``RetentionPolicy`` in the background (``EventStore.purge``
every ``interval_s``) and tells the stranger index which pseudo-identities are gone."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from cluster.events.store import EventStore, PurgeReport
from smartgate.config import RetentionPolicy

log = logging.getLogger(__name__)

#: Called with the ``(community, stranger_id)`` pairs whose last passage was purged.
StrangersPurged = Callable[[Sequence[tuple[str, str]]], None]


class RetentionPurger:
    """One daemon thread: purge now, then every ``interval_s`` seconds, until ``close``.

    ``on_strangers_purged`` runs on that thread after each purge that removed the last passage
    of some strangers (the stranger index drops their templates). A purge that fails is logged
    and tried again at the next interval.
    """

    def __init__(
        self,
        store: EventStore,
        policy: RetentionPolicy,
        *,
        interval_s: float = 3600.0,
        on_strangers_purged: StrangersPurged | None = None,
        clock: Callable[[], float] = time.time,
        start: bool = True,
    ) -> None:
        self.store = store
        self.policy = policy
        self.interval_s = interval_s
        self.on_strangers_purged = on_strangers_purged
        self._clock = clock
        self._stop = threading.Event()
        self.last_report: PurgeReport | None = None
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="event-purge", daemon=True)
        if start:
            self._thread.start()

    def run_once(self) -> PurgeReport:
        """Purge now (on the caller's thread) and call the hook; returns the report."""
        report = self.store.purge(self._clock(), self.policy)
        self.last_report = report
        if any((report.resident_events, report.stranger_events, report.thumbnails, report.alerts)):
            log.info(
                "retention purge: %d resident and %d stranger passages, %d thumbnails, "
                "%d alerts, %d strangers gone",
                report.resident_events,
                report.stranger_events,
                report.thumbnails,
                report.alerts,
                len(report.purged_strangers),
            )
        if report.purged_strangers and self.on_strangers_purged is not None:
            self.on_strangers_purged(report.purged_strangers)
        return report

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
                self.last_error = None
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("retention purge failed; retrying in %.0f s", self.interval_s)
            self._stop.wait(self.interval_s)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
