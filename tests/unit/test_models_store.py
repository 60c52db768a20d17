"""ModelStore and OnnxRuntimeBackend on small synthetic models in tmp_path."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from recognizer.backends.base import BackendOptions, InferenceBackend, zero_feeds
from recognizer.backends.onnxrt import OnnxRuntimeBackend, session_options
from recognizer.models.catalog import CATALOG
from recognizer.models.manifest import ModelManifest
from recognizer.models.store import (
    LoadedModel,
    ModelAlteredError,
    ModelMissingError,
    ModelOutdatedError,
    ModelStore,
    format_status,
)
from smartgate.config import ModelsConfig
from smartgate.errors import ModelError

FETCH = "run `smartgate models fetch`"


def tiny_model(size: int = 112, out: int = 512) -> bytes:
    """input (N, 3, size, size) -> per-channel mean -> tiled and cut to ``out`` features."""
    ints = {"reps": [1, out // 3 + 1], "start": [0], "end": [out], "axis": [1]}
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("Tile", ["pooled", "reps"], ["tiled"]),
            helper.make_node("Slice", ["tiled", "start", "end", "axis"], ["output"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", out])],
        initializer=[numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def put_cached(cache: Path, name: str = "fr-feature", data: bytes | None = None) -> ModelManifest:
    """Write a cache entry the way fetch does, for a synthetic model."""
    data = tiny_model() if data is None else data
    entry = CATALOG[name]
    extra = {k: ["a", "b"] for k in entry.metadata_lists}
    manifest = entry.manifest(hashlib.sha256(data).hexdigest(), extra)
    (cache / name).mkdir(parents=True)
    (cache / name / "model.onnx").write_bytes(data)
    manifest.save(cache / name / "manifest.json")
    return manifest


def put_operator(folder: Path, data: bytes | None = None) -> Path:
    data = tiny_model() if data is None else data
    folder.mkdir(parents=True)
    (folder / "arcface.onnx").write_bytes(data)
    manifest = {
        "name": "arcface",
        "role": "face_embedder",
        "file": "arcface.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "licence": "operator's own",
        "input": {
            "name": "input",
            "color_order": "RGB",
            "size": [112, 112],
            "mean": [127.5] * 3,
            "std": [127.5] * 3,
        },
        "outputs": ["output"],
        "embedding_size": 512,
        "default_threshold": 0.3,
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return path


# --- store ---------------------------------------------------------------------------------


def test_load_cached_model(tmp_path: Path) -> None:
    manifest = put_cached(tmp_path)
    model = ModelStore(tmp_path).load("fr-feature")
    assert model == LoadedModel(manifest, tmp_path / "fr-feature" / "model.onnx")
    assert model.name == "fr-feature"


def test_missing_model_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError) as info:
        ModelStore(tmp_path).load("fr-feature")
    assert str(info.value) == f"model 'fr-feature' is not in {tmp_path}; {FETCH}"
    assert isinstance(info.value, ModelError)


def test_missing_file_beside_manifest(tmp_path: Path) -> None:
    put_cached(tmp_path)
    (tmp_path / "fr-feature" / "model.onnx").unlink()
    with pytest.raises(ModelMissingError, match=rf"not in {tmp_path}.*{FETCH}"):
        ModelStore(tmp_path).load("fr-feature")


def test_altered_model_names_both_checksums(tmp_path: Path) -> None:
    manifest = put_cached(tmp_path)
    path = tmp_path / "fr-feature" / "model.onnx"
    altered = path.read_bytes() + b"\x00"
    path.write_bytes(altered)
    with pytest.raises(ModelAlteredError) as info:
        ModelStore(tmp_path).load("fr-feature")
    msg = str(info.value)
    assert "fr-feature" in msg and "altered" in msg
    assert f"expected {manifest.sha256}" in msg
    assert f"actual {hashlib.sha256(altered).hexdigest()}" in msg
    assert msg.endswith(FETCH)


def test_outdated_and_broken_manifests(tmp_path: Path) -> None:
    put_cached(tmp_path)
    mpath = tmp_path / "fr-feature" / "manifest.json"
    data = json.loads(mpath.read_text(encoding="utf-8"))
    data["default_threshold"] = 0.9
    mpath.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelOutdatedError, match=FETCH):
        ModelStore(tmp_path).load("fr-feature")
    mpath.write_text("{", encoding="utf-8")
    with pytest.raises(ModelError, match=rf"not valid JSON.*{FETCH}"):
        ModelStore(tmp_path).load("fr-feature")


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="neither a built-in model"):
        ModelStore(tmp_path).load("no-such-model")


def test_operator_manifest_by_path(tmp_path: Path) -> None:
    path = put_operator(tmp_path / "ops" / "arcface")
    store = ModelStore(tmp_path / "cache")
    for ref in (path, str(path)):
        model = store.load(ref)
        assert model.path == path.parent / "arcface.onnx"
        assert model.manifest.input.color_order == "RGB"
        assert model.manifest.source is None
    (path.parent / "arcface.onnx").write_bytes(b"other")
    with pytest.raises(ModelAlteredError, match="correct its sha256"):
        store.load(path)
    with pytest.raises(ModelMissingError, match="does not exist"):
        store.load(tmp_path / "nope" / "manifest.json")


def test_operator_model_inside_the_cache_by_name(tmp_path: Path) -> None:
    put_operator(tmp_path / "arcface")
    assert ModelStore(tmp_path).load("arcface").manifest.role == "face_embedder"


def test_verify_all_reports_every_problem(tmp_path: Path) -> None:
    put_cached(tmp_path, "fr-feature")
    store = ModelStore(tmp_path)
    assert [m.name for m in store.verify_all(["fr-feature"])] == ["fr-feature"]
    with pytest.raises(ModelMissingError):
        store.verify_all(["fr-feature", "fr-liveness"])  # one problem: its own type
    with pytest.raises(ModelError) as info:
        store.verify_all(["retinaface-mnet025", "fr-feature", "fr-liveness"])
    msg = str(info.value)
    assert msg.startswith("2 models are not usable")
    assert "'retinaface-mnet025'" in msg and "'fr-liveness'" in msg


def test_status(tmp_path: Path) -> None:
    put_cached(tmp_path, "fr-feature")
    put_cached(tmp_path, "plate-rec")
    (tmp_path / "plate-rec" / "model.onnx").write_bytes(b"x")
    put_operator(tmp_path / "arcface")
    rows = {r.name: r for r in ModelStore(tmp_path).status()}
    assert rows["fr-feature"].state == "ok"
    assert rows["plate-rec"].state == "altered"
    assert rows["fr-liveness"].state == "missing"
    assert rows["arcface"].state == "ok" and rows["arcface"].source == "operator"
    table = format_status(rows.values())
    assert table.splitlines()[0].split() == ["NAME", "ROLE", "STATE", "SOURCE", "PATH"]
    assert "plate-rec: model 'plate-rec'" in table


# --- onnxruntime backend ----------------------------------------------------------------------


def test_backend_runs_and_is_an_inference_backend(tmp_path: Path) -> None:
    put_cached(tmp_path)
    model = ModelStore(tmp_path).load("fr-feature")
    backend = OnnxRuntimeBackend(model, BackendOptions(intra_op_threads=1))
    assert isinstance(backend, InferenceBackend)
    assert list(backend.input_names) == ["input"]
    assert list(backend.output_names) == ["output"]
    backend.warm_up()
    x = np.random.default_rng(0).uniform(0, 1, (4, 3, 112, 112)).astype(np.float32)
    out = backend.run({"input": x})
    assert set(out) == {"output"}
    assert out["output"].shape == (4, 512)
    np.testing.assert_allclose(out["output"][:, 0], x[:, 0].mean(axis=(1, 2)), rtol=1e-5)
    backend.close()
    with pytest.raises(ModelError, match="closed"):
        backend.run({"input": x})


def test_backend_wraps_onnxruntime_errors(tmp_path: Path) -> None:
    put_cached(tmp_path)
    with OnnxRuntimeBackend(ModelStore(tmp_path).load("fr-feature")) as backend:
        with pytest.raises(ModelError, match=r"model 'fr-feature': inference failed"):
            backend.run({"input": np.zeros((1, 3, 7, 7), dtype=np.float32)})
        with pytest.raises(ModelError, match="fr-feature"):
            backend.run({"wrong": np.zeros((1, 3, 112, 112), dtype=np.float32)})


def test_backend_load_errors(tmp_path: Path) -> None:
    put_cached(tmp_path, data=b"not onnx at all")
    model = ModelStore(tmp_path).load("fr-feature")  # checksum fine, content not a model
    with pytest.raises(ModelError, match="model 'fr-feature': onnxruntime cannot load"):
        OnnxRuntimeBackend(model)
    path = put_operator(tmp_path / "op")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["outputs"] = ["embedding"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError, match=r"names output\(s\) \['embedding'\]"):
        OnnxRuntimeBackend(ModelStore(tmp_path).load(path))


def test_backend_is_thread_safe(tmp_path: Path) -> None:
    put_cached(tmp_path)
    backend = OnnxRuntimeBackend(ModelStore(tmp_path).load("fr-feature"), BackendOptions(2))
    rng = np.random.default_rng(3)
    inputs = [rng.uniform(0, 1, (2, 3, 112, 112)).astype(np.float32) for _ in range(8)]
    expected = [backend.run({"input": x})["output"] for x in inputs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = backend.run({"input": inputs[i]})["output"]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        np.testing.assert_array_equal(results[i], expected[i])


def test_session_options() -> None:
    so = session_options(BackendOptions(intra_op_threads=3, allow_spinning=False))
    assert so.intra_op_num_threads == 3
    assert so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    so = session_options(BackendOptions.from_config(ModelsConfig(allow_spinning=True)))
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert so.intra_op_num_threads == ModelsConfig().intra_op_threads
    with pytest.raises(ValueError, match="intra_op_threads"):
        BackendOptions(intra_op_threads=-1)


def test_zero_feeds() -> None:
    rec = CATALOG["plate-rec"].manifest("0" * 64, {"characters": ["a"]})
    assert zero_feeds(rec, batch=2)["x"].shape == (2, 3, 48, 64)
    det = CATALOG["retinaface-mnet025"].manifest("0" * 64)
    assert zero_feeds(det, dynamic_side=32)["input"].shape == (1, 3, 32, 32)
