"""Derivation steps for local model variants: ONNX bytes in, ONNX bytes out, deterministic.

- ``decompose_prelu``: every ``PRelu(x, a)`` becomes ``r + (x - r) * a`` with ``r = Relu(x)``.
  The result is bit-identical (for ``x > 0``: ``x + 0 * a``; otherwise ``0 + x * a``), but
  onnxruntime's CPU ``PRelu`` kernel costs ~5 ns per element on one thread (a generic
  broadcast loop) against ~1 ns for the four simple ops together: on ``fr_feature`` the 33
  PRelus took 6.3 of its 11.9 ms (``python -m benchmarks.quantisation``).
- ``upgrade_opset``: per-channel quantisation needs ``DequantizeLinear``'s ``axis`` (opset 13).
- ``quantise_static``: onnxruntime's ``quantize_static`` (QDQ or QOperator, per-channel or per
  tensor) from calibration inputs, or from a saved calibration cache (the tensor ranges as
  JSON), so a model can be derived again without the calibration images.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, version_converter

from recognizer.models.transforms import load_model, serialize_model
from smartgate.errors import ModelError

METHODS = ("minmax", "entropy", "percentile")
FORMATS = ("qdq", "qoperator")
QUANT_OPSET = 13


def decompose_prelu(model_bytes: bytes) -> bytes:
    """Replace every ``PRelu`` node by ``Relu``, ``Sub``, ``Mul``, ``Add`` (same values).

    Raises ``ModelError`` when the model has no ``PRelu`` (the recipe would be a no-op).
    """
    model = load_model(model_bytes)
    graph = model.graph
    taken = {name for node in graph.node for name in (*node.input, *node.output)}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        x, slope = node.input[0], node.input[1]
        y = node.output[0]
        stem = f"{node.name or y}__prelu"
        while any(f"{stem}_{part}" in taken for part in ("pos", "neg", "negs")):
            stem += "_"
        pos, neg, negs = f"{stem}_pos", f"{stem}_neg", f"{stem}_negs"
        nodes += [
            helper.make_node("Relu", [x], [pos], name=f"{stem}_relu"),
            helper.make_node("Sub", [x, pos], [neg], name=f"{stem}_sub"),
            helper.make_node("Mul", [neg, slope], [negs], name=f"{stem}_mul"),
            helper.make_node("Add", [pos, negs], [y], name=f"{stem}_add"),
        ]
        count += 1
    if count == 0:
        raise ModelError("prelu-decompose: the model has no PRelu node")
    del graph.node[:]
    graph.node.extend(nodes)
    return serialize_model(model)


def upgrade_opset(model_bytes: bytes, opset: int = QUANT_OPSET) -> bytes:
    """The model converted to the default-domain ``opset`` (unchanged if already there)."""
    model = load_model(model_bytes)
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= opset:
        return serialize_model(model)
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:  # onnx raises RuntimeError and its own adapter errors
        raise ModelError(f"cannot convert the model to opset {opset}: {exc}") from exc
    return serialize_model(converted)


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantise: format, per-channel weights, calibration method, options.

    ``extra`` is passed to ``quantize_static``'s ``extra_options`` (e.g. ``ActivationSymmetric``,
    ``WeightSymmetric``, ``QDQKeepRemovableActivations``); ``op_types`` limits which operator
    types are quantised (empty: every type onnxruntime can quantise); nodes whose name matches
    one of the ``keep_float`` patterns (``fnmatch``, e.g. ``/fx/stage1/*``) stay in float.
    """

    format: str = "qdq"
    per_channel: bool = True
    method: str = "minmax"
    op_types: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    @property
    def label(self) -> str:
        """A short name: ``qdq-pc-minmax``, ``qoperator-pt-entropy+ActivationSymmetric``."""
        parts = [self.format, "pc" if self.per_channel else "pt", self.method]
        if self.op_types:
            parts.append("only-" + "+".join(self.op_types))
        if self.keep_float:
            parts.append("float-" + "+".join(p.strip("/*") for p in self.keep_float))
        flags = [k if v is True else f"{k}={v}" for k, v in sorted(self.extra.items())]
        return "-".join(parts) + "".join(f"+{f}" for f in flags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "per_channel": self.per_channel,
            "method": self.method,
            "op_types": list(self.op_types),
            "extra": dict(sorted(self.extra.items())),
            "keep_float": list(self.keep_float),
        }


class _Feeds:
    """A ``CalibrationDataReader`` over an iterable of input feeds."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]) -> None:
        self._it: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._it, None)
        return None if feed is None else dict(feed)


def prepare_for_quantisation(model_bytes: bytes, workdir: Path) -> Path:
    """Opset 13 plus onnxruntime's quantisation pre-processing (shape inference, constant
    folding); returns the path of the prepared model in ``workdir``.

    The tensor names of a calibration cache refer to this prepared graph.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = workdir / "opset.onnx"
    src.write_bytes(upgrade_opset(model_bytes))
    prepared = workdir / "prepared.onnx"
    try:
        # Symbolic shape inference needs sympy, which the service does not ship; ONNX shape
        # inference covers these convolutional graphs.
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:  # onnxruntime raises its own non-public exception types
        raise ModelError(f"quantisation pre-processing failed: {exc}") from exc
    return prepared


def quantise_static(
    model_bytes: bytes,
    recipe: QuantRecipe,
    *,
    feeds: Iterable[Mapping[str, np.ndarray]] | None = None,
    calibration_cache: Path | None = None,
) -> bytes:
    """Statically quantised int8 model (uint8 activations, int8 weights).

    Exactly one of ``feeds`` (calibration inputs, e.g. ``{"input": (1, 3, h, w) float32}``)
    and ``calibration_cache`` (a JSON file of tensor ranges) must be given. With ``feeds`` and
    a ``calibration_cache`` path that does not exist yet, use :func:`calibrate` first.
    """
    if (feeds is None) == (calibration_cache is None):
        raise ValueError("give exactly one of feeds and calibration_cache")
    if calibration_cache is not None and not calibration_cache.is_file():
        raise ModelError(f"calibration cache {calibration_cache} does not exist")
    with tempfile.TemporaryDirectory(prefix="smartgate-quant-") as tmp:
        work = Path(tmp)
        prepared = prepare_for_quantisation(model_bytes, work)
        out = work / "quantised.onnx"
        _run_quantize_static(prepared, out, recipe, feeds, calibration_cache)
        return serialize_model(onnx.load(str(out)))


def calibrate(
    model_bytes: bytes, method: str, feeds: Iterable[Mapping[str, np.ndarray]], cache: Path
) -> Path:
    """Compute the tensor ranges of the prepared model over ``feeds`` and save them to
    ``cache`` (JSON, onnxruntime's calibration cache format); returns ``cache``."""
    recipe = QuantRecipe(method=method)
    with tempfile.TemporaryDirectory(prefix="smartgate-calib-") as tmp:
        work = Path(tmp)
        prepared = prepare_for_quantisation(model_bytes, work)
        if cache.exists():
            cache.unlink()
        _run_quantize_static(prepared, work / "q.onnx", recipe, feeds, None, save_cache=cache)
    cache.chmod(0o644)  # onnxruntime writes it through mkstemp (0600)
    return cache


def _run_quantize_static(
    prepared: Path,
    out: Path,
    recipe: QuantRecipe,
    feeds: Iterable[Mapping[str, np.ndarray]] | None,
    cache: Path | None,
    save_cache: Path | None = None,
) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    keep = recipe.keep_float
    graph = onnx.load(str(prepared)).graph
    excluded = [n.name for n in graph.node if any(fnmatchcase(n.name, p) for p in keep)]
    try:
        quantize_static(
            str(prepared),
            str(out),
            calibration_data_reader=_Feeds(feeds) if feeds is not None else None,
            quant_format=formats[recipe.format],
            op_types_to_quantize=list(recipe.op_types) or None,
            per_channel=recipe.per_channel,
            nodes_to_exclude=excluded or None,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[recipe.method],
            extra_options=dict(recipe.extra),
            calibration_cache_path=save_cache or cache,
        )
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise ModelError(f"static quantisation ({recipe.label}) failed: {exc}") from exc
