"""The Triton backend against a real Triton server (PyTriton's ``tritonserver`` in
``.venv-triton``, serving the same ONNX files through onnxruntime): every model, the face and
plate pipelines and a ``smartgate serve`` node give what the in-process backend gives."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from benchmarks.plate_accuracy import read_image
from cluster.status import status_code
from recognizer.backends.onnxrt import OnnxRuntimeBackend
from recognizer.backends.triton import TritonBackend, TritonClientOptions
from recognizer.backends.triton_process import (
    TRITON_VENV,
    TritonEndpoints,
    TritonServerProcess,
    free_port,
    triton_python,
)
from recognizer.image import DecodeLimits, decode
from recognizer.models.store import ModelStore
from smartgate.config import Config, ModelsConfig
from smartgate.errors import ModelError, UnavailableError
from smartgate.v1 import capture_pb2, capture_pb2_grpc, common_pb2, registry_pb2, registry_pb2_grpc

pytestmark = pytest.mark.integration

# The face models the node runs by default (derived variants: recognizer/models/derived.py).
DETECTOR, EMBEDDER, LIVENESS = ModelsConfig.detector, ModelsConfig.embedder, ModelsConfig.liveness
FACE_MODELS = (DETECTOR, EMBEDDER, LIVENESS)
MODELS = (*FACE_MODELS, "plate-det", "plate-rec")
MAX_BATCH = 8  # the server's; larger batches are sliced by the client
LIMITS = DecodeLimits()
FACE_PHOTOS = (
    "examples_obama.jpg",
    "examples_two_people.jpg",
    "examples_knn_examples_test_obama_and_biden.jpg",
    "examples_obama-1080p.jpg",
    "tests_test_images_32bit.png",
)
PLATE_SCENES = ("ccpd_00.jpg", "ccpd_01.jpg", "ccpd_02.jpg")
# Both sides run the same onnxruntime build on the same CPU: equal but for float noise.
RTOL, ATOL = 1e-5, 1e-5


def _need_triton() -> Path:
    python = triton_python()
    if python is None:
        pytest.skip(f"no Triton virtualenv at {TRITON_VENV}: run `make triton-venv`")
    return python


@pytest.fixture(scope="module")
def triton(models_dir: Path) -> Iterator[TritonEndpoints]:
    """One real Triton server with the five models, for the whole module."""
    _need_triton()
    server = TritonServerProcess(models_dir, MODELS, max_batch=MAX_BATCH)
    endpoints = server.start()
    try:
        yield endpoints
    finally:
        # PyTriton sometimes outlives its SIGINT grace under load and is killed: that is its
        # shutdown, not the backend under test (stopping and restarting is tested below).
        code = server.stop()
        if code != 0:
            logging.getLogger(__name__).warning("Triton server ended with %s", code)


@pytest.fixture(scope="module")
def triton_config(base_config: Config, triton: TritonEndpoints) -> Config:
    return replace(
        base_config,
        models=replace(base_config.models, backend="triton", triton_url=triton.grpc),
    )


@dataclass
class Recorder:
    """Delegates to a real backend and keeps every (feeds, outputs) pair it saw."""

    inner: OnnxRuntimeBackend
    calls: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.inner.input_names)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.inner.output_names)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.inner.run(feeds)
        self.calls.append(({k: np.array(v) for k, v in feeds.items()}, out))
        return out

    def close(self) -> None:
        self.inner.close()


def _assert_same_outputs(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        assert got[name].dtype == expected.dtype, name
        np.testing.assert_allclose(got[name], expected, rtol=RTOL, atol=ATOL, err_msg=name)


def _photo(faces_dir: Path, name: str):  # type: ignore[no-untyped-def]
    return decode((faces_dir / name).read_bytes(), LIMITS, 640)


def test_every_model_matches_onnxruntime_on_the_pipelines_inputs(  # type: ignore[no-untyped-def]
    triton: TritonEndpoints, base_config: Config, models_dir: Path, faces_dir: Path, plates_dir
) -> None:
    """Record what the face and plate pipelines feed each model on real photos; Triton's
    answer to each of those inputs equals onnxruntime's."""
    from cluster.engine import build_plate_reader_from
    from recognizer.faces.factory import build_face_analyzer

    analyzer = build_face_analyzer(base_config, warm=False)
    reader = build_plate_reader_from(base_config)
    stages = {
        DETECTOR: analyzer.detector,
        EMBEDDER: analyzer.embedder,
        LIVENESS: analyzer.liveness,
        "plate-det": reader.detector,
        "plate-rec": reader.recognizer,
    }
    recorders = {}
    for name, stage in stages.items():
        recorders[name] = Recorder(stage.backend, [])  # type: ignore[union-attr]
        stage.backend = recorders[name]  # type: ignore[union-attr]
    for photo in FACE_PHOTOS:
        analyzer.analyze(_photo(faces_dir, photo), embed_all=True)
    for scene in PLATE_SCENES:
        reader.read_frame(read_image(plates_dir / "scenes" / scene))

    store = ModelStore(models_dir)
    for name, recorder in recorders.items():
        assert recorder.calls, f"the pipelines never ran {name}"
        with TritonBackend(store.load(name).manifest, triton.grpc) as backend:
            assert tuple(backend.output_names) == recorder.output_names
            for feeds, want in recorder.calls:
                _assert_same_outputs(backend.run(feeds), want)
    # Several faces per photo reached the embedder as one batch.
    assert max(f["input"].shape[0] for f, _ in recorders[EMBEDDER].calls) >= 2


def test_batches_above_the_servers_limit_are_sliced(  # type: ignore[no-untyped-def]
    triton: TritonEndpoints, models_dir: Path, face_analyzer, faces_dir: Path
) -> None:
    from recognizer.preprocess import to_blob

    faces = face_analyzer.analyze(_photo(faces_dir, "examples_two_people.jpg"), embed_all=True)
    crops = np.stack([f.aligned for f in faces] * 6)[: MAX_BATCH * 2 + 3]  # 19 real crops
    model = ModelStore(models_dir).load(EMBEDDER)
    blob = to_blob(crops, model.manifest.input.mean, model.manifest.input.std, False)
    with TritonBackend(model.manifest, triton.grpc) as backend:
        assert backend.max_batch_size == MAX_BATCH
        got = backend.run({"input": blob})
    with OnnxRuntimeBackend(model) as local:
        _assert_same_outputs(got, local.run({"input": blob}))


def test_face_pipeline_over_triton_finds_the_same_faces_and_embeddings(  # type: ignore[no-untyped-def]
    triton_config: Config, face_analyzer, faces_dir: Path
) -> None:
    from recognizer.faces.factory import build_face_analyzer

    over_triton = build_face_analyzer(triton_config)
    assert type(over_triton.embedder.backend).__name__ == "TritonBackend"
    for photo in FACE_PHOTOS:
        image = _photo(faces_dir, photo)
        want = face_analyzer.analyze(image, embed_all=True)
        got = over_triton.analyze(image, embed_all=True)
        assert len(got) == len(want) >= 1, photo
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.box, w.box, atol=1e-3)
            np.testing.assert_allclose(g.landmarks, w.landmarks, atol=1e-3)
            assert g.score == pytest.approx(w.score, abs=1e-5)
            assert g.quality.reasons == w.quality.reasons
            assert g.embedding is not None and w.embedding is not None
            np.testing.assert_allclose(g.embedding, w.embedding, atol=1e-5)
            assert (g.liveness is None) == (w.liveness is None)
            if g.liveness is not None:
                assert g.liveness == pytest.approx(w.liveness, abs=1e-5)


def test_plate_reader_over_triton_reads_the_same_plates(  # type: ignore[no-untyped-def]
    triton_config: Config, plate_reader, plates_dir: Path
) -> None:
    from cluster.engine import build_plate_reader_from

    over_triton = build_plate_reader_from(triton_config)
    for scene in PLATE_SCENES:
        image = read_image(plates_dir / "scenes" / scene)
        want = plate_reader.read_frame(image)
        got = over_triton.read_frame(image)
        assert [r.text for r in got] == [r.text for r in want] and want, scene
        for g, w in zip(got, want, strict=True):
            assert g.score == pytest.approx(w.score, abs=1e-5)
            np.testing.assert_allclose(g.corners, w.corners, atol=1e-2)


def test_concurrent_calls_share_one_client_and_get_their_own_answers(
    triton: TritonEndpoints, models_dir: Path
) -> None:
    """Eight threads at once (Triton's dynamic batcher may join their requests): each gets
    the answer to its own input."""
    model = ModelStore(models_dir).load(EMBEDDER)
    rng = np.random.default_rng(7)
    blobs = [rng.standard_normal((1 + i % 3, 3, 112, 112), dtype=np.float32) for i in range(8)]
    with OnnxRuntimeBackend(model) as local:
        want = [local.run({"input": b})["output"] for b in blobs]
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    with TritonBackend(model.manifest, triton.grpc) as backend:

        def worker(i: int) -> None:
            try:
                for _ in range(3):
                    got[i] = backend.run({"input": blobs[i]})["output"]
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(blobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    for i, expected in enumerate(want):
        np.testing.assert_allclose(got[i], expected, rtol=RTOL, atol=ATOL)


def test_unknown_model_and_mismatched_manifest_are_model_errors(
    triton: TritonEndpoints, models_dir: Path
) -> None:
    manifest = ModelStore(models_dir).load(EMBEDDER).manifest
    with pytest.raises(ModelError, match="'no-such-model' is not loaded"):
        TritonBackend(manifest, triton.grpc, model_name="no-such-model")
    renamed = replace(manifest, input=replace(manifest.input, name="pixels"))
    with pytest.raises(ModelError, match="manifest names input 'pixels'"):
        TritonBackend(renamed, triton.grpc)
    with pytest.raises(ModelError, match=r"output\(s\) \['embedding'\]"):
        TritonBackend(replace(manifest, outputs=("embedding",)), triton.grpc)


def test_bad_inputs_are_model_errors_and_a_closed_backend_refuses(
    triton: TritonEndpoints, models_dir: Path
) -> None:
    manifest = ModelStore(models_dir).load(EMBEDDER).manifest
    backend = TritonBackend(manifest, triton.grpc)
    assert backend.health()
    with pytest.raises(ModelError, match="must be float32"):
        backend.run({"input": np.zeros((1, 3, 112, 112), np.float64)})
    with pytest.raises(ModelError, match="no input"):
        backend.run({"pixels": np.zeros((1, 3, 112, 112), np.float32)})
    with pytest.raises(ModelError, match="inference failed"):  # the server refuses the shape
        backend.run({"input": np.zeros((1, 3, 100, 112), np.float32)})
    backend.close()
    assert not backend.health()
    with pytest.raises(ModelError, match="closed"):
        backend.run({"input": np.zeros((1, 3, 112, 112), np.float32)})


def test_no_server_is_unavailable_after_retries_within_the_timeout(models_dir: Path) -> None:
    manifest = ModelStore(models_dir).load(EMBEDDER).manifest
    options = TritonClientOptions(timeout_s=3.0, retries=3, backoff_s=0.05)
    started = time.monotonic()
    with pytest.raises(UnavailableError, match=r"unavailable .*4 attempts") as caught:
        TritonBackend(manifest, f"127.0.0.1:{free_port()}", options)
    assert time.monotonic() - started < options.timeout_s + 0.5
    assert status_code(caught.value) == grpc.StatusCode.UNAVAILABLE


def test_a_triton_server_that_goes_away_makes_frames_unavailable(  # type: ignore[no-untyped-def]
    base_config: Config, models_dir: Path, faces_dir: Path, tmp_path: Path
) -> None:
    """A node on its own Triton server decides; the server stops; the next frame fails with
    UNAVAILABLE (after the backend's retries, within its time budget), the backend's health
    turns false; the server comes back on the same port and the node decides again."""
    from cluster.engine import Engine
    from cluster.node import Node
    from cluster.server import start_server
    from indexer.registry import FaceRegistry
    from recognizer.faces.factory import build_face_analyzer

    _need_triton()
    face_models = list(FACE_MODELS)
    triton_server = TritonServerProcess(models_dir, face_models)
    with triton_server:
        assert triton_server.endpoints is not None
        models = replace(
            base_config.models,
            backend="triton",
            triton_url=triton_server.endpoints.grpc,
            triton_timeout_s=2.0,
            triton_retries=4,
        )
        config = replace(base_config, models=models, data_dir=tmp_path)
        analyzer = build_face_analyzer(config)
        node = Node.around(Engine(config, analyzer, FaceRegistry(tmp_path, analyzer.embedder.dim)))
        running = start_server(node, config.server)
        channel = grpc.insecure_channel(running.address)
        capture = capture_pb2_grpc.CaptureStub(channel)
        _enroll_obama(channel, faces_dir)
        frame = capture_pb2.Frame(
            community="c1", gate="g1", device="d1", seq=1,
            image=(faces_dir / "examples_obama2.jpg").read_bytes(),
        )  # fmt: skip
        assert capture.Submit(frame, timeout=60).action == capture_pb2.ACTION_OPEN
    try:
        assert not analyzer.detector.backend.health()  # type: ignore[attr-defined]
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            capture.Submit(frame, timeout=60)
        elapsed = time.monotonic() - started
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Triton server at" in (caught.value.details() or "")
        assert elapsed < models.triton_timeout_s + 1.0
        with pytest.raises(grpc.RpcError) as again:  # the node itself is still there
            capture.Submit(frame, timeout=60)
        assert again.value.code() == grpc.StatusCode.UNAVAILABLE
        with triton_server:  # back, on the same ports
            assert capture.Submit(frame, timeout=60).action == capture_pb2.ACTION_OPEN
            assert analyzer.detector.backend.health()  # type: ignore[attr-defined]
    finally:
        channel.close()
        running.stop(0)
        node.close()


# --- a `smartgate serve` node on Triton against one on onnxruntime ---------------------------


def _serve_over_triton(
    config_file: Path, data_dir: Path, models_dir: Path, log_path: Path
) -> subprocess.Popen[str]:
    import os

    env = {
        **os.environ,
        "SMARTGATE_MODELS__CACHE_DIR": str(models_dir),
        "SMARTGATE_SERVER__METRICS_LISTEN": "127.0.0.1:0",
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("w") as log:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "cluster.cli", "--config", str(config_file), "serve"),
                *("--data-dir", str(data_dir), "--listen", "127.0.0.1:0"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )


def _triton_requests(endpoints: TritonEndpoints) -> dict[str, float]:
    """Successful requests per model, from the Triton server's Prometheus metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://{endpoints.metrics}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    pattern = r'^nv_inference_request_success\{model="([^"]+)",version="1"\} (\S+)$'
    return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text, re.MULTILINE)}


def _enroll_obama(channel: grpc.Channel, faces_dir: Path) -> None:
    registry_pb2_grpc.RegistryStub(channel).EnrollPerson(
        registry_pb2.EnrollPersonRequest(
            community="c1",
            person_id="obama",
            name="Barack",
            role=common_pb2.ROLE_RESIDENT,
            images=[(faces_dir / "examples_obama.jpg").read_bytes()],
        ),
        timeout=60,
    )


def _decisions(channel: grpc.Channel, faces_dir: Path) -> list[capture_pb2.Decision]:
    capture = capture_pb2_grpc.CaptureStub(channel)
    _enroll_obama(channel, faces_dir)
    out = []
    for seq, photo in enumerate(
        ("examples_obama2.jpg", "examples_biden.jpg", "examples_two_people.jpg")
    ):
        frame = capture_pb2.Frame(
            community="c1", gate="g1", device="d1", seq=seq, image=(faces_dir / photo).read_bytes()
        )
        out.append(capture.Submit(frame, timeout=60))
    return out


def test_smartgate_serve_with_the_triton_backend_decides_like_onnxruntime(  # type: ignore[no-untyped-def]
    triton: TritonEndpoints, channel: grpc.Channel, faces_dir: Path, models_dir: Path, tmp_path
) -> None:
    config_file = tmp_path / "smartgate.toml"
    config_file.write_text(
        f'[models]\nbackend = "triton"\ntriton_url = "{triton.grpc}"\ntriton_timeout_s = 10.0\n'
        "[capture]\nper_gate_limit = 10000\nmax_wait_ms = 600000.0\n",
        encoding="utf-8",
    )
    before = _triton_requests(triton)
    log_path = tmp_path / "serve.log"
    proc = _serve_over_triton(config_file, tmp_path / "data", models_dir, log_path)
    try:
        deadline = time.monotonic() + 120
        address = None
        while address is None and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"serving on (\S+)", log_path.read_text())
            address = m.group(1) if m else None
            time.sleep(0.1)
        assert address, f"smartgate serve did not start:\n{log_path.read_text()}"
        with grpc.insecure_channel(address) as triton_channel:
            grpc.channel_ready_future(triton_channel).result(timeout=30)
            got = _decisions(triton_channel, faces_dir)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log_path.read_text()
    after = _triton_requests(triton)
    for model in FACE_MODELS:  # the node used Triton
        assert after[model] >= before.get(model, 0.0) + 4, model
    want = _decisions(channel, faces_dir)  # the in-process onnxruntime node of conftest

    assert [d.action for d in got] == [d.action for d in want]
    assert got[0].action == capture_pb2.ACTION_OPEN and got[1].action == capture_pb2.ACTION_STRANGER
    for g, w in zip(got, want, strict=True):
        assert g.status.code == w.status.code == 0
        assert len(g.faces) == len(w.faces) >= 1
        for gf, wf in zip(g.faces, w.faces, strict=True):
            assert gf.match.person_id == wf.match.person_id
            assert gf.match.accepted == wf.match.accepted
            assert gf.match.score == pytest.approx(wf.match.score, abs=1e-4)
            assert gf.liveness == pytest.approx(wf.liveness, abs=1e-4)
            assert [gf.box.x1, gf.box.y1, gf.box.x2, gf.box.y2] == pytest.approx(
                [wf.box.x1, wf.box.y1, wf.box.x2, wf.box.y2], abs=1e-2
            )
