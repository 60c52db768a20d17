"""Small shared checks: caller-supplied text, and SQLite connections and schema migrations.

Used by the registry (``indexer``) and the event log (``cluster.events``) so both refuse the
same inputs with the same words and upgrade their databases the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from smartgate.errors import ConfigError, InvalidInputError


def check_text(value: object, what: str, max_length: int, *, required: bool = True) -> str:
    """``value`` as a printable string of at most ``max_length`` characters (non-blank when
    ``required``); ``InvalidInputError`` naming ``what`` otherwise."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidInputError(f"{what} must not be empty")
    if len(value) > max_length:
        raise InvalidInputError(f"{what} must be at most {max_length} characters, got {len(value)}")
    if not value.isprintable():
        raise InvalidInputError(f"{what} {value!r} holds control or non-printable characters")
    return value


def connect_wal(path: Path, *, foreign_keys: bool = False) -> sqlite3.Connection:
    """An autocommit connection (transactions are opened explicitly) to ``path`` in WAL mode,
    ``synchronous=NORMAL``, a 5 s busy timeout and optionally foreign keys on."""
    con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(f"{path}: cannot switch SQLite to WAL mode (got {mode})")
        con.execute("PRAGMA synchronous=NORMAL")
        if foreign_keys:
            con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        con.close()
        raise
    return con


def migrate(con: sqlite3.Connection, path: Path, migrations: Sequence[Sequence[str]]) -> None:
    """Bring the database at ``path`` to version ``len(migrations)`` inside the caller's
    transaction: version ``i + 1`` is ``migrations[i]``; a newer database is refused."""
    target = len(migrations)
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = con.execute("SELECT version FROM schema_version").fetchone()
    current = 0 if row is None else int(row[0])
    if current > target:
        raise ConfigError(
            f"{path} has schema version {current}, newer than this smartgate understands "
            f"({target}); upgrade smartgate or use another data dir"
        )
    for statements in migrations[current:]:
        for statement in statements:
            con.execute(statement)
    if row is None:
        con.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
    elif current != target:
        con.execute("UPDATE schema_version SET version = ?", (target,))


@contextmanager
def immediate(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``con`` inside ``BEGIN IMMEDIATE`` … ``COMMIT``; ``ROLLBACK`` on any error. The caller
    serialises writers (holds the store's lock)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
