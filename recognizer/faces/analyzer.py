"""One frame in, every face out: detect → align → quality → embed → liveness.

``FaceAnalyzer`` owns no network or storage; it turns pixels into ``FaceObservation``s and
records how long each stage took.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from recognizer.faces.align import align_face, context_crop
from recognizer.faces.carry import (
    Carried,
    CarryOffer,
    assign,
    detection_region,
    region_misses,
    still_check_due,
    still_scene,
)
from recognizer.faces.detector import Detections, FaceDetector
from recognizer.faces.embedder import FaceEmbedder
from recognizer.faces.liveness import LivenessScorer
from recognizer.faces.quality import QualityReport, QualityThresholds, assess, face_size
from recognizer.faces.scene import Sketch, sketch
from recognizer.image import DecodedImage

#: A face smaller than this share of the embedder's crop in the reduced-scale decode is aligned
#: from a full-resolution decode (~5 ms more for 1080p). Above it the two alignments embed to
#: cosine >= 0.987 of each other (mean 0.994; ``python -m benchmarks.align_scale``), which moves
#: no score across the match threshold; below 0.5 they drift apart (mean 0.90 under 0.4).
FULL_RES_BELOW = 0.6


#: Stage names of the two kinds of face search (``StageTimer``; clients see them in
#: ``Decision.timings_ms``): the whole frame, or only around a decided passage's faces.
WHOLE_FRAME_STAGE = "detect"
REGION_STAGE = "detect_region"
#: Sketching a frame and comparing it with its gate's last whole-searched one (``scene``).
STILL_STAGE = "still"


def searched_whole_frame(timings_ms: dict[str, float]) -> bool:
    """Whether a frame with these stage times had its whole frame searched for faces (False
    only when a region search alone found them: what lay outside was not looked at)."""
    return REGION_STAGE not in timings_ms or WHOLE_FRAME_STAGE in timings_ms


@dataclass(frozen=True, eq=False)
class FaceObservation:
    """One face. ``box``: ``(4,)`` [x1, y1, x2, y2] and ``landmarks``: ``(5, 2)``, both in
    original pixels; ``embedding``: ``(dim,)`` unit vector, or None when the face was not
    usable; ``liveness``: live probability, or None when not scored."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    quality: QualityReport
    embedding: np.ndarray | None
    liveness: float | None
    aligned: np.ndarray = field(repr=False)
    carried: int = 0
    # The ledger id of what was lent (recognizer.faces.carry): the embedding and liveness when
    # ``carried`` > 0, only the liveness when ``carried`` is 0; 0 when nothing was lent.
    carry_origin: int = 0

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


@dataclass
class StageTimer:
    """Milliseconds per stage, accumulated."""

    ms: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3


class FaceAnalyzer:
    def __init__(
        self,
        detector: FaceDetector,
        embedder: FaceEmbedder,
        liveness: LivenessScorer | None,
        quality: QualityThresholds,
        parallel_liveness: bool = True,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.liveness = liveness
        self._side = (
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="liveness")
            if parallel_liveness and liveness is not None
            else None
        )
        self.quality = quality

    def warm_up(self) -> None:
        """Run every model once so the first real frame is not slow."""
        self.detector.warm_up()
        self.embedder.warm_up()
        if self.liveness is not None:
            self.liveness.warm_up()

    def analyze(
        self,
        image: DecodedImage,
        timer: StageTimer | None = None,
        embed_all: bool = False,
        carry: CarryOffer | None = None,
    ) -> list[FaceObservation]:
        """Every face in ``image``, best detection first.

        Embeddings and liveness are computed for usable faces only, or for every face with
        ``embed_all`` (enrolment wants to say why a face is unusable *and* compare it). A
        face that may take over a decided face of ``carry`` reuses its embedding and liveness
        instead (it is still aligned and judged for quality: the best shot needs that), or
        only its liveness when the carried face lends no embedding.
        """
        timer = timer or StageTimer()
        dets = self._detect(image, timer, carry)
        if len(dets) == 0:
            return []
        reuse: list[Carried | None] = [None] * len(dets)
        loans = [0] * len(dets)
        if carry is not None:
            reuse = assign(dets.boxes, carry.faces, carry.t, carry.policy)
            for i, lent in enumerate(reuse):
                if lent is not None:
                    loans[i] = carry.ledger.claim(lent.origin)
                    if loans[i]:
                        continue
                    # Spent: embedded afresh, with the liveness scored before the decision
                    # when the policy lends it.
                    keep = carry.policy.lend_liveness and lent.liveness is not None
                    reuse[i] = replace(lent, embedding=None) if keep else None
        with timer.stage("align"):
            crop_size = self.embedder.input_size
            aligned = np.stack(
                [self._align(image, dets.landmarks[i], crop_size) for i in range(len(dets))]
            )
        with timer.stage("quality"):
            reports = [
                assess(dets.landmarks[i], aligned[i], self.quality) for i in range(len(dets))
            ]
        chosen = [i for i, r in enumerate(reports) if embed_all or r.usable]
        fresh = [i for i in chosen if (lent := reuse[i]) is None or lent.embedding is None]
        known = {i: lent.liveness for i in fresh if (lent := reuse[i]) is not None}
        computed = self._embed_and_score(image, dets.boxes, aligned, fresh, timer, known)
        faces = []
        for i in range(len(dets)):
            embedding: np.ndarray | None = None
            liveness: float | None = None
            carried = origin = 0
            lent = reuse[i]
            if i in computed:
                embedding, liveness = computed[i]
                origin = lent.origin if lent is not None else 0  # liveness lent
            elif lent is not None and i in chosen:
                embedding, liveness = lent.embedding, lent.liveness
                carried, origin = loans[i], lent.origin
            faces.append(
                FaceObservation(
                    box=dets.boxes[i],
                    score=float(dets.scores[i]),
                    landmarks=dets.landmarks[i],
                    quality=reports[i],
                    embedding=embedding,
                    liveness=liveness,
                    aligned=aligned[i],
                    carried=carried,
                    carry_origin=origin,
                )
            )
        return faces

    def wants_full_resolution(self, carry: CarryOffer | None, scale: float) -> bool:
        """Whether a face where ``carry``'s view saw one would be aligned from the full
        resolution if the frame were decoded at ``scale`` (see ``FULL_RES_BELOW``)."""
        if carry is None or carry.view is None or len(carry.view.sizes) == 0:
            return False
        small = FULL_RES_BELOW * self.embedder.input_size
        return bool(np.any(carry.view.sizes * scale < small))

    def _detect(
        self, image: DecodedImage, timer: StageTimer, carry: CarryOffer | None
    ) -> Detections:
        """The frame's faces: around where the gate's faces were when ``carry`` allows that
        (``detection_region``) or when nothing changed outside them since the gate's last
        whole-searched frame (``still_scene``; with no faces in view, no search at all), else,
        or when that search may have missed something, in the whole frame (stages
        ``REGION_STAGE``, ``WHOLE_FRAME_STAGE``). A whole-searched frame is sketched
        (``image.sketch``) when the policy compares sketches."""
        height, width = image.scaled.shape[:2]
        if carry is not None and still_check_due(carry):
            with timer.stage(STILL_STAGE):
                still = still_scene(carry, self._sketch(image))
            if still and carry.view is not None and len(carry.view.boxes) == 0:
                timer.ms.setdefault(REGION_STAGE, 0.0)  # nothing in view, nothing came in
                return Detections.none()
            if still:
                carry = replace(carry, region=True)
        region = detection_region(carry, width, height, image.scale) if carry is not None else None
        if region is not None and carry is not None and carry.view is not None:
            with timer.stage(REGION_STAGE):
                dets = self.detector.detect(image.scaled, image.scale, region)
            expected = len(carry.view.boxes)
            if not region_misses(dets.boxes, region, width, height, image.scale, expected):
                return dets
        with timer.stage(WHOLE_FRAME_STAGE):
            dets = self.detector.detect(image.scaled, image.scale)
        if carry is not None and carry.policy.still_diff > 0:
            with timer.stage(STILL_STAGE):
                self._sketch(image)
        return dets

    @staticmethod
    def _sketch(image: DecodedImage) -> Sketch:
        """``image``'s sketch, made once."""
        if image.sketch is None:
            image.sketch = sketch(image.scaled, image.scale)
        return image.sketch

    def _embed_and_score(
        self,
        image: DecodedImage,
        boxes: np.ndarray,
        aligned: np.ndarray,
        chosen: list[int],
        timer: StageTimer,
        known: dict[int, float | None] | None = None,
    ) -> dict[int, tuple[np.ndarray, float | None]]:
        """Embeddings ``(dim,)`` and live probabilities of the faces ``chosen``, by index;
        the liveness of the faces in ``known`` is taken from it instead of scored."""
        if not chosen:
            return {}
        known = known or {}
        scored = [i for i in chosen if i not in known]
        live = np.zeros(0, dtype=np.float32)
        # Liveness runs beside the embedding when a second thread is allowed: on a node
        # with a spare core (a quiet gate) that takes its cost off the frame's latency.
        pending = None
        if self.liveness is not None and self._side is not None and scored:
            pending = self._side.submit(self._score_liveness, image, boxes, scored)
        with timer.stage("embed"):
            embeddings = self.embedder.embed(aligned[chosen])
        if self.liveness is not None and scored:
            # In parallel mode this stage is only the wait left after the embedding.
            with timer.stage("liveness"):
                live = (
                    pending.result()
                    if pending is not None
                    else self._score_liveness(image, boxes, scored)
                )
        scores: dict[int, float | None] = dict(known)
        if live.size:
            scores.update((i, float(live[n])) for n, i in enumerate(scored))
        return {i: (embeddings[n], scores.get(i)) for n, i in enumerate(chosen)}

    def _score_liveness(
        self, image: DecodedImage, boxes: np.ndarray, chosen: list[int]
    ) -> np.ndarray:
        """Live probabilities ``(len(chosen),)`` for the faces ``chosen`` of ``boxes``."""
        if self.liveness is None:
            return np.zeros(0, dtype=np.float32)
        size = self.liveness.input_size
        crops = np.stack(
            [
                context_crop(image.scaled, boxes[i], self.liveness.crop_factor, size, image.scale)
                for i in chosen
            ]
        )
        return self.liveness.score(crops)

    @staticmethod
    def _align(image: DecodedImage, landmarks: np.ndarray, crop_size: int) -> np.ndarray:
        # A reduced-scale decode is enough when the face is at least FULL_RES_BELOW of the
        # crop in it; otherwise take the pixels from the full-resolution image.
        if image.scale < 1.0 and face_size(landmarks) * image.scale < FULL_RES_BELOW * crop_size:
            return align_face(image.full(), landmarks, crop_size, 1.0)
        return align_face(image.scaled, landmarks, crop_size, image.scale)
