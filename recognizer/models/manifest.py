"""The model manifest: what a model file is, where it came from and how to feed it.

A manifest is a small JSON file that sits beside its model file. The built-in models get
theirs from ``smartgate models fetch``; an operator who brings their own model (an ArcFace
with a commercial licence, say) writes one by hand, and nothing else needs to change:
preprocessing, input size, embedding size and threshold all live here.

Preprocessing contract: ``x' = (x - mean) / std`` per channel, applied to pixels in
``color_order`` (0-255), laid out as ``layout``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from smartgate.errors import ModelError

FORMAT_VERSION = 1

ROLES = ("face_detector", "face_embedder", "face_liveness", "plate_detector", "plate_recognizer")
REGISTRIES = ("pypi", "npm")
LAYOUTS = ("NCHW",)
COLOR_ORDERS = ("BGR", "RGB")
BATCH_MODES = ("dynamic", "fixed")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ModelError):
    """A manifest is malformed; ``field`` is the dotted path of the offending field."""

    def __init__(self, field: str, problem: str, where: str | None = None) -> None:
        self.field = field
        self.problem = problem
        prefix = f"model manifest {where}: " if where else "model manifest: "
        super().__init__(f"{prefix}field '{field}': {problem}")


@dataclass(frozen=True)
class ModelSource:
    """Where the raw model bytes come from: a member file inside a registry package."""

    registry: str  # "pypi" | "npm"
    package: str
    version: str
    member: str  # path inside the package (wheel root; npm: below the tarball's top folder)
    member_sha256: str  # sha256 of the raw member, before any transform

    def __post_init__(self) -> None:
        _check_choice("source.registry", self.registry, REGISTRIES)
        _check_nonempty("source.package", self.package)
        _check_nonempty("source.version", self.version)
        _check_nonempty("source.member", self.member)
        _check_sha256("source.member_sha256", self.member_sha256)


@dataclass(frozen=True)
class InputSpec:
    """The image input: name, layout, colour order, size and normalisation."""

    name: str
    layout: str = "NCHW"
    color_order: str = "BGR"
    # (height, width); None for fully dynamic; either entry None for that side dynamic.
    size: tuple[int | None, int | None] | None = None
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    batch: str = "dynamic"  # "dynamic" | "fixed" (batch of 1)

    def __post_init__(self) -> None:
        _check_nonempty("input.name", self.name)
        _check_choice("input.layout", self.layout, LAYOUTS)
        _check_choice("input.color_order", self.color_order, COLOR_ORDERS)
        _check_choice("input.batch", self.batch, BATCH_MODES)
        if self.size is not None:
            if not isinstance(self.size, tuple) or len(self.size) != 2:
                raise ManifestError(
                    "input.size", f"expected [height, width] or null, got {self.size!r}"
                )
            for side, value in zip(("height", "width"), self.size, strict=True):
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int) or value <= 0
                ):
                    raise ManifestError(
                        "input.size", f"{side} must be a positive integer or null, got {value!r}"
                    )
        _check_triple("input.mean", self.mean)
        _check_triple("input.std", self.std)
        if any(v == 0 for v in self.std):
            raise ManifestError("input.std", "must not contain 0 (x' = (x - mean) / std)")


@dataclass(frozen=True)
class ModelManifest:
    name: str
    role: str
    file: str  # file name, beside the manifest
    sha256: str  # of the final file
    source: ModelSource | None  # None: the operator's own model
    licence: str
    transforms: tuple[str, ...]
    input: InputSpec
    outputs: tuple[str, ...]
    embedding_size: int | None = None  # face_embedder only
    default_threshold: float | None = None  # face_embedder only: cosine similarity
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ManifestError(
                "name", f"expected letters, digits, '.', '_' or '-' (max 64), got {self.name!r}"
            )
        _check_choice("role", self.role, ROLES)
        if (
            not isinstance(self.file, str)
            or not self.file
            or self.file in (".", "..")
            or "/" in self.file
            or "\\" in self.file
        ):
            raise ManifestError("file", f"expected a plain file name, got {self.file!r}")
        _check_sha256("sha256", self.sha256)
        if self.source is not None and not isinstance(self.source, ModelSource):
            raise ManifestError("source", "expected a ModelSource or null")
        if not isinstance(self.licence, str):
            raise ManifestError("licence", "expected a string")
        if not isinstance(self.transforms, tuple) or not all(
            isinstance(t, str) and t for t in self.transforms
        ):
            raise ManifestError("transforms", "expected a list of transform names")
        if not isinstance(self.input, InputSpec):
            raise ManifestError("input", "expected an InputSpec")
        if (
            not isinstance(self.outputs, tuple)
            or not self.outputs
            or not all(isinstance(o, str) and o for o in self.outputs)
        ):
            raise ManifestError("outputs", "expected a non-empty list of output names")
        if self.role == "face_embedder":
            if (
                isinstance(self.embedding_size, bool)
                or not isinstance(self.embedding_size, int)
                or self.embedding_size <= 0
            ):
                raise ManifestError(
                    "embedding_size",
                    f"a face_embedder needs a positive integer, got {self.embedding_size!r}",
                )
            if not _is_number(self.default_threshold) or not (
                -1.0 <= float(self.default_threshold) <= 1.0  # type: ignore[arg-type]
            ):
                raise ManifestError(
                    "default_threshold",
                    "a face_embedder needs a cosine-similarity threshold in [-1, 1], "
                    f"got {self.default_threshold!r}",
                )
        else:
            if self.embedding_size is not None:
                raise ManifestError("embedding_size", f"only for face_embedder, not {self.role}")
            if self.default_threshold is not None:
                raise ManifestError("default_threshold", f"only for face_embedder, not {self.role}")
        if not isinstance(self.extra, Mapping) or not all(isinstance(k, str) for k in self.extra):
            raise ManifestError("extra", "expected an object with string keys")
        # Freeze: a manifest is shared between threads and must not change under them.
        object.__setattr__(self, "extra", _freeze(self.extra))

    # --- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        src = self.source
        return {
            "format": FORMAT_VERSION,
            "name": self.name,
            "role": self.role,
            "file": self.file,
            "sha256": self.sha256,
            "source": None
            if src is None
            else {
                "registry": src.registry,
                "package": src.package,
                "version": src.version,
                "member": src.member,
                "member_sha256": src.member_sha256,
            },
            "licence": self.licence,
            "transforms": list(self.transforms),
            "input": {
                "name": self.input.name,
                "layout": self.input.layout,
                "color_order": self.input.color_order,
                "size": None if self.input.size is None else list(self.input.size),
                "mean": list(self.input.mean),
                "std": list(self.input.std),
                "batch": self.input.batch,
            },
            "outputs": list(self.outputs),
            "embedding_size": self.embedding_size,
            "default_threshold": self.default_threshold,
            "extra": _thaw(self.extra),
        }

    def to_json(self) -> str:
        return _dumps(self.to_dict()) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str | None = None) -> ModelManifest:
        try:
            return _from_dict(data)
        except ManifestError as exc:
            if where is None:
                raise
            raise ManifestError(exc.field, exc.problem, where) from None

    @classmethod
    def from_json(cls, text: str, where: str | None = None) -> ModelManifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError("(document)", f"not valid JSON: {exc}", where) from exc
        return cls.from_dict(data, where)

    @classmethod
    def load(cls, path: Path) -> ModelManifest:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ModelError(f"model manifest {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"model manifest {path} cannot be read: {exc}") from exc
        return cls.from_json(text, where=str(path))

    def save(self, path: Path) -> None:
        """Write atomically (a reader never sees half a manifest)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)


# --- parsing helpers -------------------------------------------------------------------------

_TOP_KEYS = {
    "format",
    "name",
    "role",
    "file",
    "sha256",
    "source",
    "licence",
    "transforms",
    "input",
    "outputs",
    "embedding_size",
    "default_threshold",
    "extra",
}
_TOP_REQUIRED = {"name", "role", "file", "sha256", "input", "outputs"}
_SOURCE_KEYS = {"registry", "package", "version", "member", "member_sha256"}
_INPUT_KEYS = {"name", "layout", "color_order", "size", "mean", "std", "batch"}
_INPUT_REQUIRED = {"name", "mean", "std"}


def _from_dict(data: Any) -> ModelManifest:
    if not isinstance(data, Mapping):
        raise ManifestError("(document)", "expected a JSON object")
    _check_keys("", data, _TOP_KEYS, _TOP_REQUIRED)
    fmt = data.get("format", FORMAT_VERSION)
    if fmt != FORMAT_VERSION:
        raise ManifestError("format", f"this smartgate reads format {FORMAT_VERSION}, got {fmt!r}")

    raw_source = data.get("source")
    source: ModelSource | None = None
    if raw_source is not None:
        if not isinstance(raw_source, Mapping):
            raise ManifestError("source", "expected an object or null")
        _check_keys("source.", raw_source, _SOURCE_KEYS, _SOURCE_KEYS)
        source = ModelSource(**{k: raw_source[k] for k in _SOURCE_KEYS})

    raw_input = data["input"]
    if not isinstance(raw_input, Mapping):
        raise ManifestError("input", "expected an object")
    _check_keys("input.", raw_input, _INPUT_KEYS, _INPUT_REQUIRED)
    size = raw_input.get("size")
    if size is not None:
        if not isinstance(size, list) or len(size) != 2:
            raise ManifestError("input.size", f"expected [height, width] or null, got {size!r}")
        size = tuple(size)
    inp = InputSpec(
        name=raw_input["name"],
        layout=raw_input.get("layout", "NCHW"),
        color_order=raw_input.get("color_order", "BGR"),
        size=size,
        mean=_triple("input.mean", raw_input["mean"]),
        std=_triple("input.std", raw_input["std"]),
        batch=raw_input.get("batch", "dynamic"),
    )

    transforms = data.get("transforms", [])
    if not isinstance(transforms, list):
        raise ManifestError("transforms", "expected a list of transform names")
    outputs = data["outputs"]
    if not isinstance(outputs, list):
        raise ManifestError("outputs", "expected a list of output names")
    extra = data.get("extra", {})
    if extra is None:
        extra = {}
    return ModelManifest(
        name=data["name"],
        role=data["role"],
        file=data["file"],
        sha256=data["sha256"],
        source=source,
        licence=data.get("licence", ""),
        transforms=tuple(transforms),
        input=inp,
        outputs=tuple(outputs),
        embedding_size=data.get("embedding_size"),
        default_threshold=data.get("default_threshold"),
        extra=extra,
    )


def _check_keys(
    prefix: str, data: Mapping[str, Any], allowed: set[str], required: set[str]
) -> None:
    for key in data:
        if key not in allowed:
            raise ManifestError(f"{prefix}{key}", f"unknown field (known: {sorted(allowed)})")
    for key in sorted(required):
        if key not in data:
            raise ManifestError(f"{prefix}{key}", "missing")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise ManifestError(name, f"expected 3 numbers (one per channel), got {value!r}")
    if not all(_is_number(v) for v in value):
        raise ManifestError(name, f"expected 3 finite numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _check_triple(name: str, value: Any) -> None:
    if not isinstance(value, tuple):
        raise ManifestError(name, f"expected a tuple of 3 numbers, got {value!r}")
    _triple(name, value)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ManifestError(name, f"expected one of {list(choices)}, got {value!r}")


def _check_nonempty(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ManifestError(name, f"expected a non-empty string, got {value!r}")


def _check_sha256(name: str, value: Any) -> None:
    if not isinstance(value, str) or not _SHA256_RE.match(value):
        raise ManifestError(name, f"expected 64 lower-case hex digits, got {value!r}")


def _dumps(value: Any, indent: str = "") -> str:
    """JSON with one key per line, but lists of plain values on one line (character lists)."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        items = [inner + _dumps(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value
