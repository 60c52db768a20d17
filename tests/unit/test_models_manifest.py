"""ModelManifest: JSON round trip and validation that names the bad field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recognizer.models.catalog import CATALOG, CatalogEntry, matches_catalog
from recognizer.models.manifest import ManifestError, ModelManifest
from smartgate.errors import ModelError

SHA = "ab" * 32


def _operator_manifest() -> dict[str, Any]:
    """What an operator writes by hand for their own embedder (no registry source)."""
    return {
        "name": "arcface-r100",
        "role": "face_embedder",
        "file": "arcface.onnx",
        "sha256": SHA,
        "source": None,
        "licence": "commercial, licensed to ACME",
        "input": {
            "name": "data",
            "color_order": "RGB",
            "size": [112, 112],
            "mean": [127.5, 127.5, 127.5],
            "std": [127.5, 127.5, 127.5],
        },
        "outputs": ["fc1"],
        "embedding_size": 512,
        "default_threshold": 0.3,
    }


@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_manifests_round_trip(name: str) -> None:
    entry = CATALOG[name]
    extra = {k: ["a", "b", "c"] for k in entry.metadata_lists}
    manifest = entry.manifest(SHA, extra)
    again = ModelManifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.to_json() == manifest.to_json()
    assert matches_catalog(again, entry)


def test_operator_manifest_defaults_and_round_trip() -> None:
    m = ModelManifest.from_dict(_operator_manifest())
    assert m.source is None
    assert m.transforms == ()
    assert m.input.layout == "NCHW"
    assert m.input.batch == "dynamic"
    assert m.input.size == (112, 112)
    assert m.input.std == (127.5, 127.5, 127.5)
    assert ModelManifest.from_json(m.to_json()) == m


def test_dynamic_sides_round_trip() -> None:
    data = _operator_manifest()
    data["role"] = "plate_recognizer"
    data["input"]["size"] = [48, None]
    del data["embedding_size"], data["default_threshold"]
    m = ModelManifest.from_dict(data)
    assert m.input.size == (48, None)
    assert json.loads(m.to_json())["input"]["size"] == [48, None]


def test_save_and_load(tmp_path: Path) -> None:
    m = ModelManifest.from_dict(_operator_manifest())
    path = tmp_path / "manifest.json"
    m.save(path)
    assert ModelManifest.load(path) == m
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


def test_extra_is_frozen() -> None:
    data = _operator_manifest()
    data["extra"] = {"characters": ["a", "b"], "nested": {"k": [1, 2]}}
    m = ModelManifest.from_dict(data)
    with pytest.raises(TypeError):
        m.extra["characters"] = []  # type: ignore[index]
    assert m.extra["characters"] == ("a", "b")
    assert json.loads(m.to_json())["extra"] == {"characters": ["a", "b"], "nested": {"k": [1, 2]}}


def _set(path: str, value: Any) -> dict[str, Any]:
    data = _operator_manifest()
    node = data
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("name", "", "name"),
        ("name", "../escape", "name"),
        ("role", "face_finder", "role"),
        ("file", "../model.onnx", "file"),
        ("file", "", "file"),
        ("sha256", "abc", "sha256"),
        ("sha256", "AB" * 32, "sha256"),
        (
            "source",
            {
                "registry": "conda",
                "package": "p",
                "version": "1",
                "member": "m",
                "member_sha256": SHA,
            },
            "source.registry",
        ),
        (
            "source",
            {"registry": "pypi", "package": "p", "version": "1", "member": "m"},
            "source.member_sha256",
        ),
        (
            "source",
            {
                "registry": "pypi",
                "package": "p",
                "version": "1",
                "member": "m",
                "member_sha256": "x",
            },
            "source.member_sha256",
        ),
        ("source", "pypi", "source"),
        ("transforms", "batchable-reshape", "transforms"),
        ("input", [], "input"),
        ("input.name", "", "input.name"),
        ("input.layout", "NHWC", "input.layout"),
        ("input.color_order", "GRAY", "input.color_order"),
        ("input.size", [112], "input.size"),
        ("input.size", [112, 0], "input.size"),
        ("input.size", [112.0, 112], "input.size"),
        ("input.mean", [1, 2], "input.mean"),
        ("input.mean", [1, 2, "x"], "input.mean"),
        ("input.std", [128, 0, 128], "input.std"),
        ("input.std", _DELETE, "input.std"),
        ("input.batch", "static", "input.batch"),
        ("input.scale", [1, 1, 1], "input.scale"),
        ("outputs", [], "outputs"),
        ("outputs", _DELETE, "outputs"),
        ("embedding_size", None, "embedding_size"),
        ("embedding_size", -1, "embedding_size"),
        ("default_threshold", 1.5, "default_threshold"),
        ("default_threshold", None, "default_threshold"),
        ("extra", [], "extra"),
        ("colour", "BGR", "colour"),
        ("format", 2, "format"),
    ],
)
def test_validation_names_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(ManifestError) as info:
        ModelManifest.from_dict(_set(path, value))
    assert info.value.field == field
    assert f"'{field}'" in str(info.value)
    assert isinstance(info.value, ModelError)


def test_embedder_fields_rejected_on_other_roles() -> None:
    data = _set("role", "face_detector")
    with pytest.raises(ManifestError) as info:
        ModelManifest.from_dict(data)
    assert info.value.field == "embedding_size"


def test_bad_json_and_where(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"not valid JSON"):
        ModelManifest.from_json("{", where="x.json")
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(_set("input.color_order", "BRG")), encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        ModelManifest.load(path)
    assert str(path) in str(info.value)
    assert info.value.field == "input.color_order"
    with pytest.raises(ModelError, match="does not exist"):
        ModelManifest.load(tmp_path / "nope.json")


def test_catalog_pins() -> None:
    assert set(CATALOG) == {
        "retinaface-mnet025",
        "fr-feature",
        "fr-liveness",
        "plate-det",
        "plate-rec",
    }
    roles = {e.role for e in CATALOG.values()}
    assert roles == {
        "face_detector",
        "face_embedder",
        "face_liveness",
        "plate_detector",
        "plate_recognizer",
    }
    for entry in CATALOG.values():
        assert isinstance(entry, CatalogEntry)
        assert len(entry.source.member_sha256) == 64
    emb = CATALOG["fr-feature"]
    assert (emb.embedding_size, emb.default_threshold) == (512, 0.45)
    assert emb.input.mean == (127.5,) * 3 and emb.input.std == (128.0,) * 3
    assert CATALOG["fr-liveness"].extra["crop_scale"] == 2.7
    assert CATALOG["plate-rec"].metadata_lists == {"characters": "character"}


def test_outdated_manifest_does_not_match_catalog() -> None:
    entry = CATALOG["fr-feature"]
    data = json.loads(entry.manifest(SHA).to_json())
    data["default_threshold"] = 0.5
    assert not matches_catalog(ModelManifest.from_dict(data), entry)
    rec = CATALOG["plate-rec"]
    assert not matches_catalog(rec.manifest(SHA), rec)  # characters missing
