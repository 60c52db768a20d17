"""Model variants derived locally from a built-in model: never downloaded, made on first use.

``DERIVED`` names each variant, the built-in model it comes from and its recipe (steps of
``recognizer.models.recipes``). ``load_derived`` (called by ``ModelStore.load`` for these
names) verifies the base model, derives the variant into ``<cache>/<name>/`` the first time
(or when the base model, the recipe or the shipped calibration changed) and verifies it like
any cached model after that. The manifest records what it was derived from: the base model's
sha256, the recipe, the calibration file and its sha256, the derivation version and the
onnxruntime that quantised it.

Steps and what they buy (one intra-op thread, interleaved with fp32; figures and the
cross-fitted accuracy protocol in ``python -m benchmarks.quantisation``):

- ``prelu-decompose``: exact (identical outputs on this CPU; checked after deriving).
  ``fr-feature-fast`` 1.5x (11.2 → 7.8 ms), ``fr-liveness-fast`` 1.2-1.27x (7.3 → 6.1 ms).
- ``int8-qdq-pc``: static int8 (QDQ, per-channel int8 weights, uint8 activations, MinMax)
  with the tensor ranges of ``calibration/<name>.json``, measured on the frames and aligned
  crops of the shared photos (``python -m benchmarks.quantisation --write-calibration``) and
  shipped because installations do not have those photos: derivation needs no image and is
  deterministic. The first layers stay in float: there int8 costs accuracy and saves nothing.
  ``retinaface-mnet025-int8`` 1.7x (13.9 → 8.1 ms): the same 30 faces on the shared photos,
  landmarks within 0.042 of the face width; ``fr-feature-int8`` 1.86x over ``fr-feature``
  but only ~1.25x over the exact ``fr-feature-fast``, embeddings at cosine >= 0.976 to fp32.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from recognizer.models.cache import sha256_bytes, sha256_file
from recognizer.models.catalog import MANIFEST_FILE, MODEL_FILE
from recognizer.models.manifest import ModelManifest
from recognizer.models.recipes import QuantRecipe, calibrate, decompose_prelu, quantise_static
from smartgate.errors import ModelError

#: Bump when a step's code changes what it writes: cached variants are derived again.
DERIVATION_VERSION = 1
CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
STEPS = ("prelu-decompose", "int8-qdq-pc")


@dataclass(frozen=True)
class DerivedEntry:
    """A variant of the built-in model ``base``: ``recipe`` steps in order."""

    name: str
    base: str
    recipe: tuple[str, ...]
    exact: bool  # outputs identical to the base model's (checked after deriving)
    note: str
    # Nodes left in float by the int8 step (fnmatch patterns over the prepared graph's names).
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [s for s in self.recipe if s not in STEPS]
        if unknown or not self.recipe:
            raise ValueError(f"{self.name}: unknown or empty recipe {self.recipe} ({STEPS})")

    @property
    def quant_recipe(self) -> QuantRecipe:
        """The int8 step: QDQ, per-channel weights, MinMax ranges, ``keep_float`` in float."""
        return QuantRecipe("qdq", per_channel=True, method="minmax", keep_float=self.keep_float)

    @property
    def calibration(self) -> Path | None:
        """The shipped tensor ranges (only for recipes that quantise)."""
        return CALIBRATION_DIR / f"{self.name}.json" if "int8-qdq-pc" in self.recipe else None

    def pre_quantisation(self, base: bytes) -> bytes:
        """The graph the calibration ranges refer to (the steps before quantising)."""
        data = base
        for step in self.recipe:
            if step == "int8-qdq-pc":
                break
            data = _STEP_FUNCS[step](data)
        return data


#: fr_feature's first four Conv + PRelu blocks (56×56, 3→64→128 channels): in int8 they cost
#: accuracy (cosine to fp32 min 0.956 → 0.976) and gain no time.
FR_FEATURE_FIRST_BLOCKS = tuple(
    p for i in range(4) for p in (f"Conv_{2 * i}", f"PRelu_{2 * i + 1}__*")
)

_STEP_FUNCS: Mapping[str, Callable[[bytes], bytes]] = MappingProxyType(
    {"prelu-decompose": decompose_prelu}
)

DERIVED: Mapping[str, DerivedEntry] = MappingProxyType(
    {
        e.name: e
        for e in (
            DerivedEntry(
                "fr-feature-fast",
                "fr-feature",
                ("prelu-decompose",),
                exact=True,
                note="PRelu as Relu/Sub/Mul/Add: identical embeddings, 1.5x faster",
            ),
            DerivedEntry(
                "fr-liveness-fast",
                "fr-liveness",
                ("prelu-decompose",),
                exact=True,
                note="PRelu as Relu/Sub/Mul/Add: identical scores, 1.2x faster",
            ),
            DerivedEntry(
                "fr-feature-int8",
                "fr-feature",
                ("prelu-decompose", "int8-qdq-pc"),
                exact=False,
                note="static int8 of fr-feature-fast, first 4 blocks in float",
                keep_float=FR_FEATURE_FIRST_BLOCKS,
            ),
            DerivedEntry(
                "retinaface-mnet025-int8",
                "retinaface-mnet025",
                ("int8-qdq-pc",),
                exact=False,
                note="static int8 RetinaFace, its first stage (stride 2-4) in float",
                keep_float=("/fx/stage1/*",),
            ),
        )
    }
)


def derive(entry: DerivedEntry, base: bytes) -> bytes:
    """The variant's model bytes from the base model's bytes (deterministic)."""
    data = entry.pre_quantisation(base)
    if "int8-qdq-pc" in entry.recipe:
        cache = entry.calibration
        if cache is None or not cache.is_file():
            raise ModelError(f"model '{entry.name}': its calibration file {cache} is missing")
        data = quantise_static(data, entry.quant_recipe, calibration_cache=cache)
    return data


def write_calibration(
    entry: DerivedEntry, base: bytes, feeds: Iterable[Mapping[str, np.ndarray]], path: Path
) -> Path:
    """Measure the tensor ranges of ``entry``'s pre-quantisation graph over ``feeds`` (real
    preprocessed inputs) and save them to ``path`` (the file ``derive`` reads)."""
    if entry.calibration is None:
        raise ValueError(f"{entry.name} is not quantised; it needs no calibration")
    return calibrate(entry.pre_quantisation(base), entry.quant_recipe.method, feeds, path)


def derived_manifest(entry: DerivedEntry, base: ModelManifest, sha256: str) -> ModelManifest:
    """The base manifest renamed, with the derived file's checksum and provenance."""
    import onnxruntime

    calib = entry.calibration
    provenance: dict[str, Any] = {
        "from": entry.base,
        "base_sha256": base.sha256,
        "recipe": list(entry.recipe),
        "keep_float": list(entry.keep_float),
        "version": DERIVATION_VERSION,
        "calibration": None if calib is None else calib.name,
        "calibration_sha256": None if calib is None else sha256_file(calib),
        "quantiser": None if calib is None else f"onnxruntime {onnxruntime.__version__}",
        "note": entry.note,
    }
    return replace(
        base,
        name=entry.name,
        file=MODEL_FILE,
        sha256=sha256,
        transforms=(*base.transforms, *entry.recipe),
        extra={**base.extra, "derived": provenance},
    )


def is_current(manifest: ModelManifest, entry: DerivedEntry, base: ModelManifest) -> bool:
    """Whether a cached variant was derived from this base with this recipe and calibration."""
    got = manifest.extra.get("derived")
    if not isinstance(got, Mapping):
        return False
    calib = entry.calibration
    try:
        calib_sha = None if calib is None else sha256_file(calib)
    except OSError:
        return False
    return (
        manifest.name == entry.name
        and got.get("from") == entry.base
        and got.get("base_sha256") == base.sha256
        and tuple(got.get("recipe") or ()) == entry.recipe
        and tuple(got.get("keep_float") or ()) == entry.keep_float
        and got.get("version") == DERIVATION_VERSION
        and got.get("calibration_sha256") == calib_sha
    )


@dataclass(frozen=True)
class Derived:
    """What ``load_derived`` hands back: the verified file and its manifest."""

    manifest: ModelManifest
    path: Path


def load_derived(
    cache_dir: Path, name: str, load_base: Callable[[str], tuple[ModelManifest, Path]]
) -> Derived:
    """The variant ``name`` from ``cache_dir``, derived first if absent or out of date.

    ``load_base(base_name)`` returns the verified base model's manifest and file path (it
    raises ``ModelError`` with the fix when the base model is missing or altered). A cached
    variant whose file no longer matches its manifest is refused, as any altered model is.
    """
    entry = DERIVED[name]
    base_manifest, base_path = load_base(entry.base)
    folder = cache_dir / name
    mpath = folder / MANIFEST_FILE
    if mpath.is_file():
        try:
            manifest: ModelManifest | None = ModelManifest.load(mpath)
        except ModelError:
            manifest = None  # unreadable: derive again
        if manifest is not None and is_current(manifest, entry, base_manifest):
            return Derived(manifest, _verified(manifest, folder))
    data = derive(entry, base_path.read_bytes())
    if entry.exact:
        check_identical(base_path.read_bytes(), data, base_manifest)
    manifest = derived_manifest(entry, base_manifest, sha256_bytes(data))
    _write_atomic(folder / MODEL_FILE, data)
    _write_atomic(mpath, manifest.to_json().encode("utf-8"))
    return Derived(manifest, _verified(manifest, folder))


def _verified(manifest: ModelManifest, folder: Path) -> Path:
    path = folder / manifest.file
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelError(f"model '{manifest.name}': cannot read {path}: {exc}") from exc
    if actual != manifest.sha256:
        raise ModelError(
            f"model '{manifest.name}' at {path} is altered: sha256 expected {manifest.sha256}, "
            f"actual {actual}; delete {folder} and it is derived again from "
            f"'{manifest.extra['derived']['from']}' on the next start"
        )
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    """Write so that a concurrent reader sees the old file or the whole new one (two
    processes deriving at once write the same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_identical(base: bytes, derived: bytes, manifest: ModelManifest, seed: int = 0) -> None:
    """Run both models on two random inputs of the manifest's shape; raise ``ModelError``
    unless every output agrees to float rounding (an exact recipe's promise)."""
    import onnxruntime as ort

    spec = manifest.input
    size = spec.size or (None, None)
    h, w = (size[0] or 96), (size[1] or 128)
    low, high = (0.0, 255.0) if spec.mean == (0.0, 0.0, 0.0) else (-1.0, 1.0)
    x = np.random.default_rng(seed).uniform(low, high, (2, 3, int(h), int(w))).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    outs = [
        ort.InferenceSession(m, opts, providers=["CPUExecutionProvider"]).run(None, {spec.name: x})
        for m in (base, derived)
    ]
    for a, b in zip(*outs, strict=True):
        diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
        # Identical on the CPU it was measured on; allow rounding of another kernel order.
        if not diff <= 1e-5 * max(1.0, float(np.max(np.abs(a)))):
            raise ModelError(
                f"model '{manifest.name}': the derived model differs from its base by {diff:.3g}"
            )
