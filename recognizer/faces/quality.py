"""Is a detected face good enough to recognise? Size, sharpness and pose, with reasons."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class QualityThresholds:
    min_face_px: float = 48.0  # face size (see ``face_size``) in original pixels
    min_sharpness: float = 40.0  # variance of the Laplacian on the aligned 112×112 gray crop
    max_yaw_ratio: float = 0.6  # |nose offset from the eye midline| / eye distance


@dataclass(frozen=True)
class QualityReport:
    score: float  # 0..1
    size_px: float
    sharpness: float
    yaw_ratio: float
    reasons: tuple[str, ...]

    @property
    def usable(self) -> bool:
        return not self.reasons


def face_size(landmarks: np.ndarray) -> float:
    """Face scale from ``(5, 2)`` landmarks: the eye-to-mouth distance and twice the eye
    distance, whichever is larger (robust to yaw and to pitch)."""
    eyes_mid = (landmarks[0] + landmarks[1]) / 2.0
    mouth_mid = (landmarks[3] + landmarks[4]) / 2.0
    eye_dist = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    return max(2.0 * eye_dist, float(np.linalg.norm(mouth_mid - eyes_mid)) * 2.5)


def yaw_ratio(landmarks: np.ndarray) -> float:
    """How far the nose sits from the eyes' midpoint, in eye distances (0 = frontal)."""
    eye_dist = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    if eye_dist < 1e-6:
        return float("inf")
    eyes_mid_x = (landmarks[0, 0] + landmarks[1, 0]) / 2.0
    return float(abs(landmarks[2, 0] - eyes_mid_x) / eye_dist)


def sharpness(aligned: np.ndarray) -> float:
    """Variance of the Laplacian over the central part of an aligned ``(s, s, 3)`` crop."""
    gray = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
    s = gray.shape[0]
    centre = gray[s // 4 : s - s // 8, s // 6 : s - s // 6]
    return float(cv2.Laplacian(centre, cv2.CV_32F).var())


def assess(
    landmarks: np.ndarray, aligned: np.ndarray, thresholds: QualityThresholds
) -> QualityReport:
    """Grade one face from its ``(5, 2)`` landmarks (original pixels) and aligned crop."""
    size = face_size(landmarks)
    sharp = sharpness(aligned)
    yaw = yaw_ratio(landmarks)
    reasons = []
    if size < thresholds.min_face_px:
        reasons.append("too_small")
    if sharp < thresholds.min_sharpness:
        reasons.append("blurred")
    if yaw > thresholds.max_yaw_ratio:
        reasons.append("profile")
    score = (
        min(1.0, size / (2.0 * thresholds.min_face_px))
        * min(1.0, sharp / (2.0 * thresholds.min_sharpness))
        * max(0.0, 1.0 - yaw)
    )
    return QualityReport(float(score), size, sharp, yaw, tuple(reasons))
