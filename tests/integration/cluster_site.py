"""Helpers of the cluster-mode tests: a real multi-node Ray cluster on this machine, a cluster
frontend (``ClusterNode``) behind a real gRPC server, and streaming helpers."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import grpc
from streaming import frames_of

from benchmarks.scenes import PassageSpec, passage_frames
from cluster.distributed.runtime import ClusterNode, LocalCluster, open_cluster_node
from cluster.server import RunningServer, start_server
from smartgate.config import ClusterConfig, Config, EventsConfig, TrackingConfig
from smartgate.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    events_pb2,
    registry_pb2,
    registry_pb2_grpc,
    search_pb2_grpc,
)

QUIET_S = 0.4
# Small Ray footprint: 1 CPU and 100 MB of object store per node.
NODE_CPUS = 1
OBJECT_STORE_MB = 100


def start_ray(nodes: int) -> object:
    """A ``ray.cluster_utils.Cluster`` of ``nodes`` one-CPU nodes, with this process connected."""
    import ray

    cluster = LocalCluster(nodes, NODE_CPUS, OBJECT_STORE_MB).start()
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def stop_ray(cluster: object) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()  # type: ignore[attr-defined]


def cluster_config(
    base: Config, data_dir: Path, quiet_s: float = QUIET_S, **cluster: object
) -> Config:
    """The tests' configuration in cluster mode (faces and plates; passages end after
    ``quiet_s`` without frames)."""
    settings: dict[str, object] = {
        "address": "auto",
        "min_workers": 2,
        "max_workers": 2,
        "worker_cpus": 1.0,
        "scale_interval_s": 0.2,
        "call_timeout_s": 60.0,
        "index_wait_s": 30.0,
    }
    settings.update(cluster)
    return replace(
        base,
        data_dir=data_dir,
        tracking=TrackingConfig(quiet_s=quiet_s),
        events=replace(EventsConfig(), stranger_repeat_n=1),
        cluster=ClusterConfig(**settings),  # type: ignore[arg-type]
    )


class ClusterSite:
    """A cluster frontend and its gRPC server for one test."""

    def __init__(self, config: Config) -> None:
        self.node: ClusterNode = open_cluster_node(config)
        self.server: RunningServer = start_server(self.node, config.server)
        self.channel = grpc.insecure_channel(self.server.address)

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        return self.node.engine

    @property
    def capture(self) -> capture_pb2_grpc.CaptureStub:
        return capture_pb2_grpc.CaptureStub(self.channel)

    @property
    def registry(self) -> registry_pb2_grpc.RegistryStub:
        return registry_pb2_grpc.RegistryStub(self.channel)

    @property
    def search(self) -> search_pb2_grpc.SearchStub:
        return search_pb2_grpc.SearchStub(self.channel)

    def enroll(self, faces_dir: Path, person: str, photo: str, community: str = "c1") -> None:
        self.registry.EnrollPerson(
            registry_pb2.EnrollPersonRequest(
                community=community, person_id=person, images=[(faces_dir / photo).read_bytes()]
            ),
            timeout=60,
        )

    def events(self, community: str = "c1") -> list[events_pb2.Event]:
        self.node.events.writer.flush(5)
        reply = self.search.QueryEvents(events_pb2.QueryEventsRequest(community=community))
        return list(reply.events)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)
        self.node.close()


def passage(faces_dir: Path, photo: str, frames: int, seed: int = 0) -> list[bytes]:
    image = cv2.imread(str(faces_dir / photo))
    assert image is not None, photo
    return passage_frames(image, PassageSpec(frames=frames), seed)


class Streamer(threading.Thread):
    """A gate streaming in the background; ``decisions`` with their arrival times."""

    def __init__(
        self, capture: capture_pb2_grpc.CaptureStub, images: list[bytes], gate: str, fps: float
    ) -> None:
        super().__init__(name=f"gate-{gate}", daemon=True)
        self.capture, self.images, self.gate, self.fps = capture, images, gate, fps
        self.decisions: list[tuple[float, capture_pb2.Decision]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for d in self.capture.Stream(frames_of(self.images, self.gate, fps=self.fps)):
                self.decisions.append((time.monotonic(), d))
        except BaseException as exc:  # the test asserts the stream stayed open
            self.error = exc
