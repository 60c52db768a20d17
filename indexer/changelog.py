"""The registry store's append-only change log: what changed in a community, in order.

Every write use case of ``indexer.store.Store`` that changes a community's persons or vehicles
appends one row to the ``changes`` table (migration 5) inside its own transaction, so the log
holds a change exactly when the change was committed:

==================  ==========================================  ============================
kind                written by                                   subject
==================  ==========================================  ============================
person_enrolled     ``Store.enroll`` (a new person)              ``pseudonym`` of the person id
person_replaced     ``Store.enroll(replace=True)`` of a person   ``pseudonym`` of the person id
person_removed      ``Store.remove_person``                      ``pseudonym`` of the person id
vehicle_added       ``Store.add_vehicle`` (a new plate)          ``pseudonym`` of the plate
vehicle_replaced    ``Store.add_vehicle(replace=True)``          ``pseudonym`` of the plate
vehicle_removed     ``Store.remove_vehicle``                     ``pseudonym`` of the plate
==================  ==========================================  ============================

Ids only, and not even those in clear: no name, owner, role, expiry or template, and the
subject is a keyed pseudonym of the id (HMAC-SHA256 under a key derived from the current data
key, ``indexer.crypto``): an erasure must leave no byte of the person's id in the data
directory (``cluster.erasure``, ``tests/unit/test_crypto.py``), nor in Redis, yet the holders of
per-person state elsewhere (a cluster frontend's open passages) must learn whom to forget. They
hold the data keys too and compare ``pseudonym(keys, community, "person", identity)`` of what
they hold with the subject. After a key rotation new rows use the new key's pseudonyms.
``seq`` is ``AUTOINCREMENT``: monotonic per store and never reused, even after trimming; a
community's *version* is its last ``seq`` (0 before its first change). In cluster mode each
community has its own store, so its seqs are its own; the embedded store shares one sequence
among its communities (a community's seqs then increase with gaps).

Consumers read the log after a cursor (``after``); ``cursor`` / ``set_cursor`` remember how far a
named reader got (the Redis publisher, ``cluster.events.index_changes``). ``trim`` keeps it
bounded: a community's rows older than ``keep_s`` or beyond its newest ``keep_rows`` go, except
its latest row (the version) and rows after the publisher's cursor (not yet sent; a store
opened without a publisher drops the cursor, ``drop_cursor``, so a publisher switched off for
good holds nothing back, and one switched on again resends what is left, which Redis refuses
where it has it already: ``cluster.events.index_changes``). The store
trims a community every ``TRIM_EVERY`` changes, inside the writing transaction (a cheap indexed
delete); ``Store.trim_changes`` trims every community at once.

Each function takes the caller's connection, inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from dataclasses import dataclass
from typing import Any, Final, Literal, cast, get_args

from indexer.crypto import KeyRing
from smartgate.config import IndexConfig

ChangeKind = Literal[
    "person_enrolled",
    "person_replaced",
    "person_removed",
    "vehicle_added",
    "vehicle_replaced",
    "vehicle_removed",
]
CHANGE_KINDS: Final[tuple[ChangeKind, ...]] = get_args(ChangeKind)
#: Kinds after which holders of per-person state elsewhere must forget the subject.
REMOVALS: Final[frozenset[ChangeKind]] = frozenset({"person_removed", "vehicle_removed"})
SubjectKind = Literal["person", "vehicle"]
_PSEUDONYM_CONTEXT: Final = b"smartgate/index-change-subject/v1"

#: The cursor name of the Redis publisher: rows after it are never trimmed.
PUBLISHER: Final = "redis"
#: A community's log is trimmed inside every this-many-th change's transaction.
TRIM_EVERY: Final = 64
_NO_CURSOR: Final = 2**62
DAY_S: Final = 86_400.0


def pseudonym(keys: KeyRing, community: str, what: SubjectKind, subject: str) -> str:
    """The log's name for person id or plate ``subject`` of ``community``: 32 hex characters
    of HMAC-SHA256 under a key derived from ``keys``' current data key."""
    key = hmac.new(keys.keys[0], _PSEUDONYM_CONTEXT, hashlib.sha256).digest()
    message = f"{what}|{community}|{subject}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def subject_kind(kind: ChangeKind) -> SubjectKind:
    """Whether a change of ``kind`` names a person or a vehicle."""
    return "person" if kind.startswith("person_") else "vehicle"


@dataclass(frozen=True)
class Change:
    """One committed change: ``seq`` (store-wide, increasing), ``community``, ``kind``,
    ``subject`` (the ``pseudonym`` of a person id or a plate) and ``at`` (Unix time of the
    commit's caller)."""

    seq: int
    community: str
    kind: ChangeKind
    subject: str
    at: float

    def fields(self, store: str) -> dict[str, str]:
        """The Redis stream entry: ``seq``, ``kind``, ``id``, ``time`` and the ``store`` epoch
        (which store wrote it: a new data directory starts another sequence)."""
        return {
            "seq": str(self.seq),
            "kind": self.kind,
            "id": self.subject,
            "time": repr(self.at),
            "store": store,
        }

    @classmethod
    def from_fields(cls, community: str, fields: dict[str, str]) -> Change:
        """The change an entry written by ``fields`` describes; ``ValueError`` when it is not
        one (a foreign writer, a kind this version does not know)."""
        kind = fields.get("kind", "")
        if kind not in CHANGE_KINDS:
            raise ValueError(f"unknown index change kind {kind!r}")
        return cls(int(fields["seq"]), community, kind, fields["id"], float(fields["time"]))


@dataclass(frozen=True)
class Retention:
    """How long a community's changes are kept (``keep_s``) and how many at most
    (``keep_rows``); see the module docstring for what is always kept."""

    keep_s: float = 30 * DAY_S
    keep_rows: int = 10_000

    def __post_init__(self) -> None:
        if not self.keep_s > 0 or self.keep_rows < 1:
            raise ValueError(f"retention needs keep_s > 0 and keep_rows >= 1, got {self}")

    @classmethod
    def from_config(cls, config: IndexConfig) -> Retention:
        return cls(config.changes_keep_days * DAY_S, config.changes_keep_rows)


_COLUMNS: Final = "seq, community, kind, subject, at"


def _from_row(row: tuple[Any, ...]) -> Change:
    seq, community, kind, subject, at = row
    return Change(int(seq), str(community), cast(ChangeKind, kind), str(subject), float(at))


def record(
    con: sqlite3.Connection,
    community: str,
    kind: ChangeKind,
    subject: str,
    now: float,
    retention: Retention,
) -> int:
    """Append one change (inside the caller's transaction; ``subject``: the ``pseudonym``);
    returns its seq. Every ``TRIM_EVERY``-th seq also trims ``community``'s log."""
    if kind not in CHANGE_KINDS:
        raise ValueError(f"unknown change kind {kind!r}")
    seq = con.execute(
        "INSERT INTO changes (community, kind, subject, at) VALUES (?, ?, ?, ?)",
        (community, kind, subject, now),
    ).lastrowid
    if seq is None:  # cannot happen for an INSERT into a rowid table
        raise RuntimeError("SQLite returned no seq for a change")
    if seq % TRIM_EVERY == 0:
        trim(con, community, now, retention)
    return int(seq)


def after(con: sqlite3.Connection, seq: int, limit: int) -> list[Change]:
    """Up to ``limit`` changes of every community with a seq above ``seq``, in seq order."""
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
    ).fetchall()
    return [_from_row(r) for r in rows]


def count_after(con: sqlite3.Connection, seq: int) -> int:
    """How many changes have a seq above ``seq``."""
    return int(con.execute("SELECT count(*) FROM changes WHERE seq > ?", (seq,)).fetchone()[0])


def of_community(
    con: sqlite3.Connection, community: str, seq: int = 0, limit: int = 1000
) -> list[Change]:
    """Up to ``limit`` changes of ``community`` with a seq above ``seq``, in seq order."""
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM changes WHERE community = ? AND seq > ? ORDER BY seq LIMIT ?",
        (community, seq, limit),
    ).fetchall()
    return [_from_row(r) for r in rows]


def version(con: sqlite3.Connection, community: str) -> int:
    """``community``'s last seq (0: no change logged yet)."""
    row = con.execute("SELECT max(seq) FROM changes WHERE community = ?", (community,)).fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def cursor(con: sqlite3.Connection, name: str) -> int | None:
    """The last seq reader ``name`` has dealt with (None: it never started)."""
    row = con.execute("SELECT seq FROM change_cursors WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def set_cursor(con: sqlite3.Connection, name: str, seq: int) -> None:
    """Move reader ``name``'s cursor forward to ``seq`` (never back)."""
    con.execute(
        "INSERT INTO change_cursors (name, seq) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET seq = max(seq, excluded.seq)",
        (name, seq),
    )


def drop_cursor(con: sqlite3.Connection, name: str) -> None:
    """Forget reader ``name`` (it will not run again): its unsent rows are no longer kept."""
    con.execute("DELETE FROM change_cursors WHERE name = ?", (name,))


def epoch(con: sqlite3.Connection) -> str:
    """This store's random id, drawn when its log was created."""
    return str(con.execute("SELECT epoch FROM store_identity").fetchone()[0])


def trim(con: sqlite3.Connection, community: str | None, now: float, retention: Retention) -> int:
    """Delete ``community``'s (None: every community's) changes beyond ``retention``, keeping
    each community's latest change and what the publisher has not sent; returns how many."""
    communities = (
        [community]
        if community is not None
        else [str(r[0]) for r in con.execute("SELECT DISTINCT community FROM changes")]
    )
    sent = cursor(con, PUBLISHER)
    limit = _NO_CURSOR if sent is None else sent
    deleted = 0
    for c in communities:
        deleted += con.execute(
            "DELETE FROM changes WHERE community = :c AND seq <= :sent "
            "AND seq < (SELECT max(seq) FROM changes WHERE community = :c) "
            "AND (at < :cutoff OR seq <= coalesce((SELECT seq FROM changes WHERE community = :c "
            "ORDER BY seq DESC LIMIT 1 OFFSET :keep), -1))",
            {"c": c, "sent": limit, "cutoff": now - retention.keep_s, "keep": retention.keep_rows},
        ).rowcount
    return deleted
