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
