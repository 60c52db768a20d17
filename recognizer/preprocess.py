"""Turning uint8 BGR images into the float32 NCHW blobs the models take."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import native
from recognizer.models.manifest import ModelManifest
from smartgate.errors import ModelError


def to_blob(
    images: Sequence[np.ndarray] | np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    swap_rb: bool = False,
) -> np.ndarray:
    """Stack same-sized ``(h, w, 3)`` uint8 BGR images into a ``(n, 3, h, w)`` float32 blob.

    Each channel c becomes ``(x - mean[c]) / std[c]``; ``mean``/``std`` are given in the
    model's channel order (after the optional BGR→RGB swap). A single ``(h, w, 3)`` image gets
    a batch axis. The work is one pass in ``native.hwc_to_nchw`` (numpy reference:
    ``native.reference.hwc_to_nchw_ref``).
    """
    batch = np.asarray(images) if not isinstance(images, np.ndarray) else images
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError(f"expected (n, h, w, 3) images, got shape {batch.shape}")
    return native.hwc_to_nchw(batch, mean, std, swap_rb)


def square_input_size(manifest: ModelManifest) -> int:
    """The side of a model's fixed square input, or ``ModelError`` if it has none."""
    size = manifest.input.size
    if size is None or size[0] is None or size[0] != size[1]:
        raise ModelError(
            f"model {manifest.name} must declare a fixed square input size, got {size}"
        )
    return int(size[0])
