"""Face embeddings from aligned crops, driven by the embedder's manifest (size, colour
order, mean/std, embedding size), so another model can be swapped in by configuration."""

from __future__ import annotations

import numpy as np

from recognizer.backends.base import InferenceBackend
from recognizer.models.manifest import ModelManifest
from recognizer.preprocess import square_input_size, to_blob


class FaceEmbedder:
    def __init__(self, backend: InferenceBackend, manifest: ModelManifest) -> None:
        self.backend = backend
        self.manifest = manifest
        self.input_size = square_input_size(manifest)
        self.dim = int(manifest.embedding_size or 0)
        self.batchable = manifest.input.batch == "dynamic"
        self._input_name = manifest.input.name
        self._output_name = manifest.outputs[0]
        self._swap_rb = manifest.input.color_order == "RGB"

    def warm_up(self) -> None:
        self.embed(np.zeros((1, self.input_size, self.input_size, 3), dtype=np.uint8))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """``(n, s, s, 3)`` uint8 BGR aligned crops → ``(n, dim)`` float32 unit vectors."""
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            s = self.input_size
            raise ValueError(f"expected crops of shape (n, {s}, {s}, 3), got {crops.shape}")
        if crops.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        blob = to_blob(crops, self.manifest.input.mean, self.manifest.input.std, self._swap_rb)
        if self.batchable:
            raw = self.backend.run({self._input_name: blob})[self._output_name]
        else:
            raw = np.concatenate(
                [
                    self.backend.run({self._input_name: blob[i : i + 1]})[self._output_name]
                    for i in range(blob.shape[0])
                ]
            )
        vectors = raw.reshape(crops.shape[0], -1).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
