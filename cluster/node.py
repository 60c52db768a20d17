"""One smartgate node: the recognition engine, the frame scheduler, the event log and the
passages between them, and the node's metrics.

``Node.open(config)`` builds everything the embedded server holds; ``close()`` stops taking
frames, ends every open passage (their events are written), stops the event threads and saves
the strangers index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cluster.audit.log import AuditLog
from cluster.engine import Engine, FrameResult, Lane
from cluster.erasure import ErasureHook
from cluster.events.index_changes import open_for_node
from cluster.events.redis_outbox import RedisLoop
from cluster.events.service import EventLog
from cluster.gatestate import RedisGateState
from cluster.metrics import Metrics
from cluster.passages import STRANGERS_DIR, Passages
from cluster.scheduler import FrameScheduler
from smartgate.config import Config


@dataclass(frozen=True)
class FrameJob:
    """One frame waiting for a compute worker."""

    community: str
    image: bytes
    now: float  # wall-clock time the frame was received
    lane: Lane
    plate_crop: bytes = b""
    gate: str = ""  # the camera's gate: frames of a decided passage may reuse its embeddings


@dataclass
class Node:
    engine: Engine
    events: EventLog
    passages: Passages
    scheduler: FrameScheduler[FrameJob, FrameResult]
    metrics: Metrics
    audit: AuditLog | None = None  # cluster.audit (privacy.audit)
    # Called by cluster.erasure.erase_person for every other holder of the face index.
    erasure_hooks: list[ErasureHook] = field(default_factory=list)
    # Whether ``close`` also closes the engine (its registry writes its face snapshots then):
    # a node from ``open`` owns its engine; ``around`` leaves it to the caller.
    owns_engine: bool = False
    # With events.redis_url: the registry's change-log publisher (embedded) or the follower
    # of the communities' index changes (cluster mode), cluster.events.index_changes.
    index_changes: RedisLoop | None = None

    @property
    def config(self) -> Config:
        return self.engine.config

    @classmethod
    def open(cls, config: Config) -> Node:
        """A node with its own engine, closed with it."""
        engine = Engine.from_config(config)
        try:
            node = cls.around(engine)
        except BaseException:
            engine.close()
            raise
        node.owns_engine = True
        return node

    @classmethod
    def around(cls, engine: Engine) -> Node:
        """Add the scheduler, event log and passages (under ``engine.config.data_dir``)."""
        config = engine.config
        strangers_dir = config.data_dir / STRANGERS_DIR
        keys = engine.registry.store.keys  # the data keys (indexer.crypto)
        strangers = engine.open_strangers(strangers_dir)  # cluster mode: the index actors'

        def strangers_purged(pairs: Sequence[tuple[str, str]]) -> None:
            by_community: dict[str, list[str]] = {}
            for community, stranger_id in pairs:
                by_community.setdefault(community, []).append(stranger_id)
            for community, ids in by_community.items():
                strangers.remove(community, ids)
            strangers.save(strangers_dir)

        events = EventLog.open(
            config.data_dir, config.events, on_strangers_purged=strangers_purged, keys=keys
        )
        shared = (
            RedisGateState(config.events.redis_url, config.tracking.state_ttl_s)
            if config.events.redis_url and config.tracking.share_state
            else None
        )
        passages = Passages(events, strangers, config.tracking, strangers_dir, shared=shared)
        metrics = Metrics()

        def recognise(jobs: Sequence[FrameJob]) -> list[FrameResult | BaseException]:
            results: list[FrameResult | BaseException] = []
            for job in jobs:
                try:
                    results.append(
                        engine.process_frame(
                            job.community,
                            job.image,
                            job.now,
                            lane=job.lane,
                            plate_crop=job.plate_crop,
                            carry=passages.carry_offer(job.community, job.gate, job.now)
                            if job.gate
                            else None,
                            gate=job.gate,
                        )
                    )
                except Exception as exc:  # only this frame fails
                    results.append(exc)
            metrics.queue_depth.set(scheduler.depth)
            return results

        scheduler: FrameScheduler[FrameJob, FrameResult] = FrameScheduler(
            recognise,
            config.capture,
            on_shed=lambda gate: metrics.shed.labels(gate.split("/", 1)[-1]).inc(),
            on_batch=metrics.batch,
        )
        metrics.models_ready.set(1)
        audit = AuditLog(config.data_dir) if config.privacy.audit else None
        node = cls(engine, events, passages, scheduler, metrics, audit)
        node.index_changes = open_for_node(node)
        return node

    def close(self) -> None:
        try:
            if self.index_changes is not None:
                self.index_changes.close()
            self.scheduler.close()
            self.passages.close()
            self.events.close()
            if self.audit is not None:
                self.audit.close()
        finally:
            if self.owns_engine:
                self.engine.close()
