"""Whether a gate's scene changed outside where its faces are: a whole-frame search skipped.

Between a gate's whole-frame searches its frames are searched only around its faces
(``carry.detection_region``); the whole frame is searched every ``region_frames`` + 1 frames so
that a newcomer elsewhere is not missed. That search is wasted while nothing outside the faces
has changed. So each whole-searched frame leaves a ``Sketch``: the mean grey of every
``CELL_PX`` square of the frame. When the next whole-frame search is due, the frame's own
sketch is compared with it; if no cell outside the region about to be searched (the gate's
faces, grown by the region margin) changed by more than a few grey levels, nothing can have
come into view there, and the frame is searched around its faces only. A gate with no faces in
view skips the search altogether while its scene stays still. A whole-frame search still runs
at least every ``CarryPolicy.still_max_age_s``.

A cell averages 256 original pixels, so sensor noise and JPEG requantisation stay far below
the threshold, while a face or a body coming into view moves the cells it covers by tens of
grey levels. A change of light (a cloud, the camera's exposure) moves every cell: the whole
frame is searched, as it would have been without the sketch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Side of a sketch cell, in original pixels (a 1080p frame: 120 x 67 cells).
CELL_PX = 16


@dataclass(frozen=True, eq=False)
class Sketch:
    """``cells`` ``(rows, cols)`` uint8: the mean grey of each ``cell_px`` square of the
    original frame (its top-left ``rows * cell_px`` x ``cols * cell_px`` pixels)."""

    cells: np.ndarray
    cell_px: float


def sketch(image: np.ndarray, scale: float) -> Sketch:
    """The sketch of ``image`` ``(h, w, 3)`` uint8 BGR, which is the original frame times
    ``scale``. The cells are whole squares of ``image`` (~0.2 ms for a 960 x 540 image)."""
    step = max(1, round(CELL_PX * scale))
    rows, cols = image.shape[0] // step, image.shape[1] // step
    if rows == 0 or cols == 0:
        return Sketch(np.zeros((0, 0), dtype=np.uint8), step / scale)
    grey = cv2.cvtColor(image[: rows * step, : cols * step], cv2.COLOR_BGR2GRAY)
    # An integer factor: INTER_AREA's exact block mean (and its fast path).
    cells = cv2.resize(grey, (cols, rows), interpolation=cv2.INTER_AREA)
    return Sketch(cells, step / scale)


def face_cells(
    boxes: np.ndarray, margin: float, cell_px: float, shape: tuple[int, int]
) -> np.ndarray:
    """``shape`` ``(rows, cols)`` bool: the cells that ``boxes`` ``(n, 4)`` (original pixels),
    each grown by ``margin`` of its size on every side, touch."""
    mask = np.zeros(shape, dtype=bool)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * margin
    for (x0, y0, x1, y1), grow in zip(b, size, strict=True):
        c0 = max(0, int(np.floor((x0 - grow) / cell_px)))
        r0 = max(0, int(np.floor((y0 - grow) / cell_px)))
        c1 = int(np.ceil((x1 + grow) / cell_px))
        r1 = int(np.ceil((y1 + grow) / cell_px))
        mask[r0:r1, c0:c1] = True
    return mask


def changed_outside(
    now: Sketch,
    then: Sketch,
    boxes: np.ndarray,
    margin: float,
    threshold: float,
) -> bool:
    """Whether any cell of ``now`` differs from ``then`` by more than ``threshold`` grey levels
    outside ``boxes`` ``(n, 4)`` (original pixels: the faces then and now), each grown by
    ``margin`` of its size per side. Sketches of different frame sizes or cells always differ.
    """
    if now.cells.shape != then.cells.shape or now.cell_px != then.cell_px:
        return True
    diff = cv2.absdiff(now.cells, then.cells)
    diff[face_cells(boxes, margin, now.cell_px, diff.shape)] = 0
    return bool((diff > threshold).any())
