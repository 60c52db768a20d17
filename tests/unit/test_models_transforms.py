"""Model transforms on tiny synthetic ONNX graphs built with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from recognizer.models.transforms import (
    BATCH_DIM,
    apply_transforms,
    check_batch_equivalence,
    extract_bytes_literal,
    make_batchable,
    make_symbolic_batch,
)
from smartgate.errors import ModelError

C, H, W = 3, 2, 2
FEATURES = C * H * W


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], out_dim: int) -> bytes:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, C, H, W])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, out_dim])],
        initializer=inits,
        value_info=[helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [1, C, H, W])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _scale() -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")


def reshape_init_model() -> bytes:
    """input -> x2 -> Reshape([1, -1]) -> output, the shape an initializer (like fr_feature)."""
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    return _model(
        [
            helper.make_node("Mul", ["input", "two"], ["scaled"]),
            helper.make_node("Reshape", ["scaled", "shape"], ["output"]),
        ],
        [_scale(), shape],
        FEATURES,
    )


def reshape_constant_model() -> bytes:
    """The same, with the shape from a Constant node."""
    const = helper.make_node(
        "Constant",
        [],
        ["shape"],
        value=numpy_helper.from_array(np.array([1, -1], dtype=np.int64)),
    )
    return _model(
        [
            const,
            helper.make_node("Mul", ["input", "two"], ["scaled"]),
            helper.make_node("Reshape", ["scaled", "shape"], ["output"]),
        ],
        [_scale()],
        FEATURES,
    )


def shared_shape_model() -> bytes:
    """Two nodes read the [1, -1] initializer: the Reshape must get its own copy."""
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    return _model(
        [
            helper.make_node("Mul", ["input", "two"], ["scaled"]),
            helper.make_node("Reshape", ["scaled", "shape"], ["flat"]),
            helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["shape_f"], ["bias"], keepdims=0),
            helper.make_node("Add", ["flat", "bias"], ["output"]),
        ],
        [_scale(), shape],
        FEATURES,
    )


def flatten_model() -> bytes:
    """Batch-agnostic graph (Flatten), only its declared batch is fixed (like fr_liveness)."""
    return _model(
        [
            helper.make_node("Mul", ["input", "two"], ["scaled"]),
            helper.make_node("Flatten", ["scaled"], ["output"], axis=1),
        ],
        [_scale()],
        FEATURES,
    )


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _check(model: bytes) -> float:
    return check_batch_equivalence(model, "input", (C, H, W), batch=3)


def test_unfixed_model_fails_the_batch_check() -> None:
    raw = reshape_init_model()
    with pytest.raises(ModelError, match="does not run on a batch of 3"):
        _check(raw)  # declared batch of 1: onnxruntime rejects 3
    only_symbolic = make_symbolic_batch(raw)
    with pytest.raises(ModelError, match=r"output shape \(1, 36\)"):
        _check(only_symbolic)  # the silent failure: 3 samples folded into one row


@pytest.mark.parametrize("build", [reshape_init_model, reshape_constant_model, shared_shape_model])
def test_make_batchable_gives_exact_batches(build) -> None:  # type: ignore[no-untyped-def]
    fixed = make_batchable(build())
    assert _check(fixed) < 1e-6
    x = np.random.default_rng(1).standard_normal((4, C, H, W)).astype(np.float32)
    out = _run(fixed, x)
    assert out.shape == (4, FEATURES)
    expected = np.concatenate([_run(fixed, x[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(out[:, :FEATURES], x.reshape(4, -1) * 2, atol=1e-5)

    model = onnx.load_from_string(fixed)
    for value in [model.graph.input[0], model.graph.output[0]]:
        assert value.type.tensor_type.shape.dim[0].dim_param == BATCH_DIM
    assert len(model.graph.value_info) == 0  # stale batch-1 hints dropped


def test_shared_shape_keeps_the_other_use() -> None:
    fixed = make_batchable(shared_shape_model())
    x = np.ones((1, C, H, W), dtype=np.float32)
    # bias = sum([1, -1]) = 0 must be unchanged: the Cast still reads [1, -1].
    np.testing.assert_allclose(_run(fixed, x), np.full((1, FEATURES), 2.0))


def test_make_batchable_is_deterministic() -> None:
    raw = reshape_init_model()
    assert make_batchable(raw) == make_batchable(raw)


def test_make_batchable_without_the_reshape() -> None:
    with pytest.raises(ModelError, match=r"no Reshape with the constant shape \[1, -1\]"):
        make_batchable(flatten_model())


def test_symbolic_batch_for_batch_agnostic_graphs() -> None:
    raw = flatten_model()
    with pytest.raises(ModelError):
        _check(raw)
    assert _check(make_symbolic_batch(raw)) < 1e-6


def test_not_onnx() -> None:
    with pytest.raises(ModelError, match="not an ONNX model"):
        make_batchable(b"\xff\x00 definitely not protobuf")


def test_extract_bytes_literal_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    source = (
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
        "OTHER = b'no'\nWEIGHTS = b'\\x08\\x06onnx'\n"
    ).encode()
    assert extract_bytes_literal(source) == b"\x08\x06onnx"
    assert apply_transforms(source, ["weights-literal"]) == b"\x08\x06onnx"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"WEIGHTS = 'text'\n", "not a bytes literal"),
        (b"WEIGHTS = open('x').read()\n", "not a literal"),
        (b"OTHER = b'x'\n", "no module-level assignment"),
        (b"def f(:\n", "cannot parse"),
    ],
)
def test_extract_bytes_literal_errors(source: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        extract_bytes_literal(source)


def test_unknown_transform() -> None:
    with pytest.raises(ModelError, match="unknown model transform 'sharpen'"):
        apply_transforms(b"", ["sharpen"])
