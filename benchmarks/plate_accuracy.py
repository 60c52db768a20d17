"""Plate reading accuracy and latency on the shared real photos.

* ``plates/crops``: exact full-plate accuracy over the 500 labelled crops, per-character
  accuracy (characters matched in a Levenshtein alignment over label characters), the
  confusions that remain, and ablations that show what each reader choice buys.
* ``plates/scenes``: each labelled scene read end to end: text, corner error against the
  labels, box IoU.
* ``read_frame`` on the same 500 crops, each pasted into a frame (``crop_in_frame``): the
  detect → rectify → read path on 500 real plates rather than on 6 scenes.
* latency per stage: detection at long side 640 and one plate recognition (median and p90
  over ``--repeats``), with onnxruntime on one and on two threads.
* a contact sheet of ``plates/unlabelled`` with every detection drawn and read, written to
  ``--out`` (default ``reports/plates_contact_sheet.png``).

Run: ``python -m benchmarks.plate_accuracy [--repeats 50] [--out PATH]``. The models come
from the user cache (``smartgate models fetch``) or ``--models DIR``.

``--sweep`` instead compares reader settings side by side (``SWEEP``): exact reads on the
crops (``read_crop``) and on the crops in frames (``read_frame``), the scenes, and
``read_frame`` latency on a 720 × 1160 scene and a 1920 × 1080 frame with one- and
two-thread sessions. Timings interleave the settings (``--rounds`` rounds of
``--repeats`` / rounds calls each) so that load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from benchmarks.datasets import ROOT, data_dir
from recognizer.backends.base import BackendOptions
from recognizer.models.store import LoadedModel, ModelStore
from recognizer.plates.color import plate_color
from recognizer.plates.factory import DETECTOR, RECOGNIZER, build_plate_reader
from recognizer.plates.geometry import order_corners, rectify
from recognizer.plates.reader import (
    QUICK_ACCEPT,
    QUICK_WIDTH,
    LineReading,
    PlateDetector,
    PlateReader,
    PlateReading,
    PlateRecognizer,
)
from smartgate.config import default_cache_dir

DEFAULT_OUT = ROOT / "reports" / "plates_contact_sheet.png"
FONT_CANDIDATES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
    Path("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc"),
)
LATENCY_SCENE = "ccpd_00.jpg"
# A mainland plate is 440 × 140 mm; the 94 × 24 crops are squeezed to 3.9.
PLATE_ASPECT = 440 / 140


# --- labels -----------------------------------------------------------------------------------


def plates_dir(root: Path | None = None) -> Path:
    return (root or data_dir()) / "plates"


@dataclass(frozen=True)
class LabelledCrop:
    file: str
    plate: str


@dataclass(frozen=True, eq=False)
class LabelledScene:
    file: str
    plate: str
    corners: np.ndarray  # (4, 2) float32, CCPD order: BR, BL, TL, TR

    @property
    def ordered(self) -> np.ndarray:
        """The corners as [TL, TR, BR, BL]."""
        return order_corners(self.corners)


def crop_labels(root: Path | None = None) -> list[LabelledCrop]:
    """Rows of ``plates/crops/labels.csv``."""
    with (plates_dir(root) / "crops" / "labels.csv").open(newline="", encoding="utf-8") as fh:
        return [LabelledCrop(row["file"], row["plate"]) for row in csv.DictReader(fh)]


def scene_labels(root: Path | None = None) -> list[LabelledScene]:
    """Rows of ``plates/scenes/labels.csv`` (corners ``"x,y x,y x,y x,y"``, BR BL TL TR)."""
    path = plates_dir(root) / "scenes" / "labels.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        return [
            LabelledScene(
                row["file"],
                row["plate"],
                np.array(
                    [[float(v) for v in p.split(",")] for p in row["corners_br_bl_tl_tr"].split()],
                    dtype=np.float32,
                ),
            )
            for row in csv.DictReader(fh)
        ]


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read {path}")
    return image


# --- scoring ----------------------------------------------------------------------------------


def align(truth: str, read: str) -> list[tuple[str | None, str | None]]:
    """A minimal (unit-cost Levenshtein) alignment: ``(t, r)`` pairs, ``None`` for a gap."""
    n, m = len(truth), len(read)
    cost = np.zeros((n + 1, m + 1), dtype=np.int32)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(
                cost[i - 1, j] + 1,
                cost[i, j - 1] + 1,
                cost[i - 1, j - 1] + (truth[i - 1] != read[j - 1]),
            )
    pairs: list[tuple[str | None, str | None]] = []
    i, j = n, m
    while i or j:
        if i and j and cost[i, j] == cost[i - 1, j - 1] + (truth[i - 1] != read[j - 1]):
            pairs.append((truth[i - 1], read[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i, j] == cost[i - 1, j] + 1:
            pairs.append((truth[i - 1], None))
            i -= 1
        else:
            pairs.append((None, read[j - 1]))
            j -= 1
    return pairs[::-1]


@dataclass
class CropReport:
    name: str
    total: int = 0
    exact: int = 0
    chars_total: int = 0
    chars_correct: int = 0
    invalid: int = 0  # readings flagged as fitting no format (or no plate found)
    wrong_but_valid: int = 0  # the dangerous kind: a plausible plate that is not the one
    confusions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)

    def add(self, label: LabelledCrop, reading: PlateReading | None, ms: float) -> None:
        """Count one crop; ``reading`` ``None``: no plate was found (``read_frame``)."""
        self.total += 1
        self.ms.append(ms)
        self.chars_total += len(label.plate)
        if reading is None:
            self.invalid += 1
            self.confusions["no plate found"] += 1
            self.failures.append(f"{label.file}: {label.plate} not found")
            return
        if reading.text == label.plate:
            self.exact += 1
            self.chars_correct += len(label.plate)
            return
        if reading.valid:
            self.wrong_but_valid += 1
        else:
            self.invalid += 1
        for t, r in align(label.plate, reading.text):
            if t == r:
                self.chars_correct += 1
            else:
                self.confusions[f"{t or '∅'}→{r or '∅'}"] += 1
        self.failures.append(
            f"{label.file}: {label.plate} read {reading.text or '(nothing)'} "
            f"(raw {reading.raw_text!r}, score {reading.score:.2f}"
            f"{', ' + reading.reason if reading.reason else ''})"
        )

    @property
    def accuracy(self) -> float:
        return self.exact / self.total if self.total else 0.0

    @property
    def char_accuracy(self) -> float:
        return self.chars_correct / self.chars_total if self.chars_total else 0.0


def evaluate_crops(
    reader: PlateReader, root: Path | None = None, name: str = "default"
) -> CropReport:
    """Read every labelled crop with ``reader.read_crop``."""
    report = CropReport(name)
    folder = plates_dir(root) / "crops"
    for label in crop_labels(root):
        image = read_image(folder / label.file)
        start = time.perf_counter()
        reading = reader.read_crop(image)
        report.add(label, reading, (time.perf_counter() - start) * 1e3)
    return report


def crop_in_frame(
    crop: np.ndarray, height: int = 48, aspect: float | None = PLATE_ASPECT
) -> np.ndarray:
    """A plate crop as a frame: resized to ``height`` pixels and ``aspect`` (width / height;
    ``None`` keeps the crop's), padded with black by its own size on every side (as
    ``PlateReader`` does to re-detect a crop), so that ``read_frame`` detects, rectifies and
    reads a real plate of the shape plates have in frames (the crops are squeezed to 3.9)."""
    h, w = crop.shape[:2]
    width = round(height * aspect) if aspect else round(w * height / h)
    big = cv2.resize(
        crop,
        (max(1, width), height),
        interpolation=cv2.INTER_CUBIC if height > h else cv2.INTER_AREA,
    )
    bh, bw = big.shape[:2]
    return cv2.copyMakeBorder(big, bh, bh, bw, bw, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def evaluate_crops_in_frames(
    reader: PlateReader,
    root: Path | None = None,
    name: str = "default",
    aspect: float | None = PLATE_ASPECT,
) -> CropReport:
    """Read every labelled crop, pasted into a frame (``crop_in_frame``), with
    ``reader.read_frame``; the best detection counts (a plate not found is a miss)."""
    report = CropReport(name)
    folder = plates_dir(root) / "crops"
    for label in crop_labels(root):
        frame = crop_in_frame(read_image(folder / label.file), aspect=aspect)
        start = time.perf_counter()
        readings = reader.read_frame(frame)
        report.add(label, readings[0] if readings else None, (time.perf_counter() - start) * 1e3)
    return report


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True)
class SceneResult:
    label: LabelledScene
    reading: PlateReading | None  # the detection nearest the labelled plate
    plates_found: int

    @property
    def corner_errors(self) -> np.ndarray:
        """Per-corner distance to the label, pixels, [TL, TR, BR, BL]."""
        if self.reading is None:
            return np.full(4, np.inf)
        return np.linalg.norm(self.reading.corners - self.label.ordered, axis=1)

    @property
    def iou(self) -> float:
        if self.reading is None:
            return 0.0
        truth = np.concatenate([self.label.corners.min(0), self.label.corners.max(0)])
        return box_iou(self.reading.box, truth)

    @property
    def exact(self) -> bool:
        return self.reading is not None and self.reading.text == self.label.plate


def evaluate_scenes(reader: PlateReader, root: Path | None = None) -> list[SceneResult]:
    results = []
    folder = plates_dir(root) / "scenes"
    for label in scene_labels(root):
        readings = reader.read_frame(read_image(folder / label.file))
        truth = label.corners.mean(axis=0)
        nearest = min(
            readings, key=lambda r: float(np.linalg.norm(r.corners.mean(0) - truth)), default=None
        )
        results.append(SceneResult(label, nearest, len(readings)))
    return results


# --- latency ----------------------------------------------------------------------------------


def timed(fn: Callable[[], object], repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Median and p90 milliseconds of ``fn()`` over ``repeats`` calls."""
    ms = sample_ms(fn, repeats, warmup)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 90))


def sample_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn()`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - start) * 1e3)
    return ms


def hd_frame(scene: np.ndarray) -> np.ndarray:
    """A 1920 × 1080 frame around a scene: scaled to 1080 rows, grey on both sides."""
    h, w = scene.shape[:2]
    scaled = cv2.resize(scene, (round(w * 1080 / h), 1080), interpolation=cv2.INTER_AREA)
    left = (1920 - scaled.shape[1]) // 2
    right = 1920 - scaled.shape[1] - left
    return cv2.copyMakeBorder(scaled, 0, 0, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))


def latency_rows(
    models: Path, threads: Sequence[int], repeats: int, root: Path | None = None
) -> list[str]:
    """Markdown rows: one per stage and thread setting."""
    scene = read_image(plates_dir(root) / "scenes" / LATENCY_SCENE)
    label = next(s for s in scene_labels(root) if s.file == LATENCY_SCENE)
    crop = read_image(plates_dir(root) / "crops" / crop_labels(root)[0].file)
    hd = hd_frame(scene)
    half = cv2.resize(hd, (960, 540), interpolation=cv2.INTER_AREA)
    rows = []
    for n in threads:
        reader = build_plate_reader(models, BackendOptions(intra_op_threads=n))
        plate = reader.read_frame(scene)
        corners = plate[0].corners if plate else label.ordered
        line = rectify(scene, corners, height=48)
        det, rec = reader.detector, reader.recognizer
        stages: list[tuple[str, Callable[[], object]]] = [
            (
                f"detect ({scene.shape[1]}×{scene.shape[0]} → long side {det.long_side})",
                partial(det.detect, scene),
            ),
            ("detect (1920×1080 → 640×360)", partial(det.detect, hd)),
            (
                f"recognise one plate at its width (48×{line.shape[1]}, the quick reading)",
                partial(rec.recognize, [line], min_width=reader.quick_width),
            ),
            (
                f"recognise one plate (48×{line.shape[1]}, padded to {rec.min_width})",
                partial(rec.recognize, [line]),
            ),
            ("rectify + colour", partial(_rectify_and_colour, scene, corners)),
            (
                "read_frame 720×1160 (detect, rectify, recognise, colour)",
                partial(reader.read_frame, scene),
            ),
            ("read_frame 1920×1080", partial(reader.read_frame, hd)),
            (
                "read_frame 960×540 decode + full_image 1920×1080",
                partial(reader.read_frame, half, 0.5, full_image=hd),
            ),
            (f"read_crop ({crop.shape[1]}×{crop.shape[0]} crop)", partial(reader.read_crop, crop)),
        ]
        label_threads = "default" if n == 0 else str(n)
        for name, fn in stages:
            p50, p90 = timed(fn, repeats)
            rows.append(f"| {name} | {label_threads} | {p50:.1f} | {p90:.1f} |")
    return rows


def _rectify_and_colour(image: np.ndarray, corners: np.ndarray) -> object:
    return plate_color(rectify(image, corners, height=48))


# --- settings sweep ---------------------------------------------------------------------------

GRAPH_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


class SessionBackend:
    """An ``InferenceBackend`` over an onnxruntime session with explicit options, so that a
    sweep can vary what ``BackendOptions`` does not expose (the graph optimisation level)."""

    def __init__(self, model: LoadedModel, threads: int, graph: str, spinning: bool) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = GRAPH_LEVELS[graph]
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self._session = ort.InferenceSession(
            str(model.path), sess_options=so, providers=["CPUExecutionProvider"]
        )
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self._session.run(None, dict(feeds)), strict=True))

    def close(self) -> None:
        pass


class CountingRecognizer(PlateRecognizer):
    """Counts the recogniser runs padded to ``min_width`` (the full readings that follow a
    quick reading the reader did not keep, or every reading when there is none)."""

    full_runs = 0

    def recognize(
        self, lines: Sequence[np.ndarray], *, min_width: int | None = None
    ) -> list[LineReading]:
        if lines and min_width is None:
            self.full_runs += 1
        return super().recognize(lines, min_width=min_width)


@dataclass(frozen=True)
class Setting:
    """One reader configuration of the sweep. ``accuracy`` False skips the exact reads of
    a setting that differs from the one above only in onnxruntime's threading."""

    name: str
    min_width: int = 320
    quick_accept: float | None = None
    quick_width: int = QUICK_WIDTH
    margin: float = 0.0
    linear_resize: bool = True
    graph: str = "all"
    spinning: bool = False
    accuracy: bool = True

    def reader(self, models: Sequence[LoadedModel], threads: int) -> PlateReader:
        det_model, rec_model = models
        detector = PlateDetector(
            SessionBackend(det_model, threads, self.graph, self.spinning),
            det_model.manifest,
            linear_resize_min_factor=0.5 if self.linear_resize else 2.0,
        )
        recognizer = CountingRecognizer(
            SessionBackend(rec_model, threads, self.graph, self.spinning),
            rec_model.manifest,
            min_width=self.min_width,
        )
        reader = PlateReader(
            detector,
            recognizer,
            margin=self.margin,
            quick_accept=self.quick_accept,
            quick_width=self.quick_width,
        )
        reader.warm_up()
        return reader


SWEEP = (
    Setting("before: pad 320, area resize", linear_resize=False),
    Setting("pad 320, bilinear resize"),
    Setting("pad 256", min_width=256),
    Setting("pad 224", min_width=224),
    Setting("pad 192", min_width=192),
    Setting("natural width (pad 0)", min_width=0),
    Setting("pad 320, margin 0.1", margin=0.1),
    Setting(f"quick natural → 320 at {QUICK_ACCEPT} (default)", quick_accept=QUICK_ACCEPT),
    Setting("quick 192 → 320 at 0.98", quick_accept=0.98, quick_width=192),
    Setting("quick 224 → 320 at 0.98", quick_accept=0.98, quick_width=224),
    Setting("default, graph level extended", quick_accept=QUICK_ACCEPT, graph="extended"),
    Setting("default, spinning on", quick_accept=QUICK_ACCEPT, spinning=True, accuracy=False),
)


def sweep_rows(
    models_dir: Path,
    settings: Sequence[Setting],
    threads: Sequence[int],
    repeats: int,
    rounds: int,
    root: Path | None = None,
    accuracy_columns: bool = True,
) -> list[str]:
    """Markdown rows of the settings table (see the module docstring)."""
    models = ModelStore(models_dir).verify_all([DETECTOR, RECOGNIZER])
    folder = plates_dir(root) / "scenes"
    scenes = [read_image(folder / label.file) for label in scene_labels(root)]
    frames = {"720×1160": scenes, "1920×1080": [hd_frame(scene) for scene in scenes]}
    readers = {(s, n): s.reader(models, n) for s in settings for n in threads}
    accuracy: dict[Setting, str] = {}
    for s in settings:
        if not s.accuracy or not accuracy_columns:
            accuracy[s] = " | ".join(["(as above)" if accuracy_columns else "-"] * 4)
            continue
        reader = readers[(s, threads[0])]
        crops = evaluate_crops(reader, root, s.name)
        rec = reader.recognizer
        assert isinstance(rec, CountingRecognizer)
        rec.full_runs = 0
        framed = evaluate_crops_in_frames(reader, root, s.name)
        full = rec.full_runs
        results = evaluate_scenes(reader, root)
        accuracy[s] = (
            f"{crops.exact}/{crops.total} = {100 * crops.accuracy:.1f} % | "
            f"{framed.exact}/{framed.total} = {100 * framed.accuracy:.1f} % | "
            f"{100 * full / framed.total:.0f} % | "
            f"{sum(r.exact for r in results)}/{len(results)}"
        )
    samples: dict[tuple[Setting, int, str], list[float]] = {}
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for n in threads:
            for frame_name, images in frames.items():
                for s in settings:
                    ms = sample_ms(partial(_read_next, readers[(s, n)], _cycle(images)), per_round)
                    samples.setdefault((s, n, frame_name), []).extend(ms)
    rows = []
    for s in settings:
        cells = []
        for n in threads:
            for frame_name in frames:
                ms = samples[(s, n, frame_name)]
                cells.append(f"{np.percentile(ms, 50):.1f} / {np.percentile(ms, 90):.1f}")
        rows.append(f"| {s.name} | {accuracy[s]} | " + " | ".join(cells) + " |")
    return rows


def _read_next(reader: PlateReader, frames: Iterator[np.ndarray]) -> list[PlateReading]:
    return reader.read_frame(next(frames))


def _cycle(items: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    while True:
        yield from items


def sweep_header(threads: Sequence[int]) -> list[str]:
    timing = [f"{f} {n}T p50 / p90 ms" for n in threads for f in ("720×1160", "1920×1080")]
    head = [
        "setting",
        "crops read_crop",
        "crops in frames read_frame",
        "full (padded) readings",
        "scenes",
        *timing,
    ]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


# --- contact sheet ----------------------------------------------------------------------------


def _font_path() -> Path | None:
    return next((p for p in FONT_CANDIDATES if p.is_file()), None)


def _annotate(image: np.ndarray, readings: Sequence[PlateReading], width: int) -> np.ndarray:
    """A ``width``-square thumbnail with each plate outlined and its reading written under."""
    scale = width / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    thumb = np.full((width, width, 3), 255, np.uint8)
    thumb[: size[1], : size[0]] = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    for r in readings:
        colour = (0, 200, 0) if r.valid else (0, 0, 230)
        pts = np.round((r.corners + 0.5) * scale - 0.5).astype(np.int32)
        cv2.polylines(thumb, [pts], True, colour, 2, cv2.LINE_AA)
    lines = [
        f"{r.text or '∅'} {r.color.value} {r.format.value if r.format else 'INVALID'} {r.score:.2f}"
        + (" 2-row" if r.double_row else "")
        for r in readings
    ] or ["no plate"]
    band = np.full((22 * len(lines) + 6, width, 3), 255, np.uint8)
    font = _font_path()
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:  # pragma: no cover - Pillow is a dev dependency
        font = None
    if font is not None:
        canvas = Image.fromarray(band[..., ::-1].copy())
        draw = ImageDraw.Draw(canvas)
        face = ImageFont.truetype(str(font), 17)
        for i, text in enumerate(lines):
            draw.text((4, 3 + 22 * i), text, fill=(0, 0, 0), font=face)
        band = np.asarray(canvas)[..., ::-1].copy()
    else:
        for i, text in enumerate(lines):
            ascii_text = text.encode("ascii", "replace").decode()
            cv2.putText(
                band, ascii_text, (4, 18 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1
            )
    return np.vstack([thumb, band])


def contact_sheet(
    reader: PlateReader, out: Path, root: Path | None = None, columns: int = 5, width: int = 300
) -> tuple[Path, list[tuple[str, list[PlateReading]]]]:
    """Read every ``plates/unlabelled`` photo and write the annotated grid to ``out``."""
    files = sorted((plates_dir(root) / "unlabelled").glob("*.jpg"))
    results = []
    tiles = []
    for path in files:
        image = read_image(path)
        readings = reader.read_frame(image)
        results.append((path.name, readings))
        tile = _annotate(image, readings, width)
        cv2.putText(
            tile, path.stem[-12:], (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1
        )
        tiles.append(tile)
    height = max(t.shape[0] for t in tiles)
    padded = [
        np.vstack([t, np.full((height - t.shape[0], width, 3), 255, np.uint8)]) for t in tiles
    ]
    padded += [np.full((height, width, 3), 255, np.uint8)] * (-len(padded) % columns)
    rows = [np.hstack(padded[i : i + columns]) for i in range(0, len(padded), columns)]
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.vstack(rows)):
        raise OSError(f"cannot write {out}")
    return out, results


# --- report -----------------------------------------------------------------------------------


def _crop_table(reports: Sequence[CropReport]) -> list[str]:
    lines = [
        "| reader | exact | per character | invalid (flagged) | wrong but valid | ms/crop p50 |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(
            f"| {r.name} | {r.exact}/{r.total} = {100 * r.accuracy:.1f} % | "
            f"{100 * r.char_accuracy:.2f} % | {r.invalid} | {r.wrong_but_valid} | "
            f"{np.median(r.ms):.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=default_cache_dir() / "models")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="0: default")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="only the settings table")
    parser.add_argument("--rounds", type=int, default=4, help="--sweep: timing rounds")
    parser.add_argument("--timing-only", action="store_true", help="--sweep: no exact reads")
    args = parser.parse_args(argv)

    if args.sweep:
        print(f"# Plate reader settings (read_frame ms over {args.repeats} runs each)\n")
        print("\n".join(sweep_header(args.threads)))
        rows = sweep_rows(
            args.models,
            SWEEP,
            args.threads,
            args.repeats,
            args.rounds,
            accuracy_columns=not args.timing_only,
        )
        print("\n".join(rows))
        return 0

    reader = build_plate_reader(args.models, BackendOptions(intra_op_threads=1))
    print("# Plate reading on the shared photos\n")

    print("## 500 real crops (`read_crop`)\n")
    reports = [
        evaluate_crops(reader, name="default (plate alphabet, re-detect, quick reading, pad 320)")
    ]
    if not args.no_ablations:
        det, rec = reader.detector, reader.recognizer
        ablations = {
            "no quick reading (always pad to 320)": PlateReader(det, rec, quick_accept=None),
            "no re-detection of doubtful crops": PlateReader(det, rec, redetect_crops=False),
            "full model vocabulary": PlateReader(
                det,
                PlateRecognizer(rec.backend, rec.manifest, alphabet=None),
            ),
            "no padding to 320 (batch width only)": PlateReader(
                det,
                PlateRecognizer(rec.backend, rec.manifest, min_width=0),
                redetect_crops=False,
                quick_accept=None,
            ),
        }
        reports += [evaluate_crops(r, name=name) for name, r in ablations.items()]
    print("\n".join(_crop_table(reports)))
    main_report = reports[0]
    print("\nRemaining confusions (truth→read, ∅ = nothing):", end=" ")
    print(", ".join(f"{k} ×{v}" for k, v in main_report.confusions.most_common()) or "none")
    print("\nFailures:")
    for line in main_report.failures:
        print(f"- {line}")

    print("\n## Scenes (`read_frame`)\n")
    print("| scene | label | read | score | colour | format | corner error mean / max px | IoU |")
    print("|---|---|---|---|---|---|---|---|")
    for s in evaluate_scenes(reader):
        r = s.reading
        errors = s.corner_errors
        print(
            f"| {s.label.file} | {s.label.plate} | {r.text if r else '(none)'} | "
            f"{r.score if r else 0:.3f} | {r.color.value if r else '-'} | "
            f"{r.format.value if r and r.format else '-'} | "
            f"{errors.mean():.1f} / {errors.max():.1f} | {s.iou:.2f} |"
        )

    print(f"\n## Latency (median / p90 ms over {args.repeats} runs)\n")
    print("| stage | intra-op threads | p50 ms | p90 ms |")
    print("|---|---|---|---|")
    print("\n".join(latency_rows(args.models, args.threads, args.repeats)))

    out, results = contact_sheet(reader, args.out)
    print(f"\n## Unlabelled photos: contact sheet {out}\n")
    for name, readings in results:
        found = "; ".join(
            f"{r.text or '∅'} {r.color.value} {r.format.value if r.format else 'invalid'} "
            f"{r.score:.2f}"
            for r in readings
        )
        print(f"- {name}: {found or 'no plate'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
