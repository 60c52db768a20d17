"""Best-shot thumbnails: a face or plate box cut from a frame, shrunk and JPEG-encoded.

The passages keep one thumbnail per passage (its best shot). The embedded node cuts it from the
frame it already holds decoded, and shrinks and encodes it only once the passage needs the JPEG
(``cluster.passages._Best``); a cluster worker cuts one for every face and plate it finds
(~0.2 ms each) and sends the JPEG bytes back, so the frontend never decodes a frame again just
for a thumbnail (a 1080p re-decode costs ~4 ms, and most frames of a passage improve on the best
shot while the person walks towards the camera).
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np

THUMBNAIL_SIDE: Final = 160  # longest side of a best-shot JPEG, pixels
THUMBNAIL_QUALITY: Final = 85
FACE_MARGIN: Final = 0.3  # share of the box added on each side of a face
PLATE_MARGIN: Final = 0.15


def crop_box(image: np.ndarray, box: np.ndarray, scale: float, margin: float) -> np.ndarray:
    """``box`` ``(4,)`` x1 y1 x2 y2 in original pixels, grown by ``margin`` of its size on each
    side, scaled by ``scale`` onto ``image`` ``(h, w, 3)`` and clipped to it (a view, at least
    one pixel)."""
    x1, y1, x2, y2 = (np.asarray(box, dtype=np.float64) * scale).tolist()
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    h, w = image.shape[:2]
    c0, r0 = max(0, int(x1 - mx)), max(0, int(y1 - my))
    c1, r1 = min(w, int(x2 + mx) + 1), min(h, int(y2 + my) + 1)
    return image[r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)]


def encode_thumbnail(crop: np.ndarray | None) -> bytes:
    """``crop`` ``(h, w, 3)`` uint8 BGR shrunk to at most ``THUMBNAIL_SIDE`` and JPEG-encoded;
    empty bytes for no crop."""
    if crop is None or crop.size == 0:
        return b""
    h, w = crop.shape[:2]
    factor = min(1.0, THUMBNAIL_SIDE / max(h, w))
    if factor < 1.0:
        crop = cv2.resize(
            crop,
            (max(1, round(w * factor)), max(1, round(h * factor))),
            interpolation=cv2.INTER_AREA,
        )
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
    return buf.tobytes() if ok else b""


def face_thumbnail(scaled: np.ndarray, box: np.ndarray, scale: float) -> bytes:
    """A face's thumbnail from the detection-scale image (``scaled = original × scale``)."""
    return encode_thumbnail(crop_box(scaled, box, scale, FACE_MARGIN))


def plate_thumbnail(full: np.ndarray, box: np.ndarray) -> bytes:
    """A plate's thumbnail from the full-resolution image (plates are small)."""
    return encode_thumbnail(crop_box(full, box, 1.0, PLATE_MARGIN))
