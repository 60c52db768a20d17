"""The recognition engine: frames, enrolments and searches, independent of the transport.

The gRPC servicers (and later the Ray workers) call this; it ties the recognizer (pixels to
faces) to the indexer (faces to persons) and applies the gate policy in ``cluster.decide``.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import numpy as np

from cluster.decide import Action, Verdict, decide
from indexer.face_index import set_search_threads
from indexer.registry import FaceRegistry
from indexer.types import Identification, Person, VehicleMatch
from indexer.vehicles import VehicleRegistry
from recognizer.faces.analyzer import FaceAnalyzer, FaceObservation, StageTimer
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


@dataclass(frozen=True)
class MatchedPlate:
    reading: PlateReading
    match: VehicleMatch | None  # None when not compared (unusable reading) or no match
    usable: bool  # the reading fits a plate format and scores above plates.min_score
    from_camera_crop: bool = False


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
    image: DecodedImage | None = None


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
        d = config.decode
        self.limits = DecodeLimits(d.max_bytes, d.max_pixels, d.max_side)
        self.threshold = match_threshold(config, analyzer)

    @classmethod
    def from_config(cls, config: Config) -> Engine:
        from recognizer.faces.factory import build_face_analyzer

        set_search_threads(config.match.faiss_threads)
        analyzer = build_face_analyzer(config)
        plate_reader = build_plate_reader_from(config) if config.plates.enabled else None
        registry = FaceRegistry(config.data_dir, analyzer.embedder.dim)
        return cls(config, analyzer, registry, plate_reader)

    # -- capture ---------------------------------------------------------------------------

    def process_frame(
        self,
        community: str,
        image: bytes,
        now: float | None = None,
        *,
        lane: Lane = Lane.PEDESTRIAN,
        plate_crop: bytes = b"",
    ) -> FrameResult:
        """Decide what the gate does for one frame of ``community``.

        Pedestrian lanes look for faces, vehicle lanes for plates, ``BOTH`` for both. A
        ``plate_crop`` made by the camera is read directly instead of searching the frame.
        """
        timer = StageTimer()
        if not community:
            raise InvalidInputError("frame has no community")
        if not self.registry.has_community(community):
            raise NotFoundError(f"community '{community}' does not exist")
        if lane.plates and self.plate_reader is None:
            raise InvalidInputError("plate recognition is disabled on this server (plates.enabled)")
        with timer.stage("decode"):
            # Plates are rectified from full resolution: decode it at once for vehicle lanes.
            scaled_for = 0 if lane.plates else self.config.detect.long_side
            decoded = decode(image, self.limits, scaled_for)
            crop = decode(plate_crop, self.limits) if plate_crop and lane.plates else None
        faces = self.analyzer.analyze(decoded, timer) if lane.faces else []
        readings: list[tuple[PlateReading, bool]] = []
        if lane.plates and self.plate_reader is not None:
            with timer.stage("plates"):
                if crop is not None:
                    readings = [(self.plate_reader.read_crop(crop.scaled), True)]
                else:
                    frame = decoded.full()
                    readings = [(r, False) for r in self.plate_reader.read_frame(frame)]
        with timer.stage("match"):
            t = time.time() if now is None else now
            matched = self._identify(community, faces)
            plates = [self._match_plate(community, r, cam) for r, cam in readings]
            face_verdicts = [_face_verdict(m, t) for m in matched]
            plate_verdicts = [_plate_verdict(p, t) for p in plates]
            action, reason = decide(face_verdicts + plate_verdicts)
        return FrameResult(
            action, reason, matched, plates, timer.ms, face_verdicts, plate_verdicts, decoded
        )

    def _match_plate(self, community: str, reading: PlateReading, camera: bool) -> MatchedPlate:
        usable = reading.valid and reading.score >= self.config.plates.min_score
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
    ) -> tuple[Person, list[FaceObservation]]:
        """Enrol ``person_id`` from photos that each show exactly one usable face."""
        if not images:
            raise InvalidInputError("enrolment needs at least one image")
        if len(images) > MAX_ENROLL_IMAGES:
            raise InvalidInputError(
                f"enrolment takes at most {MAX_ENROLL_IMAGES} images, got {len(images)}"
            )
        if role == "visitor" and expires_at is None:
            raise InvalidInputError("a visitor needs an expiry time (expires_at)")
        faces = [self._enrollment_face(i, data) for i, data in enumerate(images)]
        embeddings = np.stack([f.embedding for f in faces])  # type: ignore[misc]
        person = self.registry.enroll(
            community,
            person_id,
            embeddings,
            name=name,
            role=role,  # type: ignore[arg-type]
            expires_at=expires_at,
            replace=replace,
        )
        return person, faces

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
        decoded = decode(image, self.limits, self.config.detect.long_side)
        faces = self.analyzer.analyze(decoded, embed_all=True)
        if not faces:
            raise InvalidInputError("no face found in the search image")
        query = max(faces, key=lambda f: f.area)
        if query.embedding is None:
            raise InvalidInputError("the search face could not be embedded")
        hits = [
            SearchHit(person, score)
            for c in communities
            for person, score in self.registry.search(c, query.embedding, top_k)
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
    from recognizer.plates.factory import build_plate_reader

    return build_plate_reader(
        config.models.cache_dir,
        BackendOptions.from_config(config.models),
        detector=config.plates.detector,
        recognizer=config.plates.recognizer,
        long_side=config.plates.long_side,
    )
