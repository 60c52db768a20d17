"""Strangers in cluster mode: one stranger book per community, held by its index actor.

In embedded mode the node keeps one ``indexer.strangers.StrangerIndex`` for every community.
In cluster mode several frontends may serve gates of one community, so each community's
strangers live in its index actor (``cluster.distributed.index.CommunityIndex``), the one
writer of that community: every frontend that sees the same unknown face gets the same
``s-<n>``, and an erasure through any frontend forgets the strangers any frontend assigned.

* ``CommunityStrangers`` (inside the actor): a ``StrangerIndex`` used for the actor's own
  community only, saved sealed under ``<data_dir>/communities/<id>/strangers/`` (next to its
  ``registry.db``) and loaded when the actor (re)starts. Saves are batched
  (``SaveSchedule``: after ``cluster.strangers_save_every`` assignments or
  ``cluster.strangers_save_s`` seconds after the first unsaved one, by a timer thread), and
  done at once after a removal (an erased stranger must not come back) and on close. A
  killed actor loses at most the assignments of that window: their sightings, and templates
  added since; never an id: new stranger numbers are issued below a watermark
  (``strangers-ids.json``) written ahead of them (``ID_BLOCK`` at a time), and a restarted
  actor numbers new strangers from it, so an ``s-<n>`` already in an event is not given to
  somebody else.
* ``ClusterStrangers`` (on the frontend): the ``indexer.strangers.StrangerBook`` interface the
  passages, the erasure and the retention purge use, forwarded through ``IndexDirectory``
  to the community's actor. Reads wait for a restarting actor as other reads do.
  ``assign`` is a write: an actor lost during it is waited for and the assignment sent
  again marked ``retry``. The lost attempt may or may not be in the restarted actor's state
  (only if a save ran between it and the loss), so the actor first asks its index for a
  sighting of this face at exactly this time (``StrangerIndex.sighting_at``: the passage's
  end time, a float no other passage of that stranger shares in practice): found, that is
  the lost attempt's answer and nothing is counted again; else the face is assigned as
  usual, which gives the same stranger the lost attempt chose whenever that stranger
  survived the restart. ``remove`` is idempotent by itself (unknown ids are ignored); a
  retried removal answers how many were still there. ``save`` flushes the actors this
  frontend changed (the directory argument of the embedded interface is ignored).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from indexer.crypto import KeyRing
from indexer.strangers import Stranger, StrangerIndex, StrangerStats
from smartgate.config import ClusterConfig
from smartgate.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    from cluster.distributed.directory import IndexDirectory

log = logging.getLogger(__name__)

STRANGERS_DIR: Final = "strangers"  # under the community's directory (as the embedded node's)
IDS_FILE: Final = "strangers-ids.json"
#: Stranger numbers reserved by one watermark write.
ID_BLOCK: Final = 64


@dataclass(frozen=True)
class StrangerSaving:
    """When an index actor saves its strangers: after ``every`` unsaved assignments, or
    ``interval_s`` seconds after the first unsaved one (``ClusterConfig.strangers_save_*``)."""

    every: int = 50
    interval_s: float = 5.0

    @classmethod
    def from_config(cls, config: ClusterConfig) -> StrangerSaving:
        return cls(config.strangers_save_every, config.strangers_save_s)


@dataclass
class SaveSchedule:
    """Pure: counts unsaved changes and says when a save is due (``every`` changes, or
    ``interval_s`` after the first unsaved change). Times are ``time.monotonic`` seconds."""

    saving: StrangerSaving
    pending: int = 0
    first_unsaved: float | None = None

    def changed(self, now: float) -> bool:
        """Note one change at ``now``; whether a save is due now."""
        self.pending += 1
        if self.first_unsaved is None:
            self.first_unsaved = now
        return self.due(now)

    def due(self, now: float) -> bool:
        if self.pending == 0 or self.first_unsaved is None:
            return False
        return (
            self.pending >= self.saving.every or now - self.first_unsaved >= self.saving.interval_s
        )

    def saved(self, pending_at_start: int) -> None:
        """A save that began when ``pending_at_start`` changes were unsaved has finished
        (changes made during the save stay pending)."""
        self.pending = max(0, self.pending - pending_at_start)
        if self.pending == 0:
            self.first_unsaved = None


def needs_reservation(next_number: int, reserved: int) -> int | None:
    """Pure: the new watermark to persist before issuing stranger ``next_number`` when the
    current watermark ``reserved`` (numbers ``< reserved`` may be issued) does not cover it."""
    if next_number < reserved:
        return None
    return next_number + ID_BLOCK


def read_watermark(directory: Path) -> int:
    """The saved watermark (1 when none was written)."""
    path = directory / IDS_FILE
    if not path.exists():
        return 1
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["reserved"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the stranger id watermark {path}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}: bad stranger id watermark {value!r}")
    return value


def write_watermark(directory: Path, reserved: int) -> None:
    """Persist the watermark atomically (temporary file, fsync, rename, fsync of the folder)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / IDS_FILE
    tmp = path.with_name(f".{IDS_FILE}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"reserved": reserved}, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CommunityStrangers:
    """One community's strangers inside its index actor (see the module docstring).

    Thread-safe: the actor calls it from its one call thread; a timer thread saves behind.
    """

    def __init__(
        self,
        community_path: Path,
        community: str,
        dim: int,
        keys: KeyRing,
        saving: StrangerSaving,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.community = community
        self.directory = Path(community_path) / STRANGERS_DIR
        self.index = StrangerIndex.load(self.directory, dim, keys=keys)
        self.reserved = read_watermark(self.directory)
        self.index.reserve_from(community, self.reserved)
        self.schedule = SaveSchedule(saving)
        self._clock = clock
        self._lock = threading.Lock()  # the schedule and the watermark
        self._save_lock = threading.Lock()  # one save at a time
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._save_behind, name="strangers", daemon=True)
        self._timer.start()

    # -- changes -----------------------------------------------------------------------------

    def assign(
        self, embedding: np.ndarray, t: float, retry: bool = False
    ) -> tuple[str, bool, float]:
        """``StrangerIndex.assign`` for this community; ``retry``: the frontend lost the answer
        of this very assignment, which is answered from the state when it counted already."""
        if retry:
            found = self.index.sighting_at(self.community, embedding, t)
            if found is not None:
                return found
        self._reserve_next()
        answer = self.index.assign(self.community, embedding, t)
        with self._lock:
            due = self.schedule.changed(self._clock())
        if due:
            self.flush()
        return answer

    def remove(self, stranger_ids: list[str]) -> int:
        """Forget strangers (erasure, retention) and save at once when any was there."""
        removed = self.index.remove(self.community, stranger_ids)
        if removed:
            with self._lock:
                self.schedule.changed(self._clock())
            self.flush()
        return removed

    def _reserve_next(self) -> None:
        with self._lock:
            watermark = needs_reservation(self.index.next_number(self.community), self.reserved)
            if watermark is not None:
                write_watermark(self.directory, watermark)
                self.reserved = watermark

    # -- persistence -------------------------------------------------------------------------

    def flush(self) -> bool:
        """Save now when anything is unsaved; whether it saved."""
        with self._save_lock:
            with self._lock:
                pending = self.schedule.pending
            if pending == 0:
                return False
            self.index.save(self.directory)
            with self._lock:
                self.schedule.saved(pending)
            return True

    def _save_behind(self) -> None:
        period = max(0.05, min(1.0, self.schedule.saving.interval_s / 4))
        while not self._stop.wait(period):
            with self._lock:
                due = self.schedule.due(self._clock())
            if due:
                try:
                    self.flush()
                except Exception:  # in the actor's log; tried again next period
                    log.exception("saving the strangers of %s failed", self.community)

    def close(self) -> None:
        """Stop the timer, save what is unsaved and pull the watermark back to the next
        number (everything below it is saved now: a clean restart leaves no gap)."""
        self._stop.set()
        self._timer.join(timeout=5)
        self.flush()
        with self._lock:
            self.reserved = self.index.next_number(self.community)
            write_watermark(self.directory, self.reserved)


@dataclass
class ClusterStrangers:
    """The frontend's ``StrangerBook`` in cluster mode: every call goes to the community's
    index actor through ``directory`` (see the module docstring)."""

    directory: IndexDirectory
    _changed: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def assign(self, community: str, embedding: np.ndarray, t: float) -> tuple[str, bool, float]:
        """``embedding``: ``(dim,)`` or ``(1, dim)`` float32, L2-normalised. A write: retried
        after a lost actor (see the module)."""
        _check_time(t)
        answer: tuple[str, bool, float] = self.directory.write(
            community, "assign_stranger", np.ascontiguousarray(embedding, np.float32), float(t)
        )
        self._note(community)
        return answer

    def remove(self, community: str, stranger_ids: list[str]) -> int:
        if not stranger_ids:
            return 0
        removed: int = self.directory.write(community, "remove_strangers", list(stranger_ids))
        return removed

    def matching(self, community: str, embeddings: np.ndarray, threshold: float) -> list[str]:
        """``embeddings``: ``(n, dim)`` float32."""
        found: list[str] = self.directory.read(
            community,
            "matching_strangers",
            np.ascontiguousarray(embeddings, np.float32),
            float(threshold),
        )
        return found

    def stats(self, community: str) -> StrangerStats:
        result: StrangerStats = self.directory.read(community, "stranger_stats")
        return result

    def strangers(self, community: str) -> list[Stranger]:
        result: list[Stranger] = self.directory.read(community, "list_strangers")
        return result

    def get(self, community: str, stranger_id: str) -> Stranger:
        result: Stranger = self.directory.read(community, "get_stranger", stranger_id)
        return result

    def sightings_since(self, community: str, stranger_id: str, since: float) -> int:
        result: int = self.directory.read(
            community, "stranger_sightings_since", stranger_id, float(since)
        )
        return result

    def save(self, directory: Path | str | None = None) -> None:
        """Flush the actors of the communities this frontend assigned strangers in since the
        last flush (``directory`` is ignored: each actor saves under its own store)."""
        with self._lock:
            communities, self._changed = sorted(self._changed), set()
        for community in communities:
            self.directory.read(community, "save_strangers")

    def _note(self, community: str) -> None:
        with self._lock:
            self._changed.add(community)


def _check_time(t: float) -> None:
    if not math.isfinite(float(t)):
        raise InvalidInputError(f"t must be finite, got {t}")
