"""The event log's durable state: ``events.db`` (SQLite, WAL) and ``thumbs/`` under the data
directory.

Same discipline as ``indexer/store.py``: WAL with ``synchronous=NORMAL`` (a commit survives a
process crash), versioned migrations in ``_MIGRATIONS``, one ``BEGIN IMMEDIATE`` transaction per
change on the one write connection (guarded by a lock). Reads use a small pool of read-only
connections, so a query never waits for a write and the writer never waits for a query.

Tables:

* ``events``: one row per passage, ``id`` unique (``put`` is idempotent: the first write of an
  id wins, later ones are ignored). Indexes are laid out for the queries: every newest-first
  page is an ordered index range scan on ``(…, end_at, id)`` (keyset paging, no sort), the
  identity indexes lead with the identity so a trajectory spans communities, and the purge
  walks partial indexes per retention class;
* ``alerts``: ``seq INTEGER PRIMARY KEY AUTOINCREMENT`` is the subscribers' cursor (only grows,
  never reused, even after a purge); ``id`` unique (``append_alert`` is idempotent);
* ``outbox``: when the store is opened with ``outbox=True`` (a Redis URL is configured), every
  new event and alert also gets an outbox row *in the same transaction*; ``RedisPublisher``
  sends pending rows in ``seq`` order and records the stream entry id (the payload is cleared
  then), which ``erase_*`` turn into ``redis_deletes`` rows (XDELs waiting to be sent).

Thumbnails: ``thumbs/<community>/<event id>.sealed``, the JPEG sealed with the data key
(``indexer.crypto``, bound to the community and event id), written to ``thumbs/.tmp`` and
renamed into place before the row commits, so a row with ``has_thumbnail`` always has its
whole file. A crash between the rename and the commit leaves a file without a row; the same
passage re-put after the restart (same id) claims it. Purges and erasures delete files before
the rows that name them, so no file outlives its row. Plaintext ``<event id>.jpg`` files of an
older smartgate are sealed when the store opens.

Erasure (``erase_person`` / ``erase_plate`` / ``erase_stranger``): ``delete`` removes the
passages and alerts; ``anonymise`` keeps the rows with the identity, thumbnail and alert text
removed. Both delete the thumbnails, queue XDELs of the stream entries, and checkpoint the WAL
(``secure_delete`` is on), so the erased rows' bytes do not linger on disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from cluster.events.model import (
    ACTIONS,
    ALERT_KINDS,
    KINDS,
    Action,
    Alert,
    AlertKind,
    Event,
    Kind,
    alert_fields,
    check_alert,
    check_event,
    check_safe_id,
    check_text,
    check_time,
    event_fields,
)
from indexer.crypto import KeyRing
from smartgate.checks import connect_wal, immediate, migrate
from smartgate.config import PrivacyConfig, RetentionPolicy
from smartgate.errors import InvalidInputError, NotFoundError

log = logging.getLogger(__name__)

DB_FILENAME: Final = "events.db"
THUMBS_DIRNAME: Final = "thumbs"
THUMB_SUFFIX: Final = ".sealed"
ERASED_MESSAGE: Final = "(erased)"
MAX_QUERY_LIMIT: Final = 1000
MAX_TRAJECTORY_LIMIT: Final = 10_000
MAX_THUMBNAIL_BYTES: Final = 2 * 1024 * 1024
_JPEG_MAGIC: Final = b"\xff\xd8\xff"
_CURSOR_PREFIX: Final = "c1."
_CHUNK: Final = 500  # ids per IN (...) list
_SAFE_DIR: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")

Topic = Literal["events", "alerts"]

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: events, alerts, the Redis outbox.
    (
        f"""CREATE TABLE events (
            rid INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            community TEXT NOT NULL,
            gate TEXT NOT NULL,
            device TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in KINDS)})),
            action TEXT NOT NULL CHECK (action IN ({", ".join(repr(a) for a in ACTIONS)})),
            person_id TEXT NULL,
            stranger_id TEXT NULL,
            plate TEXT NULL,
            score REAL NOT NULL,
            quality REAL NOT NULL,
            liveness REAL NULL,
            start_at REAL NOT NULL,
            end_at REAL NOT NULL CHECK (end_at >= start_at),
            role TEXT NULL,
            track_id TEXT NOT NULL,
            has_thumbnail INTEGER NOT NULL CHECK (has_thumbnail IN (0, 1))
        )""",
        # Newest-first pages of one community, alone or by gate / action / kind.
        "CREATE INDEX events_by_time ON events(community, end_at, id)",
        "CREATE INDEX events_by_gate ON events(community, gate, end_at, id)",
        "CREATE INDEX events_by_action ON events(community, action, end_at, id)",
        "CREATE INDEX events_by_kind ON events(community, kind, end_at, id)",
        # One identity: the QueryEvents filters, Trajectory (across communities), erasure,
        # stranger visit counts.
        "CREATE INDEX events_by_person ON events(person_id, community, end_at, id) "
        "WHERE person_id IS NOT NULL",
        "CREATE INDEX events_by_stranger ON events(stranger_id, community, end_at, id) "
        "WHERE stranger_id IS NOT NULL",
        "CREATE INDEX events_by_plate ON events(plate, community, end_at, id) "
        "WHERE plate IS NOT NULL",
        # Retention classes: a purge reads only the rows it deletes.
        "CREATE INDEX events_resident_age ON events(end_at) WHERE person_id IS NOT NULL",
        "CREATE INDEX events_stranger_age ON events(end_at) WHERE person_id IS NULL",
        "CREATE INDEX events_thumbnail_age ON events(end_at) WHERE has_thumbnail = 1",
        f"""CREATE TABLE alerts (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            community TEXT NOT NULL,
            gate TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in ALERT_KINDS)})),
            event_id TEXT NULL,
            person_id TEXT NULL,
            stranger_id TEXT NULL,
            plate TEXT NULL,
            time REAL NOT NULL,
            message TEXT NOT NULL
        )""",
        "CREATE INDEX alerts_by_community ON alerts(community, seq)",
        "CREATE INDEX alerts_by_time ON alerts(time)",
        "CREATE INDEX alerts_by_person ON alerts(person_id, community) WHERE person_id IS NOT NULL",
        "CREATE INDEX alerts_by_plate ON alerts(plate, community) WHERE plate IS NOT NULL",
        "CREATE INDEX alerts_by_stranger ON alerts(stranger_id, community, kind, time) "
        "WHERE stranger_id IS NOT NULL",
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL CHECK (topic IN ('events', 'alerts')),
            community TEXT NOT NULL,
            ref_id TEXT NOT NULL,
            payload TEXT NOT NULL,
            entry_id TEXT NULL,
            UNIQUE (topic, ref_id)
        )""",
        "CREATE INDEX outbox_pending ON outbox(seq) WHERE entry_id IS NULL",
        """CREATE TABLE redis_deletes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL CHECK (topic IN ('events', 'alerts')),
            community TEXT NOT NULL,
            entry_id TEXT NOT NULL
        )""",
    ),
)

#: The schema version this code writes and understands.
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_EVENT_COLUMNS: Final = (
    "id, community, gate, device, kind, action, person_id, stranger_id, plate, score, quality, "
    "liveness, start_at, end_at, role, track_id, has_thumbnail"
)
_ALERT_COLUMNS: Final = (
    "id, seq, community, gate, kind, event_id, person_id, stranger_id, plate, time, message"
)


_INSERT_EVENT: Final = (
    f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _event_row(e: Event, has_thumbnail: bool) -> tuple[Any, ...]:
    return (
        e.id,
        e.community,
        e.gate,
        e.device,
        e.kind,
        e.action,
        e.person_id,
        e.stranger_id,
        e.plate,
        float(e.score),
        float(e.quality),
        None if e.liveness is None else float(e.liveness),
        float(e.start),
        float(e.end),
        e.role,
        e.track_id,
        int(has_thumbnail),
    )


def _event_from_row(row: tuple[Any, ...]) -> Event:
    return Event(*row[:16], has_thumbnail=bool(row[16]))  # type: ignore[misc]


def _alert_from_row(row: tuple[Any, ...]) -> Alert:
    return Alert(*row)


@dataclass(frozen=True)
class PurgeReport:
    """What one ``purge`` removed. ``purged_strangers``: ``(community, stranger_id)`` pairs
    whose last stored passage went in this purge (for the stranger index's hook)."""

    resident_events: int
    stranger_events: int
    thumbnails: int
    alerts: int
    purged_strangers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class EraseReport:
    """What one ``erase_person`` / ``erase_plate`` removed; ``stream_entries`` is how many
    Redis stream entries were queued for XDEL."""

    events: int
    alerts: int
    thumbnails: int
    stream_entries: int


@dataclass(frozen=True)
class OutboxRow:
    """One stream entry waiting to be sent: XADD ``fields`` to ``community``'s ``topic``."""

    seq: int
    topic: Topic
    community: str
    ref_id: str
    fields: dict[str, str]


@dataclass(frozen=True)
class StreamDelete:
    """One XDEL waiting to be sent."""

    seq: int
    topic: Topic
    community: str
    entry_id: str


def community_dirname(community: str) -> str:
    """The folder name of ``community``'s thumbnails: itself when it is a safe file name, else
    ``x-`` and 32 hex digits of its sha256 (slashes, dots, long or non-ASCII names)."""
    if _SAFE_DIR.fullmatch(community):
        return community
    return "x-" + hashlib.sha256(community.encode("utf-8")).hexdigest()[:32]


class EventStore:
    """SQLite persistence of events, alerts and the Redis outbox. Thread-safe.

    ``outbox=True``: new events and alerts are also queued for Redis (``RedisPublisher``).
    ``keys`` seal the thumbnails (default: the user's key file, as ``indexer.store.Store``).
    """

    def __init__(
        self, data_dir: Path | str, *, outbox: bool = False, keys: KeyRing | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_FILENAME
        self.thumbs_dir = self.data_dir / THUMBS_DIRNAME
        self._tmp_dir = self.thumbs_dir / ".tmp"
        shutil.rmtree(self._tmp_dir, ignore_errors=True)  # half-written thumbnails of a crash
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = set()
        self.outbox_enabled = outbox
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self.keys = KeyRing.from_config(PrivacyConfig()) if keys is None else keys
        self._con = connect_wal(self.path)
        try:
            self._con.execute("PRAGMA secure_delete=ON")
            self._migrate()
            self._seal_plaintext_thumbnails()
        except BaseException:
            self._con.close()
            raise

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock, self._pool_lock:
            if self._closed:
                return
            self._closed = True
            for con in self._readers:
                con.close()
            self._readers.clear()
            self._idle.clear()
            self._con.close()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (no lock held) after each commit that queued Redis work."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:
                log.exception("event store listener failed")

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """The write connection inside ``BEGIN IMMEDIATE``; the caller holds ``self._lock``."""
        return immediate(self._con)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("the event store is closed")
            con = self._idle.pop() if self._idle else None
            if con is None:
                con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                con.execute("PRAGMA busy_timeout=5000")
                con.execute("PRAGMA query_only=ON")
                self._readers.append(con)
        try:
            yield con
        finally:
            with self._pool_lock:
                if not self._closed:
                    self._idle.append(con)

    def _migrate(self) -> None:
        with self._lock, self._transaction() as con:
            migrate(con, self.path, _MIGRATIONS)

    def schema_version(self) -> int:
        with self._reading() as con:
            return int(con.execute("SELECT version FROM schema_version").fetchone()[0])

    # -- thumbnails -----------------------------------------------------------------------

    def thumbnail_path(self, community: str, event_id: str) -> Path:
        return self.thumbs_dir / community_dirname(community) / f"{event_id}{THUMB_SUFFIX}"

    def _seal_plaintext_thumbnails(self) -> None:
        """Seal the ``<event id>.jpg`` thumbnails an older smartgate wrote in the clear."""
        with self._reading() as con:
            for old in sorted(self.thumbs_dir.glob("*/*.jpg")):
                row = con.execute(
                    "SELECT community FROM events WHERE id = ?", (old.stem,)
                ).fetchone()
                if row is not None:
                    self._write_thumbnail(str(row[0]), old.stem, old.read_bytes())
                old.unlink()

    def _write_thumbnail(self, community: str, event_id: str, jpeg: bytes) -> Path:
        data = self.keys.seal(bytes(jpeg), _thumbnail_ad(community, event_id))
        final = self.thumbnail_path(community, event_id)
        if final.parent not in self._known_dirs:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._known_dirs.add(final.parent)
        fd, tmp = tempfile.mkstemp(prefix=event_id, suffix=".tmp", dir=self._tmp_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final

    def _unlink_thumbnails(self, rows: Iterable[tuple[str, str]]) -> int:
        """Delete the files of ``(community, event_id)`` rows; returns how many existed."""
        removed = 0
        for community, eid in rows:
            try:
                self.thumbnail_path(community, eid).unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def thumbnail(self, community: str, event_id: str) -> bytes:
        """The best-shot JPEG of an event. ``NotFoundError`` when the event is unknown in
        ``community`` or has no thumbnail (never stored, or purged)."""
        check_text(community, "community")
        check_safe_id(event_id, "event id")
        with self._reading() as con:
            row = con.execute(
                "SELECT has_thumbnail FROM events WHERE id = ? AND community = ?",
                (event_id, community),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"event {event_id!r} does not exist in community {community!r}")
        if not row[0]:
            raise NotFoundError(f"event {event_id!r} has no thumbnail (none stored, or purged)")
        try:
            sealed = self.thumbnail_path(community, event_id).read_bytes()
        except FileNotFoundError as exc:  # purged between the read and here
            raise NotFoundError(f"event {event_id!r} has no thumbnail (purged)") from exc
        return self.keys.open(sealed, _thumbnail_ad(community, event_id))

    def reseal_thumbnails(self, keys: KeyRing) -> int:
        """Re-encrypt every thumbnail not sealed with ``keys``' current key (key rotation);
        the store uses ``keys`` from then on. Returns how many were re-encrypted."""
        old, self.keys = self.keys, keys
        done = 0
        with self._reading() as con:
            rows = con.execute(
                "SELECT community, id FROM events WHERE has_thumbnail = 1"
            ).fetchall()
        for community, eid in rows:
            path = self.thumbnail_path(community, eid)
            try:
                sealed = path.read_bytes()
            except FileNotFoundError:
                continue
            if keys.is_current(sealed):
                continue
            ad = _thumbnail_ad(community, eid)
            plain = (keys if keys.has_key_of(sealed) else old).open(sealed, ad)
            self._write_thumbnail(community, eid, plain)
            done += 1
        return done

    # -- events ---------------------------------------------------------------------------

    def put(self, event: Event, thumbnail: bytes | None = None) -> bool:
        """Store one passage and its best-shot JPEG. Idempotent on ``event.id``: returns
        ``False`` (and changes nothing) when the id is stored already."""
        return self.put_many([(event, thumbnail)])[0]

    def put_many(self, items: Sequence[tuple[Event, bytes | None]]) -> list[bool]:
        """``put`` for several passages in one transaction (all or none); one bool per item,
        ``True`` where it was new. ``has_thumbnail`` is stored as ``thumbnail is not None``."""
        for event, thumb in items:
            check_event(event)
            if thumb is not None:
                _check_thumbnail(thumb)
        if not items:
            return []
        written: list[Path] = []
        inserted: list[bool] = []
        with self._lock:
            try:
                ids = [e.id for e, _ in items]
                taken = self._present_ids(ids)  # stored already, or first seen in this batch
                for event, thumb in items:
                    if event.id in taken:
                        continue
                    taken.add(event.id)
                    if thumb is not None:
                        written.append(self._write_thumbnail(event.community, event.id, thumb))
                with self._transaction() as con:
                    for event, thumb in items:
                        inserted.append(self._insert_event(con, event, thumb is not None))
            except BaseException:
                for path in written:  # the rows did not commit: no file without its row
                    path.unlink(missing_ok=True)
                raise
        if self.outbox_enabled and any(inserted):
            self._notify()
        return inserted

    def _present_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self._con.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk)
            )
        return found

    def _insert_event(self, con: sqlite3.Connection, e: Event, has_thumbnail: bool) -> bool:
        cur = con.execute(_INSERT_EVENT, _event_row(e, has_thumbnail))
        if cur.rowcount != 1:
            return False
        if self.outbox_enabled:
            con.execute(
                "INSERT OR IGNORE INTO outbox (topic, community, ref_id, payload) "
                "VALUES ('events', ?, ?, ?)",
                (e.community, e.id, json.dumps(event_fields(e, has_thumbnail))),
            )
        return True

    def import_events(self, events: Iterable[Event], *, batch: int = 10_000) -> int:
        """Bulk load (benchmarks, migrations): checked, idempotent, no thumbnails, one
        ``executemany`` transaction per ``batch``; returns how many were new. With the outbox
        on, it goes through ``put_many`` instead, so every new row is queued for Redis."""
        total = 0
        chunk: list[Event] = []

        def flush() -> int:
            if self.outbox_enabled:
                return sum(self.put_many([(e, None) for e in chunk]))
            rows = [_event_row(check_event(e), False) for e in chunk]
            with self._lock, self._transaction() as con:
                before = con.total_changes
                con.executemany(_INSERT_EVENT, rows)
                return con.total_changes - before

        for event in events:
            chunk.append(event)
            if len(chunk) >= batch:
                total += flush()
                chunk = []
        if chunk:
            total += flush()
        return total

    def get(self, event_id: str) -> Event:
        """One stored event by id (``NotFoundError`` when absent)."""
        check_safe_id(event_id, "event id")
        with self._reading() as con:
            row = con.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"event {event_id!r} does not exist")
        return _event_from_row(row)

    def count_events(self, community: str | None = None) -> int:
        with self._reading() as con:
            if community is None:
                return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
            return int(
                con.execute(
                    "SELECT count(*) FROM events WHERE community = ?", (community,)
                ).fetchone()[0]
            )

    def query(
        self,
        community: str,
        *,
        gate: str | None = None,
        since: float | None = None,
        until: float | None = None,
        person_id: str | None = None,
        stranger_id: str | None = None,
        plate: str | None = None,
        action: Action | None = None,
        kind: Kind | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Event], str | None]:
        """One page of ``community``'s passages, newest first (by ``end``, then ``id``), with
        ``since <= end < until`` and every given filter. Returns ``(events, next_cursor)``;
        ``next_cursor`` is ``None`` on the last page and otherwise continues this same query
        (an opaque token, ``InvalidInputError`` when malformed or from another query)."""
        sql, args, fingerprint = _page_sql(
            community,
            {
                "gate": gate,
                "person_id": person_id,
                "stranger_id": stranger_id,
                "plate": plate,
                "action": action,
                "kind": kind,
            },
            since,
            until,
            cursor,
        )
        limit = _check_limit(limit, MAX_QUERY_LIMIT)
        with self._reading() as con:
            rows = con.execute(sql, (*args, limit + 1)).fetchall()
        events = [_event_from_row(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = events[-1]
            next_cursor = _encode_cursor(last.end, last.id, fingerprint)
        return events, next_cursor

    def explain_query(
        self,
        community: str,
        *,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        **filters: str,
    ) -> list[str]:
        """SQLite's plan (``EXPLAIN QUERY PLAN`` details) for ``query`` with these arguments
        (``filters``: gate, person_id, stranger_id, plate, action, kind); for tests and the
        benchmark."""
        sql, args, _ = _page_sql(community, filters, since, until, cursor)
        with self._reading() as con:
            plan = con.execute(f"EXPLAIN QUERY PLAN {sql}", (*args, 101)).fetchall()
        return [str(r[3]) for r in plan]

    def trajectory(
        self,
        *,
        person_id: str | None = None,
        stranger_id: str | None = None,
        plate: str | None = None,
        communities: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        """The passages of one person, stranger pseudo-identity or plate (give exactly one),
        across gates and communities (all, or those in ``communities``), oldest first, with
        ``since <= end < until``, at most ``limit``."""
        given = {
            k: v
            for k, v in (("person_id", person_id), ("stranger_id", stranger_id), ("plate", plate))
            if v is not None
        }
        if len(given) != 1:
            raise InvalidInputError(
                "trajectory needs exactly one of person_id, stranger_id, plate; "
                f"got {sorted(given) or 'none'}"
            )
        ((column, value),) = given.items()
        where: list[str] = [f"{column} = ?"]
        args: list[Any] = [check_text(value, column)]
        if communities is not None:
            names = [check_text(c, "community") for c in communities]
            if not names:
                raise InvalidInputError("communities must not be empty (None means all)")
            where.append(f"community IN ({','.join('?' * len(names))})")
            args.extend(names)
        limit = _check_limit(limit, MAX_TRAJECTORY_LIMIT)
        since, until = _check_range(since, until)
        if since is not None:
            where.append("end_at >= ?")
            args.append(since)
        if until is not None:
            where.append("end_at < ?")
            args.append(until)
        with self._reading() as con:
            rows = con.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
                "ORDER BY end_at, id LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [_event_from_row(r) for r in rows]

    def count_stranger_visits(self, community: str, stranger_id: str, since: float) -> int:
        """How many passages of ``stranger_id`` in ``community`` ended at or after ``since``."""
        check_text(community, "community")
        check_text(stranger_id, "stranger_id")
        since = check_time(since, "since")
        with self._reading() as con:
            row = con.execute(
                "SELECT count(*) FROM events WHERE stranger_id = ? AND community = ? "
                "AND end_at >= ?",
                (stranger_id, community, since),
            ).fetchone()
        return int(row[0])

    # -- alerts ---------------------------------------------------------------------------

    def append_alert(self, alert: Alert) -> Alert:
        """Store ``alert`` and return it with its ``seq`` (strictly greater than every earlier
        one). Idempotent on ``alert.id``: an id stored already returns the stored alert."""
        check_alert(alert)
        new = False
        with self._lock, self._transaction() as con:
            row = con.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert.id,)
            ).fetchone()
            if row is not None:
                stored = _alert_from_row(row)
            else:
                cur = con.execute(
                    "INSERT INTO alerts (id, community, gate, kind, event_id, person_id, "
                    "stranger_id, plate, time, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        alert.id,
                        alert.community,
                        alert.gate,
                        alert.kind,
                        alert.event_id,
                        alert.person_id,
                        alert.stranger_id,
                        alert.plate,
                        float(alert.time),
                        alert.message,
                    ),
                )
                if cur.lastrowid is None:  # cannot happen for an INSERT into a rowid table
                    raise RuntimeError("SQLite returned no rowid for an alert")
                stored = replace(alert, seq=int(cur.lastrowid))
                new = True
                if self.outbox_enabled:
                    con.execute(
                        "INSERT OR IGNORE INTO outbox (topic, community, ref_id, payload) "
                        "VALUES ('alerts', ?, ?, ?)",
                        (stored.community, stored.id, json.dumps(alert_fields(stored))),
                    )
        if new and self.outbox_enabled:
            self._notify()
        return stored

    def alerts_after(self, community: str | None, after_seq: int, limit: int = 100) -> list[Alert]:
        """Alerts with ``seq > after_seq`` (of ``community``, or all), oldest first."""
        if community is not None:
            check_text(community, "community")
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise InvalidInputError(f"after_seq must be an integer >= 0, got {after_seq!r}")
        limit = _check_limit(limit, MAX_QUERY_LIMIT)
        with self._reading() as con:
            if community is None:
                rows = con.execute(
                    f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            else:
                rows = con.execute(
                    f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE community = ? AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (community, after_seq, limit),
                ).fetchall()
        return [_alert_from_row(r) for r in rows]

    def last_alert_time(self, community: str, kind: AlertKind, stranger_id: str) -> float | None:
        """When the latest ``kind`` alert about ``stranger_id`` in ``community`` happened."""
        with self._reading() as con:
            row = con.execute(
                "SELECT max(time) FROM alerts WHERE stranger_id = ? AND community = ? AND kind = ?",
                (stranger_id, community, kind),
            ).fetchone()
        return None if row[0] is None else float(row[0])

    # -- retention and erasure ------------------------------------------------------------

    def purge(self, now: float, retention: RetentionPolicy, *, batch: int = 1000) -> PurgeReport:
        """Delete what ``retention`` no longer allows at Unix time ``now``: passages of
        identified persons, other passages, thumbnails (row kept), alerts; each class by its
        own period, in transactions of at most ``batch`` rows (writes interleave)."""
        now = check_time(now, "now")
        resident_cut = RetentionPolicy.cutoff(now, retention.resident_days)
        stranger_cut = RetentionPolicy.cutoff(now, retention.stranger_days)
        thumb_cut = RetentionPolicy.cutoff(now, retention.thumbnail_days)
        alert_cut = RetentionPolicy.cutoff(now, retention.alert_days)
        touched: set[tuple[str, str]] = set()
        residents = strangers = 0
        if resident_cut is not None:
            residents = self._purge_events("person_id IS NOT NULL", resident_cut, batch, touched)
        if stranger_cut is not None:
            strangers = self._purge_events("person_id IS NULL", stranger_cut, batch, touched)
        thumbs = 0 if thumb_cut is None else self._purge_thumbnails(thumb_cut, batch)
        alerts = 0 if alert_cut is None else self._purge_alerts(alert_cut, batch)
        gone: list[tuple[str, str]] = []
        with self._reading() as con:
            for community, sid in sorted(touched):
                left = con.execute(
                    "SELECT 1 FROM events WHERE stranger_id = ? AND community = ? LIMIT 1",
                    (sid, community),
                ).fetchone()
                if left is None:
                    gone.append((community, sid))
        return PurgeReport(residents, strangers, thumbs, alerts, tuple(gone))

    def _purge_events(
        self, klass: str, cutoff: float, batch: int, touched: set[tuple[str, str]]
    ) -> int:
        total = 0
        while True:
            with self._lock, self._transaction() as con:
                rows = con.execute(
                    f"SELECT rid, id, community, has_thumbnail, stranger_id FROM events "
                    f"WHERE {klass} AND end_at < ? LIMIT ?",
                    (cutoff, batch),
                ).fetchall()
                if not rows:
                    return total
                self._unlink_thumbnails((r[2], r[1]) for r in rows if r[3])
                touched.update((r[2], r[4]) for r in rows if r[4] is not None)
                _delete_in(con, "DELETE FROM events WHERE rid IN ({})", [r[0] for r in rows])
                _delete_in(
                    con,
                    "DELETE FROM outbox WHERE topic = 'events' AND ref_id IN ({})",
                    [r[1] for r in rows],
                )
            total += len(rows)

    def _purge_thumbnails(self, cutoff: float, batch: int) -> int:
        total = 0
        while True:
            with self._lock, self._transaction() as con:
                rows = con.execute(
                    "SELECT rid, id, community FROM events WHERE has_thumbnail = 1 AND end_at < ? "
                    "LIMIT ?",
                    (cutoff, batch),
                ).fetchall()
                if not rows:
                    return total
                self._unlink_thumbnails((r[2], r[1]) for r in rows)
                _delete_in(
                    con,
                    "UPDATE events SET has_thumbnail = 0 WHERE rid IN ({})",
                    [r[0] for r in rows],
                )
            total += len(rows)

    def _purge_alerts(self, cutoff: float, batch: int) -> int:
        total = 0
        while True:
            with self._lock, self._transaction() as con:
                rows = con.execute(
                    "SELECT seq, id FROM alerts WHERE time < ? LIMIT ?", (cutoff, batch)
                ).fetchall()
                if not rows:
                    return total
                _delete_in(con, "DELETE FROM alerts WHERE seq IN ({})", [r[0] for r in rows])
                _delete_in(
                    con,
                    "DELETE FROM outbox WHERE topic = 'alerts' AND ref_id IN ({})",
                    [r[1] for r in rows],
                )
            total += len(rows)

    def erase_person(
        self, community: str, person_id: str, *, anonymise: bool = False
    ) -> EraseReport:
        """Remove every passage and alert of ``person_id`` in ``community`` (``anonymise``:
        keep the rows without the identity and alert text), their thumbnails, their pending
        stream entries, and queue XDELs for the entries already sent."""
        check_text(community, "community")
        check_text(person_id, "person_id")
        return self._erase("person_id", community, person_id, anonymise)

    def erase_plate(self, community: str, plate: str, *, anonymise: bool = False) -> EraseReport:
        """``erase_person`` for a licence plate."""
        check_text(community, "community")
        check_text(plate, "plate")
        return self._erase("plate", community, plate, anonymise)

    def erase_stranger(
        self, community: str, stranger_id: str, *, anonymise: bool = False
    ) -> EraseReport:
        """``erase_person`` for a stranger pseudo-identity (one that was an erased person)."""
        check_text(community, "community")
        check_text(stranger_id, "stranger_id")
        return self._erase("stranger_id", community, stranger_id, anonymise)

    def _erase(self, column: str, community: str, value: str, anonymise: bool) -> EraseReport:
        report = self._erase_rows(column, community, value, anonymise)
        with self._lock:
            self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if report.stream_entries:
            self._notify()
        return report

    def _erase_rows(self, column: str, community: str, value: str, anonymise: bool) -> EraseReport:
        with self._lock, self._transaction() as con:
            events = con.execute(
                f"SELECT rid, id, has_thumbnail FROM events WHERE {column} = ? AND community = ?",
                (value, community),
            ).fetchall()
            alerts = con.execute(
                f"SELECT seq, id FROM alerts WHERE {column} = ? AND community = ?",
                (value, community),
            ).fetchall()
            thumbs = self._unlink_thumbnails((community, r[1]) for r in events if r[2])
            entries = self._queue_stream_deletes(con, "events", [r[1] for r in events])
            entries += self._queue_stream_deletes(con, "alerts", [r[1] for r in alerts])
            if anonymise:
                _delete_in(
                    con,
                    "UPDATE events SET person_id = NULL, stranger_id = NULL, plate = NULL, "
                    "has_thumbnail = 0 WHERE rid IN ({})",
                    [r[0] for r in events],
                )
                _delete_in(
                    con,
                    "UPDATE alerts SET person_id = NULL, stranger_id = NULL, plate = NULL, "
                    f"message = '{ERASED_MESSAGE}' WHERE seq IN ({{}})",
                    [r[0] for r in alerts],
                )
            else:
                _delete_in(con, "DELETE FROM events WHERE rid IN ({})", [r[0] for r in events])
                _delete_in(con, "DELETE FROM alerts WHERE seq IN ({})", [r[0] for r in alerts])
        return EraseReport(len(events), len(alerts), thumbs, entries)

    def _queue_stream_deletes(self, con: sqlite3.Connection, topic: Topic, ids: list[str]) -> int:
        queued = 0
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            queued += con.execute(
                "INSERT INTO redis_deletes (topic, community, entry_id) "
                f"SELECT topic, community, entry_id FROM outbox WHERE topic = ? "
                f"AND ref_id IN ({marks}) AND entry_id IS NOT NULL ORDER BY seq",
                (topic, *chunk),
            ).rowcount
            con.execute(
                f"DELETE FROM outbox WHERE topic = ? AND ref_id IN ({marks})", (topic, *chunk)
            )
        return queued

    # -- the Redis outbox (RedisPublisher) -------------------------------------------------

    def outbox_pending(self, limit: int) -> list[OutboxRow]:
        """The oldest ``limit`` stream entries not yet sent, in ``seq`` order."""
        with self._reading() as con:
            rows = con.execute(
                "SELECT seq, topic, community, ref_id, payload FROM outbox "
                "WHERE entry_id IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxRow(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def outbox_mark_sent(self, sent: Sequence[tuple[OutboxRow, str]]) -> int:
        """Record rows as sent with their stream entry ids (the payload is dropped). A row
        erased or purged while its XADD was in flight gets an XDEL queued instead; returns
        how many."""
        if not sent:
            return 0
        orphans = 0
        with self._lock, self._transaction() as con:
            for row, entry in sent:
                done = con.execute(
                    "UPDATE outbox SET entry_id = ?, payload = '' WHERE seq = ?", (entry, row.seq)
                ).rowcount
                if done == 0:
                    con.execute(
                        "INSERT INTO redis_deletes (topic, community, entry_id) VALUES (?, ?, ?)",
                        (row.topic, row.community, entry),
                    )
                    orphans += 1
        return orphans

    def stream_deletes(self, limit: int) -> list[StreamDelete]:
        """The oldest ``limit`` XDELs waiting to be sent."""
        with self._reading() as con:
            rows = con.execute(
                "SELECT seq, topic, community, entry_id FROM redis_deletes ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [StreamDelete(*r) for r in rows]

    def stream_deletes_done(self, seqs: Sequence[int]) -> None:
        with self._lock, self._transaction() as con:
            _delete_in(con, "DELETE FROM redis_deletes WHERE seq IN ({})", list(seqs))

    def outbox_backlog(self) -> tuple[int, int]:
        """``(entries waiting to be sent, XDELs waiting to be sent)``."""
        with self._reading() as con:
            adds = con.execute("SELECT count(*) FROM outbox WHERE entry_id IS NULL").fetchone()
            deletes = con.execute("SELECT count(*) FROM redis_deletes").fetchone()
        return int(adds[0]), int(deletes[0])


# -- helpers ---------------------------------------------------------------------------------


def _thumbnail_ad(community: str, event_id: str) -> bytes:
    """What a thumbnail file is bound to: its community and event."""
    return f"thumbnail|{community}|{event_id}".encode()


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _delete_in(con: sqlite3.Connection, sql: str, values: list[Any]) -> None:
    for chunk in _chunks(values):
        con.execute(sql.format(",".join("?" * len(chunk))), chunk)


_QUERY_FILTERS: Final = ("gate", "person_id", "stranger_id", "plate", "action", "kind")


def _page_sql(
    community: str,
    filters: Mapping[str, str | None],
    since: float | None,
    until: float | None,
    cursor: str | None,
) -> tuple[str, list[Any], str]:
    """``(sql, args, fingerprint)`` of one ``query`` page; the sql ends in ``LIMIT ?``."""
    check_text(community, "community")
    unknown = set(filters) - set(_QUERY_FILTERS)
    if unknown:
        raise InvalidInputError(f"unknown event filter(s) {sorted(unknown)}")
    action, kind = filters.get("action"), filters.get("kind")
    if action is not None and action not in ACTIONS:
        raise InvalidInputError(f"action must be one of {', '.join(ACTIONS)}; got {action!r}")
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    where = ["community = ?"]
    args: list[Any] = [community]
    for name in _QUERY_FILTERS:
        value = filters.get(name)
        if value is not None:
            where.append(f"{name} = ?")
            args.append(check_text(value, name))
    since, until = _check_range(since, until)
    if since is not None:
        where.append("end_at >= ?")
        args.append(since)
    if until is not None:
        where.append("end_at < ?")
        args.append(until)
    fingerprint = _fingerprint(community, since, until, filters)
    if cursor is not None:
        after_end, after_id = _decode_cursor(cursor, fingerprint)
        # Keyset: strictly after (end_at, id) in (DESC, DESC) order; the first term keeps the
        # scan an index range on end_at.
        where.append("end_at <= ? AND (end_at < ? OR id < ?)")
        args.extend((after_end, after_end, after_id))
    sql = (
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
        "ORDER BY end_at DESC, id DESC LIMIT ?"
    )
    return sql, args, fingerprint


def _check_thumbnail(data: object) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInputError(f"thumbnail must be JPEG bytes, got {type(data).__name__}")
    if len(data) > MAX_THUMBNAIL_BYTES:
        raise InvalidInputError(f"thumbnail is {len(data)} bytes, more than {MAX_THUMBNAIL_BYTES}")
    if bytes(data[:3]) != _JPEG_MAGIC:
        raise InvalidInputError("thumbnail is not a JPEG (no FF D8 FF start of image)")


def _check_limit(limit: object, most: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidInputError(f"limit must be an integer, got {type(limit).__name__}")
    if not 1 <= limit <= most:
        raise InvalidInputError(f"limit must be between 1 and {most}, got {limit}")
    return limit


def _check_range(since: object, until: object) -> tuple[float | None, float | None]:
    lo = None if since is None else check_time(since, "since")
    hi = None if until is None else check_time(until, "until")
    if lo is not None and hi is not None and hi < lo:
        raise InvalidInputError(f"until ({hi}) is before since ({lo})")
    return lo, hi


def _fingerprint(
    community: str, since: float | None, until: float | None, filters: Mapping[str, str | None]
) -> str:
    """8 hex digits naming one query (not its limit), so a cursor cannot continue another."""
    given = sorted((k, v) for k, v in filters.items() if v is not None)
    key = json.dumps([community, since, until, given], separators=(",", ":"))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


def _encode_cursor(end: float, event_id: str, fingerprint: str) -> str:
    raw = f"{float(end).hex()}|{event_id}|{fingerprint}".encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(cursor: object, fingerprint: str) -> tuple[float, str]:
    bad = InvalidInputError("cursor is not one returned by this query (pass it back unchanged)")
    if not isinstance(cursor, str) or not cursor.startswith(_CURSOR_PREFIX) or len(cursor) > 512:
        raise bad
    body = cursor[len(_CURSOR_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
        end_hex, eid, fp = raw.split("|")
        end = float.fromhex(end_hex)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise bad from exc
    if fp != fingerprint:
        raise InvalidInputError("cursor belongs to another query (other community or filters)")
    check_safe_id(eid, "cursor event id")
    return check_time(end, "cursor time"), eid
