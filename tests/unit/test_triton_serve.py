"""The Triton server script's pure parts: request grouping and splitting, manifest checks.

(``triton_serve.py`` runs in ``.venv-triton``; these parts need only numpy and the stdlib.
The real server is exercised by ``tests/integration/test_triton_backend.py``.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from recognizer.backends.triton_serve import load_served_model, make_infer, resolve_manifest


def _double_and_sum(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    x = feeds["x"]
    return [x * 2, x.reshape(x.shape[0], -1).sum(axis=1)]


def test_requests_of_one_shape_run_once_and_are_split_back() -> None:
    calls: list[tuple[int, ...]] = []

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        calls.append(feeds["x"].shape)
        return _double_and_sum(feeds)

    rng = np.random.default_rng(0)
    requests = [
        {"x": rng.random((1, 3, 4, 4), dtype=np.float32)},
        {"x": rng.random((2, 3, 8, 8), dtype=np.float32)},  # another shape: its own run
        {"x": rng.random((3, 3, 4, 4), dtype=np.float32)},
    ]
    answers = make_infer(run, ["double", "sum"])(requests)
    assert sorted(calls) == [(2, 3, 8, 8), (4, 3, 4, 4)]
    for request, answer in zip(requests, answers, strict=True):
        x = request["x"]
        np.testing.assert_array_equal(answer["double"], x * 2)
        np.testing.assert_allclose(answer["sum"], x.reshape(x.shape[0], -1).sum(axis=1))


def _model_dir(tmp_path: Path, payload: bytes, sha: str | None = None) -> Path:
    folder = tmp_path / "m1"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(payload)
    manifest = {
        "name": "m1",
        "file": "model.onnx",
        "sha256": sha or hashlib.sha256(payload).hexdigest(),
        "input": {"name": "x"},
        "outputs": ["y"],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder / "manifest.json"


def test_manifests_are_found_by_name_or_path_and_checked(tmp_path: Path) -> None:
    path = _model_dir(tmp_path, b"onnx bytes")
    assert resolve_manifest(tmp_path, "m1") == path
    assert resolve_manifest(tmp_path, str(path)) == path
    model = load_served_model(path)
    assert (model.name, model.input_name, model.outputs) == ("m1", "x", ("y",))


def test_an_altered_model_file_is_refused(tmp_path: Path) -> None:
    path = _model_dir(tmp_path, b"onnx bytes", sha="0" * 64)
    with pytest.raises(SystemExit, match="altered"):
        load_served_model(path)
