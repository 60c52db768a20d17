"""Plate reading: detect plates in a frame, rectify each, read its characters, judge the text.

Three parts, each usable alone:

* ``PlateDetector`` finds plates and their four corners (RetinaFace-style head).
* ``PlateRecognizer`` reads one line of characters per image (PP-OCR CTC recogniser).
* ``PlateReader`` joins them: ``read_frame`` for whole frames, ``read_crop`` for the plate
  crops many ANPR cameras send. Double-row plates (yellow lorries and buses) are split into
  their two rows and read row by row.

Every reading is a ``PlateReading``. A text that fits no mainland format (see
``recognizer.plates.text``) is returned exactly as read, with ``format=None``, a low score
and a ``reason``; nothing is ever "corrected" into a plausible plate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

import native
from recognizer.backends.base import InferenceBackend
from recognizer.models.manifest import ModelManifest
from recognizer.plates.color import PlateColor, plate_color
from recognizer.plates.geometry import corner_aspect, order_corners, rectify
from recognizer.plates.text import (
    PLATE_CHARACTERS,
    SERIAL_LOOKALIKES,
    PlateFormat,
    classify,
    is_separator,
    normalize,
    serial_start,
)
from recognizer.preprocess import to_blob
from smartgate.errors import InvalidInputError, ModelError

__all__ = [
    "INVALID_SCORE_FACTOR",
    "QUICK_ACCEPT",
    "QUICK_WIDTH",
    "LineReading",
    "PlateDetections",
    "PlateDetector",
    "PlateReader",
    "PlateReading",
    "PlateRecognizer",
]

# A reading that fits no plate format keeps this share of its mean character confidence.
INVALID_SCORE_FACTOR = 0.3
# Plates whose corners outline a shape narrower than this (width / height) are double-row
# (a single-row plate is ~3.1, a double-row one ~2.0).
DOUBLE_ROW_ASPECT = 2.5
# Double-row plates: the top row spans about the top third, the bottom row the rest. The
# row crops overlap a little so that loose corners do not cut characters.
TOP_ROW = (0.0, 0.40)
BOTTOM_ROW = (0.32, 1.0)
LINE_HEIGHT = 48
# Shrinking by at least this factor (output / input size) is done bilinearly, which is
# ~5-10x cheaper than area averaging and still touches every source pixel; stronger
# reductions average areas so that they do not alias.
LINEAR_RESIZE_MIN_FACTOR = 0.5
# ``PlateReader``: a first reading padded only to QUICK_WIDTH is kept when it fits a format
# and every character scores at least QUICK_ACCEPT (see ``PlateReader``).
QUICK_ACCEPT = 0.98
QUICK_WIDTH = 0


# --- value types ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PlateDetections:
    """Plates found in one image, best first, in original-image pixels.

    ``boxes``: ``(n, 4)`` float32 ``[x1, y1, x2, y2]``; ``scores``: ``(n,)`` float32;
    ``corners``: ``(n, 4, 2)`` float32 in the detector's (CCPD) order: bottom-right,
    bottom-left, top-left, top-right. ``order_corners`` puts one plate's corners in reading
    order whatever the tilt.
    """

    boxes: np.ndarray
    scores: np.ndarray
    corners: np.ndarray

    def __post_init__(self) -> None:
        n = self.scores.shape[0] if self.scores.ndim == 1 else -1
        if self.scores.shape != (n,):
            raise ValueError(f"scores: expected shape (n,), got {self.scores.shape}")
        if self.boxes.shape != (n, 4):
            raise ValueError(f"boxes: expected shape ({n}, 4), got {self.boxes.shape}")
        if self.corners.shape != (n, 4, 2):
            raise ValueError(f"corners: expected shape ({n}, 4, 2), got {self.corners.shape}")

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass(frozen=True, eq=False)
class LineReading:
    """What the recogniser read on one line image: the decoded text (separators included)
    and one confidence per decoded character (``(len(text),)`` float32).

    ``merged_confidences`` (same shape, or ``None``): each character's probability with its
    look-alike's added (``PlateRecognizer.lookalikes``: ``O`` and ``0``, ``I`` and ``1``),
    i.e. how sure the model is of the character once the two are read alike; ``None`` when
    the decode with look-alikes merged does not line up with this one.
    """

    text: str
    confidences: np.ndarray
    merged_confidences: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.confidences.shape != (len(self.text),):
            raise ValueError(
                f"confidences: expected shape ({len(self.text)},), got {self.confidences.shape}"
            )
        merged = self.merged_confidences
        if merged is not None and merged.shape != (len(self.text),):
            raise ValueError(
                f"merged_confidences: expected shape ({len(self.text)},), got {merged.shape}"
            )


@dataclass(frozen=True, eq=False)
class PlateReading:
    """One plate.

    * ``text``: the normalised plate number (``normalize``), e.g. ``"皖AZ576J"``; may be empty.
    * ``raw_text``: what the recogniser emitted, rows joined, e.g. ``"皖A·Z576J"``.
    * ``score``: mean confidence of the plate's characters, in ``[0, 1]``; multiplied by
      ``INVALID_SCORE_FACTOR`` when the text fits no format, 0 when nothing was read.
    * ``format``: the ``PlateFormat``, or ``None`` when the text fits none (``valid`` false).
    * ``reason``: why the reading is not trustworthy (``None`` for a valid reading).
    * ``corners``: ``(4, 2)`` float32 [top-left, top-right, bottom-right, bottom-left];
      ``box``: ``(4,)`` float32 ``[x1, y1, x2, y2]``; both in the pixels of the image that
      was read (the frame for ``read_frame``, the crop for ``read_crop``).
    * ``detection_score``: the detector's score, ``None`` when the plate was not detected
      (a crop read as it is).
    * ``char_confidences``: ``(len(text),)`` float32 when it lines up with ``text``.
    """

    text: str
    raw_text: str
    score: float
    color: PlateColor
    format: PlateFormat | None
    corners: np.ndarray
    box: np.ndarray
    reason: str | None = None
    detection_score: float | None = None
    double_row: bool = False
    char_confidences: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.float32), repr=False
    )

    def __post_init__(self) -> None:
        if self.corners.shape != (4, 2):
            raise ValueError(f"corners: expected shape (4, 2), got {self.corners.shape}")
        if self.box.shape != (4,):
            raise ValueError(f"box: expected shape (4,), got {self.box.shape}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score: expected a value in [0, 1], got {self.score}")
        if self.format is None and self.reason is None:
            raise ValueError("a reading without a format must say why (reason)")

    @property
    def valid(self) -> bool:
        return self.format is not None


# --- detection --------------------------------------------------------------------------------


def _resize_long_side(
    image: np.ndarray, long_side: int, linear_min_factor: float = LINEAR_RESIZE_MIN_FACTOR
) -> tuple[np.ndarray, float]:
    """Shrink so the long side is at most ``long_side`` (never enlarge); returns the factor.

    Bilinear when the factor is at least ``linear_min_factor``, area averaging below.
    """
    h, w = image.shape[:2]
    factor = min(1.0, long_side / max(h, w))
    if factor == 1.0:
        return image, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interpolation = cv2.INTER_LINEAR if factor >= linear_min_factor else cv2.INTER_AREA
    return cv2.resize(image, size, interpolation=interpolation), size[0] / w


def _extra_levels(value: object, name: str, manifest: ModelManifest) -> tuple[tuple[int, ...], ...]:
    if not isinstance(value, Sequence) or not all(isinstance(v, Sequence) for v in value):
        raise ModelError(f"model '{manifest.name}': extra.{name} must be a list of lists")
    return tuple(tuple(int(s) for s in level) for level in value)


class PlateDetector:
    """The plate detector (``plate-det``) through any ``InferenceBackend``.

    Preprocessing and decoding come from the manifest: BGR minus the manifest mean, long side
    at most ``extra.max_long_side`` (640, never enlarged; bilinear while the factor is at
    least ``linear_resize_min_factor``, 0.5, area averaging below: 0.25 ms instead of 2.3
    ms for a 720 × 1160 photo, same detections and readings on the labelled and unlabelled
    photos; > 1 always averages areas), priors with ``extra.steps`` and
    ``extra.min_sizes``, ``extra.variances``; thresholds default to ``extra.score_threshold``
    (0.7) and ``extra.nms_iou`` (0.4).
    """

    def __init__(
        self,
        backend: InferenceBackend,
        manifest: ModelManifest,
        *,
        long_side: int | None = None,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        max_plates: int = 16,
        linear_resize_min_factor: float = LINEAR_RESIZE_MIN_FACTOR,
    ) -> None:
        extra = manifest.extra
        self.backend = backend
        self.manifest = manifest
        self.long_side = int(long_side or extra.get("max_long_side", 640))
        self.score_threshold = float(
            score_threshold if score_threshold is not None else extra.get("score_threshold", 0.7)
        )
        self.nms_iou = float(nms_iou if nms_iou is not None else extra.get("nms_iou", 0.4))
        self.max_plates = max_plates
        self.linear_resize_min_factor = linear_resize_min_factor
        self.steps = tuple(int(s) for s in extra.get("steps", native.RETINAFACE_STEPS))
        self.min_sizes = _extra_levels(
            extra.get("min_sizes", native.PLATE_MIN_SIZES), "min_sizes", manifest
        )
        variances = tuple(float(v) for v in extra.get("variances", (0.1, 0.2)))
        if len(variances) != 2:
            raise ModelError(f"model '{manifest.name}': extra.variances needs 2 values")
        self.variances = (variances[0], variances[1])
        self._input = manifest.input.name
        self._swap_rb = manifest.input.color_order == "RGB"
        if len(manifest.outputs) != 3:
            raise ModelError(
                f"model '{manifest.name}': a plate detector has 3 outputs (box regressions, "
                f"scores, corner regressions), the manifest names {list(manifest.outputs)}"
            )
        self._outputs = tuple(manifest.outputs)

    def warm_up(self) -> None:
        self.detect(np.zeros((360, 640, 3), dtype=np.uint8))

    def detect(self, image: np.ndarray, image_scale: float = 1.0) -> PlateDetections:
        """Find plates in ``image`` (``(h, w, 3)`` uint8 BGR).

        ``image_scale`` says how ``image`` relates to the original frame (image = original ×
        image_scale) so that boxes and corners come back in original pixels.
        """
        resized, factor = _resize_long_side(image, self.long_side, self.linear_resize_min_factor)
        blob = to_blob(resized, self.manifest.input.mean, self.manifest.input.std, self._swap_rb)
        out = self.backend.run({self._input: blob})
        loc, conf, landms = (out[name][0] for name in self._outputs)
        priors = native.prior_boxes(resized.shape[0], resized.shape[1], self.steps, self.min_sizes)
        boxes, scores, points = native.decode_detections(
            loc,
            conf[:, 1],
            landms,
            priors,
            score_threshold=self.score_threshold,
            nms_iou=self.nms_iou,
            variances=self.variances,
            max_out=self.max_plates,
        )
        # Pixel centres: x in the resized image is (x + 0.5) / f - 0.5 in the original.
        f = factor * image_scale
        shift = 0.5 / f - 0.5
        return PlateDetections(
            boxes=(boxes / f + shift).astype(np.float32),
            scores=np.asarray(scores, dtype=np.float32),
            corners=(points.reshape(-1, 4, 2) / f + shift).astype(np.float32),
        )


# --- recognition ------------------------------------------------------------------------------


class PlateRecognizer:
    """The CTC line recogniser (``plate-rec``, PP-OCRv4) through any ``InferenceBackend``.

    Each line image is resized to height 48 with its aspect ratio kept (width capped at
    ``max_width``, 320), normalised with the manifest's mean/std ((x/255 − 0.5)/0.5 on BGR),
    and a batch is padded on the right with zeros (mid-grey) to the widest line and to at
    least ``min_width`` (``recognize(..., min_width=...)`` overrides it per call): PP-OCR
    pads every line to 320 in training and in its own pipeline, and narrower inputs lose
    accuracy (98.2 % vs 96.4 % exact on the 500 real crops) though they run faster (8 ms
    instead of 20 ms for a 48 × 130 plate on one thread; the time grows linearly with the
    padded width). ``PlateReader`` gets most of both (see its ``quick_accept``).

    Classes: 0 is the CTC blank, ``i`` in ``1..len(characters)`` is ``characters[i - 1]``,
    and one more class, when the model has it, is the space PaddleOCR appends. The
    characters come from ``manifest.extra["characters"]`` (copied from the ONNX metadata
    at fetch time) unless given.

    ``alphabet`` restricts decoding to the characters a plate can show (plus separators):
    every other class's probability is set to 0 before the greedy decode, so a smudge is
    read as the likeliest plate character or as nothing, never as ``第`` or ``：``. Each
    character's confidence stays its probability under the full model. ``alphabet=None``
    decodes over the model's whole vocabulary.

    ``lookalikes``: pairs of characters the plate text reads alike in some places (``O``
    as ``0`` and ``I`` as ``1`` in the serial part); each ``LineReading`` also carries
    ``merged_confidences``, from a second greedy decode with each pair's probabilities
    added up (the model often splits a serial ``0`` between ``0`` and ``O``).
    """

    def __init__(
        self,
        backend: InferenceBackend,
        manifest: ModelManifest,
        *,
        characters: Sequence[str] | None = None,
        alphabet: str | None = PLATE_CHARACTERS,
        max_width: int | None = None,
        min_width: int = 320,
        max_batch: int = 16,
        lookalikes: Sequence[tuple[str, str]] = SERIAL_LOOKALIKES,
    ) -> None:
        chars = characters if characters is not None else manifest.extra.get("characters")
        if not isinstance(chars, Sequence) or isinstance(chars, str) or not chars:
            raise ModelError(
                f"model '{manifest.name}': no character list (manifest extra.characters); "
                "run `smartgate models fetch`"
            )
        self.backend = backend
        self.manifest = manifest
        self.characters: tuple[str, ...] = tuple(str(c) for c in chars)
        size = manifest.input.size
        self.height = int(size[0]) if size is not None and size[0] else LINE_HEIGHT
        self.max_width = int(max_width or manifest.extra.get("max_width", 320))
        self.min_width = int(min_width)
        self.max_batch = max(1, int(max_batch))
        self.alphabet = alphabet
        self.lookalikes = tuple((str(a), str(b)) for a, b in lookalikes)
        self._blank = int(manifest.extra.get("ctc_blank", 0))
        self._input = manifest.input.name
        self._output = manifest.outputs[0]
        self._swap_rb = manifest.input.color_order == "RGB"
        # How to decode the model's classes (known after the first run); one object so
        # that threads never see half of it.
        self._table: _ClassTable | None = None

    def _class_table(self, n_classes: int) -> _ClassTable:
        table = self._table
        if table is not None and table.n_classes == n_classes:
            return table
        n_chars = len(self.characters)
        if n_classes == n_chars + 2:
            classes = ("", *self.characters, " ")
        elif n_classes == n_chars + 1:
            classes = ("", *self.characters)
        else:
            raise ModelError(
                f"model '{self.manifest.name}': {n_classes} output classes do not fit "
                f"{n_chars} characters (expected blank + characters [+ space])"
            )
        if self.alphabet is None:
            decoded = np.arange(n_classes)
        else:
            allowed = set(self.alphabet)
            decoded = np.array(
                [
                    i
                    for i, c in enumerate(classes)
                    if i == self._blank or c in allowed or is_separator(c)
                ]
            )
        texts = tuple(classes[i] for i in decoded)
        column = {t: j for j, t in enumerate(texts) if t}
        folds = tuple(
            (column[a], column[b]) for a, b in self.lookalikes if a in column and b in column
        )
        fold_map = np.arange(len(decoded), dtype=np.int32)
        for a, b in folds:
            fold_map[a] = b
        self._table = _ClassTable(
            n_classes=n_classes,
            columns=None if self.alphabet is None else decoded,
            texts=texts,
            blank=int(np.flatnonzero(decoded == self._blank)[0]),
            folds=folds,
            fold_map=fold_map,
        )
        return self._table

    def warm_up(self) -> None:
        width = self.min_width or LINE_HEIGHT * 3  # a typical plate when nothing is padded
        self.recognize([np.zeros((self.height, width, 3), np.uint8)])

    def line_width(self, height: int, width: int) -> int:
        """The width a ``height × width`` line is resized to (before padding)."""
        return int(min(self.max_width, max(1, math.ceil(self.height * width / max(height, 1)))))

    def recognize(
        self, lines: Sequence[np.ndarray], *, min_width: int | None = None
    ) -> list[LineReading]:
        """Read each ``(h, w, 3)`` uint8 BGR line image; one ``LineReading`` per image.

        ``min_width``: pad each batch to at least this width instead of ``self.min_width``
        (0: to the widest line only).
        """
        pad_to = self.min_width if min_width is None else int(min_width)
        results: list[LineReading] = []
        for start in range(0, len(lines), self.max_batch):
            results.extend(self._recognize_batch(lines[start : start + self.max_batch], pad_to))
        return results

    def _recognize_batch(self, lines: Sequence[np.ndarray], min_width: int) -> list[LineReading]:
        if not lines:
            return []
        resized = []
        for line in lines:
            if line.ndim != 3 or line.shape[2] != 3 or line.dtype != np.uint8 or not line.size:
                raise ValueError(
                    f"line: expected a non-empty (h, w, 3) uint8 array, got {line.dtype} "
                    f"{line.shape}"
                )
            width = self.line_width(line.shape[0], line.shape[1])
            interp = cv2.INTER_AREA if line.shape[0] > self.height else cv2.INTER_LINEAR
            resized.append(cv2.resize(line, (width, self.height), interpolation=interp))
        batch_width = max(min_width, *(r.shape[1] for r in resized))
        blob = np.zeros((len(resized), 3, self.height, batch_width), dtype=np.float32)
        mean, std = self.manifest.input.mean, self.manifest.input.std
        for i, r in enumerate(resized):
            blob[i, :, :, : r.shape[1]] = to_blob(r, mean, std, self._swap_rb)[0]
        probs = self.backend.run({self._input: blob})[self._output]
        if probs.ndim != 3 or probs.shape[0] != len(resized):
            raise ModelError(
                f"model '{self.manifest.name}': expected ({len(resized)}, t, c) probabilities, "
                f"got {probs.shape}"
            )
        table = self._class_table(probs.shape[2])
        # Only the classes a plate can show are decoded (the others count as probability 0).
        if table.columns is not None:
            probs = probs[:, :, table.columns]
        labels, confidences, lengths = native.ctc_greedy_decode(probs, table.blank)
        folded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if table.folds:
            merged = np.array(probs, dtype=np.float32, copy=True)
            for a, b in table.folds:
                merged[:, :, b] += merged[:, :, a]
                merged[:, :, a] = 0.0
            folded = native.ctc_greedy_decode(merged, table.blank)
        out = []
        for row in range(len(resized)):
            n = int(lengths[row])
            columns = labels[row, :n]
            text = "".join(table.texts[k] for k in columns)
            # A class may (in principle) be several code points; keep one confidence each.
            repeats = [max(1, len(table.texts[k])) for k in columns]
            conf = np.repeat(confidences[row, :n], repeats)[: len(text)].astype(np.float32)
            merged_conf = None
            if (
                folded is not None
                and int(folded[2][row]) == n
                and np.array_equal(table.fold_map[columns], folded[0][row, :n])
            ):
                merged_conf = np.ascontiguousarray(
                    np.repeat(folded[1][row, :n], repeats)[: len(text)], dtype=np.float32
                )
            out.append(
                LineReading(
                    text=text,
                    confidences=np.ascontiguousarray(conf),
                    merged_confidences=merged_conf,
                )
            )
        return out


@dataclass(frozen=True, eq=False)
class _ClassTable:
    """How ``PlateRecognizer`` decodes a model with ``n_classes`` output classes."""

    n_classes: int
    columns: np.ndarray | None  # the model classes that are decoded, ascending; None: all
    texts: tuple[str, ...]  # the text of each decoded column ("" for the blank)
    blank: int  # the blank's decoded column
    folds: tuple[tuple[int, int], ...]  # look-alikes (a, b): column a merged into b
    fold_map: np.ndarray  # (columns,) int32: each column, or the one it is merged into


# --- the reader -------------------------------------------------------------------------------


def _crop_rectangle(height: int, width: int) -> np.ndarray:
    return np.array(
        [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32
    )


def _box_of(corners: np.ndarray) -> np.ndarray:
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)]).astype(np.float32)


def _as_bgr(image: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InvalidInputError(f"{what}: expected a uint8 image array")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise InvalidInputError(f"{what}: expected (h, w), (h, w, 3) or (h, w, 4), got {image.shape}")


def _split_rows(plate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top and bottom row of a flat double-row plate (overlapping a little)."""
    h = plate.shape[0]
    rows = []
    for lo, hi in (TOP_ROW, BOTTOM_ROW):
        y0 = round(lo * h)
        rows.append(plate[y0 : max(y0 + 1, round(hi * h))])
    return rows[0], rows[1]


@dataclass(frozen=True)
class _Layout:
    """One way to read a plate: its line images and the flat plate for the colour."""

    lines: tuple[np.ndarray, ...]
    flat: np.ndarray
    double_row: bool


@dataclass(frozen=True)
class _Candidate:
    """A plate to read: where it is and the layouts to try (the best reading wins).

    ``layouts[0]``, when there is one, is the plate read as a single row; ``more`` makes
    further layouts (the double-row reading of a detected plate) only when they are needed.
    """

    corners: np.ndarray  # [TL, TR, BR, BL], in reported pixels
    detection_score: float | None
    layouts: tuple[_Layout, ...] = ()
    problem: str | None = None  # set when the plate cannot be read at all
    more: Callable[[], tuple[_Layout, ...]] | None = None

    @property
    def box(self) -> np.ndarray:
        return _box_of(self.corners)

    def all_layouts(self) -> tuple[_Layout, ...]:
        return self.layouts + (self.more() if self.more is not None else ())


class PlateReader:
    """Frames or crops in, ``PlateReading``s out (see the module docstring).

    Layout: a plate whose corners outline a shape narrower than ``double_row_aspect``
    (width / height) may be a double-row plate, or a single-row plate seen at a slant; it
    is read both ways (the double-row way splits the flat plate into ``TOP_ROW`` and
    ``BOTTOM_ROW``) and the better reading wins: a valid format first, then the higher
    score.

    Quick first reading (``quick_accept`` = ``QUICK_ACCEPT``, 0.98; ``quick_width`` =
    ``QUICK_WIDTH``, 0): the recogniser's time grows with the padded width (20 ms at 320,
    ~9 ms for a plate's own ~150 px on one thread), so each plate is first read as a single
    row padded only to ``quick_width`` (0: the line's own width). That reading is kept when
    it fits a plate format and every character of its normalised text has a confidence of
    at least ``quick_accept`` (in the serial part with the look-alike's probability added,
    ``LineReading.merged_confidences``: a serial ``O`` is read as ``0`` anyway); otherwise
    the plate is read again in every layout padded to the recogniser's ``min_width`` (320)
    and that reading counts, so the double-row check only runs for a plate the quick
    reading did not settle. On the 500 real crops, read as they are (``read_crop``) and
    pasted into frames at a plate's aspect (``read_frame``), the quick reading settled 75 %
    of the frame plates (88 % with ``quick_width=192``, 95 % with 224), exact reads matched
    always padding to 320 (494/500 crops; 494 vs 493 in frames) and wrong-but-valid
    readings did not grow (``python -m benchmarks.plate_accuracy --sweep``).
    ``quick_accept=None`` always pads to ``min_width``.

    ``min_plate_height``: plates (or crops) lower than this many pixels (in the image they
    are rectified from) are not read; the reading says so. ``margin``: share of the plate
    height added around the detected corners before rectifying.

    ``redetect_crops``: when ``read_crop``'s reading of the crop as it is fits no format or
    scores below ``redetect_below``, it also runs the detector on the (enlarged, padded)
    crop and, if that finds the plate, reads the rectified plate; the better of the two
    readings wins. Camera crops are often loose and tilted: on the 500 real crops this
    lifts exact reads from 491 to 494 while re-detecting only 7 of them.
    """

    def __init__(
        self,
        detector: PlateDetector,
        recognizer: PlateRecognizer,
        *,
        min_plate_height: float = 8.0,
        double_row_aspect: float = DOUBLE_ROW_ASPECT,
        margin: float = 0.0,
        redetect_crops: bool = True,
        redetect_below: float = 0.95,
        redetect_height: int = 48,
        quick_accept: float | None = QUICK_ACCEPT,
        quick_width: int = QUICK_WIDTH,
    ) -> None:
        self.detector = detector
        self.recognizer = recognizer
        self.min_plate_height = min_plate_height
        self.double_row_aspect = double_row_aspect
        self.margin = margin
        self.redetect_crops = redetect_crops
        self.redetect_below = redetect_below
        self.redetect_height = redetect_height
        self.quick_accept = quick_accept
        self.quick_width = quick_width

    def warm_up(self) -> None:
        self.detector.warm_up()
        self.recognizer.warm_up()
        # The quick reading runs at the plate's own width: allocate for a typical one too.
        self.recognizer.recognize(
            [np.zeros((self.recognizer.height, 150, 3), np.uint8)], min_width=self.quick_width
        )

    # -- public API --

    def read_frame(
        self,
        image: np.ndarray,
        image_scale: float = 1.0,
        *,
        full_image: np.ndarray | None = None,
    ) -> list[PlateReading]:
        """Every plate the detector finds in ``image`` (BGR uint8), best detection first.

        Corners and boxes are in original-frame pixels (``image`` = original ×
        ``image_scale``). A frame without plates gives ``[]``.

        ``full_image``: the original frame when ``image`` is a reduced-scale decode of it
        (its size must be ``image``'s divided by ``image_scale``, to a pixel). Detection
        still runs on ``image``; the plates are rectified from ``full_image``'s pixels.
        """
        image = _as_bgr(image, "frame")
        scale = float(image_scale)
        if not math.isfinite(scale) or scale <= 0:
            raise InvalidInputError(f"image_scale: expected a positive number, got {image_scale}")
        source = image
        if full_image is not None:
            source = _as_bgr(full_image, "full_image")
            h, w = image.shape[:2]
            fh, fw = source.shape[:2]
            if abs(fh * scale - h) > 1 + 0.01 * h or abs(fw * scale - w) > 1 + 0.01 * w:
                raise InvalidInputError(
                    f"full_image: {fw}×{fh} px does not match the {w}×{h} px frame at "
                    f"image_scale {scale:g} (expected about {w / scale:.0f}×{h / scale:.0f})"
                )
        detections = self.detector.detect(image)  # in the pixels of ``image``
        candidates = []
        for corners, score in zip(detections.corners, detections.scores, strict=True):
            ordered = order_corners(corners)
            reported = (ordered + np.float32(0.5)) / np.float32(scale) - np.float32(0.5)
            on_source = ordered if full_image is None else reported
            candidates.append(self._detected(source, on_source, reported, float(score)))
        return self._read(candidates)

    def read_crop(self, crop: np.ndarray) -> PlateReading:
        """The plate in a camera's plate crop (BGR uint8), corners in crop pixels.

        Never raises for content: a crop too small to read, or one without a plate, gives a
        reading with a low score and a ``reason``.
        """
        crop = _as_bgr(crop, "crop")
        h, w = crop.shape[:2]
        rectangle = _crop_rectangle(max(h, 1), max(w, 1))
        if h < self.min_plate_height or w < self.min_plate_height:
            return self._unreadable(
                _Candidate(
                    rectangle,
                    None,
                    problem=f"crop too small to read ({w}×{h} px, needs "
                    f"{self.min_plate_height:g} px)",
                )
            )
        whole = self._read([_Candidate(rectangle, None, self._layouts(crop, w / h))])[0]
        if not self.redetect_crops or (whole.valid and whole.score >= self.redetect_below):
            return whole
        found = self._redetect(crop)
        if found is None:
            if whole.reason is None:
                return whole
            return replace(whole, reason=f"{whole.reason}; the detector found no plate in the crop")
        again = self._read([found])[0]
        return max((whole, again), key=lambda r: (r.valid, r.score))

    # -- internals --

    def _layouts(self, flat: np.ndarray, aspect: float) -> tuple[_Layout, ...]:
        """The ways to read an already flat plate of the given apparent aspect ratio."""
        single = _Layout((flat,), flat, double_row=False)
        if aspect >= self.double_row_aspect:
            return (single,)
        return (single, _Layout(_split_rows(flat), flat, double_row=True))

    def _detected(
        self,
        image: np.ndarray,
        corners: np.ndarray,
        reported: np.ndarray,
        detection_score: float,
    ) -> _Candidate:
        """One detected plate of ``image``: ``corners`` in its pixels, [TL, TR, BR, BL]."""
        tl, tr, br, bl = corners.astype(np.float64)
        plate_height = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
        if plate_height < self.min_plate_height:
            return _Candidate(
                reported,
                detection_score,
                problem=(
                    f"plate too small to read ({plate_height:.0f} px high, needs "
                    f"{self.min_plate_height:g} px)"
                ),
            )
        aspect = corner_aspect(corners)
        line_h, line_w = self.recognizer.height, self.recognizer.max_width
        single_flat = rectify(image, corners, height=line_h, max_width=line_w, margin=self.margin)
        single = _Layout((single_flat,), single_flat, double_row=False)
        if aspect >= self.double_row_aspect:
            return _Candidate(reported, detection_score, (single,))

        def double() -> tuple[_Layout, ...]:
            # Warped three lines high, so that each row of a double-row plate keeps ~48 px.
            tall = rectify(
                image, corners, height=3 * line_h, max_width=3 * line_w, margin=self.margin
            )
            return (_Layout(_split_rows(tall), tall, double_row=True),)

        return _Candidate(reported, detection_score, (single,), more=double)

    def _redetect(self, crop: np.ndarray) -> _Candidate | None:
        """Find the plate inside ``crop``, enlarged to ``redetect_height`` and padded by its
        own size on every side so that the detector sees a plate of a size it knows."""
        h, w = crop.shape[:2]
        scale = self.redetect_height / h
        big = cv2.resize(
            crop,
            (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA,
        )
        bh, bw = big.shape[:2]
        canvas = cv2.copyMakeBorder(big, bh, bh, bw, bw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        found = self.detector.detect(canvas)
        if not len(found):
            return None
        corners = order_corners(found.corners[0])
        # Canvas → enlarged crop → crop pixels (pixel centres: c_big = (c + 0.5) · s − 0.5).
        factor = np.array([bw / w, bh / h], dtype=np.float32)
        offset = np.array([bw, bh], dtype=np.float32)
        reported = (corners - offset + np.float32(0.5)) / factor - np.float32(0.5)
        return self._detected(canvas, corners, reported.astype(np.float32), float(found.scores[0]))

    def _unreadable(self, c: _Candidate) -> PlateReading:
        return PlateReading(
            text="",
            raw_text="",
            score=0.0,
            color=PlateColor.UNKNOWN,
            format=None,
            corners=c.corners.astype(np.float32),
            box=c.box,
            reason=c.problem or "nothing to read",
            detection_score=c.detection_score,
        )

    def _read(self, candidates: Sequence[_Candidate]) -> list[PlateReading]:
        """The best reading of every candidate: a confident quick reading of its first
        layout, else every layout read in one recogniser batch padded to ``min_width``."""
        readings: list[PlateReading | None] = [None] * len(candidates)
        if self.quick_accept is not None and self.quick_width < self.recognizer.min_width:
            for i, c in enumerate(candidates):
                if not c.layouts:
                    continue
                first = c.layouts[0]
                rows = self.recognizer.recognize(first.lines, min_width=self.quick_width)
                quick, lowest = self._judge(rows, c, first)
                if quick.valid and lowest >= self.quick_accept:
                    readings[i] = quick
        pending = {i: c.all_layouts() for i, c in enumerate(candidates) if readings[i] is None}
        lines = [line for layouts in pending.values() for lay in layouts for line in lay.lines]
        texts = iter(self.recognizer.recognize(lines))
        for i, layouts in pending.items():
            options = [
                self._judge([next(texts) for _ in layout.lines], candidates[i], layout)[0]
                for layout in layouts
            ]
            readings[i] = (
                max(options, key=lambda r: (r.valid, r.score))
                if options
                else self._unreadable(candidates[i])
            )
        return [r for r in readings if r is not None]

    def _judge(
        self, rows: Sequence[LineReading], c: _Candidate, layout: _Layout
    ) -> tuple[PlateReading, float]:
        """The reading of one layout, and the lowest confidence of a character of its
        normalised text (look-alikes merged where ``normalize`` reads them alike; 0 when
        the confidences do not line up with the text)."""
        raw = "".join(r.text for r in rows)
        confidences = np.concatenate([r.confidences for r in rows])
        merged = np.concatenate(
            [r.confidences if r.merged_confidences is None else r.merged_confidences for r in rows]
        )
        kept = np.array([not is_separator(ch) for ch in raw], dtype=bool)
        char_conf = confidences[kept] if kept.size else np.zeros(0, np.float32)
        text = normalize(raw)
        lowest = 0.0
        if len(char_conf) != len(text):  # NFKC changed the length; keep what lines up
            char_conf = np.zeros(0, np.float32)
        elif text:
            head = serial_start(text)
            serial = np.maximum(char_conf[head:], merged[kept][head:])
            lowest = float(min(char_conf[:head].min(initial=1.0), serial.min(initial=1.0)))
        fmt = classify(text)
        mean = float(np.mean(confidences[kept])) if kept.any() else 0.0
        mean = min(max(mean, 0.0), 1.0)
        reason: str | None = None
        if not text:
            score, reason = 0.0, "no characters read"
        elif fmt is None:
            score = mean * INVALID_SCORE_FACTOR
            reason = f"{text!r} ({len(text)} characters) fits no mainland plate format"
        else:
            score = mean
        reading = PlateReading(
            text=text,
            raw_text=raw,
            score=score,
            color=plate_color(layout.flat),
            format=fmt,
            corners=c.corners.astype(np.float32),
            box=c.box,
            reason=reason,
            detection_score=c.detection_score,
            double_row=layout.double_row,
            char_confidences=char_conf.astype(np.float32),
        )
        return reading, lowest
