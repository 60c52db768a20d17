"""A node killed (SIGKILL) mid-passage: the standby node that takes the gate over resumes the
passage from the gate state in Redis (real redis-server, two real `smartgate serve` processes),
so the passage is decided once and recorded once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import pytest
import redis
from redis_server import RedisServer

from benchmarks.scenes import PassageSpec, passage_frames
from smartgate.v1 import capture_pb2, capture_pb2_grpc, common_pb2, registry_pb2, registry_pb2_grpc

pytestmark = pytest.mark.integration

SMARTGATE = [sys.executable, "-m", "cluster.cli"]


class Served:
    """``smartgate serve`` in its own process, sharing ``redis_url``."""

    def __init__(self, data_dir: Path, models_dir: Path, redis_url: str, log: Path) -> None:
        env = {
            **os.environ,
            "SMARTGATE_MODELS__CACHE_DIR": str(models_dir),
            "SMARTGATE_CAPTURE__PER_GATE_LIMIT": "10000",
            "SMARTGATE_CAPTURE__MAX_WAIT_MS": "600000",
            "SMARTGATE_SERVER__METRICS_LISTEN": "127.0.0.1:0",
            "SMARTGATE_EVENTS__REDIS_URL": redis_url,
            "SMARTGATE_TRACKING__QUIET_S": "3.0",
            "PYTHONUNBUFFERED": "1",
        }
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [*SMARTGATE, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.address = ""

    def wait_ready(self) -> Served:
        deadline = time.monotonic() + 180
        while not self.address and time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"serving on (\S+)", self.log.read_text())
            self.address = m.group(1) if m else ""
            time.sleep(0.1)
        assert self.address, f"server did not start:\n{self.log.read_text()}"
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _enroll(address: str, photo: bytes) -> None:
    with grpc.insecure_channel(address) as channel:
        registry_pb2_grpc.RegistryStub(channel).EnrollPerson(
            registry_pb2.EnrollPersonRequest(
                community="c1", person_id="obama", role=common_pb2.ROLE_RESIDENT, images=[photo]
            ),
            timeout=60,
        )


def _stream(address: str, frames: list[bytes], first_seq: int) -> list[capture_pb2.Decision]:
    with grpc.insecure_channel(address) as channel:
        stub = capture_pb2_grpc.CaptureStub(channel)
        requests = (
            capture_pb2.Frame(
                community="c1", gate="door-1", device="cam-1", seq=first_seq + i, image=img
            )
            for i, img in enumerate(frames)
        )
        return list(stub.Stream(requests, timeout=120))


def test_standby_node_resumes_the_gates_open_passage(
    redis_server: RedisServer, faces_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    image = cv2.imread(str(faces_dir / "examples_obama2.jpg"))
    assert image is not None
    frames = passage_frames(image, PassageSpec(frames=24), 0)
    photo = (faces_dir / "examples_obama.jpg").read_bytes()
    first = Served(tmp_path / "a", models_dir, redis_server.url, tmp_path / "a.log")
    standby = Served(tmp_path / "b", models_dir, redis_server.url, tmp_path / "b.log")
    try:
        first.wait_ready()
        standby.wait_ready()
        for node in (first, standby):
            _enroll(node.address, photo)
        before = _stream(first.address, frames[:12], 0)
        sent = [d.action for d in before if d.action != capture_pb2.ACTION_NONE]
        assert sent == [capture_pb2.ACTION_OPEN]
        track = next(t.track_id for d in before for t in d.tracks)
        time.sleep(0.3)  # the gate state is written behind the capture path
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)

        after = _stream(standby.address, frames[12:], 12)
        assert all(d.action == capture_pb2.ACTION_NONE for d in after)  # decided before
        assert {t.track_id for d in after for t in d.tracks} == {track}

        client = redis.Redis.from_url(redis_server.url)
        deadline = time.monotonic() + 20
        entries: list[object] = []
        while time.monotonic() < deadline:
            entries = list(client.xrange("smartgate:c1:events") or [])
            if entries:
                break
            time.sleep(0.2)
        assert len(entries) == 1, entries  # one passage, recorded once, by the standby
        client.close()
    finally:
        first.stop()
        standby.stop()
