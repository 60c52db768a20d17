"""The recognition engine: frames, enrolments and searches, independent of the transport.

The gRPC servicers (and later the Ray workers) call this; it ties the recognizer (pixels to
faces) to the indexer (faces to persons) and applies the gate policy in ``cluster.decide``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from cluster.decide import Action, Verdict, decide
from indexer.crypto import KeyRing
from indexer.face_index import IndexPolicy, set_search_threads
from indexer.registry import FaceRegistry
from indexer.strangers import StrangerBook, StrangerIndex
from indexer.types import Identification, Person, VehicleMatch
from indexer.vehicles import VehicleRegistry
from recognizer.faces.analyzer import FaceAnalyzer, FaceObservation, StageTimer
from recognizer.faces.carry import CarryOffer
from recognizer.faces.scene import Sketch
from recognizer.image import DecodedImage, DecodeLimits, decode
from recognizer.plates.reader import PlateReader, PlateReading
from smartgate.config import Config
from smartgate.errors import ConfigError, EnrollmentError, InvalidInputError, NotFoundError

# In enrolment photos, faces smaller than this fraction of the largest are background faces.
BACKGROUND_FACE_RATIO = 0.4
MAX_ENROLL_IMAGES = 20


@dataclass(frozen=True)
class MatchedFace:
    face: FaceObservation
    identification: Identification | None  # None when the face was not compared
    thumbnail: bytes = b""  # best-shot JPEG cut by a cluster worker (cluster.thumbnails)


@dataclass(frozen=True)
class MatchedPlate:
    reading: PlateReading
    match: VehicleMatch | None  # None when not compared (unusable reading) or no match
    usable: bool  # the reading fits a plate format and scores above plates.min_score
    from_camera_crop: bool = False
    thumbnail: bytes = b""  # best-shot JPEG cut by a cluster worker (cluster.thumbnails)


class Lane(enum.IntEnum):
    """Which recognisers a frame goes through. Values match smartgate.v1.LaneKind."""

    PEDESTRIAN = 1
    VEHICLE = 2
    BOTH = 3

    @property
    def faces(self) -> bool:
        return self in (Lane.PEDESTRIAN, Lane.BOTH)

    @property
    def plates(self) -> bool:
        return self in (Lane.VEHICLE, Lane.BOTH)


class FrameImage(Protocol):
    """What the passages need of a frame for best-shot thumbnails: ``DecodedImage`` is one; the
    cluster frontend's lazily decoded frame (``cluster.distributed``) is another."""

    @property
    def scale(self) -> float: ...

    @property
    def scaled(self) -> np.ndarray: ...

    def full(self) -> np.ndarray: ...


@dataclass
class FrameResult:
    """One frame's verdict. ``face_verdicts``/``plate_verdicts`` pair up with ``faces``/
    ``plates``; ``image`` is the decoded frame (for best-shot thumbnails)."""

    action: Action
    reason: str
    faces: list[MatchedFace]
    plates: list[MatchedPlate] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    face_verdicts: list[Verdict] = field(default_factory=list)
    plate_verdicts: list[Verdict] = field(default_factory=list)
    image: FrameImage | None = None
    # The frame's grey sketch when its faces were searched for (recognizer.faces.scene).
    sketch: Sketch | None = None


@dataclass(frozen=True)
class SearchHit:
    person: Person
    score: float


def match_threshold(config: Config, analyzer: FaceAnalyzer) -> float:
    """The cosine threshold in force: the configured one, else the embedder manifest's."""
    if config.match.threshold is not None:
        return config.match.threshold
    default = analyzer.embedder.manifest.default_threshold
    if default is None:
        raise ConfigError(
            f"embedder {analyzer.embedder.manifest.name} has no default threshold; "
            "set match.threshold"
        )
    return float(default)


#: Plate readings of one frame, each with whether it came from the camera's own crop.
PlateReadings = list[tuple[PlateReading, bool]]


class Recognizer:
    """Pixels to facts with one set of models (decode, faces, plates): no registry, no policy.

    ``Engine`` holds one; each Ray recognizer worker (``cluster.distributed``) holds its own, so
    the embedded and the cluster modes run the same recognition code.
    """

    def __init__(
        self, config: Config, analyzer: FaceAnalyzer, plate_reader: PlateReader | None = None
    ) -> None:
        self.config = config
        self.analyzer = analyzer
        self.plate_reader = plate_reader
        d = config.decode
        self.limits = DecodeLimits(d.max_bytes, d.max_pixels, d.max_side)

    @classmethod
    def from_config(cls, config: Config) -> Recognizer:
        from recognizer.faces.factory import build_face_analyzer

        analyzer = build_face_analyzer(config)
        plate_reader = build_plate_reader_from(config) if config.plates.enabled else None
        return cls(config, analyzer, plate_reader)

    def read_frame(
        self,
        image: bytes,
        lane: Lane,
        plate_crop: bytes,
        timer: StageTimer,
        carry: CarryOffer | None = None,
    ) -> tuple[DecodedImage, list[FaceObservation], PlateReadings]:
        """Decode ``image`` and find its faces (pedestrian lanes) and plates (vehicle lanes; a
        camera ``plate_crop`` is read directly instead of searching the frame). Faces of
        ``carry`` (the gate's decided faces) may lend their embeddings."""
        if lane.plates and self.plate_reader is None:
            raise InvalidInputError("plate recognition is disabled on this server (plates.enabled)")
        with timer.stage("decode"):
            # Plates are rectified from full resolution: decode it at once for vehicle lanes.
            scaled_for = 0 if lane.plates else self.config.detect.long_side
            full_when = (
                (lambda scale: self.analyzer.wants_full_resolution(carry, scale))
                if carry is not None and lane.faces
                else None
            )
            decoded = decode(image, self.limits, scaled_for, full_when)
            crop = decode(plate_crop, self.limits) if plate_crop and lane.plates else None
        faces = self.analyzer.analyze(decoded, timer, carry=carry) if lane.faces else []
        readings: PlateReadings = []
        if lane.plates and self.plate_reader is not None:
            with timer.stage("plates"):
                if crop is not None:
                    readings = [(self.plate_reader.read_crop(crop.scaled), True)]
                else:
                    frame = decoded.full()
                    readings = [(r, False) for r in self.plate_reader.read_frame(frame)]
        return decoded, faces, readings

    def enrollment_faces(self, images: Sequence[bytes]) -> list[FaceObservation]:
        """The one usable face of each enrolment photo (``EnrollmentError`` naming the photo
        otherwise)."""
        return [self._enrollment_face(i, data) for i, data in enumerate(images)]

    def _enrollment_face(self, index: int, data: bytes) -> FaceObservation:
        where = f"image {index + 1}"
        try:
            decoded = decode(data, self.limits, self.config.detect.long_side)
        except InvalidInputError as exc:
            raise type(exc)(f"{where}: {exc}") from exc
        faces = self.analyzer.analyze(decoded, embed_all=True)
        if not faces:
            raise EnrollmentError(f"{where}: no face found")
        largest = max(f.quality.size_px for f in faces)
        main = [f for f in faces if f.quality.size_px >= BACKGROUND_FACE_RATIO * largest]
        if len(main) > 1:
            raise EnrollmentError(
                f"{where}: {len(main)} faces found; an enrolment photo must show one person"
            )
        face = main[0]
        if not face.quality.usable:
            reasons = ", ".join(face.quality.reasons)
            raise EnrollmentError(f"{where}: the face is not usable for enrolment ({reasons})")
        return face

    def query_face(self, image: bytes) -> tuple[FaceObservation, np.ndarray]:
        """The largest face of a search image and its embedding ``(dim,)``."""
        decoded = decode(image, self.limits, self.config.detect.long_side)
        faces = self.analyzer.analyze(decoded, embed_all=True)
        if not faces:
            raise InvalidInputError("no face found in the search image")
        query = max(faces, key=lambda f: f.area)
        if query.embedding is None:
            raise InvalidInputError("the search face could not be embedded")
        return query, query.embedding


def check_enrollment(images: Sequence[bytes], role: str, expires_at: float | None) -> None:
    """The checks an enrolment passes before any photo is looked at."""
    if not images:
        raise InvalidInputError("enrolment needs at least one image")
    if len(images) > MAX_ENROLL_IMAGES:
        raise InvalidInputError(
            f"enrolment takes at most {MAX_ENROLL_IMAGES} images, got {len(images)}"
        )
    if role == "visitor" and expires_at is None:
        raise InvalidInputError("a visitor needs an expiry time (expires_at)")


def plate_usable(config: Config, reading: PlateReading) -> bool:
    """A reading is matched against the vehicles when it fits a format and scores enough."""
    return reading.valid and reading.score >= config.plates.min_score


def judge(
    faces: list[MatchedFace],
    plates: list[MatchedPlate],
    now: float,
    timings_ms: dict[str, float],
    image: FrameImage | None,
    sketch: Sketch | None = None,
) -> FrameResult:
    """The frame's verdicts and its action under the gate policy (``cluster.decide``)."""
    face_verdicts = [_face_verdict(m, now) for m in faces]
    plate_verdicts = [_plate_verdict(p, now) for p in plates]
    action, reason = decide(face_verdicts + plate_verdicts)
    return FrameResult(
        action, reason, faces, plates, timings_ms, face_verdicts, plate_verdicts, image, sketch
    )


class Engine:
    def __init__(
        self,
        config: Config,
        analyzer: FaceAnalyzer,
        registry: FaceRegistry,
        plate_reader: PlateReader | None = None,
    ) -> None:
        self.config = config
        self.analyzer = analyzer
        self.registry = registry
        self.plate_reader = plate_reader
        self.vehicles = VehicleRegistry(registry)
        self.recognizer = Recognizer(config, analyzer, plate_reader)
        self.limits = self.recognizer.limits
        self.threshold = match_threshold(config, analyzer)

    @property
    def embedding_dim(self) -> int:
        """Width of the embedder's vectors (the strangers index needs it)."""
        return self.analyzer.embedder.dim

    @classmethod
    def from_config(cls, config: Config) -> Engine:
        from recognizer.faces.factory import build_face_analyzer

        set_search_threads(config.match.faiss_threads)
        analyzer = build_face_analyzer(config)
        plate_reader = build_plate_reader_from(config) if config.plates.enabled else None
        keys = KeyRing.from_config(config.privacy)  # seals what is stored (indexer.crypto)
        registry = FaceRegistry(
            config.data_dir,
            analyzer.embedder.dim,
            policy=IndexPolicy.from_config(config.index),
            keys=keys,
            snapshots=config.index,
        )
        return cls(config, analyzer, registry, plate_reader)

    def open_strangers(self, directory: Path) -> StrangerBook:
        """The node's strangers: one ``StrangerIndex`` for every community, saved sealed under
        ``directory`` (``ClusterEngine.open_strangers`` gives each community's index actor's)."""
        return StrangerIndex.load(directory, self.embedding_dim, keys=self.registry.store.keys)

    def close(self) -> None:
        """Close the registry (it writes the face snapshots of the communities changed since
        their last one); the engine is unusable afterwards."""
        self.registry.close()

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
        """Decide what the gate does for one frame of ``community``.

        Pedestrian lanes look for faces, vehicle lanes for plates, ``BOTH`` for both. A
        ``plate_crop`` made by the camera is read directly instead of searching the frame.
        ``carry``: the gate's decided faces, whose embeddings a face in the same place may
        reuse (``recognizer.faces.carry``). ``gate`` is the camera's gate (the cluster engine
        routes by it; one process needs nothing of it).
        """
        del gate
        timer = StageTimer()
        if not community:
            raise InvalidInputError("frame has no community")
        if not self.registry.has_community(community):
            raise NotFoundError(f"community '{community}' does not exist")
        decoded, faces, readings = self.recognizer.read_frame(image, lane, plate_crop, timer, carry)
        with timer.stage("match"):
            t = time.time() if now is None else now
            matched = self._identify(community, faces)
            plates = [self._match_plate(community, r, cam) for r, cam in readings]
            return judge(matched, plates, t, timer.ms, decoded, decoded.sketch)

    def _match_plate(self, community: str, reading: PlateReading, camera: bool) -> MatchedPlate:
        usable = plate_usable(self.config, reading)
        match = (
            self.vehicles.match(community, reading.text, self.config.plates.max_distance)
            if usable
            else None
        )
        return MatchedPlate(reading, match, usable, camera)

    def _identify(self, community: str, faces: list[FaceObservation]) -> list[MatchedFace]:
        usable = [i for i, f in enumerate(faces) if f.embedding is not None]
        ids: list[Identification | None] = [None] * len(faces)
        if usable:
            queries = np.stack([faces[i].embedding for i in usable])  # type: ignore[misc]
            results = self.registry.identify(
                community,
                queries,
                threshold=self.threshold,
                margin=self.config.match.margin,
                k=self.config.match.top_k,
            )
            for i, r in zip(usable, results, strict=True):
                ids[i] = r
        return [MatchedFace(f, ident) for f, ident in zip(faces, ids, strict=True)]

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
        """Enrol ``person_id`` from photos that each show exactly one usable face. A photo
        matching another person of the community (above the match threshold) is refused
        (``ConflictError``) unless ``allow_lookalike`` or ``privacy.lookalike_check`` is off."""
        check_enrollment(images, role, expires_at)
        faces = self.recognizer.enrollment_faces(images)
        embeddings = np.stack([f.embedding for f in faces])  # type: ignore[misc]
        person = self.registry.enroll(
            community,
            person_id,
            embeddings,
            name=name,
            role=role,  # type: ignore[arg-type]
            expires_at=expires_at,
            replace=replace,
            lookalike_threshold=(
                self.threshold
                if self.config.privacy.lookalike_check and not allow_lookalike
                else None
            ),
        )
        return person, faces

    # -- search ----------------------------------------------------------------------------

    def search_face(
        self, communities: list[str], image: bytes, top_k: int = 5
    ) -> tuple[FaceObservation, list[SearchHit]]:
        """The largest face in ``image`` against every community in ``communities``."""
        if not communities:
            raise InvalidInputError("name at least one community to search")
        for c in communities:
            if not self.registry.has_community(c):
                raise NotFoundError(f"community '{c}' does not exist")
        query, embedding = self.recognizer.query_face(image)
        hits = [
            SearchHit(person, score)
            for c in communities
            for person, score in self.registry.search(c, embedding, top_k)
        ]
        hits.sort(key=lambda h: -h.score)
        return query, hits[:top_k]


def _face_verdict(m: MatchedFace, now: float) -> Verdict:
    ident = m.identification
    person = ident.person if ident is not None else None
    return Verdict(
        usable=m.face.quality.usable,
        accepted=bool(ident and ident.accepted and person is not None),
        role=person.role if person is not None else None,
        valid=person.is_valid_at(now) if person is not None else False,
        identity=person.person_id if person is not None else None,
    )


def _plate_verdict(p: MatchedPlate, now: float) -> Verdict:
    vehicle = p.match.vehicle if p.match is not None else None
    return Verdict(
        usable=p.usable,
        accepted=vehicle is not None,
        role=vehicle.role if vehicle is not None else None,
        valid=vehicle.is_valid_at(now) if vehicle is not None else False,
        identity=vehicle.plate if vehicle is not None else p.reading.text,
        kind="plate",
        fuzzy=bool(p.match and p.match.fuzzy),
    )


def build_plate_reader_from(config: Config) -> PlateReader:
    """The plate reader named by ``config.plates``, models verified and warmed."""
    from recognizer.backends.base import BackendOptions
    from recognizer.backends.factory import make_backend
    from recognizer.plates.factory import build_plate_reader

    return build_plate_reader(
        config.models.cache_dir,
        BackendOptions.from_config(config.models),
        detector=config.plates.detector,
        recognizer=config.plates.recognizer,
        long_side=config.plates.long_side,
        backend_factory=lambda model: make_backend(model, config.models),
    )
