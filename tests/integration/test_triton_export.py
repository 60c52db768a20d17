"""`smartgate triton export`: a Triton model repository written from the real manifests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cluster.cli import main

pytestmark = pytest.mark.integration


def test_export_writes_config_and_model_per_model(tmp_path: Path, models_dir: Path) -> None:
    out = tmp_path / "repo"
    code = main(
        [
            "triton",
            "export",
            str(out),
            "--models-dir",
            str(models_dir),
            "--tensorrt",
            "--only",
            "retinaface-mnet025",
            "fr-feature",
        ]
    )
    assert code == 0
    feature = (out / "fr-feature" / "config.pbtxt").read_text()
    assert 'name: "fr-feature"' in feature and 'backend: "onnxruntime"' in feature
    assert "max_batch_size: 8" in feature
    assert '{ name: "input" data_type: TYPE_FP32 dims: [3, 112, 112] }' in feature
    assert '{ name: "output" data_type: TYPE_FP32 dims: [512] }' in feature
    assert "dynamic_batching { preferred_batch_size: [4, 8]" in feature
    assert "kind: KIND_GPU" in feature and '"tensorrt"' in feature
    detector = (out / "retinaface-mnet025" / "config.pbtxt").read_text()
    assert "dims: [3, -1, -1]" in detector  # dynamic height and width
    for name in ("loc", "conf", "landmarks"):
        assert f'name: "{name}"' in detector
    manifest = json.loads((models_dir / "fr-feature" / "manifest.json").read_text())
    copied = hashlib.sha256((out / "fr-feature" / "1" / "model.onnx").read_bytes()).hexdigest()
    assert copied == manifest["sha256"]


def test_export_refuses_a_missing_model(tmp_path: Path) -> None:
    code = main(
        [
            "triton",
            "export",
            str(tmp_path / "repo"),
            "--models-dir",
            str(tmp_path / "empty"),
            "--only",
            "fr-feature",
        ]
    )
    assert code == 1
