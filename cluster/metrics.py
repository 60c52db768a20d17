"""Prometheus metrics of a node, in the standard text format on ``server.metrics_listen``.

Per-gate capture latency histograms, per-stage times, batch sizes, queue depth, shed and failed
frames, and whether the models are loaded and warm. Each ``Metrics`` has its own registry, so
several nodes in one process (the tests) do not collide.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS_S = (0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
STAGE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.capture_latency = Histogram(
            "smartgate_capture_latency_seconds",
            "Frame received to decision sent, server side",
            ["gate"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stage = Histogram(
            "smartgate_stage_seconds",
            "Time per pipeline stage",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "smartgate_batch_frames",
            "Frames per compute batch",
            buckets=(1, 2, 4, 8, 16, 32),
            registry=r,
        )
        self.queue_depth = Gauge(
            "smartgate_queue_frames", "Frames waiting for a compute worker", registry=r
        )
        self.shed = Counter(
            "smartgate_frames_shed", "Frames shed under overload", ["gate"], registry=r
        )
        self.failed = Counter(
            "smartgate_frames_failed", "Frames answered with an error", ["gate", "code"], registry=r
        )
        self.frames = Counter("smartgate_frames", "Frames answered", ["gate"], registry=r)
        self.models_ready = Gauge(
            "smartgate_models_ready", "1 once every model is loaded and warmed", registry=r
        )

    def frame_done(self, gate: str, total_ms: float, stages_ms: Mapping[str, float]) -> None:
        self.frames.labels(gate).inc()
        self.capture_latency.labels(gate).observe(total_ms / 1e3)
        for stage, ms in stages_ms.items():
            if stage != "total":
                self.stage.labels(stage).observe(ms / 1e3)

    def frame_failed(self, gate: str, code: str) -> None:
        if code == "RESOURCE_EXHAUSTED":
            return  # counted as shed when it was shed
        self.failed.labels(gate, code).inc()

    def batch(self, frames: int, seconds: float) -> None:
        self.batch_size.observe(frames)

    def serve(self, listen: str, certfile: Path | None = None, keyfile: Path | None = None) -> int:
        """Expose the metrics over HTTP on ``HOST:PORT`` (port 0 picks one), HTTPS with
        ``certfile`` and ``keyfile``; returns the port."""
        host, _, port = listen.rpartition(":")
        server, _ = start_http_server(
            int(port),
            addr=host or "127.0.0.1",
            registry=self.registry,
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
        )
        return int(server.server_port)
