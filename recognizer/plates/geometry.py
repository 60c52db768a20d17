"""Plate geometry: put four corners in reading order and warp the plate flat.

Pure functions over arrays. Coordinates are ``(x, y)`` in pixels with ``y`` pointing down;
a point ``(x, y)`` is the centre of pixel column ``x``, row ``y``.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["corner_aspect", "order_corners", "rectify"]


def _as_corners(corners: np.ndarray) -> np.ndarray:
    pts = np.asarray(corners, dtype=np.float64)
    if pts.shape != (4, 2):
        raise ValueError(f"corners: expected shape (4, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("corners: expected finite coordinates")
    return pts


def order_corners(corners: np.ndarray) -> np.ndarray:
    """``(4, 2)`` corners, any order → ``(4, 2)`` float32 [top-left, top-right, bottom-right,
    bottom-left].

    The points are put in clockwise order (as seen on screen) around their centroid; the
    start is the point whose outgoing edge points most nearly to the right, i.e. the top
    edge. This holds for any quadrilateral tilted by less than 45° either way, whatever its
    aspect ratio, and is unchanged by translation and scale. Beyond 45° "top" is ambiguous;
    the edge nearest to horizontal-rightward still wins. Degenerate input (repeated points)
    gives some order of the same four points, never an error.
    """
    pts = _as_corners(corners)
    centre = pts.mean(axis=0)
    angles = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    # Ascending angle with y down is clockwise on screen; ties keep input order.
    ring = pts[np.argsort(angles, kind="stable")]
    edges = np.roll(ring, -1, axis=0) - ring
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    rightward = np.divide(
        edges[:, 0], lengths, out=np.full(4, -np.inf), where=lengths > 0
    )  # cos of each edge's angle to +x
    start = int(np.argmax(rightward))
    return np.roll(ring, -start, axis=0).astype(np.float32)


def corner_aspect(corners: np.ndarray) -> float:
    """Width / height of the plate the corners outline (mean of opposite sides; any order).

    A single-row mainland plate (440 × 140 mm) gives about 3.1, a double-row one (440 × 220
    mm) about 2.0. Returns 0.0 for a plate of no height.
    """
    tl, tr, br, bl = order_corners(corners).astype(np.float64)
    width = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    height = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    return float(width / height) if height > 0 else 0.0


def rectify(
    image: np.ndarray,
    corners: np.ndarray,
    height: int = 48,
    max_width: int = 320,
    margin: float = 0.0,
) -> np.ndarray:
    """Warp the quadrilateral ``corners`` (``(4, 2)``, any order) of ``image`` flat.

    ``image``: ``(h, w, 3)`` (or ``(h, w)``) uint8. Returns a ``(height, width, 3)`` crop with
    ``width = round(height * corner_aspect)``, clipped to ``[1, max_width]``; the corners
    land on the crop's outer pixel edges. ``margin`` widens the outline first by that
    fraction of the plate's height on every side (0.1 keeps a tenth of a plate height of
    surroundings). Pixels outside the image repeat its border. Plates more than twice
    ``height`` are warped larger and shrunk by area averaging (no aliasing).
    """
    if image.ndim not in (2, 3) or image.dtype != np.uint8:
        raise ValueError(
            f"image: expected an (h, w, 3) or (h, w) uint8 array, got {image.dtype} {image.shape}"
        )
    if height < 1 or max_width < 1:
        raise ValueError(f"height and max_width must be >= 1, got {height}, {max_width}")
    tl, tr, br, bl = order_corners(corners).astype(np.float64)
    if margin:
        # Push every corner out along the plate's own axes (follows tilt and perspective).
        side = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
        along = ((tr - tl) + (br - bl)) / 2
        down = ((bl - tl) + (br - tr)) / 2
        along /= max(float(np.linalg.norm(along)), 1e-9)
        down /= max(float(np.linalg.norm(down)), 1e-9)
        dx, dy = along * side * margin, down * side * margin
        tl, tr, br, bl = tl - dx - dy, tr + dx - dy, br + dx + dy, bl - dx + dy
    src = np.array([tl, tr, br, bl], dtype=np.float32)
    aspect = corner_aspect(src)
    width = int(np.clip(round(height * aspect), 1, max_width))
    # A plate much larger than the output is warped at up to 4x first and then shrunk by
    # area averaging: a bilinear warp straight to 48 px would alias its strokes.
    source_height = float(np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    factor = min(4, int(source_height // height)) if source_height >= 2 * height else 1
    out_w, out_h = width * factor, height * factor
    dst = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], dtype=np.float32) - np.float32(
        0.5
    )
    matrix = cv2.getPerspectiveTransform(src, dst)
    flat = cv2.warpPerspective(
        image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if factor > 1:
        flat = cv2.resize(flat, (width, height), interpolation=cv2.INTER_AREA)
    return flat
