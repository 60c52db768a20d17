"""Passive liveness score (probability that a face is live rather than a photo or screen)."""

from __future__ import annotations

import numpy as np

from recognizer.backends.base import InferenceBackend
from recognizer.models.manifest import ModelManifest
from recognizer.preprocess import square_input_size, to_blob


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, c)`` logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class LivenessScorer:
    def __init__(self, backend: InferenceBackend, manifest: ModelManifest) -> None:
        self.backend = backend
        self.manifest = manifest
        self.input_size = square_input_size(manifest)
        self.crop_factor = float(manifest.extra.get("crop_scale", 2.7))
        self.live_class = int(manifest.extra.get("live_class", 0))
        self._input_name = manifest.input.name
        self._output_name = manifest.outputs[0]
        self._swap_rb = manifest.input.color_order == "RGB"

    def warm_up(self) -> None:
        self.score(np.zeros((1, self.input_size, self.input_size, 3), dtype=np.uint8))

    def score(self, crops: np.ndarray) -> np.ndarray:
        """``(n, s, s, 3)`` uint8 BGR context crops → ``(n,)`` float32 live probabilities."""
        if crops.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        blob = to_blob(crops, self.manifest.input.mean, self.manifest.input.std, self._swap_rb)
        logits = self.backend.run({self._input_name: blob})[self._output_name]
        return softmax(logits.reshape(crops.shape[0], -1))[:, self.live_class].astype(np.float32)
