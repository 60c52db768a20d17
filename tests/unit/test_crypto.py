"""Encryption at rest (``indexer.crypto``) and where it is used: the registry store, the
strangers file, event thumbnails, plaintext migration and key rotation, on real SQLite files.

The scans read every byte of every file under the data directory (``-wal`` files included)
and look for the stored embeddings as float32, as float16 and as 16-byte windows of the
float32 bytes, and for the thumbnail JPEGs."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cluster.audit.commands import rotate_keys
from cluster.events.model import make_event
from cluster.events.store import EventStore
from indexer import strangers as strangers_mod
from indexer.crypto import OVERHEAD, KeyRing, key_id, new_key, parse_keys, write_key_file
from indexer.store import DB_FILENAME, Store, data_dir_lock
from indexer.strangers import StrangerIndex
from smartgate.config import PrivacyConfig
from smartgate.errors import ConfigError

DIM = 32
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"


def unit_rows(seed: int, n: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def needles(embeddings: np.ndarray) -> list[bytes]:
    """Byte strings that would betray ``embeddings`` ``(n, dim)`` on disk."""
    out: list[bytes] = []
    for row in np.asarray(embeddings, np.float32):
        raw = row.astype("<f4").tobytes()
        out += [raw, row.astype("<f2").tobytes()]
        out += [raw[i : i + 16] for i in range(0, len(raw) - 16, 16)]
    return out


def found_in(directory: Path, patterns: Iterable[bytes]) -> list[str]:
    """``file: pattern index`` for every pattern found in any file under ``directory``."""
    patterns = list(patterns)
    hits = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits += [f"{path.name}: {i}" for i, n in enumerate(patterns) if n in data]
    return hits


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.from_file(tmp_path / "keys" / "data.key", create=True)


# -- the key ring ----------------------------------------------------------------------------


def test_seal_open_round_trip_and_binding(ring: KeyRing) -> None:
    blob = ring.seal(b"face bytes", b"template|c1|1")
    assert len(blob) == len(b"face bytes") + OVERHEAD
    assert blob[1:5] == ring.current_id and b"face bytes" not in blob
    assert ring.open(blob, b"template|c1|1") == b"face bytes"
    assert ring.seal(b"face bytes", b"template|c1|1") != blob  # fresh nonce each time
    with pytest.raises(ConfigError, match="altered or moved"):
        ring.open(blob, b"template|c1|2")  # moved onto another person
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(ConfigError, match="altered or moved"):
        ring.open(bytes(tampered), b"template|c1|1")
    with pytest.raises(ConfigError, match="not an encrypted blob"):
        ring.open(b"\x00" * 64, b"template|c1|1")


def test_a_wrong_key_is_a_clear_error(ring: KeyRing) -> None:
    blob = ring.seal(b"x" * 40, b"thumbnail|c1|e1")
    other = KeyRing([new_key()])
    with pytest.raises(ConfigError, match=f"key {ring.current_id.hex()}.*not among"):
        other.open(blob, b"thumbnail|c1|e1")


def test_key_file_is_created_private_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "data.key"
    first = KeyRing.from_config(PrivacyConfig(key_file=path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = KeyRing.from_config(PrivacyConfig(key_file=path))
    assert first.keys == again.keys and len(first.keys) == 1


def test_key_text_from_the_environment_layer(ring: KeyRing) -> None:
    k1, k2 = new_key(), new_key()
    text = f"{base64.b64encode(k2).decode()}, {base64.b64encode(k1).decode()}"
    env = KeyRing.from_config(PrivacyConfig(key=text))
    assert env.keys == (k2, k1) and env.current_id == key_id(k2)
    assert "***" in repr(PrivacyConfig(key=text)) and text not in repr(PrivacyConfig(key=text))
    with pytest.raises(ConfigError, match="base64"):
        parse_keys("not base64!", "privacy.key")
    with pytest.raises(ConfigError, match="16 bytes"):
        parse_keys(base64.b64encode(b"x" * 16).decode(), "privacy.key")
    with pytest.raises(ConfigError, match="no key"):
        parse_keys("  ", "privacy.key")


def test_a_rotated_ring_opens_old_blobs_and_seals_with_the_new_key(ring: KeyRing) -> None:
    old_blob = ring.seal(b"old", b"a")
    rotated = ring.with_current(new_key())
    assert rotated.open(old_blob, b"a") == b"old"
    assert not rotated.is_current(old_blob) and rotated.is_current(rotated.seal(b"n", b"a"))


# -- the registry store ----------------------------------------------------------------------


def _enroll(store: Store, person: str, vectors: np.ndarray) -> None:
    store.enroll(
        "c1",
        person,
        vectors,
        name="",
        role="resident",
        expires_at=None,
        replace=False,
        now=1.0,
    )


def test_registry_files_hold_no_embedding_bytes(tmp_path: Path, ring: KeyRing) -> None:
    data = tmp_path / "data"
    store = Store(data, ring)
    try:
        a, b = unit_rows(1, 3), unit_rows(2, 2)
        _enroll(store, "a", a)
        _enroll(store, "b", b)
        # Checked while open, with the WAL file still holding the writes.
        assert (data / f"{DB_FILENAME}-wal").exists()
        assert found_in(data, needles(np.vstack([a, b]))) == []
        loaded = store.face_templates("c1", DIM)
        np.testing.assert_array_equal(loaded.embeddings, np.vstack([a, b]))
        np.testing.assert_array_equal(store.person_embeddings("c1", "b"), b)
    finally:
        store.close()
    with pytest.raises(ConfigError, match="not among the configured data keys"):
        Store(data, KeyRing([new_key()])).face_templates("c1", DIM)


def test_a_template_moved_to_another_person_fails_to_open(tmp_path: Path, ring: KeyRing) -> None:
    store = Store(tmp_path, ring)
    try:
        _enroll(store, "a", unit_rows(1, 1))
        _enroll(store, "b", unit_rows(2, 1))
        with store._transaction() as con:
            blob = con.execute("SELECT embedding FROM templates ORDER BY id LIMIT 1").fetchone()[0]
            con.execute("UPDATE templates SET embedding = ? WHERE id = 2", (blob,))
        with pytest.raises(ConfigError, match="altered or moved"):
            store.face_templates("c1", DIM)
    finally:
        store.close()


def test_plaintext_templates_are_sealed_on_open(tmp_path: Path, ring: KeyRing) -> None:
    vectors = unit_rows(3, 2)
    store = Store(tmp_path, ring)
    _enroll(store, "a", vectors[:1])
    store.close()
    # What an older smartgate wrote: the float32 bytes themselves.
    con = sqlite3.connect(tmp_path / DB_FILENAME)
    con.execute(
        "INSERT INTO templates (person_key, community, embedding, dim, created_at) "
        "VALUES (1, 'c1', ?, ?, 1.0)",
        (vectors[1].astype("<f4").tobytes(), DIM),
    )
    con.commit()
    con.close()
    assert found_in(tmp_path, needles(vectors[1:])) != []
    store = Store(tmp_path, ring)
    try:
        np.testing.assert_array_equal(store.face_templates("c1", DIM).embeddings, vectors)
    finally:
        store.close()
    assert found_in(tmp_path, needles(vectors)) == []


def test_removal_leaves_no_bytes_of_the_person(tmp_path: Path, ring: KeyRing) -> None:
    store = Store(tmp_path, ring)
    try:
        _enroll(store, "erase-me-4711", unit_rows(4, 2))
        _enroll(store, "stays", unit_rows(5, 1))
        sealed = [
            bytes(r[0])
            for r in store._con.execute("SELECT embedding FROM templates WHERE person_key = 1")
        ]
        assert found_in(tmp_path, [b"erase-me-4711", sealed[0][5:40]]) != []  # it was there
        store.remove_person("c1", "erase-me-4711")
        assert found_in(tmp_path, [b"erase-me-4711", *(s[5:40] for s in sealed)]) == []
        assert store.face_templates("c1", DIM).template_ids.tolist() == [3]
    finally:
        store.close()


def test_template_ids_stay_unique_across_the_migration(tmp_path: Path, ring: KeyRing) -> None:
    store = Store(tmp_path, ring)
    try:
        _enroll(store, "a", unit_rows(1, 3))
        store.remove_person("c1", "a")
        _enroll(store, "b", unit_rows(2, 1))
        assert store.face_templates("c1", DIM).template_ids.tolist() == [4]
    finally:
        store.close()


# -- strangers and thumbnails ----------------------------------------------------------------


def test_strangers_file_is_sealed(tmp_path: Path, ring: KeyRing) -> None:
    faces = unit_rows(6, 3)
    index = StrangerIndex(DIM, keys=ring)
    for i, face in enumerate(faces):
        index.assign("c1", face, float(i))
    index.save(tmp_path)
    assert found_in(tmp_path, needles(faces)) == []
    loaded = StrangerIndex.load(tmp_path, DIM, keys=ring)
    assert loaded.stats("c1") == index.stats("c1")
    assert loaded.matching("c1", faces[:1], 0.99) == ["s-1"]
    with pytest.raises(ConfigError, match="not among"):
        StrangerIndex.load(tmp_path, DIM, keys=KeyRing([new_key()]))


def test_legacy_plaintext_strangers_are_read_and_sealed(tmp_path: Path, ring: KeyRing) -> None:
    faces = unit_rows(7, 2)
    index = StrangerIndex(DIM, keys=ring)
    for i, face in enumerate(faces):
        index.assign("c1", face, float(i))
    index.save(tmp_path)
    # Turn the save into what an older smartgate wrote: a plaintext .npz.
    manifest = (tmp_path / strangers_mod.MANIFEST).read_text()
    sealed_name = next(tmp_path.glob("strangers-*.sealed")).name
    plain = ring.open((tmp_path / sealed_name).read_bytes(), f"strangers|{sealed_name}".encode())
    npz = sealed_name.replace(".sealed", ".npz")
    (tmp_path / npz).write_bytes(plain)
    (tmp_path / sealed_name).unlink()
    (tmp_path / strangers_mod.MANIFEST).write_text(manifest.replace(sealed_name, npz))
    loaded = StrangerIndex.load(tmp_path, DIM, keys=ring)
    assert loaded.stats("c1").strangers == 2
    assert found_in(tmp_path, needles(faces)) == []


def test_thumbnails_are_sealed_and_legacy_ones_sealed_on_open(
    tmp_path: Path, ring: KeyRing
) -> None:
    e1 = make_event(
        community="c1",
        gate="g",
        device="d",
        kind="face",
        action="OPEN",
        track_id="t1",
        start=1.0,
        end=2.0,
        score=0.9,
        quality=0.8,
        person_id="p1",
    )
    store = EventStore(tmp_path, keys=ring)
    store.put(e1, JPEG)
    assert store.thumbnail("c1", e1.id) == JPEG
    store.close()
    assert found_in(tmp_path, [JPEG, JPEG[:64]]) == []
    # An older smartgate's plaintext thumbnail beside its row.
    legacy = tmp_path / "thumbs" / "c1" / f"{e1.id}.jpg"
    store_path = tmp_path / "thumbs" / "c1" / f"{e1.id}.sealed"
    store_path.unlink()
    legacy.write_bytes(JPEG)
    store = EventStore(tmp_path, keys=ring)
    try:
        assert store.thumbnail("c1", e1.id) == JPEG and not legacy.exists()
    finally:
        store.close()
    assert found_in(tmp_path, [JPEG, JPEG[:64]]) == []


# -- rotation --------------------------------------------------------------------------------


def test_rotation_reencrypts_everything_and_retires_the_old_key(tmp_path: Path) -> None:
    data, key_file = tmp_path / "data", tmp_path / "keys" / "data.key"
    privacy = PrivacyConfig(key_file=key_file)
    old = KeyRing.from_config(privacy)
    vectors = unit_rows(8, 2)
    store = Store(data, old)
    _enroll(store, "a", vectors)
    store.close()
    index = StrangerIndex(DIM, keys=old)
    index.assign("c1", vectors[0], 1.0)
    index.save(data / "strangers")
    event = make_event(
        community="c1",
        gate="g",
        device="d",
        kind="face",
        action="STRANGER",
        track_id="t",
        start=1.0,
        end=1.0,
        score=0.1,
        quality=0.8,
        stranger_id="s-1",
    )
    events = EventStore(data, keys=old)
    events.put(event, JPEG)
    events.close()

    holder = Store(data, old)  # a running node holds the data dir
    with pytest.raises(ConfigError, match="stop the node"):
        rotate_keys(data, privacy)
    holder.close()

    report = rotate_keys(data, privacy)
    assert (report.templates, report.strangers, report.thumbnails) == (2, 1, 1)
    new = KeyRing.from_file(key_file)
    assert len(new.keys) == 1 and new.current_id != old.current_id
    assert report.retired == (old.current_id.hex(),)
    store = Store(data, new)
    try:
        np.testing.assert_array_equal(store.face_templates("c1", DIM).embeddings, vectors)
    finally:
        store.close()
    assert StrangerIndex.load(data / "strangers", DIM, keys=new).stats("c1").strangers == 1
    events = EventStore(data, keys=new)
    try:
        assert events.thumbnail("c1", event.id) == JPEG
    finally:
        events.close()
    with pytest.raises(ConfigError):
        Store(data, old).face_templates("c1", DIM)
    assert found_in(data, needles(vectors)) == []


def test_data_dir_lock_shared_and_exclusive(tmp_path: Path) -> None:
    import os

    shared = data_dir_lock(tmp_path, exclusive=False)
    also = data_dir_lock(tmp_path, exclusive=False)
    with pytest.raises(ConfigError):
        data_dir_lock(tmp_path, exclusive=True)
    os.close(shared)
    os.close(also)
    os.close(data_dir_lock(tmp_path, exclusive=True))
    write_key_file(tmp_path / "k", [new_key()])
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


# -- erasure at rest ---------------------------------------------------------------------------


@pytest.mark.parametrize("anonymise", [False, True])
def test_erased_passages_leave_no_identity_on_disk(
    tmp_path: Path, ring: KeyRing, anonymise: bool
) -> None:
    from cluster.events.alerts import watchlist_alert

    person = "erase-me-0815"
    mine = [
        make_event(
            community="c1",
            gate="g",
            device="d",
            kind="face",
            action="ALERT",
            track_id=f"t{i}",
            start=10.0 + i,
            end=11.0 + i,
            score=0.9,
            quality=0.8,
            person_id=person,
            role="watchlist",
        )
        for i in range(3)
    ]
    other = replace_person(mine[0], "stays", "t9")
    store = EventStore(tmp_path, keys=ring, outbox=True)
    try:
        store.put_many([(e, JPEG) for e in [*mine, other]])
        alert = watchlist_alert(mine[0])
        assert alert is not None
        store.append_alert(alert)
        assert found_in(tmp_path, [person.encode()]) != []
        report = store.erase_person("c1", person, anonymise=anonymise)
        assert (report.events, report.alerts, report.thumbnails) == (3, 1, 3)
        left = store.query("c1")[0]
        if anonymise:  # the passages stay, without who, image or alert text
            assert len(left) == 4
            kept = [e for e in left if e.person_id is None]
            assert len(kept) == 3 and not any(e.has_thumbnail for e in kept)
            assert [a.message for a in store.alerts_after("c1", 0)] == ["(erased)"]
        else:
            assert [e.person_id for e in left] == ["stays"]
            assert store.alerts_after("c1", 0) == []
        assert store.thumbnail("c1", other.id) == JPEG
    finally:
        store.close()
    assert found_in(tmp_path, [person.encode()]) == []


def replace_person(event: object, person: str, track: str) -> Any:
    from dataclasses import replace

    from cluster.events.model import event_id

    e: Any = event
    return replace(
        e, person_id=person, track_id=track, id=event_id(e.community, e.gate, track, e.start)
    )


def test_rotation_reseals_the_cluster_communities_stores(tmp_path: Path) -> None:
    # Cluster mode keeps each community's templates in its own store (its index actor's),
    # under communities/: a rotation re-seals them too, and refuses while an actor holds one.
    from cluster.distributed.index import CommunityIndex, community_dir

    data, key_file = tmp_path / "data", tmp_path / "keys" / "data.key"
    privacy = PrivacyConfig(key_file=key_file)
    old = KeyRing.from_config(privacy)
    vectors = unit_rows(9, 3)
    for community in ("north", "south"):
        index = CommunityIndex(data, community, DIM, privacy, create=True)
        index.enroll(f"p-{community}", vectors, "", "resident", None, False, None)
        index.close()
    holder = data_dir_lock(community_dir(data, "north"), exclusive=True)  # a running actor
    with pytest.raises(ConfigError, match="stop the node"):
        rotate_keys(data, privacy)
    os.close(holder)

    report = rotate_keys(data, privacy)
    assert report.templates == 6 and report.retired == (old.current_id.hex(),)
    new = KeyRing.from_file(key_file)
    for community in ("north", "south"):
        store = Store(community_dir(data, community), new)
        try:
            np.testing.assert_array_equal(store.face_templates(community, DIM).embeddings, vectors)
        finally:
            store.close()
        with pytest.raises(ConfigError):
            Store(community_dir(data, community), old).face_templates(community, DIM)
