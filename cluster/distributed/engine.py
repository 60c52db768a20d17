"""``ClusterEngine``: the frontend's engine in cluster mode, with the interface the servicers and
``cluster.node.Node`` use of ``cluster.engine.Engine``, so ``Node.around(ClusterEngine)`` serves
the same gRPC API.

A frame goes to a recognizer worker (``WorkerPool``, routed by gate), its faces and plates to
the community's index actor (``IndexDirectory``, one round trip), and the verdicts through the
same policy code as the embedded engine (``cluster.engine.judge``). Enrolment: the photos' faces
on a worker, the templates into the community's actor (durable and indexed when it returns).
Face search: the query face on a worker, then every community's actor in parallel, merged.
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cluster.distributed.directory import IndexDirectory
from cluster.distributed.pool import WorkerPool
from cluster.distributed.routing import merge_top
from cluster.distributed.strangers import ClusterStrangers
from cluster.distributed.worker import FrameFacts, LazyFrame
from cluster.engine import (
    FrameResult,
    Lane,
    MatchedFace,
    MatchedPlate,
    SearchHit,
    check_enrollment,
    judge,
    plate_usable,
)
from indexer.crypto import KeyRing
from indexer.strangers import StrangerBook
from indexer.types import Identification, Person, Role, Vehicle, VehicleMatch
from indexer.vehicles import _order as vehicle_order
from recognizer.faces.analyzer import FaceObservation, StageTimer
from recognizer.faces.carry import CarryLedger, CarryOffer
from recognizer.image import DecodeLimits
from smartgate.config import Config
from smartgate.errors import AlreadyExistsError, ConfigError, InvalidInputError, NotFoundError


@dataclass(frozen=True)
class FrontendKeys:
    """What the frontend's node reads of ``engine.registry.store``: the data keys, which seal
    its strangers index and event log as the index actors seal the templates."""

    keys: KeyRing


class ClusterRegistry:
    """``engine.registry`` in cluster mode: the persons of each community, in its index actor."""

    def __init__(self, directory: IndexDirectory, keys: KeyRing) -> None:
        self.directory = directory
        self.store = FrontendKeys(keys)

    def create_community(self, community: str) -> None:
        if self.directory.exists(community):
            raise AlreadyExistsError(f"community '{community}' already exists")
        self.directory.create(community)

    def has_community(self, community: str) -> bool:
        return self.directory.exists(community)

    def communities(self) -> list[str]:
        return self.directory.communities()

    def person_embeddings(self, community: str, person_id: str) -> np.ndarray:
        result: np.ndarray = self.directory.read(community, "person_embeddings", person_id)
        return result

    def remove(self, community: str, person_id: str) -> int:
        """Remove a person; how many templates went. Their count is read first: a write
        retried after a lost actor that finds them gone answers with it (``directory``)."""
        held = len(self.person_embeddings(community, person_id))  # NotFoundError: not there
        result: int | None = self.directory.write(community, "remove", person_id)
        return held if result is None else result

    def list_persons(
        self, community: str, role: Role | None = None, limit: int = 100, after: str | None = None
    ) -> list[Person]:
        result: list[Person] = self.directory.read(community, "list_persons", role, limit, after)
        return result


class ClusterVehicles:
    """``engine.vehicles`` in cluster mode: each community's plates, in its index actor."""

    def __init__(self, directory: IndexDirectory) -> None:
        self.directory = directory

    def add(
        self,
        community: str,
        plate: str,
        *,
        role: Role = "resident",
        owner: str = "",
        expires_at: float | None = None,
        replace: bool = False,
    ) -> Vehicle:
        result: Vehicle = self.directory.write(
            community, "add_vehicle", plate, role, owner, expires_at, replace, create=True
        )
        return result

    def remove(self, community: str, plate: str) -> Vehicle:
        """Unregister ``plate``; the vehicle as it was. It is read first: a write retried
        after a lost actor that finds it gone answers with it (``directory``)."""
        found: builtins.list[VehicleMatch] = self.directory.read(
            community, "search_plates", plate, False, 0.0, 1
        )
        result: Vehicle | None = self.directory.write(community, "remove_vehicle", plate)
        if result is not None:
            return result
        if not found:  # not registered before the call: what the lost attempt raised
            raise NotFoundError(f"vehicle {plate!r} is not registered in community {community!r}")
        return found[0].vehicle

    def list(
        self, community: str, role: Role | None = None, limit: int = 100, after: str | None = None
    ) -> builtins.list[Vehicle]:
        result: builtins.list[Vehicle] = self.directory.read(
            community, "list_vehicles", role, limit, after
        )
        return result

    def search(
        self,
        communities: builtins.list[str],
        text: str,
        *,
        fuzzy: bool = True,
        max_distance: float = 1.0,
        limit: int = 10,
    ) -> builtins.list[VehicleMatch]:
        """As ``VehicleRegistry.search``: every community checked first, then fanned out."""
        wanted = builtins.list(dict.fromkeys(communities))
        if not wanted:
            raise InvalidInputError("communities must name at least one community")
        for c in wanted:
            self.directory.require(c)
        groups = self.directory.read_many(wanted, "search_plates", text, fuzzy, max_distance, limit)
        found = sorted((m for group in groups for m in group), key=vehicle_order)
        return found[:limit]


class ClusterEngine:
    """See the module docstring. ``open`` starts the worker pool (blocking until
    ``cluster.min_workers`` workers are warm); ``close`` stops it."""

    def __init__(
        self,
        config: Config,
        pool: WorkerPool,
        directory: IndexDirectory,
        threshold: float,
        keys: KeyRing,
    ) -> None:
        self.config = config
        self.pool = pool
        self.directory = directory
        self.registry = ClusterRegistry(directory, keys)
        self.vehicles = ClusterVehicles(directory)
        self.threshold = threshold
        d = config.decode
        self.limits = DecodeLimits(d.max_bytes, d.max_pixels, d.max_side)
        self.embedding_dim = directory.dim

    @classmethod
    def open(cls, config: Config) -> ClusterEngine:
        """Start the pool and find the embedder's width and threshold from a warm worker."""
        if config.capture.workers == 0:
            # The scheduler's threads only wait on the cluster here: enough of them to keep
            # every worker of the largest pool busy, with one frame queued behind each.
            config = replace(
                config, capture=replace(config.capture, workers=2 * config.cluster.max_workers)
            )
        # Before any index actor starts: creates the key file when there is none yet.
        keys = KeyRing.from_config(config.privacy)
        pool = WorkerPool(config)
        pool.start()
        try:
            info = next(iter(pool.live_infos().values()))
            threshold = config.match.threshold
            if threshold is None:
                threshold = info.default_threshold
            if threshold is None:
                raise ConfigError("the embedder has no default threshold; set match.threshold")
            directory = IndexDirectory(
                config.cluster,
                Path(config.data_dir),
                info.dim,
                config.privacy,
                config.index,
                config.events,
            )
        except BaseException:
            pool.close()
            raise
        return cls(config, pool, directory, float(threshold), keys)

    def open_strangers(self, directory: Path) -> StrangerBook:
        """Each community's strangers, held by its index actor for every frontend
        (``cluster.distributed.strangers``; ``directory``, the embedded node's, is unused)."""
        return ClusterStrangers(self.directory)

    def close(self) -> None:
        self.pool.close()
        self.directory.close()

    # -- capture ---------------------------------------------------------------------------

    def process_frame(
        self,
        community: str,
        image: bytes,
        now: float | None = None,
        *,
        lane: Lane = Lane.PEDESTRIAN,
        plate_crop: bytes = b"",
        carry: CarryOffer | None = None,
        gate: str = "",
    ) -> FrameResult:
        """As ``Engine.process_frame``, across the cluster (see the module docstring).

        ``carry``: the worker gets the gate's decided faces with a snapshot of their loans
        (``LoanSnapshot``); the loans it took are recorded in the frontend's ledger when the
        answer is back. Frames route by ``community/gate``."""
        if not community:
            raise InvalidInputError("frame has no community")
        self.directory.require(community)
        ledger = carry.ledger if carry is not None else None
        remote = None
        if carry is not None and isinstance(ledger, CarryLedger):
            loans = ledger.snapshot([c.origin for c in carry.faces])
            remote = replace(carry, ledger=loans)
        facts: FrameFacts = self.pool.call(
            f"{community}/{gate}", "read_frame", image, lane, plate_crop, remote
        )
        if remote is not None and isinstance(ledger, CarryLedger):
            for face in facts.faces:
                if face.carry_origin:
                    ledger.claim(face.carry_origin)
        timer = StageTimer(dict(facts.timings_ms))
        with timer.stage("match"):
            t = time.time() if now is None else now
            usable = [i for i, f in enumerate(facts.faces) if f.embedding is not None]
            queries = (
                np.stack([facts.faces[i].embedding for i in usable])  # type: ignore[misc]
                if usable
                else None
            )
            plate_ok = [plate_usable(self.config, r) for r, _ in facts.readings]
            texts = [r.text for (r, _), ok in zip(facts.readings, plate_ok, strict=True) if ok]
            m = self.config.match
            ids, vehicles = self.directory.read(
                community,
                "match",
                queries,
                self.threshold,
                m.margin,
                m.top_k,
                texts,
                self.config.plates.max_distance,
            )
            faces = _matched_faces(facts.faces, usable, ids, facts.face_thumbnails)
            plates = _matched_plates(facts, plate_ok, vehicles)
            image_ref = LazyFrame(image, self.limits, facts.decoded_for, facts.scale)
            return judge(faces, plates, t, timer.ms, image_ref, facts.sketch)

    # -- registry --------------------------------------------------------------------------

    def enroll(
        self,
        community: str,
        person_id: str,
        images: list[bytes],
        *,
        name: str = "",
        role: str = "resident",
        expires_at: float | None = None,
        replace: bool = False,
        allow_lookalike: bool = False,
    ) -> tuple[Person, list[FaceObservation]]:
        """As ``Engine.enroll`` (the look-alike check included); returns once the templates
        are committed and indexed by the community's actor."""
        check_enrollment(images, role, expires_at)
        faces: list[FaceObservation] = self.pool.call(community, "enrollment_faces", images)
        embeddings = np.stack([f.embedding for f in faces])  # type: ignore[misc]
        check = self.config.privacy.lookalike_check and not allow_lookalike
        person: Person = self.directory.write(
            community,
            "enroll",
            person_id,
            embeddings,
            name,
            role,
            expires_at,
            replace,
            self.threshold if check else None,
            create=True,
        )
        return person, faces

    # -- search ----------------------------------------------------------------------------

    def search_face(
        self, communities: list[str], image: bytes, top_k: int = 5
    ) -> tuple[FaceObservation, list[SearchHit]]:
        """As ``Engine.search_face``: one query face, every community's actor at once."""
        if not communities:
            raise InvalidInputError("name at least one community to search")
        for c in communities:
            self.directory.require(c)
        face, embedding = self.pool.call("search", "query_face", image)
        groups = self.directory.read_many(communities, "search", embedding, top_k)
        return face, [SearchHit(p, s) for p, s in merge_top(groups, top_k)]


def _matched_faces(
    faces: list[FaceObservation],
    usable: list[int],
    ids: list[Identification],
    thumbnails: list[bytes] | None = None,
) -> list[MatchedFace]:
    found: list[Identification | None] = [None] * len(faces)
    for i, ident in zip(usable, ids, strict=True):
        found[i] = ident
    thumbs = thumbnails or [b""] * len(faces)
    return [
        MatchedFace(f, ident, thumb) for f, ident, thumb in zip(faces, found, thumbs, strict=True)
    ]


def _matched_plates(
    facts: FrameFacts, usable: list[bool], matches: list[VehicleMatch | None]
) -> list[MatchedPlate]:
    it = iter(matches)
    thumbs = facts.plate_thumbnails or [b""] * len(facts.readings)
    return [
        MatchedPlate(r, next(it) if ok else None, ok, camera, thumb)
        for (r, camera), ok, thumb in zip(facts.readings, usable, thumbs, strict=True)
    ]
