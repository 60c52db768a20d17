"""Face snapshots end to end: a community's index actor (real Ray, one one-CPU node) killed
after enrolments comes back from its snapshot plus the store's changes since and identifies
the same persons; an erasure through the node leaves no snapshot with the person's templates.
Real models embed real photos; real SQLite and AES-GCM under the test's folder.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cluster_site import start_ray, stop_ray

from cluster.distributed.directory import IndexDirectory
from cluster.distributed.index import community_dir
from cluster.erasure import erase_person
from indexer import snapshot
from indexer.crypto import KeyRing
from smartgate.config import ClusterConfig, IndexConfig, PrivacyConfig

pytestmark = pytest.mark.integration

ENROL = {
    "obama": "examples_obama.jpg",
    "biden": "examples_biden.jpg",
    "alex": "examples_alex-lacamoire.png",
    "rose": "examples_knn_examples_train_rose_leslie_img1.jpg",
    "kit": "examples_knn_examples_train_kit_harington_john1.jpeg",
    "lin": "examples_lin-manuel-miranda.png",
}
PROBES = [
    "examples_obama2.jpg",
    "examples_knn_examples_train_biden_biden2.jpg",
    "examples_knn_examples_test_alex_lacamoire1.jpg",
    "examples_knn_examples_train_rose_leslie_img2.jpg",
    "examples_knn_examples_train_kit_harington_john2.jpeg",
]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    cluster = start_ray(nodes=1)
    yield cluster
    stop_ray(cluster)


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _snapshot_count(path: Path) -> int:
    try:
        return snapshot.read_header_of(path).count
    except (OSError, snapshot.SnapshotError):
        return -1


def test_a_killed_index_actor_restores_from_snapshot_plus_log(
    ray_cluster: object, engine: Any, faces_dir: Path, tmp_path: Path
) -> None:
    def embed(photo: str) -> np.ndarray:
        face = engine.recognizer.enrollment_faces([(faces_dir / photo).read_bytes()])[0]
        return np.asarray(face.embedding, np.float32)[None, :]

    templates = {person: embed(photo) for person, photo in ENROL.items()}
    probes = np.concatenate(
        [engine.recognizer.query_face((faces_dir / p).read_bytes())[1][None, :] for p in PROBES]
    ).astype(np.float32)
    data = tmp_path / "cluster"
    privacy = PrivacyConfig(key_file=tmp_path / "keys" / "data.key")
    keys = KeyRing.from_config(privacy)
    directory = IndexDirectory(
        ClusterConfig(address="auto", index_wait_s=60.0),
        data,
        engine.embedding_dim,
        privacy,
        IndexConfig(snapshot_every_changes=3, snapshot_interval_s=0.0),
    )
    path = snapshot.snapshot_path(community_dir(data, "c1"), "c1")

    def enroll(person: str) -> None:
        args = (person, templates[person], person.title(), "resident", None, False, None)
        directory.write("c1", "enroll", *args, create=True)

    def identify() -> list[tuple[str | None, float]]:
        ids, _ = directory.read("c1", "match", probes, engine.threshold, 0.05, 32, [], 1.0)
        return [(i.person.person_id if i.person else None, i.score) for i in ids]

    try:
        for person in ("obama", "biden", "alex"):
            enroll(person)
        _wait_for(lambda: _snapshot_count(path) == 3)  # 3 changes: background snapshot
        assert directory.write("c1", "remove", "biden") == 1
        assert not path.exists()  # the erasure took the snapshot with it
        for person in ("rose", "kit"):  # with biden's removal, 3 changes: a new snapshot
            enroll(person)
        _wait_for(lambda: _snapshot_count(path) == 4)
        enroll("lin")  # the log: in the store, not in the snapshot
        before = identify()
        assert [p for p, _ in before] == ["obama", None, "alex", "rose", "kit"]

        info = directory.read("c1", "info")
        assert info["restored_from"] == "new"
        os.kill(int(info["pid"]), signal.SIGKILL)
        after = identify()  # waits for Ray to restart the actor, which restores itself
        info = directory.read("c1", "info")
        assert info["restored_from"] == "snapshot", info
        assert info["restored_from_snapshot"] == 4 and info["restored_from_store"] == 1
        assert info["restored_dropped"] == 0 and info["templates"] == 5
        assert after == before  # the same persons, the same scores: bit-equal templates
        loaded = snapshot.load_snapshot(path, keys, "c1", engine.embedding_dim)
        assert not any(v.tobytes() == templates["biden"][0].tobytes() for v in loaded.vectors)
        print(f"\nindex actor restored from its snapshot in {info['restore_s'] * 1e3:.1f} ms")
    finally:
        directory.close(stop_actors=True)


def test_erasure_deletes_the_snapshot_and_the_next_holds_no_trace(
    node: Any, faces_dir: Path
) -> None:
    engine = node.engine
    registry = engine.registry
    for person in ("obama", "alex", "rose"):
        engine.enroll("c1", person, [(faces_dir / ENROL[person]).read_bytes()])
    gone = registry.person_embeddings("c1", "obama")
    path = registry.snapshot_path("c1")
    assert registry.write_snapshot("c1") and path.exists()
    report = erase_person(node, "c1", "obama")
    assert report.templates == 1
    assert not path.exists()
    assert registry.write_snapshot("c1")
    loaded = snapshot.load_snapshot(path, registry.store.keys, "c1", engine.embedding_dim)
    assert len(loaded.template_ids) == 2
    assert not any(v.tobytes() == g.tobytes() for v in loaded.vectors for g in gone)
    raw = path.read_bytes()
    assert not any(g.astype("<f4").tobytes()[i : i + 16] in raw for g in gone for i in (0, 64))
