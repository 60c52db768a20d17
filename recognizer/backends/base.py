"""The interface every inference backend offers (onnxruntime now, Triton later)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from recognizer.models.manifest import ModelManifest
from smartgate.config import ModelsConfig


@runtime_checkable
class InferenceBackend(Protocol):
    """One loaded model. ``run`` may be called from several threads at once."""

    @property
    def input_names(self) -> Sequence[str]: ...

    @property
    def output_names(self) -> Sequence[str]: ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendOptions:
    # Threads per session; 0 lets the runtime choose.
    intra_op_threads: int = 1
    # Whether idle worker threads spin; off keeps sessions in one process from fighting.
    allow_spinning: bool = False

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")

    @classmethod
    def from_config(cls, models: ModelsConfig) -> BackendOptions:
        return cls(intra_op_threads=models.intra_op_threads, allow_spinning=models.allow_spinning)


def zero_feeds(
    manifest: ModelManifest, batch: int = 1, dynamic_side: int = 64
) -> dict[str, np.ndarray]:
    """An all-zero input of the manifest's shape (for warm-up and smoke tests).

    Dynamic sides take ``dynamic_side`` pixels; a fixed-batch model always gets a batch of 1.
    """
    h, w = manifest.input.size if manifest.input.size is not None else (None, None)
    n = 1 if manifest.input.batch == "fixed" else batch
    shape = (n, 3, h or dynamic_side, w or dynamic_side)
    return {manifest.input.name: np.zeros(shape, dtype=np.float32)}
