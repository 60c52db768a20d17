"""Five-point similarity alignment onto the 112×112 ArcFace template."""

from __future__ import annotations

import cv2
import numpy as np

# (x, y) of left eye, right eye, nose tip, left and right mouth corners in a 112×112 crop.
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src → dst.

    ``src``, ``dst``: ``(n, 2)`` point sets, n >= 2. Returns the ``(2, 3)`` affine matrix M
    with ``dst ≈ src @ M[:, :2].T + M[:, 2]`` (Umeyama 1991, without reflection).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"expected two (n>=2, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / src.shape[0]
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / src.shape[0]
    if var_src == 0.0:
        raise ValueError("source points are all identical; no transform exists")
    scale = float((s * d).sum() / var_src)
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(
    image: np.ndarray, landmarks: np.ndarray, size: int = 112, image_scale: float = 1.0
) -> np.ndarray:
    """Warp the face with ``landmarks`` (``(5, 2)`` in original pixels) to ``(size, size, 3)``.

    ``image`` may be a reduced-scale decode (image = original * ``image_scale``).
    """
    template = TEMPLATE_112 * (size / 112.0)
    # Pixel centres: original x maps to x * s + (s - 1) / 2 in an image reduced by s.
    points = np.asarray(landmarks, dtype=np.float64) * image_scale + (image_scale - 1.0) / 2.0
    matrix = umeyama_similarity(points, template)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def context_crop(
    image: np.ndarray, box: np.ndarray, factor: float, size: int, image_scale: float = 1.0
) -> np.ndarray:
    """The liveness model's input: ``box`` (original pixels) grown ``factor`` times about its
    centre (less if the image is too small), shifted to lie inside the image, and resized to
    ``(size, size, 3)``. This mirrors the crop the model was trained with."""
    img_h, img_w = image.shape[:2]
    x1, y1, x2, y2 = (np.asarray(box, dtype=np.float64) * image_scale).tolist()
    box_w, box_h = x2 - x1, y2 - y1
    if box_w <= 0 or box_h <= 0:
        raise ValueError(f"box {box} has no area")
    grow = min((img_h - 1) / box_h, (img_w - 1) / box_w, factor)
    new_w, new_h = box_w * grow, box_h * grow
    left = min(max(0.0, (x1 + x2 - new_w) / 2.0), img_w - 1 - new_w)
    top = min(max(0.0, (y1 + y2 - new_h) / 2.0), img_h - 1 - new_h)
    c0, r0 = max(int(left), 0), max(int(top), 0)
    c1, r1 = min(int(left + new_w), img_w - 1), min(int(top + new_h), img_h - 1)
    patch = image[r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)
