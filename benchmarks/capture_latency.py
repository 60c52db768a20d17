"""Capture latency of one 1920×1080 one-face JPEG on a serial stream, server side and client
side, with the per-stage split.

Starts a real embedded server on a free port (real models, real gRPC), enrols the person,
then streams the same frame N times, one at a time (each frame is sent when the previous
decision arrived). Several onnxruntime thread settings can be compared in one run.

Run: ``python -m benchmarks.capture_latency [--frames 300] [--intra-op 1 2]``
(``make bench-latency``).
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np

from benchmarks.datasets import data_dir
from smartgate.config import Config, ServerConfig, load_config
from smartgate.v1 import capture_pb2, capture_pb2_grpc

PROBE = "examples_obama-1080p.jpg"
GALLERY = "examples_obama.jpg"
STAGES = ("decode", "detect", "align", "quality", "embed", "liveness", "match", "track", "total")


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


@dataclass(frozen=True)
class LatencyRun:
    server: dict[str, float]  # p50/p95/p99/max of frame received → decision sent, ms
    client: dict[str, float]  # the same seen by the camera (send → decision received)
    stages_p50: dict[str, float]  # median ms per server stage
    track_p99: float  # tracker + event hand-off, ms (the passages' cost on the capture path)


def run_once(config: Config, frames: int, warmup: int) -> LatencyRun:
    from cluster.node import Node
    from cluster.server import start_server

    faces = data_dir() / "faces"
    node = Node.open(config)
    node.engine.enroll("bench", "obama", [(faces / GALLERY).read_bytes()])
    running = start_server(node, config.server)
    image = (faces / PROBE).read_bytes()
    server_ms: dict[str, list[float]] = {s: [] for s in STAGES}
    client_ms: list[float] = []
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = capture_pb2_grpc.CaptureStub(channel)
            outbox: queue.Queue[capture_pb2.Frame | None] = queue.Queue()
            replies = stub.Stream(iter(outbox.get, None))
            for seq in range(warmup + frames):
                sent = time.perf_counter()
                outbox.put(capture_pb2.Frame(community="bench", gate="g1", seq=seq, image=image))
                decision = next(replies)
                elapsed = (time.perf_counter() - sent) * 1e3
                if decision.frame_action != capture_pb2.ACTION_OPEN:
                    raise RuntimeError(f"frame {seq}: expected OPEN, got {decision}")
                if seq < warmup:
                    continue
                client_ms.append(elapsed)
                for stage in STAGES:
                    server_ms[stage].append(decision.timings_ms.get(stage, 0.0))
            outbox.put(None)
    finally:
        running.stop(0)
        node.close()
    return LatencyRun(
        server=percentiles(server_ms["total"]),
        client=percentiles(client_ms),
        stages_p50={s: float(np.median(v)) for s, v in server_ms.items()},
        track_p99=float(np.percentile(server_ms["track"], 99)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--intra-op",
        type=int,
        nargs="+",
        default=None,
        help="onnxruntime intra-op thread counts to compare (default: config)",
    )
    args = parser.parse_args(argv)
    base = load_config(args.config)
    settings = args.intra_op or [base.models.intra_op_threads]
    print(f"{args.frames} frames of {PROBE} (1920x1080, one face), serial stream\n")
    print("| intra-op threads | server p50 | p95 | p99 | max | client p50 | p99 | track p99 |")
    print("|---|---|---|---|---|---|---|---|")
    stage_rows = []
    for threads in settings:
        with tempfile.TemporaryDirectory() as tmp:
            config = replace(
                base,
                data_dir=Path(tmp),
                server=ServerConfig(listen="127.0.0.1:0"),
                models=replace(base.models, intra_op_threads=threads),
            )
            r = run_once(config, args.frames, args.warmup)
        s, c = r.server, r.client
        print(
            f"| {threads} | {s['p50']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} | {s['max']:.1f} "
            f"| {c['p50']:.1f} | {c['p99']:.1f} | {r.track_p99:.2f} |"
        )
        stage_rows.append((threads, r.stages_p50))
    print("\nper-stage median (ms, server side):\n")
    print("| intra-op | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for threads, stages in stage_rows:
        print(f"| {threads} | " + " | ".join(f"{stages[s]:.2f}" for s in STAGES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
