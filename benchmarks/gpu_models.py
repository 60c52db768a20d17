"""GPU throughput of the face models: RetinaFace-mnet0.25 and fr-feature in PyTorch (onnx2torch).

``benchmarks.capacity`` needs the one-face frames/s a GPU gives. This measures it for the
service's fp32 face models (``retinaface-mnet025`` on a 1080p frame scaled to 640×360, one
``fr-feature`` embedding of a 112×112 crop), converted from their ONNX files to PyTorch with
``onnx2torch``: eager and CUDA-graph replays, fp32 (no TF32), TF32 and fp16 (``.half()``), NCHW
and channels-last, batches 1 to 256 and doubling while images/s still gains. Each model is
first folded to static shapes per batch by onnxruntime's basic graph optimisation (constant
shapes, no ``Identity`` weights), which is what makes it convertible and capturable; its integer
shape constants stay on the CPU so no call waits on the GPU. Before timing, the torch outputs
are compared with onnxruntime's on real photos (relative error of the detector's outputs, shift
of the top face box, cosine of the embeddings). Timings are CUDA events around each call after
a warm-up, median of the repeats, inputs rotated among three random batches in the models'
input range. ``--compile`` then tries ``torch.compile`` of each model at its best fp16 batch.

The combined figure is ``1000 / (det_ms_per_image + emb_ms_per_image)`` one-face frames/s with
each model at its best batch. It is PyTorch's, not Triton's or TensorRT's: those fuse layers
and pick their own kernels, so they would give other figures.

Run on a GPU machine (torch, onnx, onnx2torch, onnxruntime and opencv installed)::

    python -m benchmarks.gpu_models --models DIR --photos DIR --json out.json --markdown out.md

``DIR`` holds ``<name>/manifest.json`` and the ONNX file it names (as
``~/.cache/smartgate/models`` does). ``--device cpu --quick`` is a smoke test on the CPU.
This module imports numpy only; torch, onnx, onnxruntime and cv2 are imported where used.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DETECTOR = "retinaface-mnet025"
EMBEDDER = "fr-feature"
DET_SIZE = (360, 640)  # (height, width): a 1920×1080 frame scaled to a 640 long side
EMB_SIZE = (112, 112)
BASE_BATCHES = (1, 8, 32, 64, 128, 256)  # images/s is not monotone: 128 → 256 gained 20 %
MIN_GAIN = 0.05  # keep doubling the batch while images/s gains at least this share
PRECISIONS = ("fp16", "tf32", "fp32")
MODES = ("graph-cl", "graph", "eager")
# (precision, mode) in the order they are measured: a run out of time drops the last ones.
VARIANTS = (
    "fp16:graph-cl",
    "fp16:graph",
    "fp16:eager",
    "tf32:graph-cl",
    "tf32:graph",
    "fp32:graph",
    "tf32:eager",
    "fp32:eager",
)
DEFAULT_PHOTOS = Path("/work/shared/data/faces")
PHOTOS = (
    "examples_obama-480p.jpg",
    "examples_knn_examples_train_rose_leslie_img1.jpg",
    "examples_knn_examples_train_kit_harington_john2.jpeg",
)


@dataclass(frozen=True)
class Timing:
    """Median time of one model call on a batch, in one precision and mode."""

    model: str
    precision: str
    mode: str
    batch: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int

    @property
    def ms_per_image(self) -> float:
        return self.median_ms / self.batch

    @property
    def images_per_s(self) -> float:
        return images_per_s(self.median_ms, self.batch)


@dataclass
class Result:
    """Everything one run measured; written as JSON and Markdown."""

    env: dict[str, Any] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    timings: list[Timing] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# --- pure helpers -------------------------------------------------------------------------


def images_per_s(median_ms: float, batch: int) -> float:
    """Images per second of a call that takes ``median_ms`` for ``batch`` images."""
    if median_ms <= 0 or batch <= 0:
        raise ValueError(f"need a positive time and batch, got {median_ms} ms, batch {batch}")
    return 1000.0 * batch / median_ms


def one_face_frames_per_s(det_ms_per_image: float, emb_ms_per_image: float) -> float:
    """One-face frames/s when each frame costs one detection and one embedding."""
    total = det_ms_per_image + emb_ms_per_image
    if total <= 0:
        raise ValueError(f"need a positive time per frame, got {total} ms")
    return 1000.0 / total


def summary_stats(samples_ms: Sequence[float]) -> tuple[float, float, float]:
    """``(median, p10, p90)`` of the timed calls (ms)."""
    if not samples_ms:
        raise ValueError("no timed calls")
    ordered = sorted(samples_ms)
    last = len(ordered) - 1
    return (
        statistics.median(ordered),
        ordered[round(0.1 * last)],
        ordered[round(0.9 * last)],
    )


def keeps_gaining(previous: float, current: float, min_gain: float = MIN_GAIN) -> bool:
    """Whether images/s rose by at least ``min_gain`` (a share) from one batch to the next."""
    return current >= previous * (1.0 + min_gain)


def best_timing(
    timings: Sequence[Timing], model: str, precision: str | None = None, mode: str | None = None
) -> Timing | None:
    """The timing of ``model`` with the most images/s (optionally of one precision/mode)."""
    rows = [
        t
        for t in timings
        if t.model == model
        and (precision is None or t.precision == precision)
        and (mode is None or t.mode == mode)
    ]
    return max(rows, key=lambda t: t.images_per_s, default=None)


def combined_rows(timings: Sequence[Timing]) -> list[dict[str, Any]]:
    """Per (precision, mode): each model's best batch and the one-face frames/s they give."""
    rows: list[dict[str, Any]] = []
    keys = sorted({(t.precision, t.mode) for t in timings})
    for precision, mode in keys:
        det = best_timing(timings, DETECTOR, precision, mode)
        emb = best_timing(timings, EMBEDDER, precision, mode)
        if det is None or emb is None:
            continue
        rows.append(
            {
                "precision": precision,
                "mode": mode,
                "det_batch": det.batch,
                "det_ms_per_image": det.ms_per_image,
                "emb_batch": emb.batch,
                "emb_ms_per_image": emb.ms_per_image,
                "frames_per_s": one_face_frames_per_s(det.ms_per_image, emb.ms_per_image),
            }
        )
    rows.sort(key=lambda r: -float(r["frames_per_s"]))
    return rows


def best_combined(timings: Sequence[Timing]) -> dict[str, Any] | None:
    """The (precision, mode) with the most one-face frames/s, each model at its best batch."""
    rows = combined_rows(timings)
    return rows[0] if rows else None


def timing_table(timings: Sequence[Timing]) -> list[str]:
    """Markdown rows: one per model, precision and mode; one column per batch."""
    batches = sorted({t.batch for t in timings})
    head = "| model | precision | mode | " + " | ".join(f"b{b}" for b in batches) + " |"
    lines = [head, "|---|---|---|" + "---|" * len(batches)]
    cells: dict[tuple[str, str, str], dict[int, Timing]] = {}
    for t in timings:
        cells.setdefault((t.model, t.precision, t.mode), {})[t.batch] = t
    for (model, precision, mode), by_batch in sorted(cells.items()):
        best = max(by_batch.values(), key=lambda t: t.images_per_s)
        row = []
        for b in batches:
            got = by_batch.get(b)
            cell = "" if got is None else f"{got.median_ms:.3g} ms / {got.images_per_s:,.0f}"
            row.append(f"**{cell}**" if got is best else cell)
        lines.append(f"| {model} | {precision} | {mode} | " + " | ".join(row) + " |")
    return lines


def markdown(result: Result) -> str:
    """The run as Markdown: environment, output check, timings, combined frames/s."""
    env = result.env
    lines = [
        "## Face models on the GPU (PyTorch via onnx2torch)",
        "",
        f"- device: {env.get('device_name', '?')}; torch {env.get('torch', '?')} "
        f"(CUDA {env.get('cuda', '-')}, cuDNN {env.get('cudnn', '-')}), onnx2torch "
        f"{env.get('onnx2torch', '?')}, onnxruntime {env.get('onnxruntime', '?')}",
        f"- detector {DETECTOR} 3×{DET_SIZE[0]}×{DET_SIZE[1]}, embedder {EMBEDDER} "
        f"3×{EMB_SIZE[0]}×{EMB_SIZE[1]}; cells: median ms per call / images per s "
        "(bold: the best batch of the row)",
    ]
    if result.flops:
        lines.append(
            "- work per image: "
            + ", ".join(f"{k} {v / 1e9:.3f} GFLOP" for k, v in result.flops.items())
        )
    lines += ["", *timing_table(result.timings), ""]
    rows = combined_rows(result.timings)
    if rows:
        lines += [
            "| precision | mode | detector ms/image (batch) | embedder ms/image (batch) "
            "| one-face frames/s |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['precision']} | {r['mode']} | {r['det_ms_per_image']:.4f} "
                f"({r['det_batch']}) | {r['emb_ms_per_image']:.4f} ({r['emb_batch']}) | "
                f"**{r['frames_per_s']:,.0f}** |"
            )
        lines.append("")
    if result.check:
        lines.append("Output check against onnxruntime (CPU, fp32) on real photos:")
        for name, value in result.check.items():
            lines.append(f"- {name}: {value}")
        lines.append("")
    for name, value in result.extra.items():
        lines.append(f"- {name}: {value}")
    for failure in result.failures:
        lines.append(f"- failed: {failure}")
    return "\n".join(lines) + "\n"


def parse_variant(text: str) -> tuple[str, str]:
    """``"fp16:graph-cl"`` → ``("fp16", "graph-cl")``, checked against the known ones."""
    precision, _, mode = text.partition(":")
    if precision not in PRECISIONS or mode not in MODES:
        raise ValueError(f"variant {text!r}: want precision:mode of {PRECISIONS} and {MODES}")
    return precision, mode


def batch_plan(base: Sequence[int], max_batch: int) -> list[int]:
    """The batches always measured (``base``, capped at ``max_batch``)."""
    return [b for b in base if b <= max_batch]


def retinaface_priors(height: int, width: int, extra: dict[str, Any]) -> np.ndarray:
    """RetinaFace anchors ``(P, 4)`` as ``[cx, cy, w, h]`` relative to the input size."""
    rows = []
    for step, sizes in zip(extra["steps"], extra["min_sizes"], strict=True):
        fh, fw = -(-height // step), -(-width // step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        centres = np.stack([(xs + 0.5) * step / width, (ys + 0.5) * step / height], axis=-1)
        for_cell = [
            np.concatenate(
                [centres, np.broadcast_to([s / width, s / height], (*centres.shape[:2], 2))],
                axis=-1,
            )
            for s in sizes
        ]
        rows.append(np.stack(for_cell, axis=2).reshape(-1, 4))
    return np.concatenate(rows).astype(np.float32)


def top_face_box(
    loc: np.ndarray, conf: np.ndarray, priors: np.ndarray, variances: Sequence[float]
) -> tuple[np.ndarray, float]:
    """The best-scoring face of one image: box ``(4,)`` as relative ``[x1, y1, x2, y2]``.

    ``loc`` is ``(P, 4)``, ``conf`` ``(P, 2)`` (column 1 is "face"), ``priors`` ``(P, 4)``.
    """
    if loc.shape != priors.shape:
        raise ValueError(f"loc {loc.shape} does not match the priors {priors.shape}")
    i = int(np.argmax(conf[:, 1]))
    p, d = priors[i], loc[i]
    cx, cy = p[:2] + d[:2] * variances[0] * p[2:]
    w, h = p[2:] * np.exp(d[2:] * variances[1])
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), float(conf[i, 1])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two ``(n, d)`` arrays."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.asarray(
        (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    )


# --- models -------------------------------------------------------------------------------


def model_file(models_dir: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """The ONNX file of model ``name`` and its manifest (``DIR/<name>/manifest.json``)."""
    manifest = json.loads((models_dir / name / "manifest.json").read_text())
    return models_dir / name / manifest["file"], manifest


def static_onnx(path: Path, batch: int, height: int, width: int) -> Any:
    """The model folded to a fixed input shape by onnxruntime's basic optimisation.

    Constant shapes become initializers and ``Identity`` weights disappear, so onnx2torch can
    convert the graph and the torch module never reads a shape back from the GPU.
    """
    import onnx

    return onnx.load_from_string(_static_onnx_bytes(path, batch, height, width))


@functools.lru_cache(maxsize=64)
def _static_onnx_bytes(path: Path, batch: int, height: int, width: int) -> bytes:
    import tempfile

    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    for dim, value in zip(dims, (batch, 3, height, width), strict=True):
        if dim.dim_param:
            opts.add_free_dimension_override_by_name(dim.dim_param, value)
        elif dim.dim_value != value:
            raise ValueError(f"{path}: input dimension {dim.dim_value} is fixed, not {value}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "static.onnx"
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        folded = onnx.load(str(out))
    used = {n.domain for n in folded.graph.node}
    keep = [o for o in folded.opset_import if o.domain in used or o.domain in ("", "ai.onnx")]
    del folded.opset_import[:]
    folded.opset_import.extend(keep)
    return bytes(folded.SerializeToString())


def to_torch(onnx_model: Any, device: str, precision: str, channels_last: bool) -> Any:
    """onnx2torch module in eval mode on ``device``; integer shape constants stay on the CPU."""
    import torch
    from onnx2torch import convert

    module = convert(onnx_model).eval()
    if precision == "fp16":
        module = module.half()
    module = module.to(device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    for owner in module.modules():
        for name, buf in list(owner.named_buffers(recurse=False)):
            if not buf.is_floating_point():
                owner.register_buffer(name, buf.cpu())
    return module


def set_precision(precision: str) -> None:
    """TF32 on for ``tf32`` and ``fp16`` (torch's default), off for strict ``fp32``."""
    import torch

    tf32 = precision != "fp32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def random_inputs(
    name: str, batch: int, device: str, precision: str, channels_last: bool, count: int = 3
) -> list[Any]:
    """``count`` batches ``(batch, 3, H, W)`` of uniform pixels, normalised as the model wants."""
    import torch

    height, width = DET_SIZE if name == DETECTOR else EMB_SIZE
    gen = torch.Generator(device=device).manual_seed(batch)
    out = []
    for _ in range(count):
        pixels = torch.rand((batch, 3, height, width), generator=gen, device=device) * 255.0
        x = pixels - 117.0 if name == DETECTOR else (pixels - 127.5) / 128.0
        x = x.to(dtype=torch.float16 if precision == "fp16" else torch.float32)
        out.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return out


def graph_runner(module: Any, example: Any) -> Callable[[Any], Any]:
    """A function that copies its input into a captured CUDA graph of ``module`` and replays it."""
    import torch

    static_in = example.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            module(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = module(static_in)

    def run(x: Any) -> Any:
        static_in.copy_(x)
        graph.replay()
        return static_out

    return run


def time_calls(
    fn: Callable[[Any], Any], inputs: Sequence[Any], device: str, warmup: int, repeats: int
) -> list[float]:
    """Milliseconds of each of ``repeats`` calls after ``warmup`` calls (CUDA events on GPU)."""
    import torch

    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    samples = []
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(repeats):
        x = inputs[i % len(inputs)]
        if cuda:
            start.record()
            fn(x)
            end.record()
            end.synchronize()
            samples.append(float(start.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            fn(x)
            samples.append(1000.0 * (time.perf_counter() - t0))
    return samples


def measure(
    paths: dict[str, Path],
    name: str,
    batch: int,
    precision: str,
    mode: str,
    args: argparse.Namespace,
) -> Timing:
    """Convert ``name`` at ``batch`` and time it in ``precision`` and ``mode``."""
    import torch

    height, width = DET_SIZE if name == DETECTOR else EMB_SIZE
    channels_last = mode.endswith("-cl")
    set_precision(precision)
    with torch.inference_mode():
        module = to_torch(
            static_onnx(paths[name], batch, height, width), args.device, precision, channels_last
        )
        inputs = random_inputs(name, batch, args.device, precision, channels_last)
        fn = graph_runner(module, inputs[0]) if mode.startswith("graph") else module
        samples = time_calls(fn, inputs, args.device, args.warmup, args.repeats)
    median, p10, p90 = summary_stats(samples)
    del fn, module, inputs
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return Timing(name, precision, mode, batch, median, p10, p90, len(samples))


def sweep(
    paths: dict[str, Path], result: Result, args: argparse.Namespace, deadline: float
) -> None:
    """Each variant (precision:mode) × model over the batches, doubling while images/s gains."""
    for precision, mode in args.variants:
        for name in (DETECTOR, EMBEDDER):
            sweep_batches(paths, name, precision, mode, result, args, deadline)
            save(result, args)


def sweep_batches(
    paths: dict[str, Path],
    name: str,
    precision: str,
    mode: str,
    result: Result,
    args: argparse.Namespace,
    deadline: float,
) -> None:
    """One model, precision and mode: the base batches, then doubling while it gains."""
    batch_list = batch_plan(args.batches, args.max_batch)
    previous: float | None = None
    i = 0
    while i < len(batch_list):
        batch = batch_list[i]
        if time.monotonic() > deadline:
            result.failures.append(f"{name} {precision} {mode} b{batch}: skipped (time budget)")
            return
        try:
            t = measure(paths, name, batch, precision, mode, args)
        except Exception as exc:  # an OOM or an unsupported capture ends this row, not the run
            result.failures.append(f"{name} {precision} {mode} b{batch}: {exc!r}"[:300])
            return
        result.timings.append(t)
        print(
            f"{name:20s} {precision} {mode:8s} b{batch:<5d} {t.median_ms:9.3f} ms "
            f"{t.images_per_s:10,.0f} img/s",
            flush=True,
        )
        last = batch_list[-1]
        if (
            i == len(batch_list) - 1
            and 2 * last <= args.max_batch
            and (previous is None or keeps_gaining(previous, t.images_per_s))
        ):
            batch_list.append(2 * last)
        previous = t.images_per_s
        i += 1


# --- checks and context -------------------------------------------------------------------


def letterbox(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(H, W, 3)`` BGR uint8 scaled to fit ``(height, width)``, padded bottom/right with 0."""
    import cv2

    scale = min(height / image.shape[0], width / image.shape[1])
    h, w = round(image.shape[0] * scale), round(image.shape[1] * scale)
    out = np.zeros((height, width, 3), np.uint8)
    out[:h, :w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return out


def read_image(path: Path) -> np.ndarray:
    """A photo as ``(H, W, 3)`` BGR uint8."""
    import cv2

    image = cv2.imread(str(path))
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return np.asarray(image)


def photo_batches(
    photos: Sequence[Path], det_manifest: dict[str, Any], ort_det: Any
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Detector input ``(n, 3, 360, 640)`` of the photos and the top face crop of each
    ``(n, 3, 112, 112)`` (by onnxruntime's detection), normalised as the manifests say."""
    import cv2

    height, width = DET_SIZE
    frames = [letterbox(read_image(p), height, width) for p in photos]
    mean = np.array(det_manifest["input"]["mean"], np.float32)
    det = np.stack([(f.astype(np.float32) - mean).transpose(2, 0, 1) for f in frames])
    loc, conf, _ = ort_det.run(None, {ort_det.get_inputs()[0].name: det})
    extra = det_manifest["extra"]
    priors = retinaface_priors(height, width, extra)
    crops, scores = [], []
    for frame, lo, co in zip(frames, loc, conf, strict=True):
        box, score = top_face_box(lo, co, priors, extra["variances"])
        x1, y1, x2, y2 = (box * [width, height, width, height]).round().astype(int)
        crop = frame[max(y1, 0) : max(y2, y1 + 1), max(x1, 0) : max(x2, x1 + 1)]
        crops.append(cv2.resize(crop, EMB_SIZE[::-1], interpolation=cv2.INTER_LINEAR))
        scores.append(round(score, 4))
    emb = np.stack([(c.astype(np.float32) - 127.5) / 128.0 for c in crops]).transpose(0, 3, 1, 2)
    return det, np.ascontiguousarray(emb), scores


def check_outputs(
    paths: dict[str, Path], manifests: dict[str, Any], photos: Sequence[Path], args: Any
) -> dict[str, Any]:
    """Torch (each precision, on the device) against onnxruntime fp32 on the CPU."""
    import onnxruntime as ort
    import torch

    ort_det = ort.InferenceSession(str(paths[DETECTOR]), providers=["CPUExecutionProvider"])
    ort_emb = ort.InferenceSession(str(paths[EMBEDDER]), providers=["CPUExecutionProvider"])
    det, emb, scores = photo_batches(photos, manifests[DETECTOR], ort_det)
    ref_det = ort_det.run(None, {"input": det})
    ref_emb = np.concatenate([ort_emb.run(None, {"input": e[None]})[0] for e in emb])
    out: dict[str, Any] = {"photos": [p.name for p in photos], "top face scores": scores}
    for precision in args.precisions:
        set_precision(precision)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        with torch.inference_mode():
            d = to_torch(static_onnx(paths[DETECTOR], len(det), *DET_SIZE), args.device,
                         precision, False)  # fmt: skip
            e = to_torch(static_onnx(paths[EMBEDDER], len(emb), *EMB_SIZE), args.device,
                         precision, False)  # fmt: skip
            got_det = [
                t.float().cpu().numpy() for t in d(torch.from_numpy(det).to(args.device, dtype))
            ]
            got_emb = e(torch.from_numpy(emb).to(args.device, dtype)).float().cpu().numpy()
        diffs = {
            k: relative_error(g, r)
            for k, g, r in zip(("loc", "conf", "landmarks"), got_det, ref_det, strict=True)
        }
        box_px = top_box_shift_px(got_det, ref_det, manifests[DETECTOR]["extra"])
        cos = cosine(got_emb, ref_emb)
        out[precision] = (
            "detector ‖Δ‖/‖ref‖ "
            + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
            + f", top face box moved ≤ {box_px:.2f} px; embedding cosine min {cos.min():.6f}, "
            f"max |Δ| {float(np.abs(got_emb - ref_emb).max()):.1e} (batch of {len(emb)} crops)"
        )
    return out


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """``‖got − ref‖ / ‖ref‖`` (L2 over all elements, in float64)."""
    ref64 = ref.astype(np.float64)
    return float(np.linalg.norm(got.astype(np.float64) - ref64) / np.linalg.norm(ref64))


def top_box_shift_px(got: Sequence[np.ndarray], ref: Sequence[np.ndarray], extra: Any) -> float:
    """Largest coordinate change (pixels of 640×360) of each image's top face box.

    ``got`` and ``ref`` are the detector outputs ``(loc (n, P, 4), conf (n, P, 2), ...)``.
    """
    height, width = DET_SIZE
    priors = retinaface_priors(height, width, extra)
    scale = np.array([width, height, width, height])
    shifts = [
        np.abs(
            top_face_box(gl, gc, priors, extra["variances"])[0]
            - top_face_box(rl, rc, priors, extra["variances"])[0]
        ).max()
        for gl, gc, rl, rc in zip(got[0], got[1], ref[0], ref[1], strict=True)
    ]
    return float(max(shifts) * scale.max()) if shifts else 0.0


def count_flops(paths: dict[str, Path]) -> dict[str, float]:
    """Floating-point operations of one image through each model (torch's flop counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for name, (height, width) in ((DETECTOR, DET_SIZE), (EMBEDDER, EMB_SIZE)):
        module = to_torch(static_onnx(paths[name], 1, height, width), "cpu", "fp32", False)
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            module(torch.zeros((1, 3, height, width)))
        out[name] = float(counter.get_total_flops())
    return out


def environment(device: str) -> dict[str, Any]:
    """Versions and the device's name."""
    import onnxruntime
    import torch

    try:
        from importlib.metadata import version

        o2t = version("onnx2torch")
    except Exception:
        o2t = "?"
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx2torch": o2t,
        "python": platform.python_version(),
        "device": device,
        "device_name": platform.processor() or platform.machine(),
        "cudnn_benchmark": device.startswith("cuda"),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        env.update(
            device_name=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            sms=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
        )
    return env


def h2d_cost(args: argparse.Namespace, batch: int = 64) -> str:
    """Per frame: a pinned uint8 640×360 BGR frame copied to the GPU and normalised (fp16)."""
    import torch

    height, width = DET_SIZE
    host = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8).pin_memory()
    mean = torch.tensor([104.0, 117.0, 127.0], device=args.device).view(1, 3, 1, 1)

    def run(x: Any) -> Any:
        gpu = x.to(args.device, non_blocking=True).permute(0, 3, 1, 2)
        return (gpu.float() - mean).half()

    median, _, _ = summary_stats(time_calls(run, [host], args.device, 3, args.repeats))
    return f"{median / batch * 1000:.1f} µs per frame (batch {batch}, {median:.3f} ms a batch)"


def repeat_best(paths: dict[str, Path], result: Result, args: argparse.Namespace) -> None:
    """Time each model's best setting again: the spread between two runs of the same thing."""
    for name in (DETECTOR, EMBEDDER):
        best = best_timing(result.timings, name)
        if best is None:
            continue
        try:
            again = measure(paths, name, best.batch, best.precision, best.mode, args)
        except Exception as exc:
            result.failures.append(f"repeat of {name}: {exc!r}"[:300])
            continue
        result.extra[f"repeat {name}"] = (
            f"{best.precision} {best.mode} batch {best.batch}: {best.median_ms:.3f} ms, "
            f"again {again.median_ms:.3f} ms ({again.median_ms / best.median_ms - 1:+.1%})"
        )


def as_list(outputs: Any) -> list[Any]:
    """A module's output(s) as a list of tensors."""
    return list(outputs) if isinstance(outputs, tuple | list) else [outputs]


def compile_trial(
    paths: dict[str, Path], result: Result, args: argparse.Namespace, deadline: float
) -> None:
    """torch.compile (inductor) of each model in fp16 at its best fp16 batch, CUDA-graphed."""
    import torch

    for name in (DETECTOR, EMBEDDER):
        best = best_timing(result.timings, name, "fp16")
        if best is None or time.monotonic() > deadline - args.compile_min_s:
            result.extra[f"torch.compile {name}"] = "not tried (time budget)"
            continue
        height, width = DET_SIZE if name == DETECTOR else EMB_SIZE
        channels_last = best.mode.endswith("-cl")
        set_precision("fp16")
        try:
            with torch.inference_mode():
                module = to_torch(
                    static_onnx(paths[name], best.batch, height, width),
                    args.device,
                    "fp16",
                    channels_last,
                )
                compiled = torch.compile(module)
                inputs = random_inputs(name, best.batch, args.device, "fp16", channels_last)
                t0 = time.monotonic()
                got = compiled(inputs[0])
                compile_s = time.monotonic() - t0
                error = max(
                    relative_error(g.float().cpu().numpy(), r.float().cpu().numpy())
                    for g, r in zip(as_list(got), as_list(module(inputs[0])), strict=True)
                )
                fn = graph_runner(compiled, inputs[0])
                samples = time_calls(fn, inputs, args.device, args.warmup, args.repeats)
            median, p10, p90 = summary_stats(samples)
            t = Timing(name, "fp16", "compiled-graph", best.batch, median, p10, p90, len(samples))
            result.timings.append(t)
            result.extra[f"torch.compile {name}"] = (
                f"batch {best.batch}: {t.median_ms:.3f} ms ({t.images_per_s:,.0f} img/s) against "
                f"{best.median_ms:.3f} ms {best.mode}; compiled in {compile_s:.0f} s; "
                f"outputs ‖Δ‖/‖eager‖ ≤ {error:.1e}"
            )
        except Exception as exc:
            result.extra[f"torch.compile {name}"] = f"failed: {exc!r}"[:300]
        save(result, args)


def save(result: Result, args: argparse.Namespace) -> None:
    """Write the JSON and Markdown so far (a run cut short still leaves its numbers)."""
    payload = {
        "env": result.env,
        "flops": result.flops,
        "check": result.check,
        "timings": [asdict(t) | {"images_per_s": t.images_per_s} for t in result.timings],
        "combined": combined_rows(result.timings),
        "best": best_combined(result.timings),
        "failures": result.failures,
        "extra": result.extra,
    }
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(result))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_models", description=__doc__)
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache/smartgate/models")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), help="precision:mode, in this order"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=list(BASE_BATCHES))
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--budget-s", type=float, default=200.0, help="stop timing after this")
    parser.add_argument("--compile", action="store_true", help="try torch.compile at the end")
    parser.add_argument("--compile-budget-s", type=float, default=90.0)
    parser.add_argument("--compile-min-s", type=float, default=40.0, help="least time to try")
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: tiny batches")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if args.device == "cpu":
        args.variants = ["fp32:eager"]
    args.variants = [parse_variant(v) for v in args.variants]
    args.precisions = list(dict.fromkeys(p for p, _ in args.variants))
    if args.quick:
        args.batches, args.max_batch, args.warmup, args.repeats = [1, 2], 2, 1, 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    start = time.monotonic()
    deadline = start + args.budget_s
    torch.backends.cudnn.benchmark = args.device.startswith("cuda")
    paths, manifests = {}, {}
    for name in (DETECTOR, EMBEDDER):
        paths[name], manifests[name] = model_file(args.models, name)
    result = Result(env=environment(args.device))
    result.flops = count_flops(paths)
    photos = [args.photos / p for p in PHOTOS if (args.photos / p).exists()]
    if photos:
        result.check = check_outputs(paths, manifests, photos, args)
    else:
        result.failures.append(f"no photos in {args.photos}: outputs not checked")
    save(result, args)
    print(json.dumps(result.check, indent=1, ensure_ascii=False), flush=True)
    sweep(paths, result, args, deadline)
    if args.device.startswith("cuda"):
        result.extra["h2d + normalise"] = h2d_cost(args)
    repeat_best(paths, result, args)
    if args.compile and args.device.startswith("cuda"):
        compile_trial(paths, result, args, deadline + args.compile_budget_s)
    result.extra["elapsed"] = f"{time.monotonic() - start:.0f} s"
    save(result, args)
    sys.stdout.write(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
