"""Models are chosen by configuration and checked before start-up."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cluster.engine import match_threshold
from recognizer.faces.factory import build_face_analyzer
from smartgate.config import Config
from smartgate.errors import ModelError

pytestmark = pytest.mark.integration


def test_an_operator_embedder_is_used_through_its_manifest(
    base_config: Config, models_dir: Path, tmp_path: Path, face_analyzer
) -> None:  # type: ignore[no-untyped-def]
    """An operator's own embedding model needs only a manifest beside it: here the same
    network under another name with its own threshold."""
    own = tmp_path / "my-arcface"
    own.mkdir()
    shutil.copy(models_dir / "fr-feature" / "model.onnx", own / "model.onnx")
    manifest = json.loads((models_dir / "fr-feature" / "manifest.json").read_text())
    manifest.update(
        name="my-arcface",
        source=None,
        default_threshold=0.5,
        transforms=[],
        licence="operator's own licence",
    )
    (own / "manifest.json").write_text(json.dumps(manifest))
    config = replace(
        base_config, models=replace(base_config.models, embedder=str(own / "manifest.json"))
    )
    analyzer = build_face_analyzer(config)
    assert analyzer.embedder.manifest.name == "my-arcface"
    assert match_threshold(config, analyzer) == 0.5
    crops = np.random.default_rng(0).integers(0, 255, (2, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        analyzer.embedder.embed(crops), face_analyzer.embedder.embed(crops), atol=1e-5
    )


def test_altered_and_missing_models_stop_start_up_naming_the_fix(
    base_config: Config, models_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    shutil.copytree(models_dir / "retinaface-mnet025", cache / "retinaface-mnet025")
    shutil.copytree(models_dir / "fr-feature", cache / "fr-feature")
    model = cache / "fr-feature" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    config = replace(base_config, models=replace(base_config.models, cache_dir=cache))
    with pytest.raises(ModelError) as err:
        build_face_analyzer(config)
    text = str(err.value)
    assert "fr-feature" in text and "fr-liveness" in text  # every problem in one message
    assert "smartgate models fetch" in text
