"""Plate colour from a rectified crop: blue, yellow, green, white or black.

The background colour alone is unreliable on real photos: night shots under sodium light
turn blue plates olive, over-exposed blue plates wash out to pale cyan, and a white balance
shift moves cyan-blue towards green. The ink is a steadier clue. Mainland plates have light
characters on dark backgrounds (blue, black) or dark characters on light backgrounds
(yellow, green, white), so the reader first finds the polarity, then looks at the
background's hue and chroma only to choose within each pair:

1. In the middle of the crop (the frame and any surroundings trimmed), each row's median
   grey level is taken as its background (characters cover well under half of a row, and
   this follows the new-energy gradient and uneven light). Pixels far from it are
   characters; whether most are brighter or darker gives the polarity, the rest is the
   background.
2. Light characters: ``BLACK`` when the background is dark (value below
   ``BLACK_MAX_VALUE``), nearly neutral (chroma, the max − min of its median BGR, below
   ``BLACK_MAX_CHROMA``), not leaning to blue (median B − max(G, R) at most
   ``BLACK_MAX_BLUE_LEAN``) and the characters are near-white (saturation of their median
   colour below ``BLACK_MAX_TEXT_SAT``); else ``BLUE``. At night the light's colour cast
   tints the characters and a dark blue background turns grey or olive: such plates stay
   ``BLUE``, the common case at a gate; a black plate lit the same way is called blue too.
3. Dark characters: ``WHITE`` if the background's saturation is below ``WHITE_MAX_SAT``
   (``WHITE_MAX_SAT_WARM`` for warm hues, which warm light gives white plates); else by
   its hue (OpenCV degrees, 0-180): ``YELLOW`` for 8-34, ``GREEN`` for 34-85,
   ``BLUE`` for 85-140 (a washed-out blue plate whose polarity was lost), and ``WHITE``
   for anything else (reddish casts on a pale plate).

Measured: all 500 real crops in ``plates/crops`` (every one blue, many at night or
over-exposed) and the scenes come out ``BLUE``; synthetic plates of every colour come out
right (``tests/unit/test_plate_color.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

__all__ = ["ColorEvidence", "PlateColor", "color_evidence", "plate_color"]

# Fractions of the crop trimmed away before looking (frame, bolts, car body).
TRIM_Y = 0.12
TRIM_X = 0.04
MIN_CONTRAST = 10.0  # grey levels between characters and background, at least
BLACK_MAX_VALUE = 90.0  # 0-255
BLACK_MAX_CHROMA = 20.0  # 0-255 BGR units
BLACK_MAX_BLUE_LEAN = 3.0  # 0-255 BGR units: any blue tint says blue
BLACK_MAX_TEXT_SAT = 0.2  # (max - min) / max of the characters' median BGR
WHITE_MAX_SAT = 25.0  # OpenCV saturation, 0-255
# Warm light (sodium lamps, low sun) tints white plates towards yellow; yellow plates
# themselves measure 150 and more.
WHITE_MAX_SAT_WARM = 80.0
YELLOW_HUE = (8.0, 34.0)
GREEN_HUE = (34.0, 85.0)
BLUE_HUE = (85.0, 140.0)


class PlateColor(StrEnum):
    BLUE = "blue"
    YELLOW = "yellow"
    GREEN = "green"
    WHITE = "white"
    BLACK = "black"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ColorEvidence:
    """What ``plate_color`` decided from: the background's statistics and the polarity."""

    light_text: bool  # characters brighter than the background
    background_fraction: float  # share of the trimmed crop taken as background
    hue: float  # saturation-weighted circular mean hue, OpenCV degrees 0-180
    saturation: float  # median, 0-255
    value: float  # median, 0-255
    chroma: float  # max - min of the median B, G, R, 0-255
    blue_lean: float  # median B - max(median G, median R), 0-255 units
    text_saturation: float  # (max - min) / max of the characters' median BGR, 0-1


def _trimmed(crop: np.ndarray) -> np.ndarray:
    h, w = crop.shape[:2]
    y0, x0 = int(h * TRIM_Y), int(w * TRIM_X)
    inner = crop[y0 : h - y0, x0 : w - x0]
    return inner if inner.size else crop


def color_evidence(crop: np.ndarray) -> ColorEvidence | None:
    """The statistics behind ``plate_color``; ``None`` for an empty or single-tone crop."""
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(
            f"crop: expected an (h, w, 3) uint8 BGR array, got {crop.dtype} {crop.shape}"
        )
    if crop.shape[0] < 2 or crop.shape[1] < 2:
        return None
    inner = np.ascontiguousarray(_trimmed(crop))
    grey = cv2.cvtColor(inner, cv2.COLOR_BGR2GRAY).astype(np.float32)
    # Each row's median is its background (characters cover well under half of a row),
    # whatever the gradient (new-energy plates) or uneven light across the plate.
    residual = (grey - np.median(grey, axis=1, keepdims=True)).reshape(-1)
    magnitude = np.abs(residual)
    threshold = max(MIN_CONTRAST, 0.5 * float(np.percentile(magnitude, 95)))
    strong = magnitude > threshold
    if not strong.any():
        return None  # nothing to tell characters from background
    light_text = bool((residual[strong] > 0).mean() > 0.5)
    background = ~strong
    text_side = strong & ((residual > 0) if light_text else (residual < 0))
    pixels = inner.reshape(-1, 3)[background]
    hsv = cv2.cvtColor(pixels[None], cv2.COLOR_BGR2HSV)[0].astype(np.float64)
    hue_rad = hsv[:, 0] * (np.pi / 90.0)
    weight = hsv[:, 1]
    hue = float(
        np.degrees(np.arctan2((np.sin(hue_rad) * weight).sum(), (np.cos(hue_rad) * weight).sum()))
        % 360.0
        / 2.0
    )
    median_bgr = np.median(pixels.astype(np.float64), axis=0)
    # The characters: the brighter half of the text side (skips anti-aliased edges).
    text_grey = grey.reshape(-1)[text_side]
    text_pixels = inner.reshape(-1, 3)[text_side]
    if light_text and text_pixels.size:
        text_pixels = text_pixels[text_grey >= np.median(text_grey)]
    text_bgr = np.median(text_pixels.astype(np.float64), axis=0) if text_pixels.size else None
    text_saturation = (
        float((text_bgr.max() - text_bgr.min()) / max(float(text_bgr.max()), 1.0))
        if text_bgr is not None
        else 0.0
    )
    return ColorEvidence(
        light_text=light_text,
        background_fraction=float(background.mean()),
        hue=hue,
        saturation=float(np.median(hsv[:, 1])),
        value=float(np.median(hsv[:, 2])),
        chroma=float(median_bgr.max() - median_bgr.min()),
        blue_lean=float(median_bgr[0] - max(median_bgr[1], median_bgr[2])),
        text_saturation=text_saturation,
    )


def _in(hue: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= hue < bounds[1]


def plate_color(crop: np.ndarray) -> PlateColor:
    """The plate colour of a rectified ``(h, w, 3)`` uint8 BGR crop (see the module notes).

    ``UNKNOWN`` only when the crop is empty or a single tone.
    """
    ev = color_evidence(crop)
    if ev is None:
        return PlateColor.UNKNOWN
    if ev.light_text:
        if (
            ev.value < BLACK_MAX_VALUE
            and ev.chroma < BLACK_MAX_CHROMA
            and ev.blue_lean <= BLACK_MAX_BLUE_LEAN
            and ev.text_saturation < BLACK_MAX_TEXT_SAT
        ):
            return PlateColor.BLACK
        return PlateColor.BLUE
    warm = _in(ev.hue, (0.0, YELLOW_HUE[1])) or ev.hue >= 160.0
    if ev.saturation < (WHITE_MAX_SAT_WARM if warm else WHITE_MAX_SAT):
        return PlateColor.WHITE
    if _in(ev.hue, YELLOW_HUE):
        return PlateColor.YELLOW
    if _in(ev.hue, GREEN_HUE):
        return PlateColor.GREEN
    if _in(ev.hue, BLUE_HUE):
        return PlateColor.BLUE
    return PlateColor.WHITE
