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

    @classmethod
    def none(cls) -> Detections:
        """No faces."""
        return cls(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        )


def resize_long_side(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``image`` so its long side is at most ``long_side`` (never enlarge).

    Returns the resized image and the factor applied (resized = original * factor).
    """
    resized, fx, _ = _resize_by(image, min(1.0, long_side / max(image.shape[:2])))
    return resized, fx


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

    def detect(
        self,
        image: np.ndarray,
        image_scale: float = 1.0,
        region: tuple[int, int, int, int] | None = None,
    ) -> Detections:
        """Find faces in ``image`` (``(h, w, 3)`` uint8 BGR).

        ``image_scale`` says how ``image`` relates to the original frame
        (image = original * image_scale), so results are returned in original pixels.
        ``region`` ``(x0, y0, x1, y1)`` (pixels of ``image``): search only there, at the
        resolution the whole image would be searched at (the same faces are found, for a
        fraction of the work: ``recognizer.faces.carry.detection_region``).
        """
        h, w = image.shape[:2]
        factor = min(1.0, self.long_side / max(h, w))
        x0 = y0 = 0
        if region is not None:
            x0, y0, x1, y1 = snap_region(region, factor, w, h, STEPS[-1])
            image = image[y0:y1, x0:x1]
        resized, fx, fy = _resize_by(image, factor)
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

        # Pixel centres: a point x of the resized image is (x + 0.5) / f - 0.5 in what was
        # resized, offset by the region's corner, then the same again for image_scale.
        def back(xy: np.ndarray) -> np.ndarray:
            xs = ((xy[..., 0] + 0.5) / fx + x0) / image_scale - 0.5
            ys = ((xy[..., 1] + 0.5) / fy + y0) / image_scale - 0.5
            return np.stack([xs, ys], axis=-1).astype(np.float32)

        return Detections(
            boxes=back(boxes.reshape(-1, 2, 2)).reshape(-1, 4),
            scores=scores.astype(np.float32),
            landmarks=back(points.reshape(-1, 5, 2)),
        )


def snap_region(
    region: tuple[int, int, int, int], factor: float, width: int, height: int, stride: int
) -> tuple[int, int, int, int]:
    """``region`` grown outwards to the grid the whole ``width`` x ``height`` image would be
    searched on: its corners on multiples of ``stride`` pixels of the image resized by
    ``factor``, so the detector sees the same pixels on the same anchors as in a whole-frame
    search and finds the same boxes (up to the region's edges)."""
    step = stride / factor
    x0, y0, x1, y1 = region
    return (
        int(np.floor(x0 / step) * step),
        int(np.floor(y0 / step) * step),
        min(width, int(np.ceil(np.ceil(x1 / step) * step))),
        min(height, int(np.ceil(np.ceil(y1 / step) * step))),
    )


def _resize_by(image: np.ndarray, factor: float) -> tuple[np.ndarray, float, float]:
    """``image`` scaled by ``factor`` (<= 1); returns it and the factors applied per axis
    (x, y), which rounding to whole pixels makes differ slightly from ``factor``."""
    if factor >= 1.0:
        return image, 1.0, 1.0
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    return resized, size[0] / w, size[1] / h
