"""Registry restore: time to open a community of N templates with and without a snapshot.

For each size, a fresh data directory gets one community of ``N`` synthetic 512-d unit
templates (``--per-person`` each, so ``N / per-person`` enrolments), stored through
``Store.enroll`` (each template sealed, as in service). Then, each timed ``--repeat`` times
(median reported) in a fresh ``FaceRegistry``:

* ``store``: snapshots off: every template read and unsealed from ``registry.db`` (the old
  restore);
* ``snapshot``: from the snapshot alone (the store has nothing beyond it: only the (id, owner)
  pairs are read from SQLite);
* ``snapshot + log``: the snapshot plus ``--log-share`` of the templates enrolled after it,
  those unsealed from the store.

"Open" ends when ``FaceRegistry(...)`` returns: the community is searchable (exact). The index
policy's automatic rebuild (to PQ above 20,000) is off here, so the background build does not
share the cores with the next measurement; it starts after the open in service and does not
delay it. Also reported: the snapshot's write time (``write_snapshot``: export from the index
in chunks, seal, fsync, rename) and its size against ``registry.db``.

Run: ``python -m benchmarks.index_restore [--sizes 100000 300000] [--repeat 3]`` (~5 min on the
2-core machine, most of it storing the templates; needs ~3 GB of memory and ~2 GB of disk at
300k). Prints Markdown; results in ``indexer/README.md``.

``--pq``: instead, the time from open to the first search answered by the ``pq`` index, with
the default policy (pq from 20,000 templates, automatic rebuild on), once the community has
been rebuilt to pq and its snapshot written: ``structure``, the snapshot with the saved FAISS
structure (``indexer.snapshot`` version 2: open as pq at once), against ``rebuild``, the same
snapshot without it (as before: exact at once, pq once the background rebuild swaps in; the
registry is polled every 5 ms). Also each one's time to open (exact or pq searchable), the
snapshot sizes and the write time with the structure. Each open is checked to have restored
as it should (``restore_report``). ``--repeat 1`` at 1M (~10 GB of memory).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from indexer import snapshot
from indexer.crypto import KeyRing, new_key
from indexer.face_index import IndexPolicy
from indexer.registry import FaceRegistry
from indexer.store import Store
from smartgate.config import IndexConfig

DIM = 512
COMMUNITY = "c1"
NO_REBUILD = IndexPolicy(auto=False)
SNAPSHOTS = IndexConfig(snapshot_every_changes=0, snapshot_interval_s=0.0)  # explicit only
NO_SNAPSHOTS = IndexConfig(snapshots=False)


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, DIM)`` float32 unit rows."""
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def fill(store: Store, rng: np.random.Generator, start: int, templates: int, per: int) -> None:
    """Enrol ``templates`` templates, ``per`` per person, persons numbered from ``start``."""
    batch = 10_000
    person = start
    for lo in range(0, templates, batch):
        vectors = unit_rows(rng, min(batch, templates - lo))
        for i in range(0, len(vectors), per):
            store.enroll(
                COMMUNITY,
                f"p{person}",
                vectors[i : i + per],
                name="",
                role="resident",
                expires_at=None,
                replace=False,
                now=time.time(),
            )
            person += 1


def timed_open(data: Path, keys: KeyRing, config: IndexConfig, expect: str) -> float:
    gc.collect()
    started = time.perf_counter()
    registry = FaceRegistry(data, DIM, policy=NO_REBUILD, keys=keys, snapshots=config)
    seconds = time.perf_counter() - started
    try:
        source = registry.restore_report(COMMUNITY).source
        if source != expect:
            raise RuntimeError(f"restored from the {source}, expected the {expect}")
    finally:
        registry.close()
    return seconds


def median_of(repeat: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeat))


def measure(size: int, repeat: int, per: int, log_share: float, root: Path) -> dict[str, float]:
    data = root / f"n{size}"
    keys = KeyRing([new_key()])
    rng = np.random.default_rng(size)
    out: dict[str, float] = {}
    started = time.perf_counter()
    store = Store(data, keys)
    try:
        fill(store, rng, 0, size, per)
    finally:
        store.close()
    out["fill_s"] = time.perf_counter() - started
    out["db_mb"] = (data / "registry.db").stat().st_size / 2**20
    out["store_s"] = median_of(repeat, lambda: timed_open(data, keys, NO_SNAPSHOTS, "store"))

    registry = FaceRegistry(data, DIM, policy=NO_REBUILD, keys=keys, snapshots=SNAPSHOTS)
    try:
        started = time.perf_counter()
        if not registry.write_snapshot(COMMUNITY):
            raise RuntimeError("snapshot not written")
        out["write_s"] = time.perf_counter() - started
        path = registry.snapshot_path(COMMUNITY)
        out["snap_mb"] = path.stat().st_size / 2**20
        snap_bytes = path.read_bytes()
    finally:
        registry.close()
    out["snapshot_s"] = median_of(repeat, lambda: timed_open(data, keys, SNAPSHOTS, "snapshot"))

    logged = int(size * log_share)
    store = Store(data, keys)
    try:
        fill(store, rng, size, logged, per)
    finally:
        store.close()
    out["logged"] = logged

    def with_log() -> float:
        registry.snapshot_path(COMMUNITY).write_bytes(snap_bytes)  # the close rewrote it
        return timed_open(data, keys, SNAPSHOTS, "snapshot")

    out["log_s"] = median_of(repeat, with_log)
    shutil.rmtree(data)
    return out


def timed_pq_open(
    data: Path, keys: KeyRing, snap: bytes, structure: bool, query: np.ndarray
) -> tuple[float, float]:
    """Seconds from ``FaceRegistry(...)`` to its return (searchable) and to the first
    ``identify`` answered by the pq index, restoring the snapshot ``snap``."""
    snapshot.snapshot_path(data, COMMUNITY).write_bytes(snap)  # a close may have rewritten it
    os.sync()  # no write-back of it during the open
    gc.collect()
    started = time.perf_counter()
    registry = FaceRegistry(data, DIM, keys=keys, snapshots=SNAPSHOTS)  # default policy
    opened = time.perf_counter() - started
    try:
        report = registry.restore_report(COMMUNITY)
        if (report.source, report.structure) != ("snapshot", structure):
            raise RuntimeError(f"restored {report}, expected the structure: {structure}")
        while registry.index_kind(COMMUNITY) != "pq":
            time.sleep(0.005)
        registry.identify(COMMUNITY, query, 0.5, 0.05)
        first_pq = time.perf_counter() - started
    finally:
        registry.close()
    return opened, first_pq


def measure_pq(size: int, repeat: int, per: int, root: Path) -> dict[str, float]:
    """``--pq``: open from a snapshot with and without the saved pq structure."""
    data = root / f"pq{size}"
    keys = KeyRing([new_key()])
    rng = np.random.default_rng(size)
    out: dict[str, float] = {}
    store = Store(data, keys)
    try:
        fill(store, rng, 0, size, per)
    finally:
        store.close()
    path = snapshot.snapshot_path(data, COMMUNITY)
    registry = FaceRegistry(data, DIM, keys=keys, snapshots=SNAPSHOTS)
    try:
        started = time.perf_counter()
        while registry.index_kind(COMMUNITY) != "pq":
            time.sleep(0.05)
        out["build_s"] = time.perf_counter() - started  # from the store: exact, then pq
        started = time.perf_counter()
        if not registry.write_snapshot(COMMUNITY):
            raise RuntimeError("snapshot not written")
        out["write_s"] = time.perf_counter() - started
        with_structure = path.read_bytes()
    finally:
        registry.close()
    loaded = snapshot.load_snapshot(path, keys, COMMUNITY, DIM)
    if loaded.structure is None:
        raise RuntimeError("the snapshot holds no structure")
    snapshot.write_snapshot(
        path, keys, COMMUNITY, loaded.template_ids, loaded.person_keys, loaded.vectors
    )
    without = path.read_bytes()
    query = loaded.vectors[:1].copy()
    del loaded
    out["snap_mb"] = len(with_structure) / 2**20
    out["plain_mb"] = len(without) / 2**20
    variants = (("rebuild", without, False), ("structure", with_structure, True))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    for _ in range(repeat):  # interleaved: both see the same machine
        for name, snap, structure in variants:
            runs[name].append(timed_pq_open(data, keys, snap, structure, query))
    for name, timed in runs.items():
        out[f"{name}_open_s"] = statistics.median(r[0] for r in timed)
        out[f"{name}_pq_s"] = statistics.median(r[1] for r in timed)
    shutil.rmtree(data)
    return out


def main_pq(sizes: list[int], repeat: int, per: int, scratch: Path | None) -> int:
    print(
        f"{DIM}-d templates, {per} per person, median of {repeat} opens from a snapshot of a pq "
        "index; default policy (pq from 20,000, automatic rebuild)\n"
    )
    print(
        "| templates | snapshot (+ structure) | write with structure | without structure: "
        "open (exact) / first pq search | with structure: open (pq) / first pq search | "
        "speed-up to pq |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(dir=scratch, prefix="index-restore-pq-") as tmp:
        for size in sizes:
            r = measure_pq(size, repeat, per, Path(tmp))
            print(
                f"| {size:,} | {r['plain_mb']:.0f} MB (+{r['snap_mb'] - r['plain_mb']:.1f} MB) | "
                f"{r['write_s']:.2f} s | {r['rebuild_open_s']:.2f} s / {r['rebuild_pq_s']:.2f} s | "
                f"{r['structure_open_s']:.2f} s / {r['structure_pq_s']:.2f} s | "
                f"{r['rebuild_pq_s'] / r['structure_pq_s']:.1f}x |",
                flush=True,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-person", type=int, default=5)
    parser.add_argument("--log-share", type=float, default=0.01)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: /tmp)")
    parser.add_argument(
        "--pq", action="store_true", help="time to the first pq search, with the saved structure"
    )
    args = parser.parse_args(argv)
    if args.pq:
        return main_pq(args.sizes, args.repeat, args.per_person, args.dir)
    print(
        f"{DIM}-d templates, {args.per_person} per person, median of {args.repeat} opens; "
        f"log = {args.log_share:.0%} of the templates enrolled after the snapshot\n"
    )
    print(
        "| templates | store fill | registry.db | open from store | snapshot write | "
        "snapshot size | open from snapshot | snapshot + log | speed-up |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="index-restore-") as tmp:
        for size in args.sizes:
            r = measure(size, args.repeat, args.per_person, args.log_share, Path(tmp))
            print(
                f"| {size:,} | {r['fill_s']:.0f} s | {r['db_mb']:.0f} MB | {r['store_s']:.2f} s | "
                f"{r['write_s']:.2f} s | {r['snap_mb']:.0f} MB | {r['snapshot_s']:.2f} s | "
                f"{r['log_s']:.2f} s (+{int(r['logged']):,}) | "
                f"{r['store_s'] / r['snapshot_s']:.1f}x |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
