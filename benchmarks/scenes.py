"""Camera frames built from the shared photos: passages with realistic motion, and scenes.

A *passage* is what a gate camera records while one person (or car) passes: the same photo,
composited into a camera-sized frame, drifting across it, growing as it approaches, with a
little blur and JPEG noise that varies from frame to frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PassageSpec:
    frames: int = 30
    width: int = 1280
    height: int = 720
    start_scale: float = 0.75  # subject height as a share of the frame height, first frame
    end_scale: float = 0.95  # ... last frame (approaching the camera)
    drift_px_per_frame: float = 4.0  # horizontal travel per frame (a walk at 25 fps)
    jitter_px: float = 6.0  # per-frame random offset
    max_blur: float = 1.2  # Gaussian sigma, varied per frame
    jpeg_quality: int = 88
    background: int = 110


def passage_frames(photo: np.ndarray, spec: PassageSpec, seed: int = 0) -> list[bytes]:
    """JPEG frames of ``photo`` (``(h, w, 3)`` uint8 BGR) passing a camera."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(spec.frames):
        progress = i / max(1, spec.frames - 1)
        scale = spec.start_scale + (spec.end_scale - spec.start_scale) * progress
        h = int(spec.height * scale)
        w = int(photo.shape[1] * h / photo.shape[0])
        subject = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
        sigma = rng.uniform(0.0, spec.max_blur)
        if sigma > 0.3:
            subject = cv2.GaussianBlur(subject, (0, 0), sigma)
        drift = spec.drift_px_per_frame * (spec.frames - 1)
        cx = spec.width / 2 - drift / 2 + drift * progress
        x = int(cx - w / 2 + rng.normal(0, spec.jitter_px))
        y = int((spec.height - h) / 2 + rng.normal(0, spec.jitter_px))
        frames.append(
            _encode(
                composite(subject, spec.width, spec.height, x, y, spec.background),
                spec.jpeg_quality,
            )
        )
    return frames


def composite(
    subject: np.ndarray, width: int, height: int, x: int, y: int, background: int = 110
) -> np.ndarray:
    """``subject`` pasted at ``(x, y)`` (clipped) on a ``(height, width, 3)`` plain frame."""
    canvas = np.full((height, width, 3), background, np.uint8)
    h, w = subject.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = subject[y0 - y : y1 - y, x0 - x : x1 - x]
    return canvas


def _encode(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
