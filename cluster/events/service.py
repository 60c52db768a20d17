"""``EventLog``: the whole event layer wired from one ``EventsConfig`` (what the server holds).

Capture path → ``writer.submit`` → store (+ outbox) → ``detectors`` → ``hub`` (+ outbox);
``publisher`` (only with a Redis URL) drains the outbox; ``purger`` enforces retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.events.alerts import AlertDetectors, AlertHub
from cluster.events.redis_outbox import RedisPublisher
from cluster.events.retention import RetentionPurger, StrangersPurged
from cluster.events.store import EventStore
from cluster.events.writer import EventWriter
from indexer.crypto import KeyRing
from smartgate.config import EventsConfig


@dataclass
class EventLog:
    store: EventStore
    hub: AlertHub
    detectors: AlertDetectors
    writer: EventWriter
    publisher: RedisPublisher | None
    purger: RetentionPurger

    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        config: EventsConfig,
        *,
        on_strangers_purged: StrangersPurged | None = None,
        purge: bool = True,
        keys: KeyRing | None = None,
    ) -> EventLog:
        """Open ``data_dir/events.db`` and start the writer, the publisher (when
        ``config.redis_url`` is set) and the purger (unless ``purge`` is false); ``keys`` seal
        the thumbnails (``EventStore``)."""
        store = EventStore(data_dir, outbox=config.redis_url is not None, keys=keys)
        try:
            publisher = (
                None
                if config.redis_url is None
                else RedisPublisher(store, config.redis_url, maxlen=config.redis_maxlen)
            )
        except BaseException:
            store.close()
            raise
        hub = AlertHub(store)
        detectors = AlertDetectors(
            hub,
            tailgating_window_s=config.tailgating_window_s,
            stranger_repeat_n=config.stranger_repeat_n,
            stranger_repeat_window_s=config.stranger_repeat_window_s,
        )
        writer = EventWriter(store, config.queue_size, on_written=detectors.observe)
        purger = RetentionPurger(
            store,
            config.retention,
            interval_s=config.purge_interval_s,
            on_strangers_purged=on_strangers_purged,
            start=purge,
        )
        return cls(store, hub, detectors, writer, publisher, purger)

    def close(self) -> None:
        """Store what is queued, stop every thread, close the database. Outbox rows not yet
        sent stay for the next start."""
        self.writer.close()
        self.purger.close()
        self.hub.close()
        if self.publisher is not None:
            self.publisher.close()
        self.store.close()
