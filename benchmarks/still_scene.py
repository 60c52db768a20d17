"""What a still scene costs a gate, with whole-frame searches skipped while nothing moves
(``recognizer.faces.scene``) and without.

One gate's frames go through the node's own path (``Passages.carry_offer`` → ``Engine.
process_frame`` → ``Passages.observe``) in this process, one at a time at the camera's frame
times. The scene is a 1080p camera view with sensor noise in every frame: first empty (an idle
gate: most of a real gate's day), then with a person standing in it (a resident photo from the
shared data, face ~200 pixels). Reports per ``tracking.still_scene_diff`` setting the share of
frames searched whole and the CPU a frame (process time: both cores' worth if used).

    python -m benchmarks.still_scene [--frames 150] [--fps 15]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import cv2
import numpy as np

from benchmarks.datasets import data_dir
from benchmarks.node_path import gate_frames, gate_node
from benchmarks.scenes import composite
from recognizer.faces.analyzer import WHOLE_FRAME_STAGE
from recognizer.faces.factory import build_face_analyzer
from smartgate.config import Config, load_config

WIDTH, HEIGHT = 1920, 1080
VARIANTS = 20  # noisy encodings of the scene, cycled


def scene_frames(person: bool, seed: int = 0) -> list[bytes]:
    """``VARIANTS`` JPEG frames of one still 1080p view, each with its own sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    view = np.stack(
        [
            60 + 80 * xx / WIDTH + 30 * np.sin(yy / 90),
            90 + 40 * yy / HEIGHT,
            120 + 20 * np.cos(xx / 200),
        ],
        axis=-1,
    )
    if person:
        read = cv2.imread(str(data_dir() / "faces" / "examples_obama2.jpg"))
        if read is None:
            raise FileNotFoundError("examples_obama2.jpg is missing from the shared photos")
        h = 640
        photo = cv2.resize(read, (int(read.shape[1] * h / read.shape[0]), h))
        pasted = composite(photo, WIDTH, HEIGHT, 800, 300).astype(np.float64)
        inside = np.zeros((HEIGHT, WIDTH), bool)
        inside[300 : 300 + h, 800 : 800 + photo.shape[1]] = True
        view[inside] = pasted[inside]
    out = []
    for _ in range(VARIANTS):
        noisy = np.clip(view + rng.normal(0, 3.0, view.shape), 0, 255).astype(np.uint8)
        out.append(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def run(
    config: Config, analyzer: object, frames: list[bytes], n: int, fps: float
) -> dict[str, float]:
    """``n`` frames of one gate through a fresh node; the whole-searched share and CPU a frame."""
    with gate_node(config, analyzer) as (engine, node):
        cpu0 = time.process_time()
        cycled = (frames[i % len(frames)] for i in range(n))
        whole = sum(
            WHOLE_FRAME_STAGE in result.timings_ms
            for result, _ in gate_frames(engine, node, cycled, fps)
        )
        cpu_ms = (time.process_time() - cpu0) / n * 1e3
    return {"whole_share": whole / n, "cpu_ms_per_frame": cpu_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=150, help="frames per run")
    parser.add_argument("--fps", type=float, default=15.0, help="the camera's frame rate")
    args = parser.parse_args(argv)
    base = load_config(None)
    analyzer = build_face_analyzer(base)
    print("| scene | still_scene_diff | searched whole | CPU a frame (ms) |")
    print("|---|---|---|---|")
    for label, person in (("empty", False), ("a person standing", True)):
        frames = scene_frames(person)
        for diff in (base.tracking.still_scene_diff, 0.0):
            config = replace(base, tracking=replace(base.tracking, still_scene_diff=diff))
            r = run(config, analyzer, frames, args.frames, args.fps)
            print(f"| {label} | {diff:g} | {r['whole_share']:.0%} | {r['cpu_ms_per_frame']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
