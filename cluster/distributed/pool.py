"""The recognizer worker pool: Ray actors with their own models, routed to by gate, replaced
when they die, grown and shrunk with the load.

* Routing: ``routing.pick_worker``, the least loaded worker, ties broken by the gate's
  affinity, so a gate's frames stay on one worker while the load is even.
* Faults: a call that finds its worker gone (killed actor, crashed process, lost node) is
  retried once on another worker; without one the frame fails with ``UnavailableError``, which
  the capture stream answers in-stream (UNAVAILABLE) while the stream stays open. The dead worker
  leaves the routing at once and the controller starts a replacement.
* Scaling: a controller thread ticks every ``scale_interval_s``: the load (``depth()``, frames
  waiting in the frontend's scheduler, plus the frames in flight) goes through
  ``autoscale.desired_workers``; new workers join the routing once their models are warm
  (``RecognizerWorker.info``), a retired worker first drains its frames in flight.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from cluster.distributed import calls
from cluster.distributed.autoscale import LoadMeter, ScaleState, desired_workers
from cluster.distributed.routing import pick_worker
from cluster.distributed.worker import RecognizerWorker, WorkerInfo
from smartgate.config import Config
from smartgate.errors import UnavailableError

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 300.0


@dataclass
class _Worker:
    wid: str
    actor: Any
    ready_ref: Any
    info: WorkerInfo | None = None
    in_flight: int = 0
    draining: bool = False
    probe: Any = None  # an outstanding liveness probe (info call)


@dataclass
class PoolStats:
    """Counters for tests, the benchmark and the logs."""

    calls: int = 0
    retried: int = 0
    failed: int = 0
    started: int = 0
    lost: int = 0
    retired: int = 0
    sizes: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, live)


class WorkerPool:
    """A pool of ``RecognizerWorker`` actors; see the module docstring."""

    def __init__(self, config: Config, depth: Callable[[], int] = lambda: 0) -> None:
        self.config = config
        self.cluster = config.cluster
        self.depth = depth
        self.stats = PoolStats()
        self._remote = ray.remote(RecognizerWorker)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._live: dict[str, _Worker] = {}
        self._starting: dict[str, _Worker] = {}
        self._draining: dict[str, _Worker] = {}
        self._scale = ScaleState()
        self._meter = LoadMeter(time.monotonic())
        self._stop = threading.Event()
        self._tick_soon = threading.Event()  # a worker was lost: replace it now
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start ``min_workers`` workers, wait until they are warm, start the controller."""
        for _ in range(self.cluster.min_workers):
            self._spawn()
        deadline = time.monotonic() + timeout
        while self.live_count < self.cluster.min_workers:
            with self._lock:
                failed = not self._starting and self._start_error is not None
            if failed:  # a worker that cannot load its models: say why, do not wait
                raise UnavailableError(f"a recognizer worker failed to start: {self._start_error}")
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"no recognizer worker became ready within {timeout:.0f} s (are the models "
                    "fetched on every node, and does the cluster have cluster.worker_cpus free?)"
                )
            self._admit(wait_s=0.5)
        self._thread = threading.Thread(target=self._control, name="pool-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the controller and every worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        with self._lock:
            workers = [*self._live.values(), *self._starting.values(), *self._draining.values()]
            self._live.clear()
            self._starting.clear()
            self._draining.clear()
        for w in workers:
            _kill(w.actor)

    # -- calls -----------------------------------------------------------------------------

    def call(self, key: str, method: str, *args: Any) -> Any:
        """Run ``RecognizerWorker.<method>(*args)`` on the worker for ``key`` (the gate);
        retried once on another worker when the first one is lost."""
        tried: list[str] = []
        for attempt in range(2):
            worker = self._acquire(key, tried)
            if worker is None:
                break
            try:
                ref = getattr(worker.actor, method).remote(*args)
                return calls.get(ref, self.cluster.call_timeout_s)
            except calls.LOST as exc:
                self._lost(worker, exc)
                tried.append(worker.wid)
                if attempt == 0:
                    with self._lock:
                        self.stats.retried += 1
            finally:
                self._release(worker)
        with self._lock:
            self.stats.failed += 1
        raise UnavailableError(
            "no recognizer worker could take the frame"
            + (f" (worker {', '.join(tried)} lost; a replacement is starting)" if tried else "")
        )

    @property
    def live_count(self) -> int:
        with self._lock:
            return len(self._live)

    def live_infos(self) -> dict[str, WorkerInfo]:
        """Worker id → info of each worker in the routing."""
        with self._lock:
            return {w.wid: w.info for w in self._live.values() if w.info is not None}

    def actor(self, wid: str) -> Any:
        """The actor handle of a live worker (the fault tests kill it)."""
        with self._lock:
            return self._live[wid].actor

    def in_flight(self) -> int:
        with self._lock:
            return sum(w.in_flight for w in self._live.values())

    # -- internals -------------------------------------------------------------------------

    def _acquire(self, key: str, exclude: list[str]) -> _Worker | None:
        with self._lock:
            loads = {wid: w.in_flight for wid, w in self._live.items()}
            wid = pick_worker(key, loads, exclude)
            if wid is None:
                return None
            worker = self._live[wid]
            worker.in_flight += 1
            self._meter.set(time.monotonic(), self._total_in_flight())
            self.stats.calls += 1
            return worker

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            worker.in_flight -= 1
            self._meter.set(time.monotonic(), self._total_in_flight())
            drained = worker.draining and worker.in_flight == 0
            if drained:
                self._draining.pop(worker.wid, None)
        if drained:
            _kill(worker.actor)

    def _lost(self, worker: _Worker, exc: BaseException) -> None:
        with self._lock:
            if self._live.pop(worker.wid, None) is None:
                return  # another call noticed first
            self.stats.lost += 1
        log.warning("recognizer worker %s lost (%s); replacing it", worker.wid, exc)
        self._tick_soon.set()

    def _spawn(self) -> None:
        wid = f"w{next(self._ids)}"
        actor = self._remote.options(
            num_cpus=self.cluster.worker_cpus,
            max_restarts=0,
            max_concurrency=1,
            name=None,
        ).remote(self.config)
        with self._lock:
            self._starting[wid] = _Worker(wid, actor, actor.info.remote())  # type: ignore[attr-defined]
            self.stats.started += 1

    def _admit(self, wait_s: float) -> None:
        """Move the workers whose models are warm into the routing (drop failed starts)."""
        with self._lock:
            pending = {w.ready_ref: w for w in self._starting.values()}
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=wait_s)
        for ref in done:
            worker = pending[ref]
            try:
                worker.info = calls.get(ref, 1.0)
            except Exception as exc:
                log.error("recognizer worker %s failed to start: %s", worker.wid, exc)
                with self._lock:
                    self._starting.pop(worker.wid, None)
                    self._start_error = exc
                continue
            with self._lock:
                self._starting.pop(worker.wid, None)
                self._live[worker.wid] = worker
                self.stats.sizes.append((time.monotonic(), len(self._live)))
            log.info("recognizer worker %s ready (pid %d)", worker.wid, worker.info.pid)

    def _control(self) -> None:
        while not self._stop.is_set():
            self._tick_soon.wait(self.cluster.scale_interval_s)
            self._tick_soon.clear()
            try:
                self._admit(wait_s=0.0)
                self._probe()
                self._rescale()
            except Exception:  # the controller must outlive one bad tick
                log.exception("worker pool control tick failed")

    def _probe(self) -> None:
        """Find workers that died while idle (their process or node went away): each tick
        every live worker has one small call outstanding; a lost one leaves the routing."""
        with self._lock:
            workers = list(self._live.values())
        for w in workers:
            if w.probe is None:
                w.probe = w.actor.info.remote()
        probes = {w.probe: w for w in workers}
        done, _ = ray.wait(list(probes), num_returns=len(probes), timeout=0)
        for ref in done:
            worker = probes[ref]
            worker.probe = None
            try:
                calls.get(ref, 1.0)
            except calls.LOST as exc:
                self._lost(worker, exc)
            except Exception as exc:  # an answer at all means it is alive
                log.debug("probe of %s: %s", worker.wid, exc)

    def _total_in_flight(self) -> int:
        """Frames sent to live or draining workers and not answered (the caller holds the lock)."""
        return sum(w.in_flight for w in self._live.values()) + sum(
            w.in_flight for w in self._draining.values()
        )

    def _rescale(self) -> None:
        now = time.monotonic()
        with self._lock:
            workers = len(self._live) + len(self._starting)
            in_flight = self._meter.mean(now)  # averaged since the last tick
        load = self.depth() + in_flight
        want = desired_workers(self.cluster, workers, load, now, self._scale)
        for _ in range(want - workers):
            self._spawn()
        if want < workers:
            self._retire_one()

    def _retire_one(self) -> None:
        with self._lock:
            if len(self._live) <= self.cluster.min_workers:
                return
            worker = min(self._live.values(), key=lambda w: w.in_flight)
            del self._live[worker.wid]
            worker.draining = True
            self.stats.retired += 1
            self.stats.sizes.append((time.monotonic(), len(self._live)))
            idle = worker.in_flight == 0
            if not idle:
                self._draining[worker.wid] = worker
        if idle:
            _kill(worker.actor)


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception as exc:  # already gone
        log.debug("kill: %s", exc)
