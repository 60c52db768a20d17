"""Build a ready ``PlateReader``: load and verify the two plate models, warm them up."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from recognizer.backends.base import BackendOptions, InferenceBackend
from recognizer.backends.onnxrt import OnnxRuntimeBackend
from recognizer.models.store import LoadedModel, ModelStore
from recognizer.plates.reader import (
    QUICK_ACCEPT,
    QUICK_WIDTH,
    PlateDetector,
    PlateReader,
    PlateRecognizer,
)

DETECTOR = "plate-det"
RECOGNIZER = "plate-rec"


def build_plate_reader(
    cache_dir: Path | str,
    options: BackendOptions | None = None,
    *,
    detector: str | os.PathLike[str] = DETECTOR,
    recognizer: str | os.PathLike[str] = RECOGNIZER,
    long_side: int | None = None,
    warm: bool = True,
    quick_accept: float | None = QUICK_ACCEPT,
    quick_width: int = QUICK_WIDTH,
    backend_factory: Callable[[LoadedModel], InferenceBackend] | None = None,
) -> PlateReader:
    """A ``PlateReader`` over the models in ``cache_dir`` (names or manifest paths).

    ``quick_accept`` / ``quick_width``: the reader's quick first reading (see
    ``PlateReader``; ``quick_accept=None`` always pads lines to 320).
    ``backend_factory``: how a verified model becomes a backend (default: onnxruntime in
    process with ``options``; ``recognizer.backends.factory.make_backend`` follows the config).

    Raises ``ModelError`` naming every missing or altered model (``smartgate models
    fetch`` fixes the built-in ones).
    """
    options = options or BackendOptions()
    det_model, rec_model = ModelStore(cache_dir).verify_all([detector, recognizer])
    make = backend_factory or (lambda model: OnnxRuntimeBackend(model, options))
    reader = PlateReader(
        PlateDetector(make(det_model), det_model.manifest, long_side=long_side),
        PlateRecognizer(make(rec_model), rec_model.manifest),
        quick_accept=quick_accept,
        quick_width=quick_width,
    )
    if warm:
        reader.warm_up()
    return reader
