"""Licence plates: detect, rectify, read, normalise and classify mainland plates.

``reader`` runs the models; ``text``, ``geometry`` and ``color`` are pure and model-free.
"""

from __future__ import annotations

from recognizer.plates.color import PlateColor, plate_color
from recognizer.plates.geometry import corner_aspect, order_corners, rectify
from recognizer.plates.reader import (
    LineReading,
    PlateDetections,
    PlateDetector,
    PlateReader,
    PlateReading,
    PlateRecognizer,
)
from recognizer.plates.text import PlateFormat, classify, normalize

__all__ = [
    "LineReading",
    "PlateColor",
    "PlateDetections",
    "PlateDetector",
    "PlateFormat",
    "PlateReader",
    "PlateReading",
    "PlateRecognizer",
    "classify",
    "corner_aspect",
    "normalize",
    "order_corners",
    "plate_color",
    "rectify",
]
