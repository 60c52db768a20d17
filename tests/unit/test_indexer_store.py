"""The SQLite store: pragmas, schema versioning, constraints, encoding, atomicity."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer.store import DB_FILENAME, SCHEMA_VERSION, Enrolled, Store
from smartgate.errors import AlreadyExistsError, ConfigError, NotFoundError

DIM = 8


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data")
    yield s
    s.close()


def _enroll(store: Store, person_id: str, n: int = 2, *, replace: bool = False) -> Enrolled:
    return store.enroll(
        "c1",
        person_id,
        unit_rows(np.random.default_rng(len(person_id)), n),
        name="",
        role="resident",
        expires_at=None,
        replace=replace,
        now=1.0,
    )


def test_pragmas_and_schema(store: Store) -> None:
    assert store.path.name == DB_FILENAME and store.path.exists()
    with store._reading() as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert con.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "communities", "persons", "templates"} <= tables
    assert store.schema_version() == SCHEMA_VERSION


def test_reopen_keeps_version_and_data(tmp_path: Path) -> None:
    first = Store(tmp_path)
    first.create_community("c1", 1.0)
    first.close()
    again = Store(tmp_path)
    try:
        assert again.schema_version() == SCHEMA_VERSION
        assert again.communities() == ["c1"]
    finally:
        again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    con = sqlite3.connect(tmp_path / DB_FILENAME)
    con.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(tmp_path)


def test_embeddings_are_float32_little_endian(store: Store) -> None:
    done = _enroll(store, "p1", 3)
    with store._reading() as con:
        rows = con.execute("SELECT embedding, dim FROM templates ORDER BY id").fetchall()
    # Sealed at rest (indexer.crypto, tests/unit/test_crypto.py); the plaintext is float32 LE.
    ad = f"template|c1|{done.person.key}".encode()
    stored = np.stack([np.frombuffer(store.keys.open(blob, ad), dtype="<f4") for blob, _ in rows])
    assert [d for _, d in rows] == [DIM] * 3
    loaded = store.face_templates("c1", DIM)
    np.testing.assert_array_equal(loaded.embeddings, stored)
    np.testing.assert_array_equal(loaded.template_ids, done.template_ids)
    assert loaded.person_keys.tolist() == [done.person.key] * 3


def test_constraints_are_enforced_by_the_database(store: Store) -> None:
    _enroll(store, "p1")
    with store._reading() as con:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            con.execute(
                "INSERT INTO persons (community, person_id, role, created_at) "
                "VALUES ('c1', 'x', 'admin', 0)"
            )
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            con.execute(
                "INSERT INTO templates (person_key, community, embedding, dim, created_at) "
                "VALUES (9999, 'c1', zeroblob(32), 8, 0)"
            )
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            con.execute(
                "INSERT INTO persons (community, person_id, role, created_at) "
                "VALUES ('c1', 'p1', 'resident', 0)"
            )


def test_template_ids_only_grow(store: Store) -> None:
    a = _enroll(store, "p1").template_ids
    store.remove_person("c1", "p1")
    b = _enroll(store, "p1").template_ids
    assert b.min() > a.max()


def test_failed_transaction_rolls_back_everything(store: Store) -> None:
    with store._reading() as con:
        con.execute(
            "CREATE TRIGGER fail_second BEFORE INSERT ON templates "
            "WHEN (SELECT count(*) FROM templates WHERE person_key = NEW.person_key) >= 1 "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        _enroll(store, "p1", 2)
    with store._reading() as con:
        counts = [
            con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("communities", "persons", "templates")
        ]
        assert not con.in_transaction
    assert counts == [0, 0, 0]
    _enroll(store, "p1", 1)  # the connection is usable afterwards
    assert store.get_person("c1", "p1").template_count == 1


def test_errors_name_what_is_missing(store: Store) -> None:
    with pytest.raises(NotFoundError, match="community 'nope' does not exist"):
        store.get_person("nope", "p1")
    with pytest.raises(NotFoundError, match="community 'nope' does not exist"):
        store.remove_person("nope", "p1")
    store.create_community("c1", 1.0)
    with pytest.raises(AlreadyExistsError, match="'c1'"):
        store.create_community("c1", 1.0)
    with pytest.raises(NotFoundError, match="person 'p9' does not exist in community 'c1'"):
        store.get_person("c1", "p9")
