"""An embedded node owns its engine: closing it closes the registry, which writes the face
snapshot of every community changed, and the next node opened on the data dir restores from
it. Real models, real photos, real SQLite and AES-GCM under the test's folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cluster.node import Node
from indexer import snapshot
from smartgate.config import Config

pytestmark = pytest.mark.integration


def test_a_closed_node_writes_its_snapshots_and_the_next_restores_from_them(
    base_config: Config, faces_dir: Path, tmp_path: Path
) -> None:
    config = replace(base_config, data_dir=tmp_path)
    node = Node.open(config)
    try:
        node.engine.enroll("c1", "obama", [(faces_dir / "examples_obama.jpg").read_bytes()])
        node.engine.enroll("c1", "biden", [(faces_dir / "examples_biden.jpg").read_bytes()])
    finally:
        node.close()
    assert snapshot.snapshot_path(tmp_path, "c1").is_file()

    again = Node.open(config)
    try:
        report = again.engine.registry.restore_report("c1")
        assert (report.source, report.from_snapshot, report.from_store) == ("snapshot", 2, 0)
        probe = (faces_dir / "examples_obama2.jpg").read_bytes()
        result = again.engine.process_frame("c1", probe)
        ids = [f.identification for f in result.faces if f.identification is not None]
        assert [i.person.person_id for i in ids if i.person is not None] == ["obama"]
    finally:
        again.close()


def test_a_node_around_an_engine_leaves_it_open(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node = Node.around(engine)
    node.close()
    assert engine.registry.communities() == []  # still usable: the caller owns it
