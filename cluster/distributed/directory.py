"""The index actors of the communities: one named Ray actor per community, placed across the
nodes (``SPREAD``), restarted by Ray wherever it can run when it or its node dies
(``max_restarts=-1``), and found by name by every frontend of the cluster.

Reads (matching a frame, searching, listing) that find the actor restarting wait for it up to
``cluster.index_wait_s``, then fail with ``UnavailableError``. Writes (enrol, remove, vehicles)
are not retried: a write whose actor died mid-call may or may not have committed, so the caller
hears UNAVAILABLE and may retry (``replace`` makes an enrolment idempotent).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from cluster.distributed import calls
from cluster.distributed.index import CommunityIndex, has_store, stored_communities
from smartgate.config import ClusterConfig, PrivacyConfig
from smartgate.errors import NotFoundError, UnavailableError

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.1


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
        self, config: ClusterConfig, data_dir: Path, dim: int, privacy: PrivacyConfig
    ) -> None:
        self.config = config
        self.privacy = privacy
        self.data_dir = Path(data_dir)
        self.dim = dim
        self.namespace = namespace_for(config, data_dir)
        self._remote = ray.remote(CommunityIndex)
        self._handles: dict[str, Any] = {}
        self._known: set[str] = set()
        self._lock = threading.Lock()

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

    def handle(self, community: str, create: bool = False) -> Any:
        """The community's actor handle, starting the actor if no frontend has yet."""
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
        ).remote(self.data_dir, community, self.dim, self.privacy, create)
        # The constructor's errors (NotFoundError, a bad store) surface here, not later.
        calls.get(actor.info.remote(), self.config.index_wait_s)  # type: ignore[attr-defined]
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
        """Call a changing method once; a lost actor is ``UnavailableError`` (see above)."""
        try:
            handle = self.handle(community, create=create)
            return calls.get(getattr(handle, method).remote(*args), self.config.index_wait_s)
        except calls.LOST as exc:
            if isinstance(exc, ray.exceptions.ActorDiedError):
                self.forget(community)
            raise UnavailableError(
                f"the index of community '{community}' was lost during the change; it is "
                "restarting: retry (the change may or may not have been applied)"
            ) from exc

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
