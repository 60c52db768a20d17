"""Erasure everywhere: removing a person or a vehicle removes what identifies them.

``erase_person(node, community, person_id)``:

1. reads the person's templates (to find what else they left), then removes them from the
   registry (SQLite, ``secure_delete`` and a WAL checkpoint) and the community's FAISS index;
2. calls every ``node.erasure_hooks`` hook (``hook(community, person_id)``): where other holders
   of the index drop the person (the Ray index actors of ``cluster.distributed`` register one);
3. finds the strangers the person was before enrolment (a stranger template scoring at least
   the match threshold against one of theirs), forgets them and saves the strangers index
   (in cluster mode the community's index actor holds them, for every frontend);
4. waits for the event writer's queue, then erases the passages and alerts of the person and
   of those strangers (``privacy.erasure``: ``delete`` removes them, ``anonymise`` keeps the
   rows with the identity removed), their thumbnails, their pending stream entries, and queues
   XDELs of the Redis stream entries already sent (``RedisPublisher`` sends them first).

``erase_vehicle`` does the same for a plate (registry row, passages, alerts, stream entries).

A passage of the person still open at a gate when they are removed is written when it ends,
after the erasure; ``erase_person`` may be called again (nothing left is a no-op apart from
``NotFoundError`` for the person, which callers of a second pass catch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from indexer.types import Vehicle

if TYPE_CHECKING:
    from cluster.node import Node

log = logging.getLogger(__name__)

#: ``hook(community, person_id)``: drop the person from another holder of the index.
ErasureHook = Callable[[str, str], None]
FLUSH_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure removed (or anonymised)."""

    templates: int
    strangers: tuple[str, ...]
    events: int
    alerts: int
    thumbnails: int
    stream_entries: int


def erase_person(node: Node, community: str, person_id: str) -> ErasureReport:
    """Erase ``person_id`` of ``community`` everywhere (see the module). ``NotFoundError``
    when they are not enrolled."""
    registry = node.engine.registry
    embeddings = registry.person_embeddings(community, person_id)
    templates = registry.remove(community, person_id)
    for hook in getattr(node, "erasure_hooks", ()):
        hook(community, person_id)
    strangers = node.passages.strangers
    linked = strangers.matching(community, embeddings, node.engine.threshold)
    if linked:
        strangers.remove(community, linked)
        strangers.save(node.passages.strangers_dir)
    anonymise = node.config.privacy.erasure == "anonymise"
    store = node.events.store
    if not node.events.writer.flush(FLUSH_TIMEOUT_S):
        log.warning("erasing %s/%s: the event queue did not drain in time", community, person_id)
    reports = [store.erase_person(community, person_id, anonymise=anonymise)]
    reports += [store.erase_stranger(community, s, anonymise=anonymise) for s in linked]
    log.info(
        "erased person %s of %s: %d templates, %d strangers, %d passages",
        person_id,
        community,
        templates,
        len(linked),
        sum(r.events for r in reports),
    )
    return ErasureReport(
        templates=templates,
        strangers=tuple(linked),
        events=sum(r.events for r in reports),
        alerts=sum(r.alerts for r in reports),
        thumbnails=sum(r.thumbnails for r in reports),
        stream_entries=sum(r.stream_entries for r in reports),
    )


def erase_vehicle(node: Node, community: str, plate: str) -> tuple[Vehicle, ErasureReport]:
    """Remove a registered vehicle and erase its passages, alerts, thumbnails and stream
    entries (as ``erase_person``). Returns the vehicle as it was."""
    vehicle = node.engine.vehicles.remove(community, plate)
    if not node.events.writer.flush(FLUSH_TIMEOUT_S):
        log.warning("erasing %s/%s: the event queue did not drain in time", community, plate)
    anonymise = node.config.privacy.erasure == "anonymise"
    report = node.events.store.erase_plate(community, vehicle.plate, anonymise=anonymise)
    return vehicle, ErasureReport(
        0, (), report.events, report.alerts, report.thumbnails, report.stream_entries
    )
