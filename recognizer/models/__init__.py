"""Model catalogue, fetching into the model cache, manifests and verified loading.

``fetch_models`` is imported on first use: it needs onnx and tqdm, which serving does not.
"""

from __future__ import annotations

from typing import Any

from recognizer.models.catalog import CATALOG, CatalogEntry, catalog_entry
from recognizer.models.manifest import InputSpec, ManifestError, ModelManifest, ModelSource
from recognizer.models.store import (
    LoadedModel,
    ModelAlteredError,
    ModelMissingError,
    ModelOutdatedError,
    ModelStatus,
    ModelStore,
    format_status,
)

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "InputSpec",
    "LoadedModel",
    "ManifestError",
    "ModelAlteredError",
    "ModelManifest",
    "ModelMissingError",
    "ModelOutdatedError",
    "ModelSource",
    "ModelStatus",
    "ModelStore",
    "catalog_entry",
    "fetch_models",
    "format_status",
]


def __getattr__(name: str) -> Any:
    if name == "fetch_models":
        from recognizer.models.fetch import fetch_models

        return fetch_models
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
