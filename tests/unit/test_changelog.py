"""The registry store's change log (``indexer.changelog``) on a real SQLite store: one row per
committed change, in the change's own transaction, increasing seqs, versions, keyed pseudonyms
of ids only (an erased person's id and name are in no file), bounded by trimming, and the
upgrade of a version-4 database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer import changelog
from indexer.changelog import PUBLISHER, TRIM_EVERY, Change, Retention, pseudonym
from indexer.crypto import KeyRing, new_key
from indexer.store import _MIGRATIONS, DB_FILENAME, SCHEMA_VERSION, Store
from smartgate.checks import connect_wal, immediate, migrate
from smartgate.errors import AlreadyExistsError, NotFoundError

DIM = 8
NAME = "Li Lei Zhang-Secretname"
OWNER = "Han Meimei Ownername"


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def open_store(path: Path, retention: Retention | None = None) -> Store:
    return Store(path, KeyRing([new_key()]), retention=retention)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "data")
    yield s
    s.close()


def enroll(store: Store, person: str, community: str = "c1", *, replace: bool = False) -> None:
    store.enroll(
        community,
        person,
        unit_rows(2, seed=len(person)),
        name=NAME,
        role="resident",
        expires_at=None,
        replace=replace,
        now=100.0,
    )


def add_vehicle(store: Store, plate: str, *, replace: bool = False, now: float = 100.0) -> None:
    store.add_vehicle(
        "c1", plate, role="resident", owner=OWNER, expires_at=None, replace=replace, now=now
    )


def kinds(store: Store, changes: list[Change]) -> list[tuple[str, str, str]]:
    """``(community, kind, id)`` of each change: the id whose pseudonym the subject is, among
    the ids these tests use."""
    ids = ["p1", "p2", "A12345", *(f"{p}{i:05d}" for p in "ABC" for i in range(100))]
    names = {
        pseudonym(store.keys, c, what, i): i
        for c in ("c1", "c2")
        for what in ("person", "vehicle")
        for i in ids
    }
    return [(c.community, c.kind, names.get(c.subject, "?")) for c in changes]


def test_every_write_use_case_logs_one_change_in_order(store: Store) -> None:
    enroll(store, "p1")
    enroll(store, "p1", replace=True)
    add_vehicle(store, "A12345")
    add_vehicle(store, "A12345", replace=True)
    store.remove_vehicle("c1", "A12345", now=101.0)
    store.remove_person("c1", "p1", now=102.0)
    enroll(store, "p2", community="c2")
    changes = store.changes_after(0)
    assert kinds(store, changes) == [
        ("c1", "person_enrolled", "p1"),
        ("c1", "person_replaced", "p1"),
        ("c1", "vehicle_added", "A12345"),
        ("c1", "vehicle_replaced", "A12345"),
        ("c1", "vehicle_removed", "A12345"),
        ("c1", "person_removed", "p1"),
        ("c2", "person_enrolled", "p2"),
    ]
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] >= 1
    assert [c.at for c in changes] == [100.0] * 4 + [101.0, 102.0, 100.0]
    assert store.changes_after(seqs[2], limit=2) == changes[3:5]
    assert store.community_version("c1") == seqs[5]
    assert store.community_version("c2") == seqs[6]
    assert store.community_version("nobody") == 0
    assert kinds(store, store.community_changes("c2")) == [("c2", "person_enrolled", "p2")]


def test_refused_writes_log_nothing(store: Store) -> None:
    enroll(store, "p1")
    before = store.changes_after(0)
    with pytest.raises(AlreadyExistsError):
        enroll(store, "p1")
    with pytest.raises(NotFoundError):
        store.remove_person("c1", "ghost")
    with pytest.raises(NotFoundError):
        store.remove_vehicle("c1", "B99999")
    with pytest.raises(NotFoundError):  # vehicles need an existing community
        store.add_vehicle(
            "c9", "B99999", role="resident", owner="", expires_at=None, replace=False, now=1.0
        )
    store.create_community("c3", 1.0)  # not a change of persons or vehicles
    assert store.changes_after(0) == before


def test_the_change_is_written_in_the_same_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log write that fails takes the change with it: nothing is committed without its row."""
    enroll(store, "p1")
    add_vehicle(store, "A12345")

    def broken(*args: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(changelog, "record", broken)
    with pytest.raises(sqlite3.OperationalError):
        enroll(store, "p2")
    with pytest.raises(sqlite3.OperationalError):
        store.remove_person("c1", "p1")
    with pytest.raises(sqlite3.OperationalError):
        store.remove_vehicle("c1", "A12345")
    monkeypatch.undo()
    with pytest.raises(NotFoundError):
        store.get_person("c1", "p2")
    assert store.get_person("c1", "p1").template_count == 2
    assert store.get_vehicle("c1", "A12345").owner == OWNER
    assert len(store.changes_after(0)) == 2


def test_listeners_hear_each_committed_change_only(store: Store) -> None:
    heard: list[int] = []
    store.add_change_listener(lambda: heard.append(store.community_version("c1")))
    enroll(store, "p1")
    with pytest.raises(AlreadyExistsError):
        enroll(store, "p1")
    store.remove_person("c1", "p1")
    assert heard == [c.seq for c in store.changes_after(0)]


def test_pseudonyms_only_an_erased_persons_id_and_name_are_in_no_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = open_store(data)
    person, plate = "p-erased-5c1d", "Z98765"
    enroll(store, person)
    add_vehicle(store, plate)
    store.remove_person("c1", person)
    store.remove_vehicle("c1", plate)
    refs = {
        pseudonym(store.keys, "c1", "person", person),
        pseudonym(store.keys, "c1", "vehicle", plate),
    }
    with store._reading() as con:
        rows = con.execute("SELECT * FROM changes").fetchall()
    assert {r[3] for r in rows} == refs and len(rows) == 4
    store.close()
    for path in data.glob(DB_FILENAME + "*"):
        blob = path.read_bytes()
        for needle in (person, plate, NAME, OWNER):
            assert needle.encode() not in blob, (path.name, needle)


def test_pseudonyms_are_keyed_and_name_one_subject() -> None:
    ring = KeyRing([new_key()])
    ref = pseudonym(ring, "c1", "person", "p1")
    assert len(ref) == 32 and int(ref, 16) >= 0
    assert ref == pseudonym(KeyRing(ring.keys), "c1", "person", "p1")  # same key, same name
    others = [
        pseudonym(ring, "c2", "person", "p1"),
        pseudonym(ring, "c1", "vehicle", "p1"),
        pseudonym(ring, "c1", "person", "p2"),
        pseudonym(KeyRing([new_key()]), "c1", "person", "p1"),
    ]
    assert ref not in others and len(set(others)) == len(others)


def test_trimming_keeps_the_latest_and_the_unsent(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data", Retention(keep_s=1000.0, keep_rows=3))
    try:
        store.create_community("c1", 1.0)
        for i in range(10):
            add_vehicle(store, f"A{i:05d}", now=100.0 + i)
        enroll(store, "p1", community="c2")  # at 100: old, but c2's latest
        seqs = [c.seq for c in store.changes_after(0)]
        assert store.trim_changes(now=150.0) == 7  # c1 beyond its 3 newest rows
        assert [c.seq for c in store.changes_after(0)] == seqs[7:]
        assert store.trim_changes(now=5000.0) == 2  # all old: each community keeps its latest
        assert [c.seq for c in store.changes_after(0)] == [seqs[9], seqs[10]]
        assert store.community_version("c1") == seqs[9]
        assert store.community_version("c2") == seqs[10]
        # What the publisher has not sent stays, however old.
        store.set_changes_cursor(PUBLISHER, seqs[10])
        for i in range(4):
            add_vehicle(store, f"B{i:05d}", now=200.0 + i)
        store.set_changes_cursor(PUBLISHER, store.community_version("c1") - 2)
        assert store.trim_changes(now=10_000.0) == 3  # B00002 is unsent, B00003 the latest
        left = store.changes_after(0)
        assert [k[2] for k in kinds(store, left) if k[0] == "c1"] == ["B00002", "B00003"]
        # Seqs are never reused after trimming, nor after a reopen.
        top = max(c.seq for c in left)
    finally:
        store.close()
    again = open_store(tmp_path / "data")
    try:
        add_vehicle(again, "C00000")
        assert again.community_version("c1") == top + 1
        assert again.changes_cursor(PUBLISHER) == top - 2
    finally:
        again.close()


def test_the_writing_transaction_trims_every_so_often(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data", Retention(keep_s=1e9, keep_rows=5))
    try:
        store.create_community("c1", 1.0)
        for i in range(TRIM_EVERY):
            add_vehicle(store, f"A{i:05d}")
        # The TRIM_EVERY-th seq trimmed c1 down to its 5 newest rows in its own transaction.
        assert len(store.community_changes("c1")) == 5
        assert store.community_version("c1") == TRIM_EVERY
    finally:
        store.close()


def test_cursor_only_moves_forward(store: Store) -> None:
    assert store.changes_cursor(PUBLISHER) is None
    store.set_changes_cursor(PUBLISHER, 5)
    store.set_changes_cursor(PUBLISHER, 3)
    assert store.changes_cursor(PUBLISHER) == 5


def test_a_version_4_database_is_upgraded_with_an_empty_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    con = connect_wal(data / DB_FILENAME, foreign_keys=True)
    with immediate(con):
        migrate(con, data / DB_FILENAME, _MIGRATIONS[:4])
        con.execute("INSERT INTO communities (id, created_at) VALUES ('c1', 1.0)")
    con.close()
    store = open_store(data)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 5
        assert store.changes_after(0) == [] and store.community_version("c1") == 0
        assert len(store.epoch()) == 16
        enroll(store, "p1")
        assert kinds(store, store.changes_after(0)) == [("c1", "person_enrolled", "p1")]
    finally:
        store.close()


def test_stream_fields_round_trip() -> None:
    change = Change(7, "小区-1", "person_removed", "p 1", 1700000000.25)
    fields = change.fields("abcd")
    assert fields == {
        "seq": "7",
        "kind": "person_removed",
        "id": "p 1",
        "time": "1700000000.25",
        "store": "abcd",
    }
    assert Change.from_fields("小区-1", fields) == change
    with pytest.raises(ValueError, match="unknown"):
        Change.from_fields("c1", {**fields, "kind": "person_renamed"})
    with pytest.raises(ValueError):
        Retention(keep_s=0.0)
