"""Gate state in Redis: a gate's open passages outlive the node that was tracking them.

A gate is served by one node at a time (devices and load balancers route by gate), but that
node may die mid-passage. After every frame the node hands the gate's state (its tracker, the
open tracks' start times, decisions and best shots) to ``RedisGateState``, which writes the
latest state of each gate to Redis from a background thread (latest wins: the capture path
never waits for Redis). The node that takes the gate over (or the same node, restarted) loads
it on the gate's first frame and carries on: a passage decided before the crash is not decided
again, and its one event is written when it ends.

If Redis is unreachable, capture goes on with local state only (a warning is logged and
``failures`` counts it); the next successful write catches up with the latest state.

Serialisation is pickle restricted to the classes a gate state is made of
(``_RestrictedUnpickler``): a blob in Redis cannot name any other callable.
"""

from __future__ import annotations

import io
import logging
import pickle
import threading
from collections.abc import Callable
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "smartgate:gate"

#: module → classes a gate state may contain (everything else is refused when loading).
_ALLOWED: Final[dict[str, frozenset[str]]] = {
    "builtins": frozenset({"set", "frozenset", "dict", "list", "tuple", "bytearray", "slice"}),
    "collections": frozenset({"OrderedDict", "deque"}),
    "numpy": frozenset({"dtype", "ndarray"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
    "numpy.dtypes": frozenset({"Float32DType", "Float64DType", "Int64DType", "UInt8DType"}),
    "cluster.decide": frozenset({"Action"}),
    "cluster.tracking": frozenset(
        {"GateTracker", "_Track", "Observation", "FrameOutcome", "TrackDecision", "FinishedTrack"}
    ),
    "cluster.passages": frozenset({"GateSnapshot", "_Best"}),
    "smartgate.config": frozenset({"TrackingConfig"}),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"gate state may not contain {module}.{name}")


def dumps(state: object) -> bytes:
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def loads(blob: bytes) -> Any:
    """Undo ``dumps``; ``pickle.UnpicklingError`` for a blob naming a class not allowed."""
    return _RestrictedUnpickler(io.BytesIO(blob)).load()


def gate_key(community: str, gate: str) -> str:
    return f"{KEY_PREFIX}:{community}:{gate}"


class RedisGateState:
    """The latest state of each gate in Redis (``SET key blob PX ttl``), written behind.

    ``save`` only records the state producer (a callable returning bytes: the pickling runs on
    the writer thread, not on the capture path); ``load`` reads synchronously (a gate's first
    frame on this node).
    """

    def __init__(self, url: str, ttl_s: float = 3600.0, timeout_s: float = 0.5) -> None:
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._pending: dict[str, Callable[[], bytes]] = {}
        self._cond = threading.Condition()
        self._stop = False
        self.failures = 0
        self.writes = 0
        self._thread = threading.Thread(target=self._run, name="gate-state", daemon=True)
        self._thread.start()

    def load(self, community: str, gate: str) -> Any | None:
        """The gate's saved state, or None (none saved, Redis unreachable, or unreadable)."""
        try:
            blob = self._redis.get(gate_key(community, gate))
        except redis.RedisError as exc:
            self.failures += 1
            log.warning("gate state of %s/%s not loaded (Redis: %s)", community, gate, exc)
            return None
        if blob is None:
            return None
        try:
            return loads(bytes(blob))  # type: ignore[arg-type]
        except Exception as exc:
            log.warning("gate state of %s/%s ignored: %s", community, gate, exc)
            return None

    def save(self, community: str, gate: str, state: Callable[[], bytes]) -> None:
        """Queue the gate's latest state (replacing any not yet written)."""
        with self._cond:
            self._pending[gate_key(community, gate)] = state
            self._cond.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued state is written (or failed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    _busy = False

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self._redis.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stop)
                if self._stop and not self._pending:
                    return
                batch, self._pending = self._pending, {}
                self._busy = True
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, batch: dict[str, Callable[[], bytes]]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, state in batch.items():
                pipe.set(key, state(), px=self.ttl_ms)
            pipe.execute()
            self.writes += len(batch)
        except redis.RedisError as exc:
            self.failures += 1
            log.warning("gate state not saved to Redis (%s); capture goes on", exc)
