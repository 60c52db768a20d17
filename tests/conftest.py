"""Shared fixtures: the real photos, the model cache, a real engine and a real gRPC server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from benchmarks.datasets import data_dir
from smartgate.config import CaptureConfig, Config, ModelsConfig, ServerConfig, default_cache_dir

# Functional tests send bursts of frames and expect every one answered: no shedding there
# (tests/unit/test_scheduler.py and the bench harness cover shedding).
NO_SHEDDING = CaptureConfig(per_gate_limit=10_000, max_wait_ms=600_000, max_queue=100_000)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return data_dir()


@pytest.fixture(scope="session")
def faces_dir(shared_data: Path) -> Path:
    return shared_data / "faces"


@pytest.fixture(scope="session")
def plates_dir(shared_data: Path) -> Path:
    return shared_data / "plates"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    env = os.environ.get("SMARTGATE_TEST_MODELS_DIR")
    return Path(env) if env else default_cache_dir() / "models"


@pytest.fixture(scope="session")
def base_config(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    return Config(
        data_dir=tmp_path_factory.mktemp("data"),
        models=ModelsConfig(cache_dir=models_dir),
        server=ServerConfig(listen="127.0.0.1:0", max_workers=8, grace_seconds=1.0),
        capture=NO_SHEDDING,
    )


@pytest.fixture(scope="session")
def face_analyzer(base_config: Config):  # type: ignore[no-untyped-def]
    """Real models, loaded and warmed once per test session."""
    from recognizer.faces.factory import build_face_analyzer

    return build_face_analyzer(base_config)


@pytest.fixture(scope="session")
def plate_reader(base_config: Config):  # type: ignore[no-untyped-def]
    """The real plate models, loaded and warmed once per test session."""
    from cluster.engine import build_plate_reader_from

    return build_plate_reader_from(base_config)


@pytest.fixture
def engine(face_analyzer, plate_reader, base_config: Config, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real engine over a fresh data directory (real SQLite, real FAISS, real models)."""
    from dataclasses import replace

    from cluster.engine import Engine
    from indexer.registry import FaceRegistry

    config = replace(base_config, data_dir=tmp_path)
    registry = FaceRegistry(tmp_path, face_analyzer.embedder.dim)
    return Engine(config, face_analyzer, registry, plate_reader)


@pytest.fixture
def node(engine):  # type: ignore[no-untyped-def]
    """The engine with its event log and passages (real SQLite under the test's data dir)."""
    from cluster.node import Node

    node = Node.around(engine)
    yield node
    node.close()


@pytest.fixture
def server(node):  # type: ignore[no-untyped-def]
    """A real gRPC server on a free port serving ``node``."""
    from cluster.server import start_server

    running = start_server(node, node.config.server)
    yield running
    running.stop(0)


@pytest.fixture
def channel(server) -> Iterator[grpc.Channel]:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="session")
def cjk_font() -> None:
    """Synthetic plates need a CJK font (`make test` installs fonts-noto-cjk): fail, not skip."""
    from synth_plates import FONT_MISSING, font_available

    if not font_available():
        pytest.fail(FONT_MISSING)
