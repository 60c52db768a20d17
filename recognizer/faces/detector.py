"""RetinaFace (MobileNet-0.25) face detection: resize, run, decode priors, NMS.

Boxes and landmarks come back in original-image pixels whatever scale the frame was decoded
and resized at.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

import native
from recognizer.backends.base import InferenceBackend
from recognizer.models.manifest import ModelManifest
from recognizer.preprocess import to_blob

STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, best first.

    ``boxes``: ``(n, 4)`` float32 ``[x1, y1, x2, y2]``; ``scores``: ``(n,)`` float32;
    ``landmarks``: ``(n, 5, 2)`` float32 (left eye, right eye, nose, left and right mouth
    corners, as seen in the image).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,):
            raise ValueError(f"boxes {self.boxes.shape} and scores {self.scores.shape} disagree")
        if self.landmarks.shape != (n, 5, 2):
            raise ValueError(f"expected landmarks of shape ({n}, 5, 2), got {self.landmarks.shape}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def resize_long_side(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``image`` so its long side is at most ``long_side`` (never enlarge).

    Returns the resized image and the factor applied (resized = original * factor).
    """
    h, w = image.shape[:2]
    factor = min(1.0, long_side / max(h, w))
    if factor == 1.0:
        return image, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), size[0] / w


class FaceDetector:
    """Runs the RetinaFace model through any ``InferenceBackend``."""

    def __init__(
        self,
        backend: InferenceBackend,
        manifest: ModelManifest,
        long_side: int = 640,
        score_threshold: float = 0.8,
        nms_iou: float = 0.4,
        max_faces: int = 32,
    ) -> None:
        self.backend = backend
        self.manifest = manifest
        self.long_side = long_side
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_faces = max_faces
        self._input_name = manifest.input.name
        self._swap_rb = manifest.input.color_order == "RGB"

    def warm_up(self) -> None:
        self.detect(np.zeros((360, 640, 3), dtype=np.uint8))

    def detect(self, image: np.ndarray, image_scale: float = 1.0) -> Detections:
        """Find faces in ``image`` (``(h, w, 3)`` uint8 BGR).

        ``image_scale`` says how ``image`` relates to the original frame
        (image = original * image_scale), so results are returned in original pixels.
        """
        resized, factor = resize_long_side(image, self.long_side)
        blob = to_blob(resized, self.manifest.input.mean, self.manifest.input.std, self._swap_rb)
        out = self.backend.run({self._input_name: blob})
        loc, conf, landmarks = out["loc"][0], out["conf"][0], out["landmarks"][0]
        priors = native.prior_boxes(resized.shape[0], resized.shape[1], STEPS, MIN_SIZES)
        boxes, scores, points = native.decode_detections(
            loc,
            conf[:, 1],
            landmarks,
            priors,
            score_threshold=self.score_threshold,
            nms_iou=self.nms_iou,
            max_out=self.max_faces,
        )
        # Pixel centres: a point x of the resized image is (x + 0.5) / f - 0.5 in the original.
        f = factor * image_scale
        shift = 0.5 / f - 0.5
        return Detections(
            boxes=(boxes / f + shift).astype(np.float32),
            scores=scores.astype(np.float32),
            landmarks=(points / f + shift).astype(np.float32),
        )
