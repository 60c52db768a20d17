"""A capture process killed (SIGKILL) while it writes passages: after the restart the database
is intact, every stored row has its whole thumbnail, and re-emitting the passages (same ids)
adds only the missing ones: nothing lost, nothing duplicated, one outbox row per event."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.events.model import Event, make_event
from cluster.events.store import EventStore
from cluster.events.writer import EventWriter

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[2])
from test_events_restart import passage, thumb
from cluster.events.store import EventStore
from cluster.events.writer import EventWriter

store = EventStore(sys.argv[1], outbox=True)
writer = EventWriter(store, 100_000)
i = 0
while True:
    writer.submit(passage(i), thumb(i) if i % 3 else None)
    i += 1
    if i % 20 == 0:
        time.sleep(0.0005)
"""


def passage(i: int) -> Event:
    """The ``i``-th passage of a deterministic capture stream (same id on every run)."""
    return make_event(
        community="c1",
        gate=f"g{i % 4}",
        device="cam",
        kind="face",
        action="OPEN",
        track_id=f"track-{i}",
        start=10_000.0 + i,
        end=10_001.5 + i,
        score=0.9,
        quality=0.8,
        person_id=f"p{i % 50}",
    )


def thumb(i: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + str(i).encode() * 500


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_killed_mid_stream_then_restarted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), str(Path(__file__).parent)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20.0
        while _count(data / "events.db") < 600:
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the child wrote too slowly"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        if child.stderr is not None:
            child.stderr.close()

    store = EventStore(data, outbox=True)
    try:
        with store._reading() as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = store.count_events()
        assert stored >= 600
        assert list((store.thumbs_dir / ".tmp").iterdir()) == []
        rows = store.trajectory(person_id="p0", limit=10_000)
        for e in rows:  # every committed thumbnail is whole
            i = int(e.track_id.split("-")[1])
            assert e.has_thumbnail == bool(i % 3)
            if e.has_thumbnail:
                assert store.thumbnail("c1", e.id) == thumb(i)
        assert store.outbox_backlog() == (stored, 0)

        # The restarted capture path re-emits everything from the start, and more: past the
        # batch that was in flight (its thumbnails may be on disk without rows).
        total = stored + 300
        writer = EventWriter(store, total + 1)
        for i in range(total):
            assert writer.submit(passage(i), thumb(i) if i % 3 else None)
        writer.close()
        assert writer.stats.written + writer.stats.duplicates == total
        assert writer.stats.failed == 0
        assert store.count_events() == total
        assert store.outbox_backlog() == (total, 0)
        with store._reading() as con:
            refs = con.execute("SELECT count(DISTINCT ref_id), count(*) FROM outbox").fetchone()
        assert tuple(refs) == (total, total)
        files = {p.stem for p in (store.thumbs_dir / "c1").iterdir()}
        assert files == {passage(i).id for i in range(total) if i % 3}
    finally:
        store.close()
