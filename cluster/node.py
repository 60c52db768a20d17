"""One smartgate node: the recognition engine, the event log and the passages between them.

``Node.open(config)`` builds everything the embedded server holds; ``close()`` ends every open
passage (their events are written), stops the event threads and saves the strangers index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cluster.engine import Engine
from cluster.events.service import EventLog
from cluster.passages import STRANGERS_DIR, Passages
from indexer.strangers import StrangerIndex
from smartgate.config import Config


@dataclass
class Node:
    engine: Engine
    events: EventLog
    passages: Passages

    @property
    def config(self) -> Config:
        return self.engine.config

    @classmethod
    def open(cls, config: Config) -> Node:
        return cls.around(Engine.from_config(config))

    @classmethod
    def around(cls, engine: Engine) -> Node:
        """Add the event log and passages under ``engine.config.data_dir``."""
        config = engine.config
        strangers_dir = config.data_dir / STRANGERS_DIR
        strangers = StrangerIndex.load(strangers_dir, engine.analyzer.embedder.dim)

        def strangers_purged(pairs: Sequence[tuple[str, str]]) -> None:
            by_community: dict[str, list[str]] = {}
            for community, stranger_id in pairs:
                by_community.setdefault(community, []).append(stranger_id)
            for community, ids in by_community.items():
                strangers.remove(community, ids)
            strangers.save(strangers_dir)

        events = EventLog.open(config.data_dir, config.events, on_strangers_purged=strangers_purged)
        passages = Passages(events, strangers, config.tracking, strangers_dir)
        return cls(engine, events, passages)

    def close(self) -> None:
        self.passages.close()
        self.events.close()
