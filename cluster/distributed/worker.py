"""The recognizer worker (a Ray actor in cluster mode) and what it sends back.

A worker holds its own models (``cluster.engine.Recognizer``, the same code the embedded engine
runs) and turns frames into pure data: faces (boxes, landmarks, quality, embeddings, liveness)
and plate readings. It knows nothing of communities: matching happens in the community's index
actor, the decision on the frontend.

The frontend needs pixels only for a passage's best-shot thumbnail, so the worker sends no
pixels back but a small JPEG thumbnail of every face and plate (``cluster.thumbnails``, ~0.2 ms
each here against a ~4 ms re-decode of the frame on the frontend). ``LazyFrame`` still re-decodes
the frame's own bytes on the frontend if anything else asks for its pixels.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cluster.engine import Lane, PlateReadings, Recognizer
from cluster.thumbnails import face_thumbnail, plate_thumbnail
from recognizer.faces.analyzer import FaceObservation, StageTimer
from recognizer.faces.carry import CarryOffer
from recognizer.faces.scene import Sketch
from recognizer.image import DecodedImage, DecodeLimits, decode
from smartgate.config import Config

_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


@dataclass(frozen=True)
class FrameFacts:
    """What a worker found in one frame.

    ``faces`` come without their aligned crops (``aligned`` is ``(0, 0, 3)``: the frontend
    never uses them); ``scale`` is the decode scale the worker detected at (``scaled = original
    × scale``) and ``decoded_for`` the long side it decoded for, so the frontend re-decodes the
    very same pixels when it needs them; ``face_thumbnails`` / ``plate_thumbnails`` are the
    best-shot JPEGs of ``faces`` / ``readings``, in order."""

    faces: list[FaceObservation]
    readings: PlateReadings
    timings_ms: dict[str, float]
    scale: float
    decoded_for: int
    face_thumbnails: list[bytes] = dataclasses.field(default_factory=list)  # one per face
    plate_thumbnails: list[bytes] = dataclasses.field(default_factory=list)  # one per reading
    sketch: Sketch | None = None  # the frame's grey sketch, when the analyzer made one


@dataclass(frozen=True)
class WorkerInfo:
    """Who a worker is: process id, Ray node id, embedding width and the embedder manifest's
    default match threshold (None when it has none)."""

    pid: int
    node_id: str
    dim: int
    default_threshold: float | None


def strip_pixels(face: FaceObservation) -> FaceObservation:
    """``face`` without its aligned crop (37 KB a face that nobody downstream reads)."""
    return dataclasses.replace(face, aligned=_NO_PIXELS)


class RecognizerWorker:
    """Frames to facts with one set of models. Run as a Ray actor by ``WorkerPool``; a plain
    object in unit tests. One call at a time (the models are not shared between calls)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.recognizer = Recognizer.from_config(config)

    def info(self) -> WorkerInfo:
        """Answers once the models are loaded and warm (the pool's readiness probe)."""
        node_id = ""
        try:
            import ray

            if ray.is_initialized():
                node_id = ray.get_runtime_context().get_node_id()
        except ImportError:  # pragma: no cover - ray is a dependency
            pass
        embedder = self.recognizer.analyzer.embedder
        default = embedder.manifest.default_threshold
        return WorkerInfo(
            os.getpid(), node_id, embedder.dim, None if default is None else float(default)
        )

    def read_frame(
        self,
        image: bytes,
        lane: Lane,
        plate_crop: bytes = b"",
        carry: CarryOffer | None = None,
    ) -> FrameFacts:
        """One frame's faces and plates (``Recognizer.read_frame``); ``carry`` (with a
        ``LoanSnapshot``) lends the gate's decided faces as in embedded mode."""
        timer = StageTimer()
        decoded, faces, readings = self.recognizer.read_frame(image, lane, plate_crop, timer, carry)
        decoded_for = 0 if lane.plates else self.config.detect.long_side
        with timer.stage("thumbnails"):
            face_thumbs = [face_thumbnail(decoded.scaled, f.box, decoded.scale) for f in faces]
            plate_thumbs = [
                b"" if camera else plate_thumbnail(decoded.full(), r.box) for r, camera in readings
            ]
        return FrameFacts(
            [strip_pixels(f) for f in faces],
            readings,
            timer.ms,
            decoded.scale,
            decoded_for,
            face_thumbs,
            plate_thumbs,
            decoded.sketch,
        )

    def enrollment_faces(self, images: Sequence[bytes]) -> list[FaceObservation]:
        """The one usable face of each enrolment photo (``EnrollmentError`` otherwise)."""
        return [strip_pixels(f) for f in self.recognizer.enrollment_faces(images)]

    def query_face(self, image: bytes) -> tuple[FaceObservation, np.ndarray]:
        """The largest face of a search image and its embedding ``(dim,)``."""
        face, embedding = self.recognizer.query_face(image)
        return strip_pixels(face), embedding


class LazyFrame:
    """A frame's pixels on the frontend, decoded from its bytes on first use (a
    ``cluster.engine.FrameImage``). ``scale`` is known without decoding (the worker's)."""

    def __init__(self, data: bytes, limits: DecodeLimits, decoded_for: int, scale: float) -> None:
        self._data = data
        self._limits = limits
        self._decoded_for = decoded_for
        self._scale = scale
        self._decoded: DecodedImage | None = None
        self._lock = threading.Lock()

    @property
    def decoded(self) -> bool:
        """Whether the pixels were needed (and decoded) yet."""
        return self._decoded is not None

    def _image(self) -> DecodedImage:
        with self._lock:
            if self._decoded is None:
                self._decoded = decode(self._data, self._limits, self._decoded_for)
            return self._decoded

    @property
    def scale(self) -> float:
        return self._scale

    @property
    def scaled(self) -> np.ndarray:
        """``(h, w, 3)`` uint8 BGR at the worker's decode scale."""
        return self._image().scaled

    def full(self) -> np.ndarray:
        """``(height, width, 3)`` uint8 BGR at the original resolution."""
        return self._image().full()
