"""Where one gate's frame goes on the node's own path, in process, without gRPC or queues.

The harness's frame pool (``benchmarks.gates.build_pool``, 1080p JPEGs of people walking past
a camera, its gallery enrolled) goes through ``Passages.carry_offer`` → ``Engine.
process_frame`` → ``Passages.observe``, one frame at a time at the camera's frame times, as one
gate of the node would. Reports per stage the share of frames that ran it, its median when it
ran and its mean over all frames; the median of ``observe`` (tracking, best shots, the gate's
view); and the process CPU a frame (both cores' worth if used).

    python -m benchmarks.node_path [--workload one-face] [--passages 12] [--repeat 2] [--fps 12]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.gates import WORKLOADS, FramePool, build_pool
from cluster.engine import Engine, FrameResult
from cluster.node import Node
from indexer.registry import FaceRegistry
from recognizer.faces.factory import build_face_analyzer
from smartgate.config import Config, load_config

COMMUNITY = "bench"
GATE = "gate"


@dataclass(frozen=True)
class StageFigures:
    share: float  # of frames that ran the stage
    median_ms: float  # when it ran
    mean_ms: float  # over every frame


@dataclass(frozen=True)
class PathReport:
    frames: int
    cpu_ms_per_frame: float
    observe_median_ms: float
    stages: dict[str, StageFigures]


@contextmanager
def gate_node(
    config: Config, analyzer: object, gallery: dict[str, bytes] | None = None
) -> Iterator[tuple[Engine, Node]]:
    """A fresh engine and node on a temporary data dir, ``gallery`` (person → photo) enrolled
    in ``COMMUNITY``; closed on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace(config, data_dir=Path(tmp))
        registry = FaceRegistry(Path(tmp), analyzer.embedder.dim)  # type: ignore[attr-defined]
        registry.create_community(COMMUNITY)
        engine = Engine(cfg, analyzer, registry, None)  # type: ignore[arg-type]
        for person, photo in (gallery or {}).items():
            engine.enroll(COMMUNITY, person, [photo])
        node = Node.around(engine)
        try:
            yield engine, node
        finally:
            node.close()


def gate_frames(
    engine: Engine, node: Node, frames: Iterable[bytes], fps: float
) -> Iterator[tuple[FrameResult, float]]:
    """One gate's ``frames`` at ``fps`` through ``carry_offer`` → ``process_frame`` →
    ``observe``, one at a time; yields each frame's result and how long ``observe`` took
    (ms)."""
    for i, jpeg in enumerate(frames):
        t = i / fps
        offer = node.passages.carry_offer(COMMUNITY, GATE, t)
        result = engine.process_frame(COMMUNITY, jpeg, t, carry=offer, gate=GATE)
        started = time.perf_counter()
        node.passages.observe(COMMUNITY, GATE, "cam", i, t, result)
        yield result, (time.perf_counter() - started) * 1e3


def run(
    config: Config, analyzer: object, pool: FramePool, repeat: int = 1, fps: float = 12.0
) -> PathReport:
    """The pool's pedestrian frames, ``repeat`` times over, through a fresh node."""
    frames = pool.frames["pedestrian"] * repeat
    stages: dict[str, list[float]] = collections.defaultdict(list)
    observe_ms = []
    with gate_node(config, analyzer, pool.gallery) as (engine, node):
        cpu0 = time.process_time()
        for result, ms in gate_frames(engine, node, frames, fps):
            observe_ms.append(ms)
            for stage, stage_ms in result.timings_ms.items():
                stages[stage].append(stage_ms)
        cpu_ms = (time.process_time() - cpu0) / len(frames) * 1e3
    n = len(frames)
    return PathReport(
        frames=n,
        cpu_ms_per_frame=cpu_ms,
        observe_median_ms=float(np.median(observe_ms)),
        stages={
            stage: StageFigures(len(ms) / n, float(np.median(ms)), float(np.sum(ms)) / n)
            for stage, ms in sorted(stages.items())
        },
    )


def markdown(report: PathReport) -> str:
    lines = [
        f"{report.frames} frames; CPU {report.cpu_ms_per_frame:.2f} ms a frame; "
        f"observe median {report.observe_median_ms:.3f} ms",
        "",
        "| stage | share of frames | median when run (ms) | mean over all frames (ms) |",
        "|---|---|---|---|",
    ]
    for stage, f in report.stages.items():
        lines.append(f"| {stage} | {f.share:.0%} | {f.median_ms:.2f} | {f.mean_ms:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=WORKLOADS, default="one-face")
    parser.add_argument("--passages", type=int, default=12, help="passages in the pool")
    parser.add_argument("--repeat", type=int, default=2, help="times through the pool")
    parser.add_argument("--fps", type=float, default=12.0, help="the camera's frame rate")
    args = parser.parse_args(argv)
    config = load_config(None)
    pool = build_pool(args.workload, passages=args.passages)
    report = run(config, build_face_analyzer(config), pool, args.repeat, args.fps)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
