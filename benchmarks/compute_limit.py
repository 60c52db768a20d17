"""Compute limit: the best one-face frame throughput of the models alone on this machine.

A *frame* is what the service must at least do for a one-face 1920×1080 frame: RetinaFace on
the frame scaled to 640×360 plus one ``fr_feature`` embedding (no decoding, alignment,
liveness, matching or gRPC). Several settings are measured for a few seconds each: one session
with one or two intra-op threads (spinning off and on), two single-thread sessions working in
parallel (two threads, each with its own detector and embedder session), and batches of
frames. The best is the ceiling the service is measured against (``smartgate bench
--ceiling``).

Run: ``smartgate bench --limit`` or ``python -m benchmarks.compute_limit [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.datasets import data_dir
from benchmarks.gates import machine_busy_s, process_cpu_s
from recognizer.backends.base import BackendOptions
from recognizer.backends.onnxrt import OnnxRuntimeBackend
from recognizer.models.store import LoadedModel, ModelStore
from recognizer.preprocess import to_blob
from smartgate.config import ModelsConfig

DETECTOR = ModelsConfig.detector  # the service's defaults
EMBEDDER = ModelsConfig.embedder
FRAME = "examples_obama-1080p.jpg"
DETECT_SIZE = (640, 360)  # the detector's input for a 1920×1080 frame (long side 640)


@dataclass(frozen=True)
class Setting:
    label: str
    sessions: int  # parallel workers, each with its own detector and embedder session
    threads: int  # intra-op threads per session
    batch: int = 1  # frames per model call
    spinning: bool = False


SETTINGS = (
    Setting("1 session, 1 thread", 1, 1),
    Setting("1 session, 2 threads", 1, 2),
    Setting("1 session, 2 threads, spinning", 1, 2, spinning=True),
    Setting("2 sessions × 1 thread, in parallel", 2, 1),
    Setting("2 sessions × 1 thread, batch 4", 2, 1, batch=4),
    Setting("2 sessions × 1 thread, batch 8", 2, 1, batch=8),
    Setting("1 session, 2 threads, batch 4", 1, 2, batch=4),
)


@dataclass(frozen=True)
class Result:
    setting: Setting
    frames: int
    seconds: float
    # CPU cores other processes used meanwhile (this machine may be shared); None: unknown.
    other_cores: float | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def inputs(batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Real pixels: the 1080p one-face frame at 640×360 and a 112×112 crop of its face."""
    image = cv2.imread(str(data_dir() / "faces" / FRAME), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read {FRAME}")
    small = cv2.resize(image, DETECT_SIZE, interpolation=cv2.INTER_LINEAR)
    h, w = image.shape[:2]
    face = image[h // 8 : h // 8 + h // 2, w // 2 - h // 4 : w // 2 + h // 4]
    crop = cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA)
    return np.repeat(small[None], batch, axis=0), np.repeat(crop[None], batch, axis=0)


def _feeds(model: LoadedModel, images: np.ndarray) -> dict[str, np.ndarray]:
    m = model.manifest.input
    return {m.name: to_blob(images, m.mean, m.std, swap_rb=m.color_order == "RGB")}


def measure(models: tuple[LoadedModel, LoadedModel], setting: Setting, seconds: float) -> Result:
    """Run ``setting`` for ``seconds`` after a short warm-up; frames counted over all workers."""
    det_model, emb_model = models
    options = BackendOptions(intra_op_threads=setting.threads, allow_spinning=setting.spinning)
    frames, crops = inputs(setting.batch)
    det_feeds, emb_feeds = _feeds(det_model, frames), _feeds(emb_model, crops)
    workers = [
        (OnnxRuntimeBackend(det_model, options), OnnxRuntimeBackend(emb_model, options))
        for _ in range(setting.sessions)
    ]
    for det, emb in workers:
        det.warm_up(det_feeds, runs=3)
        emb.warm_up(emb_feeds, runs=3)
    barrier = threading.Barrier(len(workers))
    counts = [0] * len(workers)
    elapsed = [0.0] * len(workers)

    def work(k: int) -> None:
        det, emb = workers[k]
        barrier.wait()
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            det.run(det_feeds)
            emb.run(emb_feeds)
            n += setting.batch
        counts[k] = n
        elapsed[k] = time.perf_counter() - start

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(workers))]
    own0, busy0, t0 = process_cpu_s(os.getpid()), machine_busy_s(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    own1, busy1, wall = process_cpu_s(os.getpid()), machine_busy_s(), time.perf_counter() - t0
    other = None
    if own0 is not None and own1 is not None and busy0 is not None and busy1 is not None:
        other = max(0.0, ((busy1 - busy0) - (own1 - own0)) / wall)
    for det, emb in workers:
        det.close()
        emb.close()
    return Result(setting, sum(counts), max(elapsed), other)


def per_call_ms(model: LoadedModel, images: np.ndarray, threads: int, seconds: float) -> float:
    """Mean ms of one batch-1 call of ``model`` with ``threads`` intra-op threads."""
    backend = OnnxRuntimeBackend(model, BackendOptions(intra_op_threads=threads))
    feeds = _feeds(model, images)
    backend.warm_up(feeds, runs=3)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        backend.run(feeds)
        n += 1
    ms = (time.perf_counter() - start) * 1e3 / n
    backend.close()
    return ms


def run(
    models_dir: Path | None = None,
    seconds: float = 3.0,
    settings: Sequence[Setting] = SETTINGS,
    progress: bool = True,
    detector: str = DETECTOR,
    embedder: str = EMBEDDER,
) -> dict[str, Any]:
    store = ModelStore(models_dir or ModelsConfig().cache_dir)
    det_model, emb_model = store.load(detector), store.load(embedder)
    frames, crops = inputs(1)
    calls = []
    for model, images in ((det_model, frames), (emb_model, crops)):
        for threads in (1, 2):
            ms = per_call_ms(model, images, threads, min(1.0, seconds))
            calls.append({"model": model.name, "threads": threads, "ms": round(ms, 2)})
    results = []
    for s in settings:
        r = measure((det_model, emb_model), s, seconds)
        results.append(r)
        if progress:
            print(f"  {s.label}: {r.fps:.1f} frames/s", file=sys.stderr, flush=True)
    best = max(results, key=lambda r: r.fps)
    return {
        "frame": f"{FRAME}: detector at {DETECT_SIZE[0]}×{DETECT_SIZE[1]} + one embedding",
        "cpus": os.cpu_count(),
        "seconds_per_setting": seconds,
        "per_call": calls,
        "settings": [
            {
                **asdict(r.setting),
                "frames": r.frames,
                "seconds": round(r.seconds, 3),
                "fps": round(r.fps, 1),
                "ms_per_frame": round(1e3 / r.fps, 2) if r.fps else None,
                "other_processes_cores": None if r.other_cores is None else round(r.other_cores, 2),
            }
            for r in results
        ],
        "best": {"label": best.setting.label, "fps": round(best.fps, 1)},
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"## Compute limit — {report['frame']}, {report['cpus']} cores, "
        f"{report['seconds_per_setting']:g} s per setting",
        "",
        "| setting | sessions × threads | batch | frames/s | ms per frame | other processes "
        "(cores) |",
        "|---|---|---|---|---|---|",
    ]
    for s in report["settings"]:
        lines.append(
            f"| {s['label']} | {s['sessions']} × {s['threads']} | {s['batch']} | {s['fps']:.1f} "
            f"| {s['ms_per_frame']} | {s['other_processes_cores']} |"
        )
    lines += [
        "",
        "per call at batch 1 (ms):",
        "",
        "| model | 1 thread | 2 threads |",
        "|---|---|---|",
    ]
    by_model: dict[str, dict[int, float]] = {}
    for c in report["per_call"]:
        by_model.setdefault(c["model"], {})[c["threads"]] = c["ms"]
    for model, v in by_model.items():
        lines.append(f"| {model} | {v.get(1, float('nan')):.2f} | {v.get(2, float('nan')):.2f} |")
    best = report["best"]
    lines += ["", f"**ceiling: {best['fps']:.1f} one-face frames/s** ({best['label']})"]
    busy = [s["other_processes_cores"] or 0.0 for s in report["settings"]]
    if max(busy, default=0.0) > 0.2:
        lines += [
            "",
            f"warning: other processes used up to {max(busy):.1f} cores while measuring; "
            "the ceiling is understated (run it on a quiet machine)",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models-dir", type=Path, help="model cache (default: user cache)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per setting")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--detector", default=DETECTOR, help=f"model name (default {DETECTOR})")
    parser.add_argument("--embedder", default=EMBEDDER, help=f"model name (default {EMBEDDER})")
    args = parser.parse_args(argv)
    report = run(args.models_dir, args.seconds, detector=args.detector, embedder=args.embedder)
    text = markdown(report)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
