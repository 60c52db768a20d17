"""``smartgate triton export DIR``: a standard Triton model repository from the model manifests.

For GPU servers: one folder per model with ``1/model.onnx`` and a ``config.pbtxt`` (the
onnxruntime backend, optionally with the TensorRT accelerator), dynamic batching with preferred
sizes and a queue delay, and instance groups. Input and output shapes come from the ONNX graph
(the batch dimension is Triton's ``max_batch_size``), names from the manifest, so the Triton
backend and the in-process one read the same tensors.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from recognizer.models.store import LoadedModel, ModelStore

# ONNX TensorProto element types → Triton data types.
_TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
}


@dataclass(frozen=True)
class TritonOptions:
    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    instances: int = 1
    gpu: bool = True
    tensorrt: bool = False  # the TensorRT execution accelerator of the onnxruntime backend
    fp16: bool = True


def _tensors(values: Sequence[onnx.ValueInfoProto], names: Sequence[str], model: str) -> str:
    by_name = {v.name: v for v in values}
    blocks = []
    for name in names:
        if name not in by_name:
            raise ValueError(f"model {model}: the ONNX graph has no tensor named {name!r}")
        t = by_name[name].type.tensor_type
        dims = [d.dim_value if d.dim_value > 0 else -1 for d in t.shape.dim][1:]
        dtype = _TRITON_TYPES.get(t.elem_type)
        if dtype is None:
            raise ValueError(f"model {model}: tensor {name!r} has an unsupported element type")
        blocks.append(f'  {{ name: "{name}" data_type: {dtype} dims: {dims} }}')
    return ",\n".join(blocks)


def model_config(model: LoadedModel, options: TritonOptions) -> str:
    """The ``config.pbtxt`` text for one model."""
    graph = onnx.load(str(model.path), load_external_data=False).graph
    m = model.manifest
    batched = m.input.batch == "dynamic"
    lines = [
        f'name: "{m.name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {options.max_batch_size if batched else 0}",
        f"input [\n{_tensors(graph.input, [m.input.name], m.name)}\n]",
        f"output [\n{_tensors(graph.output, list(m.outputs), m.name)}\n]",
    ]
    if batched:
        sizes = [s for s in options.preferred_batch_sizes if s <= options.max_batch_size]
        lines.append(
            f"dynamic_batching {{ preferred_batch_size: {sizes} "
            f"max_queue_delay_microseconds: {options.max_queue_delay_us} }}"
        )
    kind = "KIND_GPU" if options.gpu else "KIND_CPU"
    lines.append(f"instance_group [ {{ count: {options.instances} kind: {kind} }} ]")
    if options.tensorrt and options.gpu:
        precision = "FP16" if options.fp16 else "FP32"
        lines.append(
            "optimization { execution_accelerators { gpu_execution_accelerator: [ "
            f'{{ name: "tensorrt" parameters {{ key: "precision_mode" value: "{precision}" }} }}'
            " ] } }"
        )
    return "\n".join(lines) + "\n"


def export_repository(
    store: ModelStore, names: Sequence[str], out_dir: Path, options: TritonOptions
) -> list[Path]:
    """Write ``out_dir/<name>/config.pbtxt`` and ``out_dir/<name>/1/model.onnx`` for each
    verified model; returns the model folders."""
    written = []
    for model in store.verify_all(names):
        folder = out_dir / model.manifest.name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model.path, folder / "1" / "model.onnx")
        (folder / "config.pbtxt").write_text(model_config(model, options), encoding="utf-8")
        written.append(folder)
    return written
