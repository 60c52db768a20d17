"""Triton overhead: per-batch latency of a model in process (onnxruntime) vs over a local
Triton server's gRPC API (loopback), interleaved in one run.

The server is ``recognizer/backends/triton_serve.py`` in ``.venv-triton`` (``make
triton-venv``): PyTriton's real ``tritonserver`` running the same ONNX file through the same
onnxruntime (one intra-op thread on both sides), so the difference is what Triton adds:
serialisation, gRPC over loopback, the dynamic batcher's queue and the python backend's
shared-memory hop. Models: ``fr-feature`` (112×112 inputs) and RetinaFace on a 1080p frame
scaled to 640×360 (what the pipeline feeds it), at batches 1, 4 and 8. Each round runs every
(model, batch) cell once in process and once over Triton, in alternating order.

Run: ``python -m benchmarks.triton_overhead [--repeats 30] [--batches 1 4 8] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.datasets import data_dir
from recognizer.backends.base import BackendOptions
from recognizer.backends.onnxrt import OnnxRuntimeBackend
from recognizer.backends.triton import TritonBackend
from recognizer.backends.triton_process import TritonServerProcess
from recognizer.models.manifest import ModelManifest
from recognizer.models.store import ModelStore
from recognizer.preprocess import to_blob
from smartgate.config import ModelsConfig

MODELS = ("fr-feature", "retinaface-mnet025")
FRAME = "examples_obama-1080p.jpg"
DETECT_SIZE = (640, 360)  # (width, height): a 1080p frame at long side 640


@dataclass(frozen=True)
class Cell:
    model: str
    batch: int
    input_mb: float
    local_p50_ms: float
    local_p99_ms: float
    triton_p50_ms: float
    triton_p99_ms: float
    local_mean_ms: float
    triton_mean_ms: float
    server_request_ms: float  # Triton's own mean per request: queue + compute (its metrics)
    server_compute_ms: float  # of which the python backend's run (onnxruntime and its hops)

    @property
    def added_p50_ms(self) -> float:
        return self.triton_p50_ms - self.local_p50_ms

    @property
    def added_p99_ms(self) -> float:
        return self.triton_p99_ms - self.local_p99_ms


SERVER_METRICS = (
    "nv_inference_request_success",
    "nv_inference_request_duration_us",
    "nv_inference_compute_infer_duration_us",
)


def server_counters(metrics: str, model: str) -> dict[str, float]:
    """Triton's cumulative per-model counters from its Prometheus endpoint (HOST:PORT)."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for name in SERVER_METRICS:
        pattern = rf'^{name}\{{model="{re.escape(model)}",version="1"\}} (\S+)$'
        found = re.search(pattern, text, re.MULTILINE)
        out[name] = float(found.group(1)) if found else 0.0
    return out


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def model_input(manifest: ModelManifest, batch: int, frame: np.ndarray) -> np.ndarray:
    """``(batch, 3, h, w)`` float32 normalised as the manifest says: the real frame resized
    to 640×360 (dynamic-size detector) or resized to the model's fixed input size."""
    h, w = manifest.input.size or (None, None)
    size = DETECT_SIZE if h is None or w is None else (w, h)
    image = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    swap_rb = manifest.input.color_order == "RGB"
    return to_blob(np.stack([image] * batch), manifest.input.mean, manifest.input.std, swap_rb)


def measure(
    local: OnnxRuntimeBackend,
    remote: TritonBackend,
    feeds: dict[str, np.ndarray],
    repeats: int,
    warmup: int,
) -> tuple[list[float], list[float]]:
    """Alternate in-process and Triton calls; milliseconds per call for each."""
    for _ in range(warmup):
        local.run(feeds)
        remote.run(feeds)
    local_ms: list[float] = []
    triton_ms: list[float] = []
    for i in range(repeats):
        order = ((local, local_ms), (remote, triton_ms))
        for backend, out in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            backend.run(feeds)
            out.append((time.perf_counter() - start) * 1000.0)
    return local_ms, triton_ms


def run(models_dir: Path, batches: Sequence[int], repeats: int, warmup: int) -> list[Cell]:
    store = ModelStore(models_dir)
    loaded = {name: store.load(name) for name in MODELS}
    frame = cv2.imread(str(data_dir() / "faces" / FRAME))
    if frame is None:
        raise SystemExit(f"cannot read {data_dir() / 'faces' / FRAME}")
    cells = []
    with TritonServerProcess(models_dir, MODELS, max_batch=max(batches), threads=1) as server:
        assert server.endpoints is not None
        for name, model in loaded.items():
            local = OnnxRuntimeBackend(model, BackendOptions(intra_op_threads=1))
            remote = TritonBackend(model.manifest, server.endpoints.grpc)
            try:
                for batch in batches:
                    blob = model_input(model.manifest, batch, frame)
                    feeds = {model.manifest.input.name: blob}
                    before = server_counters(server.endpoints.metrics, name)
                    local_ms, triton_ms = measure(local, remote, feeds, repeats, warmup)
                    after = server_counters(server.endpoints.metrics, name)
                    delta = {k: after[k] - before[k] for k in SERVER_METRICS}
                    requests = max(delta["nv_inference_request_success"], 1.0)
                    cells.append(
                        Cell(
                            model=name,
                            batch=batch,
                            input_mb=blob.nbytes / 1e6,
                            local_p50_ms=statistics.median(local_ms),
                            local_p99_ms=percentile(local_ms, 99),
                            triton_p50_ms=statistics.median(triton_ms),
                            triton_p99_ms=percentile(triton_ms, 99),
                            local_mean_ms=statistics.fmean(local_ms),
                            triton_mean_ms=statistics.fmean(triton_ms),
                            server_request_ms=delta["nv_inference_request_duration_us"]
                            / requests
                            / 1000.0,
                            server_compute_ms=delta["nv_inference_compute_infer_duration_us"]
                            / requests
                            / 1000.0,
                        )
                    )
            finally:
                local.close()
                remote.close()
    return cells


def markdown(cells: Sequence[Cell], repeats: int) -> str:
    lines = [
        f"Triton over loopback vs in process, {repeats} interleaved calls per cell "
        "(one onnxruntime thread on each side)",
        "",
        "| model | batch | input MB | in-process p50 / p99 ms | Triton p50 / p99 ms "
        "| added p50 / p99 ms | means: in-process / Triton server / Triton call ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.model} | {c.batch} | {c.input_mb:.2f} "
            f"| {c.local_p50_ms:.2f} / {c.local_p99_ms:.2f} "
            f"| {c.triton_p50_ms:.2f} / {c.triton_p99_ms:.2f} "
            f"| {c.added_p50_ms:+.2f} / {c.added_p99_ms:+.2f} "
            f"| {c.local_mean_ms:.2f} / {c.server_request_ms:.2f} / {c.triton_mean_ms:.2f} |"
        )
    lines += [
        "",
        "Triton server: its mean time per request (queue + the python backend's compute, from "
        "its metrics, warm-up calls included); the rest of a Triton call is the client, "
        "serialisation and gRPC over loopback.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=ModelsConfig().cache_dir)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the cells as JSON")
    args = parser.parse_args(argv)
    cells = run(args.models_dir, args.batches, args.repeats, args.warmup)
    print(markdown(cells, args.repeats))
    if args.json:
        rows = [
            {**asdict(c), "added_p50_ms": c.added_p50_ms, "added_p99_ms": c.added_p99_ms}
            for c in cells
        ]
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
