"""The registry's durable state: one SQLite file, ``registry.db``, under the data directory.

WAL mode with ``synchronous=NORMAL`` (a commit survives a process crash; the last commits before
a power cut may be lost, never corrupted), foreign keys on. One connection, guarded by a lock,
serves every thread. Every change runs in one ``BEGIN IMMEDIATE`` transaction, so an operation
(an enrolment: community, person and all its templates) is written whole or not at all.

Layout, so that a new table is added the same way (vehicles, migration 2, was):

* the schema lives in ``_MIGRATIONS``; version ``i + 1`` is ``_MIGRATIONS[i]``. To add a table,
  append a migration (never edit an applied one); ``schema_version`` records what was applied;
* each table has a ``_<TABLE>_COLUMNS`` select list and a ``_<table>_from_row`` decoder;
* each public method is one use case: ``with self._transaction() as con:`` for changes,
  ``with self._reading() as con:`` for reads.

Embeddings are stored as float32 little-endian bytes with their dimension beside them, sealed
with the data key (``indexer.crypto``: AES-GCM, bound to ``template|<community>|<person key>``,
so a template moved onto another person fails to open). ``secure_delete`` is on and the WAL is
checkpointed (truncated) after every removal, so neither a removed person's nor a plaintext
row's bytes linger in freed pages or old WAL frames. Plaintext templates of an older data
directory are sealed when it is opened; ``reseal`` re-encrypts under a rotated key.

The data directory holds ``.smartgate.lock``: every open ``Store`` holds a shared ``flock`` on
it, and ``data_dir_lock(exclusive=True)`` (key rotation) waits for none.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import numpy as np

from indexer import changelog
from indexer.changelog import Change, ChangeKind, Retention
from indexer.crypto import OVERHEAD, KeyRing
from indexer.types import Person, Role, Vehicle
from smartgate.checks import connect_wal, immediate, migrate
from smartgate.config import PrivacyConfig
from smartgate.errors import AlreadyExistsError, ConfigError, ModelError, NotFoundError

log = logging.getLogger(__name__)

DB_FILENAME: Final = "registry.db"
LOCK_FILENAME: Final = ".smartgate.lock"

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: communities, persons and their face templates.
    (
        """CREATE TABLE communities (
            id TEXT PRIMARY KEY,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE persons (
            key INTEGER PRIMARY KEY AUTOINCREMENT,
            community TEXT NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
            person_id TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL CHECK (role IN ('resident', 'visitor', 'watchlist')),
            expires_at REAL NULL,
            created_at REAL NOT NULL,
            UNIQUE (community, person_id)
        )""",
        # AUTOINCREMENT: template ids only grow and are never reused, so an id in a search
        # result always names one template, and the in-memory id tables stay sorted by append.
        """CREATE TABLE templates (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            person_key INTEGER NOT NULL REFERENCES persons(key) ON DELETE CASCADE,
            community TEXT NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
            embedding BLOB NOT NULL,
            dim INTEGER NOT NULL CHECK (dim > 0 AND length(embedding) = 4 * dim),
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX templates_by_person ON templates(person_key)",
        "CREATE INDEX templates_by_community ON templates(community, id)",
    ),
    # 2: registered vehicles (licence plates), one row per (community, normalised plate).
    (
        """CREATE TABLE vehicles (
            key INTEGER PRIMARY KEY AUTOINCREMENT,
            community TEXT NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
            plate TEXT NOT NULL CHECK (length(plate) > 0),
            role TEXT NOT NULL CHECK (role IN ('resident', 'visitor', 'watchlist')),
            owner TEXT NOT NULL DEFAULT '',
            expires_at REAL NULL,
            created_at REAL NOT NULL,
            CHECK (role != 'visitor' OR expires_at IS NOT NULL),
            UNIQUE (community, plate)
        )""",
    ),
    # 3: templates are sealed (indexer.crypto): the blob is 4 * dim bytes (plaintext, sealed
    # on open) or 4 * dim + OVERHEAD. The table is rebuilt to change its CHECK; the
    # AUTOINCREMENT counter is carried over so template ids are still never reused.
    (
        f"""CREATE TABLE templates_v3 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            person_key INTEGER NOT NULL REFERENCES persons(key) ON DELETE CASCADE,
            community TEXT NOT NULL REFERENCES communities(id) ON DELETE CASCADE,
            embedding BLOB NOT NULL,
            dim INTEGER NOT NULL CHECK (
                dim > 0 AND length(embedding) IN (4 * dim, 4 * dim + {OVERHEAD})
            ),
            created_at REAL NOT NULL
        )""",
        "INSERT INTO templates_v3 (id, person_key, community, embedding, dim, created_at) "
        "SELECT id, person_key, community, embedding, dim, created_at FROM templates",
        "DELETE FROM sqlite_sequence WHERE name = 'templates_v3'",
        "INSERT INTO sqlite_sequence (name, seq) "
        "SELECT 'templates_v3', seq FROM sqlite_sequence WHERE name = 'templates'",
        "DROP TABLE templates",
        "ALTER TABLE templates_v3 RENAME TO templates",
        "CREATE INDEX templates_by_person ON templates(person_key)",
        "CREATE INDEX templates_by_community ON templates(community, id)",
    ),
    # 4: a covering index of the templates without their blobs, so that listing a community's
    # (id, owner) pairs (a restore from a snapshot, indexer.snapshot) and counting templates
    # per dimension read the index alone, not every template's page. It replaces the index
    # of migration 1 (a prefix of it).
    (
        "CREATE INDEX templates_owners ON templates(community, id, person_key, dim)",
        "DROP INDEX templates_by_community",
    ),
    # 5: the change log (indexer.changelog): one row per committed change of a community's
    # persons or vehicles, ids only; the cursors of its readers; the store's random epoch.
    # (IF NOT EXISTS: a database whose version was set back by hand keeps its log.)
    (
        """CREATE TABLE IF NOT EXISTS changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            community TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('person_enrolled', 'person_replaced',
                'person_removed', 'vehicle_added', 'vehicle_replaced', 'vehicle_removed')),
            subject TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS changes_by_community ON changes(community, seq)",
        "CREATE TABLE IF NOT EXISTS change_cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS store_identity (epoch TEXT NOT NULL)",
        "INSERT INTO store_identity (epoch) SELECT lower(hex(randomblob(8))) "
        "WHERE NOT EXISTS (SELECT 1 FROM store_identity)",
    ),
)

#: The schema version this code writes and understands.
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_PERSON_COLUMNS: Final = (
    "p.key, p.community, p.person_id, p.name, p.role, p.expires_at, p.created_at, "
    "(SELECT count(*) FROM templates t WHERE t.person_key = p.key)"
)


def _community_persons(con: sqlite3.Connection, community: str) -> list[Person]:
    """Every person of ``community``, by key."""
    return [
        _person_from_row(r)
        for r in con.execute(
            f"SELECT {_PERSON_COLUMNS} FROM persons p WHERE p.community = ? ORDER BY p.key",
            (community,),
        )
    ]


def _person_from_row(row: tuple[Any, ...]) -> Person:
    key, community, person_id, name, role, expires_at, created_at, count = row
    return Person(
        key=int(key),
        community=str(community),
        person_id=str(person_id),
        name=str(name),
        role=cast(Role, role),
        expires_at=None if expires_at is None else float(expires_at),
        created_at=float(created_at),
        template_count=int(count),
    )


_VEHICLE_COLUMNS: Final = "v.key, v.community, v.plate, v.role, v.owner, v.expires_at, v.created_at"


def _vehicle_from_row(row: tuple[Any, ...]) -> Vehicle:
    key, community, plate, role, owner, expires_at, created_at = row
    return Vehicle(
        key=int(key),
        community=str(community),
        plate=str(plate),
        role=cast(Role, role),
        owner=str(owner),
        expires_at=None if expires_at is None else float(expires_at),
        created_at=float(created_at),
    )


def _community_missing(community: str) -> NotFoundError:
    return NotFoundError(f"community {community!r} does not exist")


def _person_missing(community: str, person_id: str) -> NotFoundError:
    return NotFoundError(f"person {person_id!r} does not exist in community {community!r}")


@dataclass(frozen=True)
class Enrolled:
    """What an enrolment changed: the person as stored, its new template ids, and the ids of
    the templates it replaced (empty unless ``replace``)."""

    person: Person
    template_ids: np.ndarray  # (n,) int64, ascending
    replaced_template_ids: np.ndarray  # (m,) int64
    community_created: bool


@dataclass(frozen=True)
class FaceTemplateOwners:
    """A community's persons and the owner of each template (no embeddings)."""

    persons: list[Person]
    template_ids: np.ndarray  # (n,) int64, ascending
    person_keys: np.ndarray  # (n,) int64, owner of each template


@dataclass(frozen=True)
class FaceTemplates:
    """A community's persons and templates, to rebuild its index from."""

    persons: list[Person]
    template_ids: np.ndarray  # (n,) int64, ascending
    person_keys: np.ndarray  # (n,) int64, owner of each template
    embeddings: np.ndarray  # (n, dim) float32


def data_dir_lock(data_dir: Path, *, exclusive: bool) -> int:
    """A file descriptor holding a ``flock`` on ``data_dir/.smartgate.lock`` (close it to
    release). Shared: an open store; exclusive: key rotation. ``ConfigError`` when the other
    kind is held (a running node, or a rotation)."""
    fd = os.open(data_dir / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise ConfigError(
            f"{data_dir} is in use by another process"
            + (" (stop the node first)" if exclusive else " (a key rotation is running)")
        ) from exc
    return fd


class Store:
    """SQLite persistence of communities, persons, face templates and vehicles. Thread-safe.

    ``keys`` seal the templates (default: ``KeyRing.from_config(PrivacyConfig())``, the user's
    key file). ``lock=False`` skips the shared data-dir lock (for the holder of the exclusive
    one). ``retention`` bounds the change log (``indexer.changelog``)."""

    def __init__(
        self,
        data_dir: Path | str,
        keys: KeyRing | None = None,
        *,
        lock: bool = True,
        retention: Retention | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.retention = Retention() if retention is None else retention
        self._change_listeners: list[Callable[[], None]] = []
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_FILENAME
        self.keys = KeyRing.from_config(PrivacyConfig()) if keys is None else keys
        self._lock = threading.Lock()
        self._lock_fd = data_dir_lock(self.data_dir, exclusive=False) if lock else None
        try:
            self._con = connect_wal(self.path, foreign_keys=True)
        except BaseException:
            self._release_lock()
            raise
        try:
            self._con.execute("PRAGMA secure_delete=ON")
            self._migrate()
            sealed = self._seal_plaintext()
            if sealed:
                log.warning("%s: sealed %d plaintext face templates", self.path, sealed)
                self.compact()
        except BaseException:
            self._con.close()
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._con.close()
            self._release_lock()

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, so no old page version (a removed
        row, a plaintext one) stays in ``registry.db-wal``."""
        with self._lock:
            self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def compact(self) -> None:
        """``VACUUM`` (rewrites every page: nothing of a freed page survives) and checkpoint."""
        with self._lock:
            self._con.execute("VACUUM")
            self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _seal_plaintext(self) -> int:
        """Seal the templates an older smartgate stored in plaintext; returns how many."""
        with self._transaction() as con:
            rows = con.execute(
                "SELECT t.id, t.community, t.person_key, t.embedding FROM templates t "
                "WHERE length(t.embedding) = 4 * t.dim"
            ).fetchall()
            for tid, community, person_key, blob in rows:
                con.execute(
                    "UPDATE templates SET embedding = ? WHERE id = ?",
                    (self.keys.seal(bytes(blob), _template_ad(community, person_key)), tid),
                )
        return len(rows)

    def reseal(self, keys: KeyRing, *, batch: int = 1000) -> int:
        """Re-encrypt every template not sealed with ``keys``' current key (key rotation);
        this store uses ``keys`` from then on. Returns how many were re-encrypted."""
        old, self.keys = self.keys, keys
        done = 0
        last = 0
        while True:
            with self._transaction() as con:
                rows = con.execute(
                    "SELECT id, community, person_key, embedding FROM templates WHERE id > ? "
                    "ORDER BY id LIMIT ?",
                    (last, batch),
                ).fetchall()
                for tid, community, person_key, blob in rows:
                    if keys.is_current(blob):
                        continue
                    ad = _template_ad(community, person_key)
                    plain = (keys if keys.has_key_of(blob) else old).open(blob, ad)
                    con.execute(
                        "UPDATE templates SET embedding = ? WHERE id = ?",
                        (keys.seal(plain, ad), tid),
                    )
                    done += 1
            if len(rows) < batch:
                break
            last = int(rows[-1][0])
        self.compact()
        return done

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._con) as con:
            yield con

    @contextmanager
    def _changing(self) -> Iterator[sqlite3.Connection]:
        """A transaction that logs a change (``_log``); the change listeners are called after
        its commit."""
        with self._transaction() as con:
            yield con
        for listener in list(self._change_listeners):
            listener()

    def _log(
        self, con: sqlite3.Connection, community: str, kind: ChangeKind, subject: str, now: float
    ) -> None:
        """Log a change of person id or plate ``subject`` (as its keyed pseudonym: an erasure
        leaves no byte of the id in the store)."""
        ref = changelog.pseudonym(self.keys, community, changelog.subject_kind(kind), subject)
        changelog.record(con, community, kind, ref, now, self.retention)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._con

    def _migrate(self) -> None:
        with self._transaction() as con:
            migrate(con, self.path, _MIGRATIONS)

    def _seal(self, vector: np.ndarray, community: str, person_key: int) -> bytes:
        plain = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        return self.keys.seal(plain, _template_ad(community, person_key))

    def _open(self, blob: bytes, community: str, person_key: int) -> bytes:
        return self.keys.open(blob, _template_ad(community, person_key))

    def schema_version(self) -> int:
        with self._reading() as con:
            return int(con.execute("SELECT version FROM schema_version").fetchone()[0])

    # -- communities ----------------------------------------------------------------------

    def create_community(self, community: str, now: float) -> None:
        """Raises ``AlreadyExistsError`` when it exists."""
        with self._transaction() as con:
            if _community_exists(con, community):
                raise AlreadyExistsError(f"community {community!r} exists already")
            con.execute("INSERT INTO communities (id, created_at) VALUES (?, ?)", (community, now))

    def communities(self) -> list[str]:
        with self._reading() as con:
            return [str(r[0]) for r in con.execute("SELECT id FROM communities ORDER BY id")]

    # -- persons and face templates -------------------------------------------------------

    def enroll(
        self,
        community: str,
        person_id: str,
        embeddings: np.ndarray,
        *,
        name: str,
        role: Role,
        expires_at: float | None,
        replace: bool,
        now: float,
    ) -> Enrolled:
        """Store a person with the templates ``embeddings`` ``(n, dim)`` float32, atomically.

        Creates the community when missing. When the person exists: ``AlreadyExistsError``
        unless ``replace``, which keeps its key and creation time, updates name, role and
        expiry, and swaps every template for the new ones.
        """
        with self._changing() as con:
            created = not _community_exists(con, community)
            if created:
                con.execute(
                    "INSERT INTO communities (id, created_at) VALUES (?, ?)", (community, now)
                )
            row = con.execute(
                "SELECT key FROM persons WHERE community = ? AND person_id = ?",
                (community, person_id),
            ).fetchone()
            replaced = np.empty(0, np.int64)
            if row is None:
                key = _insert(
                    con,
                    "INSERT INTO persons (community, person_id, name, role, expires_at, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (community, person_id, name, role, expires_at, now),
                )
            elif not replace:
                raise AlreadyExistsError(
                    f"person {person_id!r} exists already in community {community!r} "
                    "(enrol with replace to swap their templates)"
                )
            else:
                key = int(row[0])
                replaced = _template_ids_of(con, key)
                con.execute("DELETE FROM templates WHERE person_key = ?", (key,))
                con.execute(
                    "UPDATE persons SET name = ?, role = ?, expires_at = ? WHERE key = ?",
                    (name, role, expires_at, key),
                )
            dim = int(embeddings.shape[1])
            ids = [
                _insert(
                    con,
                    "INSERT INTO templates (person_key, community, embedding, dim, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (key, community, self._seal(vector, community, key), dim, now),
                )
                for vector in embeddings
            ]
            person = _person_from_row(
                con.execute(
                    f"SELECT {_PERSON_COLUMNS} FROM persons p WHERE p.key = ?", (key,)
                ).fetchone()
            )
            kind: ChangeKind = "person_enrolled" if row is None else "person_replaced"
            self._log(con, community, kind, person_id, now)
        return Enrolled(person, np.array(ids, np.int64), replaced, created)

    def remove_person(
        self, community: str, person_id: str, *, now: float | None = None
    ) -> tuple[int, np.ndarray]:
        """Delete a person and every template of theirs (logged at ``now``, default the
        clock). Returns ``(key, template_ids)``."""
        with self._changing() as con:
            key = _person_key(con, community, person_id)
            ids = _template_ids_of(con, key)
            con.execute("DELETE FROM templates WHERE person_key = ?", (key,))
            con.execute("DELETE FROM persons WHERE key = ?", (key,))
            self._log(con, community, "person_removed", person_id, _now(now))
        self.checkpoint()
        return key, ids

    def person_embeddings(self, community: str, person_id: str) -> np.ndarray:
        """The templates ``(n, dim)`` float32 of one person (to find what else they left)."""
        with self._reading() as con:
            key = _person_key(con, community, person_id)
            rows = con.execute(
                "SELECT dim, embedding FROM templates WHERE person_key = ? ORDER BY id", (key,)
            ).fetchall()
        if not rows:
            return np.empty((0, 0), np.float32)
        plain = [self._open(blob, community, key) for _, blob in rows]
        return np.frombuffer(b"".join(plain), "<f4").astype(np.float32).reshape(len(rows), -1)

    def get_person(self, community: str, person_id: str) -> Person:
        with self._reading() as con:
            row = con.execute(
                f"SELECT {_PERSON_COLUMNS} FROM persons p "
                "WHERE p.community = ? AND p.person_id = ?",
                (community, person_id),
            ).fetchone()
            if row is None:
                if not _community_exists(con, community):
                    raise _community_missing(community)
                raise _person_missing(community, person_id)
        return _person_from_row(row)

    def list_persons(
        self, community: str, *, role: Role | None, limit: int, after: str | None
    ) -> list[Person]:
        """Persons ordered by ``person_id``, those after ``after`` only, at most ``limit``."""
        rows = self._page(
            "persons p", _PERSON_COLUMNS, "p.person_id", community, role, limit, after
        )
        return [_person_from_row(r) for r in rows]

    def _page(
        self,
        table: str,
        columns: str,
        key: str,
        community: str,
        role: Role | None,
        limit: int,
        after: str | None,
    ) -> list[tuple[Any, ...]]:
        """Rows of ``table`` (aliased: ``"persons p"``) of ``community``, optionally of ``role``,
        ordered by ``key`` and after ``after``, at most ``limit``; NotFoundError for an unknown
        community. Only module constants are formatted into the SQL."""
        alias = table.rsplit(maxsplit=1)[-1]
        where, args = [f"{alias}.community = ?"], [community]
        if role is not None:
            where.append(f"{alias}.role = ?")
            args.append(role)
        if after is not None:
            where.append(f"{key} > ?")
            args.append(after)
        with self._reading() as con:
            if not _community_exists(con, community):
                raise _community_missing(community)
            rows: list[tuple[Any, ...]] = con.execute(
                f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY {key} LIMIT ?",
                (*args, limit),
            ).fetchall()
        return rows

    def template_dims(self) -> dict[int, int]:
        """How many templates are stored per embedding dimension."""
        with self._reading() as con:
            rows = con.execute("SELECT dim, count(*) FROM templates GROUP BY dim").fetchall()
        return {int(d): int(n) for d, n in rows}

    def face_templates(self, community: str, dim: int) -> FaceTemplates:
        """Every person and template of ``community``; templates must all be ``dim`` wide."""
        with self._reading() as con:
            persons = _community_persons(con, community)
            rows = con.execute(
                "SELECT id, person_key, dim, embedding FROM templates WHERE community = ? "
                "ORDER BY id",
                (community,),
            ).fetchall()
        if any(int(r[2]) != dim for r in rows):
            raise ModelError(f"community {community!r} holds face templates not {dim} wide")
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        keys = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        blob = b"".join(self._open(r[3], community, int(r[1])) for r in rows)
        vectors = np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(len(rows), dim)
        return FaceTemplates(persons, ids, keys, vectors)

    def face_template_owners(self, community: str) -> FaceTemplateOwners:
        """Every person of ``community`` and the id and owner of each template, in one read and
        without unsealing a template (a restore from a snapshot needs no more)."""
        with self._reading() as con, _read_transaction(con):
            persons = _community_persons(con, community)
            rows = con.execute(
                "SELECT id, person_key FROM templates WHERE community = ? ORDER BY id",
                (community,),
            ).fetchall()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        keys = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        return FaceTemplateOwners(persons, ids, keys)

    def face_templates_by_id(
        self, community: str, template_ids: np.ndarray, dim: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The templates of ``community`` among ``template_ids`` ``(m,)`` int64, unsealed:
        ``(ids (n,) int64 ascending, person keys (n,) int64, vectors (n, dim) float32)``, ``n <=
        m`` (ids of removed templates or of another community are left out)."""
        wanted = np.unique(np.asarray(template_ids, np.int64))
        with self._reading() as con:
            rows = con.execute(
                "SELECT id, person_key, dim, embedding FROM templates "
                "WHERE community = ? AND id IN (SELECT value FROM json_each(?)) ORDER BY id",
                (community, json.dumps(wanted.tolist())),
            ).fetchall()
        if any(int(r[2]) != dim for r in rows):
            raise ModelError(f"community {community!r} holds face templates not {dim} wide")
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        keys = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        blob = b"".join(self._open(r[3], community, int(r[1])) for r in rows)
        vectors = np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(len(rows), dim)
        return ids, keys, vectors

    # -- vehicles -------------------------------------------------------------------------

    def add_vehicle(
        self,
        community: str,
        plate: str,
        *,
        role: Role,
        owner: str,
        expires_at: float | None,
        replace: bool,
        now: float,
    ) -> Vehicle:
        """Register ``plate`` (normalised) in ``community``, which must exist.

        When the plate is registered already: ``AlreadyExistsError`` unless ``replace``, which
        keeps its key and creation time and updates role, owner and expiry.
        """
        with self._changing() as con:
            if not _community_exists(con, community):
                raise _community_missing(community)
            row = con.execute(
                "SELECT key FROM vehicles WHERE community = ? AND plate = ?", (community, plate)
            ).fetchone()
            if row is None:
                key = _insert(
                    con,
                    "INSERT INTO vehicles (community, plate, role, owner, expires_at, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (community, plate, role, owner, expires_at, now),
                )
            elif not replace:
                raise AlreadyExistsError(
                    f"vehicle {plate!r} is registered already in community {community!r} "
                    "(add with replace to update it)"
                )
            else:
                key = int(row[0])
                con.execute(
                    "UPDATE vehicles SET role = ?, owner = ?, expires_at = ? WHERE key = ?",
                    (role, owner, expires_at, key),
                )
            kind: ChangeKind = "vehicle_added" if row is None else "vehicle_replaced"
            self._log(con, community, kind, plate, now)
            return _vehicle_from_row(
                con.execute(
                    f"SELECT {_VEHICLE_COLUMNS} FROM vehicles v WHERE v.key = ?", (key,)
                ).fetchone()
            )

    def remove_vehicle(self, community: str, plate: str, *, now: float | None = None) -> Vehicle:
        """Delete a registered vehicle (logged at ``now``, default the clock); returns it as
        it was."""
        with self._changing() as con:
            vehicle = _vehicle(con, community, plate)
            con.execute("DELETE FROM vehicles WHERE key = ?", (vehicle.key,))
            self._log(con, community, "vehicle_removed", plate, _now(now))
        self.checkpoint()
        return vehicle

    def get_vehicle(self, community: str, plate: str) -> Vehicle:
        with self._reading() as con:
            return _vehicle(con, community, plate)

    def list_vehicles(
        self, community: str, *, role: Role | None, limit: int, after: str | None
    ) -> list[Vehicle]:
        """Vehicles ordered by ``plate``, those after ``after`` only, at most ``limit``."""
        rows = self._page("vehicles v", _VEHICLE_COLUMNS, "v.plate", community, role, limit, after)
        return [_vehicle_from_row(r) for r in rows]

    def vehicles(self) -> list[Vehicle]:
        """Every registered vehicle of every community, ordered by community then plate (to
        rebuild the in-memory plate indexes from)."""
        with self._reading() as con:
            rows = con.execute(
                f"SELECT {_VEHICLE_COLUMNS} FROM vehicles v ORDER BY v.community, v.plate"
            ).fetchall()
        return [_vehicle_from_row(r) for r in rows]

    # -- the change log (indexer.changelog) -----------------------------------------------

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every commit that logged a change (a publisher's wake-up;
        it must not block)."""
        self._change_listeners.append(listener)

    def changes_after(self, seq: int, limit: int = 256) -> list[Change]:
        """Up to ``limit`` logged changes of every community after ``seq``, in order."""
        with self._reading() as con:
            return changelog.after(con, seq, limit)

    def count_changes_after(self, seq: int) -> int:
        """How many logged changes (of every community) have a seq above ``seq``."""
        with self._reading() as con:
            return changelog.count_after(con, seq)

    def community_changes(self, community: str, after: int = 0, limit: int = 1000) -> list[Change]:
        """Up to ``limit`` logged changes of ``community`` after seq ``after``, in order."""
        with self._reading() as con:
            return changelog.of_community(con, community, after, limit)

    def community_version(self, community: str) -> int:
        """``community``'s last logged seq (0: nothing logged yet)."""
        with self._reading() as con:
            return changelog.version(con, community)

    def changes_cursor(self, name: str) -> int | None:
        """How far reader ``name`` got in the log (None: it never started)."""
        with self._reading() as con:
            return changelog.cursor(con, name)

    def set_changes_cursor(self, name: str, seq: int) -> None:
        """Record that reader ``name`` dealt with every change up to ``seq``."""
        with self._transaction() as con:
            changelog.set_cursor(con, name, seq)

    def drop_changes_cursor(self, name: str) -> None:
        """Forget reader ``name`` (not running any more): its unsent changes may be trimmed."""
        with self._transaction() as con:
            changelog.drop_cursor(con, name)

    def epoch(self) -> str:
        """This store's random id (drawn when its change log was created)."""
        with self._reading() as con:
            return changelog.epoch(con)

    def trim_changes(self, now: float | None = None) -> int:
        """Trim every community's change log to ``self.retention``; returns the rows gone."""
        with self._transaction() as con:
            return changelog.trim(con, None, _now(now), self.retention)


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _vehicle(con: sqlite3.Connection, community: str, plate: str) -> Vehicle:
    row = con.execute(
        f"SELECT {_VEHICLE_COLUMNS} FROM vehicles v WHERE v.community = ? AND v.plate = ?",
        (community, plate),
    ).fetchone()
    if row is None:
        if not _community_exists(con, community):
            raise _community_missing(community)
        raise NotFoundError(f"vehicle {plate!r} is not registered in community {community!r}")
    return _vehicle_from_row(row)


def _insert(con: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    rowid = con.execute(sql, args).lastrowid
    if rowid is None:  # cannot happen for an INSERT into a rowid table
        raise RuntimeError(f"SQLite returned no rowid for: {sql}")
    return int(rowid)


def _community_exists(con: sqlite3.Connection, community: str) -> bool:
    return (
        con.execute("SELECT 1 FROM communities WHERE id = ?", (community,)).fetchone() is not None
    )


def _person_key(con: sqlite3.Connection, community: str, person_id: str) -> int:
    row = con.execute(
        "SELECT key FROM persons WHERE community = ? AND person_id = ?", (community, person_id)
    ).fetchone()
    if row is None:
        if not _community_exists(con, community):
            raise _community_missing(community)
        raise _person_missing(community, person_id)
    return int(row[0])


def _template_ids_of(con: sqlite3.Connection, person_key: int) -> np.ndarray:
    rows = con.execute(
        "SELECT id FROM templates WHERE person_key = ? ORDER BY id", (person_key,)
    ).fetchall()
    return np.array([r[0] for r in rows], np.int64)


@contextmanager
def _read_transaction(con: sqlite3.Connection) -> Iterator[None]:
    """One consistent view (a WAL read snapshot) across several SELECTs."""
    con.execute("BEGIN")
    try:
        yield
    finally:
        con.execute("COMMIT")


def _template_ad(community: str, person_key: int) -> bytes:
    """What a template blob is bound to: its community and its owner."""
    return f"template|{community}|{int(person_key)}".encode()
