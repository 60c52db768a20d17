"""Micro-benchmark: each Cython kernel in ``native/`` against its numpy reference.

Run ``python -m benchmarks.native_kernels`` (or ``make bench-native``). Inputs are
realistic: RetinaFace at 640x360 and 1280x720 and the plate detector at 640x640 with
~0.1 % of priors above threshold in a few overlapping clusters, identity matching at
q=1, k=10 and q=64, k=50, PP-OCRv4 plate CTC at t=40, c=6625 for n=1 and n=8, track
votes, and the uint8 → float32 NCHW preprocessing of the four model inputs. Both
sides get the same already-normalised arrays, so the table shows the kernel, not the
validation in ``native``'s public functions (except the ``to_blob`` rows, which time the
public call on each backend). Times are per call, from
``time.perf_counter_ns``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

import native
from native import reference
from recognizer.preprocess import to_blob


@dataclass(frozen=True)
class Case:
    kernel: str
    case: str
    ref: Callable[[], object]
    cy: Callable[[], object]


def _time_us(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and p90 wall time of ``fn()`` in microseconds over ``repeats`` calls."""
    for _ in range(min(10, repeats)):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e3)
    deciles = statistics.quantiles(samples, n=10)
    return statistics.median(samples), deciles[-1]


def _detector_head(
    rng: np.random.Generator, priors: np.ndarray, n_points: int, n_objects: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head outputs where ~0.1 % of priors (a few neighbours per object) pass 0.8."""
    p = priors.shape[0]
    scores = np.asarray(rng.beta(0.5, 20.0, size=p), dtype=np.float32)  # background: mostly < 0.1
    loc = rng.normal(0.0, 0.5, size=(p, 4)).astype(np.float32)
    points = rng.normal(0.0, 1.0, size=(p, 2 * n_points)).astype(np.float32)
    target = max(1, p // 1000)
    centres = rng.choice(p, size=n_objects, replace=False)
    hot = np.unique(np.clip(centres[:, None] + np.arange(-4, 5) * 2, 0, p - 1).ravel())
    hot = rng.choice(hot, size=min(target, hot.size), replace=False)
    scores[hot] = rng.uniform(0.8, 1.0, size=hot.size).astype(np.float32)
    return loc, scores, points


def _cases(rng: np.random.Generator) -> list[Case]:
    cy = native._load_backend("cython")
    cases = []
    for label, height, width, sizes, n_points, thr in (
        ("face 640x360", 360, 640, native.RETINAFACE_MIN_SIZES, 5, 0.8),
        ("face 1280x720", 720, 1280, native.RETINAFACE_MIN_SIZES, 5, 0.8),
        ("plate 640x640", 640, 640, native.PLATE_MIN_SIZES, 4, 0.7),
    ):
        priors = native.prior_boxes(height, width, min_sizes=sizes)
        loc, scores, points = _detector_head(rng, priors, n_points, n_objects=3)
        args = (loc, scores, points, priors)
        above = int((scores >= thr).sum())
        cases.append(
            Case(
                "decode_detections",
                f"{label} p={priors.shape[0]} ({above} >= {thr})",
                partial(reference.decode_detections_ref, *args, score_threshold=thr, nms_iou=0.4),
                partial(cy.decode_detections, *args, score_threshold=thr, nms_iou=0.4),
            )
        )
    for q, k in ((1, 10), (64, 50)):
        sims = rng.uniform(-0.2, 0.9, size=(q, k)).astype(np.float32)
        keys = rng.integers(0, max(2, k // 3), size=(q, k)).astype(np.int64)
        keys[:, -2:] = -1  # a few empty slots, as FAISS returns when a shard is small
        cases.append(
            Case(
                "match_identities",
                f"q={q} k={k}",
                partial(reference.match_identities_ref, sims, keys, 0.5, 0.05),
                partial(cy.match_identities, sims, keys, 0.5, 0.05),
            )
        )
    for n in (1, 8):
        logits = rng.normal(0.0, 1.0, size=(n, 40, 6625)).astype(np.float32)
        logits[..., 0] += 6.0  # blank dominates most steps, as in a real plate
        logits[:, ::5, :] += rng.normal(0.0, 8.0, size=(n, 8, 6625)).astype(np.float32)
        probs = np.exp(logits - logits.max(axis=2, keepdims=True))
        probs = (probs / probs.sum(axis=2, keepdims=True)).astype(np.float32)
        cases.append(
            Case(
                "ctc_greedy_decode",
                f"n={n} t=40 c=6625",
                partial(reference.ctc_greedy_decode_ref, probs, 0),
                partial(cy.ctc_greedy_decode, probs, 0),
            )
        )
    cases.extend(_vote_cases(rng, cy))
    cases.extend(_preprocess_cases(rng, cy))
    return cases


# --- vote_and_best (cluster.tracking) ---------------------------------------------------------


def _vote_cases(rng: np.random.Generator, cy: native._Backend) -> list[Case]:
    """A track's vote and best shot, as ``GateTracker`` calls it once per observation.

    n=30: a 3 s passage at 10 fps; n=750: a track at its 30 s age limit at 25 fps. One
    resident with a few unmatched and unusable frames; window 3, votes 2.
    """
    cases = []
    for n in (30, 750):
        keys = rng.choice(np.array([0, -1, -2], np.int64), size=n, p=[0.8, 0.1, 0.1])
        actions = np.where(keys == 0, 2, np.where(keys == -1, 4, 1)).astype(np.int8)
        quality = rng.uniform(0.2, 1.0, n).astype(np.float32)
        size = rng.uniform(40.0, 200.0, n).astype(np.float32)
        det = rng.uniform(0.5, 1.0, n).astype(np.float32)
        args = (keys, actions, quality, size, det, 2, 3)
        cases.append(
            Case(
                "vote_and_best",
                f"n={n} window=3",
                partial(reference.vote_and_best_ref, *args),
                partial(cy.vote_and_best, *args),
            )
        )
    return cases


# --- hwc_to_nchw (recognizer.preprocess.to_blob) ----------------------------------------------


def _preprocess_cases(rng: np.random.Generator, cy: native._Backend) -> list[Case]:
    """uint8 BGR crops → normalised float32 NCHW, with each model's own mean and std.

    RetinaFace input at 640x360 (std 1: the reference skips its multiply), a batch of 8
    112x112 embedding crops, one 128x128 liveness crop, 8 plate lines at 48x320. The
    ``hwc_to_nchw`` rows give both sides normalised arrays and a fresh ``out`` per call (as
    ``to_blob`` allocates); the ``to_blob`` rows time the public call as the models make
    it, validation included, on the reference backend (the old ``to_blob``) and on Cython.
    """
    reference_backend = native._load_backend("reference")
    cases = []
    for label, n, h, w, mean, std in (
        ("retinaface 1x640x360", 1, 360, 640, (104.0, 117.0, 127.0), (1.0, 1.0, 1.0)),
        ("embedding 8x112x112", 8, 112, 112, (127.5,) * 3, (128.0,) * 3),
        ("liveness 1x128x128", 1, 128, 128, (0.0,) * 3, (1.0,) * 3),
        ("plate lines 8x48x320", 8, 48, 320, (127.5,) * 3, (127.5,) * 3),
    ):
        images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        cases.append(
            Case(
                "hwc_to_nchw",
                label,
                partial(_kernel_call, reference.hwc_to_nchw_ref, images, mean, std),
                partial(_kernel_call, cy.hwc_to_nchw, images, mean, std),
            )
        )
        cases.append(
            Case(
                "to_blob",
                label,
                partial(_with_backend, reference_backend, to_blob, images, mean, std),
                partial(_with_backend, cy, to_blob, images, mean, std),
            )
        )
    return cases


def _kernel_call(
    fn: Callable[..., np.ndarray], images: np.ndarray, mean: tuple, std: tuple
) -> np.ndarray:
    """One kernel call on normalised arrays, into a fresh ``out`` (as ``to_blob`` makes)."""
    n, h, w, _ = images.shape
    out = np.empty((n, 3, h, w), np.float32)
    return fn(images, np.array(mean), np.array(std), False, out)


def _with_backend(backend: native._Backend, fn: Callable[..., object], *args: object) -> object:
    """``fn(*args)`` with ``native`` dispatching to ``backend`` for the call."""
    saved, native._backend = native._backend, backend
    try:
        return fn(*args)
    finally:
        native._backend = saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per side")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    header = (
        f"{'kernel':<18} {'case':<40} {'ref med µs':>11} {'ref p90':>9} "
        f"{'cy med µs':>10} {'cy p90':>8} {'speed-up':>9}"
    )
    print(header)
    print("-" * len(header))
    for case in _cases(rng):
        ref_med, ref_p90 = _time_us(case.ref, args.repeats)
        cy_med, cy_p90 = _time_us(case.cy, args.repeats)
        speedup = ref_med / cy_med if cy_med > 0 else float("inf")
        flag = "" if speedup >= 1.2 else "  (< 1.2x: buys nothing)"
        print(
            f"{case.kernel:<18} {case.case:<40} {ref_med:>11.1f} {ref_p90:>9.1f} "
            f"{cy_med:>10.1f} {cy_p90:>8.1f} {speedup:>8.1f}x{flag}"
        )


if __name__ == "__main__":
    main()
