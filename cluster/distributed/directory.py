"""The index actors of the communities: one named Ray actor per community, placed across the
nodes (``SPREAD``), restarted by Ray wherever it can run when it or its node dies
(``max_restarts=-1``), and found by name by every frontend of the cluster.

Reads (matching a frame, searching, listing) that find the actor restarting wait for it up to
``cluster.index_wait_s``, then fail with ``UnavailableError``.

Writes (enrol, remove, add or remove a vehicle, create a community) are exactly-once from the
caller's view. A write whose actor is lost mid-call (``calls.LOST``) may or may not have
committed; the frontend waits for the actor to come back (Ray restarts it from its store, up to
``cluster.index_wait_s`` after the loss) and sends the same write again marked ``retry``. The
actor makes a retried write idempotent by the state it finds (``CommunityIndex`` methods and
``cluster.distributed.idempotent``):

* enrol: the person already there with bit-equal templates (float32, as the registry checked
  them) and the same name, role and expiry is the success the lost attempt committed; anything
  else is ``AlreadyExistsError`` as usual. ``replace=True`` is idempotent by itself;
* add a vehicle: the plate already registered with the same role, owner and expiry: success;
* remove a person or a vehicle already gone: success. The actor cannot know what the lost
  attempt removed, so the frontend reads it first (the person's template count, the vehicle)
  and answers with that, as the lost attempt would have; a person or plate that was not there
  before the call is ``NotFoundError`` as ever;
* create a community: success when its store exists once the actor is back.

Why judge by state rather than by a request id recorded with the change: the change's SQLite
transaction belongs to ``indexer.registry`` / ``indexer.store`` (used alike by the embedded
engine), so a request-id row in that same transaction would thread a cluster-only concern
through them, and a row written in a transaction of its own would reopen the window it closes.
The state check needs no schema and no pruning, and it is sound: a retry succeeds only where
the store already holds exactly what the write asked for (or lacks what it removes). Its one
blind spot is who made that state: a retry cannot tell its own lost attempt from another
caller who made the same change in between, and answers success to both, which is the state
the caller asked for (a request id would answer ``AlreadyExistsError`` to the second).

If the actor is not back within the budget (or the retry itself does not answer in time: a
retry sent at the budget's end still gets ``RETRY_CALL_MIN_S``), the write fails with
``UnavailableError``: the change may or may not have been applied.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import ray

from cluster.distributed import calls
from cluster.distributed.index import CommunityIndex, has_store, stored_communities
from cluster.distributed.strangers import StrangerSaving
from smartgate.config import ClusterConfig, EventsConfig, IndexConfig, PrivacyConfig
from smartgate.errors import NotFoundError, UnavailableError

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.1
#: The least time a retried write is given to answer once sent, even at the budget's end.
RETRY_CALL_MIN_S = 2.0


@dataclass
class WriteStats:
    """Counters of the writes (tests, logs): ``in_flight`` being waited for now, ``lost``
    (calls whose actor was lost mid-call), ``retried`` (retries sent), ``failed`` (writes that
    gave up: UNAVAILABLE)."""

    in_flight: int = 0
    lost: int = 0
    retried: int = 0
    failed: int = 0


def namespace_for(config: ClusterConfig, data_dir: Path) -> str:
    """The Ray namespace of one deployment: ``cluster.namespace`` and the data directory, so two
    deployments (or two test runs) on one Ray cluster never share an index actor."""
    digest = hashlib.blake2b(str(Path(data_dir).resolve()).encode(), digest_size=6).hexdigest()
    return f"{config.namespace}-{digest}"


def actor_name(community: str) -> str:
    return f"index:{community}"


class IndexDirectory:
    """Finds (or starts) the index actor of a community and calls it; see the module docstring."""

    def __init__(
        self,
        config: ClusterConfig,
        data_dir: Path,
        dim: int,
        privacy: PrivacyConfig,
        index: IndexConfig | None = None,
        events: EventsConfig | None = None,
    ) -> None:
        self.config = config
        self.privacy = privacy
        self.index = IndexConfig() if index is None else index  # the actors' snapshots
        self.events = events  # the actors' index-change publishers (redis_url)
        self.data_dir = Path(data_dir)
        self.dim = dim
        self.namespace = namespace_for(config, data_dir)
        self._remote = ray.remote(CommunityIndex)
        self._handles: dict[str, Any] = {}
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self.stats = WriteStats()

    # -- communities -----------------------------------------------------------------------

    def communities(self) -> list[str]:
        return stored_communities(self.data_dir)

    def exists(self, community: str) -> bool:
        """Whether ``community`` has a store (cached once seen: communities are not deleted)."""
        if community in self._known:
            return True
        if has_store(self.data_dir, community):
            self._known.add(community)
            return True
        return False

    def require(self, community: str) -> None:
        if not community or not self.exists(community):
            raise NotFoundError(f"community '{community}' does not exist")

    def handle(self, community: str, create: bool = False, timeout: float | None = None) -> Any:
        """The community's actor handle, starting the actor if no frontend has yet (waiting
        ``timeout`` seconds, default ``index_wait_s``, for it to answer)."""
        with self._lock:
            found = self._handles.get(community)
        if found is not None:
            return found
        if not create:
            self.require(community)
        actor = self._remote.options(
            name=actor_name(community),
            namespace=self.namespace,
            get_if_exists=True,
            lifetime="detached",
            max_restarts=-1,
            max_task_retries=0,
            num_cpus=self.config.index_cpus,
            scheduling_strategy="SPREAD",
        ).remote(
            self.data_dir,
            community,
            self.dim,
            self.privacy,
            create,
            self.index,
            StrangerSaving.from_config(self.config),
            events=self.events,
        )
        # The constructor's errors (NotFoundError, a bad store) surface here, not later.
        wait = self.config.index_wait_s if timeout is None else timeout
        calls.get(actor.info.remote(), wait)  # type: ignore[attr-defined]
        with self._lock:
            self._handles[community] = actor
        self._known.add(community)
        return actor

    def forget(self, community: str) -> None:
        """Drop the cached handle (after the actor died for good)."""
        with self._lock:
            self._handles.pop(community, None)

    # -- calls -----------------------------------------------------------------------------

    def read(self, community: str, method: str, *args: Any) -> Any:
        """Call a read-only method, waiting up to ``index_wait_s`` for a restarting actor."""
        return self.read_many([community], method, *args)[0]

    def read_many(self, communities: Sequence[str], method: str, *args: Any) -> list[Any]:
        """The same read on several communities' actors at once (a fan-out), in order."""
        deadline = time.monotonic() + self.config.index_wait_s
        while True:
            try:
                refs = [getattr(self.handle(c), method).remote(*args) for c in communities]
                return calls.gather(refs, max(0.1, deadline - time.monotonic()))
            except calls.LOST as exc:
                if time.monotonic() >= deadline:
                    raise UnavailableError(
                        f"the index of {', '.join(communities)} did not come back within "
                        f"{self.config.index_wait_s:.0f} s"
                    ) from exc
                log.info("index actor unavailable (%s); retrying", type(exc).__name__)
                if isinstance(exc, ray.exceptions.ActorDiedError):
                    for c in communities:
                        self.forget(c)
                time.sleep(RETRY_PAUSE_S)

    def write(self, community: str, method: str, *args: Any, create: bool = False) -> Any:
        """Call a changing method of the actor (which takes a ``retry`` keyword); a lost actor
        is waited for and the call retried, up to ``index_wait_s`` (see the module)."""

        def send(handle: Any, retry: bool) -> Any:
            return getattr(handle, method).remote(*args, retry=retry)

        return self._changing(community, send, create)

    def create(self, community: str) -> None:
        """Start the actor of a new ``community`` (which creates its store), waiting for a lost
        actor as ``write`` does: once it answers, the community exists."""
        self._changing(community, lambda handle, retry: handle.info.remote(), True)

    def _changing(self, community: str, send: Callable[[Any, bool], Any], create: bool) -> Any:
        """``send(handle, retry)`` until it answers: the first time with ``retry`` false; after
        a lost actor, again with ``retry`` true until ``index_wait_s`` after the first loss."""
        deadline: float | None = None
        while True:
            timeout = self.config.index_wait_s
            if deadline is not None:
                timeout = max(RETRY_CALL_MIN_S, deadline - time.monotonic())
            try:
                handle = self.handle(community, create=create, timeout=timeout)
                return self._await(partial(send, handle, deadline is not None), timeout)
            except calls.LOST as exc:
                if isinstance(exc, ray.exceptions.ActorDiedError):
                    self.forget(community)
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.config.index_wait_s
                    self._count("lost")
                if now >= deadline:
                    raise self._gave_up(community) from exc
                log.info(
                    "index actor of %s lost during a change (%s); retrying",
                    community,
                    type(exc).__name__,
                )
            except UnavailableError as exc:  # a retry that did not answer in time
                if deadline is None:
                    raise
                raise self._gave_up(community) from exc
            self._count("retried")
            time.sleep(RETRY_PAUSE_S)

    def _await(self, sending: Callable[[], Any], timeout: float) -> Any:
        """Send a change and ``calls.get`` its answer, counted in ``stats.in_flight`` from
        before it is sent until its answer (or error) is back."""
        self._count("in_flight")
        try:
            return calls.get(sending(), timeout)
        finally:
            self._count("in_flight", -1)

    def _count(self, what: str, by: int = 1) -> None:
        with self._lock:
            setattr(self.stats, what, getattr(self.stats, what) + by)

    def _gave_up(self, community: str) -> UnavailableError:
        self._count("failed")
        return UnavailableError(
            f"the index of community '{community}' was lost during the change and did not "
            f"come back within {self.config.index_wait_s:.0f} s: retry (the change may or may "
            "not have been applied)"
        )

    def kill(self, community: str, restart: bool = True) -> None:
        """Kill the community's actor (fault tests; ``restart`` lets Ray bring it back)."""
        ray.kill(self.handle(community), no_restart=not restart)
        if not restart:
            self.forget(community)

    def close(self, stop_actors: bool = False) -> None:
        """Forget the handles; with ``stop_actors`` also stop the (detached) actors, which
        otherwise outlive this frontend and serve the other frontends."""
        with self._lock:
            handles = list(self._handles.values())
            self._handles.clear()
        if stop_actors:
            for h in handles:
                try:
                    calls.get(h.close.remote(), 5.0)
                except Exception as exc:  # already gone
                    log.debug("index close: %s", exc)
                ray.kill(h, no_restart=True)
