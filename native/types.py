"""Result types shared by the kernels and their numpy references."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class MatchArrays(NamedTuple):
    """Per-query identity decision; every field has shape ``(q,)``."""

    person: np.ndarray  # int64 person key, -1 when there was no candidate
    score: np.ndarray  # float32 best person's similarity, -1.0 when none
    runner_up: np.ndarray  # float32 best similarity of any *other* person, -1.0 when none
    accepted: np.ndarray  # bool: score >= threshold and score - runner_up >= margin


class DetectionArrays(NamedTuple):
    """Detections after decode and NMS, sorted by score descending; ``n`` rows each."""

    boxes: np.ndarray  # (n, 4) float32 [x1, y1, x2, y2] in the priors' pixel coordinates
    scores: np.ndarray  # (n,) float32
    points: np.ndarray  # (n, L, 2) float32 [x, y] per landmark / corner


class CTCArrays(NamedTuple):
    """Greedy CTC decode of ``n`` sequences of ``t`` steps."""

    labels: np.ndarray  # (n, t) int32 class ids, padded with -1 after ``lengths[i]``
    confidences: np.ndarray  # (n, t) float32 per emitted label, padded with 0.0
    lengths: np.ndarray  # (n,) int32 number of emitted labels
