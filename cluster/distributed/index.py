"""One community's registry, run as a Ray actor in cluster mode (``CommunityIndex``).

Each community has one authoritative store: its own ``registry.db`` (SQLite, WAL) under
``<data_dir>/communities/<community>/``, written only by that community's index actor (a named
actor: one per community in the cluster, whichever frontend asks). The store is the truth; the
actor's ``FaceRegistry`` writes a sealed snapshot of the face index beside it
(``face-snapshots/``, ``indexer.snapshot``: after ``index.snapshot_every_changes`` changes or
``snapshot_interval_s``, and on close), so a restarted actor, on any node that sees the data
directory, restores the snapshot plus the templates committed since (``info()`` says which:
``restored_from``) and recovers exactly what was committed; the plate index is rebuilt from the
store. An enrolment or removal returns only
after its transaction committed and the actor's in-memory index applied it; every frame of the
community is matched by this same actor, so read-your-writes holds for every worker and every
frontend by construction. The actor also holds the community's strangers, for every frontend
(``cluster.distributed.strangers.CommunityStrangers``, saved under ``strangers/`` beside the
store).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from cluster.distributed.idempotent import same_enrolment, same_vehicle
from cluster.distributed.strangers import CommunityStrangers, StrangerSaving
from cluster.events.index_changes import IndexChangePublisher, unpublished
from indexer.crypto import KeyRing
from indexer.face_index import IndexPolicy
from indexer.registry import FaceRegistry
from indexer.strangers import Stranger, StrangerStats
from indexer.types import Identification, Person, Role, Vehicle, VehicleMatch
from indexer.vehicles import VehicleRegistry
from smartgate.config import EventsConfig, IndexConfig, PrivacyConfig
from smartgate.errors import AlreadyExistsError, NotFoundError

COMMUNITIES_DIR = "communities"
STORE_FILE = "registry.db"


def community_dir(data_dir: Path, community: str) -> Path:
    """Where ``community``'s store lives: its id percent-encoded (``/``, ``.`` and every other
    non-alphanumeric character but ``-`` and ``_``), so an id never escapes the folder."""
    name = quote(community, safe="-_").replace(".", "%2E")
    return Path(data_dir) / COMMUNITIES_DIR / name


def stored_communities(data_dir: Path) -> list[str]:
    """Every community with a store under ``data_dir``, sorted."""
    root = Path(data_dir) / COMMUNITIES_DIR
    if not root.is_dir():
        return []
    return sorted(unquote(p.name) for p in root.iterdir() if (p / STORE_FILE).is_file())


def has_store(data_dir: Path, community: str) -> bool:
    return (community_dir(data_dir, community) / STORE_FILE).is_file()


class CommunityIndex:
    """The registry of one community (faces and vehicles), restored from its store on start.

    ``create``: create the community when its store does not hold it yet (``create_community``,
    a first enrolment or vehicle); otherwise a missing community raises ``NotFoundError``.
    ``events``: with ``redis_url`` and ``index_changes``, the store's change log is published
    to ``smartgate:{community}:index-changes`` (``cluster.events.index_changes``).
    """

    def __init__(
        self,
        data_dir: Path,
        community: str,
        dim: int,
        privacy: PrivacyConfig,
        create: bool = False,
        index: IndexConfig | None = None,
        strangers: StrangerSaving | None = None,
        events: EventsConfig | None = None,
    ) -> None:
        self.community = community
        self.publisher: IndexChangePublisher | None = None
        path = community_dir(data_dir, community)
        if not create and not (path / STORE_FILE).is_file():
            raise NotFoundError(f"community '{community}' does not exist")
        path.mkdir(parents=True, exist_ok=True)
        # The templates are sealed with the deployment's data keys (indexer.crypto); the
        # index comes back from its snapshot plus the store's changes since (indexer.snapshot).
        keys = KeyRing.from_config(privacy)
        policy = IndexPolicy.from_config(index or IndexConfig())
        self.registry = FaceRegistry(path, dim, policy=policy, keys=keys, snapshots=index)
        self.vehicles = VehicleRegistry(self.registry)
        if not self.registry.has_community(community):
            with contextlib.suppress(AlreadyExistsError):  # one writer per store: never
                self.registry.create_community(community)
        if events is not None and events.redis_url and events.index_changes:
            self.publisher = IndexChangePublisher(
                self.registry.store, events.redis_url, maxlen=events.index_changes_maxlen
            )
        else:
            unpublished(self.registry.store)
        # The community's strangers, for every frontend (cluster.distributed.strangers).
        self.strangers = CommunityStrangers(
            path, community, dim, keys, strangers or StrangerSaving()
        )

    def info(self) -> dict[str, int | float | str]:
        """Readiness probe: pid, node, how many templates the index holds, how they came back
        when the actor started (``restored_from``: ``"snapshot"``, ``"store"`` or ``"new"``,
        with counts: ``indexer.registry.RestoreReport.as_dict``), and the community's
        ``version`` (its last logged change, ``indexer.changelog``)."""
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        return {
            "pid": os.getpid(),
            "node_id": node,
            "templates": self.registry.indexed_templates(self.community),
            "version": self.registry.store.community_version(self.community),
            **self.registry.restore_report(self.community).as_dict(),
        }

    # -- frames ---------------------------------------------------------------------------

    def match(
        self,
        embeddings: np.ndarray | None,
        threshold: float,
        margin: float,
        k: int,
        plates: list[str],
        max_distance: float,
    ) -> tuple[list[Identification], list[VehicleMatch | None]]:
        """A frame's faces ``(q, dim)`` (or None) and usable plate texts, in one round trip."""
        c = self.community
        ids = (
            self.registry.identify(c, embeddings, threshold=threshold, margin=margin, k=k)
            if embeddings is not None and len(embeddings)
            else []
        )
        return ids, [self.vehicles.match(c, text, max_distance) for text in plates]

    # -- persons --------------------------------------------------------------------------

    def enroll(
        self,
        person_id: str,
        embeddings: np.ndarray,
        name: str,
        role: Role,
        expires_at: float | None,
        replace: bool,
        lookalike_threshold: float | None,
        retry: bool = False,
    ) -> Person:
        """Enrol ``person_id`` with the templates ``embeddings`` ``(n, dim)``.

        ``retry``: the frontend lost this actor during the same call and sends it again; when
        the person exists already with exactly these templates, name, role and expiry (the
        lost attempt committed), they are returned as a success instead of
        ``AlreadyExistsError`` (``cluster.distributed.idempotent``). ``replace`` is idempotent
        by itself."""
        try:
            return self.registry.enroll(
                self.community,
                person_id,
                embeddings,
                name=name,
                role=role,
                expires_at=expires_at,
                replace=replace,
                lookalike_threshold=lookalike_threshold,
            )
        except AlreadyExistsError:
            if retry:
                stored = self.registry.get(self.community, person_id)
                held = self.registry.person_embeddings(self.community, person_id)
                dim = self.registry.dim
                if same_enrolment(stored, held, embeddings, name, role, expires_at, dim):
                    return stored
            raise

    def person_embeddings(self, person_id: str) -> np.ndarray:
        """The stored templates ``(n, dim)`` of one person (erasure looks for their strangers)."""
        return self.registry.person_embeddings(self.community, person_id)

    def remove(self, person_id: str, retry: bool = False) -> int | None:
        """Remove a person; how many templates went. ``retry`` (see ``enroll``): a person
        already gone is a success, ``None`` (the lost attempt removed them; the frontend
        answers with the count it read before the call)."""
        try:
            return self.registry.remove(self.community, person_id)
        except NotFoundError:
            if retry:
                return None
            raise

    def list_persons(self, role: Role | None, limit: int, after: str | None) -> list[Person]:
        return self.registry.list_persons(self.community, role=role, limit=limit, after=after)

    def search(self, embedding: np.ndarray, top_k: int) -> list[tuple[Person, float]]:
        return self.registry.search(self.community, embedding, top_k)

    # -- vehicles -------------------------------------------------------------------------

    def add_vehicle(
        self,
        plate: str,
        role: Role,
        owner: str,
        expires_at: float | None,
        replace: bool,
        retry: bool = False,
    ) -> Vehicle:
        """Register ``plate``. ``retry`` (see ``enroll``): the plate registered already
        with exactly this role, owner and expiry is returned as a success."""
        try:
            return self.vehicles.add(
                self.community,
                plate,
                role=role,
                owner=owner,
                expires_at=expires_at,
                replace=replace,
            )
        except AlreadyExistsError:
            if retry:
                stored = self.vehicles.get(self.community, plate)
                if same_vehicle(stored, role, owner, expires_at):
                    return stored
            raise

    def remove_vehicle(self, plate: str, retry: bool = False) -> Vehicle | None:
        """Unregister ``plate``; the vehicle as it was. ``retry`` (see ``enroll``): a plate
        already gone is a success, ``None`` (the frontend answers with the vehicle it read
        before the call)."""
        try:
            return self.vehicles.remove(self.community, plate)
        except NotFoundError:
            if retry:
                return None
            raise

    def list_vehicles(self, role: Role | None, limit: int, after: str | None) -> list[Vehicle]:
        return self.vehicles.list(self.community, role=role, limit=limit, after=after)

    def search_plates(
        self, text: str, fuzzy: bool, max_distance: float, limit: int
    ) -> list[VehicleMatch]:
        return self.vehicles.search(
            [self.community], text, fuzzy=fuzzy, max_distance=max_distance, limit=limit
        )

    # -- strangers (cluster.distributed.strangers: ClusterStrangers calls these) ------------

    def assign_stranger(
        self, embedding: np.ndarray, t: float, retry: bool = False
    ) -> tuple[str, bool, float]:
        return self.strangers.assign(embedding, t, retry=retry)

    def remove_strangers(self, stranger_ids: list[str], retry: bool = False) -> int:
        return self.strangers.remove(stranger_ids)

    def matching_strangers(self, embeddings: np.ndarray, threshold: float) -> list[str]:
        return self.strangers.index.matching(self.community, embeddings, threshold)

    def stranger_stats(self) -> StrangerStats:
        return self.strangers.index.stats(self.community)

    def list_strangers(self) -> list[Stranger]:
        return self.strangers.index.strangers(self.community)

    def get_stranger(self, stranger_id: str) -> Stranger:
        return self.strangers.index.get(self.community, stranger_id)

    def stranger_sightings_since(self, stranger_id: str, since: float) -> int:
        return self.strangers.index.sightings_since(self.community, stranger_id, since)

    def save_strangers(self) -> bool:
        return self.strangers.flush()

    def close(self) -> None:
        try:
            if self.publisher is not None:
                self.publisher.close()
            self.strangers.close()
        finally:
            self.registry.close()
