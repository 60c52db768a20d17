"""Checksums and the "is this cached model complete and current?" test (no onnx import)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from recognizer.models.catalog import MANIFEST_FILE, CatalogEntry, matches_catalog
from recognizer.models.manifest import ModelManifest
from smartgate.errors import ModelError


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cached_manifest(cache: Path, entry: CatalogEntry) -> ModelManifest | None:
    """The cached manifest of ``entry`` if it and its file are complete and current."""
    mpath = cache / entry.name / MANIFEST_FILE
    if not mpath.is_file():
        return None
    try:
        manifest = ModelManifest.load(mpath)
    except ModelError:
        return None
    if not matches_catalog(manifest, entry):
        return None
    try:
        if sha256_file(mpath.parent / manifest.file) != manifest.sha256:
            return None
    except OSError:
        return None
    return manifest
