"""Derivation recipes and the derived-model catalogue: pure logic on small synthetic graphs.

The real models (determinism, agreement with fp32 on real crops and photos, the cache and
its manifests) are in ``tests/integration/test_derived_models.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from recognizer.models.derived import (
    DERIVATION_VERSION,
    DERIVED,
    DerivedEntry,
    derived_manifest,
    is_current,
)
from recognizer.models.manifest import InputSpec, ModelManifest
from recognizer.models.recipes import (
    QuantRecipe,
    decompose_prelu,
    quantise_static,
    upgrade_opset,
)
from smartgate.errors import ModelError

SHAPE = (2, 4, 5, 6)


def _prelu_model(slopes: np.ndarray, shared: bool = False, opset: int = 9) -> bytes:
    """x → Conv 1×1 → PRelu(a) → PRelu(a or b) → y, ``(2, 4, 5, 6)`` float32."""
    w = np.random.default_rng(1).normal(size=(4, 4, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(slopes, "a")]
    second = "a"
    if not shared:
        inits.append(numpy_helper.from_array(slopes[::-1].copy(), "b"))
        second = "b"
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("PRelu", ["c", "a"], ["p"], name="p1"),
        helper.make_node("PRelu", ["p", second], ["y"], name="p2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(SHAPE))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model.SerializeToString()


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


SLOPES = {
    "per-channel (C,1,1), negative and > 1": np.array([-1.3, 0.0, 0.25, 1.2], np.float32)[
        :, None, None
    ],
    "scalar": np.array([0.1], np.float32),
}


@pytest.mark.parametrize("shared", [False, True], ids=["own slopes", "shared slope"])
@pytest.mark.parametrize("slopes", list(SLOPES.values()), ids=list(SLOPES))
def test_decompose_prelu_is_bit_identical(slopes: np.ndarray, shared: bool) -> None:
    model = _prelu_model(slopes, shared)
    x = np.random.default_rng(0).normal(scale=3, size=SHAPE).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, -0.0, 1e-38]  # zeros and a denormal
    rewritten = decompose_prelu(model)
    ops = [n.op_type for n in onnx.load_from_string(rewritten).graph.node]
    assert "PRelu" not in ops
    assert ops.count("Relu") == ops.count("Sub") == ops.count("Mul") == ops.count("Add") == 2
    np.testing.assert_array_equal(_run(rewritten, x), _run(model, x))


def test_decompose_prelu_refuses_what_it_cannot_change() -> None:
    no_prelu = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    ).SerializeToString()
    with pytest.raises(ModelError, match="no PRelu"):
        decompose_prelu(no_prelu)
    with pytest.raises(ModelError, match="not an ONNX model"):
        decompose_prelu(b"\x00not onnx")


def test_decompose_prelu_names_do_not_collide() -> None:
    model = onnx.load_from_string(_prelu_model(SLOPES["scalar"]))
    model.graph.node[0].output[0] = "p1__prelu_pos"  # a name the rewrite would pick
    model.graph.node[1].input[0] = "p1__prelu_pos"
    rewritten = onnx.load_from_string(decompose_prelu(model.SerializeToString()))
    outputs = [o for n in rewritten.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))


def test_upgrade_opset() -> None:
    model = onnx.load_from_string(upgrade_opset(_prelu_model(SLOPES["scalar"]), 13))
    assert [o.version for o in model.opset_import if o.domain == ""] == [13]
    again = onnx.load_from_string(upgrade_opset(model.SerializeToString(), 11))
    assert [o.version for o in again.opset_import if o.domain == ""] == [13]


def test_quant_recipe_checks_and_labels() -> None:
    assert QuantRecipe().label == "qdq-pc-minmax"
    assert (
        QuantRecipe("qoperator", False, "entropy", extra={"ActivationSymmetric": True}).label
        == "qoperator-pt-entropy+ActivationSymmetric"
    )
    assert QuantRecipe(op_types=("Conv",)).label == "qdq-pc-minmax-only-Conv"
    with pytest.raises(ValueError, match="format"):
        QuantRecipe(format="int4")
    with pytest.raises(ValueError, match="method"):
        QuantRecipe(method="mse")


def test_quantise_static_needs_one_calibration_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = _prelu_model(SLOPES["scalar"])
    with pytest.raises(ValueError, match="exactly one"):
        quantise_static(model, QuantRecipe())
    with pytest.raises(ValueError, match="exactly one"):
        quantise_static(model, QuantRecipe(), feeds=[], calibration_cache=tmp_path / "c.json")
    with pytest.raises(ModelError, match="does not exist"):
        quantise_static(model, QuantRecipe(), calibration_cache=tmp_path / "missing.json")


def test_quantise_static_from_feeds_runs_int8() -> None:
    model = decompose_prelu(_prelu_model(SLOPES["per-channel (C,1,1), negative and > 1"]))
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.normal(size=SHAPE).astype(np.float32)} for _ in range(4)]
    q = quantise_static(model, QuantRecipe(), feeds=feeds)
    ops = {n.op_type for n in onnx.load_from_string(q).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = feeds[0]["x"]
    ref, got = _run(model, x), _run(q, x)
    assert got.shape == ref.shape
    # 8 bits over the calibrated range: a few steps of error at most.
    assert np.max(np.abs(got - ref)) < 0.1 * np.max(np.abs(ref))


def test_derived_entries_are_well_formed() -> None:
    for name, entry in DERIVED.items():
        assert entry.name == name and entry.base != name
        calib = entry.calibration
        if "int8-qdq-pc" in entry.recipe:
            assert calib is not None and calib.is_file(), f"{name}: ship {calib}"
            assert not entry.exact
        else:
            assert calib is None
    with pytest.raises(ValueError, match="recipe"):
        DerivedEntry("x", "fr-feature", ("int4",), exact=False, note="")
    with pytest.raises(ValueError, match="recipe"):
        DerivedEntry("x", "fr-feature", (), exact=True, note="")


def _base_manifest() -> ModelManifest:
    return ModelManifest(
        name="fr-feature",
        role="face_embedder",
        file="model.onnx",
        sha256="a" * 64,
        source=None,
        licence="test",
        transforms=("batchable-reshape",),
        input=InputSpec(name="input", size=(112, 112)),
        outputs=("output",),
        embedding_size=512,
        default_threshold=0.45,
        extra={"metric": "cosine"},
    )


@pytest.mark.parametrize("name", ["fr-feature-fast", "fr-feature-int8"])
def test_manifest_provenance_and_staleness(name: str) -> None:
    entry = DERIVED[name]
    base = _base_manifest()
    manifest = derived_manifest(entry, base, "b" * 64)
    got = manifest.extra["derived"]
    assert manifest.name == name and manifest.sha256 == "b" * 64
    assert manifest.transforms == ("batchable-reshape", *entry.recipe)
    assert manifest.extra["metric"] == "cosine"
    assert got["base_sha256"] == base.sha256 and got["version"] == DERIVATION_VERSION
    assert (got["calibration"] is None) == (entry.calibration is None)
    assert is_current(manifest, entry, base)
    # Survives the JSON round trip that the cache makes.
    assert is_current(ModelManifest.from_json(manifest.to_json()), entry, base)

    def with_derived(**change: object) -> ModelManifest:
        return dataclasses.replace(manifest, extra={**manifest.extra, "derived": got | change})

    assert not is_current(manifest, entry, dataclasses.replace(base, sha256="c" * 64))
    assert not is_current(with_derived(recipe=["prelu-decompose", "x"]), entry, base)
    assert not is_current(with_derived(version=DERIVATION_VERSION + 1), entry, base)
    assert not is_current(with_derived(calibration_sha256="d" * 64), entry, base)
    assert not is_current(with_derived(**{"from": "fr-liveness"}), entry, base)
    assert not is_current(dataclasses.replace(manifest, extra={}), entry, base)


def test_benchmark_folds_keep_reencodings_together(shared_data) -> None:  # type: ignore[no-untyped-def]
    from benchmarks.datasets import face_labels
    from benchmarks.quantisation import _folds

    folds = _folds(shared_data)
    assert set(folds.values()) == {0, 1}
    for lab in face_labels(shared_data):
        if lab.same_photo_as:
            assert folds[lab.file] == folds[lab.same_photo_as], lab.file


def test_benchmark_cross_fitting_and_helpers() -> None:
    from benchmarks.quantisation import Variant, _iou, _padded

    v = Variant("int8", (b"calibrated on fold 0", b"calibrated on fold 1"), calibrated=True)
    assert v.for_photo_fold(0) == b"calibrated on fold 1"
    assert v.for_photo_fold(1) == b"calibrated on fold 0"
    fp32 = Variant("fp32", (b"m", b"m"), calibrated=False)
    assert fp32.for_photo_fold(0) == fp32.for_photo_fold(1) == b"m"

    feeds = [{"x": np.ones((1, 3, 2, 4), np.float32)}, {"x": np.ones((1, 3, 5, 3), np.float32)}]
    padded = _padded(feeds)
    assert [f["x"].shape for f in padded] == [(1, 3, 5, 4)] * 2
    assert padded[0]["x"][0, 0, 2:].sum() == 0 and padded[0]["x"][0, 0, :2].sum() == 8

    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]], np.float32)
    expected = np.array([[1, 1 / 3, 0], [0, 0, 0]], np.float64)
    np.testing.assert_allclose(_iou(a, b), expected, atol=1e-6)
