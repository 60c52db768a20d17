"""Face snapshots (``indexer.snapshot``) and the registry's restore from snapshot plus log, on
real SQLite, real FAISS and real AES-GCM in ``tmp_path``, with seeded synthetic templates.

Every restore from a snapshot is compared with the full restore (every template unsealed from
the store) of the same data directory: same template ids, bit-equal vectors, same owners,
same persons.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from cluster.audit.commands import rotate_keys
from indexer import snapshot
from indexer.crypto import KeyRing, new_key
from indexer.face_index import FaceIndex, IndexPolicy, IndexStructure
from indexer.registry import FaceRegistry
from smartgate.config import IndexConfig, PrivacyConfig

DIM = 32
MANUAL = IndexConfig(snapshot_every_changes=0, snapshot_interval_s=0.0)  # close / explicit only
FULL = IndexConfig(snapshots=False)


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def needles(vectors: np.ndarray) -> list[bytes]:
    """Byte strings that would betray ``vectors`` ``(n, dim)`` on disk."""
    out: list[bytes] = []
    for row in np.asarray(vectors, np.float32):
        raw = row.astype("<f4").tobytes()
        out += [raw, row.astype("<f2").tobytes()]
        out += [raw[i : i + 16] for i in range(0, len(raw) - 16, 16)]
    return out


@pytest.fixture
def keys() -> KeyRing:
    return KeyRing([new_key()])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def open_registry(data: Path, keys: KeyRing, config: IndexConfig = MANUAL) -> FaceRegistry:
    return FaceRegistry(data, DIM, keys=keys, snapshots=config)


def state(reg: FaceRegistry, community: str) -> dict[str, Any]:
    """What a restore must reproduce: ids ascending, their vectors and owners, the persons."""
    c = reg._communities[community]
    ids, vectors = c.index.export()
    order = np.argsort(ids)
    ids, vectors = ids[order], vectors[order]
    persons = sorted(
        (p.key, p.person_id, p.name, p.role, p.template_count) for p in c.persons.values()
    )
    return {
        "ids": ids,
        "vectors": vectors,
        "owners": c.owners.lookup(ids),
        "persons": persons,
        "ntotal": c.index.ntotal,
    }


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    np.testing.assert_array_equal(a["ids"], b["ids"])
    assert a["vectors"].tobytes() == b["vectors"].tobytes()  # bit for bit
    np.testing.assert_array_equal(a["owners"], b["owners"])
    assert a["persons"] == b["persons"]
    assert a["ntotal"] == b["ntotal"] == len(a["ids"])


def full_restore(data: Path, keys: KeyRing, community: str) -> dict[str, Any]:
    with open_registry(data, keys, FULL) as reg:
        assert reg.restore_report(community).source == "store"
        return state(reg, community)


def enroll_many(reg: FaceRegistry, rng: np.random.Generator, prefix: str, n: int) -> None:
    for i in range(n):
        reg.enroll("c1", f"{prefix}{i}", unit_rows(rng, 1 + i % 3), name=f"N {prefix}{i}")


# -- the file -------------------------------------------------------------------------------


def test_round_trip_is_bit_exact_and_holds_no_plaintext(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    ids = np.arange(10, 60, dtype=np.int64) * 3
    owners = ids // 7
    vectors = unit_rows(rng, len(ids))
    path = snapshot.snapshot_path(tmp_path, "c1")
    header = snapshot.write_snapshot(
        path, keys, "c1", ids, owners, vectors, created_at=123.5, chunk_rows=7
    )
    assert (header.community, header.dim, header.count, header.chunks) == ("c1", DIM, 50, 8)
    loaded = snapshot.load_snapshot(path, keys, "c1", DIM)
    assert loaded.header == header and loaded.header.created_at == 123.5
    np.testing.assert_array_equal(loaded.template_ids, ids)
    np.testing.assert_array_equal(loaded.person_keys, owners)
    assert loaded.vectors.tobytes() == vectors.tobytes()
    data = path.read_bytes()
    assert not [n for n in needles(vectors) if n in data]
    assert path.stat().st_mode & 0o077 == 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    empty = snapshot.write_snapshot(
        path, keys, "c1", ids[:0], owners[:0], vectors[:0], chunk_rows=7
    )
    assert empty.count == 0 and len(snapshot.load_snapshot(path, keys, "c1", DIM).template_ids) == 0


def test_write_refuses_unsorted_or_mismatched_arrays(tmp_path: Path, keys: KeyRing) -> None:
    path = snapshot.snapshot_path(tmp_path, "c1")
    v = np.zeros((2, DIM), np.float32)
    with pytest.raises(ValueError, match="ascending"):
        snapshot.write_snapshot(path, keys, "c1", np.array([5, 3]), np.array([1, 1]), v)
    with pytest.raises(ValueError, match="disagree"):
        snapshot.write_snapshot(path, keys, "c1", np.array([1, 2, 3]), np.array([1, 1]), v)
    assert not path.exists()


def test_plan_restore_matches_ids_and_owners() -> None:
    plan = snapshot.plan_restore(
        np.array([1, 2, 4, 5, 9]),  # snapshot
        np.array([10, 10, 20, 20, 30]),
        np.array([1, 4, 5, 7, 8]),  # store: 2 and 9 removed, 7 and 8 added, 5 changed owner
        np.array([10, 20, 21, 40, 40]),
    )
    assert plan.from_snapshot.tolist() == [True, True, False, False, False]
    assert plan.snapshot_rows.tolist() == [0, 2, -1, -1, -1]
    assert plan.missing.tolist() == [5, 7, 8]
    assert plan.dropped == 3
    none = snapshot.plan_restore(
        np.empty(0, np.int64), np.empty(0, np.int64), np.array([3]), np.array([1])
    )
    assert none.missing.tolist() == [3] and none.dropped == 0


# -- restore --------------------------------------------------------------------------------


def test_the_index_exports_the_stored_vectors_bit_for_bit(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    with open_registry(tmp_path / "data", keys) as reg:
        enroll_many(reg, rng, "p", 8)
        reg.remove("c1", "p3")
        exported = state(reg, "c1")
        stored = reg.store.face_templates("c1", DIM)
    np.testing.assert_array_equal(exported["ids"], stored.template_ids)
    assert exported["vectors"].tobytes() == stored.embeddings.tobytes()
    np.testing.assert_array_equal(exported["owners"], stored.person_keys)


def test_restore_from_snapshot_plus_log_equals_full_restore(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    data = tmp_path / "data"
    with open_registry(data, keys) as reg:
        enroll_many(reg, rng, "p", 30)
        reg.enroll("c2", "other", unit_rows(rng, 2))
        assert reg.write_snapshot("c1")
        old = snapshot.snapshot_path(data, "c1").read_bytes()
        # The log since the snapshot: adds, replaces, removals.
        enroll_many(reg, rng, "q", 5)
        reg.enroll("c1", "p3", unit_rows(rng, 2), name="again", replace=True)
        reg.enroll("c1", "p4", unit_rows(rng, 1), replace=True)
        assert reg.remove("c1", "p7") == 2
        assert reg.remove("c1", "q1") == 2
        live = state(reg, "c1")
    # The close wrote a newer snapshot: put the old one back (what a crash would have left).
    snapshot.snapshot_path(data, "c1").write_bytes(old)
    with open_registry(data, keys) as reg:
        report = reg.restore_report("c1")
        restored = state(reg, "c1")
        assert reg.restore_report("c2").source == "snapshot"
    assert report.source == "snapshot"
    # Snapshot rows the store no longer has: p3's, p4's and p7's old templates (1 + 2 + 2).
    assert report.dropped == 5
    # Unsealed from the store: q0..q4 but q1 (1 + 3 + 1 + 2), p3's new 2, p4's new 1.
    assert report.from_store == 10
    assert report.templates == report.from_snapshot + report.from_store == len(live["ids"])
    assert_same(restored, live)
    assert_same(restored, full_restore(data, keys, "c1"))


@pytest.mark.parametrize("persons", [20, 140])  # 140: more runs than added one by one
def test_restore_with_scattered_removals_and_additions(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator, persons: int
) -> None:
    data = tmp_path / "data"
    with open_registry(data, keys) as reg:
        for i in range(persons):
            reg.enroll("c1", f"p{i}", unit_rows(rng, 1))
        assert reg.write_snapshot("c1")
        old = snapshot.snapshot_path(data, "c1").read_bytes()
        for i in range(0, persons, 2):
            reg.remove("c1", f"p{i}")
        for i in range(0, persons, 4):
            reg.enroll("c1", f"p{i}", unit_rows(rng, 1))
        live = state(reg, "c1")
    snapshot.snapshot_path(data, "c1").write_bytes(old)
    with open_registry(data, keys) as reg:
        report = reg.restore_report("c1")
        restored = state(reg, "c1")
    assert (report.source, report.dropped, report.from_store) == (
        "snapshot",
        persons // 2,
        persons // 4,
    )
    assert_same(restored, live)
    assert_same(restored, full_restore(data, keys, "c1"))


def test_an_exact_snapshot_is_used_whole_and_not_rewritten(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    data = tmp_path / "data"
    with open_registry(data, keys) as reg:
        enroll_many(reg, rng, "p", 12)
    path = snapshot.snapshot_path(data, "c1")
    written = path.read_bytes()
    with open_registry(data, keys) as reg:
        report = reg.restore_report("c1")
        assert (report.source, report.from_store, report.dropped) == ("snapshot", 0, 0)
        assert report.from_snapshot == report.templates == 1 * 4 + 2 * 4 + 3 * 4
        hits = reg.identify("c1", reg.person_embeddings("c1", "p5"), 0.5, 0.05)
        assert hits[0].person is not None and hits[0].person.person_id == "p5"
    assert path.read_bytes() == written  # nothing changed: the close left it alone
    assert_same(state_of_dir(data, keys), full_restore(data, keys, "c1"))


def state_of_dir(data: Path, keys: KeyRing) -> dict[str, Any]:
    with open_registry(data, keys) as reg:
        return state(reg, "c1")


Damage = Callable[[Path, Path, KeyRing], None]


def _flip_last_chunk_byte(path: Path, data: Path, keys: KeyRing) -> None:
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x40
    path.write_bytes(bytes(raw))


def _truncate(path: Path, data: Path, keys: KeyRing) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _drop_last_chunk(path: Path, data: Path, keys: KeyRing) -> None:
    loaded = snapshot.load_snapshot(path, keys, "c1", DIM)
    ids, owners, vectors = loaded.template_ids, loaded.person_keys, loaded.vectors
    snapshot.write_snapshot(path, keys, "c1", ids, owners, vectors, chunk_rows=4)
    raw = path.read_bytes()
    at = len(snapshot.MAGIC) + 4 + int.from_bytes(raw[8:12], "little")
    last = at
    while at < len(raw):  # walk the chunks: u32 rows | u32 length | blob
        last = at
        at += 8 + int.from_bytes(raw[at + 4 : at + 8], "little")
    path.write_bytes(raw[:last])  # ends cleanly after a whole chunk, one chunk short


def _trailing_bytes(path: Path, data: Path, keys: KeyRing) -> None:
    path.write_bytes(path.read_bytes() + b"\0" * 8)


def _bad_magic(path: Path, data: Path, keys: KeyRing) -> None:
    path.write_bytes(b"X" + path.read_bytes()[1:])


def _header_altered(path: Path, data: Path, keys: KeyRing) -> None:
    raw = path.read_bytes()
    head = snapshot.read_header_of(path).encode()
    altered = head.replace(b'"created_at": ', b'"created_at": 1')  # same length +1: re-framed
    length = len(altered).to_bytes(4, "little")
    body = raw[len(snapshot.MAGIC) + 4 + len(head) :]
    path.write_bytes(snapshot.MAGIC + length + altered + body)


def _foreign_key(path: Path, data: Path, keys: KeyRing) -> None:
    loaded = snapshot.load_snapshot(path, keys, "c1", DIM)
    other = KeyRing([new_key()])
    snapshot.write_snapshot(
        path, other, "c1", loaded.template_ids, loaded.person_keys, loaded.vectors
    )


def _wrong_dim(path: Path, data: Path, keys: KeyRing) -> None:
    loaded = snapshot.load_snapshot(path, keys, "c1", DIM)
    wide = np.repeat(loaded.vectors, 2, axis=1) / np.sqrt(2)
    snapshot.write_snapshot(path, keys, "c1", loaded.template_ids, loaded.person_keys, wide)


def _other_community(path: Path, data: Path, keys: KeyRing) -> None:
    path.write_bytes(snapshot.snapshot_path(data, "c2").read_bytes())


def _garbage(path: Path, data: Path, keys: KeyRing) -> None:
    path.write_bytes(np.random.default_rng(1).bytes(5000))


@pytest.mark.parametrize(
    "damage",
    [
        _flip_last_chunk_byte,
        _truncate,
        _drop_last_chunk,
        _trailing_bytes,
        _bad_magic,
        _header_altered,
        _foreign_key,
        _wrong_dim,
        _other_community,
        _garbage,
    ],
)
def test_a_bad_snapshot_is_ignored_with_a_warning(
    tmp_path: Path,
    keys: KeyRing,
    rng: np.random.Generator,
    damage: Damage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = tmp_path / "data"
    with open_registry(data, keys) as reg:
        enroll_many(reg, rng, "p", 9)
        reg.enroll("c2", "x", unit_rows(rng, 3))
    path = snapshot.snapshot_path(data, "c1")
    damage(path, data, keys)
    caplog.set_level(logging.WARNING, logger="indexer.snapshot")
    with open_registry(data, keys) as reg:
        assert reg.restore_report("c1").source == "store"
        assert reg.restore_report("c2").source == "snapshot"
        restored = state(reg, "c1")
    assert any("ignored" in r.getMessage() for r in caplog.records), caplog.text
    assert_same(restored, full_restore(data, keys, "c1"))
    # The close replaced the bad file with a good one.
    assert snapshot.load_snapshot(path, keys, "c1", DIM).header.count == len(restored["ids"])


def test_snapshots_off_neither_reads_nor_writes(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    data = tmp_path / "data"
    with open_registry(data, keys, FULL) as reg:
        enroll_many(reg, rng, "p", 4)
    assert not snapshot.snapshot_dir(data).exists()
    with open_registry(data, keys) as reg:
        assert reg.restore_report("c1").source == "store"
    with open_registry(data, keys, FULL) as reg:
        assert reg.restore_report("c1").source == "store"
        reg.create_community("c9")
        assert reg.restore_report("c9").source == "new"


# -- when snapshots are written --------------------------------------------------------------


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_background_snapshot_after_n_changes(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    data = tmp_path / "data"
    path = snapshot.snapshot_path(data, "c1")
    with open_registry(data, keys, IndexConfig(snapshot_every_changes=6)) as reg:
        reg.enroll("c1", "a", unit_rows(rng, 3))
        reg.enroll("c1", "b", unit_rows(rng, 2))
        time.sleep(0.3)
        assert not path.exists()  # 5 changes: not due
        reg.enroll("c1", "c", unit_rows(rng, 1))
        _wait_for(path.exists)
        assert snapshot.load_snapshot(path, keys, "c1", DIM).header.count == 6


def test_background_snapshot_after_an_interval(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    data = tmp_path / "data"
    path = snapshot.snapshot_path(data, "c1")
    config = IndexConfig(snapshot_every_changes=0, snapshot_interval_s=0.4)
    with open_registry(data, keys, config) as reg:
        reg.enroll("c1", "a", unit_rows(rng, 2))
        started = time.monotonic()
        _wait_for(path.exists)
        assert time.monotonic() - started >= 0.3
        assert snapshot.load_snapshot(path, keys, "c1", DIM).header.count == 2


def test_snapshots_while_writers_and_searches_run_stay_exact(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    data = tmp_path / "data"
    stop = threading.Event()
    errors: list[BaseException] = []
    with open_registry(data, keys, IndexConfig(snapshot_every_changes=3)) as reg:
        enroll_many(reg, rng, "base", 10)
        probe = reg.person_embeddings("c1", "base2")

        def searcher() -> None:
            try:
                while not stop.is_set():
                    assert reg.identify("c1", probe, 0.5, 0.05)[0].person is not None
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=searcher)
        thread.start()
        local = np.random.default_rng(3)
        path = snapshot.snapshot_path(data, "c1")
        kept = b""
        for i in range(40):
            reg.enroll("c1", f"w{i}", unit_rows(local, 1 + i % 2))
            if i % 3 == 2:
                reg.remove("c1", f"w{i - 1}")  # deletes the snapshot
            if i % 10 == 0:
                reg.write_snapshot("c1")
            if i == 31:
                _wait_for(path.exists)  # the background writer's, after the last removal
                kept = path.read_bytes()
        stop.set()
        thread.join()
        live = state(reg, "c1")
    assert not errors
    path.write_bytes(kept)  # a snapshot of some moment: with the log since, still exact
    with open_registry(data, keys) as reg:
        assert reg.restore_report("c1").source == "snapshot"
        assert reg.restore_report("c1").from_store > 0
        restored = state(reg, "c1")
    assert_same(restored, live)
    assert_same(restored, full_restore(data, keys, "c1"))


# -- erasure and key rotation ------------------------------------------------------------------


def test_remove_deletes_the_snapshot_before_it_returns(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    data = tmp_path / "data"
    path = snapshot.snapshot_path(data, "c1")
    with open_registry(data, keys) as reg:
        enroll_many(reg, rng, "p", 6)
        gone = reg.person_embeddings("c1", "p2")
        assert reg.write_snapshot("c1") and path.exists()
        assert gone.tobytes()[:64] not in path.read_bytes()  # sealed, not readable
        reg.remove("c1", "p2")
        assert not path.exists()  # no snapshot outlives the erasure
    loaded = snapshot.load_snapshot(path, keys, "c1", DIM)  # rewritten by the close
    assert not any(v.tobytes() == g.tobytes() for v in loaded.vectors for g in gone)
    assert len(loaded.template_ids) == sum(1 + i % 3 for i in range(6) if i != 2)


def test_a_snapshot_exported_before_a_removal_is_not_published(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    path = snapshot.snapshot_path(data, "c1")
    with open_registry(data, keys) as reg:
        enroll_many(reg, rng, "p", 5)
        gone = reg.person_embeddings("c1", "p1")
        real_write = snapshot.write_temp

        def write_then_race(*args: Any, **kw: Any) -> Path:
            tmp = real_write(*args, **kw)  # sealed with p1 inside ...
            reg.remove("c1", "p1")  # ... when the erasure comes
            return tmp

        monkeypatch.setattr(snapshot, "write_temp", write_then_race)
        assert not reg.write_snapshot("c1")
        monkeypatch.setattr(snapshot, "write_temp", real_write)
        assert not path.exists()
        assert not list(snapshot.snapshot_dir(data).glob(".*.tmp"))
        assert reg.write_snapshot("c1")
    loaded = snapshot.load_snapshot(path, keys, "c1", DIM)
    assert not any(v.tobytes() == g.tobytes() for v in loaded.vectors for g in gone)


def test_key_rotation_deletes_snapshots(tmp_path: Path, rng: np.random.Generator) -> None:
    data = tmp_path / "data"
    privacy = PrivacyConfig(key_file=tmp_path / "keys" / "data.key")
    old = KeyRing.from_config(privacy)
    with open_registry(data, old) as reg:
        enroll_many(reg, rng, "p", 3)
        reg.enroll("c2", "x", unit_rows(rng, 1))
    assert len(list(snapshot.snapshot_dir(data).iterdir())) == 2
    report = rotate_keys(data, privacy)
    assert report.snapshots == 2 and not snapshot.snapshot_dir(data).exists()
    new = KeyRing.from_config(privacy)
    with open_registry(data, new) as reg:
        assert reg.restore_report("c1").source == "store"
    with open_registry(data, new) as reg:
        assert reg.restore_report("c1").source == "snapshot"  # written under the new key


def test_index_config_from_the_environment_and_its_checks() -> None:
    from smartgate.config import load_config
    from smartgate.errors import ConfigError

    environ = {"SMARTGATE_INDEX__SNAPSHOT_EVERY_CHANGES": "5", "SMARTGATE_INDEX__SNAPSHOTS": "off"}
    config = load_config(environ=environ)
    assert config.index == IndexConfig(snapshots=False, snapshot_every_changes=5)
    with pytest.raises(ConfigError, match="snapshot_interval_s"):
        IndexConfig(snapshot_interval_s=-1)


# -- the saved FAISS structure (pq) ------------------------------------------------------------

#: pq from 200 templates; 2 x k candidates re-scored, so the result depends on the PQ codes (and
#: a restore that trained or encoded anything differently would show).
PQ = IndexPolicy(exact_below=200, pq_rerank=2)
K = 10


def open_pq(data: Path, keys: KeyRing, policy: IndexPolicy = PQ) -> FaceRegistry:
    return FaceRegistry(data, DIM, policy=policy, keys=keys, snapshots=MANUAL)


def index_of(reg: FaceRegistry, community: str = "c1") -> FaceIndex:
    return reg._communities[community].index


def rebuild_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "face-index-rebuild"]


def pq_community(data: Path, keys: KeyRing, rng: np.random.Generator) -> None:
    """A pq community of 600 templates, p5's 3 erased (tombstones), and its snapshot, written
    with the structure."""
    with open_pq(data, keys) as reg:
        for i in range(300):
            reg.enroll("c1", f"p{i}", unit_rows(rng, 1 + i % 3))
        index = index_of(reg)
        assert index.wait_rebuild(30) and index.kind == "pq" and index.ntotal == 600
        reg.remove("c1", "p5")
        assert index.tombstones == 3 and not index.rebuilding
        assert reg.write_snapshot("c1")


def test_a_structure_round_trips_sealed(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    ids = np.arange(1, 41, dtype=np.int64)
    vectors = unit_rows(rng, 40)
    pq = faiss.IndexPQFastScan(DIM, 32, 4, faiss.METRIC_INNER_PRODUCT)
    pq.train(unit_rows(rng, 256))
    pq.add(vectors)
    row_ids = np.concatenate([ids[:10], [999], ids[10:]])  # a dead row among them
    data = faiss.serialize_index(pq)
    structure = IndexStructure("pq", row_ids, data)
    path = snapshot.snapshot_path(tmp_path, "c1")
    header = snapshot.write_snapshot(
        path, keys, "c1", ids, ids, vectors, structure=structure, structure_chunk_bytes=1000
    )
    assert header.version == snapshot.FORMAT_VERSION == 2
    info = snapshot.StructureInfo.parse(header.structure or {})
    assert (info.kind, info.rows, info.bytes) == ("pq", 41, len(data))
    assert info.chunks == -(-(41 * 8 + len(data)) // 1000) > 1
    loaded = snapshot.load_snapshot(path, keys, "c1", DIM)
    assert loaded.structure is not None and loaded.structure.kind == "pq"
    np.testing.assert_array_equal(loaded.structure.row_ids, row_ids)
    assert loaded.structure.data.tobytes() == data.tobytes()
    raw = path.read_bytes()
    assert data.tobytes()[-256:] not in raw and row_ids.astype("<i8").tobytes() not in raw
    flat = snapshot.write_snapshot(path, keys, "c1", ids, ids, vectors)
    assert (
        flat.structure is None and snapshot.load_snapshot(path, keys, "c1", DIM).structure is None
    )


@pytest.mark.parametrize("log", [False, True])
def test_a_pq_snapshot_reopens_as_pq_at_once_with_the_same_searches(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator, log: bool
) -> None:
    data = tmp_path / "data"
    with open_pq(data, keys) as reg:
        for i in range(300):
            reg.enroll("c1", f"p{i}", unit_rows(rng, 1 + i % 3))
        index = index_of(reg)
        assert index.wait_rebuild(30) and index.kind == "pq" and index.tombstones == 0
        assert reg.write_snapshot("c1")
        old = snapshot.snapshot_path(data, "c1").read_bytes()
        stored = reg.store.face_templates("c1", DIM).embeddings
        queries = np.concatenate([stored[::30][:20], unit_rows(rng, 20)])
        if log:  # after the snapshot: adds, replacements, removals (of snapshot rows)
            for i in range(12):
                reg.enroll("c1", f"q{i}", unit_rows(rng, 2))
            reg.enroll("c1", "p7", unit_rows(rng, 2), replace=True)
            reg.enroll("c1", "p8", unit_rows(rng, 1), replace=True)
            assert reg.remove("c1", "p11") == 3
        assert index.kind == "pq" and not index.rebuilding
        live_sims, live_ids = index.search(queries, K)  # the saved index (plus the log)
        live_faiss = faiss.serialize_index(index._rows.index).tobytes()
        live = state(reg, "c1")
        # The comparison can fail: pq's answers are not the exact ones here.
        exact = np.argsort(-(queries @ live["vectors"].T), axis=1)[:, :K]
        assert not np.array_equal(live["ids"][exact], live_ids)
    snapshot.snapshot_path(data, "c1").write_bytes(old)  # the snapshot before the log
    before = len(rebuild_threads())
    with open_pq(data, keys) as reg:
        report = reg.restore_report("c1")
        index = index_of(reg)
        assert (report.source, report.structure) == ("snapshot", True)
        assert (report.from_store, report.dropped) == ((24 + 3, 3 + 2 + 3) if log else (0, 0))
        assert index.kind == "pq" and not index.rebuilding
        assert len(rebuild_threads()) == before
        sims, ids = index.search(queries, K)
        np.testing.assert_array_equal(ids, live_ids)
        assert sims.tobytes() == live_sims.tobytes()
        assert faiss.serialize_index(index._rows.index).tobytes() == live_faiss
        assert index.tombstones == (8 if log else 0)
        restored = state(reg, "c1")
        hit = reg.identify("c1", reg.person_embeddings("c1", "p20")[:1], 0.5, 0.05)[0]
        assert hit.person is not None and hit.person.person_id == "p20"
    assert_same(restored, live)
    assert_same(restored, full_restore(data, keys, "c1"))


def unpacked_codes(index: Any) -> np.ndarray:
    """Every code slot of a fast-scan ``index``, the unused tail of its last block too:
    ``(slots, code_size)`` uint8, in the encoder's layout."""
    packer = index.get_CodePacker()
    slots = index.codes.size() // packer.block_size * packer.nvec
    out = np.zeros((slots, packer.code_size), np.uint8)
    for row in range(slots):
        packer.unpack_1_c(index.codes.get(), row, faiss.swig_ptr(out[row]))
    return out


def test_a_saved_structure_holds_no_code_of_a_removed_template(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    data = tmp_path / "data"
    with open_pq(data, keys) as reg:
        for i in range(300):
            reg.enroll("c1", f"p{i}", unit_rows(rng, 1 + i % 3))
        index = index_of(reg)
        assert index.wait_rebuild(30) and index.kind == "pq"
        pq = index._rows.index
        # The layout compared is the encoder's (so the check below can fail).
        encoded = pq.pq.compute_codes(index._rows.vectors())
        np.testing.assert_array_equal(unpacked_codes(pq)[:600], encoded)
        gone = np.concatenate([reg.person_embeddings("c1", f"p{i}") for i in (5, 6, 40)])
        gone_codes = pq.pq.compute_codes(gone)
        for i in (5, 6, 40):  # erasures: tombstones in the live index, their codes with them
            reg.remove("c1", f"p{i}")
        assert index.tombstones == 6 and bool(
            (unpacked_codes(pq)[:, None] == gone_codes[None]).all(2).any()
        )
        assert reg.write_snapshot("c1")
        live_ids = state(reg, "c1")["ids"]
    saved = _saved(snapshot.snapshot_path(data, "c1"), keys)
    np.testing.assert_array_equal(np.sort(saved.row_ids), live_ids)
    structure = faiss.deserialize_index(saved.data)
    slots = unpacked_codes(structure)
    assert structure.ntotal == len(live_ids) == 594 and len(slots) == 19 * 32
    assert not bool((slots[:, None] == gone_codes[None]).all(2).any())
    assert not slots[594:].any()  # the last block's unused tail zeroed
    with open_pq(data, keys) as reg:
        index = index_of(reg)
        assert reg.restore_report("c1").structure and index.kind == "pq"
        assert index.tombstones == 0
        stored = reg.store.face_templates("c1", DIM)
        sims, ids = index.search(stored.embeddings, 1)  # codes, vectors and ids line up
        np.testing.assert_array_equal(ids[:, 0], stored.template_ids)
        np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)


def _rewrite(path: Path, keys: KeyRing, structure: IndexStructure) -> None:
    """The snapshot's rows again, with ``structure``."""
    loaded = snapshot.load_snapshot(path, keys, "c1", DIM)
    ids, owners, vectors = loaded.template_ids, loaded.person_keys, loaded.vectors
    snapshot.write_snapshot(path, keys, "c1", ids, owners, vectors, structure=structure)


def _saved(path: Path, keys: KeyRing) -> IndexStructure:
    structure = snapshot.load_snapshot(path, keys, "c1", DIM).structure
    assert structure is not None
    return structure


def _last_chunk(raw: bytes) -> int:
    """Where the file's last chunk (u32 | u32 length | blob) starts."""
    at = len(snapshot.MAGIC) + 4 + int.from_bytes(raw[8:12], "little")
    last = at
    while at < len(raw):
        last = at
        at += 8 + int.from_bytes(raw[at + 4 : at + 8], "little")
    return last


def _s_flip_byte(path: Path, keys: KeyRing) -> None:
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # in the last structure chunk's tag
    path.write_bytes(bytes(raw))


def _s_truncated(path: Path, keys: KeyRing) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _s_chunk_dropped(path: Path, keys: KeyRing) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: _last_chunk(raw)])  # the rows whole, the structure gone


def _s_trailing(path: Path, keys: KeyRing) -> None:
    path.write_bytes(path.read_bytes() + b"\0")


def _s_checksum(path: Path, keys: KeyRing) -> None:
    """A structure byte changed and the chunk sealed again (as only the key holder can)."""
    raw = path.read_bytes()
    encoded = snapshot.read_header_of(path).encode()
    at = _last_chunk(raw)
    ad = snapshot._structure_ad(encoded, 0)
    plain = bytearray(keys.open(raw[at + 8 :], ad))
    plain[-1] ^= 0x01
    blob = keys.seal(bytes(plain), ad)
    path.write_bytes(raw[:at] + raw[at : at + 4] + len(blob).to_bytes(4, "little") + blob)


def _s_other_kind(path: Path, keys: KeyRing) -> None:
    saved = _saved(path, keys)
    _rewrite(path, keys, IndexStructure("hnsw", saved.row_ids, saved.data))


def _s_not_fast_scan(path: Path, keys: KeyRing) -> None:
    saved = _saved(path, keys)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(np.zeros((len(saved.row_ids), DIM), np.float32))
    _rewrite(path, keys, IndexStructure("pq", saved.row_ids, faiss.serialize_index(flat)))


def _s_other_dim(path: Path, keys: KeyRing) -> None:
    saved = _saved(path, keys)
    rng = np.random.default_rng(5)
    narrow = faiss.IndexPQFastScan(16, 16, 4, faiss.METRIC_INNER_PRODUCT)
    narrow.train(unit_rows(rng, 512, 16))
    narrow.add(unit_rows(rng, len(saved.row_ids), 16))
    _rewrite(path, keys, IndexStructure("pq", saved.row_ids, faiss.serialize_index(narrow)))


def _s_other_rows(path: Path, keys: KeyRing) -> None:
    saved = _saved(path, keys)
    row_ids = saved.row_ids.copy()
    row_ids[100] = 10**9  # a template of the snapshot is no row of it
    _rewrite(path, keys, IndexStructure("pq", row_ids, saved.data))


def _s_row_count(path: Path, keys: KeyRing) -> None:
    saved = _saved(path, keys)
    _rewrite(path, keys, IndexStructure("pq", np.append(saved.row_ids, 10**9), saved.data))


def _s_repeated_rows(path: Path, keys: KeyRing) -> None:
    saved = _saved(path, keys)
    row_ids = saved.row_ids.copy()
    row_ids[1] = row_ids[0]
    _rewrite(path, keys, IndexStructure("pq", row_ids, saved.data))


def _s_not_faiss(path: Path, keys: KeyRing) -> None:
    saved = _saved(path, keys)
    junk = np.frombuffer(np.random.default_rng(2).bytes(4000), np.uint8)
    _rewrite(path, keys, IndexStructure("pq", saved.row_ids, junk))


def _s_format(path: Path, keys: KeyRing) -> None:
    saved = _saved(path, keys)
    real = snapshot.STRUCTURE_FORMAT
    snapshot.STRUCTURE_FORMAT = 99  # type: ignore[misc]  # a newer writer's
    try:
        _rewrite(path, keys, saved)
    finally:
        snapshot.STRUCTURE_FORMAT = real  # type: ignore[misc]


@pytest.mark.parametrize(
    "damage",
    [
        _s_flip_byte,
        _s_truncated,
        _s_chunk_dropped,
        _s_trailing,
        _s_checksum,
        _s_other_kind,
        _s_not_fast_scan,
        _s_other_dim,
        _s_other_rows,
        _s_row_count,
        _s_repeated_rows,
        _s_not_faiss,
        _s_format,
    ],
)
def test_a_bad_structure_is_ignored_and_the_index_rebuilt_behind(
    tmp_path: Path,
    keys: KeyRing,
    rng: np.random.Generator,
    damage: Callable[[Path, KeyRing], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = tmp_path / "data"
    pq_community(data, keys, rng)
    path = snapshot.snapshot_path(data, "c1")
    damage(path, keys)
    caplog.set_level(logging.INFO)
    with open_pq(data, keys) as reg:
        report = reg.restore_report("c1")
        index = index_of(reg)
        assert (report.source, report.structure, report.from_snapshot) == ("snapshot", False, 597)
        assert index.kind == "flat" and index.tombstones == 0  # exact at once ...
        assert any(
            "structure" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records
        ), caplog.text
        assert index.wait_rebuild(30) and index.kind == "pq"  # ... and pq behind, as before
        restored = state(reg, "c1")
    assert_same(restored, full_restore(data, keys, "c1"))
    assert _saved(path, keys).kind == "pq"  # the close wrote a good one


@pytest.mark.parametrize(
    ("policy", "kind"),
    [
        (IndexPolicy(exact_below=200, approximate="hnsw"), "hnsw"),  # another kind wanted
        (IndexPolicy(exact_below=200, pq_m=8), "pq"),  # other sub-quantizers
        (IndexPolicy(exact_below=5000), "flat"),  # exact wanted now
    ],
)
def test_a_structure_the_policy_does_not_want_is_not_used(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator, policy: IndexPolicy, kind: str
) -> None:
    data = tmp_path / "data"
    pq_community(data, keys, rng)
    with open_pq(data, keys, policy) as reg:
        index = index_of(reg)
        assert not reg.restore_report("c1").structure and index.kind == "flat"
        assert index.wait_rebuild(30) and index.kind == kind
        restored = state(reg, "c1")
    assert_same(restored, full_restore(data, keys, "c1"))


def test_a_version_1_snapshot_still_loads(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    data = tmp_path / "data"
    pq_community(data, keys, rng)
    path = snapshot.snapshot_path(data, "c1")
    loaded = snapshot.load_snapshot(path, keys, "c1", DIM)
    # Written as the version 1 writer did: no structure in the header, rows' chunks only.
    header = dataclasses.replace(loaded.header, version=1, structure=None, chunk_rows=100)
    encoded = header.encode()
    assert b"structure" not in encoded
    out = snapshot.MAGIC + len(encoded).to_bytes(4, "little") + encoded
    for index, lo in enumerate(range(0, header.count, 100)):
        hi = min(header.count, lo + 100)
        plain = b"".join(
            a[lo:hi].astype(a.dtype.newbyteorder("<")).tobytes()
            for a in (loaded.template_ids, loaded.person_keys, loaded.vectors)
        )
        blob = keys.seal(plain, snapshot._chunk_ad(encoded, index))
        out += (hi - lo).to_bytes(4, "little") + len(blob).to_bytes(4, "little") + blob
    path.write_bytes(out)
    old = snapshot.load_snapshot(path, keys, "c1", DIM)
    assert old.header.version == 1 and old.structure is None
    assert old.vectors.tobytes() == loaded.vectors.tobytes()
    with open_pq(data, keys) as reg:
        report = reg.restore_report("c1")
        assert (report.source, report.from_snapshot, report.structure) == ("snapshot", 597, False)
        assert index_of(reg).kind == "flat"
        assert index_of(reg).wait_rebuild(30) and index_of(reg).kind == "pq"
        restored = state(reg, "c1")
    assert_same(restored, full_restore(data, keys, "c1"))
    assert snapshot.read_header_of(path).version == 2  # rewritten by the close
