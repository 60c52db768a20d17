"""The recognition engine: frames, enrolments and searches, independent of the transport.

The gRPC servicers (and later the Ray workers) call this; it ties the recognizer (pixels to
faces) to the indexer (faces to persons) and applies the gate policy in ``cluster.decide``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from cluster.decide import Action, FaceVerdict, decide
from indexer.face_index import set_search_threads
from indexer.registry import FaceRegistry
from indexer.types import Identification, Person
from recognizer.faces.analyzer import FaceAnalyzer, FaceObservation, StageTimer
from recognizer.image import DecodeLimits, decode
from smartgate.config import Config
from smartgate.errors import ConfigError, EnrollmentError, InvalidInputError, NotFoundError

# In enrolment photos, faces smaller than this fraction of the largest are background faces.
BACKGROUND_FACE_RATIO = 0.4
MAX_ENROLL_IMAGES = 20


@dataclass(frozen=True)
class MatchedFace:
    face: FaceObservation
    identification: Identification | None  # None when the face was not compared


@dataclass
class FrameResult:
    action: Action
    reason: str
    faces: list[MatchedFace]
    timings_ms: dict[str, float] = field(default_factory=dict)


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
    def __init__(self, config: Config, analyzer: FaceAnalyzer, registry: FaceRegistry) -> None:
        self.config = config
        self.analyzer = analyzer
        self.registry = registry
        d = config.decode
        self.limits = DecodeLimits(d.max_bytes, d.max_pixels, d.max_side)
        self.threshold = match_threshold(config, analyzer)

    @classmethod
    def from_config(cls, config: Config) -> Engine:
        from recognizer.faces.factory import build_face_analyzer

        set_search_threads(config.match.faiss_threads)
        analyzer = build_face_analyzer(config)
        registry = FaceRegistry(config.data_dir, analyzer.embedder.dim)
        return cls(config, analyzer, registry)

    # -- capture ---------------------------------------------------------------------------

    def process_frame(self, community: str, image: bytes, now: float | None = None) -> FrameResult:
        """Decide what the gate does for one frame of ``community``."""
        timer = StageTimer()
        if not community:
            raise InvalidInputError("frame has no community")
        if not self.registry.has_community(community):
            raise NotFoundError(f"community '{community}' does not exist")
        with timer.stage("decode"):
            decoded = decode(image, self.limits, self.config.detect.long_side)
        faces = self.analyzer.analyze(decoded, timer)
        with timer.stage("match"):
            matched = self._identify(community, faces)
            t = time.time() if now is None else now
            verdicts = [_verdict(m, t) for m in matched]
            action, reason = decide(verdicts)
        return FrameResult(action, reason, matched, timer.ms)

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


def _verdict(m: MatchedFace, now: float) -> FaceVerdict:
    ident = m.identification
    person = ident.person if ident is not None else None
    return FaceVerdict(
        usable=m.face.quality.usable,
        accepted=bool(ident and ident.accepted and person is not None),
        role=person.role if person is not None else None,
        valid=person.is_valid_at(now) if person is not None else False,
        person_id=person.person_id if person is not None else None,
    )
