"""A peer, side by side: the same frames through face_recognition (dlib) and smartgate.

The peer is the most-used Python face library, ``face_recognition`` (dlib's HOG detector and
ResNet encoder). Nothing is installed at run time; install it into the benchmark environment
once (``face_recognition`` pins ``dlib``, which would build from source, hence ``--no-deps``
and the ``dlib-bin`` wheel)::

    .venv/bin/pip install --no-deps face_recognition
    .venv/bin/pip install dlib-bin face_recognition_models

In one run, on the same one-face 1920x1080 JPEG frames (single-subject shared photos
composited into a camera frame, as ``benchmarks.scenes`` does):

* (a) the peer with its defaults, one process: ``face_locations`` (HOG, the frame upsampled
  once) and ``face_encodings``;
* (b) the peer's best throughput: HOG without upsampling, one process per core;
* (c) smartgate in process: ``recognizer.image.decode`` + ``FaceAnalyzer.analyze`` (detect,
  embed, liveness) on two threads sharing one analyzer.

Every side decodes the JPEG bytes itself, inside the timing. Accuracy uses the protocol of
``benchmarks.face_accuracy`` on the shared photos (enrol the first photo of each identity,
identify the others; open set with each identity left out; background faces): smartgate
through ``benchmarks.face_accuracy.evaluate`` at its configured threshold and margin, the
peer with its usual rule (nearest enrolled encoding, accepted at distance <= 0.6), once with
its default detector settings and once with the best-throughput ones.

Run: ``python -m benchmarks.peer`` (``--frames N``, ``--processes P``, ``--threads T``).
The machine is shared and noisy: both sides run in the same run, so read the ratio.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import io
import math
import multiprocessing
import os
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from benchmarks.datasets import LabelledFace, data_dir, face_labels, related, subjects_per_file
from benchmarks.scenes import composite

if TYPE_CHECKING:  # pool workers re-import this module: keep its imports light
    from benchmarks.face_accuracy import AccuracyReport

PEER_TOLERANCE = 0.6  # face_recognition.compare_faces' default distance
INSTALL_HINT = (
    ".venv/bin/pip install --no-deps face_recognition && "
    ".venv/bin/pip install dlib-bin face_recognition_models"
)
FRAME_SIZE = (1920, 1080)
# Single-subject photos without background faces, one or two per identity.
FRAME_SOURCES = (
    "examples_obama.jpg",
    "examples_biden.jpg",
    "examples_knn_examples_train_kit_harington_john1.jpeg",
    "examples_knn_examples_train_rose_leslie_img2.jpg",
    "examples_knn_examples_train_alex_lacamoire_img1.jpg",
    "examples_lin-manuel-miranda.png",
    "examples_knn_examples_train_biden_biden2.jpg",
    "examples_obama2.jpg",
)


def import_peer() -> types.ModuleType:
    """``face_recognition``, or ``ImportError`` saying how to install it.

    ``face_recognition_models`` 0.3.0 still imports ``pkg_resources``, which setuptools >= 81
    no longer ships; if it is missing, a stand-in with the one function it uses is
    registered (in this process only) rather than downgrading the build tools.
    """
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = (  # type: ignore[attr-defined]
            lambda package, name: str(importlib.resources.files(package).joinpath(name))
        )
        sys.modules["pkg_resources"] = shim
    try:
        # The models first: face_recognition itself quits the interpreter when they are absent.
        importlib.import_module("face_recognition_models")
        return importlib.import_module("face_recognition")
    except ImportError as exc:
        raise ImportError(f"the peer library is not installed ({exc}); run {INSTALL_HINT}") from exc


def peer_versions() -> dict[str, str]:
    """Installed versions of the peer's distributions."""
    names = ("face_recognition", "face_recognition_models", "dlib-bin")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# --- frames -----------------------------------------------------------------------------------


def build_frames(root: Path, count: int, seed: int = 0) -> list[bytes]:
    """``count`` one-face 1920x1080 JPEG frames (quality 88) from ``FRAME_SOURCES``.

    Each photo is scaled to 60-90 % of the frame height and pasted at a random place on a
    plain background, cycling through the sources.
    """
    rng = np.random.default_rng(seed)
    width, height = FRAME_SIZE
    photos = []
    for name in FRAME_SOURCES:
        photo = cv2.imread(str(root / "faces" / name), cv2.IMREAD_COLOR)
        if photo is None:
            raise FileNotFoundError(f"cannot read {root / 'faces' / name}")
        photos.append(photo)
    frames = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h = int(height * rng.uniform(0.6, 0.9))
        w = min(width, int(photo.shape[1] * h / photo.shape[0]))
        subject = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
        x = int(rng.uniform(0, width - w))
        y = int(rng.uniform(0, height - h))
        ok, buf = cv2.imencode(
            ".jpg", composite(subject, width, height, x, y), [cv2.IMWRITE_JPEG_QUALITY, 88]
        )
        if not ok:
            raise ValueError("JPEG encoding failed")
        frames.append(buf.tobytes())
    return frames


# --- throughput -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    label: str
    frames: int
    seconds: float
    faces: Counter[int]  # faces found per frame -> number of frames

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _peer_frame(fr: types.ModuleType, data: bytes, upsample: int) -> int:
    """The peer's recognition of one JPEG frame: decode, detect, encode; the face count."""
    image = fr.load_image_file(io.BytesIO(data))
    locations = fr.face_locations(image, number_of_times_to_upsample=upsample)
    return len(fr.face_encodings(image, locations))


def peer_in_process(frames: list[bytes], upsample: int, label: str) -> Throughput:
    fr = import_peer()
    _peer_frame(fr, frames[0], upsample)  # warm-up
    faces: Counter[int] = Counter()
    start = time.perf_counter()
    for data in frames:
        faces[_peer_frame(fr, data, upsample)] += 1
    return Throughput(label, len(frames), time.perf_counter() - start, faces)


_worker: dict[str, Any] = {}


def _pool_init(upsample: int, warm: bytes, barrier: Any) -> None:
    """Pool worker start-up: import and warm the peer, then wait for every other worker."""
    _worker["fr"] = import_peer()
    _worker["upsample"] = upsample
    _peer_frame(_worker["fr"], warm, upsample)
    barrier.wait()


def _pool_task(data: bytes) -> tuple[int, float, float]:
    """One frame in a pool worker: faces found, start and end (system-wide monotonic clock)."""
    start = time.monotonic()
    faces = _peer_frame(_worker["fr"], data, _worker["upsample"])
    return faces, start, time.monotonic()


def peer_pool(frames: list[bytes], upsample: int, processes: int, label: str) -> Throughput:
    """The peer on ``processes`` worker processes (spawned), warmed up before timing."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    with ctx.Pool(processes, _pool_init, (upsample, frames[0], barrier)) as pool:
        results = pool.map(_pool_task, frames, chunksize=1)
    seconds = max(end for _, _, end in results) - min(start for _, start, _ in results)
    return Throughput(label, len(frames), seconds, Counter(faces for faces, _, _ in results))


def smartgate_threads(
    analyzer: Any, long_side: int, frames: list[bytes], threads: int, min_frames: int, label: str
) -> Throughput:
    """Decode + analyse on ``threads`` threads sharing ``analyzer``; at least ``min_frames``."""
    from recognizer.image import DecodeLimits, decode

    limits = DecodeLimits()
    lock = threading.Lock()
    faces: Counter[int] = Counter()

    def analyse(data: bytes) -> None:
        found = len(analyzer.analyze(decode(data, limits, long_side)))
        with lock:
            faces[found] += 1

    for data in frames:  # warm-up, and one pass counted for the face tally
        analyse(data)
    per_pass = Counter(faces)
    work = frames * max(1, math.ceil(min_frames / len(frames)))
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(analyse, work))
        seconds = time.perf_counter() - start
    return Throughput(label, len(work), seconds, per_pass)


# --- accuracy ---------------------------------------------------------------------------------


@dataclass
class PeerAccuracy:
    """The peer's counts under the protocol of ``benchmarks.face_accuracy``."""

    probes: int = 0
    rank1_correct: int = 0
    open_set_trials: int = 0
    false_accepts: int = 0
    background_faces: int = 0
    background_accepts: int = 0
    missing_labels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _PeerSample:
    label: LabelledFace
    encoding: np.ndarray


def peer_accuracy(root: Path, upsample: int) -> PeerAccuracy:
    """Enrol the first found photo per identity, identify the rest (not against a re-encoding
    of its own gallery photo); open set with each identity left out; background faces.

    Per photo the labelled faces are the largest ``n`` HOG detections (by box height), left
    to right; a face is accepted as its nearest enrolled encoding at distance <= 0.6. The
    peer has no quality gate, so every other detection counts as a background face.
    """
    fr = import_peer()
    labels = face_labels(root)
    counts = subjects_per_file(labels)
    samples: list[_PeerSample] = []
    background: list[np.ndarray] = []
    report = PeerAccuracy()
    for file in dict.fromkeys(lab.file for lab in labels):
        image = fr.load_image_file(str(root / "faces" / file))
        locations = fr.face_locations(image, number_of_times_to_upsample=upsample)
        encodings = fr.face_encodings(image, locations)
        order = sorted(range(len(locations)), key=lambda i: -(locations[i][2] - locations[i][0]))
        biggest = sorted(order[: counts[file]], key=lambda i: locations[i][1] + locations[i][3])
        for lab in (lab for lab in labels if lab.file == file):
            if len(biggest) < counts[file]:
                report.missing_labels.append(lab.key)
                continue
            samples.append(_PeerSample(lab, encodings[biggest[lab.position or 0]]))
        background += [encodings[i] for i in order[counts[file] :]]

    gallery: dict[str, _PeerSample] = {}
    for s in samples:
        gallery.setdefault(s.label.identity, s)

    def identify(encoding: np.ndarray, enrolled: dict[str, _PeerSample]) -> tuple[str, bool]:
        names = list(enrolled)
        distances = fr.face_distance(np.stack([enrolled[n].encoding for n in names]), encoding)
        best = int(np.argmin(distances))
        return names[best], bool(distances[best] <= PEER_TOLERANCE)

    for s in samples:
        if related(s.label.file, gallery[s.label.identity].label.file, labels):
            continue
        who, accepted = identify(s.encoding, gallery)
        report.probes += 1
        report.rank1_correct += int(accepted and who == s.label.identity)
    for encoding in background:
        report.background_faces += 1
        report.background_accepts += int(identify(encoding, gallery)[1])
    for left_out in gallery:
        others = {k: v for k, v in gallery.items() if k != left_out}
        for s in (s for s in samples if s.label.identity == left_out):
            report.open_set_trials += 1
            report.false_accepts += int(identify(s.encoding, others)[1])
    return report


# --- report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    system: str
    speed: Throughput
    rank1: str
    open_set: str
    background: str
    not_found: int


def peer_row(system: str, speed: Throughput, acc: PeerAccuracy) -> Row:
    return Row(
        system,
        speed,
        _rank1(acc.rank1_correct, acc.probes),
        f"{acc.false_accepts} of {acc.open_set_trials}",
        f"{acc.background_accepts} of {acc.background_faces}",
        len(acc.missing_labels),
    )


def smartgate_row(system: str, speed: Throughput, acc: AccuracyReport) -> Row:
    return Row(
        system,
        speed,
        _rank1(acc.rank1_correct, acc.probes),
        f"{len(acc.false_accepts)} of {acc.open_set_trials}",
        f"{len(acc.background_accepts)} of {acc.background_faces}",
        len(acc.missing_labels),
    )


def _rank1(correct: int, probes: int) -> str:
    return f"{correct}/{probes} = {100 * correct / probes:.1f} %" if probes else "—"


def table(rows: list[Row]) -> str:
    """The Markdown comparison table."""
    lines = [
        "| system | frames/s | faces found per frame | rank-1 | open-set false accepts "
        "| background false accepts | labelled faces not found |",
        "|---|---:|---|---|---|---|---:|",
    ]
    for r in rows:
        faces = ", ".join(f"{v}× {k}" for k, v in sorted(r.speed.faces.items()))
        lines.append(
            f"| {r.system} | {r.speed.fps:.2f} | {faces} | {r.rank1} | {r.open_set} "
            f"| {r.background} | {r.not_found} |"
        )
    return "\n".join(lines)


def _timed(what: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, its wall time logged on stderr (progress, not results)."""
    start = time.perf_counter()
    result = fn()
    print(f"  {what}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return result


def _fastest(runs: list[Throughput]) -> Throughput:
    return max(runs, key=lambda t: t.fps)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.face_accuracy import evaluate
    from cluster.engine import match_threshold
    from recognizer.faces.factory import build_face_analyzer
    from smartgate.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="distinct frames (default 16)")
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="peer best: worker processes"
    )
    parser.add_argument("--threads", type=int, default=2, help="smartgate: worker threads")
    parser.add_argument(
        "--min-frames", type=int, default=200, help="smartgate: frames timed (frames repeated)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternate peer best and smartgate; keep the best"
    )
    parser.add_argument("--config", type=Path, help="smartgate config file (default: defaults)")
    args = parser.parse_args(argv)
    if min(args.frames, args.processes, args.threads, args.rounds) < 1:
        parser.error("--frames, --processes, --threads and --rounds must be >= 1")
    try:
        import_peer()
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 2

    root = data_dir()
    frames = build_frames(root, args.frames)
    config = load_config(args.config)
    long_side = config.detect.long_side
    load_before = os.getloadavg()[0]
    default = _timed("peer defaults", lambda: peer_in_process(frames, 1, "peer defaults"))
    analyzer = _timed("smartgate models", lambda: build_face_analyzer(config))
    best_runs, our_runs = [], []
    for _ in range(args.rounds):  # alternate, so that both sides see the same machine load
        best_runs.append(
            _timed("peer best", lambda: peer_pool(frames, 0, args.processes, "peer best"))
        )
        our_runs.append(
            _timed(
                "smartgate",
                lambda: smartgate_threads(
                    analyzer, long_side, frames, args.threads, args.min_frames, "smartgate"
                ),
            )
        )
    best, ours = _fastest(best_runs), _fastest(our_runs)
    peer_default_acc = _timed("peer accuracy (defaults)", lambda: peer_accuracy(root, 1))
    peer_best_acc = _timed("peer accuracy (upsample 0)", lambda: peer_accuracy(root, 0))
    threshold = match_threshold(config, analyzer)
    margin = config.match.margin
    our_acc = _timed("smartgate accuracy", lambda: evaluate(analyzer, threshold, margin, root))
    load_after = os.getloadavg()[0]

    rows = [
        peer_row(
            "face_recognition defaults (HOG, upsample 1, 1 process)", default, peer_default_acc
        ),
        peer_row(
            f"face_recognition best (HOG, upsample 0, {args.processes} processes)",
            best,
            peer_best_acc,
        ),
        smartgate_row(f"smartgate ({args.threads} threads, 1 process)", ours, our_acc),
    ]
    versions = ", ".join(f"{k} {v}" for k, v in peer_versions().items())
    print(f"## smartgate vs face_recognition ({versions})\n")
    print(
        f"{len(frames)} one-face {FRAME_SIZE[0]}x{FRAME_SIZE[1]} JPEG frames, decoded inside the "
        f"timing; peer best and smartgate: fastest of {args.rounds} alternating rounds, "
        f"smartgate over {ours.frames} frames (the set repeated). Accuracy on the shared "
        f"photos: peer, nearest encoding at distance <= {PEER_TOLERANCE}; smartgate, cosine "
        f">= {threshold:.3f} with margin {margin:.3f}. Load average {load_before:.1f} before, "
        f"{load_after:.1f} after, on {os.cpu_count()} cores.\n"
    )
    print(table(rows))
    print(
        f"\nthroughput: smartgate / peer best = {ours.fps / best.fps:.1f}x "
        f"(goal >= 10x); smartgate / peer defaults = {ours.fps / default.fps:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
