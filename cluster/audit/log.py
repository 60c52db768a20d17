"""``AuditLog``: an append-only, hash-chained record of who searched, read or changed what.

One SQLite file, ``audit.db`` under the data directory (WAL, ``synchronous=NORMAL``). Each
record holds ``seq`` (1, 2, 3 ... without gaps), ``time``, ``actor`` (the caller,
``cluster.security.principal``), ``method`` (the RPC), ``communities`` (``*`` for all),
``target`` (person, plate or event id), ``reason`` (the caller's), ``outcome`` (``OK`` or the
gRPC code name), ``detail`` (e.g. ``allow_lookalike``), ``prev_hash`` and ``hash``:
SHA-256 over the canonical JSON encoding of every other field and ``prev_hash`` (the first
record's ``prev_hash`` is 64 zeros).

Tamper evidence: triggers refuse UPDATE and DELETE, and ``verify`` recomputes the chain, so a
changed field, a deleted or inserted record and reordered records are all found (the first
broken ``seq`` is reported). Truncating the newest records cannot be seen from the file alone:
keep the ``head`` (``seq`` and ``hash`` that ``verify`` prints) somewhere else to compare.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from smartgate.checks import connect_wal, immediate, migrate
from smartgate.errors import ConfigError, InvalidInputError

DB_FILENAME: Final = "audit.db"
GENESIS: Final = "0" * 64
ALL_COMMUNITIES: Final = "*"
MAX_TEXT: Final = 1000

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            actor TEXT NOT NULL,
            method TEXT NOT NULL,
            communities TEXT NOT NULL,
            target TEXT NOT NULL,
            reason TEXT NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )""",
        "CREATE INDEX audit_by_time ON audit(time)",
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    ),
)

_COLUMNS: Final = (
    "seq, time, actor, method, communities, target, reason, outcome, detail, prev_hash, hash"
)


@dataclass(frozen=True)
class AuditRecord:
    """One audited call; ``communities`` is ``("*",)`` for every community."""

    seq: int
    time: float
    actor: str
    method: str
    communities: tuple[str, ...]
    target: str
    reason: str
    outcome: str
    detail: str
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "method": self.method,
            "communities": list(self.communities),
            "target": self.target,
            "reason": self.reason,
            "outcome": self.outcome,
            "detail": self.detail,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found: ``ok``, how many records were checked, the first broken ``seq``
    and why (``None`` when intact), and the head (last ``seq`` and its ``hash``)."""

    ok: bool
    records: int
    broken_seq: int | None
    problem: str | None
    head_seq: int
    head_hash: str


def record_hash(
    seq: int,
    t: float,
    actor: str,
    method: str,
    communities: str,
    target: str,
    reason: str,
    outcome: str,
    detail: str,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of the canonical encoding of one record's fields and ``prev_hash``."""
    canonical = json.dumps(
        [seq, float(t), actor, method, communities, target, reason, outcome, detail, prev_hash],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _row_hash(row: Sequence[Any], prev: str) -> str:
    seq, t, actor, method, communities, target, reason, outcome, detail = row[:9]
    return record_hash(
        int(seq), float(t), actor, method, communities, target, reason, outcome, detail, prev
    )


def _from_row(row: Sequence[Any]) -> AuditRecord:
    seq, t, actor, method, communities, target, reason, outcome, detail, prev, digest = row
    return AuditRecord(
        int(seq),
        float(t),
        str(actor),
        str(method),
        tuple(json.loads(communities)),
        str(target),
        str(reason),
        str(outcome),
        str(detail),
        str(prev),
        str(digest),
    )


def _text(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"audit {what} must be a string, got {type(value).__name__}")
    return value[:MAX_TEXT]


class AuditLog:
    """Appends records to ``data_dir/audit.db``. Thread-safe (one connection, one lock)."""

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / DB_FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = connect_wal(self.path)
        try:
            with self._transaction() as con:
                migrate(con, self.path, _MIGRATIONS)
        except BaseException:
            self._con.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._con.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._con) as con:
            yield con

    def append(
        self,
        *,
        actor: str,
        method: str,
        communities: Sequence[str],
        target: str = "",
        reason: str = "",
        outcome: str = "OK",
        detail: str = "",
        now: float | None = None,
    ) -> AuditRecord:
        """Add one record at the end of the chain and return it. An empty ``communities``
        means every community (recorded as ``*``)."""
        names = sorted({_text(c, "community") for c in communities}) or [ALL_COMMUNITIES]
        fields = (
            time.time() if now is None else float(now),
            _text(actor, "actor"),
            _text(method, "method"),
            json.dumps(names, ensure_ascii=False, separators=(",", ":")),
            _text(target, "target"),
            _text(reason, "reason"),
            _text(outcome, "outcome"),
            _text(detail, "detail"),
        )
        with self._transaction() as con:
            last = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
            digest = record_hash(seq, *fields, prev)
            con.execute(
                f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, *fields, prev, digest),
            )
        return _from_row((seq, *fields, prev, digest))

    def records(
        self, *, after_seq: int = 0, limit: int = 1000, method: str | None = None
    ) -> list[AuditRecord]:
        """Records with ``seq > after_seq`` (of ``method`` only, when given), oldest first."""
        with self._lock:
            return _select(self._con, after_seq, limit, method)


def _select(
    con: sqlite3.Connection, after_seq: int, limit: int, method: str | None
) -> list[AuditRecord]:
    where, args = "seq > ?", [after_seq]
    if method is not None:
        where += " AND method = ?"
        args.append(method)  # type: ignore[arg-type]
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM audit WHERE {where} ORDER BY seq LIMIT ?", (*args, limit)
    ).fetchall()
    return [_from_row(r) for r in rows]


@contextmanager
def _read_only(data_dir: Path | str) -> Iterator[sqlite3.Connection]:
    path = Path(data_dir) / DB_FILENAME
    if not path.exists():
        raise ConfigError(f"{path} does not exist: no audit log in {data_dir}")
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        yield con
    finally:
        con.close()


def read_records(
    data_dir: Path | str, *, after_seq: int = 0, limit: int = 1000, method: str | None = None
) -> list[AuditRecord]:
    """``AuditLog.records`` of ``data_dir/audit.db``, read-only (while a node writes it)."""
    with _read_only(data_dir) as con:
        return _select(con, after_seq, limit, method)


def verify(data_dir: Path | str) -> Verification:
    """Recompute the hash chain of ``data_dir/audit.db`` (read-only) from the first record."""
    expected_seq, prev, count = 1, GENESIS, 0
    with _read_only(data_dir) as con:
        cursor = con.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq")
        for row in cursor:
            seq = int(row[0])
            problem = None
            if seq != expected_seq:
                problem = f"expected record {expected_seq}, found {seq} (a record was removed)"
            elif row[9] != prev:
                problem = "prev_hash does not match the record before (removed or reordered)"
            elif _row_hash(row, prev) != row[10]:
                problem = "the hash does not match the record's fields (altered)"
            if problem is not None:
                return Verification(False, count, expected_seq, problem, count, prev)
            expected_seq, prev, count = seq + 1, str(row[10]), count + 1
    return Verification(True, count, None, None, count, prev)
