"""Static int8 quantisation of the face models (and the exact PRelu rewrite) against fp32.

For ``fr-feature`` (the batchable model the project derives), ``retinaface-mnet025`` and
``fr-liveness``: derive variants with onnxruntime's ``quantize_static`` (QDQ and QOperator,
per-channel on/off, MinMax / Entropy / Percentile calibration, some ``extra_options``) and
``recognizer.models.recipes.decompose_prelu``; then, in one run:

- latency: every variant of a model in one round-robin (interleaved), one intra-op thread,
  spinning off (as the service runs), on a real input; median and p90 ms, speed-up against
  fp32 as the median of the per-round ratios (robust to a busy machine);
- session options: graph optimisation levels and a saved optimised model
  (``SessionOptions.optimized_model_filepath``), creation time and latency;
- accuracy, cross-fitted: the photos are split into two folds by source photo (a re-encoding
  stays with its source); every quantised variant is calibrated twice, once per fold, and each
  photo is scored by the model calibrated on the *other* fold, so no figure uses a model
  calibrated on the image it scores.  ``fr-feature``: cosine int8 vs fp32 per real aligned
  crop and the ``benchmarks.face_accuracy`` figures (d', genuine/impostor, errors at the
  threshold); RetinaFace: faces found vs fp32 (IoU >= 0.5), missed / extra, landmark error in
  original pixels, labelled faces found (face_accuracy); liveness: live probability change.

Calibration inputs are produced by the project's own preprocessing (decode, RetinaFace,
alignment, ``to_blob``) from the shared photos.  The machine may be shared: compare the
interleaved figures of one run, not figures of separate runs.

Run: ``python -m benchmarks.quantisation`` (``--models``, ``--repeats``, ``--methods``,
``--quick``: MinMax only, fewer variants; ``--json FILE``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.datasets import data_dir, face_labels
from benchmarks.face_accuracy import AccuracyReport, evaluate
from recognizer.backends.base import BackendOptions
from recognizer.backends.onnxrt import OnnxRuntimeBackend
from recognizer.faces.align import context_crop
from recognizer.faces.analyzer import FaceAnalyzer, FaceObservation, StageTimer
from recognizer.faces.carry import CarryOffer
from recognizer.faces.detector import Detections, FaceDetector, resize_long_side
from recognizer.faces.embedder import FaceEmbedder
from recognizer.faces.liveness import LivenessScorer
from recognizer.image import DecodedImage, DecodeLimits, decode
from recognizer.models.derived import DERIVED, derive, write_calibration
from recognizer.models.recipes import QuantRecipe, calibrate, decompose_prelu, quantise_static
from recognizer.models.store import LoadedModel, ModelStore
from recognizer.preprocess import to_blob
from smartgate.config import Config, load_config

DETECTOR, EMBEDDER, LIVENESS = "retinaface-mnet025", "fr-feature", "fr-liveness"
MODELS = (EMBEDDER, DETECTOR, LIVENESS)
HAS_PRELU = {EMBEDDER, LIVENESS}
FRAME = "examples_obama-1080p.jpg"  # the latency input: as the compute limit measures
DECODE_LONG_SIDE = 640
Feed = dict[str, np.ndarray]


# --- real inputs -----------------------------------------------------------------------------


@dataclass
class PhotoInputs:
    """One shared photo preprocessed by the project's own code.

    ``detector``: ``(1, 3, h, w)`` RetinaFace blob; ``crops``: ``(n, 112, 112, 3)`` uint8 BGR
    aligned faces; ``context``: ``(n, 128, 128, 3)`` uint8 liveness crops; ``fold``: 0 or 1.
    """

    file: str
    fold: int
    image: DecodedImage
    detector: np.ndarray
    crops: np.ndarray
    context: np.ndarray


def _folds(root: Path) -> dict[str, int]:
    """File → fold (0/1), alternating over source photos so a re-encoding stays with its
    source."""
    labels = face_labels(root)
    source = {lab.file: lab.same_photo_as or lab.file for lab in labels}
    files = sorted(
        p.name for p in (root / "faces").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    sources = sorted({source.get(f, f) for f in files})
    return {f: sources.index(source.get(f, f)) % 2 for f in files}


def collect_inputs(analyzer: FaceAnalyzer, root: Path) -> list[PhotoInputs]:
    """Every face photo: its detector blob, aligned crops and liveness crops (fp32 faces)."""
    det = analyzer.detector.manifest
    live_size, live_factor = 128, 2.7
    if analyzer.liveness is not None:
        live_size, live_factor = analyzer.liveness.input_size, analyzer.liveness.crop_factor
    out: list[PhotoInputs] = []
    for file, fold in _folds(root).items():
        image = decode((root / "faces" / file).read_bytes(), DecodeLimits(), DECODE_LONG_SIDE)
        resized, _ = resize_long_side(image.scaled, analyzer.detector.long_side)
        blob = to_blob(resized, det.input.mean, det.input.std)
        faces = analyzer.analyze(image, embed_all=True)
        crops = np.stack([f.aligned for f in faces]) if faces else np.zeros((0, 112, 112, 3))
        context = [
            context_crop(image.scaled, f.box, live_factor, live_size, image.scale) for f in faces
        ]
        ctx = np.stack(context) if context else np.zeros((0, live_size, live_size, 3))
        out.append(PhotoInputs(file, fold, image, blob, crops.astype(np.uint8), ctx))
    return out


def calibration_feeds(model: str, photos: Iterable[PhotoInputs], loaded: LoadedModel) -> list[Feed]:
    """The preprocessed inputs of ``model`` from ``photos``: one feed per detector frame, one
    per face crop for the embedder and the liveness model."""
    spec = loaded.manifest.input
    feeds: list[Feed] = []
    for p in photos:
        if model == DETECTOR:
            feeds.append({spec.name: p.detector})
            continue
        crops = p.crops if model == EMBEDDER else p.context
        feeds += [{spec.name: to_blob(c, spec.mean, spec.std)} for c in crops]
    return feeds


# --- variants ---------------------------------------------------------------------------------


@dataclass
class Variant:
    """A derived model. ``by_fold[k]``: the bytes calibrated on fold k (both the same for a
    variant that needs no calibration)."""

    name: str
    by_fold: tuple[bytes, bytes]
    calibrated: bool
    derive_s: float = 0.0

    def for_photo_fold(self, fold: int) -> bytes:
        """The model to score a photo of ``fold`` with: calibrated on the other fold."""
        return self.by_fold[1 - fold] if self.calibrated else self.by_fold[0]


def latency_recipes(quick: bool) -> list[QuantRecipe]:
    """Recipes whose graphs differ (format, per-channel, extra options), MinMax-calibrated."""
    recipes = [QuantRecipe("qdq", True), QuantRecipe("qoperator", True)]
    if quick:
        return recipes
    recipes += [QuantRecipe("qdq", False), QuantRecipe("qoperator", False)]
    recipes += [
        QuantRecipe("qdq", True, extra={"ActivationSymmetric": True}),
        QuantRecipe("qdq", True, extra={"WeightSymmetric": False}),
        QuantRecipe("qdq", True, extra={"QDQKeepRemovableActivations": True}),
    ]
    return recipes


def accuracy_recipes(methods: Sequence[str]) -> list[QuantRecipe]:
    """Calibration methods × per-channel on/off, QDQ (QOperator's graph runs the same ops)."""
    return [QuantRecipe("qdq", pc, m) for m in methods for pc in (True, False)]


def derive_variants(
    model: str,
    base: bytes,
    feeds_by_fold: tuple[list[Feed], list[Feed]],
    recipes: Sequence[QuantRecipe],
    workdir: Path,
) -> list[Variant]:
    """fp32, the PRelu rewrite (models with PRelu), each recipe on the model as fetched, and
    the recipe of every ``DERIVED`` variant of ``model``; quantised ones calibrated per fold."""
    variants = [Variant("fp32", (base, base), False)]
    if model in HAS_PRELU:
        start = time.perf_counter()
        rewritten = decompose_prelu(base)
        variants.append(
            Variant("fp32 prelu-decomposed", (rewritten, rewritten), False, _since(start))
        )
    jobs = [("", base, r) for r in recipes]
    for entry in DERIVED.values():
        if entry.base == model and entry.calibration is not None:
            graph = entry.pre_quantisation(base)
            prefix = "prelu-decomposed " if graph != base else ""
            jobs.append((f"[{entry.name}] {prefix}", graph, entry.quant_recipe))
    for prefix, graph, recipe in jobs:
        start = time.perf_counter()
        by_fold = tuple(
            _quantise(graph, recipe, feeds, workdir / f"{model}-{k}-{recipe.method}.json")
            for k, feeds in enumerate(feeds_by_fold)
        )
        name = f"int8 {prefix}{recipe.label}"
        variants.append(Variant(name, (by_fold[0], by_fold[1]), True, _since(start) / 2))
    for entry in DERIVED.values():
        if entry.base == model and entry.calibration is not None:
            start = time.perf_counter()
            shipped = derive(entry, base)  # its ranges came from every photo scored here
            name = f"int8 {entry.name} as shipped (NOT cross-fitted)"
            variants.append(Variant(name, (shipped, shipped), False, _since(start)))
    return variants


def _quantise(graph: bytes, recipe: QuantRecipe, feeds: list[Feed], cache: Path) -> bytes:
    """Quantise ``graph``; the calibration of a (graph, fold, method) is computed once and
    reused from ``cache`` by the other recipes. The histogram methods need inputs of one
    shape: frames of other sizes are padded (bottom, right) with zeros, the mean pixel."""
    key = hashlib.sha256(graph).hexdigest()[:12]
    cache = cache.with_name(f"{key}-{cache.name}")
    if not cache.is_file():
        calibrate(
            graph, recipe.method, feeds if recipe.method == "minmax" else _padded(feeds), cache
        )
    return quantise_static(graph, recipe, calibration_cache=cache)


def _padded(feeds: list[Feed]) -> list[Feed]:
    """``(1, c, h, w)`` inputs zero-padded to the largest ``h`` and ``w`` among them."""
    h = max(x.shape[2] for f in feeds for x in f.values())
    w = max(x.shape[3] for f in feeds for x in f.values())
    pad = lambda x: np.pad(x, ((0, 0), (0, 0), (0, h - x.shape[2]), (0, w - x.shape[3])))  # noqa: E731
    return [{k: pad(x) for k, x in f.items()} for f in feeds]


def _since(start: float) -> float:
    return time.perf_counter() - start


# --- latency ----------------------------------------------------------------------------------


def session(
    model: bytes | str,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    save_to: Path | None = None,
) -> ort.InferenceSession:
    """One intra-op thread, spinning off: as ``recognizer.backends.onnxrt`` runs a model."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    if save_to is not None:
        so.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


@dataclass
class Timing:
    name: str
    ms: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # fp32 time / this time, per round
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "variant": self.name,
            "median_ms": float(np.median(self.ms)),
            "p90_ms": float(np.percentile(self.ms, 90)),
            "speedup": float(np.median(self.ratios)) if self.ratios else 1.0,
            **self.extra,
        }


def interleaved(
    sessions: Mapping[str, ort.InferenceSession], feed: Feed, repeats: int
) -> list[Timing]:
    """Each round runs every session once (rotating the order); the first is the reference."""
    names = list(sessions)
    timings = {n: Timing(n) for n in names}
    for s in sessions.values():  # warm up
        s.run(None, feed)
    for r in range(repeats):
        round_ms: dict[str, float] = {}
        for n in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            sessions[n].run(None, feed)
            round_ms[n] = (time.perf_counter() - start) * 1e3
        for n, ms in round_ms.items():
            timings[n].ms.append(ms)
            timings[n].ratios.append(round_ms[names[0]] / ms)
    return list(timings.values())


def latency_feed(model: str, photos: Sequence[PhotoInputs], loaded: LoadedModel) -> Feed:
    """The 1080p one-face frame's input (detector: 640×360; models per face: its crop)."""
    photo = next(p for p in photos if p.file == FRAME)
    return calibration_feeds(model, [photo], loaded)[0]


def session_option_timings(
    model: bytes, feed: Feed, repeats: int, workdir: Path, tag: str
) -> list[Timing]:
    """Optimisation levels, and a model saved optimised at ALL and loaded with none."""
    levels = {
        "ORT_ENABLE_ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "ORT_ENABLE_EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "ORT_ENABLE_BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "ORT_DISABLE_ALL": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    created: dict[str, float] = {}
    sessions: dict[str, ort.InferenceSession] = {}
    for label, level in levels.items():
        start = time.perf_counter()
        sessions[f"{tag} {label}"] = session(model, level)
        created[f"{tag} {label}"] = _since(start) * 1e3
    saved = workdir / f"{tag.replace(' ', '_')}-optimised.onnx"
    session(model, levels["ORT_ENABLE_ALL"], save_to=saved)
    start = time.perf_counter()
    name = f"{tag} saved optimised, loaded DISABLE_ALL"
    sessions[name] = session(str(saved), levels["ORT_DISABLE_ALL"])
    created[name] = _since(start) * 1e3
    timings = interleaved(sessions, feed, repeats)
    for t in timings:
        t.extra["create_ms"] = round(created[t.name], 1)
    return timings


# --- accuracy ---------------------------------------------------------------------------------


def _backend(model: bytes, loaded: LoadedModel, workdir: Path) -> OnnxRuntimeBackend:
    path = workdir / f"{hashlib.sha256(model).hexdigest()[:16]}.onnx"
    if not path.exists():
        path.write_bytes(model)
    return OnnxRuntimeBackend(dataclasses.replace(loaded, path=path), BackendOptions())


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of ``(n, d)`` and ``(n, d)`` → ``(n,)``."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray(np.sum(a * b, axis=1))


def embedder_agreement(
    variant: Variant, photos: Sequence[PhotoInputs], loaded: LoadedModel, workdir: Path
) -> dict[str, float]:
    """Cosine between fp32 and variant embeddings of every real crop (cross-fitted)."""
    ref = FaceEmbedder(_backend(loaded.path.read_bytes(), loaded, workdir), loaded.manifest)
    cos: list[np.ndarray] = []
    for p in photos:
        if not len(p.crops):
            continue
        emb = FaceEmbedder(
            _backend(variant.for_photo_fold(p.fold), loaded, workdir), loaded.manifest
        )
        cos.append(_cosine_rows(ref.embed(p.crops), emb.embed(p.crops)))
    c = np.concatenate(cos)
    return {
        "crops": int(c.size),
        "cos_mean": float(c.mean()),
        "cos_p1": float(np.percentile(c, 1)),
        "cos_min": float(c.min()),
    }


def liveness_agreement(
    variant: Variant, photos: Sequence[PhotoInputs], loaded: LoadedModel, workdir: Path
) -> dict[str, float]:
    """Live probability change against fp32 on every real liveness crop (cross-fitted)."""
    ref = LivenessScorer(_backend(loaded.path.read_bytes(), loaded, workdir), loaded.manifest)
    diffs: list[np.ndarray] = []
    flips = 0
    for p in photos:
        if not len(p.context):
            continue
        lv = LivenessScorer(
            _backend(variant.for_photo_fold(p.fold), loaded, workdir), loaded.manifest
        )
        a, b = ref.score(p.context), lv.score(p.context)
        diffs.append(np.abs(a - b))
        flips += int(np.sum((a >= 0.5) != (b >= 0.5)))
    d = np.concatenate(diffs)
    return {
        "crops": int(d.size),
        "live_diff_mean": float(d.mean()),
        "live_diff_max": float(d.max()),
        "flips_at_0.5": flips,
    }


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``(n, 4)`` and ``(m, 4)`` boxes → ``(n, m)``."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return np.asarray(inter / (area(a)[:, None] + area(b)[None, :] - inter))


def detector_agreement(
    variant: Variant,
    photos: Sequence[PhotoInputs],
    loaded: LoadedModel,
    workdir: Path,
    config: Config,
) -> dict[str, float]:
    """Faces found by the variant against fp32 on every shared photo (cross-fitted)."""

    def detector(model: bytes) -> FaceDetector:
        d = config.detect
        return FaceDetector(
            _backend(model, loaded, workdir),
            loaded.manifest,
            d.long_side,
            d.score_threshold,
            d.nms_iou,
            d.max_faces,
        )

    ref = detector(loaded.path.read_bytes())
    found = matched = extra = 0
    lm_err: list[float] = []
    lm_share: list[float] = []  # of the face box's width
    for p in photos:
        a: Detections = ref.detect(p.image.scaled, p.image.scale)
        b: Detections = detector(variant.for_photo_fold(p.fold)).detect(
            p.image.scaled, p.image.scale
        )
        found += len(a)
        if len(a) and len(b):
            iou = _iou(a.boxes, b.boxes)
            pairs = [(i, int(iou[i].argmax())) for i in range(len(a)) if iou[i].max() >= 0.5]
            matched += len(pairs)
            for i, j in pairs:
                err = np.linalg.norm(a.landmarks[i] - b.landmarks[j], axis=1)
                lm_err += err.tolist()
                lm_share.append(float(err.max() / (a.boxes[i, 2] - a.boxes[i, 0])))
            extra += len(b) - len({j for _, j in pairs})
        else:
            extra += len(b)
    err = np.array(lm_err or [np.nan])
    return {
        "fp32_faces": found,
        "matched": matched,
        "missed": found - matched,
        "extra": extra,
        "landmark_err_mean_px": float(np.nanmean(err)),
        "landmark_err_max_px": float(np.nanmax(err)),
        "landmark_err_max_share": max(lm_share, default=float("nan")),
    }


class FoldAnalyzer(FaceAnalyzer):
    """A ``FaceAnalyzer`` that scores each photo with the analyzer built from the model
    calibrated on the other fold (photos are recognised by their decoded pixels)."""

    def __init__(
        self, by_fold: tuple[FaceAnalyzer, FaceAnalyzer], fold_of: Mapping[str, int]
    ) -> None:
        first = by_fold[0]
        super().__init__(first.detector, first.embedder, None, first.quality, False)
        self._by_fold = by_fold
        self._fold_of = fold_of

    def analyze(
        self,
        image: DecodedImage,
        timer: StageTimer | None = None,
        embed_all: bool = False,
        carry: CarryOffer | None = None,
    ) -> list[FaceObservation]:
        fold = self._fold_of[hashlib.sha256(image.scaled.tobytes()).hexdigest()]
        return self._by_fold[1 - fold].analyze(image, timer, embed_all, carry)


def face_accuracy(
    variant: Variant,
    role: str,
    base: FaceAnalyzer,
    loaded: LoadedModel,
    photos: Sequence[PhotoInputs],
    workdir: Path,
    threshold: float,
    margin: float,
) -> AccuracyReport:
    """``benchmarks.face_accuracy`` with the variant as embedder or detector (cross-fitted)."""

    def analyzer(model: bytes) -> FaceAnalyzer:
        backend = _backend(model, loaded, workdir)
        det, emb = base.detector, base.embedder
        if role == EMBEDDER:
            emb = FaceEmbedder(backend, loaded.manifest)
        else:
            det = FaceDetector(
                backend,
                loaded.manifest,
                det.long_side,
                det.score_threshold,
                det.nms_iou,
                det.max_faces,
            )
        return FaceAnalyzer(det, emb, None, base.quality, False)

    fold_of = {hashlib.sha256(p.image.scaled.tobytes()).hexdigest(): p.fold for p in photos}
    # by_fold[k] is calibrated on fold k; FoldAnalyzer uses it for the photos of the other fold.
    pair = (analyzer(variant.by_fold[0]), analyzer(variant.by_fold[1]))
    return evaluate(FoldAnalyzer(pair, fold_of), threshold, margin)


def accuracy_row(report: AccuracyReport) -> dict[str, Any]:
    g, i = report.genuine, report.impostor
    return {
        "d_prime": round(_d_prime(g, i), 3),
        "d_prime_boot_sd": round(_bootstrap_sd(g, i), 2),
        "genuine": f"{g.mean():.3f} ± {g.std():.3f} (min {g.min():.3f})",
        "impostor": f"{i.mean():.3f} ± {i.std():.3f} (max {i.max():.3f})",
        "genuine_below": int((g < report.threshold).sum()),
        "impostor_above": int((i >= report.threshold).sum()),
        "rank1": f"{report.rank1_correct}/{report.probes}",
        "false_accepts": len(report.false_accepts) + len(report.background_accepts),
        "labels_missed": len(report.missing_labels),
    }


def _d_prime(g: np.ndarray, i: np.ndarray) -> float:
    return float((g.mean() - i.mean()) / np.sqrt((g.var() + i.var()) / 2))


def _bootstrap_sd(g: np.ndarray, i: np.ndarray, n: int = 500, seed: int = 0) -> float:
    """Spread of d' when the genuine and impostor pairs are resampled (a scale for "within
    noise"; pairs share photos, so it understates the true spread)."""
    rng = np.random.default_rng(seed)
    boots = [_d_prime(rng.choice(g, g.size), rng.choice(i, i.size)) for _ in range(n)]
    return float(np.std(boots))


# --- report -----------------------------------------------------------------------------------


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


@dataclass
class ModelRun:
    model: str
    latency: list[dict[str, Any]] = field(default_factory=list)
    options: list[dict[str, Any]] = field(default_factory=list)
    accuracy: list[dict[str, Any]] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [
            f"## {self.model}",
            "",
            "latency (interleaved, 1 thread):",
            "",
            markdown(self.latency),
        ]
        if self.options:
            parts += ["", "session options:", "", markdown(self.options)]
        parts += ["", "accuracy (cross-fitted against fp32):", "", markdown(self.accuracy), ""]
        return "\n".join(parts)


def run_model(
    model: str,
    config: Config,
    base: FaceAnalyzer,
    photos: Sequence[PhotoInputs],
    args: argparse.Namespace,
    workdir: Path,
    log: Callable[[str], None],
) -> ModelRun:
    loaded = ModelStore(config.models.cache_dir).load(model)
    folds = tuple(
        calibration_feeds(model, [p for p in photos if p.fold == k], loaded) for k in (0, 1)
    )
    log(f"{model}: calibration inputs per fold {len(folds[0])} / {len(folds[1])}")
    recipes = latency_recipes(args.quick)
    recipes += [r for r in accuracy_recipes(args.methods) if r not in recipes]
    variants = derive_variants(
        model, loaded.path.read_bytes(), (folds[0], folds[1]), recipes, workdir
    )
    log(f"{model}: {len(variants)} variants derived")
    run = ModelRun(model)
    feed = latency_feed(model, photos, loaded)
    sessions = {v.name: session(v.by_fold[0]) for v in variants}
    for t in interleaved(sessions, feed, args.repeats):
        run.latency.append(t.row())
    for v in variants:
        next(r for r in run.latency if r["variant"] == v.name)["derive_s"] = round(v.derive_s, 2)
    fastest = min(
        (r for r in run.latency if r["variant"].startswith("int8")), key=lambda r: r["median_ms"]
    )
    best = next(v for v in variants if v.name == fastest["variant"])
    fp32_like = [v for v in variants if v.name.startswith("fp32")][-1]
    for v, tag in ((fp32_like, "fp32"), (best, "int8")):
        run.options += [
            t.row() for t in session_option_timings(v.by_fold[0], feed, args.repeats, workdir, tag)
        ]
    log(f"{model}: latency done")
    threshold = config.match.threshold or float(base.embedder.manifest.default_threshold or 0.45)
    for v in variants[1:]:
        row: dict[str, Any] = {"variant": v.name}
        if model == EMBEDDER:
            row |= embedder_agreement(v, photos, loaded, workdir)
        elif model == LIVENESS:
            row |= liveness_agreement(v, photos, loaded, workdir)
        else:
            row |= detector_agreement(v, photos, loaded, workdir, config)
        if model in (EMBEDDER, DETECTOR):
            row |= accuracy_row(
                face_accuracy(
                    v, model, base, loaded, photos, workdir, threshold, config.match.margin
                )
            )
        run.accuracy.append(row)
    if model in (EMBEDDER, DETECTOR):
        raw = loaded.path.read_bytes()
        fp32 = Variant("fp32", (raw, raw), False)
        ref = accuracy_row(
            face_accuracy(
                fp32, model, base, loaded, photos, workdir, threshold, config.match.margin
            )
        )
        run.accuracy.insert(0, {"variant": "fp32"} | ref)
    log(f"{model}: accuracy done")
    return run


def write_calibrations(config: Config, photos: Sequence[PhotoInputs]) -> list[Path]:
    """The shipped tensor ranges of every quantised derived model, from every shared photo
    (the cross-fitted figures above are the ones that say how well such ranges generalise)."""
    store = ModelStore(config.models.cache_dir)
    written: list[Path] = []
    for entry in DERIVED.values():
        if entry.calibration is None:
            continue
        base = store.load(entry.base)
        feeds = calibration_feeds(entry.base, photos, base)
        written.append(write_calibration(entry, base.path.read_bytes(), feeds, entry.calibration))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    from recognizer.faces.factory import build_face_analyzer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=40, help="interleaved rounds")
    parser.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"])
    parser.add_argument("--quick", action="store_true", help="MinMax only, fewer graphs")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument(
        "--write-calibration",
        action="store_true",
        help="only write recognizer/models/calibration/*.json from all the shared photos",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.methods = ["minmax"]
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns per tensor
    config = load_config(args.config)
    base = build_face_analyzer(config)
    root = data_dir()
    photos = collect_inputs(base, root)
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr)  # noqa: E731
    log(f"{len(photos)} photos, {sum(len(p.crops) for p in photos)} faces")
    if args.write_calibration:
        for path in write_calibrations(config, photos):
            log(f"wrote {path}")
        return 0
    runs: list[ModelRun] = []
    with tempfile.TemporaryDirectory(prefix="smartgate-quant-bench-") as tmp:
        for model in args.models:
            runs.append(run_model(model, config, base, photos, args, Path(tmp), log))
            print(runs[-1].markdown(), flush=True)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in runs], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
