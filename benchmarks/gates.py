"""Gate simulator: open-loop camera load on a smartgate node over real gRPC streams.

G gates, each on its own bidirectional ``Capture/Stream``, send 1920×1080 JPEG frames on their
own camera clock (frame i at t0 + phase + i/F, whether or not the server keeps up; replies are
read by a separate thread and matched by seq). Frames are built once from the real photos in
``../shared/data``: face passages (a person approaching at a varied position and scale, with
empty frames between passages) for pedestrian lanes, CCPD car scenes for vehicle lanes. The
identities are enrolled and the plates registered first, so decisions are realistic.

Measured per gate: server-side latency (``Decision.timings_ms["total"]``) and client-side
latency (camera capture time → decision received), p50/p95/p99/max, frames sent, answered,
shed (``status.code`` 8, RESOURCE_EXHAUSTED) and errors; for the node: throughput, CPU use and
the per-stage split (the means of ``Decision.timings_ms``). Writes JSON, Markdown and PNG plots
(matplotlib).

The node is measured as its own process, as cameras are separate devices at a real site:
without ``--server`` the simulator starts ``smartgate serve`` (``benchmarks.node_process``; the
bench's ``--config`` and ``--models-dir``, a temporary data dir, a free port) and reads the
node's CPU from ``/proc`` of its pid; with ``--server`` give ``--server-pid`` for it. The
machine's other busy time is reported as other processes, this load generator's share named.
(The node in the load generator's process would share its GIL with the gates' gRPC client
threads: on 2 cores 80.5 instead of 87.7 one-face frames/s at saturation.)

Modes:
* ``smartgate bench`` — 8 gates (a quarter of them vehicle lanes), a sweep at 0.5×, 1× and
  1.5× of ``--fps``; without ``--server`` a node is started in its own process;
* ``--sweep auto [--ceiling auto]`` — measure the ``--limit`` ceiling in the same run (the
  node idle), before the load and again after it, so the ratio is taken side by side (against
  their mean: the machine's speed drifts over minutes, and both are reported); raise the load
  until the node stops keeping up (saturation: the most it answered), then run
  at 70 % and 150 % of it and check the latency goals (use with ``--workload one-face``);
* ``--site FILE`` — site acceptance: the gates of a TOML file, PASS/FAIL per gate, exit 1 if
  any gate fails (``benchmarks/site_example.toml``);
* ``--limit`` — the models alone on this machine (``benchmarks.compute_limit``).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import math
import os
import platform
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from benchmarks.datasets import data_dir, face_labels, subjects_per_file
from benchmarks.node_process import running_node
from smartgate.errors import SmartgateError
from smartgate.v1 import capture_pb2, capture_pb2_grpc, common_pb2, registry_pb2, registry_pb2_grpc

WIDTH, HEIGHT = 1920, 1080
JPEG_QUALITY = 88
SHED_CODE = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]  # 8
NO_REPLY = -1
LANES = {
    "pedestrian": capture_pb2.LANE_KIND_PEDESTRIAN,
    "vehicle": capture_pb2.LANE_KIND_VEHICLE,
    "both": capture_pb2.LANE_KIND_BOTH,
}
# The server's stages in pipeline order; any other key in timings_ms is reported after these.
STAGE_ORDER = ("decode", "detect", "align", "quality", "embed", "liveness", "plates", "match")
STAGE_LAST = ("track",)
ACTION_NAMES = {v: k.removeprefix("ACTION_") for k, v in capture_pb2.Action.items()}

# Enrolment photos, one per identity; every other photo of these people is a probe.
GALLERY = {
    "obama": "examples_obama.jpg",
    "biden": "examples_biden.jpg",
    "kit_harington": "examples_knn_examples_train_kit_harington_john1.jpeg",
    "rose_leslie": "examples_knn_examples_train_rose_leslie_img1.jpg",
    "alex_lacamoire": "examples_alex-lacamoire.png",
}
# Registered plates (residents); the other CCPD scenes carry unknown plates (strangers).
REGISTERED_SCENES = ("ccpd_00.jpg", "ccpd_01.jpg", "ccpd_02.jpg", "ccpd_03.jpg")
WORKLOADS = ("mixed", "one-face")

# Goals of the issue, checked by --sweep auto.
GOAL_CEILING_SHARE = 0.85
GOAL_P99_AT_70 = 150.0
GOAL_P99_AT_150 = 300.0


# -- frames ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePool:
    """Encoded 1920×1080 JPEG frames per lane kind, in passage order, with what each shows."""

    frames: dict[str, list[bytes]]  # lane -> frames
    kinds: dict[str, list[str]]  # lane -> "face" | "faces" | "empty" | "plate" per frame
    gallery: dict[str, bytes]  # identity -> enrolment photo
    plates: list[str]  # registered plate texts

    def describe(self) -> str:
        parts = []
        for lane, kinds in self.kinds.items():
            c = collections.Counter(kinds)
            sizes = [len(f) for f in self.frames[lane]]
            parts.append(
                f"{lane}: {len(kinds)} frames ("
                + ", ".join(f"{k} {n}" for k, n in sorted(c.items()))
                + f"; mean {np.mean(sizes) / 1e3:.0f} KB)"
            )
        return "; ".join(parts)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A plain camera scene: lit wall and floor, a door frame, sensor noise."""
    y = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, WIDTH, dtype=np.float32)[None, :]
    light = 95 + 45 * y + 25 * np.cos(3.0 * (x - 0.4))
    img = np.stack([light * 0.92, light, light * 1.05], axis=-1)
    img[int(HEIGHT * 0.78) :] *= 0.7  # floor
    out = np.clip(img + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)
    for x0 in (int(WIDTH * 0.12), int(WIDTH * 0.86)):  # door posts
        cv2.rectangle(out, (x0, 0), (x0 + 40, int(HEIGHT * 0.78)), (70, 74, 80), -1)
    cv2.rectangle(out, (int(WIDTH * 0.12), 0), (int(WIDTH * 0.86) + 40, 36), (70, 74, 80), -1)
    return out


def _paste(canvas: np.ndarray, subject: np.ndarray, x: int, y: int) -> None:
    h, w = subject.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(canvas.shape[1], x + w), min(canvas.shape[0], y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = subject[y0 - y : y1 - y, x0 - x : x1 - x]


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read the photo {path}")
    return image


def _encode(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _passage(
    photo: np.ndarray,
    background: np.ndarray,
    seed: int,
    frames: int,
    scale: tuple[float, float],
    growth: tuple[float, float],
    bottom: bool,
) -> list[bytes]:
    """``photo`` passing the camera: a random start position and scale, drifting and growing."""
    rng = np.random.default_rng(seed)
    s0 = rng.uniform(*scale)
    s1 = min(1.0, s0 * rng.uniform(*growth))
    cx0 = rng.uniform(0.3, 0.7) * WIDTH
    cy = rng.uniform(0.4, 0.6) * HEIGHT
    vx = rng.uniform(-14.0, 14.0)
    out = []
    for i in range(frames):
        p = i / max(1, frames - 1)
        h = int(HEIGHT * (s0 + (s1 - s0) * p))
        w = int(photo.shape[1] * h / photo.shape[0])
        if w > 0.9 * WIDTH:
            w = int(0.9 * WIDTH)
            h = int(photo.shape[0] * w / photo.shape[1])
        subject = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
        sigma = rng.uniform(0.0, 1.2)
        if sigma > 0.3:
            subject = cv2.GaussianBlur(subject, (0, 0), sigma)
        cx = cx0 + vx * i + rng.normal(0, 5.0)
        top = HEIGHT - h - int(rng.uniform(0, 20)) if bottom else int(cy - h / 2 + rng.normal(0, 5))
        canvas = background.copy()
        _paste(canvas, subject, int(cx - w / 2), top)
        out.append(_encode(canvas))
    return out


def build_pool(workload: str = "mixed", passages: int = 12, seed: int = 0) -> FramePool:
    """Encode the frames of every lane kind once (takes a few seconds; uses both cores)."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    root = data_dir()
    faces_dir, scenes_dir = root / "faces", root / "plates" / "scenes"
    labels = face_labels(root)
    per_file = subjects_per_file(labels)
    gallery_files = set(GALLERY.values())
    probes = []
    for lab in labels:
        name = lab.file
        if name in gallery_files or lab.same_photo_as or name in probes:
            continue
        one = per_file[name] == 1
        if workload == "one-face" and (not one or "partial" in name):
            continue
        probes.append(name)
    photos = {n: _read(faces_dir / n) for n in probes}
    rng = np.random.default_rng(seed)
    background = _background(rng)
    empty_frames = [_encode(_background(np.random.default_rng(seed + k))) for k in range(1, 4)]

    def face_job(k: int) -> tuple[str, list[bytes]]:
        name = probes[k % len(probes)]
        frames = _passage(
            photos[name], background, seed * 1000 + k, int(rng_n[k]), (0.3, 0.6), (1.1, 1.5), False
        )
        return ("faces" if per_file[name] > 1 else "face"), frames

    scene_names = sorted(p.name for p in scenes_dir.glob("ccpd_*.jpg"))
    scenes = {n: _read(scenes_dir / n) for n in scene_names}

    def vehicle_job(k: int) -> tuple[str, list[bytes]]:
        name = scene_names[k % len(scene_names)]
        frames = _passage(
            scenes[name], background, seed * 1000 + 500 + k, 6, (0.72, 0.85), (1.05, 1.2), True
        )
        return "plate", frames

    rng_n = rng.integers(6, 12, size=passages)
    with_vehicles = workload == "mixed"
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        face_passages = list(pool.map(face_job, range(passages)))
        vehicle_count = max(2, passages // 2) if with_vehicles else 0
        vehicle_passages = list(pool.map(vehicle_job, range(vehicle_count)))

    gaps = workload != "one-face"

    def lane_frames(seq: list[tuple[str, list[bytes]]]) -> tuple[list[bytes], list[str]]:
        frames: list[bytes] = []
        kinds: list[str] = []
        for j, (kind, passage) in enumerate(seq):
            frames += passage
            kinds += [kind] * len(passage)
            if gaps:  # empty frames between passages, so the tracks end
                n_empty = 1 + j % 3
                frames += [empty_frames[(j + e) % len(empty_frames)] for e in range(n_empty)]
                kinds += ["empty"] * n_empty
        return frames, kinds

    out_frames: dict[str, list[bytes]] = {}
    out_kinds: dict[str, list[str]] = {}
    out_frames["pedestrian"], out_kinds["pedestrian"] = lane_frames(face_passages)
    if with_vehicles:
        out_frames["vehicle"], out_kinds["vehicle"] = lane_frames(vehicle_passages)
        mixed = [p for pair in zip(face_passages, vehicle_passages, strict=False) for p in pair]
        out_frames["both"], out_kinds["both"] = lane_frames(mixed)
    labels_csv = (scenes_dir / "labels.csv").read_text(encoding="utf-8").splitlines()[1:]
    plate_of = {row.split(",")[0]: row.split(",")[1] for row in labels_csv if row}
    return FramePool(
        frames=out_frames,
        kinds=out_kinds,
        gallery={who: (faces_dir / f).read_bytes() for who, f in GALLERY.items()},
        plates=[plate_of[s] for s in REGISTERED_SCENES],
    )


def prepare_community(channel: grpc.Channel, community: str, pool: FramePool) -> None:
    """Enrol the identities and register the plates (idempotent: replaces what is there)."""
    registry = registry_pb2_grpc.RegistryStub(channel)
    for who, photo in pool.gallery.items():
        registry.EnrollPerson(
            registry_pb2.EnrollPersonRequest(
                community=community, person_id=who, name=who, images=[photo], replace=True
            ),
            timeout=60,
        )
    for plate in pool.plates:
        registry.AddVehicle(
            registry_pb2.AddVehicleRequest(
                community=community, plate=plate, role=common_pb2.ROLE_RESIDENT, replace=True
            ),
            timeout=60,
        )


# -- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateSpec:
    name: str
    lane: str  # "pedestrian" | "vehicle" | "both"
    fps: float
    p99_ms: float | None = None  # site target, server side
    client_p99_ms: float | None = None  # site target, camera side
    max_shed_pct: float = 1.0  # site target: shed frames at most this share

    def __post_init__(self) -> None:
        if self.lane not in LANES:
            raise ValueError(f"gate {self.name!r}: lane must be one of {sorted(LANES)}")
        if not self.fps > 0:
            raise ValueError(f"gate {self.name!r}: fps must be > 0, got {self.fps}")


def default_gates(gates: int, fps: float, vehicle_gates: int | None = None) -> list[GateSpec]:
    """``gates`` gates at ``fps``; the last quarter (or ``vehicle_gates``) are vehicle lanes."""
    vehicles = gates // 4 if vehicle_gates is None else vehicle_gates
    return [
        GateSpec(
            f"{'barrier' if i >= gates - vehicles else 'door'}-{i + 1:02d}",
            "vehicle" if i >= gates - vehicles else "pedestrian",
            fps,
        )
        for i in range(gates)
    ]


class GateRun:
    """One camera: a request generator on its own clock and a reply reader, on one stream."""

    def __init__(
        self,
        spec: GateSpec,
        frames: list[bytes],
        community: str,
        start: float,
        end: float,
        seq_base: int,
        offset: int,
    ) -> None:
        self.spec = spec
        self.frames = frames
        self.community = community
        self.seq_base = seq_base
        self.offset = offset
        n = max(0, math.ceil((end - start) * spec.fps))
        self.scheduled = start + np.arange(n) / spec.fps  # perf_counter seconds
        self.sent = np.full(n, np.nan)
        self.received = np.full(n, np.nan)
        self.server_ms = np.full(n, np.nan)
        self.status = np.full(n, NO_REPLY, dtype=np.int32)
        self.stages: dict[str, np.ndarray] = {}
        self.frame_action = np.zeros(n, dtype=np.int16)  # Action values, per frame
        self.action = np.zeros(n, dtype=np.int16)
        self.unmatched = 0
        self.stream_error: str | None = None
        self.cpu_s = 0.0  # this gate's client threads
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # Wall clock of the first scheduled frame, for captured_at.
        self._wall0 = time.time() + (start - time.perf_counter())

    def requests(self) -> Iterator[capture_pb2.Frame]:
        lane = LANES[self.spec.lane]
        try:
            for i, due in enumerate(self.scheduled):
                delay = due - time.perf_counter()
                if delay > 0 and self._stop.wait(delay):
                    return
                if self._stop.is_set():
                    return
                captured = Timestamp()
                captured.FromNanoseconds(int((self._wall0 + (due - self.scheduled[0])) * 1e9))
                frame = capture_pb2.Frame(
                    community=self.community,
                    gate=self.spec.name,
                    device=self.spec.name,
                    seq=self.seq_base + i,
                    captured_at=captured,
                    image=self.frames[(self.offset + i) % len(self.frames)],
                    lane=lane,
                )
                self.sent[i] = time.perf_counter()
                yield frame
        finally:
            with self._lock:
                self.cpu_s += time.thread_time()

    def read(self, replies: Iterator[capture_pb2.Decision]) -> None:
        n = len(self.scheduled)
        try:
            for d in replies:
                now = time.perf_counter()
                i = d.seq - self.seq_base
                if not 0 <= i < n or self.status[i] != NO_REPLY:
                    self.unmatched += 1
                    continue
                self.received[i] = now
                self.status[i] = d.status.code
                if d.status.code != 0:
                    continue
                self.server_ms[i] = d.timings_ms.get("total", np.nan)
                for stage, ms in d.timings_ms.items():
                    if stage != "total":
                        self.stages.setdefault(stage, np.zeros(n))[i] = ms
                self.frame_action[i] = d.frame_action
                self.action[i] = d.action
        except grpc.RpcError as exc:
            if not (self._stop.is_set() and exc.code() == grpc.StatusCode.CANCELLED):
                self.stream_error = f"{exc.code().name}: {exc.details()}"
        finally:
            with self._lock:
                self.cpu_s += time.thread_time()

    def stop(self) -> None:
        self._stop.set()

    def replied(self) -> int:
        return int(np.count_nonzero(self.status != NO_REPLY))


@dataclass
class RunResult:
    label: str
    factor: float | None
    gates: list[GateRun]
    start: float  # perf_counter of the first frame
    measure_from: float  # frames scheduled before this are warm-up
    end: float  # last frame scheduled before this
    finished: float  # all replies in (or drain timeout)
    cpu: dict[str, float | None] = field(default_factory=dict)

    @property
    def offered_fps(self) -> float:
        return sum(g.spec.fps for g in self.gates)


def process_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Progress:
    """A tqdm bar on a terminal, a plain line every few seconds otherwise (stderr)."""

    def __init__(self, label: str, total_s: float, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        self._last_line = 0.0
        if enabled and self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=round(total_s, 1),
                desc=label,
                unit="s",
                file=sys.stderr,
                leave=False,
                bar_format="{desc} {bar} {n:.0f}/{total:.0f}s {postfix}",
            )

    def update(self, elapsed: float, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.n = round(min(elapsed, self._bar.total), 1)
            self._bar.set_postfix_str(text, refresh=True)
        elif elapsed - self._last_line >= 5.0:
            self._last_line = elapsed
            print(f"  {self.label} {elapsed:5.1f}s {text}", file=sys.stderr, flush=True)

    def close(self, text: str) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.enabled:
            print(f"  {self.label}: {text}", file=sys.stderr, flush=True)


def run_load(
    address: str,
    specs: Sequence[GateSpec],
    pool: FramePool,
    *,
    community: str,
    duration: float,
    warmup: float = 1.0,
    label: str = "run",
    factor: float | None = None,
    drain_s: float | None = None,
    cpu_pid: int | None = None,
    progress: bool = True,
    seed: int = 0,
    connect: Any = grpc.insecure_channel,
) -> RunResult:
    """Open-loop load: every gate sends on its own clock for ``warmup + duration`` seconds.
    ``connect(address)`` opens each gate's channel (``cluster.security.channel`` for TLS)."""
    for s in specs:
        if s.lane not in pool.frames:
            raise ValueError(f"gate {s.name}: no frames for lane {s.lane!r} in this workload")
    rng = np.random.default_rng(seed)
    channels = [connect(address) for _ in specs]
    try:
        for ch in channels:
            grpc.channel_ready_future(ch).result(timeout=15)
        seq_base = time.time_ns() // 1000  # µs: above the seqs of any earlier run
        start = time.perf_counter() + 0.3
        measure_from = start + warmup
        end = measure_from + duration
        gates = []
        for k, spec in enumerate(specs):
            frames = pool.frames[spec.lane]
            phase = float(rng.uniform(0, 1.0 / spec.fps))  # cameras are not in step
            offset = (k * len(frames)) // max(1, len(specs)) + int(rng.integers(0, 5))
            gates.append(GateRun(spec, frames, community, start + phase, end, seq_base, offset))
        pid = cpu_pid
        # The node in this process (a test's server): its CPU includes the client threads'.
        in_process = pid == os.getpid()
        cpu0 = process_cpu_s(pid) if pid is not None else None
        gen0 = None if in_process else process_cpu_s(os.getpid())
        busy0 = machine_busy_s()
        wall0 = time.perf_counter()
        readers = []
        calls = []
        for gate, ch in zip(gates, channels, strict=True):
            call = capture_pb2_grpc.CaptureStub(ch).Stream(gate.requests(), wait_for_ready=True)
            calls.append(call)
            t = threading.Thread(target=gate.read, args=(call,), name=f"bench-{gate.spec.name}")
            t.start()
            readers.append(t)
        drain = max(10.0, duration) if drain_s is None else drain_s
        bar = Progress(label, end - start, progress)
        last_cpu, last_t = cpu0, time.perf_counter()
        while any(t.is_alive() for t in readers):
            now = time.perf_counter()
            if now > end + drain:
                break
            time.sleep(0.5)
            cpu_now = process_cpu_s(pid) if pid is not None else None
            t_now = time.perf_counter()
            cpu_text = ""
            if cpu_now is not None and last_cpu is not None:
                cpu_text = f" cpu {100 * (cpu_now - last_cpu) / (t_now - last_t):.0f}%"
            last_cpu, last_t = cpu_now, t_now
            bar.update(t_now - start, _live_text(gates, t_now, end) + cpu_text)
        for gate in gates:
            gate.stop()
        for call in calls:
            call.cancel()
        for t in readers:
            t.join(timeout=10)
        finished = time.perf_counter()
        cpu1 = process_cpu_s(pid) if pid is not None else None
        gen1 = None if in_process else process_cpu_s(os.getpid())
        busy1 = machine_busy_s()
        cpu = _cpu_split(
            wall=finished - wall0,
            ncpu=os.cpu_count() or 1,
            busy=None if busy0 is None or busy1 is None else busy1 - busy0,
            node_process=None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            generator=None if gen0 is None or gen1 is None else gen1 - gen0,
            client_threads=sum(g.cpu_s for g in gates) if in_process else None,
        )
        result = RunResult(label, factor, gates, start, measure_from, end, finished, cpu)
        s = summarize_run(result)["node"]
        bar.close(
            f"offered {s['offered_fps']:.1f}/s, answered {s['throughput_fps']:.1f}/s, "
            f"shed {s['shed']}, server p99 {_fmt(s['p99_ms'])} ms, "
            f"client p99 {_fmt(s['client_p99_ms'])} ms"
        )
        return result
    finally:
        for ch in channels:
            ch.close()


def _cpu_split(
    *,
    wall: float,
    ncpu: int,
    busy: float | None,
    node_process: float | None,
    generator: float | None,
    client_threads: float | None,
) -> dict[str, float | None]:
    """CPU of one run in cores (CPU seconds over ``wall`` seconds): ``busy`` of the machine,
    ``node_process`` of the node's pid, ``generator`` of this process when the node runs in
    another one, ``client_threads`` of the gates' threads when it runs in this one (None: not
    known). Other processes are the machine's busy time less the node's process: with the node
    in its own process they include this load generator (``load_generator_cores``)."""
    cpu: dict[str, float | None] = {"cores": float(ncpu), "wall_s": round(wall, 2)}
    if busy is not None:
        cpu["machine_busy_pct"] = round(100 * busy / wall / ncpu, 1)
    in_process = client_threads is not None
    client = (client_threads or 0.0) / wall
    if generator is not None or in_process:
        cpu["load_generator_cores"] = round(client if in_process else (generator or 0.0) / wall, 3)
    if node_process is not None:
        process = node_process / wall
        cpu["process_cores"] = round(process, 3)
        cpu["client_cores"] = round(client, 3) if in_process else None
        cpu["node_cores"] = round(process - client, 3)
        cpu["node_pct"] = round(100 * (process - client) / ncpu, 1)
        if busy is not None:
            cpu["other_processes_cores"] = round(max(0.0, busy / wall - process), 3)
    return cpu


def _live_text(gates: list[GateRun], now: float, end: float) -> str:
    sent = sum(int(np.count_nonzero(~np.isnan(g.sent))) for g in gates)
    replied = sum(g.replied() for g in gates)
    shed = sum(int(np.count_nonzero(g.status == SHED_CODE)) for g in gates)
    recent = np.concatenate(
        [g.server_ms[(g.received > now - 2.0) & (g.status == 0)] for g in gates]
    )
    p99 = f"{np.percentile(recent, 99):.0f}" if recent.size else "-"
    phase = "sending" if now < end else "draining"
    return f"{phase}: sent {sent} answered {replied - shed} shed {shed} p99(2s) {p99} ms"


# -- summaries ------------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def latency_stats(values: np.ndarray, prefix: str = "") -> dict[str, float | None]:
    keys = ("p50", "p95", "p99", "max")
    if values.size == 0:
        return {f"{prefix}{k}_ms": None for k in keys}
    p = np.percentile(values, [50, 95, 99])
    return {
        f"{prefix}p50_ms": round(float(p[0]), 2),
        f"{prefix}p95_ms": round(float(p[1]), 2),
        f"{prefix}p99_ms": round(float(p[2]), 2),
        f"{prefix}max_ms": round(float(values.max()), 2),
    }


def _ordered_stages(names: set[str]) -> list[str]:
    known = [s for s in STAGE_ORDER if s in names]
    last = [s for s in STAGE_LAST if s in names]
    return known + sorted(names - set(known) - set(last)) + last


@dataclass
class _Masks:
    measured: np.ndarray
    answered: np.ndarray
    shed: np.ndarray
    errors: np.ndarray
    missing: np.ndarray


def _masks(g: GateRun, measure_from: float) -> _Masks:
    measured = g.scheduled >= measure_from
    return _Masks(
        measured,
        measured & (g.status == 0),
        measured & (g.status == SHED_CODE),
        measured & (g.status != 0) & (g.status != SHED_CODE) & (g.status != NO_REPLY),
        measured & (g.status == NO_REPLY),
    )


def _rate(gates: Sequence[GateRun], code: int, measure_from: float, end: float) -> float:
    """Replies with status ``code`` received per second while the load was steady (between
    the end of the warm-up and the last frame sent), whichever frame they answer: under
    overload this is the node's service rate, otherwise the offered rate."""
    n = 0
    for g in gates:
        steady = (g.received >= measure_from) & (g.received < end)
        n += int(np.count_nonzero(steady & (g.status == code)))
    return n / (end - measure_from)


def _action_counts(values: np.ndarray, skip_none: bool = False) -> dict[str, int]:
    counts = collections.Counter(ACTION_NAMES.get(int(v), "?") for v in values)
    if skip_none:
        counts.pop("NONE", None)
        counts.pop("UNSPECIFIED", None)
    return dict(sorted(counts.items()))


def gate_summary(g: GateRun, r: RunResult) -> dict[str, Any]:
    m = _masks(g, r.measure_from)
    server = g.server_ms[m.answered]
    client = (g.received[m.answered] - g.scheduled[m.answered]) * 1e3
    lag = (g.sent[m.measured] - g.scheduled[m.measured]) * 1e3
    lag = lag[~np.isnan(lag)]
    answered = int(m.answered.sum())
    stages = {s: round(float(v[m.answered].mean()), 3) for s, v in g.stages.items() if answered}
    out: dict[str, Any] = {
        "gate": g.spec.name,
        "lane": g.spec.lane,
        "fps": g.spec.fps,
        **latency_stats(server),
        "mean_ms": round(float(server.mean()), 3) if server.size else None,
        "sent": int(np.count_nonzero(~np.isnan(g.sent[m.measured]))),
        "answered": answered,
        "shed": int(m.shed.sum()),
        "errors": int(m.errors.sum()),
        "missing": int(m.missing.sum()),
        **latency_stats(client, "client_"),
        "throughput_fps": round(_rate([g], 0, r.measure_from, r.end), 2),
        "send_lag_p99_ms": round(float(np.percentile(lag, 99)), 2) if lag.size else None,
        "stages_mean_ms": {s: stages[s] for s in _ordered_stages(set(stages))},
        # The verdict on each answered frame alone, and the passages' decisions sent.
        "frame_actions": _action_counts(g.frame_action[m.answered]),
        "decisions": _action_counts(g.action[m.answered], skip_none=True),
        "stream_error": g.stream_error,
        "warmup_frames": int((~m.measured).sum()),
    }
    return out


def summarize_run(r: RunResult) -> dict[str, Any]:
    """The JSON form of one run: ``gates`` (one row per gate) and ``node`` (all gates)."""
    gates = [gate_summary(g, r) for g in r.gates]
    masks = [_masks(g, r.measure_from) for g in r.gates]
    server = np.concatenate([g.server_ms[m.answered] for g, m in zip(r.gates, masks, strict=True)])
    client = np.concatenate(
        [
            (g.received[m.answered] - g.scheduled[m.answered]) * 1e3
            for g, m in zip(r.gates, masks, strict=True)
        ]
    )
    answered = sum(x["answered"] for x in gates)
    shed = sum(x["shed"] for x in gates)
    per_lane: dict[str, dict[str, float]] = {}
    for lane in sorted({g.spec.lane for g in r.gates}):
        sums: dict[str, float] = collections.defaultdict(float)
        n = 0
        for g, m in zip(r.gates, masks, strict=True):
            if g.spec.lane != lane:
                continue
            n += int(m.answered.sum())
            for s, v in g.stages.items():
                sums[s] += float(v[m.answered].sum())
            sums["total"] += float(g.server_ms[m.answered].sum())
        if n:
            order = [*_ordered_stages(set(sums) - {"total"}), "total"]
            per_lane[lane] = {s: round(sums[s] / n, 3) for s in order}
    node = {
        "offered_fps": round(r.offered_fps, 2),
        "throughput_fps": round(_rate(r.gates, 0, r.measure_from, r.end), 2),
        "shed_fps": round(_rate(r.gates, SHED_CODE, r.measure_from, r.end), 2),
        "sent": sum(x["sent"] for x in gates),
        "answered": answered,
        "shed": shed,
        "errors": sum(x["errors"] for x in gates),
        "missing": sum(x["missing"] for x in gates),
        "stream_errors": sum(1 for x in gates if x["stream_error"]),
        **latency_stats(server),
        **latency_stats(client, "client_"),
        "cpu": r.cpu,
        "stages_mean_ms_by_lane": per_lane,
        "measured_s": round(r.end - r.measure_from, 2),
        "drain_s": round(r.finished - r.end, 2),
    }
    return {"label": r.label, "factor": r.factor, "gates": gates, "node": node}


# -- outputs --------------------------------------------------------------------------------


def _contention_warning(cpu: dict[str, Any]) -> list[str]:
    """A warning when processes other than the node and this load generator used the CPU."""
    other = cpu.get("other_processes_cores")
    if other is None:
        return []
    if cpu.get("client_cores") is None:  # the node in its own process: other includes us
        other -= cpu.get("load_generator_cores") or 0.0
    if other < 0.2:
        return []
    return [
        "",
        f"warning: processes other than the node and the load generator used {other:.2f} of "
        f"the {cpu['cores']:.0f} cores during this run; the node had less CPU than the machine "
        "has, latencies are inflated",
    ]


def _other_text(cpu: dict[str, Any]) -> str:
    """The report's ", other processes X cores (of which the load generator Y)", or ""."""
    other = cpu.get("other_processes_cores")
    if other is None:
        return ""
    text = f", other processes {other:.2f} cores"
    generator = cpu.get("load_generator_cores")
    if generator is not None and cpu.get("client_cores") is None:
        text += f" (of which the load generator {generator:.2f})"
    return text


def markdown(report: dict[str, Any]) -> str:
    main = report["main"]
    node = main["node"]
    cfg = report["config"]
    cpu = node["cpu"]
    lines = [
        f"## smartgate bench — {len(main['gates'])} gates, {cfg['workload']} workload, "
        f"{report['server']}",
        "",
        f"{report['started_at']} · {report['machine']['cpus']} cores · "
        f"{cfg['duration_s']:g} s measured per run after {cfg['warmup_s']:g} s warm-up · "
        f"frames 1920×1080 JPEG ({report['pool']})",
        "",
        f"**{main['label']}**: offered {node['offered_fps']:.1f} frames/s, answered "
        f"{node['throughput_fps']:.1f}/s, shed {node['shed_fps']:.1f}/s; "
        f"node CPU {_fmt(cpu.get('node_cores'), 2)} cores ({_fmt(cpu.get('node_pct'), 0)} % of "
        f"{cpu['cores']:.0f}); machine busy {_fmt(cpu.get('machine_busy_pct'), 0)} %"
        + _other_text(cpu),
        *_contention_warning(cpu),
        "",
        "| gate | lane | fps | sent | answered | shed | errors | server p50 | p95 | p99 | max "
        "| client p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [*main["gates"], {"gate": "**all**", "lane": "", "fps": node["offered_fps"], **node}]
    for g in rows:
        lines.append(
            f"| {g['gate']} | {g['lane']} | {g['fps']:g} | {g['sent']} | {g['answered']} "
            f"| {g['shed']} | {g['errors'] + g['missing']} "
            f"| {_fmt(g['p50_ms'])} | {_fmt(g['p95_ms'])} | {_fmt(g['p99_ms'])} "
            f"| {_fmt(g['max_ms'])} | {_fmt(g['client_p50_ms'])} | {_fmt(g['client_p95_ms'])} "
            f"| {_fmt(g['client_p99_ms'])} | {_fmt(g['client_max_ms'])} |"
        )
    lines.append("")
    lines.append("latencies in ms; server: frame received → decision; client: capture → decision")
    errs = [g for g in main["gates"] if g["stream_error"]]
    for g in errs:
        lines.append(f"\n**stream error** on {g['gate']}: {g['stream_error']}")
    by_lane = node["stages_mean_ms_by_lane"]
    if by_lane:
        stages = _ordered_stages({s for v in by_lane.values() for s in v} - {"total"})
        lines += [
            "",
            "per-stage mean (ms, server side, answered frames; other = total minus the stages: "
            "queueing for a worker, conversion, contention):",
            "",
            "| lane | " + " | ".join(stages) + " | other | total |",
            "|---|" + "---|" * (len(stages) + 2),
        ]
        for lane, v in by_lane.items():
            other = v["total"] - sum(v.get(s, 0.0) for s in stages)
            lines.append(
                f"| {lane} | "
                + " | ".join(f"{v.get(s, 0.0):.2f}" for s in stages)
                + f" | {other:.2f} | {v['total']:.2f} |"
            )
    if len(report["sweep"]) > 1:
        lines += [
            "",
            "offered load:",
            "",
            "| run | offered fps | answered/s | shed/s | errors | server p50 | p99 | client p50 "
            "| p99 | node CPU cores |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in report["sweep"]:
            n = s["node"]
            lines.append(
                f"| {s['label']} | {n['offered_fps']:.1f} | {n['throughput_fps']:.1f} "
                f"| {n['shed_fps']:.1f} | {n['errors'] + n['missing'] + n['stream_errors']} "
                f"| {_fmt(n['p50_ms'])} | {_fmt(n['p99_ms'])} | {_fmt(n['client_p50_ms'])} "
                f"| {_fmt(n['client_p99_ms'])} | {_fmt(n['cpu'].get('node_cores'), 2)} |"
            )
    if report.get("saturation"):
        sat = report["saturation"]
        lines += ["", f"saturation: {sat['throughput_fps']:.1f} frames/s answered", ""]
        for c in sat["checks"]:
            lines.append(f"- {'PASS' if c['ok'] else 'FAIL'}: {c['what']} — {c['value']}")
    if report.get("site"):
        lines += ["", site_table(report["site"])]
    if report.get("files", {}).get("plots"):
        lines += ["", "plots: " + ", ".join(report["files"]["plots"])]
    return "\n".join(lines) + "\n"


def _plain_log_ticks(axis: Any, ticker: Any) -> None:
    """Plain-number ticks on a log axis (call after plotting): evenly spaced ones within about
    a decade, 1, 2, 3, 5, 10, 20, 30, 50 ... over more. Within about a decade the axis starts
    at the tick below its data, so its lowest values can be read."""
    lo, hi = sorted(axis.get_view_interval())
    decades = math.log10(hi / lo) if lo > 0 and hi > 0 else 3.0
    if decades < 1.2:
        locator = ticker.MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10])
        below = [t for t in locator.tick_values(lo, hi) if 0 < t <= lo]
        if below:
            axis.set_view_interval(max(below), hi, ignore=True)
        axis.set_major_locator(locator)
    else:
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def plot_all(
    report: dict[str, Any], main: RunResult, out: Path, targets: dict[str, GateSpec] | None = None
) -> list[str]:
    """latency_cdf.png, load.png (when there is more than one run) and stages.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    colors = plt.get_cmap("tab10")

    # Latency CDF per gate, server and client side.
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True, layout="constrained")
    targets = targets or {}
    for k, g in enumerate(main.gates):
        m = _masks(g, main.measure_from)
        series = (
            g.server_ms[m.answered],
            (g.received[m.answered] - g.scheduled[m.answered]) * 1e3,
        )
        for ax, values in zip(axes, series, strict=True):
            if values.size == 0:
                continue
            x = np.sort(values)
            y = np.arange(1, x.size + 1) / x.size
            ax.step(
                x,
                y,
                where="post",
                color=colors(k % 10),
                lw=1.4,
                label=f"{g.spec.name} ({g.spec.lane}, {g.spec.fps:g} fps)",
            )
        spec = targets.get(g.spec.name)
        if spec is not None and spec.p99_ms:
            axes[0].axvline(spec.p99_ms, color=colors(k % 10), ls=":", lw=1)
    for ax, side in zip(
        axes,
        ("server side (frame received → decision)", "client side (capture → decision received)"),
        strict=True,
    ):
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, ticker)
        ax.set_xlabel("latency (ms)")
        ax.set_title(side, fontsize=10)
        ax.axhline(0.99, color="grey", ls="--", lw=0.8)
        ax.text(ax.get_xlim()[0], 0.985, " p99", va="top", fontsize=8, color="grey")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("share of answered frames")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"Capture latency per gate — {main.label}, {main.offered_fps:.1f} frames/s offered"
    )
    path = out / "latency_cdf.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))

    # Latency and throughput against offered load.
    sweep = report["sweep"]
    if len(sweep) > 1:
        pts = sorted(sweep, key=lambda s: s["node"]["offered_fps"])
        offered = [s["node"]["offered_fps"] for s in pts]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
        a1.plot(offered, offered, color="grey", ls="--", lw=1, label="offered")
        a1.plot(offered, [s["node"]["throughput_fps"] for s in pts], "o-", label="answered")
        a1.plot(offered, [s["node"]["shed_fps"] for s in pts], "s-", label="shed")
        ceiling = report["config"].get("ceiling_fps")
        if ceiling:
            a1.axhline(ceiling, color="red", ls=":", label=f"--limit ceiling {ceiling:g}")
        if report.get("saturation"):
            sat = report["saturation"]["throughput_fps"]
            a1.axhline(sat, color="black", ls="-.", lw=1, label=f"saturation {sat:.1f}")
        a1.set_xlabel("offered load (frames/s, all gates)")
        a1.set_ylabel("frames/s")
        a1.set_title("throughput", fontsize=10)
        a1.legend(fontsize=8)
        a1.grid(True, alpha=0.3)

        def ys(key: str) -> list[float]:
            return [np.nan if s["node"][key] is None else s["node"][key] for s in pts]

        a2.plot(offered, ys("p50_ms"), "o-", label="server p50")
        a2.plot(offered, ys("p99_ms"), "o-", label="server p99")
        a2.plot(offered, ys("client_p50_ms"), "s--", label="client p50")
        a2.plot(offered, ys("client_p99_ms"), "s--", label="client p99")
        if report.get("saturation"):
            a2.axhline(GOAL_P99_AT_70, color="green", ls=":", lw=1, label="150 ms goal (70 %)")
            a2.axhline(GOAL_P99_AT_150, color="red", ls=":", lw=1, label="300 ms goal (150 %)")
        a2.set_yscale("log")
        _plain_log_ticks(a2.yaxis, ticker)
        a2.set_xlabel("offered load (frames/s, all gates)")
        a2.set_ylabel("latency (ms)")
        a2.set_title("latency, answered frames", fontsize=10)
        a2.legend(fontsize=8)
        a2.grid(True, which="both", alpha=0.3)
        fig.suptitle("Latency and throughput against offered load")
        path = out / "load.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))

    # Per-stage breakdown per gate (mean ms of answered frames).
    rows = report["main"]["gates"]
    names = _ordered_stages({s for g in rows for s in g["stages_mean_ms"]})
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.8), layout="constrained")
    labels = [f"{g['gate']} ({g['lane']})" for g in rows]
    left = np.zeros(len(rows))
    cmap = plt.get_cmap("tab20")
    for k, s in enumerate([*names, "other"]):
        if s == "other":
            vals = np.array(
                [max(0.0, (g["mean_ms"] or 0.0) - sum(g["stages_mean_ms"].values())) for g in rows]
            )
            color: Any = "lightgrey"
        else:
            vals = np.array([g["stages_mean_ms"].get(s, 0.0) for g in rows])
            color = cmap(k % 20)
        ax.barh(labels, vals, left=left, color=color, label=s)
        left += vals
    ax.invert_yaxis()
    ax.set_xlabel("mean ms per answered frame (server side)")
    ax.set_title(
        f"Where the time goes — {main.label} (other: total minus the stages, i.e. queueing "
        "for a worker, conversion, contention)",
        fontsize=10,
    )
    fig.legend(loc="outside lower center", ncol=min(10, len(names) + 1), fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    path = out / "stages.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))
    return written


# -- site acceptance ------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    gates: list[GateSpec]
    duration: float | None
    warmup: float | None
    community: str | None
    workload: str


def load_site(path: Path) -> Site:
    """Parse a site file: ``[[gate]] name, lane, fps, p99_ms`` (+ optional targets)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    known_top = {"gate", "duration", "warmup", "community", "workload", "name"}
    unknown = set(doc) - known_top
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} (allowed: {sorted(known_top)})")
    rows = doc.get("gate")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: needs at least one [[gate]] table")
    allowed = {"name", "lane", "fps", "p99_ms", "client_p99_ms", "max_shed_pct"}
    gates = []
    for k, row in enumerate(rows):
        where = f"{path}: gate {k + 1}"
        extra = set(row) - allowed
        if extra:
            raise ValueError(f"{where}: unknown keys {sorted(extra)} (allowed: {sorted(allowed)})")
        for key in ("name", "lane", "fps", "p99_ms"):
            if key not in row:
                raise ValueError(f"{where}: missing {key!r}")
        try:
            gates.append(
                GateSpec(
                    str(row["name"]),
                    str(row["lane"]),
                    float(row["fps"]),
                    float(row["p99_ms"]),
                    float(row["client_p99_ms"]) if "client_p99_ms" in row else None,
                    float(row.get("max_shed_pct", 1.0)),
                )
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
    names = [g.name for g in gates]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: gate names must be unique, got {names}")
    workload = str(doc.get("workload", "mixed"))
    if workload not in WORKLOADS:
        raise ValueError(f"{path}: workload must be one of {WORKLOADS}")
    return Site(
        gates,
        float(doc["duration"]) if "duration" in doc else None,
        float(doc["warmup"]) if "warmup" in doc else None,
        str(doc["community"]) if "community" in doc else None,
        workload,
    )


def judge_site(specs: list[GateSpec], run: dict[str, Any]) -> dict[str, Any]:
    """PASS/FAIL per gate against its targets."""
    results = []
    for spec, g in zip(specs, run["gates"], strict=True):
        reasons = []
        if g["stream_error"]:
            reasons.append(f"stream error: {g['stream_error']}")
        if g["answered"] == 0:
            reasons.append("no decisions")
        if g["p99_ms"] is not None and spec.p99_ms is not None and g["p99_ms"] > spec.p99_ms:
            reasons.append(f"server p99 {g['p99_ms']:.1f} ms > {spec.p99_ms:g} ms")
        cp99 = g["client_p99_ms"]
        if spec.client_p99_ms is not None and cp99 is not None and cp99 > spec.client_p99_ms:
            reasons.append(f"client p99 {cp99:.1f} ms > {spec.client_p99_ms:g} ms")
        shed_pct = 100.0 * g["shed"] / g["sent"] if g["sent"] else 0.0
        if shed_pct > spec.max_shed_pct:
            reasons.append(f"shed {shed_pct:.1f} % > {spec.max_shed_pct:g} %")
        if g["errors"] or g["missing"]:
            reasons.append(f"{g['errors']} frames with errors, {g['missing']} unanswered")
        results.append(
            {
                "gate": spec.name,
                "lane": spec.lane,
                "fps": spec.fps,
                "p99_ms": g["p99_ms"],
                "target_p99_ms": spec.p99_ms,
                "client_p99_ms": cp99,
                "target_client_p99_ms": spec.client_p99_ms,
                "shed_pct": round(shed_pct, 2),
                "result": "FAIL" if reasons else "PASS",
                "reasons": reasons,
            }
        )
    failed = sum(r["result"] == "FAIL" for r in results)
    return {"result": "FAIL" if failed else "PASS", "failed": failed, "gates": results}


def site_table(site: dict[str, Any]) -> str:
    lines = [
        "site acceptance:",
        "",
        "| gate | lane | fps | server p99 | target | client p99 | shed % | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in site["gates"]:
        why = f" ({'; '.join(r['reasons'])})" if r["reasons"] else ""
        target = "-" if r["target_p99_ms"] is None else f"{r['target_p99_ms']:g}"
        lines.append(
            f"| {r['gate']} | {r['lane']} | {r['fps']:g} | {_fmt(r['p99_ms'])} "
            f"| {target} | {_fmt(r['client_p99_ms'])} | {r['shed_pct']:.1f} "
            f"| **{r['result']}**{why} |"
        )
    n = len(site["gates"])
    verdict = (
        f"site: PASS ({n}/{n} gates)"
        if site["result"] == "PASS"
        else f"site: FAIL ({site['failed']} of {n} gates failed)"
    )
    return "\n".join([*lines, "", verdict])


# -- the node -------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_node(
    config_path: Path | None, models_dir: Path | None, gates: int
) -> Iterator[tuple[str, int]]:
    """A real node and gRPC server started for this run, as its own process (``smartgate serve``
    on a free port, a temporary data dir: ``benchmarks.node_process``), so its CPU is read from
    ``/proc`` of its pid alone and the load generator does not compete for its GIL; yields
    (address, pid). ``config_path`` and ``models_dir`` as for ``smartgate serve``; the server
    gets ``max(server.max_workers, gates + 4)`` gRPC workers, one stream per gate and spare."""
    from smartgate.config import load_config

    workers = max(load_config(config_path).server.max_workers, gates + 4)
    with running_node(models_dir, workers, config=config_path) as node:
        yield node.address, node.pid


# -- main -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smartgate bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--server", help="HOST:PORT of a running node (default: start one here)")
    p.add_argument("--server-pid", type=int, help="process id of --server, for its CPU use")
    p.add_argument("--tls-ca", type=Path, help="CA of --server's certificate: use TLS")
    p.add_argument("--cert", type=Path, help="client certificate (mutual TLS)")
    p.add_argument("--key", type=Path, help="key of --cert")
    p.add_argument("--token", help="bearer token (an admin token), or @FILE holding it")
    p.add_argument("--config", type=Path, help="TOML configuration of the embedded node")
    p.add_argument("--models-dir", type=Path, help="model cache of the embedded node")
    p.add_argument("--gates", type=int, default=8, help="simulated gates (default 8)")
    p.add_argument("--vehicle-gates", type=int, help="vehicle lanes (default: a quarter)")
    p.add_argument("--fps", type=float, default=4.0, help="frames/s per gate (default 4)")
    p.add_argument(
        "--duration", type=float, default=15.0, help="measured seconds per run (default 15)"
    )
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (default 1)")
    p.add_argument(
        "--drain", type=float, help="seconds to wait for late replies (default: max(10, duration))"
    )
    p.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="mixed",
        help="mixed (default): face passages, empty frames, car scenes; one-face: one face in "
        "every frame, pedestrian lanes only",
    )
    p.add_argument(
        "--sweep",
        default="0.5,1,1.5",
        help="load factors of --fps, one run each (default 0.5,1,1.5; '1' for one run), or "
        "'auto': find saturation, "
        "then run at 70 %% and 150 %% of it",
    )
    p.add_argument(
        "--ceiling",
        type=_ceiling,
        help="frames/s of --limit, to compare with, or 'auto': measure it in this run, right "
        "before the load and again after it (the node idle), and compare with their mean",
    )
    p.add_argument("--site", type=Path, help="site acceptance: a TOML file of gates")
    p.add_argument("--limit", action="store_true", help="measure the models alone and exit")
    p.add_argument("--limit-seconds", type=float, default=3.0, help="per --limit setting")
    p.add_argument("--community", default="bench", help="community to load (default bench)")
    p.add_argument(
        "--passages", type=int, default=12, help="face passages in the frame pool (default 12)"
    )
    p.add_argument("--seed", type=int, default=0, help="frames and camera phases")
    p.add_argument("--json", type=Path, help="report path (default: <plots dir>/report.json)")
    p.add_argument("--markdown", type=Path, help="default: <plots dir>/report.md")
    p.add_argument("--plots", type=Path, help="output folder (default: reports/bench-<time>/)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _connector(args: argparse.Namespace) -> Any:
    """How the simulator opens channels to ``--server`` (plain, TLS, mTLS, a token)."""
    from cluster.security.channel import open_channel, read_token

    token = read_token(args.token)
    return lambda address: open_channel(
        address, ca=args.tls_ca, cert=args.cert, key=args.key, token=token
    )


def _factors(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"--sweep takes factors like 0.5,1,1.5 or 'auto', got {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"--sweep factors must be > 0, got {text!r}")
    return values


def _ceiling(text: str) -> float | str:
    """``--ceiling``: frames/s, or ``auto``."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a number of frames/s or 'auto', got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def limit_report(args: argparse.Namespace) -> dict[str, Any]:
    """``benchmarks.compute_limit`` on the detector and embedder the node runs (``--config``),
    measured now in this process: the ``--limit`` ceiling and how it was found."""
    from benchmarks import compute_limit
    from smartgate.config import load_config

    models = load_config(args.config).models
    return compute_limit.run(
        args.models_dir,
        args.limit_seconds,
        progress=not args.quiet,
        detector=models.detector,
        embedder=models.embedder,
    )


def measure_ceiling(args: argparse.Namespace) -> float:
    """The ``--limit`` ceiling: the best frames/s of the node's models alone, measured now."""
    return float(limit_report(args)["best"]["fps"])


def _log(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _execute(
    args: argparse.Namespace,
    specs: list[GateSpec],
    factors: list[float],
    is_site: bool,
    workload: str,
    duration: float,
    warmup: float,
    community: str,
) -> tuple[FramePool, list[RunResult], RunResult, float | None, int | None]:
    """Build the frames, start (or reach) the node, prepare the community, run the load;
    also returns the node's pid (None: ``--server`` without ``--server-pid``)."""
    quiet = args.quiet
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        _log(quiet, f"building {workload} frames from {data_dir()} ...")
        pool_future = ex.submit(build_pool, workload, args.passages, args.seed)
        server_cm: contextlib.AbstractContextManager[tuple[str, int | None]]
        if args.server:
            server_cm = contextlib.nullcontext((args.server, args.server_pid))
        else:
            _log(quiet, "starting an embedded node in its own process (loading the models) ...")
            server_cm = embedded_node(args.config, args.models_dir, len(specs))
        with server_cm as (address, pid):
            pool = pool_future.result()
            _log(quiet, f"frames: {pool.describe()}")
            connect = _connector(args)
            with connect(address) as ch:
                grpc.channel_ready_future(ch).result(timeout=10)
                prepare_community(ch, community, pool)
            common = {
                "connect": connect,
                "community": community,
                "warmup": warmup,
                "drain_s": args.drain,
                "cpu_pid": pid,
                "progress": not quiet,
                "seed": args.seed,
            }
            runs: list[RunResult] = []
            saturation = None
            if is_site:
                runs.append(
                    run_load(address, specs, pool, duration=duration, label="site", **common)
                )
                main_run = runs[0]
            elif args.sweep == "auto":
                measured = args.ceiling == "auto"
                if measured:
                    _log(quiet, "measuring the --limit ceiling (the node idle) ...")
                    args.ceiling = measure_ceiling(args)
                    _log(quiet, f"ceiling: {args.ceiling:g} frames/s")
                main_run, saturation = _auto_sweep(
                    address, specs, pool, duration, args, common, runs
                )
                if measured:
                    _log(quiet, "measuring the --limit ceiling again (the node idle) ...")
                    after = measure_ceiling(args)
                    args.ceiling_measured = [args.ceiling, after]
                    args.ceiling = round((args.ceiling + after) / 2, 1)
                    _log(
                        quiet, f"ceiling: {after:g} frames/s after the load, mean {args.ceiling:g}"
                    )
            else:
                for f in factors:
                    scaled = [replace(s, fps=s.fps * f) for s in specs]
                    runs.append(
                        run_load(
                            address,
                            scaled,
                            pool,
                            duration=duration,
                            label=f"{f:g}x",
                            factor=f,
                            **common,
                        )
                    )
                main_run = next((r for r in runs if r.factor == 1.0), runs[0])

    return pool, runs, main_run, saturation, pid


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.limit:
        from benchmarks import compute_limit

        limit = limit_report(args)
        print(compute_limit.markdown(limit))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(limit, indent=2, ensure_ascii=False) + "\n")
        return 0
    try:
        site = load_site(args.site) if args.site else None
        factors = [] if args.sweep == "auto" or site else _factors(args.sweep)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.ceiling == "auto" and args.sweep != "auto":
        print("error: --ceiling auto is measured for --sweep auto only", file=sys.stderr)
        return 2
    if args.gates < 1 or args.fps <= 0 or args.duration <= 0:
        print("error: --gates, --fps and --duration must be positive", file=sys.stderr)
        return 2
    workload = site.workload if site else args.workload
    specs = (
        site.gates
        if site
        else default_gates(
            args.gates, args.fps, 0 if workload == "one-face" else args.vehicle_gates
        )
    )
    duration = site.duration if site and site.duration else args.duration
    warmup = site.warmup if site and site.warmup is not None else args.warmup
    community = site.community if site and site.community else args.community
    out_dir = args.plots or Path("reports") / f"bench-{datetime.now():%Y%m%d-%H%M%S}"
    started = datetime.now().astimezone()
    t_start = time.perf_counter()
    quiet = args.quiet

    try:
        pool, runs, main_run, saturation, node_pid = _execute(
            args, specs, factors, site is not None, workload, duration, warmup, community
        )
    except (grpc.RpcError, grpc.FutureTimeoutError, SmartgateError, OSError) as exc:
        where = args.server or "the embedded node"
        if isinstance(exc, grpc.FutureTimeoutError):
            message = f"cannot reach {where}"
        elif isinstance(exc, grpc.RpcError):
            message = f"{where}: {exc.code().name}: {exc.details()}"
        else:
            message = str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 1

    summaries = [summarize_run(r) for r in runs]
    main_summary = summaries[runs.index(main_run)]
    report: dict[str, Any] = {
        "version": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "server": _server_text(args.server, node_pid),
        "node_process": {
            "pid": node_pid,
            "bench_pid": os.getpid(),
            "own_process": None if node_pid is None else node_pid != os.getpid(),
            "started_by_bench": not args.server,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {
            "workload": workload,
            "gates": len(specs),
            "fps": None if site else args.fps,
            "duration_s": duration,
            "warmup_s": warmup,
            "sweep": "site" if site else args.sweep,
            "ceiling_fps": args.ceiling,
            # --ceiling auto: measured before and after the load; ceiling_fps is their mean
            "ceiling_measured_fps": getattr(args, "ceiling_measured", None),
            "seed": args.seed,
        },
        "pool": pool.describe(),
        "gates": main_summary["gates"],
        "node": main_summary["node"],
        "main": main_summary,
        "sweep": summaries,
        "saturation": _saturation_checks(
            saturation, summaries, args.ceiling, getattr(args, "ceiling_measured", None)
        )
        if saturation
        else None,
        "site": judge_site(specs, main_summary) if site else None,
        "files": {},
    }
    if site:
        report["site"]["file"] = str(args.site)
    json_path = args.json or out_dir / "report.json"
    md_path = args.markdown or out_dir / "report.md"
    if not args.no_plots:
        _log(quiet, f"plotting into {out_dir} ...")
        targets = {g.name: g for g in specs} if site else {}
        report["files"]["plots"] = plot_all(report, main_run, out_dir, targets)
    report["files"]["json"] = str(json_path)
    report["files"]["markdown"] = str(md_path)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    text = markdown(report)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(text, encoding="utf-8")
    print(text)
    _log(quiet, f"wrote {json_path} and {md_path} in {report['wall_s']:.0f} s")
    if site and report["site"]["result"] != "PASS":
        return 1
    return 0


def _server_text(server: str | None, pid: int | None) -> str:
    """Which node was measured, for the report's title."""
    if server is None:
        return f"embedded node in its own process (`smartgate serve`, pid {pid})"
    if pid == os.getpid():
        return f"server {server} (in the load generator's process)"
    return f"server {server}" + (f" (pid {pid})" if pid is not None else "")


#: The saturation search: loads ×RAMP until one is not kept up with, then at most
#: REFINE_STEPS halvings (geometric) of the bracket, until it is within REFINE_WITHIN.
RAMP = 1.5
RAMP_STEPS = 8
REFINE_STEPS = 4
REFINE_WITHIN = 1.03


def search_saturation(attempt: Callable[[float, str], tuple[bool, float]], start: float) -> None:
    """Drive the saturation search through ``attempt(load, label)``, which runs one load and
    says whether the node kept up and how many frames/s it answered.

    The load rises ×``RAMP`` from ``start`` until the node stops keeping up. Past saturation a
    node answers less than at it (shed frames cut passages short, and a passage answered on
    fewer frames reuses less), so the first overloaded load says little about the peak. The
    search then halves the bracket between the highest load kept up with and the lowest not
    (geometrically) until it is within ``REFINE_WITHIN``; when even ``start`` was too much, it
    first tries just below what that run answered. Saturation is then the most answered in any
    run (the caller's).
    """
    kept: float | None = None
    load = start
    answered = 0.0
    for step in range(RAMP_STEPS):
        ok, answered = attempt(load, f"search {step + 1}")
        if not ok:
            break
        kept, load = load, load * RAMP
    else:
        return  # never overloaded
    over = load
    steps = 0
    if kept is None:
        below = 0.95 * answered
        if below <= 0:
            return
        steps += 1
        ok, _ = attempt(below, f"refine {steps}")
        if not ok:
            return
        kept = below
    while steps < REFINE_STEPS and over / kept > REFINE_WITHIN:
        steps += 1
        mid = (kept * over) ** 0.5
        ok, _ = attempt(mid, f"refine {steps}")
        if ok:
            kept = mid
        else:
            over = mid


def _auto_sweep(
    address: str,
    specs: list[GateSpec],
    pool: FramePool,
    duration: float,
    args: argparse.Namespace,
    common: dict[str, Any],
    runs: list[RunResult],
) -> tuple[RunResult, float]:
    """Find saturation (``search_saturation``; per-gate loads of ``specs`` scaled alike), the
    most the node answered in any run, then run at 70 % and 150 % of it."""
    best = 0.0
    total = sum(s.fps for s in specs)

    def at(load: float) -> list[GateSpec]:
        """``specs`` offering ``load`` frames/s in all, each gate its share."""
        return [replace(s, fps=round(s.fps * load / total, 3)) for s in specs]

    def attempt(load: float, label: str) -> tuple[bool, float]:
        """One run at ``load`` frames/s over all gates: whether the node kept up, and what it
        answered."""
        nonlocal best
        r = run_load(address, at(load), pool, duration=duration, label=label, **common)
        runs.append(r)
        node = summarize_run(r)["node"]
        best = max(best, node["throughput_fps"])
        shed_share = node["shed"] / max(1, node["sent"])
        kept = node["throughput_fps"] >= 0.95 * node["offered_fps"] and shed_share <= 0.01
        return kept, node["throughput_fps"]

    search_saturation(attempt, total)
    main_run = None
    for share in (0.7, 1.5):
        r = run_load(
            address,
            at(share * best),
            pool,
            duration=duration,
            label=f"{share:.0%} of sat",
            factor=share,
            **common,
        )
        runs.append(r)
        if share == 0.7:
            main_run = r
    assert main_run is not None
    return main_run, best


def _saturation_checks(
    saturation: float,
    summaries: list[dict[str, Any]],
    ceiling: float | None,
    measured: list[float] | None = None,
) -> dict[str, Any]:
    at70 = next(s for s in summaries if s["factor"] == 0.7)
    at150 = next(s for s in summaries if s["factor"] == 1.5)
    worst70 = max((g["p99_ms"] or math.inf) for g in at70["gates"])
    n150 = at150["node"]
    checks = []
    if ceiling:
        share = saturation / ceiling
        checks.append(
            {
                "what": f"saturation ≥ {GOAL_CEILING_SHARE:.0%} of the --limit ceiling "
                f"({ceiling:g}/s"
                + (
                    f": the mean of {measured[0]:g} before and {measured[1]:g} after the load)"
                    if measured
                    else ")"
                ),
                "value": f"{share:.0%}",
                "ok": share >= GOAL_CEILING_SHARE,
            }
        )
    checks.append(
        {
            "what": f"at 70 % of saturation every gate's server p99 ≤ {GOAL_P99_AT_70:g} ms",
            "value": f"worst gate {worst70:.1f} ms",
            "ok": worst70 <= GOAL_P99_AT_70,
        }
    )
    p150 = n150["p99_ms"] if n150["p99_ms"] is not None else math.inf
    checks.append(
        {
            "what": f"at 150 % answered frames' server p99 ≤ {GOAL_P99_AT_150:g} ms",
            "value": f"{p150:.1f} ms (client p99 {_fmt(n150['client_p99_ms'])} ms), "
            f"shed {n150['shed']} of {n150['sent']}",
            "ok": p150 <= GOAL_P99_AT_150,
        }
    )
    checks.append(
        {
            "what": "at 150 % no stream errors",
            "value": str(n150["stream_errors"]),
            "ok": n150["stream_errors"] == 0,
        }
    )
    return {"throughput_fps": round(saturation, 2), "checks": checks}


if __name__ == "__main__":
    sys.exit(main())
