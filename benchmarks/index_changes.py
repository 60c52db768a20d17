"""Index-change notifications (``cluster.events.index_changes``) on a real store and a real
``redis-server`` started here on a free port:

* write cost: ``Store.add_vehicle`` (one transaction with its change-log row), p50/p99;
* latency: from a change's commit returning to a frontend follower's handler seeing it, with
  the publisher and the follower running as they do in cluster mode, p50/p99/max;
* backlog: ``--backlog`` changes made while Redis is down, then the time from Redis coming back
  to the last of them sent (none lost or twice: checked against the stream).

``python -m benchmarks.index_changes [--changes 300] [--rate 50] [--backlog 10000]``
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from cluster.events.index_changes import IndexChangeFollower, IndexChangePublisher, changes_stream
from indexer.changelog import Change
from indexer.crypto import KeyRing, new_key
from indexer.store import Store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Redis:
    """A throwaway ``redis-server`` (no persistence) that can be stopped and started again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
        self.binary, self.port = binary, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.proc = subprocess.Popen(
            [*args, "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port)
        for _ in range(500):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.01)
        raise SystemExit("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _add(store: Store, i: int) -> None:
    store.add_vehicle(
        "c1",
        f"B{i:06d}",
        role="resident",
        owner="",
        expires_at=None,
        replace=False,
        now=time.time(),
    )


def measure_latency(store: Store, url: str, changes: int, rate: float) -> dict[str, float]:
    """Commit → follower handler, for ``changes`` changes at ``rate`` per second."""
    seen: dict[int, float] = {}
    done = threading.Event()

    def handler(change: Change) -> None:
        seen[change.seq] = time.perf_counter()
        if len(seen) >= changes:
            done.set()

    publisher = IndexChangePublisher(store, url)
    follower = IndexChangeFollower(url, lambda: ["c1"], [handler])
    committed: dict[int, float] = {}
    writes: list[float] = []
    try:
        deadline = time.monotonic() + 10
        while "c1" not in follower.following() and time.monotonic() < deadline:
            time.sleep(0.01)
        base = store.community_version("c1")
        for i in range(changes):
            t0 = time.perf_counter()
            _add(store, base + i + 1)
            t1 = time.perf_counter()
            writes.append((t1 - t0) * 1000)
            committed[store.community_version("c1")] = t1
            time.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - t0)))
        done.wait(30)
    finally:
        follower.close()
        publisher.close()
    lat = [(seen[s] - t) * 1000 for s, t in committed.items() if s in seen]
    return {
        "changes": changes,
        "heard": len(lat),
        "write_p50_ms": _pct(writes, 50),
        "write_p99_ms": _pct(writes, 99),
        "notify_p50_ms": _pct(lat, 50),
        "notify_p99_ms": _pct(lat, 99),
        "notify_max_ms": max(lat) if lat else float("nan"),
    }


def measure_backlog(store: Store, server: _Redis, backlog: int) -> dict[str, float]:
    """``backlog`` changes while Redis is down, then the drain once it is back."""
    publisher = IndexChangePublisher(store, server.url, backoff_s=(0.05, 0.2))
    try:
        publisher.flush(10)
        server.stop()
        first = store.community_version("c1") + 1
        for i in range(backlog):
            _add(store, 10_000_000 + i)
        t0 = time.perf_counter()
        server.start()
        ok = publisher.flush(120)
        drain_s = time.perf_counter() - t0
    finally:
        publisher.close()
    client = redis.Redis(port=server.port, decode_responses=True)
    entries: Any = client.xrange(changes_stream("c1"))
    seqs = [int(fields["seq"]) for _, fields in entries]
    expected = [c.seq for c in store.community_changes("c1", first - 1, backlog + 10)]
    return {
        "backlog": backlog,
        "flushed": float(ok),
        "drain_s_after_redis_back": drain_s,
        "exactly_once_in_order": float(seqs == expected),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="changes per second")
    parser.add_argument("--backlog", type=int, default=10_000)
    args = parser.parse_args(argv)
    server = _Redis()
    server.start()
    tmp = Path(tempfile.mkdtemp(prefix="smartgate-index-changes-"))
    store = Store(tmp, KeyRing([new_key()]))
    try:
        store.create_community("c1", time.time())
        for name, result in (
            ("latency", measure_latency(store, server.url, args.changes, args.rate)),
            ("backlog", measure_backlog(store, server, args.backlog)),
        ):
            print(name, " ".join(f"{k}={v:.3g}" for k, v in result.items()), flush=True)
    finally:
        store.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
